//! Criterion benchmarks of the codec and the hello verifier.
//!
//! Targets (issue 3): GUE header parse ≤ 5 ns; outer IPv4+UDP+GUE parse within
//! 1.5× of etherparse's IPv4+UDP alone; hello verify ≤ 2 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use epic_gue::encap::{data_header, decapsulate, encapsulate, outer_for};
use epic_gue::hello::{
    HelloEvent, HelloKey, HelloSender, HelloVerifier, Instant, SenderConfig, TunnelConfig,
    TunnelSlot, VerifierConfig,
};
use epic_gue::{GUE_PORT, GuePacket, GueRepr, NodeId, TenantId, TunnelId, WireProfile};

fn inner(len: usize, v6: bool) -> Vec<u8> {
    let mut p = vec![0u8; len];
    if v6 {
        p[0] = 0x60;
        p[6] = 17;
    } else {
        p[0] = 0x45;
        p[9] = 17;
    }
    p
}

fn header(c: &mut Criterion) {
    let bytes = [0x01u8, 0x04, 0x80, 0x00, 0, 0, 0, 7, 0x45, 0, 0, 20];
    c.bench_function("gue/parse_data_header", |b| {
        b.iter(|| {
            let p = GuePacket::new_checked(black_box(&bytes[..])).unwrap();
            GueRepr::parse(&p).unwrap().tunnel_id
        })
    });
}

fn outer_parse(c: &mut Criterion) {
    let payload = inner(64, false);
    let outer = outer_for(
        "192.0.2.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
        &payload,
    );
    let mut buf = vec![0u8; 256];
    let n = encapsulate(
        &outer,
        &data_header(TunnelId(7), &payload).unwrap(),
        &payload,
        &mut buf,
    )
    .unwrap();
    let pkt = &buf[..n];
    let mut g = c.benchmark_group("outer_parse");
    g.bench_function("epic_gue_ipv4_udp_gue", |b| {
        b.iter(|| {
            decapsulate(black_box(pkt), GUE_PORT, WireProfile::Standard)
                .unwrap()
                .payload
                .len()
        })
    });
    g.bench_function("etherparse_ipv4_udp", |b| {
        b.iter(|| {
            let ip = etherparse::Ipv4Slice::from_slice(black_box(pkt)).unwrap();
            let udp = etherparse::UdpSlice::from_slice(ip.payload().payload).unwrap();
            (
                ip.header().total_len(),
                udp.source_port(),
                udp.destination_port(),
                udp.payload().len(),
            )
        })
    });
    g.finish();
}

fn encap(c: &mut Criterion) {
    let mut g = c.benchmark_group("encap_emit");
    for (name, v6, len) in [
        ("ipv4_64", false, 64),
        ("ipv4_1400", false, 1400),
        ("ipv6_64", true, 64),
        ("ipv6_1400", true, 1400),
    ] {
        let payload = inner(len, v6);
        let outer = if v6 {
            outer_for(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
                &payload,
            )
        } else {
            outer_for(
                "192.0.2.1".parse().unwrap(),
                "198.51.100.2".parse().unwrap(),
                &payload,
            )
        };
        let gue = data_header(TunnelId(7), &payload).unwrap();
        let mut buf = vec![0u8; 1600];
        g.bench_function(name, |b| {
            b.iter(|| encapsulate(&outer, &gue, black_box(&payload), &mut buf).unwrap())
        });
    }
    g.finish();
}

fn hello(c: &mut Criterion) {
    let key = HelloKey::new([9; 32]);
    let node = NodeId::from_name("node");
    let mut sender = HelloSender::new(
        &SenderConfig::new(TunnelId(7), key.clone(), TenantId(1), node),
        Instant::ZERO,
        0,
    );
    let mut verifier = HelloVerifier::new(vec![TunnelSlot::EMPTY; 1024], VerifierConfig::default());
    for id in 0..1024 {
        verifier
            .add_tunnel(&TunnelConfig::new(
                TunnelId(id),
                key.clone(),
                TenantId(1),
                node,
            ))
            .unwrap();
    }
    let src = "203.0.113.1:40000".parse().unwrap();
    let mut now = 0u64;
    c.bench_function("hello/verify_1024_tunnels", |b| {
        b.iter_batched(
            || {
                now += 3_000_000_000;
                (
                    Instant::from_nanos(now),
                    sender.hello_now(Instant::from_nanos(now)),
                )
            },
            |(t, d)| {
                // No response is fed back, so every hello is challenged:
                // this is the cost of a verified hello from a new address
                // (verification plus signing the challenge), the most a
                // hello costs the verifier.
                let e = verifier.handle(t, src, black_box(d.as_bytes()));
                debug_assert!(!matches!(e, HelloEvent::Rejected { .. }));
                e
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("hello/send", |b| {
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            sender.hello_now(Instant::from_nanos(t))
        })
    });
}

criterion_group!(benches, header, outer_parse, encap, hello);
criterion_main!(benches);
