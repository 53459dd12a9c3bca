//! The reference model: what each of the four TC programs must do with one
//! frame, written from their documented contract over plain slices (no
//! helpers, no verifier constraints), with the maps as ordinary hash maps.
//!
//! The model says the verdict, the one counter the program must bump, the
//! exact bytes of every frame it passes, and the reply flows it records.
//! Where the kernel's own behaviour takes part (the device MTU of
//! `BPF_PROG_TEST_RUN`'s loopback device, `bpf_skb_adjust_room`'s minimum
//! length, `bpf_l4_csum_replace`), the model states it once, here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use epic_gue::encap::{OuterRepr, encapsulate};
use epic_gue::maps::{
    Counter, EndpointKey, FAMILY_IPV4, FAMILY_IPV6, FlowKey, HELLO_BURST_OTHER, HELLO_BURST_REMOTE,
    HELLO_INTERVAL_OTHER_NS, HELLO_INTERVAL_REMOTE_NS, HelloBudgetKey, TUNNEL_VERIFIED,
    TunnelValue, addr_from_bytes, is_tenant_mark,
};
use epic_gue::wire::{CTYPE_HELLO, CTYPE_RESPONSE, FLAG_VNID, HELLO_FLAGS, HELLO_HLEN, HELLO_LEN};
use epic_gue::{GUE_PORT, GueRepr, InnerProto, TunnelId};

const ETH: usize = 14;
const UDP: usize = 8;
const GUE: usize = 8;
const TCP_SYN: u8 = 0x02;
/// Encapsulated packets up to this size skip the MTU check.
const MTU_CHECK_ABOVE: usize = 1280;
/// `dev->hard_header_len` of the loopback device `BPF_PROG_TEST_RUN` uses.
const LOOPBACK_HARD_HEADER: usize = 14;

/// One of the four programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prog {
    GatewayEgress,
    GatewayIngress,
    ClusterEgress,
    ClusterIngress,
}

impl Prog {
    pub const ALL: [Prog; 4] = [
        Prog::GatewayEgress,
        Prog::GatewayIngress,
        Prog::ClusterEgress,
        Prog::ClusterIngress,
    ];
}

/// One side's maps, as the model holds them.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    pub tunnels: HashMap<u32, TunnelValue>,
    pub endpoints: HashMap<EndpointKey, u32>,
    pub replies: HashMap<FlowKey, u32>,
}

/// What the program must do with the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `TC_ACT_OK` with exactly `output`; `counter` bumped (or none).
    Pass {
        counter: Option<Counter>,
        output: Vec<u8>,
        /// Whether an MSS option was clamped on the way (for the guidance).
        clamped: bool,
    },
    /// `TC_ACT_SHOT`, counted under this reason.
    Drop(Counter),
    /// A well-formed hello for a known tunnel: passed unchanged
    /// (`control_passed`) if its GCRA budget allows at the program's clock,
    /// else `drop_hello_rate_limited`.
    Hello {
        key: HelloBudgetKey,
        interval_ns: u64,
        burst: u64,
    },
}

fn pass(frame: &[u8], counter: Option<Counter>) -> Expect {
    Expect::Pass {
        counter,
        output: frame.to_vec(),
        clamped: false,
    }
}

/// An IP + TCP/UDP packet's identity, as the tables key it.
#[derive(Debug, Clone, Copy)]
struct Ip {
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    sport: [u8; 2],
    dport: [u8; 2],
    /// Offset of the L4 header in the frame.
    l4: usize,
    ip_len: usize,
    tcp_flags: u8,
}

impl Ip {
    fn flow(&self) -> FlowKey {
        FlowKey {
            src_addr: self.src,
            dst_addr: self.dst,
            src_port: self.sport,
            dst_port: self.dport,
            protocol: self.protocol,
            family: self.family,
            _reserved: [0; 2],
        }
    }

