//! Hand-built frames for the BPF_PROG_TEST_RUN tests and benchmarks.
#![allow(dead_code)]

use std::net::IpAddr;

use epic_gue::encap::internet_checksum;

/// Ethernet header: destination, source, ethertype.
pub const ETH: [u8; 12] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];

/// An inner IP packet (no Ethernet): `src:sport → dst:dport`, TCP (6) or UDP
/// (17), with `payload_len` bytes of payload and correct checksums.
pub fn ip_packet(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    protocol: u8,
    payload_len: usize,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if protocol == 6 {
        // seq, ack, data offset 6 (MSS option), SYN, window, csum, urg, MSS 1460
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        l4.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    } else {
        let len = (8 + payload_len) as u16;
        l4.extend_from_slice(&len.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend((0..payload_len).map(|i| i as u8));
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
        _ => panic!("mixed families"),
    }
    pseudo.extend_from_slice(&l4);
    let csum = internet_checksum(&pseudo);
    let at = if protocol == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    let mut ip = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, protocol, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = internet_checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[protocol, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    ip.extend_from_slice(&l4);
    ip
}

/// `packet` (an IP packet) in an Ethernet frame.
pub fn frame(packet: &[u8]) -> Vec<u8> {
    let mut f = ETH.to_vec();
    f.extend_from_slice(if packet[0] >> 4 == 4 {
        &[0x08, 0x00]
    } else {
        &[0x86, 0xdd]
    });
    f.extend_from_slice(packet);
    f
}
