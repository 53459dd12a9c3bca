//! Helpers shared by the epic-route integration tests.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use epic_route::{DesiredRoutes, Error, OwnedRoute, RouteConfig, RouteProgrammer, SyncReport};
use epic_test_support::Netns;

/// A route programmer whose netlink socket lives in a test namespace, with
/// its own current-thread runtime (the socket keeps its namespace whichever
/// thread later drives it).
pub struct NodeProgrammer {
    programmer: RouteProgrammer,
    runtime: tokio::runtime::Runtime,
}

impl NodeProgrammer {
    /// Opens the programmer inside `ns`.
    pub fn start(ns: &Netns, config: RouteConfig) -> Result<NodeProgrammer, Error> {
        ns.run_in(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let programmer = {
                let _guard = runtime.enter();
                RouteProgrammer::connect(config)?
            };
            Ok(NodeProgrammer {
                programmer,
                runtime,
            })
        })
        .expect("enter namespace")
    }

    /// Runs one sync.
    pub fn sync(&self, desired: &DesiredRoutes) -> Result<SyncReport, Error> {
        self.runtime.block_on(self.programmer.sync(desired))
    }

    /// Reads the owned routes.
    pub fn owned(&self) -> Vec<OwnedRoute> {
        self.runtime
            .block_on(self.programmer.owned_routes())
            .expect("owned routes")
    }
}

/// Builds a desired set from prefixes.
pub fn desired(prefixes: &[&str]) -> DesiredRoutes {
    prefixes
        .iter()
        .map(|p| p.parse::<ipnet::IpNet>().unwrap())
        .collect()
}

/// `ip <args>` output inside `ns`, as text.
pub fn ip(ns: &Netns, args: &[&str]) -> String {
    let out = ns.ip(args).expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 200 ms until it returns true or `limit` passes.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every route in `ns` (all tables, both families) except the ones owned by
/// table 4242 / protocol 242 (and IPv6 link-local ones): the routes a sync
/// must never touch.
pub fn foreign_routes(ns: &Netns) -> Vec<String> {
    let mut lines = Vec::new();
    for family in ["-4", "-6"] {
        for line in ip(ns, &[family, "route", "show", "table", "all"]).lines() {
            let owned = line.contains("table 4242") && line.contains("proto 242");
            // Link-local addresses and their routes appear asynchronously
            // after an interface comes up: not something a sync could touch.
            let link_local = line.contains("fe80:");
            if !owned && !link_local {
                lines.push(line.to_owned());
            }
        }
    }
    lines.sort();
    lines
}
