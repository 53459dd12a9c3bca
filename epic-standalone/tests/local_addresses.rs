//! `LocalAddresses` against a real kernel, inside network namespaces made by
//! the tests (root needed; skipped without it unless `EPIC_REQUIRE_ROOT=1`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use epic_standalone::addresses::{AddressError, AddressReport, LocalAddresses};
use epic_test_support::{Netns, require_root};

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn report(added: &[&str], removed: &[&str]) -> AddressReport {
    AddressReport {
        added: ips(added).into_iter().collect(),
        removed: ips(removed).into_iter().collect(),
    }
}

/// What `ip -j addr show dev lo` says: (address, prefix length, tentative).
fn ip_addresses(ns: &Netns) -> Vec<(IpAddr, u64, bool)> {
    let out = ns.ip(["-j", "addr", "show", "dev", "lo"]).unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    links[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["local"].as_str().unwrap().parse().unwrap(),
                a["prefixlen"].as_u64().unwrap(),
                a.get("tentative").is_some(),
            )
        })
        .collect()
}

/// The host addresses (/32, /128) `ip` shows on `lo`.
fn ip_hosts(ns: &Netns) -> BTreeSet<IpAddr> {
    ip_addresses(ns)
        .into_iter()
        .filter(|(a, len, _)| *len == if a.is_ipv4() { 32 } else { 128 })
        .map(|(a, _, _)| a)
        .collect()
}

/// Runs `f` on a current-thread runtime inside `ns`.
fn in_netns<T: Send>(ns: &Netns, f: impl AsyncFnOnce() -> T + Send) -> T {
    ns.run_in(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap()
}

#[test]
fn sync_adds_and_removes_owned_host_addresses_only() {
    if !require_root("sync_adds_and_removes_owned_host_addresses_only") {
        return;
    }
    let ns = Netns::new("addr").unwrap();
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    // Someone else's addresses: a host address, and a desired one as /24.
    ns.add_address("lo", "203.0.113.5/32").unwrap();
    ns.add_address("lo", "198.51.100.7/24").unwrap();
    let foreign = ips(&["203.0.113.5"]);

    in_netns(&ns, async || {
        let lo = LocalAddresses::connect("lo").unwrap();
        assert_eq!(lo.interface(), "lo");
        let before = lo.list().await.unwrap();
        assert!(before.is_superset(&foreign), "{before:?}");
        assert!(
            !before.contains(&"198.51.100.7".parse().unwrap()),
            "not a host address"
        );

        // 1. Add two addresses; the one already there as /24 is left alone.
        let desired = ips(&["192.0.2.10", "2001:db8::10", "198.51.100.7"]);
        let first = lo.sync(&desired, &BTreeSet::new()).await.unwrap();
        assert_eq!(first, report(&["192.0.2.10", "2001:db8::10"], &[]));
        let hosts = ip_hosts(&ns);
        assert!(
            hosts.is_superset(&ips(&["192.0.2.10", "2001:db8::10"])),
            "{hosts:?}"
        );
        assert!(hosts.is_superset(&foreign));
        assert_eq!(lo.list().await.unwrap(), hosts);
        for (addr, len, tentative) in ip_addresses(&ns) {
            assert!(!tentative, "{addr}/{len} must be usable at once (nodad)");
        }
        // Usable at once: both bind.
        for a in ["192.0.2.10", "2001:db8::10"] {
            let addr = SocketAddr::new(a.parse().unwrap(), 0);
            tokio::net::TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        }
        let owned: BTreeSet<IpAddr> = first.added.iter().copied().collect();

        // 2. Idempotent.
        let again = lo.sync(&desired, &owned).await.unwrap();
        assert!(again.is_noop(), "{again:?}");

        // 3. A new desired set: both owned go, .11 comes; foreign ones stay,
        //    even the /24 that was desired before and is not owned.
        let desired = ips(&["192.0.2.11"]);
        let third = lo.sync(&desired, &owned).await.unwrap();
        assert_eq!(
            third,
            report(&["192.0.2.11"], &["192.0.2.10", "2001:db8::10"])
        );
        let hosts = ip_hosts(&ns);
        assert_eq!(
            hosts
                .intersection(&ips(&["192.0.2.10", "192.0.2.11", "2001:db8::10"]))
                .count(),
            1,
            "{hosts:?}"
        );
        assert!(hosts.contains(&"192.0.2.11".parse().unwrap()));
        assert!(hosts.is_superset(&foreign));
        assert!(
            ip_addresses(&ns)
                .iter()
                .any(|(a, len, _)| *a == "198.51.100.7".parse::<IpAddr>().unwrap() && *len == 24)
        );

        // 4. Owning an address nobody desires any more, that is already
        //    gone, is fine; the foreign address survives an empty sync too.
        let owned = ips(&["192.0.2.10", "192.0.2.11", "2001:db8::10"]);
        let last = lo.sync(&BTreeSet::new(), &owned).await.unwrap();
        assert_eq!(last, report(&[], &["192.0.2.11"]));
        let hosts = ip_hosts(&ns);
        assert!(hosts.is_superset(&foreign));
        assert!(hosts.is_disjoint(&owned), "{hosts:?}");
        assert!(lo.sync(&BTreeSet::new(), &owned).await.unwrap().is_noop());
    });
}

#[test]
fn an_unknown_interface_is_reported_by_name() {
    if !require_root("an_unknown_interface_is_reported_by_name") {
        return;
    }
    let ns = Netns::new("addr-none").unwrap();
    in_netns(&ns, async || {
        let missing = LocalAddresses::connect("epic-nope0").unwrap();
        let err = missing.list().await.unwrap_err();
        assert!(
            matches!(&err, AddressError::InterfaceNotFound { name } if name == "epic-nope0"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "interface \"epic-nope0\" does not exist");
        let err = missing
            .sync(&ips(&["192.0.2.10"]), &BTreeSet::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AddressError::InterfaceNotFound { .. }),
            "{err:?}"
        );
    });
}
