//! Model test: random sequences of allocate / release / restore against a
//! naive reference allocator that scans small pools address by address.
//!
//! Invariants checked after every step: no address is held by two owners
//! unless they share compatibly, every address lies in a pool its tenant may
//! use, release frees, and restoring the current records reproduces the
//! current state exactly.

use std::collections::BTreeMap;
use std::net::IpAddr;

use epic_ipam::{
    AllocationRecord, AllocationRequest, Allocator, Family, FamilyPolicy, PoolSet, PoolSpec,
    PortSpec, ReleaseOutcome,
};
use proptest::prelude::*;

const OWNERS: &[&str] = &["o0", "o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9"];
const TENANTS: &[&str] = &["acme", "globex"];
const KEYS: &[&str] = &["dns", "web"];
const POOLS: &[&str] = &["small", "buggy", "acme-only", "manual", "six", "nope"];
const ADDRESSES: &[&str] = &[
    "192.0.2.0",
    "192.0.2.2",
    "192.0.2.3",
    "192.0.2.255",
    "192.0.3.1",
    "198.51.100.1",
    "203.0.113.2",
    "2001:db8::1",
    "2001:db8::6",
    "2001:db8:ffff::1",
    "10.0.0.1",
];

fn pool_set() -> PoolSet {
    let mut small = PoolSpec::new("small", ["192.0.2.0-192.0.2.4"]);
    small.exclude = vec!["192.0.2.3".into()];
    small.priority = 5;
    let mut buggy = PoolSpec::new("buggy", ["192.0.2.254/31", "192.0.3.0/30"]);
    buggy.avoid_buggy_ips = true;
    let mut acme = PoolSpec::new("acme-only", ["198.51.100.0/30", "2001:db8::/126"]);
    acme.tenants = Some(["acme".to_string()].into());
    acme.priority = 5;
    let mut manual = PoolSpec::new("manual", ["203.0.113.0/30"]);
    manual.auto_assign = false;
    let six = PoolSpec::new("six", ["2001:db8::4/126"]);
    PoolSet::new([small, buggy, acme, manual, six]).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(AllocationRequest),
    Release(String),
    Restore(Vec<AllocationRecord>),
    Rebuild,
}

fn ports() -> impl Strategy<Value = Vec<PortSpec>> {
    proptest::sample::subsequence(
        vec![PortSpec::tcp(53), PortSpec::udp(53), PortSpec::tcp(443)],
        0..=3,
    )
}

fn addresses() -> impl Strategy<Value = Vec<IpAddr>> {
    proptest::collection::vec(proptest::sample::select(ADDRESSES), 0..=2)
        .prop_map(|v| v.into_iter().map(|a| a.parse().unwrap()).collect())
}

fn request() -> impl Strategy<Value = AllocationRequest> {
    let policy = prop_oneof![
        Just(FamilyPolicy::Ipv4),
        Just(FamilyPolicy::Ipv6),
        Just(FamilyPolicy::PreferDualStack),
        Just(FamilyPolicy::RequireDualStack),
    ];
    (
        proptest::sample::select(OWNERS),
        proptest::sample::select(TENANTS),
        proptest::option::weighted(0.2, proptest::sample::select(POOLS)),
        proptest::collection::vec(proptest::sample::select(ADDRESSES), 0..=1),
        proptest::option::weighted(0.6, proptest::sample::select(KEYS)),
        ports(),
        policy,
    )
        .prop_map(
            |(owner, tenant, pool, addrs, key, ports, family)| AllocationRequest {
                owner: owner.into(),
                tenant: tenant.into(),
                pool: pool.map(Into::into),
                addresses: addrs.into_iter().map(|a| a.parse().unwrap()).collect(),
                sharing_key: key.map(Into::into),
                ports,
                family,
            },
        )
}

