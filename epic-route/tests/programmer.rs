//! The route programmer against the real kernel, in a network namespace:
//! ownership, idempotence, adoption after restart, in-place replacement and
//! clear errors.

mod common;

use common::{NodeProgrammer, desired, foreign_routes, ip};
use epic_route::{Action, Error, RouteConfig, RouteTarget};
use epic_test_support::{Netns, require_root};

fn gateway() -> Netns {
    let ns = Netns::new("rt-own").unwrap();
    // proxy0 stands for the interface toward the local proxies.
    ns.ip([
        "link", "add", "proxy0", "type", "veth", "peer", "name", "proxy0p",
    ])
    .unwrap();
    ns.ip(["link", "set", "proxy0", "up"]).unwrap();
    ns.ip(["link", "set", "proxy0p", "up"]).unwrap();
    ns.add_address("proxy0", "192.0.2.1/24").unwrap();
    ns.add_address("proxy0", "2001:db8:1::1/64").unwrap();
    ns
}

fn seed_foreign(ns: &Netns) {
    for args in [
        // another protocol in our table, next to ours
        &[
            "route",
            "add",
            "203.0.113.200/32",
            "dev",
            "proxy0",
            "table",
            "4242",
            "proto",
            "static",
        ][..],
        // same prefix as one of ours, another protocol and metric, our table
        &[
            "route",
            "add",
            "203.0.113.10/32",
            "dev",
            "proxy0",
            "table",
            "4242",
            "proto",
            "static",
            "metric",
            "5",
        ],
        // our protocol, but the main table
        &[
            "route",
            "add",
            "203.0.113.201/32",
            "dev",
            "proxy0",
            "proto",
            "242",
        ],
        // our protocol, another table
        &[
            "route",
            "add",
            "203.0.113.202/32",
            "dev",
            "proxy0",
            "table",
            "4243",
            "proto",
            "242",
        ],
        &[
            "-6",
            "route",
            "add",
            "2001:db8:ff::200/128",
            "dev",
            "proxy0",
            "table",
            "4242",
            "proto",
            "boot",
        ],
        &[
            "-6",
            "route",
            "add",
            "2001:db8:ff::201/128",
            "dev",
            "proxy0",
            "proto",
            "242",
        ],
    ] {
        ns.ip(args).unwrap();
    }
}

fn owned_listing(ns: &Netns) -> String {
    let mut text = ip(
        ns,
        &["-4", "route", "show", "table", "4242", "proto", "242"],
    );
    text += &ip(
        ns,
        &["-6", "route", "show", "table", "4242", "proto", "242"],
    );
    text
}

