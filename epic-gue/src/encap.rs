//! Outer IPv4/IPv6 + UDP + GUE around an inner IP packet, and back.
//!
//! [`encapsulate`] writes the outer headers (correct IPv4 header checksum; UDP
//! checksum zero over IPv4, computed over IPv6 as RFC 8200 requires) followed
//! by the inner packet into a caller buffer. [`decapsulate`] parses and checks
//! them and returns the inner packet as a sub-slice. [`flow_entropy_port`]
//! picks the outer source port from the inner flow so ECMP spreads tunnels.
//! `core` only; loops are bounded by the slices they walk.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::{
    GUE_PORT, GuePacket, GueRepr, InnerProto, MessageKind, TunnelId, WireError, WireProfile,
};

/// IPv4 header length written by [`encapsulate`] (no options).
pub const IPV4_HEADER_LEN: usize = 20;
/// IPv6 header length.
pub const IPV6_HEADER_LEN: usize = 40;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// Lowest outer source port chosen by [`flow_entropy_port`] (RFC 6335 dynamic range).
pub const ENTROPY_PORT_MIN: u16 = 49152;

/// Why encapsulation or decapsulation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    /// The GUE header was rejected.
    #[error("GUE: {0}")]
    Wire(#[from] WireError),
    /// The outer packet ends before its headers do.
    #[error("outer packet truncated: need {needed} bytes, have {got}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The outer IP version is neither 4 nor 6.
    #[error("outer IP version {version} unsupported")]
    BadIpVersion {
        /// The version nibble.
        version: u8,
    },
    /// The outer IPv4 header is malformed.
    #[error("outer IPv4 header invalid: {what}")]
    BadIpv4 {
        /// What is wrong.
        what: &'static str,
    },
    /// The outer IPv4 header checksum does not verify.
    #[error("outer IPv4 header checksum {found:#06x} wrong")]
    BadIpv4Checksum {
        /// The checksum in the header.
        found: u16,
    },
    /// The outer packet is not UDP (or IPv6 extension headers precede UDP).
    #[error("outer next header {protocol} is not UDP")]
    NotUdp {
        /// The protocol / next header number.
        protocol: u8,
    },
    /// The UDP destination port is not the tunnel port.
    #[error("UDP destination port {port} is not the GUE port {expected}")]
    WrongPort {
        /// The port found.
        port: u16,
        /// The port expected.
        expected: u16,
    },
    /// The UDP length does not match the IP payload length.
    #[error("UDP length {udp} does not match IP payload length {ip}")]
    BadUdpLength {
        /// The UDP length field.
        udp: usize,
        /// The IP payload length.
        ip: usize,
    },
    /// Local and remote addresses are of different families.
    #[error("local and remote outer addresses differ in family")]
    FamilyMismatch,
    /// The inner packet is neither IPv4 nor IPv6 (or too short to tell).
    #[error("inner packet is not IPv4 or IPv6")]
    InnerNotIp,
    /// A data message whose fields are not exactly a tunnel id (EPIC data
    /// messages carry nothing else; this also stops a legacy header with its
    /// stale `Hlen` from being misread as one with private data).
    #[error("data message with fields other than the tunnel id (flags {flags:#06x}, Hlen {hlen})")]
    UnexpectedFields {
        /// The flags found.
        flags: u16,
        /// The `Hlen` found.
        hlen: u8,
    },
    /// The result would exceed 65535 bytes.
    #[error("encapsulated packet of {len} bytes is too large")]
    TooLarge {
        /// The length it would have.
        len: usize,
    },
    /// The output buffer is too small.
    #[error("output buffer too small: need {needed} bytes, have {got}")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
}

/// The outer end points of a tunnel as used for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OuterRepr {
    /// Outer source (local address, UDP source port).
    pub src: SocketAddr,
    /// Outer destination (remote address, UDP destination port, normally [`GUE_PORT`]).
    pub dst: SocketAddr,
    /// IPv4 TTL / IPv6 hop limit.
    pub hop_limit: u8,
    /// IPv4 only: set the don't-fragment bit.
    pub dont_fragment: bool,
}