fn record() -> impl Strategy<Value = AllocationRecord> {
    (
        proptest::sample::select(OWNERS),
        proptest::sample::select(TENANTS),
        addresses(),
        proptest::option::weighted(0.6, proptest::sample::select(KEYS)),
        ports(),
    )
        .prop_map(|(owner, tenant, addresses, key, ports)| AllocationRecord {
            owner: owner.into(),
            tenant: tenant.into(),
            addresses,
            sharing_key: key.map(Into::into),
            ports,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => request().prop_map(Op::Allocate),
        3 => proptest::sample::select(OWNERS).prop_map(|o| Op::Release(o.into())),
        1 => proptest::collection::vec(record(), 1..4).prop_map(Op::Restore),
        1 => Just(Op::Rebuild),
    ]
}

/// What the model keeps per owner (ports only with a key, like the allocator).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    tenant: String,
    key: Option<String>,
    ports: Vec<PortSpec>,
    addresses: Vec<IpAddr>,
}

struct Model {
    pools: PoolSet,
    owners: BTreeMap<String, Held>,
}

fn normalize(key: Option<&String>, ports: &[PortSpec]) -> (Option<String>, Vec<PortSpec>) {
    let key = key.filter(|k| !k.is_empty()).cloned();
    let mut ports = if key.is_some() {
        ports.to_vec()
    } else {
        Vec::new()
    };
    ports.sort();
    ports.dedup();
    (key, ports)
}

impl Model {
    fn holders(&self, address: IpAddr) -> Vec<(&String, &Held)> {
        self.owners
            .iter()
            .filter(|(_, h)| h.addresses.contains(&address))
            .collect()
    }

    fn compatible(held: &Held, tenant: &str, key: &Option<String>, ports: &[PortSpec]) -> bool {
        held.tenant == tenant
            && key.is_some()
            && held.key == *key
            && !held.ports.iter().any(|p| ports.contains(p))
    }

    fn may_join(
        &self,
        address: IpAddr,
        tenant: &str,
        key: &Option<String>,
        ports: &[PortSpec],
    ) -> bool {
        self.holders(address)
            .iter()
            .all(|(_, h)| Self::compatible(h, tenant, key, ports))
    }

    /// Every usable address of `pool` and `family`, ascending (the pools are tiny).
    fn usable(&self, pool: &str, family: Family) -> Vec<IpAddr> {
        let pool = self.pools.get(pool).unwrap();
        let mut out = Vec::new();
        for entry in pool.entries().iter().filter(|e| e.family() == family) {
            let (start, end) = entry.bounds();
            let mut a = start;
            loop {
                if pool.contains(a) {
                    out.push(a);
                }
                if a == end {
                    break;
                }
                a = match a {
                    IpAddr::V4(x) => IpAddr::V4((u32::from(x) + 1).into()),
                    IpAddr::V6(x) => IpAddr::V6((u128::from(x) + 1).into()),
                };
            }
        }
        out.sort();
        out
    }

    fn specific(
        &self,
        address: IpAddr,
        tenant: &str,
        key: &Option<String>,
        ports: &[PortSpec],
        named: Option<&str>,
    ) -> bool {
        let Some(pool) = self.pools.pools().iter().find(|p| p.covers(address)) else {
            return false;
        };
        named.is_none_or(|n| n == pool.name())
            && pool.permits(tenant)
            && pool.contains(address)
            && self.may_join(address, tenant, key, ports)
    }

    fn auto(
        &self,
        family: Family,
        tenant: &str,
        key: &Option<String>,
        ports: &[PortSpec],
        named: Option<&str>,
    ) -> Option<IpAddr> {
        let candidates: Vec<&str> = self
            .pools
            .pools()
            .iter()
            .filter(|p| match named {
                Some(n) => p.name() == n,
                None => p.auto_assign() && p.permits(tenant),
            })
            .filter(|p| p.has_family(family))
            .map(|p| p.name())
            .collect();
        if key.is_some() {
            for pool in &candidates {
                for a in self.usable(pool, family) {
                    let holders = self.holders(a);
                    if !holders.is_empty()
                        && holders
                            .iter()
                            .any(|(_, h)| h.tenant == tenant && h.key == *key)
                        && self.may_join(a, tenant, key, ports)
                    {
                        return Some(a);
                    }
                }
            }
        }
        candidates.iter().find_map(|pool| {
            self.usable(pool, family)
                .into_iter()
                .find(|a| self.holders(*a).is_empty())
        })
    }

