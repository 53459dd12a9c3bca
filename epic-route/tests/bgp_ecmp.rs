//! Two gateway nodes, each with our route programmer and a real BIRD 2 using
//! the generated configuration, peer over BGP with an upstream router (BIRD 2,
//! `merge paths on`). The upstream's kernel table follows the gateways'
//! syncs: two next hops, then one, then none; IPv4 and IPv6. Foreign routes
//! are never announced, and a programmer restart withdraws nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{NodeProgrammer, desired, foreign_routes, ip, wait_for};
use epic_route::{BgpPeer, Bird, BirdConfig, ReloadAnswer, RouteConfig, RouteTarget};
use epic_test_support::{ChildGuard, Netns, require_root};

const LIMIT: Duration = Duration::from_secs(30);
const V4: &str = "203.0.113.10";
const V6: &str = "2001:db8:ff::10";

/// A BIRD daemon in a namespace, killed on drop.
struct Daemon {
    bird: Bird,
    _child: ChildGuard,
}

fn start_bird(ns: &Netns, dir: &Path, name: &str, config: &str) -> Daemon {
    let config_path = dir.join(format!("{name}.conf"));
    let socket = dir.join(format!("{name}.ctl"));
    std::fs::write(&config_path, config).unwrap();
    let bird = Bird::new(&config_path, &socket);
    bird.check_file(&config_path).unwrap();
    let pid = dir.join(format!("{name}.pid"));
    let child = ns
        .spawn(
            "bird",
            [
                "-f".as_ref(),
                "-c".as_ref(),
                config_path.as_os_str(),
                "-s".as_ref(),
                socket.as_os_str(),
                "-P".as_ref(),
                pid.as_os_str(),
            ],
        )
        .unwrap();
    assert!(
        wait_for(LIMIT, || bird.birdc(&["show", "status"]).is_ok()),
        "BIRD {name} did not open {}",
        socket.display()
    );
    Daemon {
        bird,
        _child: child,
    }
}

fn upstream_config() -> String {
    let mut text = String::from(
        "router id 198.51.100.1;\nprotocol device {}\n\
         protocol kernel up4 { merge paths on; ipv4 { import none; export all; }; }\n\
         protocol kernel up6 { merge paths on; ipv6 { import none; export all; }; }\n",
    );
    for (name, neighbor, family) in [
        ("ga4", "198.51.100.2", "ipv4"),
        ("gb4", "198.51.100.10", "ipv4"),
        ("ga6", "2001:db8:a::2", "ipv6"),
        ("gb6", "2001:db8:b::2", "ipv6"),
    ] {
        text += &format!(
            "protocol bgp {name} {{ local as 65000; neighbor {neighbor} as 65001; \
             connect delay time 1; connect retry time 2; error wait time 1, 5; \
             {family} {{ import all; export none; }}; }}\n"
        );
    }
    text
}

fn gateway_config(router_id: &str, peer4: &str, peer6: &str, with_peers: bool) -> BirdConfig {
    let peer = |name: &str, address: &str| BgpPeer {
        name: name.into(),
        address: address.parse().unwrap(),
        asn: 65000,
        password: None,
        bfd: false,
        source_address: None,
        multihop: None,
        hold_time: Some(9),
        connect_retry_time: Some(2),
    };
    BirdConfig {
        router_id: router_id.parse().unwrap(),
        local_asn: 65001,
        table: 4242,
        protocol: 242,
        allowed_prefixes: vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8:ff::/48".parse().unwrap(),
        ],
        peers: if with_peers {
            vec![peer("upstream4", peer4), peer("upstream6", peer6)]
        } else {
            Vec::new()
        },
    }
}

/// The upstream's kernel route for `dest`, as `ip route` shows it.
fn upstream_route(up: &Netns, dest: &str) -> String {
    let family = if dest.contains(':') { "-6" } else { "-4" };
    ip(up, &[family, "route", "show", dest])
}

/// The devices of the next hops of `route` (`dev ua`, `dev ub`), sorted.
fn next_hop_devices(route: &str) -> Vec<String> {
    let mut devices: Vec<String> = route
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "dev")
        .map(|w| w[1].to_owned())
        .collect();
    devices.sort();
    devices
}

fn expect_next_hops(up: &Netns, daemon: &Daemon, want: &[&str]) {
    for dest in [V4, V6] {
        let ok = wait_for(LIMIT, || {
            next_hop_devices(&upstream_route(up, dest)) == want
        });
        assert!(
            ok,
            "upstream route for {dest} should go via {want:?}, it is:\n{}\nBIRD says:\n{}\n{}",
            upstream_route(up, dest),
            daemon.bird.show(&["protocols"]).unwrap_or_default(),
            daemon.bird.show(&["route", "all"]).unwrap_or_default(),
        );
    }
}

