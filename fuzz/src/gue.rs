//! Fuzz entry points for `epic-gue`: the GUE parser and the hello verifier.

use std::net::SocketAddr;

use epic_gue::encap::{decapsulate, flow_entropy_port};
use epic_gue::hello::{
    HelloEvent, HelloKey, HelloSender, HelloVerifier, Instant, SenderConfig, TunnelConfig,
    TunnelSlot, VerifierConfig,
};
use epic_gue::wire::{GuePacket, GueRepr, HelloRepr, legacy};
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId, WireProfile};

/// Parses arbitrary bytes as a GUE header (both profiles), as a hello, and as
/// an outer IP/UDP/GUE packet; whatever parses must re-emit consistently.
pub fn gue_packet(data: &[u8]) {
    if let Ok(packet) = GuePacket::new_checked(data) {
        let _ = (
            packet.tunnel_id(),
            packet.security(),
            packet.payload(),
            packet.options(),
        );
        if let Ok(repr) = GueRepr::parse(&packet) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut GuePacket::new_unchecked(&mut out[..]))
                .expect("sized buffer");
            let again =
                GueRepr::parse(&GuePacket::new_checked(&out[..]).expect("re-emitted header"));
            assert_eq!(again, Ok(repr), "emit/parse round trip");
        }
    }
    for profile in [WireProfile::Standard, WireProfile::EpicLegacy] {
        if let Ok((_, len)) = GueRepr::parse_bytes(data, profile) {
            assert!(len <= data.len(), "header longer than input");
        }
        if let Ok(d) = decapsulate(data, GUE_PORT, profile) {
            assert!(d.header_len + d.payload.len() <= data.len());
        }
    }
    if let Ok(hello) = HelloRepr::parse(data) {
        let mut out = [0u8; epic_gue::wire::HELLO_LEN];
        hello.emit(&mut out);
        assert_eq!(HelloRepr::parse(&out), Ok(hello));
    }
    let _ = legacy::parse(data);
    let _ = flow_entropy_port(data);
}

/// Feeds arbitrary datagrams to a verifier that knows two tunnels (one in
/// legacy mode), interleaved with genuine hello exchanges and on-path
/// replays: nothing panics, and nothing the attacker sends (a forged
/// datagram, a genuine hello replayed from its address, answered or not)
/// ever makes the attacker the authenticated tunnel's remote. The sender is
/// fed the attacker's datagrams as challenges too.
pub fn gue_hello(data: &[u8]) {
    let key = HelloKey::new([0x5a; 32]);
    let node = NodeId::from_name("fuzz-node");
    let mut verifier = HelloVerifier::new([TunnelSlot::EMPTY; 4], VerifierConfig::default());
    verifier
        .add_tunnel(&TunnelConfig::new(
            TunnelId(1),
            key.clone(),
            TenantId(1),
            node,
        ))
        .expect("room");
    let mut legacy_cfg = TunnelConfig::new(TunnelId(2), key.clone(), TenantId(1), node);
    legacy_cfg.profile = WireProfile::EpicLegacy;
    verifier.add_tunnel(&legacy_cfg).expect("room");
    let mut sender = HelloSender::new(
        &SenderConfig::new(TunnelId(1), key, TenantId(1), node),
        Instant::ZERO,
        1,
    );
    let genuine: SocketAddr = "192.0.2.1:40000".parse().expect("address");
    let attacker: SocketAddr = "198.51.100.66:40000".parse().expect("address");

    let mut now = 0u64;
    // Chunks: first byte picks the action, the rest is the datagram.
    for chunk in data.split(|&b| b == 0xff).take(64) {
        now += 1_000_000_000;
        let t = Instant::from_nanos(now);
        match chunk.split_first() {
            Some((0, _)) => {
                let hello = sender.hello_now(t);
                let event = verifier.handle(t, genuine, hello.as_bytes());
                if let HelloEvent::Challenge { datagram, .. } = event {
                    let response = sender.answer(datagram.as_bytes()).expect("genuine");
                    let event = verifier.handle(t, genuine, response.as_bytes());
                    assert!(
                        matches!(event, HelloEvent::Learned { .. } | HelloEvent::Rebound { .. }),
                        "genuine response refused: {event:?}"
                    );
                } else {
                    assert!(
                        matches!(event, HelloEvent::Refreshed { .. }),
                        "genuine hello refused: {event:?}"
                    );
                }
            }
            Some((1, _)) => while verifier.poll(t).is_some() {},
            Some((2, _)) => {
                // On path: a fresh hello replayed from the attacker first;
                // the challenge relayed to the node, answered from its address.
                let hello = sender.hello_now(t);
                if let HelloEvent::Challenge { datagram, .. } =
                    verifier.handle(t, attacker, hello.as_bytes())
                    && let Ok(response) = sender.answer(datagram.as_bytes())
                {
                    let _ = verifier.handle(t, genuine, response.as_bytes());
                }
            }
            Some((_, datagram)) => {
                let _ = verifier.handle(t, attacker, datagram);
                let _ = sender.answer(datagram);
                let _ = verifier.next_timeout();
            }
            None => {}
        }
        assert_ne!(
            verifier.remote(TunnelId(1)),
            Some(attacker),
            "the attacker took over an authenticated tunnel"
        );
    }
}