    fn allocate(&mut self, r: &AllocationRequest) -> Option<Vec<IpAddr>> {
        if self.owners.contains_key(&r.owner) {
            return None;
        }
        if let Some(name) = &r.pool
            && !self.pools.get(name).is_some_and(|p| p.permits(&r.tenant))
        {
            return None;
        }
        let wanted: Vec<Family> = match r.family {
            FamilyPolicy::Ipv4 => vec![Family::V4],
            FamilyPolicy::Ipv6 => vec![Family::V6],
            _ => vec![Family::V4, Family::V6],
        };
        let specific: BTreeMap<Family, IpAddr> =
            r.addresses.iter().map(|a| (Family::of(*a), *a)).collect();
        if specific.len() != r.addresses.len() || specific.keys().any(|f| !wanted.contains(f)) {
            return None;
        }
        let (key, ports) = normalize(r.sharing_key.as_ref(), &r.ports);
        let all_ports = normalize(Some(&"x".to_string()), &r.ports).1;
        let mut got = Vec::new();
        for family in wanted {
            let choice = match specific.get(&family) {
                Some(a) => {
                    if !self.specific(*a, &r.tenant, &key, &all_ports, r.pool.as_deref()) {
                        return None;
                    }
                    Some(*a)
                }
                None => self.auto(family, &r.tenant, &key, &all_ports, r.pool.as_deref()),
            };
            match choice {
                Some(a) => got.push(a),
                None if r.family == FamilyPolicy::PreferDualStack => {}
                None => return None,
            }
        }
        if got.is_empty() {
            return None;
        }
        self.owners.insert(
            r.owner.clone(),
            Held {
                tenant: r.tenant.clone(),
                key,
                ports,
                addresses: got.clone(),
            },
        );
        Some(got)
    }

    /// Returns (addresses, freed) or None for an unknown owner.
    fn release(&mut self, owner: &str) -> Option<(Vec<IpAddr>, Vec<IpAddr>)> {
        let held = self.owners.remove(owner)?;
        let freed = held
            .addresses
            .iter()
            .copied()
            .filter(|a| self.holders(*a).is_empty())
            .collect();
        Some((held.addresses, freed))
    }

    /// Returns the owners whose records conflicted.
    fn restore(&mut self, records: &[AllocationRecord]) -> (usize, Vec<String>) {
        let mut restored = 0;
        let mut conflicted = Vec::new();
        for r in records {
            let mut families: Vec<Family> = r.addresses.iter().map(|a| Family::of(*a)).collect();
            families.sort();
            families.dedup();
            let (key, ports) = normalize(r.sharing_key.as_ref(), &r.ports);
            let all_ports = normalize(Some(&"x".to_string()), &r.ports).1;
            let ok = !self.owners.contains_key(&r.owner)
                && families.len() == r.addresses.len()
                && r.addresses
                    .iter()
                    .all(|a| self.specific(*a, &r.tenant, &key, &all_ports, None));
            if !ok {
                conflicted.push(r.owner.clone());
                continue;
            }
            restored += 1;
            if !r.addresses.is_empty() {
                let mut addresses = r.addresses.clone();
                addresses.sort_by_key(|a| Family::of(*a));
                self.owners.insert(
                    r.owner.clone(),
                    Held {
                        tenant: r.tenant.clone(),
                        key,
                        ports,
                        addresses,
                    },
                );
            }
        }
        (restored, conflicted)
    }

    fn records(&self) -> Vec<AllocationRecord> {
        self.owners
            .iter()
            .map(|(owner, h)| AllocationRecord {
                owner: owner.clone(),
                tenant: h.tenant.clone(),
                addresses: h.addresses.clone(),
                sharing_key: h.key.clone(),
                ports: h.ports.clone(),
            })
            .collect()
    }
}