fn gateway(role: &str, up: &Netns, up_if: &str, v4: [&str; 2], v6: [&str; 2]) -> Netns {
    let ns = Netns::new(role).unwrap();
    ns.add_veth("eth0", up, up_if).unwrap();
    ns.add_address("eth0", v4[1]).unwrap();
    up.add_address(up_if, v4[0]).unwrap();
    ns.add_address("eth0", v6[1]).unwrap();
    up.add_address(up_if, v6[0]).unwrap();
    ns.ip([
        "link", "add", "proxy0", "type", "veth", "peer", "name", "proxy0p",
    ])
    .unwrap();
    ns.ip(["link", "set", "proxy0", "up"]).unwrap();
    ns.ip(["link", "set", "proxy0p", "up"]).unwrap();
    // Foreign routes: another protocol in our table, our protocol in main.
    ns.ip([
        "route",
        "add",
        "203.0.113.200/32",
        "dev",
        "proxy0",
        "table",
        "4242",
        "proto",
        "static",
    ])
    .unwrap();
    ns.ip([
        "route",
        "add",
        "203.0.113.201/32",
        "dev",
        "proxy0",
        "proto",
        "242",
    ])
    .unwrap();
    ns.ip([
        "-6",
        "route",
        "add",
        "2001:db8:ff::200/128",
        "dev",
        "proxy0",
        "table",
        "4242",
        "proto",
        "static",
    ])
    .unwrap();
    ns
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn upstream_ecmp_follows_the_gateways_syncs() {
    if !require_root("upstream_ecmp_follows_the_gateways_syncs") {
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(format!("epic-route-bgp-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();

    let up = Netns::new("rt-up").unwrap();
    let ga = gateway(
        "rt-ga",
        &up,
        "ua",
        ["198.51.100.1/29", "198.51.100.2/29"],
        ["2001:db8:a::1/64", "2001:db8:a::2/64"],
    );
    let gb = gateway(
        "rt-gb",
        &up,
        "ub",
        ["198.51.100.9/29", "198.51.100.10/29"],
        ["2001:db8:b::1/64", "2001:db8:b::2/64"],
    );
    let foreign_a = foreign_routes(&ga);
    let foreign_b = foreign_routes(&gb);

    let upstream = start_bird(&up, &dir.0, "up", &upstream_config());
    // Gateway A starts without peers, then gets them with a reload (what an
    // agent does when its configuration changes).
    let config_a = gateway_config("198.51.100.2", "198.51.100.1", "2001:db8:a::1", false);
    let bird_a = start_bird(&ga, &dir.0, "ga", &config_a.render().unwrap());
    let answer = bird_a
        .bird
        .apply(&gateway_config(
            "198.51.100.2",
            "198.51.100.1",
            "2001:db8:a::1",
            true,
        ))
        .unwrap();
    assert!(
        matches!(
            answer,
            ReloadAnswer::Reconfigured | ReloadAnswer::InProgress
        ),
        "{answer:?}"
    );
    let config_b = gateway_config("198.51.100.10", "198.51.100.9", "2001:db8:b::1", true);
    let bird_b = start_bird(&gb, &dir.0, "gb", &config_b.render().unwrap());

    let established = wait_for(LIMIT, || {
        let text = upstream.bird.show(&["protocols"]).unwrap_or_default();
        text.matches("Established").count() == 4
    });
    assert!(
        established,
        "BGP sessions not established:\n{}",
        upstream.bird.show(&["protocols"]).unwrap_or_default()
    );

    let target = || RouteConfig::new(RouteTarget::Interface("proxy0".into()));
    let prog_a = NodeProgrammer::start(&ga, target()).unwrap();
    let prog_b = NodeProgrammer::start(&gb, target()).unwrap();
    let public = desired(&["203.0.113.10/32", "2001:db8:ff::10/128"]);

    // Not ready anywhere yet: nothing announced.
    assert!(prog_a.sync(&desired(&[])).unwrap().is_noop());
    assert_eq!(upstream_route(&up, V4).trim(), "");

    // Ready on both: two next hops.
    assert_eq!(prog_a.sync(&public).unwrap().added.len(), 2);
    assert_eq!(prog_b.sync(&public).unwrap().added.len(), 2);
    expect_next_hops(&up, &upstream, &["ua", "ub"]);

    // Restart A's programmer: nothing is withdrawn, the next sync is a no-op.
    drop(prog_a);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(next_hop_devices(&upstream_route(&up, V4)), ["ua", "ub"]);
    assert_eq!(next_hop_devices(&upstream_route(&up, V6)), ["ua", "ub"]);
    let prog_a = NodeProgrammer::start(&ga, target()).unwrap();
    let report = prog_a.sync(&public).unwrap();
    assert!(report.is_noop(), "sync after restart changed {report:?}");
    // Re-applying the same BIRD configuration disturbs nothing either.
    let answer = bird_a
        .bird
        .apply(&gateway_config(
            "198.51.100.2",
            "198.51.100.1",
            "2001:db8:a::1",
            true,
        ))
        .unwrap();
    assert!(
        matches!(answer, ReloadAnswer::Reconfigured | ReloadAnswer::Unchanged),
        "{answer:?}"
    );
    expect_next_hops(&up, &upstream, &["ua", "ub"]);

    // Withdraw on A: one next hop left.
    assert_eq!(prog_a.sync(&desired(&[])).unwrap().removed.len(), 2);
    expect_next_hops(&up, &upstream, &["ub"]);

    // Withdraw on B too: gone.
    assert_eq!(prog_b.sync(&desired(&[])).unwrap().removed.len(), 2);
    expect_next_hops(&up, &upstream, &[]);

    // Foreign routes were never announced, and survived every sync.
    for never in ["203.0.113.200", "203.0.113.201", "2001:db8:ff::200"] {
        assert_eq!(
            upstream_route(&up, never).trim(),
            "",
            "{never} leaked upstream"
        );
    }
    assert_eq!(foreign_routes(&ga), foreign_a);
    assert_eq!(foreign_routes(&gb), foreign_b);
    drop(bird_b);
}
