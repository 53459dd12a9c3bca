//! Per-packet cost of the GUE programs under BPF_PROG_TEST_RUN, against the
//! counting program as the baseline, in one group. The kernel re-runs the same
//! skb, so the data path is measured as an encapsulation + decapsulation pair
//! (`epic_bench_roundtrip`), which leaves the packet as it found it. Needs root.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use epic_bpf::{CounterProgram, DataPath};
use epic_gue::maps::{EndpointKey, TunnelValue};
use epic_gue::{TenantId, TunnelId};

#[path = "../tests/common/mod.rs"]
mod common;

fn cases() -> Vec<(String, Vec<u8>, IpAddr)> {
    let mut out = Vec::new();
    for (family, src, dst, outer) in [
        ("v4", "198.51.100.1", "203.0.113.10", "192.0.2.1"),
        ("v6", "2001:db8:1::1", "2001:db8:3::10", "2001:db8:2::1"),
    ] {
        for size in [64usize, 1400] {
            let src: IpAddr = src.parse().unwrap();
            let dst: IpAddr = dst.parse().unwrap();
            let header = if family == "v4" {
                14 + 20 + 8
            } else {
                14 + 40 + 8
            };
            let packet = common::ip_packet(src, 40000, dst, 8080, 17, size.saturating_sub(header));
            out.push((
                format!("{family}/{size}B"),
                common::frame(&packet),
                outer.parse().unwrap(),
            ));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    if !nix_is_root() {
        eprintln!("skipping epic-bpf benchmarks: they need root");
        return;
    }
    let baseline = CounterProgram::load().expect("load epic_count");
    let mut dp = DataPath::load().expect("load the GUE programs");
    let tunnel = TunnelId(7);
    let mut group = c.benchmark_group("gue_bpf_per_packet");
    let mut ratios = Vec::new();
    for (name, frame, outer) in cases() {
        // A tunnel whose remote is its own local end, so the decapsulation
        // accepts what the encapsulation wrote; inner v4 over outer v4, v6 over v6.
        let value = TunnelValue::pending(TenantId(1), outer, 6080)
            .verified(outer, 6080)
            .unwrap();
        dp.add_tunnel(tunnel, value).unwrap();
        let inner_dst: IpAddr = if frame[12] == 0x08 {
            "203.0.113.10"
        } else {
            "2001:db8:3::10"
        }
        .parse()
        .unwrap();
        dp.add_endpoint(EndpointKey::new(0, inner_dst, 8080, 17), tunnel)
            .unwrap();
        // The cluster half checks the pod is an endpoint of the tunnel.
        dp.add_local_endpoint(tunnel, inner_dst, 8080, 17).unwrap();
        let mut out = vec![0u8; frame.len() + 128];
        let check = dp.test_run_roundtrip(&frame, &mut out).unwrap();
        assert_eq!(
            (check.verdict, &out[..check.len]),
            (0, &frame[..]),
            "{name}: round trip must restore the frame"
        );

        group.bench_function(format!("baseline_count/{name}"), |b| {
            b.iter_custom(|iters| {
                kernel_time(iters, |n| baseline.bench_run(black_box(&frame), n).unwrap())
            })
        });
        group.bench_function(format!("encap_decap_pair/{name}"), |b| {
            b.iter_custom(|iters| {
                kernel_time(iters, |n| dp.bench_roundtrip(black_box(&frame), n).unwrap())
            })
        });
        let base = baseline.bench_run(&frame, 1_000_000).unwrap();
        let pair = dp.bench_roundtrip(&frame, 1_000_000).unwrap();
        ratios.push((name, base, pair));
    }
    group.finish();
    for (name, base, pair) in ratios {
        eprintln!(
            "{name}: baseline {base:?}, encap+decap pair {pair:?}, ratio {:.2}, above baseline {:?}",
            pair.as_secs_f64() / base.as_secs_f64(),
            pair.saturating_sub(base)
        );
    }
}

/// Runs `iters` repetitions in kernel batches (the kernel reports the mean per run).
fn kernel_time(iters: u64, run: impl Fn(u32) -> Duration) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        let n = left.min(1_000_000) as u32;
        total += run(n) * n;
        left -= u64::from(n);
    }
    total
}

fn nix_is_root() -> bool {
    epic_test_support::is_root()
}

criterion_group!(benches, bench);
criterion_main!(benches);
