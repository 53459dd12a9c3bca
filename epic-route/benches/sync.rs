//! `sync` against the real kernel in a private network namespace: 10,000
//! routes from empty, and a sync that changes 1% of 10,000 (50 withdrawn, 50
//! added). Needs root; without it the benchmark says so and does nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use epic_route::{DesiredRoutes, RouteConfig, RouteProgrammer, RouteTarget};
use epic_test_support::{Netns, is_root};
use ipnet::{IpNet, Ipv4Net};

const ROUTES: u32 = 10_000;

/// 10,000 /32s from 198.18.0.0/15 (the benchmarking range), starting at `offset`.
fn desired(offset: u32, count: u32) -> DesiredRoutes {
    let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0));
    (offset..offset + count)
        .map(|i| IpNet::V4(Ipv4Net::new((base + i).into(), 32).unwrap()))
        .collect()
}

fn bench_sync(c: &mut Criterion) {
    if !is_root() {
        eprintln!("skipping the sync benchmark: it needs root (a network namespace and netlink)");
        return;
    }
    let ns = Netns::new("rt-bench").unwrap();
    let (runtime, programmer) = ns
        .run_in(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let programmer = {
                let _guard = runtime.enter();
                RouteProgrammer::connect(RouteConfig::new(RouteTarget::Interface("lo".into())))
                    .unwrap()
            };
            (runtime, programmer)
        })
        .unwrap();
    let empty = DesiredRoutes::new();
    let full = desired(0, ROUTES);
    // 1% changed: the first 50 withdrawn, 50 new ones added at the end.
    let changed = desired(ROUTES / 200, ROUTES);

    let mut group = c.benchmark_group("sync");
    group.sample_size(10);
    group.bench_function("10000 routes from empty", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                runtime.block_on(programmer.sync(&empty)).unwrap();
                let start = Instant::now();
                let report = runtime.block_on(programmer.sync(black_box(&full))).unwrap();
                total += start.elapsed();
                assert_eq!(report.added.len(), ROUTES as usize);
            }
            total
        })
    });
    group.bench_function("1% of 10000 changed", |b| {
        runtime.block_on(programmer.sync(&full)).unwrap();
        let mut forward = true;
        b.iter(|| {
            let target = if forward { &changed } else { &full };
            forward = !forward;
            let report = runtime
                .block_on(programmer.sync(black_box(target)))
                .unwrap();
            assert_eq!(report.added.len() + report.removed.len(), 100);
        })
    });
    group.bench_function("no-op over 10000", |b| {
        runtime.block_on(programmer.sync(&full)).unwrap();
        b.iter(|| {
            let report = runtime.block_on(programmer.sync(black_box(&full))).unwrap();
            assert!(report.is_noop());
        })
    });
    group.finish();
    runtime.block_on(programmer.sync(&empty)).unwrap();
    drop(programmer);
    drop(runtime);
    drop(ns);
}

criterion_group!(benches, bench_sync);
criterion_main!(benches);