impl OuterRepr {
    /// Bytes of outer IP + UDP headers for this family.
    #[inline]
    pub const fn header_len(&self) -> usize {
        match self.src {
            SocketAddr::V4(_) => IPV4_HEADER_LEN + UDP_HEADER_LEN,
            SocketAddr::V6(_) => IPV6_HEADER_LEN + UDP_HEADER_LEN,
        }
    }
}

/// A decapsulated packet: outer end points, GUE header and the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    /// Outer source address and UDP port (the NAT mapping, for hellos).
    pub src: SocketAddr,
    /// Outer destination address and UDP port.
    pub dst: SocketAddr,
    /// The parsed GUE header.
    pub gue: GueRepr,
    /// Bytes of outer IP + UDP + GUE headers.
    pub header_len: usize,
    /// What follows the GUE header: the inner packet or control body.
    pub payload: &'a [u8],
}

/// Internet checksum accumulation (RFC 1071) over `data`, big-endian words.
#[inline]
fn sum_words(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    // Fold often enough that `acc` cannot overflow for 64 KiB inputs.
    (acc & 0xffff) + (acc >> 16)
}

#[inline]
fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// Ones' complement sum of an option-less IPv4 header (unrolled).
#[inline]
fn ipv4_header_sum(h: &[u8; IPV4_HEADER_LEN]) -> u32 {
    let mut acc = 0u32;
    let mut i = 0;
    while i < IPV4_HEADER_LEN {
        acc += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    acc
}

/// The RFC 1071 checksum of `data` (ones' complement of the ones' complement sum).
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(0, data))
}

/// Writes outer IP + UDP + GUE headers and copies `inner` after them into `out`.
/// Returns the total length written.
#[inline]
pub fn encapsulate(
    outer: &OuterRepr,
    gue: &GueRepr,
    inner: &[u8],
    out: &mut [u8],
) -> Result<usize, EncapError> {
    let gue_len = gue.buffer_len();
    if gue_len == 0 {
        return Err(WireError::HlenMismatch {
            announced: 31,
            needed: 32,
        }
        .into());
    }
    let ip_len = outer.header_len() - UDP_HEADER_LEN;
    let udp_len = UDP_HEADER_LEN + gue_len + inner.len();
    let total = ip_len + udp_len;
    if total > usize::from(u16::MAX) {
        return Err(EncapError::TooLarge { len: total });
    }
    if out.len() < total {
        return Err(EncapError::BufferTooSmall {
            needed: total,
            got: out.len(),
        });
    }
    let out = &mut out[..total];
    let (ip, rest) = out.split_at_mut(ip_len);
    let (udp, rest) = rest.split_at_mut(UDP_HEADER_LEN);
    let (gue_buf, payload) = rest.split_at_mut(gue_len);
    gue.emit(&mut GuePacket::new_unchecked(&mut *gue_buf))?;
    payload.copy_from_slice(inner);
    udp[0..2].copy_from_slice(&outer.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&outer.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0);
    match (outer.src.ip(), outer.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip[4..6].fill(0);
            ip[6..8]
                .copy_from_slice(&(if outer.dont_fragment { 0x4000u16 } else { 0 }).to_be_bytes());
            ip[8] = outer.hop_limit;
            ip[9] = IPPROTO_UDP;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let csum = internet_checksum(ip);
            ip[10..12].copy_from_slice(&csum.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = outer.hop_limit;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            let mut acc = sum_words(0, &s.octets());
            acc = sum_words(acc, &d.octets());
            acc += udp_len as u32 + u32::from(IPPROTO_UDP);
            acc = sum_words(acc, udp);
            acc = sum_words(acc, gue_buf);
            acc = sum_words(acc, payload);
            let csum = match !fold(acc) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&csum.to_be_bytes());
        }
        _ => return Err(EncapError::FamilyMismatch),
    }
    Ok(total)
}