    fn reply_flow(&self) -> FlowKey {
        FlowKey {
            src_addr: self.dst,
            dst_addr: self.src,
            src_port: self.dport,
            dst_port: self.sport,
            protocol: self.protocol,
            family: self.family,
            _reserved: [0; 2],
        }
    }

    fn endpoint(&self, scope: u32) -> EndpointKey {
        EndpointKey {
            scope,
            addr: self.dst,
            port: self.dport,
            protocol: self.protocol,
            family: self.family,
        }
    }
}

/// An IPv4 (no fragment offset, IHL ≥ 5) or IPv6 (no extension header)
/// packet at `off` carrying TCP (14 header bytes present) or UDP (4).
fn ip_at(f: &[u8], off: usize) -> Option<Ip> {
    let (family, ip_len, protocol, src, dst) = match f.get(off)? >> 4 {
        4 => {
            let h = f.get(off..off + 20)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return None;
            }
            (FAMILY_IPV4, ihl, h[9], &h[12..16], &h[16..20])
        }
        6 => {
            let h = f.get(off..off + 40)?;
            (FAMILY_IPV6, 40, h[6], &h[8..24], &h[24..40])
        }
        _ => return None,
    };
    let l4 = off + ip_len;
    let need = match protocol {
        6 => 14,
        17 => 4,
        _ => return None,
    };
    let h = f.get(l4..l4 + need)?;
    let mut ip = Ip {
        family,
        src: [0; 16],
        dst: [0; 16],
        protocol,
        sport: [h[0], h[1]],
        dport: [h[2], h[3]],
        l4,
        ip_len,
        tcp_flags: if protocol == 6 { h[13] } else { 0 },
    };
    ip.src[..src.len()].copy_from_slice(src);
    ip.dst[..dst.len()].copy_from_slice(dst);
    Some(ip)
}

/// The frame's packet: the ethertype must name the version nibble's family.
fn frame_ip(f: &[u8]) -> Option<Ip> {
    let ip = ip_at(f, ETH)?;
    match (u16::from_be_bytes([f[12], f[13]]), ip.family) {
        (0x0800, FAMILY_IPV4) | (0x86dd, FAMILY_IPV6) => Some(ip),
        _ => None,
    }
}

/// `csum_replace2` as the kernel computes it (32-bit one's-complement
/// arithmetic, then folded), on the big-endian values.
fn csum_replace2(sum: u16, from: u16, to: u16) -> u16 {
    let add = |a: u32, b: u32| {
        let (s, carry) = a.overflowing_add(b);
        s + u32::from(carry)
    };
    let x = add(add(!u32::from(sum), !u32::from(from)), u32::from(to));
    let x = (x & 0xffff) + (x >> 16);
    let x = (x & 0xffff) + (x >> 16);
    !(x as u16)
}

/// Clamps a SYN's first-option MSS to `max` (in place); whether it did.
fn clamp_mss(f: &mut [u8], ip: &Ip, max: usize) -> bool {
    let Some(tcp) = f.get(ip.l4..ip.l4 + 24) else {
        return false;
    };
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if tcp[13] & TCP_SYN == 0 || data_offset < 24 || tcp[20] != 2 || tcp[21] != 4 {
        return false;
    }
    let mss = u16::from_be_bytes([tcp[22], tcp[23]]);
    if usize::from(mss) <= max || max == 0 {
        return false;
    }
    let new = max as u16;
    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
    let at = ip.l4;
    f[at + 22..at + 24].copy_from_slice(&new.to_be_bytes());
    f[at + 16..at + 18].copy_from_slice(&csum_replace2(sum, mss, new).to_be_bytes());
    true
}

