//! `epicctl route`: list the owned routes and print the BIRD 2 configuration
//! (epic-route).
//!
//! The peers file and the generated configuration are documented in the
//! `epic_route` crate docs.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::input::problem;
use epic_route::{
    Bird, BirdConfig, DEFAULT_PROTOCOL, DEFAULT_TABLE, RouteConfig, RouteProgrammer, RouteTarget,
    Target,
};

/// Route subcommands.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// List the routes the programmer owns (this table AND this protocol), IPv4 and IPv6.
    Show {
        /// The routing table of owned routes.
        #[arg(long, default_value_t = DEFAULT_TABLE)]
        table: u32,
        /// The route protocol number of owned routes.
        #[arg(long, default_value_t = DEFAULT_PROTOCOL)]
        protocol: u8,
    },
    /// Print the BIRD 2 configuration generated from a peers file (YAML).
    BirdConfig {
        /// The peers file: router_id, local_asn, peers (name, address, asn,
        /// password, bfd, ...), optional table, protocol, allowed_prefixes.
        peers: PathBuf,
        /// Also check the result with `bird -p -c` (needs bird installed).
        #[arg(long)]
        check: bool,
    },
}

/// Runs one `epicctl route` subcommand.
pub fn run(cmd: RouteCommand) -> Result<(), Box<dyn Error>> {
    match cmd {
        RouteCommand::Show { table, protocol } => show(table, protocol),
        RouteCommand::BirdConfig { peers, check } => bird_config(&peers, check),
    }
}

/// Interface names by index, from sysfs (this network namespace).
fn interface_names() -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let index = std::fs::read_to_string(entry.path().join("ifindex"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let Some(index) = index {
                names.insert(index, entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names
}

fn show(table: u32, protocol: u8) -> Result<(), Box<dyn Error>> {
    let mut config = RouteConfig::new(RouteTarget::Blackhole);
    config.table = table;
    config.protocol = protocol;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let routes = runtime.block_on(async {
        let programmer = RouteProgrammer::connect(config)?;
        programmer.owned_routes().await
    })?;
    let names = interface_names();
    println!(
        "# table {table} protocol {protocol}: {} owned route(s)",
        routes.len()
    );
    for route in routes {
        let target = match &route.spec.target {
            Target::Device(index) => match names.get(index) {
                Some(name) => format!("dev {name}"),
                None => format!("dev #{index}"),
            },
            other => other.to_string(),
        };
        println!(
            "{} {target} metric {} table {} proto {}",
            route.spec.prefix, route.spec.metric, route.table, route.protocol
        );
    }
    Ok(())
}

fn bird_config(path: &Path, check: bool) -> Result<(), Box<dyn Error>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(path, format!("cannot read: {e}")))?;
    let config: BirdConfig = serde_yaml_ng::from_str(&text).map_err(|e| problem(path, e))?;
    let rendered = config.render().map_err(|e| problem(path, e))?;
    if check {
        let scratch =
            std::env::temp_dir().join(format!("epicctl-bird-{}.conf", std::process::id()));
        std::fs::write(&scratch, &rendered)?;
        let checked = Bird::new(&scratch, "/dev/null").check_file(&scratch);
        let _ = std::fs::remove_file(&scratch);
        checked?;
    }
    print!("{rendered}");
    Ok(())
}