/// Parses outer IPv4/IPv6 + UDP (destination `port`) + GUE in `profile`,
/// checking lengths and the IPv4 header checksum, and returns the inner packet.
#[inline]
pub fn decapsulate(
    packet: &[u8],
    port: u16,
    profile: WireProfile,
) -> Result<Decapsulated<'_>, EncapError> {
    let Some(&first) = packet.first() else {
        return Err(EncapError::Truncated {
            needed: IPV4_HEADER_LEN,
            got: 0,
        });
    };
    let (src_ip, dst_ip, ip_header_len, ip_end) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < IPV4_HEADER_LEN {
                return Err(EncapError::BadIpv4 {
                    what: "IHL below 5",
                });
            }
            let Some(h) = packet.get(..ihl) else {
                return Err(EncapError::Truncated {
                    needed: ihl,
                    got: packet.len(),
                });
            };
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if total < ihl {
                return Err(EncapError::BadIpv4 {
                    what: "total length below header length",
                });
            }
            if total > packet.len() {
                return Err(EncapError::Truncated {
                    needed: total,
                    got: packet.len(),
                });
            }
            if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return Err(EncapError::BadIpv4 { what: "fragmented" });
            }
            if h[9] != IPPROTO_UDP {
                return Err(EncapError::NotUdp { protocol: h[9] });
            }
            let sum = match h.first_chunk::<IPV4_HEADER_LEN>() {
                Some(fixed) if ihl == IPV4_HEADER_LEN => ipv4_header_sum(fixed),
                _ => sum_words(0, h),
            };
            if fold(sum) != 0xffff {
                return Err(EncapError::BadIpv4Checksum {
                    found: u16::from_be_bytes([h[10], h[11]]),
                });
            }
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            (IpAddr::V4(src), IpAddr::V4(dst), ihl, total)
        }
        6 => {
            let Some(h) = packet.get(..IPV6_HEADER_LEN) else {
                return Err(EncapError::Truncated {
                    needed: IPV6_HEADER_LEN,
                    got: packet.len(),
                });
            };
            if h[6] != IPPROTO_UDP {
                return Err(EncapError::NotUdp { protocol: h[6] });
            }
            let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if total > packet.len() {
                return Err(EncapError::Truncated {
                    needed: total,
                    got: packet.len(),
                });
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&h[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                IPV6_HEADER_LEN,
                total,
            )
        }
        version => return Err(EncapError::BadIpVersion { version }),
    };
    let ip_payload = &packet[ip_header_len..ip_end];
    let Some(udp) = ip_payload.get(..UDP_HEADER_LEN) else {
        return Err(EncapError::Truncated {
            needed: ip_header_len + UDP_HEADER_LEN,
            got: ip_end,
        });
    };
    let src_port = u16::from_be_bytes([udp[0], udp[1]]);
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if dst_port != port {
        return Err(EncapError::WrongPort {
            port: dst_port,
            expected: port,
        });
    }
    if udp_len != ip_payload.len() {
        return Err(EncapError::BadUdpLength {
            udp: udp_len,
            ip: ip_payload.len(),
        });
    }
    let gue_bytes = &ip_payload[UDP_HEADER_LEN..];
    let (gue, gue_len) = parse_gue(gue_bytes, profile)?;
    let header_len = ip_header_len + UDP_HEADER_LEN + gue_len;
    Ok(Decapsulated {
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        gue,
        header_len,
        payload: gue_bytes.get(gue_len..).unwrap_or(&[]),
    })
}

