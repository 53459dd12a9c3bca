//! Allocation benchmarks (issue 4 targets: ≤ 1 µs per allocate at 50% full,
//! restore of 100k records ≤ 100 ms).

use std::hint::black_box;

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

fn allocate_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate");
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
