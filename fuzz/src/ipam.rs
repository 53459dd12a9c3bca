//! Fuzz entry point for the epic-ipam pool-set parser and allocator.

use std::net::IpAddr;

use epic_ipam::{
    AllocationRequest, Allocator, FamilyPolicy, PlanFile, PoolEntry, PoolFile, PoolSet, PoolSpec,
    PortSpec,
};

const POLICIES: [FamilyPolicy; 4] = [
    FamilyPolicy::Ipv4,
    FamilyPolicy::Ipv6,
    FamilyPolicy::PreferDualStack,
    FamilyPolicy::RequireDualStack,
];

/// Parses `data` as a YAML pool file, as pool entry lines, and as a plan;
/// when pools parse, runs a few allocations, releases and a restore.
/// Must never panic.
pub fn ipam_pool_set(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // 1. The whole input as a pool file.
    if let Ok(pools) = PoolFile::from_yaml(text) {
        exercise(pools, data);
    }
    // 2. Each line as a pool entry, all lines as one pool (exclusions after a `!`).
    let mut addresses = Vec::new();
    let mut exclude = Vec::new();
    for line in text.lines().take(64) {
        match line.strip_prefix('!') {
            Some(rest) => exclude.push(rest.to_owned()),
            None => {
                if let Ok(entry) = line.parse::<PoolEntry>() {
                    let _ = (
                        entry.len(),
                        entry.bounds(),
                        entry.covering_prefix_len(),
                        entry.to_string(),
                    );
                }
                addresses.push(line.to_owned());
            }
        }
    }
    let mut spec = PoolSpec::new("fuzz", addresses);
    spec.exclude = exclude;
    spec.avoid_buggy_ips = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(pools) = PoolSet::new([spec]) {
        exercise(pools, data);
    }
    // 3. The input as a plan, run on a small pool set.
    if let Ok(plan) = PlanFile::from_yaml(text)
        && let Ok(pools) = PoolSet::new([PoolSpec::new("p", ["192.0.2.0/29", "2001:db8::/125"])])
    {
        let mut allocator = Allocator::new(pools);
        let _ = plan.run(&mut allocator);
        let _ = allocator.check_invariants();
    }
}

/// A few allocations driven by `data`, a release, and a rebuild from records.
fn exercise(pools: PoolSet, data: &[u8]) {
    for pool in pools.pools() {
        for family in pool.families() {
            let _ = pool.size(family);
        }
    }
    let specific: Vec<IpAddr> = pools
        .pools()
        .iter()
        .flat_map(|p| p.entries().iter().map(|e| e.bounds().1))
        .take(4)
        .collect();
    let names: Vec<String> = pools.pools().iter().map(|p| p.name().to_owned()).collect();
    let mut allocator = Allocator::new(pools);
    for (i, &byte) in data.iter().take(16).enumerate() {
        let mut request = AllocationRequest::new(
            format!("owner-{}", byte % 8),
            ["acme", "globex"][usize::from(byte >> 7)],
            POLICIES[usize::from(byte % 4)],
        );
        if byte & 0x10 != 0 {
            request = request
                .with_sharing_key("k")
                .with_ports([PortSpec::tcp(u16::from(byte & 3))]);
        }
        if byte & 0x20 != 0
            && let Some(address) = specific.get(i % specific.len().max(1))
        {
            request = request.with_address(*address);
        }
        if byte & 0x40 != 0
            && let Some(name) = names.get(i % names.len().max(1))
        {
            request = request.in_pool(name.clone());
        }
        if allocator.allocate(&request).is_err() && byte & 8 != 0 {
            allocator.release(&request.owner);
        }
    }
    allocator.release("owner-0");
    let (rebuilt, report) = Allocator::with_records(allocator.pools().clone(), allocator.records());
    assert!(
        report.conflicts.is_empty(),
        "restoring current records conflicts: {report:?}"
    );
    assert!(rebuilt == allocator, "restore does not reproduce the state");
    let _ = allocator.usage();
}