/// Parses the GUE header after the outer UDP header, in `profile`.
///
/// The common message — a standard data header carrying exactly the tunnel
/// id, `01 pp 80 00 tt tt tt tt` with `pp` 4 or 41 — is recognised from its
/// fixed bytes; everything else goes through [`parse_gue_general`], which
/// gives the same result for those bytes (checked by a property test).
#[inline]
fn parse_gue(gue_bytes: &[u8], profile: WireProfile) -> Result<(GueRepr, usize), EncapError> {
    if profile == WireProfile::Standard
        && let Some(&[0x01, proto @ (4 | 41), 0x80, 0x00, t0, t1, t2, t3]) =
            gue_bytes.first_chunk::<8>()
    {
        let inner = if proto == 4 {
            InnerProto::Ipv4
        } else {
            InnerProto::Ipv6
        };
        let tunnel = TunnelId(u32::from_be_bytes([t0, t1, t2, t3]));
        return Ok((GueRepr::data(tunnel, inner), 8));
    }
    parse_gue_general(gue_bytes, profile)
}

/// The general GUE parse behind [`parse_gue`]: any header in `profile`,
/// then the standard profile's rule that data messages carry exactly the
/// tunnel id.
fn parse_gue_general(
    gue_bytes: &[u8],
    profile: WireProfile,
) -> Result<(GueRepr, usize), EncapError> {
    let (gue, gue_len) = GueRepr::parse_bytes(gue_bytes, profile)?;
    if profile == WireProfile::Standard
        && is_data(&gue)
        && (gue.tunnel_id.is_none() || gue.security.is_some() || gue.private_words != 0)
    {
        let hlen = gue.hlen().unwrap_or(0);
        return Err(EncapError::UnexpectedFields {
            flags: gue.flags(),
            hlen,
        });
    }
    Ok((gue, gue_len))
}

/// The inner protocol of an IP packet, from its version nibble.
#[inline]
pub fn inner_proto(inner: &[u8]) -> Result<InnerProto, EncapError> {
    match inner.first().map(|b| b >> 4) {
        Some(4) => Ok(InnerProto::Ipv4),
        Some(6) => Ok(InnerProto::Ipv6),
        _ => Err(EncapError::InnerNotIp),
    }
}

/// A data-message GUE header for `inner`, with the tunnel id.
#[inline]
pub fn data_header(tunnel: TunnelId, inner: &[u8]) -> Result<GueRepr, EncapError> {
    Ok(GueRepr::data(tunnel, inner_proto(inner)?))
}

/// An outer UDP source port in 49152..=65535 derived from the inner flow
/// (addresses, protocol, TCP/UDP ports), so ECMP spreads flows but keeps
/// each flow on one path. Non-IP input hashes its first bytes.
#[inline]
pub fn flow_entropy_port(inner: &[u8]) -> u16 {
    // FNV-1a over the flow fields, then folded into the dynamic port range.
    #[inline]
    fn mix(mut h: u32, bytes: &[u8]) -> u32 {
        for &b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h
    }
    let mut h = 0x811c_9dc5u32;
    let (addrs, proto, l4) = match inner.first().map(|b| b >> 4) {
        Some(4) if inner.len() >= IPV4_HEADER_LEN => {
            let ihl = usize::from(inner[0] & 0x0f) * 4;
            (
                &inner[12..20],
                inner[9],
                inner.get(ihl.max(IPV4_HEADER_LEN)..),
            )
        }
        Some(6) if inner.len() >= IPV6_HEADER_LEN => {
            (&inner[8..40], inner[6], inner.get(IPV6_HEADER_LEN..))
        }
        _ => (inner.get(..inner.len().min(40)).unwrap_or(&[]), 0, None),
    };
    h = mix(h, addrs);
    h = mix(h, &[proto]);
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
        && let Some(ports) = l4.and_then(|l| l.get(..4))
    {
        h = mix(h, ports);
    }
    let h = (h ^ (h >> 16)) as u16;
    ENTROPY_PORT_MIN | (h & 0x3fff)
}