fn socket(family: u8, addr: [u8; 16], port: [u8; 2]) -> Option<SocketAddr> {
    let ip: IpAddr = addr_from_bytes(family, addr)?;
    Some(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Encapsulation into `tunnel` (both egress programs).
fn encap(f: &[u8], ip: &Ip, tunnel: u32, maps: &Maps, mtu: usize) -> Expect {
    let Some(t) = maps.tunnels.get(&tunnel) else {
        return Expect::Drop(Counter::DropUnknownTunnel);
    };
    if t.state != TUNNEL_VERIFIED {
        return Expect::Drop(Counter::DropTunnelPending);
    }
    let (outer_ip, ethertype) = match t.family {
        FAMILY_IPV4 => (20, 0x0800u16),
        FAMILY_IPV6 => (40, 0x86dd),
        _ => return Expect::Drop(Counter::DropUnknownTunnel),
    };
    let room = outer_ip + UDP + GUE;
    let mut frame = f.to_vec();
    let syn = ip.tcp_flags & TCP_SYN != 0;
    let mut clamped = false;
    if syn || f.len() - ETH + room > MTU_CHECK_ABOVE {
        if f.len() + room > mtu + LOOPBACK_HARD_HEADER {
            return Expect::Drop(Counter::DropTooBig);
        }
        if syn {
            clamped = clamp_mss(&mut frame, ip, mtu.saturating_sub(room + ip.ip_len + 20));
        }
    }
    let (Some(src), Some(dst)) = (
        socket(t.family, t.local_addr, t.local_port),
        socket(t.family, t.remote_addr, t.remote_port),
    ) else {
        unreachable!("the world's tunnels have valid addresses");
    };
    let outer = OuterRepr {
        src,
        dst,
        hop_limit: 64,
        dont_fragment: true,
    };
    let proto = if ip.family == FAMILY_IPV4 {
        InnerProto::Ipv4
    } else {
        InnerProto::Ipv6
    };
    let inner = &frame[ETH..];
    let mut buf = vec![0u8; inner.len() + room];
    let len = encapsulate(
        &outer,
        &GueRepr::data(TunnelId(tunnel), proto),
        inner,
        &mut buf,
    )
    .expect("the model's buffer fits");
    if t.family == FAMILY_IPV6 {
        // The programs send a zero outer UDP checksum over IPv6 (RFC 6935).
        buf[46..48].fill(0);
    }
    let mut output = f[..12].to_vec();
    output.extend_from_slice(&ethertype.to_be_bytes());
    output.extend_from_slice(&buf[..len]);
    Expect::Pass {
        counter: Some(Counter::Encapsulated),
        output,
        clamped,
    }
}

/// `epic_gw_egress` on a frame sent from a socket marked `mark`.
pub fn gateway_egress(f: &[u8], mark: u32, maps: &mut Maps, mtu: usize) -> Expect {
    let no_endpoint = || {
        if is_tenant_mark(mark) {
            Expect::Drop(Counter::DropNoEndpoint)
        } else {
            pass(f, None)
        }
    };
    let Some(ip) = frame_ip(f) else {
        return no_endpoint();
    };
    let Some(&tunnel) = maps.endpoints.get(&ip.endpoint(mark)) else {
        return no_endpoint();
    };
    let expect = encap(f, &ip, tunnel, maps, mtu);
    if matches!(expect, Expect::Pass { .. }) {
        maps.replies.insert(ip.reply_flow(), tunnel);
    }
    expect
}

/// `epic_cl_egress`.
pub fn cluster_egress(f: &[u8], maps: &Maps, mtu: usize) -> Expect {
    let Some(ip) = frame_ip(f) else {
        return pass(f, None);
    };
    match maps.replies.get(&ip.flow()) {
        Some(&tunnel) => encap(f, &ip, tunnel, maps, mtu),
        None => pass(f, None),
    }
}

/// The outer headers of a GUE packet this side looks at.
struct Outer {
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the UDP header.
    udp: usize,
}

/// The outer IPv4 (exactly 20 bytes, no fragment bits) or IPv6 header of
/// a UDP packet to the GUE port; `None`: not the programs' business.
fn outer_of(f: &[u8]) -> Option<Outer> {
    let mut o = Outer {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        udp: 0,
    };
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            let h = f.get(ETH..ETH + 20)?;
            if h[0] != 0x45 || h[9] != 17 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return None;
            }
            o.family = FAMILY_IPV4;
            o.src[..4].copy_from_slice(&h[12..16]);
            o.dst[..4].copy_from_slice(&h[16..20]);
            o.udp = ETH + 20;
        }
        0x86dd => {
            let h = f.get(ETH..ETH + 40)?;
            if h[0] >> 4 != 6 || h[6] != 17 {
                return None;
            }
            o.family = FAMILY_IPV6;
            o.src.copy_from_slice(&h[8..24]);
            o.dst.copy_from_slice(&h[24..40]);
            o.udp = ETH + 40;
        }
        _ => return None,
    }
    let udp = f.get(o.udp..o.udp + UDP)?;
    (u16::from_be_bytes([udp[2], udp[3]]) == GUE_PORT).then_some(o)
}

