//! Property tests of the codec: emit/parse round trips, arbitrary input never panics.

use epic_gue::encap::{OuterRepr, decapsulate, encapsulate, flow_entropy_port};
use epic_gue::wire::{
    GuePacket, GueRepr, HelloKind, HelloRepr, InnerProto, MessageKind, Security, legacy,
};
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId, WireProfile};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = MessageKind> {
    prop_oneof![
        Just(MessageKind::Data(InnerProto::Ipv4)),
        Just(MessageKind::Data(InnerProto::Ipv6)),
        any::<u8>().prop_map(MessageKind::Control),
    ]
}

fn security() -> impl Strategy<Value = Option<Security>> {
    prop_oneof![
        Just(None),
        any::<[u8; 8]>().prop_map(|b| Some(Security::Bits64(b))),
        any::<[u8; 16]>().prop_map(|b| Some(Security::Bits128(b))),
        any::<[u8; 32]>().prop_map(|b| Some(Security::Bits256(b))),
    ]
}

/// Every valid repr: any kind, optional fields, private data up to the 31-word limit.
fn repr() -> impl Strategy<Value = GueRepr> {
    (
        kind(),
        proptest::option::of(any::<u32>()),
        security(),
        0u8..=31,
    )
        .prop_filter_map(
            "Hlen over 31 words",
            |(kind, id, security, private_words)| {
                let r = GueRepr {
                    kind,
                    tunnel_id: id.map(TunnelId),
                    security,
                    private_words,
                };
                r.hlen().map(|_| r)
            },
        )
}

proptest! {
    #[test]
    fn emit_then_parse_is_identity(r in repr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = vec![0u8; r.buffer_len() + payload.len()];
        r.emit(&mut GuePacket::new_unchecked(&mut buf[..])).unwrap();
        buf[r.buffer_len()..].copy_from_slice(&payload);
        let p = GuePacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(GueRepr::parse(&p).unwrap(), r);
        prop_assert_eq!(p.payload(), &payload[..]);
        prop_assert_eq!(p.header_len(), r.buffer_len());
        prop_assert_eq!(p.tunnel_id(), r.tunnel_id);
        prop_assert_eq!(p.security(), r.security.as_ref().map(|s| s.as_bytes()));
    }

    #[test]
    fn hello_emit_then_parse_is_identity(kind in 0usize..3, id: u32, counter: u64, tenant: u32, node: [u8; 16], mac: [u8; 16]) {
        let kind = [HelloKind::Hello, HelloKind::Challenge, HelloKind::Response][kind];
        let h = HelloRepr { kind, tunnel_id: TunnelId(id), counter, tenant: TenantId(tenant), node: NodeId(node), mac };
        let mut buf = [0u8; epic_gue::wire::HELLO_LEN];
        h.emit(&mut buf);
        prop_assert_eq!(HelloRepr::parse(&buf), Ok(h));
    }

    #[test]
    fn legacy_emit_then_parse_is_identity(hello: bool, id: u32) {
        let m = legacy::LegacyMessage { hello, tunnel_id: TunnelId(id) };
        let mut buf = [0u8; legacy::HEADER_LEN];
        legacy::emit(&m, &mut buf);
        prop_assert_eq!(legacy::parse(&buf), Ok(m));
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        if let Ok(p) = GuePacket::new_checked(&bytes[..]) {
            let _ = (p.tunnel_id(), p.security(), p.payload(), p.options(), p.flags());
            if let Ok(r) = GueRepr::parse(&p) {
                // Whatever parses re-emits to the same header (private data zeroed).
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut GuePacket::new_unchecked(&mut out[..])).unwrap();
                let fields = r.buffer_len() - 4 * usize::from(r.private_words);
                prop_assert_eq!(&out[..fields], &bytes[..fields]);
            }
        }
        let _ = HelloRepr::parse(&bytes);
        let _ = legacy::parse(&bytes);
        let _ = GueRepr::parse_bytes(&bytes, WireProfile::EpicLegacy);
        let _ = decapsulate(&bytes, GUE_PORT, WireProfile::Standard);
        let _ = decapsulate(&bytes, GUE_PORT, WireProfile::EpicLegacy);
        let _ = flow_entropy_port(&bytes);
    }

    #[test]
    fn decapsulating_near_valid_packets_never_panics(
        v6: bool, inner in proptest::collection::vec(any::<u8>(), 0..64), at: usize, byte: u8, cut: usize,
    ) {
        let outer = if v6 {
            OuterRepr { src: "[2001:db8::1]:50000".parse().unwrap(), dst: "[2001:db8::2]:6080".parse().unwrap(), hop_limit: 64, dont_fragment: false }
        } else {
            OuterRepr { src: "192.0.2.1:50000".parse().unwrap(), dst: "192.0.2.2:6080".parse().unwrap(), hop_limit: 64, dont_fragment: true }
        };
        let mut buf = [0u8; 256];
        let n = encapsulate(&outer, &GueRepr::data(TunnelId(3), InnerProto::Ipv4), &inner, &mut buf).unwrap();
        let d = decapsulate(&buf[..n], GUE_PORT, WireProfile::Standard).unwrap();
        prop_assert_eq!(d.payload, &inner[..]);
        buf[at % n] = byte;
        let _ = decapsulate(&buf[..n], GUE_PORT, WireProfile::Standard);
        let _ = decapsulate(&buf[..cut % (n + 1)], GUE_PORT, WireProfile::Standard);
    }
}
