//! One test (or a few) per allocation rule.

use super::*;
use crate::pool::PoolSpec;
use crate::request::Protocol;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pools(specs: Vec<PoolSpec>) -> Allocator {
    Allocator::new(PoolSet::new(specs).unwrap())
}

fn v4(owner: &str) -> AllocationRequest {
    AllocationRequest::new(owner, "acme", FamilyPolicy::Ipv4)
}

fn first(allocation: &Allocation) -> IpAddr {
    allocation.addresses[0].address
}

fn addresses(allocation: &Allocation) -> Vec<IpAddr> {
    allocation.addresses.iter().map(|a| a.address).collect()
}

#[test]
fn lowest_free_and_reuse_after_release() {
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/30"])]);
    for (owner, want) in [("a", "192.0.2.0"), ("b", "192.0.2.1"), ("c", "192.0.2.2")] {
        assert_eq!(first(&ipam.allocate(&v4(owner)).unwrap()), ip(want));
    }
    ipam.release("b");
    assert_eq!(first(&ipam.allocate(&v4("d")).unwrap()), ip("192.0.2.1"));
    assert_eq!(first(&ipam.allocate(&v4("e")).unwrap()), ip("192.0.2.3"));
    assert_eq!(
        ipam.allocate(&v4("f")),
        Err(IpamError::PoolExhausted {
            family: Family::V4,
            pools: vec!["p".into()]
        })
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn sharing_same_key_disjoint_ports_shares() {
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/29"])]);
    let tcp = v4("dns-tcp")
        .with_sharing_key("dns")
        .with_ports([PortSpec::tcp(53)]);
    let udp = v4("dns-udp")
        .with_sharing_key("dns")
        .with_ports([PortSpec::udp(53)]);
    let a = ipam.allocate(&tcp).unwrap();
    let b = ipam.allocate(&udp).unwrap();
    assert_eq!(first(&a), first(&b));
    assert!(b.addresses[0].shared);
    assert_eq!(ipam.holders(first(&a)), ["dns-tcp", "dns-udp"]);
    // freed only when the last owner releases
    match ipam.release("dns-tcp") {
        ReleaseOutcome::Released {
            freed, addresses, ..
        } => {
            assert_eq!(addresses, [first(&a)]);
            assert!(freed.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        first(&ipam.allocate(&v4("other")).unwrap()),
        ip("192.0.2.1")
    );
    match ipam.release("dns-udp") {
        ReleaseOutcome::Released { freed, .. } => assert_eq!(freed, [first(&a)]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        first(&ipam.allocate(&v4("again")).unwrap()),
        ip("192.0.2.0")
    );
    ipam.check_invariants().unwrap();
}

#[test]
fn sharing_overlapping_ports_conflict_names_ports() {
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/29"])]);
    let web = v4("web")
        .with_sharing_key("k")
        .with_ports([PortSpec::tcp(80), PortSpec::tcp(443)]);
    let addr = first(&ipam.allocate(&web).unwrap());
    let clash = v4("clash")
        .with_sharing_key("k")
        .with_ports([PortSpec::tcp(443), PortSpec::udp(443), PortSpec::tcp(80)])
        .with_address(addr);
    assert_eq!(
        ipam.allocate(&clash),
        Err(IpamError::SharingConflict {
            address: addr,
            owners: vec!["web".into()],
            ports: vec![PortSpec::tcp(80), PortSpec::tcp(443)],
        })
    );
    let msg = ipam.allocate(&clash).unwrap_err().to_string();
    assert!(msg.contains("TCP/80, TCP/443"), "{msg}");
    // without a specific address, the overlapping owner gets a new address instead
    let clash = v4("clash")
        .with_sharing_key("k")
        .with_ports([PortSpec::tcp(443)]);
    assert_ne!(first(&ipam.allocate(&clash).unwrap()), addr);
    ipam.check_invariants().unwrap();
}

#[test]
fn sharing_needs_same_key_and_tenant() {
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/29"])]);
    let addr = first(&ipam.allocate(&v4("a").with_sharing_key("k")).unwrap());
    let taken = |_owner: &str| IpamError::AddressTaken {
        address: addr,
        owners: vec!["a".into()],
    };
    // no key
    assert_eq!(ipam.allocate(&v4("b").with_address(addr)), Err(taken("b")));
    // other key
    assert_eq!(
        ipam.allocate(&v4("b").with_address(addr).with_sharing_key("x")),
        Err(taken("b"))
    );
    // empty key is no key
    assert_eq!(
        ipam.allocate(&v4("b").with_address(addr).with_sharing_key("")),
        Err(taken("b"))
    );
    // same key, other tenant
    let other = AllocationRequest::new("b", "globex", FamilyPolicy::Ipv4)
        .with_address(addr)
        .with_sharing_key("k");
    assert_eq!(ipam.allocate(&other), Err(taken("b")));
    // other tenant with the same key does not join the group automatically
    let other = AllocationRequest::new("b", "globex", FamilyPolicy::Ipv4).with_sharing_key("k");
    assert_ne!(first(&ipam.allocate(&other).unwrap()), addr);
    // an owner without a key never shares either
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/29"])]);
    let addr = first(&ipam.allocate(&v4("a")).unwrap());
    assert!(matches!(
        ipam.allocate(&v4("b").with_address(addr).with_sharing_key("k")),
        Err(IpamError::AddressTaken { .. })
    ));
}

#[test]
fn sharing_group_prefers_joinable_address() {
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/29"])]);
    let a = first(
        &ipam
            .allocate(&v4("a").with_sharing_key("k").with_ports([PortSpec::tcp(1)]))
            .unwrap(),
    );
    let b = first(
        &ipam
            .allocate(&v4("b").with_sharing_key("k").with_ports([PortSpec::tcp(1)]))
            .unwrap(),
    );
    assert_ne!(a, b);
    // TCP/2 fits on a (lowest); TCP/1 fits on neither
    let c = first(
        &ipam
            .allocate(&v4("c").with_sharing_key("k").with_ports([PortSpec::tcp(2)]))
            .unwrap(),
    );
    assert_eq!(c, a);
    let d = first(
        &ipam
            .allocate(&v4("d").with_sharing_key("k").with_ports([PortSpec {
                protocol: Protocol::Sctp,
                port: 1,
            }]))
            .unwrap(),
    );
    assert_eq!(d, a);
    ipam.check_invariants().unwrap();
}

#[test]
fn dual_stack_policies() {
    let mut ipam = pools(vec![
        PoolSpec::new("v4", ["192.0.2.0/32"]),
        PoolSpec::new("v6", ["2001:db8::/126"]),
    ]);
    let require = AllocationRequest::new("r", "acme", FamilyPolicy::RequireDualStack);
    assert_eq!(
        addresses(&ipam.allocate(&require).unwrap()),
        [ip("192.0.2.0"), ip("2001:db8::")]
    );
    // v4 is now exhausted: require fails atomically, prefer falls back to v6
    let require = AllocationRequest::new("r2", "acme", FamilyPolicy::RequireDualStack);
    assert!(matches!(
        ipam.allocate(&require),
        Err(IpamError::PoolExhausted {
            family: Family::V4,
            ..
        })
    ));
    assert_eq!(ipam.allocation("r2"), None);
    assert_eq!(ipam.holders(ip("2001:db8::1")), Vec::<&str>::new());
    let prefer = AllocationRequest::new("p", "acme", FamilyPolicy::PreferDualStack);
    assert_eq!(
        addresses(&ipam.allocate(&prefer).unwrap()),
        [ip("2001:db8::1")]
    );
    let only6 = AllocationRequest::new("six", "acme", FamilyPolicy::Ipv6);
    assert_eq!(
        addresses(&ipam.allocate(&only6).unwrap()),
        [ip("2001:db8::2")]
    );
    // release frees both families
    match ipam.release("r") {
        ReleaseOutcome::Released { freed, .. } => {
            assert_eq!(freed, [ip("192.0.2.0"), ip("2001:db8::")])
        }
        other => panic!("{other:?}"),
    }
    // prefer with neither family: the IPv4 error
    let mut ipam = pools(vec![PoolSpec::new("v4", ["192.0.2.0/32"])]);
    ipam.allocate(&v4("x")).unwrap();
    let prefer = AllocationRequest::new("p", "acme", FamilyPolicy::PreferDualStack);
    assert!(matches!(
        ipam.allocate(&prefer),
        Err(IpamError::PoolExhausted {
            family: Family::V4,
            ..
        })
    ));
    let require = AllocationRequest::new("p", "acme", FamilyPolicy::RequireDualStack)
        .with_address(ip("192.0.2.0"));
    assert!(matches!(
        ipam.allocate(&require),
        Err(IpamError::AddressTaken { .. })
    ));
}

#[test]
fn family_not_available_and_specific_family_checks() {
    let mut ipam = pools(vec![PoolSpec::new("v4", ["192.0.2.0/30"])]);
    let six = AllocationRequest::new("a", "acme", FamilyPolicy::Ipv6);
    assert_eq!(
        ipam.allocate(&six),
        Err(IpamError::FamilyNotAvailable {
            family: Family::V6,
            tenant: "acme".into(),
            pool: None
        })
    );
    let dual = AllocationRequest::new("a", "acme", FamilyPolicy::RequireDualStack);
    assert!(matches!(
        ipam.allocate(&dual),
        Err(IpamError::FamilyNotAvailable {
            family: Family::V6,
            ..
        })
    ));
    let dual = AllocationRequest::new("a", "acme", FamilyPolicy::PreferDualStack)
        .with_address(ip("192.0.2.2"));
    assert_eq!(addresses(&ipam.allocate(&dual).unwrap()), [ip("192.0.2.2")]);
    let wrong = v4("b").with_address(ip("2001:db8::1"));
    assert_eq!(
        ipam.allocate(&wrong),
        Err(IpamError::FamilyNotRequested {
            address: ip("2001:db8::1"),
            policy: FamilyPolicy::Ipv4
        })
    );
    let two = v4("b")
        .with_address(ip("192.0.2.0"))
        .with_address(ip("192.0.2.1"));
    assert_eq!(
        ipam.allocate(&two),
        Err(IpamError::DuplicateFamily { family: Family::V4 })
    );
}

#[test]
fn specific_addresses() {
    let mut spec = PoolSpec::new("p", ["192.0.2.0/28"]);
    spec.exclude = vec!["192.0.2.8/29".into()];
    let mut ipam = pools(vec![spec, PoolSpec::new("q", ["198.51.100.0/24"])]);
    assert_eq!(
        first(
            &ipam
                .allocate(&v4("a").with_address(ip("192.0.2.5")))
                .unwrap()
        ),
        ip("192.0.2.5")
    );
    assert_eq!(
        ipam.allocate(&v4("b").with_address(ip("192.0.2.5"))),
        Err(IpamError::AddressTaken {
            address: ip("192.0.2.5"),
            owners: vec!["a".into()]
        })
    );
    assert_eq!(
        ipam.allocate(&v4("b").with_address(ip("192.0.2.9"))),
        Err(IpamError::AddressExcluded {
            address: ip("192.0.2.9"),
            pool: "p".into()
        })
    );
    assert_eq!(
        ipam.allocate(&v4("b").with_address(ip("203.0.113.1"))),
        Err(IpamError::NotInAnyPool {
            address: ip("203.0.113.1")
        })
    );
    assert_eq!(
        ipam.allocate(&v4("b").with_address(ip("198.51.100.1")).in_pool("p")),
        Err(IpamError::NotInRequestedPool {
            address: ip("198.51.100.1"),
            pool: "p".into()
        })
    );
    assert_eq!(
        ipam.allocate(&v4("b").in_pool("nope")),
        Err(IpamError::UnknownPool {
            pool: "nope".into()
        })
    );
    // the lowest-free search steps over the specific one and the exclusion
    let got: Vec<IpAddr> = ["c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .map(|o| first(&ipam.allocate(&v4(o).in_pool("p")).unwrap()))
        .collect();
    assert_eq!(got.last(), Some(&ip("192.0.2.7")));
    assert!(!got.contains(&ip("192.0.2.5")));
    assert!(matches!(
        ipam.allocate(&v4("k").in_pool("p")),
        Err(IpamError::PoolExhausted { .. })
    ));
    ipam.check_invariants().unwrap();
}

#[test]
fn avoid_buggy_ips() {
    let mut spec = PoolSpec::new("p", ["192.0.2.254-192.0.3.1"]);
    spec.avoid_buggy_ips = true;
    let mut ipam = pools(vec![spec]);
    let got: Vec<IpAddr> = ["a", "b"]
        .iter()
        .map(|o| first(&ipam.allocate(&v4(o)).unwrap()))
        .collect();
    assert_eq!(got, [ip("192.0.2.254"), ip("192.0.3.1")]);
    assert!(matches!(
        ipam.allocate(&v4("c")),
        Err(IpamError::PoolExhausted { .. })
    ));
    assert!(matches!(
        ipam.allocate(&v4("c").with_address(ip("192.0.2.255"))),
        Err(IpamError::AddressExcluded { .. })
    ));
    assert_eq!(ipam.pools().pools()[0].size(Family::V4), 2);
    // IPv6 addresses ending in 0 or ff are fine
    let mut spec = PoolSpec::new("p6", ["2001:db8::/127"]);
    spec.avoid_buggy_ips = true;
    let mut ipam = pools(vec![spec]);
    let six = AllocationRequest::new("a", "acme", FamilyPolicy::Ipv6);
    assert_eq!(first(&ipam.allocate(&six).unwrap()), ip("2001:db8::"));
}

#[test]
fn aggregation_sets_announced_prefix() {
    let mut spec = PoolSpec::new("p", ["198.51.100.0/24", "2001:db8::/64"]);
    spec.aggregation.ipv4 = 24;
    spec.aggregation.ipv6 = 64;
    let mut ipam = pools(vec![spec, PoolSpec::new("q", ["192.0.2.0/24"])]);
    let a = ipam
        .allocate(&AllocationRequest::new("a", "acme", FamilyPolicy::RequireDualStack).in_pool("p"))
        .unwrap();
    let prefixes: Vec<String> = a.addresses.iter().map(|x| x.prefix.to_string()).collect();
    assert_eq!(prefixes, ["198.51.100.0/24", "2001:db8::/64"]);
    let b = ipam.allocate(&v4("b").in_pool("q")).unwrap();
    assert_eq!(b.addresses[0].prefix.to_string(), "192.0.2.0/32");
}

#[test]
fn tenants_and_auto_assign() {
    let mut private = PoolSpec::new("acme-only", ["192.0.2.0/30"]);
    private.tenants = Some(["acme".to_string()].into());
    private.priority = 10;
    let mut manual = PoolSpec::new("manual", ["198.51.100.0/30"]);
    manual.auto_assign = false;
    manual.priority = 20;
    let shared = PoolSpec::new("shared", ["203.0.113.0/30"]);
    let mut ipam = pools(vec![private, manual, shared]);
    assert_eq!(first(&ipam.allocate(&v4("a")).unwrap()), ip("192.0.2.0"));
    let globex = AllocationRequest::new("g", "globex", FamilyPolicy::Ipv4);
    assert_eq!(first(&ipam.allocate(&globex).unwrap()), ip("203.0.113.0"));
    let globex = AllocationRequest::new("g2", "globex", FamilyPolicy::Ipv4).in_pool("acme-only");
    assert_eq!(
        ipam.allocate(&globex),
        Err(IpamError::TenantNotPermitted {
            tenant: "globex".into(),
            pool: "acme-only".into()
        })
    );
    let globex =
        AllocationRequest::new("g2", "globex", FamilyPolicy::Ipv4).with_address(ip("192.0.2.3"));
    assert!(matches!(
        ipam.allocate(&globex),
        Err(IpamError::TenantNotPermitted { .. })
    ));
    // a pool with autoAssign false is used only when named or asked by address
    assert_eq!(
        first(&ipam.allocate(&v4("m").in_pool("manual")).unwrap()),
        ip("198.51.100.0")
    );
    assert_eq!(
        first(
            &ipam
                .allocate(&v4("n").with_address(ip("198.51.100.3")))
                .unwrap()
        ),
        ip("198.51.100.3")
    );
    let mut none = PoolSpec::new("nobody", ["192.0.2.0/30"]);
    none.tenants = Some(Default::default());
    let mut ipam = pools(vec![none]);
    assert!(matches!(
        ipam.allocate(&v4("a")),
        Err(IpamError::FamilyNotAvailable { .. })
    ));
}

#[test]
fn priorities_then_fall_through() {
    let mut high = PoolSpec::new("high", ["198.51.100.0/31"]);
    high.priority = 5;
    let low = PoolSpec::new("a-low", ["192.0.2.0/24"]);
    let mut ipam = pools(vec![low, high]);
    let got: Vec<IpAddr> = ["a", "b", "c"]
        .iter()
        .map(|o| first(&ipam.allocate(&v4(o)).unwrap()))
        .collect();
    assert_eq!(
        got,
        [ip("198.51.100.0"), ip("198.51.100.1"), ip("192.0.2.0")]
    );
    let mut ipam2 = pools(vec![
        PoolSpec::new("x", ["198.51.100.0/32"]),
        PoolSpec::new("y", ["192.0.2.0/32"]),
    ]);
    ipam2.allocate(&v4("a")).unwrap();
    ipam2.allocate(&v4("b")).unwrap();
    assert_eq!(
        ipam2.allocate(&v4("c")),
        Err(IpamError::PoolExhausted {
            family: Family::V4,
            pools: vec!["x".into(), "y".into()]
        })
    );
}

#[test]
fn owners_are_unique_and_release_unknown_says_so() {
    let mut ipam = pools(vec![PoolSpec::new("p", ["192.0.2.0/30"])]);
    ipam.allocate(&v4("a")).unwrap();
    assert_eq!(
        ipam.allocate(&v4("a")),
        Err(IpamError::AlreadyAllocated {
            owner: "a".into(),
            addresses: vec![ip("192.0.2.0")]
        })
    );
    assert_eq!(ipam.allocate(&v4("")), Err(IpamError::EmptyOwner));
    assert_eq!(
        ipam.release("ghost"),
        ReleaseOutcome::NotAllocated {
            owner: "ghost".into()
        }
    );
    assert_eq!(ipam.len(), 1);
}

#[test]
fn restore_reports_conflicts_individually() {
    let mut spec = PoolSpec::new("p", ["192.0.2.0/29", "2001:db8::/64"]);
    spec.exclude = vec!["192.0.2.7".into()];
    let mut acme_only = PoolSpec::new("acme-only", ["198.51.100.0/30"]);
    acme_only.tenants = Some(["acme".to_string()].into());
    let set = PoolSet::new([spec, acme_only]).unwrap();
    let rec =
        |owner: &str, tenant: &str, addrs: &[&str], key: Option<&str>, ports: Vec<PortSpec>| {
            AllocationRecord {
                owner: owner.into(),
                tenant: tenant.into(),
                addresses: addrs.iter().map(|a| ip(a)).collect(),
                sharing_key: key.map(Into::into),
                ports,
            }
        };
    let records = vec![
        rec("a", "acme", &["192.0.2.1", "2001:db8::1"], None, vec![]),
        // same address, no key: conflicts with a
        rec("b", "acme", &["192.0.2.1"], None, vec![]),
        // outside every pool, and excluded: two conflicts for one record
        rec("c", "acme", &["203.0.113.1", "2001:db8::1"], None, vec![]),
        rec("d", "acme", &["192.0.2.7"], None, vec![]),
        // tenant not permitted
        rec("e", "globex", &["198.51.100.1"], None, vec![]),
        // sharing: compatible and conflicting
        rec(
            "f",
            "acme",
            &["192.0.2.2"],
            Some("k"),
            vec![PortSpec::tcp(53)],
        ),
        rec(
            "g",
            "acme",
            &["192.0.2.2"],
            Some("k"),
            vec![PortSpec::udp(53)],
        ),
        rec(
            "h",
            "acme",
            &["192.0.2.2"],
            Some("k"),
            vec![PortSpec::udp(53)],
        ),
        // duplicate owner
        rec("a", "acme", &["192.0.2.3"], None, vec![]),
        // two addresses of one family
        rec("i", "acme", &["192.0.2.4", "192.0.2.5"], None, vec![]),
    ];
    let (ipam, report) = Allocator::with_records(set, records);
    assert_eq!(report.restored, 3, "{report:?}");
    let summary: Vec<(String, Option<IpAddr>, &'static str)> = report
        .conflicts
        .iter()
        .map(|c| {
            let kind = match &c.error {
                IpamError::AddressTaken { .. } => "taken",
                IpamError::NotInAnyPool { .. } => "no-pool",
                IpamError::AddressExcluded { .. } => "excluded",
                IpamError::TenantNotPermitted { .. } => "tenant",
                IpamError::SharingConflict { .. } => "ports",
                IpamError::AlreadyAllocated { .. } => "duplicate",
                IpamError::DuplicateFamily { .. } => "family",
                _ => "other",
            };
            (c.owner.clone(), c.address, kind)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("b".into(), Some(ip("192.0.2.1")), "taken"),
            ("c".into(), Some(ip("203.0.113.1")), "no-pool"),
            ("c".into(), Some(ip("2001:db8::1")), "taken"),
            ("d".into(), Some(ip("192.0.2.7")), "excluded"),
            ("e".into(), Some(ip("198.51.100.1")), "tenant"),
            ("h".into(), Some(ip("192.0.2.2")), "ports"),
            ("a".into(), None, "duplicate"),
            ("i".into(), Some(ip("192.0.2.5")), "family"),
        ]
    );
    // nothing was overwritten: the first record of each address wins
    assert_eq!(ipam.holders(ip("192.0.2.1")), ["a"]);
    assert_eq!(ipam.holders(ip("192.0.2.2")), ["f", "g"]);
    assert_eq!(ipam.allocation("i"), None);
    ipam.check_invariants().unwrap();
    // and restoring the records reproduces the state
    let (again, report) = Allocator::with_records(ipam.pools().clone(), ipam.records());
    assert!(report.conflicts.is_empty());
    assert_eq!(again, ipam);
    // after a restore, allocation continues from the lowest free address
    let mut again = again;
    assert_eq!(
        first(&again.allocate(&v4("z").in_pool("p")).unwrap()),
        ip("192.0.2.0")
    );
    assert_eq!(
        first(&again.allocate(&v4("y").in_pool("p")).unwrap()),
        ip("192.0.2.3")
    );
}

#[test]
fn huge_pools_are_cheap() {
    let mut ipam = pools(vec![
        PoolSpec::new("all6", ["::/0"]),
        PoolSpec::new("all4", ["0.0.0.0/0"]),
    ]);
    assert_eq!(
        ipam.pools().get("all6").unwrap().size(Family::V6),
        u128::MAX
    );
    let req = AllocationRequest::new("a", "t", FamilyPolicy::RequireDualStack);
    assert_eq!(
        addresses(&ipam.allocate(&req).unwrap()),
        [ip("0.0.0.0"), ip("::")]
    );
    let top = AllocationRequest::new("b", "t", FamilyPolicy::RequireDualStack)
        .with_address(ip("255.255.255.255"))
        .with_address(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    ipam.allocate(&top).unwrap();
    let usage = ipam.usage();
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|u| u.allocated == 2));
    ipam.release("a");
    ipam.release("b");
    assert!(ipam.is_empty());
}

/// Pools for the bulk-restore tests: exclusions, skipped `.0`/`.255`, a
/// tenant restriction, IPv6, and the top of the address space.
fn restore_pools() -> PoolSet {
    let mut small = PoolSpec::new("small", ["192.0.2.0-192.0.2.9"]);
    small.exclude = vec!["192.0.2.3".into()];
    let mut buggy = PoolSpec::new("buggy", ["192.0.2.254/31", "192.0.3.0/30"]);
    buggy.avoid_buggy_ips = true;
    let mut acme = PoolSpec::new("acme-only", ["198.51.100.0/30", "2001:db8::/126"]);
    acme.tenants = Some(["acme".to_string()].into());
    let top = PoolSpec::new("top", ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"]);
    PoolSet::new([small, buggy, acme, top]).unwrap()
}

const RESTORE_ADDRESSES: &[&str] = &[
    "192.0.2.0",
    "192.0.2.1",
    "192.0.2.2",
    "192.0.2.3",
    "192.0.2.4",
    "192.0.2.5",
    "192.0.2.9",
    "192.0.2.254",
    "192.0.2.255",
    "192.0.3.0",
    "192.0.3.1",
    "192.0.3.2",
    "198.51.100.1",
    "198.51.100.2",
    "203.0.113.1",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8::9",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// Restores `records` both ways into fresh allocators; when the bulk path
/// applies, report and state must be identical. Returns whether it applied.
fn bulk_matches_one_by_one(records: &[AllocationRecord]) -> bool {
    let refs: Vec<&AllocationRecord> = records.iter().collect();
    let mut one = Allocator::new(restore_pools());
    let want = one.restore_one_by_one(&refs);
    let mut bulk = Allocator::new(restore_pools());
    let Some(got) = bulk.restore_in_bulk(&refs) else {
        // gave up without touching anything
        assert_eq!(
            format!("{bulk:?}"),
            format!("{:?}", Allocator::new(restore_pools()))
        );
        return false;
    };
    assert_eq!(got, want, "{records:?}");
    // same owners, holders, runs, groups and tenants
    assert_eq!(format!("{bulk:?}"), format!("{one:?}"), "{records:?}");
    bulk.check_invariants().unwrap();
    // and allocation carries on identically
    for family in [FamilyPolicy::Ipv4, FamilyPolicy::Ipv6] {
        let req = AllocationRequest::new("next", "acme", family);
        assert_eq!(
            bulk.allocate(&req).map(|a| addresses(&a)),
            one.allocate(&req).map(|a| addresses(&a))
        );
    }
    true
}

#[test]
fn bulk_restore_reports_standalone_conflicts() {
    let rec = |owner: &str, tenant: &str, addrs: &[&str], key: Option<&str>| AllocationRecord {
        owner: owner.into(),
        tenant: tenant.into(),
        addresses: addrs.iter().map(|a| ip(a)).collect(),
        sharing_key: key.map(Into::into),
        ports: vec![PortSpec::tcp(53), PortSpec::tcp(53)],
    };
    let records = vec![
        rec("a", "acme", &["192.0.2.1", "2001:db8::1"], Some("k")),
        rec("b", "acme", &["203.0.113.1", "2001:db8::2"], None),
        rec("c", "acme", &["192.0.2.3"], None),
        rec("d", "globex", &["198.51.100.1"], None),
        rec("e", "acme", &["192.0.2.4", "192.0.2.5"], None),
        rec("", "acme", &["192.0.2.9"], None),
        rec("f", "", &["192.0.2.9"], None),
        rec("g", "acme", &[], None),
        rec(
            "h",
            "acme",
            &["192.0.2.0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
            Some("k"),
        ),
        rec("i", "globex", &["192.0.3.1"], Some("k")),
    ];
    assert!(bulk_matches_one_by_one(&records));
    let (ipam, report) = Allocator::with_records(restore_pools(), &records);
    assert_eq!(report.restored, 4);
    assert_eq!(report.conflicts.len(), 6, "{report:?}");
    assert_eq!(ipam.holders(ip("192.0.2.1")), ["a"]);
    assert_eq!(ipam.records()[0].ports, [PortSpec::tcp(53)]);
}

#[test]
fn bulk_restore_gives_up_on_interacting_records() {
    let rec = |owner: &str, addr: &str| AllocationRecord {
        owner: owner.into(),
        tenant: "acme".into(),
        addresses: vec![ip(addr)],
        sharing_key: None,
        ports: vec![],
    };
    // the same owner twice, the same address twice (even when the first
    // claimant conflicts otherwise), and into a non-empty allocator
    assert!(!bulk_matches_one_by_one(&[
        rec("a", "192.0.2.1"),
        rec("a", "192.0.2.2")
    ]));
    assert!(!bulk_matches_one_by_one(&[
        rec("a", "192.0.2.1"),
        rec("b", "192.0.2.1")
    ]));
    let mut twice = rec("a", "192.0.2.1");
    twice.addresses.push(ip("192.0.2.4"));
    assert!(!bulk_matches_one_by_one(&[twice, rec("b", "192.0.2.1")]));
    let mut ipam = Allocator::new(restore_pools());
    ipam.allocate(&v4("z")).unwrap();
    assert!(ipam.restore_in_bulk(&[&rec("a", "192.0.2.5")]).is_none());
}

mod bulk_restore {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = AllocationRecord> {
        (
            0..24usize,
            proptest::sample::select(&["acme", "acme", "globex", ""][..]),
            proptest::collection::vec(proptest::sample::select(RESTORE_ADDRESSES), 0..=2),
            proptest::option::weighted(0.4, proptest::sample::select(&["k", "j", ""][..])),
            proptest::sample::subsequence(vec![PortSpec::tcp(53), PortSpec::udp(53)], 0..=2),
        )
            .prop_map(|(owner, tenant, addresses, key, ports)| AllocationRecord {
                owner: if owner == 0 {
                    String::new()
                } else {
                    format!("o{owner}")
                },
                tenant: tenant.into(),
                addresses: addresses.iter().map(|a| ip(a)).collect(),
                sharing_key: key.map(Into::into),
                ports,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whenever the bulk restore applies, it is exactly the one-by-one
        /// restore.
        #[test]
        fn bulk_restore_is_one_by_one(records in proptest::collection::vec(record(), 0..6)) {
            bulk_matches_one_by_one(&records);
        }

        /// Records of a state take the bulk path unless an address is
        /// shared (shared addresses are restored one by one).
        #[test]
        fn records_of_a_state_restore_in_bulk(
            records in proptest::collection::vec(record(), 0..12),
        ) {
            let mut ipam = Allocator::new(restore_pools());
            ipam.restore(&records);
            let records = ipam.records();
            let mut held: Vec<IpAddr> = records.iter().flat_map(|r| r.addresses.clone()).collect();
            held.sort();
            let shared = held.windows(2).any(|w| w[0] == w[1]);
            prop_assert_eq!(bulk_matches_one_by_one(&records), !shared);
        }
    }
}