/// `epic_gw_ingress` (records nothing).
pub fn gateway_ingress(f: &[u8], maps: &mut Maps, mtu: usize) -> Expect {
    decap(f, true, maps, mtu)
}

/// `epic_cl_ingress` (records reply flows in `maps`).
pub fn cluster_ingress(f: &[u8], maps: &mut Maps, mtu: usize) -> Expect {
    decap(f, false, maps, mtu)
}

fn decap(f: &[u8], gateway: bool, maps: &mut Maps, mtu: usize) -> Expect {
    let Some(o) = outer_of(f) else {
        return pass(f, None);
    };
    let Some(gue) = f.get(o.udp + UDP..o.udp + UDP + GUE) else {
        return Expect::Drop(Counter::DropMalformed);
    };
    if gue[0] >> 6 != 0 {
        return Expect::Drop(Counter::DropMalformed);
    }
    if gue[0] & 0x20 != 0 {
        return if gateway {
            hello(f, &o, maps)
        } else {
            pass(f, Some(Counter::ControlPassed))
        };
    }
    let inner_family = match gue[1] {
        4 => FAMILY_IPV4,
        41 => FAMILY_IPV6,
        _ => return Expect::Drop(Counter::DropMalformed),
    };
    if gue[0] & 0x1f != 1 || u16::from_be_bytes([gue[2], gue[3]]) != FLAG_VNID {
        return Expect::Drop(Counter::DropMalformed);
    }
    let tunnel = u32::from_be_bytes([gue[4], gue[5], gue[6], gue[7]]);
    if let Err(reason) = check_tunnel(f, &o, maps.tunnels.get(&tunnel)) {
        return Expect::Drop(reason);
    }
    let room = o.udp - ETH + UDP + GUE;
    let Some(inner) = ip_at(f, ETH + room).filter(|i| i.family == inner_family) else {
        return Expect::Drop(Counter::DropInnerUnsupported);
    };
    if gateway {
        if maps.replies.get(&inner.flow()) != Some(&tunnel) {
            return Expect::Drop(Counter::DropInnerNotAllowed);
        }
    } else {
        if maps.endpoints.get(&inner.endpoint(tunnel)) != Some(&tunnel) {
            return Expect::Drop(Counter::DropInnerNotEndpoint);
        }
        maps.replies.insert(inner.reply_flow(), tunnel);
    }
    let mut frame = f.to_vec();
    let clamped = inner.tcp_flags & TCP_SYN != 0
        && clamp_mss(
            &mut frame,
            &inner,
            mtu.saturating_sub(room + inner.ip_len + 20),
        );
    // `bpf_skb_adjust_room` keeps at least the base header of the family
    // the packet has afterwards (the inner one, which parsed, so it does).
    let base = if inner_family == FAMILY_IPV4 { 20 } else { 40 };
    if f.len() - ETH - room < base {
        return Expect::Drop(Counter::DropHelperFailed);
    }
    let ethertype: u16 = if inner_family == FAMILY_IPV4 {
        0x0800
    } else {
        0x86dd
    };
    let mut output = frame[..12].to_vec();
    output.extend_from_slice(&ethertype.to_be_bytes());
    output.extend_from_slice(&frame[ETH + room..]);
    Expect::Pass {
        counter: Some(Counter::Decapsulated),
        output,
        clamped,
    }
}