#[test]
fn sync_owns_only_its_table_and_protocol_and_is_idempotent() {
    if !require_root("sync_owns_only_its_table_and_protocol_and_is_idempotent") {
        return;
    }
    let ns = gateway();
    // Before any route exists, table 4242 does not exist: empty, not an error.
    let programmer = NodeProgrammer::start(
        &ns,
        RouteConfig::new(RouteTarget::Interface("proxy0".into())),
    )
    .unwrap();
    assert!(programmer.owned().is_empty());

    seed_foreign(&ns);
    let foreign = foreign_routes(&ns);

    let want = desired(&["203.0.113.10/32", "203.0.113.11/32", "2001:db8:ff::10/128"]);
    let report = programmer.sync(&want).unwrap();
    assert_eq!(report.added.len(), 3, "{report:?}");
    assert!(report.removed.is_empty() && report.replaced.is_empty());
    let listing = owned_listing(&ns);
    for needle in [
        "203.0.113.10 dev proxy0",
        "203.0.113.11 dev proxy0",
        "2001:db8:ff::10 dev proxy0",
    ] {
        assert!(listing.contains(needle), "{needle} missing from\n{listing}");
    }
    assert_eq!(
        foreign_routes(&ns),
        foreign,
        "foreign routes changed by the first sync"
    );

    // Idempotent: same desire, nothing to do.
    let again = programmer.sync(&want).unwrap();
    assert!(again.is_noop(), "{again:?}");
    assert_eq!(again.unchanged, 3);

    // Add one, withdraw one.
    let next = desired(&["203.0.113.10/32", "203.0.113.12/32", "2001:db8:ff::10/128"]);
    let report = programmer.sync(&next).unwrap();
    assert_eq!(report.added, ["203.0.113.12/32".parse().unwrap()]);
    assert_eq!(report.removed, ["203.0.113.11/32".parse().unwrap()]);
    assert_eq!(
        foreign_routes(&ns),
        foreign,
        "foreign routes changed by a later sync"
    );

    // Restart: a new programmer adopts what is there; dropping removed nothing.
    drop(programmer);
    assert!(owned_listing(&ns).contains("203.0.113.12"));
    let programmer = NodeProgrammer::start(
        &ns,
        RouteConfig::new(RouteTarget::Interface("proxy0".into())),
    )
    .unwrap();
    assert_eq!(programmer.owned().len(), 3);
    let report = programmer.sync(&next).unwrap();
    assert!(report.is_noop(), "after restart: {report:?}");

    // Moving to another interface replaces in place (no withdrawal).
    let on_lo =
        NodeProgrammer::start(&ns, RouteConfig::new(RouteTarget::Interface("lo".into()))).unwrap();
    let report = on_lo.sync(&next).unwrap();
    assert_eq!(report.replaced.len(), 3, "{report:?}");
    assert!(report.added.is_empty() && report.removed.is_empty());
    assert!(owned_listing(&ns).contains("203.0.113.10 dev lo"));
    assert_eq!(foreign_routes(&ns), foreign);

    // And to blackhole routes.
    let blackhole = NodeProgrammer::start(&ns, RouteConfig::new(RouteTarget::Blackhole)).unwrap();
    assert_eq!(blackhole.sync(&next).unwrap().replaced.len(), 3);
    assert!(owned_listing(&ns).contains("blackhole 203.0.113.10"));
    assert!(blackhole.sync(&next).unwrap().is_noop());

    // Withdraw everything: only ours goes.
    let report = blackhole.sync(&desired(&[])).unwrap();
    assert_eq!(report.removed.len(), 3);
    assert_eq!(owned_listing(&ns).trim(), "");
    assert_eq!(
        foreign_routes(&ns),
        foreign,
        "foreign routes changed by the withdrawal"
    );
}

#[test]
fn errors_name_the_interface_the_route_and_the_netlink_error() {
    if !require_root("errors_name_the_interface_the_route_and_the_netlink_error") {
        return;
    }
    let ns = gateway();
    let missing = NodeProgrammer::start(
        &ns,
        RouteConfig::new(RouteTarget::Interface("nosuch0".into())),
    )
    .unwrap();
    match missing.sync(&desired(&["203.0.113.10/32"])) {
        Err(Error::InterfaceNotFound(name)) => assert_eq!(name, "nosuch0"),
        other => panic!("expected InterfaceNotFound, got {other:?}"),
    }

    let mut reserved = RouteConfig::new(RouteTarget::Blackhole);
    reserved.table = 254;
    assert!(matches!(
        NodeProgrammer::start(&ns, reserved),
        Err(Error::ReservedTable(254))
    ));
    let mut reserved = RouteConfig::new(RouteTarget::Blackhole);
    reserved.protocol = 12;
    assert!(matches!(
        NodeProgrammer::start(&ns, reserved),
        Err(Error::ReservedProtocol(12))
    ));

    // Someone else holds the exact slot (prefix, metric) in our table: the
    // add fails with EEXIST naming the route; the other changes still apply
    // and the foreign route is untouched.
    ns.ip([
        "route",
        "add",
        "203.0.113.50/32",
        "dev",
        "proxy0",
        "table",
        "4242",
        "proto",
        "static",
        "metric",
        "1024",
    ])
    .unwrap();
    let programmer = NodeProgrammer::start(
        &ns,
        RouteConfig::new(RouteTarget::Interface("proxy0".into())),
    )
    .unwrap();
    match programmer.sync(&desired(&["203.0.113.50/32", "203.0.113.51/32"])) {
        Err(Error::Apply { applied, failures }) => {
            assert_eq!(applied.added, ["203.0.113.51/32".parse().unwrap()]);
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].action, Action::Add);
            let text = Error::Apply { applied, failures }.to_string();
            assert!(text.contains("203.0.113.50/32"), "{text}");
            assert!(text.contains("File exists"), "{text}");
        }
        other => panic!("expected Apply error, got {other:?}"),
    }
    let foreign = ip(&ns, &["route", "show", "table", "4242", "proto", "static"]);
    assert!(foreign.contains("203.0.113.50 dev proxy0"), "{foreign}");
}
