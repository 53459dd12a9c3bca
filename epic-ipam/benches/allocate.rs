//! Allocation benchmarks (issue 4 targets: ≤ 1 µs per allocate at 50% full,
//! restore of 100k records ≤ 100 ms).
//!
//! `allocate/ipv4 /16 50% full (…)` time `allocate` alone: each round
//! allocates a batch of [`BATCH`] owners (timed), then releases them
//! (untimed), so the pool stays between 50% and 50% + `BATCH`/65536 full and
//! every round starts from the same state.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use epic_ipam::{
    AllocationRecord, AllocationRequest, Allocator, FamilyPolicy, PoolSet, PoolSpec, PortSpec,
};

fn uid(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        (i as u32).wrapping_mul(2_654_435_761),
        i % 0xffff,
        i
    )
}

fn filled(pool: &str, family: FamilyPolicy, n: usize, release_every_other: bool) -> Allocator {
    let mut ipam = Allocator::new(PoolSet::new([PoolSpec::new("p", [pool])]).unwrap());
    for i in 0..n {
        ipam.allocate(
            &AllocationRequest::new(uid(i), "acme", family).with_ports([PortSpec::tcp(443)]),
        )
        .unwrap();
    }
    if release_every_other {
        for i in (0..n).step_by(2) {
            ipam.release(&uid(i));
        }
    }
    ipam
}

fn allocate_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate+release");
    // /16 half full, the lower half contiguous
    let mut ipam = filled("10.0.0.0/16", FamilyPolicy::Ipv4, 1 << 15, false);
    let req = AllocationRequest::new("bench-owner", "acme", FamilyPolicy::Ipv4)
        .with_ports([PortSpec::tcp(443)]);
    group.bench_function("ipv4 /16 50% full (contiguous)", |b| {
        b.iter(|| {
            let a = ipam.allocate(black_box(&req)).unwrap();
            ipam.release(&a.owner);
        })
    });
    // /16 half full, every other address held (worst fragmentation)
    let mut ipam = filled("10.0.0.0/16", FamilyPolicy::Ipv4, 1 << 16, true);
    group.bench_function("ipv4 /16 50% full (every other)", |b| {
        b.iter(|| {
            let a = ipam.allocate(black_box(&req)).unwrap();
            ipam.release(&a.owner);
        })
    });
    // /64 with 100k allocations
    let mut ipam = filled("2001:db8:1::/64", FamilyPolicy::Ipv6, 100_000, false);
    let req6 = AllocationRequest::new("bench-owner", "acme", FamilyPolicy::Ipv6)
        .with_ports([PortSpec::tcp(443)]);
    group.bench_function("ipv6 /64 with 100k allocations", |b| {
        b.iter(|| {
            let a = ipam.allocate(black_box(&req6)).unwrap();
            ipam.release(&a.owner);
        })
    });
    group.finish();
}

/// Owners allocated per timed round of the allocate-only benchmarks.
const BATCH: usize = 1024;

/// Times `allocate` alone: `BATCH` allocations per round, released outside
/// the timed part (the returned allocations are dropped outside it too).
fn allocate_alone(ipam: &mut Allocator, requests: &[AllocationRequest], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut results = Vec::with_capacity(requests.len());
    let mut left = iters;
    while left > 0 {
        let n = left.min(requests.len() as u64) as usize;
        let start = Instant::now();
        for request in &requests[..n] {
            results.push(ipam.allocate(black_box(request)).unwrap());
        }
        total += start.elapsed();
        for a in results.drain(..) {
            ipam.release(&a.owner);
        }
        left -= n as u64;
    }
    total
}

fn allocate_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate");
    let requests: Vec<AllocationRequest> = (0..BATCH)
        .map(|i| {
            AllocationRequest::new(uid(10_000_000 + i), "acme", FamilyPolicy::Ipv4)
                .with_ports([PortSpec::tcp(443)])
        })
        .collect();
    // /16 half full, the lower half contiguous
    let mut ipam = filled("10.0.0.0/16", FamilyPolicy::Ipv4, 1 << 15, false);
    group.bench_function("ipv4 /16 50% full (contiguous)", |b| {
        b.iter_custom(|iters| allocate_alone(&mut ipam, &requests, iters))
    });
    // /16 half full, every other address held (worst fragmentation)
    let mut ipam = filled("10.0.0.0/16", FamilyPolicy::Ipv4, 1 << 16, true);
    group.bench_function("ipv4 /16 50% full (every other)", |b| {
        b.iter_custom(|iters| allocate_alone(&mut ipam, &requests, iters))
    });
    let mut ipam = filled("2001:db8:1::/64", FamilyPolicy::Ipv6, 100_000, false);
    let mut i = 1_000_000usize;
    group.bench_function("ipv6 /64 from 100k allocations on", |b| {
        b.iter_batched(
            || {
                i += 1;
                AllocationRequest::new(uid(i), "acme", FamilyPolicy::Ipv6)
            },
            |request| ipam.allocate(&request).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn restore(c: &mut Criterion) {
    let mut group = c.benchmark_group("restore");
    group.sample_size(10);
    let ipam = filled("2001:db8:1::/64", FamilyPolicy::Ipv6, 100_000, false);
    let pools = ipam.pools().clone();
    let records: Vec<AllocationRecord> = ipam.records();
    group.bench_function("100k ipv6 records", |b| {
        b.iter_batched(
            || pools.clone(),
            |pools| Allocator::with_records(pools, &records),
            BatchSize::LargeInput,
        )
    });
    let ipam = filled("10.0.0.0/16", FamilyPolicy::Ipv4, 1 << 16, true);
    let records = ipam.records();
    let pools = ipam.pools().clone();
    group.bench_function("32k ipv4 records (every other address)", |b| {
        b.iter_batched(
            || pools.clone(),
            |pools| Allocator::with_records(pools, &records),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, allocate_release, allocate_only, restore);
criterion_main!(benches);