/// GUE data must come in a verified tunnel from exactly its remote end, to
/// exactly its local end.
fn check_tunnel(f: &[u8], o: &Outer, t: Option<&TunnelValue>) -> Result<(), Counter> {
    let t = t.ok_or(Counter::DropUnknownTunnel)?;
    if t.state != TUNNEL_VERIFIED {
        return Err(Counter::DropTunnelPending);
    }
    let sport = [f[o.udp], f[o.udp + 1]];
    let dport = [f[o.udp + 2], f[o.udp + 3]];
    if t.family != o.family || t.remote_addr != o.src || t.remote_port != sport {
        return Err(Counter::DropWrongSource);
    }
    if t.local_addr != o.dst || t.local_port != dport {
        return Err(Counter::DropWrongDestination);
    }
    Ok(())
}

/// Whether `word` starts a standard hello or a challenge response (the two
/// control messages the gateway takes; a challenge goes the other way).
fn is_gateway_control(word: &[u8]) -> bool {
    let flags = HELLO_FLAGS.to_be_bytes();
    word.len() == 4
        && word[0] == 0x20 | HELLO_HLEN
        && (word[1] == CTYPE_HELLO || word[1] == CTYPE_RESPONSE)
        && word[2..4] == flags
}

/// Gateway ingress, a GUE control message.
fn hello(f: &[u8], o: &Outer, maps: &Maps) -> Expect {
    let udp = &f[o.udp..o.udp + UDP];
    let gue = &f[o.udp + UDP..o.udp + UDP + GUE];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len != UDP + HELLO_LEN
        || f.len() - o.udp != UDP + HELLO_LEN
        || !is_gateway_control(&gue[..4])
    {
        return Expect::Drop(Counter::DropHelloMalformed);
    }
    let tunnel_id = u32::from_be_bytes([gue[4], gue[5], gue[6], gue[7]]);
    let Some(t) = maps.tunnels.get(&tunnel_id) else {
        return Expect::Drop(Counter::DropHelloUnknownTunnel);
    };
    let from_remote = t.state == TUNNEL_VERIFIED
        && t.family == o.family
        && t.remote_addr == o.src
        && t.remote_port == [udp[0], udp[1]];
    let (interval_ns, burst) = if from_remote {
        (HELLO_INTERVAL_REMOTE_NS, HELLO_BURST_REMOTE)
    } else {
        (HELLO_INTERVAL_OTHER_NS, HELLO_BURST_OTHER)
    };
    Expect::Hello {
        key: HelloBudgetKey {
            tunnel_id,
            from_remote: u32::from(from_remote),
        },
        interval_ns,
        burst,
    }
}

/// The model for `prog` (the mark matters to the gateway egress only).
pub fn expect(prog: Prog, f: &[u8], mark: u32, gw: &mut Maps, cl: &mut Maps, mtu: usize) -> Expect {
    match prog {
        Prog::GatewayEgress => gateway_egress(f, mark, gw, mtu),
        Prog::GatewayIngress => gateway_ingress(f, gw, mtu),
        Prog::ClusterEgress => cluster_egress(f, cl, mtu),
        Prog::ClusterIngress => cluster_ingress(f, cl, mtu),
    }
}

#[cfg(test)]
mod tests {
    use super::csum_replace2;
    use epic_gue::encap::internet_checksum;

    /// The incremental update agrees with recomputing the checksum.
    #[test]
    fn csum_replace_matches_a_full_checksum() {
        let mut data = [0x12u8, 0x34, 0x05, 0xb4, 0xab, 0xcd, 0, 0];
        let sum = internet_checksum(&data);
        data[6..8].copy_from_slice(&sum.to_be_bytes());
        let new = csum_replace2(sum, 0x05b4, 0x0578);
        data[2..4].copy_from_slice(&0x0578u16.to_be_bytes());
        data[6..8].fill(0);
        assert_eq!(new, internet_checksum(&data));
    }
}