/// An [`OuterRepr`] toward `remote` on [`GUE_PORT`] with a source port from the inner flow.
#[inline]
pub fn outer_for(local: IpAddr, remote: IpAddr, inner: &[u8]) -> OuterRepr {
    OuterRepr {
        src: SocketAddr::new(local, flow_entropy_port(inner)),
        dst: SocketAddr::new(remote, GUE_PORT),
        hop_limit: 64,
        dont_fragment: true,
    }
}

/// `true` if the message is a data message (the eBPF programs decapsulate
/// these and pass control messages up).
#[inline]
pub const fn is_data(gue: &GueRepr) -> bool {
    matches!(gue.kind, MessageKind::Data(_))
}

/// Encapsulates `inner` into a new owned buffer (userspace convenience).
#[cfg(feature = "std")]
#[inline]
pub fn encapsulate_to_bytes(
    outer: &OuterRepr,
    gue: &GueRepr,
    inner: &[u8],
) -> Result<bytes::Bytes, EncapError> {
    let mut buf = bytes::BytesMut::zeroed(outer.header_len() + gue.buffer_len() + inner.len());
    let n = encapsulate(outer, gue, inner, &mut buf)?;
    buf.truncate(n);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TunnelId;

    fn inner_v4() -> [u8; 28] {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = IPPROTO_UDP;
        p[12..16].copy_from_slice(&[10, 244, 1, 5]);
        p[16..20].copy_from_slice(&[10, 244, 2, 7]);
        p[20..24].copy_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        p
    }

    #[test]
    fn v4_round_trip_and_checksum() {
        let inner = inner_v4();
        let outer = outer_for(
            "198.51.100.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
            &inner,
        );
        let gue = data_header(TunnelId(5), &inner).unwrap();
        let mut buf = [0u8; 128];
        let n = encapsulate(&outer, &gue, &inner, &mut buf).unwrap();
        assert_eq!(n, 20 + 8 + 8 + 28);
        assert_eq!(internet_checksum(&buf[..20]), 0);
        assert_eq!(&buf[26..28], &[0, 0], "UDP checksum zero over IPv4");
        let d = decapsulate(&buf[..n], GUE_PORT, WireProfile::Standard).unwrap();
        assert_eq!(
            (d.src, d.dst, d.gue, d.payload, d.header_len),
            (outer.src, outer.dst, gue, &inner[..], 36)
        );
    }

    #[test]
    fn errors() {
        let inner = inner_v4();
        let outer = outer_for(
            "198.51.100.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
            &inner,
        );
        let gue = data_header(TunnelId(5), &inner).unwrap();
        let mut buf = [0u8; 128];
        let n = encapsulate(&outer, &gue, &inner, &mut buf).unwrap();
        let p = &buf[..n];
        let d = |b: &[u8]| decapsulate(b, GUE_PORT, WireProfile::Standard).unwrap_err();
        assert_eq!(d(&[]), EncapError::Truncated { needed: 20, got: 0 });
        assert_eq!(
            d(&p[..10]),
            EncapError::Truncated {
                needed: 20,
                got: 10
            }
        );
        assert_eq!(
            d(&p[..40]),
            EncapError::Truncated {
                needed: 64,
                got: 40
            }
        );
        assert_eq!(
            decapsulate(p, 1, WireProfile::Standard),
            Err(EncapError::WrongPort {
                port: 6080,
                expected: 1
            })
        );
        let mut bad = [0u8; 64];
        bad.copy_from_slice(p);
        bad[10] ^= 1;
        assert!(matches!(d(&bad), EncapError::BadIpv4Checksum { .. }));
        bad.copy_from_slice(p);
        bad[0] = 0x44;
        assert_eq!(
            d(&bad),
            EncapError::BadIpv4 {
                what: "IHL below 5"
            }
        );
        bad[0] = 0x55;
        assert_eq!(d(&bad), EncapError::BadIpVersion { version: 5 });
        bad.copy_from_slice(p);
        bad[9] = 6;
        assert_eq!(d(&bad), EncapError::NotUdp { protocol: 6 });
        bad.copy_from_slice(p);
        bad[6] = 0x20;
        assert_eq!(d(&bad), EncapError::BadIpv4 { what: "fragmented" });
        bad.copy_from_slice(p);
        bad[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            d(&bad),
            EncapError::BadIpv4 {
                what: "total length below header length"
            }
        );
        bad.copy_from_slice(p);
        bad[25] = 9;
        assert_eq!(d(&bad), EncapError::BadUdpLength { udp: 9, ip: 44 });
        bad.copy_from_slice(p);
        bad[28] = 0x80;
        assert_eq!(
            d(&bad),
            EncapError::Wire(WireError::BadVariant { variant: 2 })
        );
        bad.copy_from_slice(p);
        bad[28..30].copy_from_slice(&[0x00, 0x04]); // Hlen 0, no tunnel id
        bad[30..32].fill(0);
        assert_eq!(d(&bad), EncapError::UnexpectedFields { flags: 0, hlen: 0 });
        let mixed = OuterRepr {
            dst: "[2001:db8::1]:6080".parse().unwrap(),
            ..outer
        };
        assert_eq!(
            encapsulate(&mixed, &gue, &inner, &mut buf),
            Err(EncapError::FamilyMismatch)
        );
        assert_eq!(
            encapsulate(&outer, &gue, &inner, &mut buf[..10]),
            Err(EncapError::BufferTooSmall {
                needed: 64,
                got: 10
            })
        );
        assert_eq!(inner_proto(&[0x10]), Err(EncapError::InnerNotIp));
        let mut huge = [0u8; 70000];
        assert_eq!(
            encapsulate(&outer, &gue, &[0x45; 65500], &mut huge),
            Err(EncapError::TooLarge { len: 65536 })
        );
    }

    #[test]
    fn entropy_port_depends_on_flow_only() {
        let a = inner_v4();
        let mut b = a;
        b[21] ^= 1;
        let mut c = a;
        c[8] = 1; // TTL: same flow
        assert_eq!(flow_entropy_port(&a), flow_entropy_port(&c));
        assert_ne!(flow_entropy_port(&a), flow_entropy_port(&b));
        assert!(flow_entropy_port(&a) >= ENTROPY_PORT_MIN);
        assert!(flow_entropy_port(&[]) >= ENTROPY_PORT_MIN);
    }

    /// GUE headers near the fast path's pattern: each of the first four
    /// bytes is either the fast-path value or arbitrary.
    fn near_data_header() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            prop_oneof![Just(0x01u8), any::<u8>()],
            prop_oneof![Just(4u8), Just(41u8), any::<u8>()],
            prop_oneof![Just(0x80u8), any::<u8>()],
            prop_oneof![Just(0x00u8), any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(a, b, c, d, rest)| {
                let mut v = vec![a, b, c, d];
                v.extend(rest);
                v
            })
    }

    proptest::proptest! {
        #[test]
        fn fast_gue_path_matches_general_parse(bytes in near_data_header()) {
            for profile in [WireProfile::Standard, WireProfile::EpicLegacy] {
                proptest::prop_assert_eq!(
                    parse_gue(&bytes, profile),
                    parse_gue_general(&bytes, profile)
                );
            }
        }
    }

    #[test]
    fn fast_gue_path_reads_the_tunnel_and_proto() {
        let v6 = [0x01, 41, 0x80, 0x00, 0, 0, 0x01, 0x02, 0x60];
        assert_eq!(
            parse_gue(&v6, WireProfile::Standard),
            Ok((GueRepr::data(TunnelId(0x102), InnerProto::Ipv6), 8))
        );
        // Too short for the tunnel id: the general parser names the problem.
        assert!(matches!(
            parse_gue(&v6[..7], WireProfile::Standard),
            Err(EncapError::Wire(_))
        ));
    }
}
