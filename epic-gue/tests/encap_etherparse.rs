//! Encapsulation checked against an independent parser (etherparse): header
//! fields, IPv4 header checksum, IPv6 UDP checksum; and stripping restores the
//! inner packet byte for byte.

use epic_gue::encap::{data_header, decapsulate, encapsulate, outer_for};
use epic_gue::{GUE_PORT, GuePacket, GueRepr, TunnelId, WireProfile};
use etherparse::{Ipv4Header, Ipv6Header, UdpHeader};

fn inner_v6_tcp() -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&20u16.to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(
        &"2001:db8:1::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p[24..40].copy_from_slice(
        &"2001:db8:2::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p[40..44].copy_from_slice(&[0x1f, 0x90, 0xc0, 0x01]);
    p
}

#[test]
fn ipv4_outer_matches_etherparse() {
    let inner = inner_v6_tcp();
    let outer = outer_for(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.20".parse().unwrap(),
        &inner,
    );
    let gue = data_header(TunnelId(0xdead_beef), &inner).unwrap();
    let mut buf = [0u8; 256];
    let n = encapsulate(&outer, &gue, &inner, &mut buf).unwrap();
    let (ip, rest) = Ipv4Header::from_slice(&buf[..n]).unwrap();
    assert_eq!(ip.calc_header_checksum(), ip.header_checksum);
    assert_eq!(
        (ip.source, ip.destination, ip.time_to_live, ip.dont_fragment),
        ([192, 0, 2, 10], [198, 51, 100, 20], 64, true)
    );
    assert_eq!(usize::from(ip.total_len), n);
    let (udp, gue_bytes) = UdpHeader::from_slice(rest).unwrap();
    assert_eq!(
        (udp.source_port, udp.destination_port, udp.checksum),
        (outer.src.port(), GUE_PORT, 0)
    );
    assert_eq!(usize::from(udp.length), 8 + 8 + inner.len());
    let p = GuePacket::new_checked(gue_bytes).unwrap();
    assert_eq!(GueRepr::parse(&p).unwrap(), gue);
    assert_eq!(p.payload(), &inner[..]);
    let d = decapsulate(&buf[..n], GUE_PORT, WireProfile::Standard).unwrap();
    assert_eq!(d.payload, &inner[..]);
}

#[test]
fn ipv6_outer_matches_etherparse_with_udp_checksum() {
    let inner = inner_v6_tcp();
    let outer = outer_for(
        "2001:db8::a".parse().unwrap(),
        "2001:db8::b".parse().unwrap(),
        &inner,
    );
    let gue = data_header(TunnelId(1), &inner).unwrap();
    let mut buf = [0u8; 256];
    let n = encapsulate(&outer, &gue, &inner, &mut buf).unwrap();
    let (ip, rest) = Ipv6Header::from_slice(&buf[..n]).unwrap();
    assert_eq!(
        (
            ip.next_header.0,
            ip.hop_limit,
            usize::from(ip.payload_length)
        ),
        (17, 64, n - 40)
    );
    let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
    assert_ne!(udp.checksum, 0);
    assert_eq!(udp.calc_checksum_ipv6(&ip, payload).unwrap(), udp.checksum);
    let d = decapsulate(&buf[..n], GUE_PORT, WireProfile::Standard).unwrap();
    assert_eq!(
        (d.src, d.dst, d.payload),
        (outer.src, outer.dst, &inner[..])
    );
}

#[cfg(feature = "std")]
#[test]
fn owned_encapsulation() {
    let inner = inner_v6_tcp();
    let outer = outer_for(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.20".parse().unwrap(),
        &inner,
    );
    let gue = data_header(TunnelId(2), &inner).unwrap();
    let bytes = epic_gue::encap::encapsulate_to_bytes(&outer, &gue, &inner).unwrap();
    assert_eq!(
        decapsulate(&bytes, GUE_PORT, WireProfile::Standard)
            .unwrap()
            .payload,
        &inner[..]
    );
}

#[test]
fn legacy_profile_decapsulates_only_when_asked() {
    let mut inner = vec![0x45u8, 0, 0, 20];
    inner.resize(20, 0);
    let mut gue_and_inner = vec![0x05, 0x04, 0xA0, 0x00, 0, 0, 0, 42];
    gue_and_inner.extend_from_slice(&inner);
    let mut pkt = vec![0u8; 28];
    let ip = Ipv4Header::new(
        (8 + gue_and_inner.len()) as u16,
        64,
        etherparse::IpNumber::UDP,
        [192, 0, 2, 1],
        [192, 0, 2, 2],
    )
    .unwrap();
    let mut ip = ip;
    ip.header_checksum = ip.calc_header_checksum();
    pkt[..20].copy_from_slice(&ip.to_bytes());
    let udp = UdpHeader {
        source_port: 1234,
        destination_port: GUE_PORT,
        length: (8 + gue_and_inner.len()) as u16,
        checksum: 0,
    };
    pkt[20..28].copy_from_slice(&udp.to_bytes());
    pkt.extend_from_slice(&gue_and_inner);
    // Standard: the stale Hlen would read as private data; refused instead.
    assert_eq!(
        decapsulate(&pkt, GUE_PORT, WireProfile::Standard),
        Err(epic_gue::encap::EncapError::UnexpectedFields {
            flags: 0xA000,
            hlen: 5
        })
    );
    let d = decapsulate(&pkt, GUE_PORT, WireProfile::EpicLegacy).unwrap();
    assert_eq!(
        (d.gue.tunnel_id, d.payload),
        (Some(TunnelId(42)), &inner[..])
    );
}
