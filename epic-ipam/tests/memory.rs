//! Memory for 100k IPv6 allocations, measured with a counting global
//! allocator (its own test binary, `harness = false`, so nothing else runs
//! in the process while it counts).
//!
//! Target (issue 4): at most 16 MiB for 100k allocations in a `/64`.

use std::alloc::System;

use epic_ipam::{AllocationRequest, Allocator, FamilyPolicy, PoolSet, PoolSpec, PortSpec};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 100_000;
const BUDGET: isize = 16 << 20;

/// A gateway-uid-like owner id (36 characters, like a Kubernetes uid).
fn uid(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        (i as u32).wrapping_mul(2_654_435_761),
        i % 0xffff,
        i
    )
}

/// Bytes still held. `stats_alloc` already adds a reallocation's growth to
/// `bytes_allocated` (and its shrinkage to `bytes_deallocated`), so
/// `bytes_reallocated` must not be added again: that counted every growth
/// step of a vector twice, even of one freed since.
fn net_bytes(region: &Region<'_, System>) -> isize {
    let s = region.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

fn requests(family: FamilyPolicy) -> Vec<AllocationRequest> {
    (0..N)
        .map(|i| {
            AllocationRequest::new(uid(i), "acme", family)
                .with_ports([PortSpec::tcp(80), PortSpec::tcp(443)])
        })
        .collect()
}

fn measure(label: &str, pool: &str, family: FamilyPolicy, release_every_other: bool) -> isize {
    let pools = PoolSet::new([PoolSpec::new("p", [pool])]).expect("valid pool");
    let reqs = requests(family);
    let region = Region::new(GLOBAL);
    let mut ipam = Allocator::new(pools);
    for r in &reqs {
        ipam.allocate(r).expect("allocates");
    }
    let mut held = N;
    if release_every_other {
        for r in reqs.iter().step_by(2) {
            ipam.release(&r.owner);
        }
        held = N - N.div_ceil(2);
    }
    let bytes = net_bytes(&region);
    println!(
        "{label}: {held} allocations hold {:.2} MiB ({} bytes/allocation)",
        bytes as f64 / (1 << 20) as f64,
        bytes / held as isize
    );
    // restore of the same records, measured the same way
    let records = ipam.records();
    let pools = ipam.pools().clone();
    drop(ipam);
    let region = Region::new(GLOBAL);
    // records are borrowed, so only the rebuilt state counts
    let (restored, report) = Allocator::with_records(pools, &records);
    assert!(report.conflicts.is_empty());
    println!(
        "{label}: after restore {:.2} MiB",
        net_bytes(&region) as f64 / (1 << 20) as f64
    );
    drop(restored);
    bytes
}

fn main() {
    let v6 = measure(
        "IPv6 /64, 100k",
        "2001:db8:1::/64",
        FamilyPolicy::Ipv6,
        false,
    );
    measure(
        "IPv6 /64, 100k then every other released",
        "2001:db8:1::/64",
        FamilyPolicy::Ipv6,
        true,
    );
    measure("IPv6 ::/0, 100k", "::/0", FamilyPolicy::Ipv6, false);
    measure("IPv4 /8, 100k", "10.0.0.0/8", FamilyPolicy::Ipv4, false);
    assert!(
        v6 <= BUDGET,
        "100k IPv6 allocations use {v6} bytes, over the 16 MiB budget"
    );
    println!("1 passed, 0 failed");
}