fn check_invariants(ipam: &Allocator, model: &Model) -> Result<(), TestCaseError> {
    ipam.check_invariants().map_err(TestCaseError::fail)?;
    let records = ipam.records();
    prop_assert_eq!(&records, &model.records());
    let mut by_address: BTreeMap<IpAddr, Vec<&AllocationRecord>> = BTreeMap::new();
    for r in &records {
        for a in &r.addresses {
            by_address.entry(*a).or_default().push(r);
            let pool = ipam.pools().pool_of(*a);
            prop_assert!(
                pool.is_some_and(|p| p.contains(*a) && p.permits(&r.tenant)),
                "{} of {}",
                a,
                r.owner
            );
        }
    }
    // A tenant's distinct addresses, as the records say.
    for tenant in TENANTS {
        let held: std::collections::BTreeSet<IpAddr> = records
            .iter()
            .filter(|r| r.tenant == *tenant)
            .flat_map(|r| r.addresses.iter().copied())
            .collect();
        prop_assert_eq!(ipam.tenant_address_count(tenant), held.len(), "{}", tenant);
    }
    for (address, holders) in by_address {
        prop_assert_eq!(ipam.holders(address).len(), holders.len());
        for (i, x) in holders.iter().enumerate() {
            for y in &holders[i + 1..] {
                prop_assert!(
                    x.tenant == y.tenant
                        && x.sharing_key.is_some()
                        && x.sharing_key == y.sharing_key
                        && !x.ports.iter().any(|p| y.ports.contains(p)),
                    "{} shared by incompatible {:?} and {:?}",
                    address,
                    x,
                    y
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut ipam = Allocator::new(pool_set());
        let mut model = Model { pools: pool_set(), owners: BTreeMap::new() };
        for op in ops {
            match &op {
                Op::Allocate(request) => {
                    let got = ipam.allocate(request).ok().map(|a| a.addresses.iter().map(|x| x.address).collect::<Vec<_>>());
                    let want = model.allocate(request);
                    prop_assert_eq!(got, want, "{:?}", request);
                }
                Op::Release(owner) => {
                    let got = match ipam.release(owner) {
                        ReleaseOutcome::Released { addresses, freed, .. } => Some((addresses, freed)),
                        ReleaseOutcome::NotAllocated { .. } => None,
                    };
                    prop_assert_eq!(got, model.release(owner));
                }
                Op::Restore(records) => {
                    let report = ipam.restore(records.clone());
                    let mut conflicted: Vec<String> = report.conflicts.iter().map(|c| c.owner.clone()).collect();
                    conflicted.dedup();
                    let (restored, mut want) = model.restore(records);
                    want.dedup();
                    prop_assert_eq!((report.restored, conflicted), (restored, want), "{:?}", records);
                }
                Op::Rebuild => {
                    let (rebuilt, report) = Allocator::with_records(ipam.pools().clone(), ipam.records());
                    prop_assert!(report.conflicts.is_empty());
                    prop_assert!(rebuilt == ipam);
                    ipam = rebuilt;
                }
            }
            check_invariants(&ipam, &model)?;
            // restoring the current records reproduces the state exactly
            let (rebuilt, report) = Allocator::with_records(ipam.pools().clone(), ipam.records());
            prop_assert!(report.conflicts.is_empty(), "{:?}", report);
            prop_assert_eq!(rebuilt.records(), ipam.records());
            prop_assert_eq!(rebuilt.usage(), ipam.usage());
            rebuilt.check_invariants().map_err(TestCaseError::fail)?;
        }
    }
}

proptest! {
    /// Arbitrary entry strings never panic the parser, and whatever parses
    /// allocates and restores consistently.
    #[test]
    fn pool_parsing_never_panics(
        entries in proptest::collection::vec("[0-9a-f:./ -]{0,24}", 0..6),
        exclude in proptest::collection::vec("[0-9a-f:./ -]{0,24}", 0..3),
        avoid_buggy_ips in any::<bool>(),
    ) {
        let mut spec = PoolSpec::new("p", entries);
        spec.exclude = exclude;
        spec.avoid_buggy_ips = avoid_buggy_ips;
        if let Ok(pools) = PoolSet::new([spec]) {
            let mut ipam = Allocator::new(pools);
            for (i, policy) in [FamilyPolicy::Ipv4, FamilyPolicy::Ipv6, FamilyPolicy::PreferDualStack].into_iter().enumerate() {
                let _ = ipam.allocate(&AllocationRequest::new(format!("o{i}"), "t", policy));
            }
            let (rebuilt, report) = Allocator::with_records(ipam.pools().clone(), ipam.records());
            prop_assert!(report.conflicts.is_empty());
            prop_assert!(rebuilt == ipam);
        }
    }
}
