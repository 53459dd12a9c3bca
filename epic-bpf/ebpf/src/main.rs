//! EPIC-RS eBPF programs: the GUE data path (TC classifiers).
//!
//! | program | attach point | does |
//! | --- | --- | --- |
//! | `epic_gw_egress` | gateway node, uplink, egress | endpoint lookup (`ENDPOINTS`, scope = skb mark) → tunnel (`TUNNELS`) → encapsulate toward the verified remote and record the reply flow in `REPLIES` (LRU); pending/unknown tunnel: drop and count; a tenant-marked packet with no endpoint (or not TCP/UDP): drop and count (`drop_no_endpoint`), never in clear |
//! | `epic_gw_ingress` | gateway node, uplink, ingress | GUE data from a known, verified tunnel whose outer source is the verified remote and outer destination its local end, whose inner packet is a reply recorded for that tunnel in `REPLIES` → decapsulate; other GUE data dropped and counted; control messages passed up only if they are a standard hello or challenge response of exact length for a known tunnel within its budget (`HELLO_BUDGETS`, per tunnel and source kind), else dropped and counted |
//! | `epic_cl_ingress` | cluster node, uplink, ingress | as `epic_gw_ingress`, but instead of the reply check the inner destination must be an endpoint of the tunnel (`ENDPOINTS` with the tunnel id as scope); records the reply flow in `REPLIES` (LRU) with the tunnel id |
//! | `epic_cl_egress` | cluster node, uplink, egress | a packet matching `REPLIES` → encapsulate toward the tunnel's remote |
//! | `epic_bench_roundtrip` | nowhere (benchmarks) | `epic_gw_egress` then `epic_cl_ingress` on one packet |
//! | `epic_count` | anywhere | counts packets and bytes in `COUNTERS` slot 0 and passes them: the baseline |
//!
//! Encapsulation writes outer IPv4 or IPv6 (the tunnel's family) + UDP (source
//! = the tunnel's local port, destination = its verified remote port, so the
//! packets match the NAT's mapping) + GUE data header with the tunnel id, in
//! exactly the layout of `epic_gue::encap::encapsulate` (TTL 64, DF set), except
//! that the outer UDP checksum is zero for IPv6 too (RFC 6935/6936: tunnels
//! may omit it; the receiving end is always one of these programs, which
//! decapsulate before any UDP checksum check).
//!
//! MTU (TCP: MSS clamping, no ICMP): every TCP SYN and SYN-ACK that crosses
//! the tunnel gets its MSS option (when it is the first option, as Linux and
//! most stacks send it) clamped at *both* ends — when it is encapsulated, to
//! what fits the sending uplink, and when it is decapsulated, to what fits
//! the receiving uplink (the replies leave through it) — so neither TCP end
//! ever sends a segment that does not fit once encapsulated. Anything that
//! still would not fit the device MTU (non-TCP, or a GSO packet whose
//! segments would not) is dropped as `drop_too_big`. A bottleneck between
//! the two uplinks is not discovered (no ICMP translation): set the uplinks'
//! MTU to the path MTU. Packets whose encapsulated size is at most 1280 bytes
//! (the IPv6 minimum MTU; uplinks are assumed to have at least that) skip the
//! MTU check.
//!
//! Decapsulation trusts nothing inside the tunnel: the inner packet must be
//! TCP or UDP of the family the GUE header names (else
//! `drop_inner_unsupported`: no ICMP, fragments or IPv6 extension headers
//! cross the tunnel), and at the gateway it must be the reply of a flow the
//! gateway itself sent into *this* tunnel (else `drop_inner_not_allowed`):
//! a tenant's node can only answer its own endpoints' connections, never
//! reach the gateway node, another tenant's proxy or anything else. At the
//! cluster node it must go to an endpoint of *this* tunnel (else
//! `drop_inner_not_endpoint`): a gateway node reaches only the pods the
//! tunnel serves, never the cluster node itself or other pods.
//!
//! Headers are read straight from the linear packet data after a bounds
//! check (`bpf_skb_load_bytes` only when the headers are not linear), and
//! written with one `bpf_skb_store_bytes`; there are no loops. The reply
//! table is written only when a flow is new or changed tunnel.

#![no_std]
#![no_main]

use aya_ebpf::bindings::{
    BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
    BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK, TC_ACT_SHOT,
    bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::helpers::generated::bpf_check_mtu;
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::{HashMap, LruHashMap, PerCpuArray};
use aya_ebpf::programs::TcContext;
use epic_gue::maps::{
    Counter, CounterValue, EndpointKey, EndpointValue, FAMILY_IPV4, FAMILY_IPV6, FlowKey,
    FlowValue, HELLO_BURST_OTHER, HELLO_BURST_REMOTE, HELLO_INTERVAL_OTHER_NS,
    HELLO_INTERVAL_REMOTE_NS, HelloBudget, HelloBudgetKey, TUNNEL_VERIFIED, TunnelKey, TunnelValue,
    is_tenant_mark,
};
use epic_gue::wire::{
    CTYPE_HELLO, CTYPE_RESPONSE, FLAG_VNID, GUE_PORT, HELLO_FLAGS, HELLO_HLEN, HELLO_LEN,
    PROTO_IPV4, PROTO_IPV6,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_SYN: u8 = 0x02;
const UDP_HLEN: usize = 8;
/// Encapsulated packets up to this size (without Ethernet) skip the MTU
/// check: the IPv6 minimum link MTU, which every uplink is assumed to have.
const MTU_CHECK_ABOVE: usize = 1280;
/// GUE base word + tunnel id.
const GUE_HLEN: usize = 8;
const OUTER_TTL: u8 = 64;

/// Per-CPU packet and byte counters in slot 0 for `epic_count`.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<CounterValue> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU GUE counters, indexed by `epic_gue::maps::Counter`.
#[map(name = "GUE_COUNTERS")]
static GUE_COUNTERS: PerCpuArray<CounterValue> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// (scope, pod address, port, protocol) → tunnel id. Gateway side: the
/// scope is the proxy's socket mark (the tenant). Cluster side: the scope is
/// the tunnel id, and the entry says the tunnel may deliver to that pod.
#[map(name = "ENDPOINTS")]
static ENDPOINTS: HashMap<EndpointKey, EndpointValue> = HashMap::with_max_entries(65536, 0);

/// Both sides: tunnel id → outer addresses and state.
#[map(name = "TUNNELS")]
static TUNNELS: HashMap<TunnelKey, TunnelValue> = HashMap::with_max_entries(16384, 0);

/// Reply flow (pod → proxy) → tunnel id; LRU. Cluster side: written by
/// ingress, read by egress (the tunnel the reply goes back in). Gateway
/// side: written by egress, read by ingress (the replies a tunnel may
/// carry in).
#[map(name = "REPLIES")]
static REPLIES: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(262144, 0);

/// Gateway side: the hello budgets (GCRA state) per tunnel and source
/// kind; LRU, two per tunnel.
#[map(name = "HELLO_BUDGETS")]
static HELLO_BUDGETS: LruHashMap<HelloBudgetKey, HelloBudget> =
    LruHashMap::with_max_entries(32768, 0);

/// Whether `word` is the first GUE word of a standard hello or of a
/// challenge response: version 0, C bit, `Hlen`, one of the two control
/// types, the hello flags. (A challenge goes from the gateway to the
/// cluster, never the other way.)
#[inline(always)]
fn is_gateway_control(word: &[u8]) -> bool {
    word[0] == 0x20 | HELLO_HLEN
        && (word[1] == CTYPE_HELLO || word[1] == CTYPE_RESPONSE)
        && word[2] == (HELLO_FLAGS >> 8) as u8
        && word[3] == HELLO_FLAGS as u8
}

/// Counts the packet and passes it on unchanged.
#[classifier]
pub fn epic_count(ctx: TcContext) -> i32 {
    if let Some(counter) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it is valid and aligned for a CounterValue, and only this CPU writes
        // its own copy while the program runs (programs are not preempted
        // mid-run).
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(ctx.len());
        }
    }
    TC_ACT_OK
}

/// Gateway egress: encapsulates packets to known pod endpoints.
#[classifier]
pub fn epic_gw_egress(ctx: TcContext) -> i32 {
    gw_egress(&ctx)
}

#[inline(always)]
fn gw_egress(ctx: &TcContext) -> i32 {
    // SAFETY: reading the `mark` field of the context the kernel gave us.
    let mark = unsafe { (*ctx.skb.skb).mark };
    let Some(inner) = parse_frame(ctx) else {
        return not_an_endpoint(ctx, mark);
    };
    let key = EndpointKey {
        scope: mark,
        addr: inner.dst,
        port: inner.dst_port,
        protocol: inner.protocol,
        family: inner.family,
    };
    let Some(endpoint) = ENDPOINTS.get_ptr(&key) else {
        return not_an_endpoint(ctx, mark);
    };
    // SAFETY: a successful lookup returns a valid pointer; the value is
    // copied out at once (`EndpointValue` is plain old data).
    let tunnel_id = unsafe { (*endpoint).tunnel_id };
    let verdict = encap_verdict(ctx, &inner, tunnel_id);
    if verdict == TC_ACT_OK {
        // The tunnel may carry this flow's replies back in.
        record_reply_flow(&inner, tunnel_id);
    }
    verdict
}

/// Gateway egress, a packet that is no endpoint's: a tenant's (its mark)
/// is dropped and counted, never sent in clear; anything else passes.
#[inline(always)]
fn not_an_endpoint(ctx: &TcContext, mark: u32) -> i32 {
    if is_tenant_mark(mark) {
        count(Counter::DropNoEndpoint, ctx.len());
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

/// Cluster egress: encapsulates replies of recorded flows.
#[classifier]
pub fn epic_cl_egress(ctx: TcContext) -> i32 {
    let Some(inner) = parse_frame(&ctx) else {
        return TC_ACT_OK;
    };
    let key = FlowKey {
        src_addr: inner.src,
        dst_addr: inner.dst,
        src_port: inner.src_port,
        dst_port: inner.dst_port,
        protocol: inner.protocol,
        family: inner.family,
        _reserved: [0; 2],
    };
    let Some(flow) = REPLIES.get_ptr(&key) else {
        return TC_ACT_OK;
    };
    // SAFETY: a successful lookup returns a valid pointer; copied at once.
    let tunnel_id = unsafe { (*flow).tunnel_id };
    encap_verdict(&ctx, &inner, tunnel_id)
}

/// Benchmark only: gateway egress then cluster ingress on the same packet
/// (use a tunnel whose remote is its own local end), so the packet leaves as
/// it came and `BPF_PROG_TEST_RUN` can repeat it.
#[classifier]
pub fn epic_bench_roundtrip(ctx: TcContext) -> i32 {
    let verdict = gw_egress(&ctx);
    if verdict != TC_ACT_OK {
        return verdict;
    }
    decap_verdict(&ctx, Side::Cluster)
}

/// Gateway ingress: decapsulates replies to the gateway's own flows from
/// verified remotes.
#[classifier]
pub fn epic_gw_ingress(ctx: TcContext) -> i32 {
    decap_verdict(&ctx, Side::Gateway)
}

/// Cluster ingress: decapsulates GUE data and records the reply flow.
#[classifier]
pub fn epic_cl_ingress(ctx: TcContext) -> i32 {
    decap_verdict(&ctx, Side::Cluster)
}

/// Which end of the tunnel decapsulates: what it checks and records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Accepts only replies to flows it recorded on egress.
    Gateway,
    /// Records the reply flow of every packet it decapsulates.
    Cluster,
}

#[inline(always)]
fn count(counter: Counter, bytes: u32) {
    if let Some(slot) = GUE_COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: valid pointer from a per-CPU array lookup; only this CPU
        // writes its copy while the program runs.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(bytes);
        }
    }
}

/// Reads `N` bytes at `off`: straight from the linear packet data when it
/// holds them (the common case), else with `bpf_skb_load_bytes`.
///
/// `off` must be a compile-time constant after inlining: the verifier only
/// accepts the bounds check on a packet pointer with a constant offset
/// (variable offsets, e.g. IPv4 options, use `ctx.load` instead).
#[inline(always)]
fn read<const N: usize>(ctx: &TcContext, off: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + N <= end {
        // SAFETY: `[start + off, start + off + N)` lies inside the linear
        // packet data (checked just above, as the verifier requires), which
        // stays valid until a helper changes the packet; the bytes are
        // copied out at once and have no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
    } else {
        ctx.load(off).ok()
    }
}

/// The device MTU as `bpf_check_mtu` sees it (`mtu`), and whether the packet
/// grown by `grow` bytes fits it (GSO packets always "fit" here: their
/// segments are checked by the caller).
#[inline(always)]
fn check_mtu(ctx: &TcContext, grow: usize) -> (u32, bool) {
    let mut mtu: u32 = 0;
    // SAFETY: the context pointer is the program's own skb; `mtu` is a valid
    // stack slot the helper writes the MTU into.
    let verdict = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), 0, &mut mtu, grow as i32, 0) };
    (mtu, verdict == 0)
}

/// An IP packet's identity, as the tables key it.
struct Ip {
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    src_port: [u8; 2],
    dst_port: [u8; 2],
    /// Offset of the L4 header.
    l4: usize,
    /// IP header length.
    ip_len: usize,
    /// L4 header length (TCP data offset, or 8 for UDP).
    l4_len: usize,
    /// TCP flags (0 for UDP).
    tcp_flags: u8,
}

/// Parses the frame's IPv4/IPv6 + TCP/UDP packet: as [`parse_ip`], and the
/// ethertype must name the family of the version nibble (`None` for ARP and
/// every other frame, whatever its first payload byte).
#[inline(always)]
fn parse_frame(ctx: &TcContext) -> Option<Ip> {
    let ethertype = u16::from_be_bytes(read::<2>(ctx, 12)?);
    let ip = parse_ip(ctx, ETH_HLEN)?;
    match (ethertype, ip.family) {
        (ETH_P_IP, FAMILY_IPV4) | (ETH_P_IPV6, FAMILY_IPV6) => Some(ip),
        _ => None,
    }
}

/// Parses an IPv4/IPv6 + TCP/UDP packet at `off` by its version nibble.
/// `None` for anything else (other protocols, IPv6 extension headers,
/// non-first fragments, a TCP header shorter than its flags).
#[inline(always)]
fn parse_ip(ctx: &TcContext, off: usize) -> Option<Ip> {
    let [first] = read::<1>(ctx, off)?;
    let mut ip = Ip {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        protocol: 0,
        src_port: [0; 2],
        dst_port: [0; 2],
        l4: 0,
        ip_len: 0,
        l4_len: UDP_HLEN,
        tcp_flags: 0,
    };
    match first >> 4 {
        4 => {
            let h = read::<20>(ctx, off)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if ihl < 20 || (u16::from_be_bytes([h[6], h[7]]) & 0x1fff) != 0 {
                return None;
            }
            ip.family = FAMILY_IPV4;
            ip.protocol = h[9];
            ip.src[..4].copy_from_slice(&h[12..16]);
            ip.dst[..4].copy_from_slice(&h[16..20]);
            ip.ip_len = ihl;
        }
        6 => {
            let h = read::<40>(ctx, off)?;
            ip.family = FAMILY_IPV6;
            ip.protocol = h[6];
            ip.src.copy_from_slice(&h[8..24]);
            ip.dst.copy_from_slice(&h[24..40]);
            ip.ip_len = 40;
        }
        _ => return None,
    }
    if ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP {
        return None;
    }
    // Ports and TCP flags: bytes 0..14 of the L4 header (a UDP header has 8,
    // so read 4 there).
    let mut l4 = [0u8; 14];
    // Only a header of exactly its family's base length has a constant L4
    // offset (an IPv4 header with 20 bytes of options is 40 bytes long too:
    // its ports are after the options, never in them).
    let base = if ip.family == FAMILY_IPV4 { 20 } else { 40 };
    if ip.ip_len == base {
        // A constant offset in each inlined copy.
        ip.l4 = off + base;
        if ip.protocol == IPPROTO_TCP {
            l4 = read::<14>(ctx, ip.l4)?;
        } else {
            l4[..4].copy_from_slice(&read::<4>(ctx, ip.l4)?);
        }
    } else {
        // IPv4 options: a variable offset, the helper reads it.
        ip.l4 = off + ip.ip_len;
        if ip.protocol == IPPROTO_TCP {
            l4 = ctx.load(ip.l4).ok()?;
        } else {
            l4[..4].copy_from_slice(&ctx.load::<[u8; 4]>(ip.l4).ok()?);
        }
    }
    ip.src_port = [l4[0], l4[1]];
    ip.dst_port = [l4[2], l4[3]];
    if ip.protocol == IPPROTO_TCP {
        ip.l4_len = usize::from(l4[12] >> 4) * 4;
        ip.tcp_flags = l4[13];
    }
    Some(ip)
}

/// Encapsulates into `tunnel_id` or drops with the reason.
#[inline(always)]
fn encap_verdict(ctx: &TcContext, inner: &Ip, tunnel_id: u32) -> i32 {
    let len = ctx.len();
    match encapsulate(ctx, inner, tunnel_id) {
        Ok(()) => {
            count(Counter::Encapsulated, len);
            TC_ACT_OK
        }
        Err(reason) => {
            count(reason, len);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn encapsulate(ctx: &TcContext, inner: &Ip, tunnel_id: u32) -> Result<(), Counter> {
    let key = TunnelKey { tunnel_id };
    let tunnel = TUNNELS.get_ptr(&key).ok_or(Counter::DropUnknownTunnel)?;
    // SAFETY: valid pointer from a successful lookup; the value is copied out
    // at once (plain old data), so a concurrent update cannot tear our view.
    let t: TunnelValue = unsafe { core::ptr::read_unaligned(tunnel) };
    if t.state != TUNNEL_VERIFIED {
        return Err(Counter::DropTunnelPending);
    }
    let outer_ip_len: usize = match t.family {
        FAMILY_IPV4 => 20,
        FAMILY_IPV6 => 40,
        _ => return Err(Counter::DropUnknownTunnel),
    };
    let room = outer_ip_len + UDP_HLEN + GUE_HLEN;

    // MTU: the encapsulated packet must fit the device; SYNs learn what fits.
    let syn = inner.tcp_flags & TCP_SYN != 0;
    // SAFETY: reading the `gso_size` field of the context the kernel gave us.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size } as usize;
    let grown = ctx.len() as usize - ETH_HLEN + room;
    if syn || gso_size != 0 || grown > MTU_CHECK_ABOVE {
        let (mtu, fits) = check_mtu(ctx, room);
        let mtu = mtu as usize;
        let fits = if gso_size != 0 {
            gso_size + inner.ip_len + inner.l4_len + room <= mtu
        } else {
            fits
        };
        if !fits {
            return Err(Counter::DropTooBig);
        }
        if syn {
            clamp_mss(ctx, inner, mtu.saturating_sub(room + inner.ip_len + 20));
        }
    }

    let flags = u64::from(BPF_F_ADJ_ROOM_ENCAP_L4_UDP)
        | u64::from(if t.family == FAMILY_IPV4 {
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
        } else {
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV6
        });
    ctx.adjust_room(room as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| Counter::DropHelperFailed)?;

    let total = ctx.len() as usize - ETH_HLEN;
    let inner_proto = if inner.family == FAMILY_IPV4 {
        PROTO_IPV4
    } else {
        PROTO_IPV6
    };
    let flag_bytes = FLAG_VNID.to_be_bytes();
    let id = tunnel_id.to_be_bytes();
    let gue = [
        0x01,
        inner_proto,
        flag_bytes[0],
        flag_bytes[1],
        id[0],
        id[1],
        id[2],
        id[3],
    ];
    // One store from the ethertype on: it changes when the families differ.
    if t.family == FAMILY_IPV4 {
        let udp_len = (total - 20) as u16;
        let mut h = [0u8; 2 + 36];
        h[..2].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let ip = &mut h[2..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = OUTER_TTL;
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&t.local_addr[..4]);
        ip[16..20].copy_from_slice(&t.remote_addr[..4]);
        let csum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        ip[20..22].copy_from_slice(&t.local_port);
        ip[22..24].copy_from_slice(&t.remote_port);
        ip[24..26].copy_from_slice(&udp_len.to_be_bytes());
        ip[28..36].copy_from_slice(&gue);
        ctx.store(12, &h, 0)
            .map_err(|_| Counter::DropHelperFailed)?;
    } else {
        let udp_len = (total - 40) as u16;
        let mut h = [0u8; 2 + 56];
        h[..2].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let ip = &mut h[2..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
        ip[6] = IPPROTO_UDP;
        ip[7] = OUTER_TTL;
        ip[8..24].copy_from_slice(&t.local_addr);
        ip[24..40].copy_from_slice(&t.remote_addr);
        ip[40..42].copy_from_slice(&t.local_port);
        ip[42..44].copy_from_slice(&t.remote_port);
        ip[44..46].copy_from_slice(&udp_len.to_be_bytes());
        ip[48..56].copy_from_slice(&gue);
        ctx.store(12, &h, 0)
            .map_err(|_| Counter::DropHelperFailed)?;
    }
    Ok(())
}

/// Clamps the MSS option of a SYN (when it is the first option) to `max`.
#[inline(always)]
fn clamp_mss(ctx: &TcContext, inner: &Ip, max: usize) {
    // SYNs only: the helper is fine here (and takes the variable offset).
    let Ok(tcp) = ctx.load::<[u8; 24]>(inner.l4) else {
        return;
    };
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let syn = tcp[13] & 0x02 != 0;
    if !syn || data_offset < 24 || tcp[20] != 2 || tcp[21] != 4 {
        return;
    }
    let mss = u16::from_be_bytes([tcp[22], tcp[23]]);
    if usize::from(mss) <= max || max == 0 {
        return;
    }
    let new = max as u16;
    if ctx.store(inner.l4 + 22, &new.to_be_bytes(), 0).is_ok() {
        let _ = ctx.l4_csum_replace(
            inner.l4 + 16,
            u64::from(mss.to_be()),
            u64::from(new.to_be()),
            2,
        );
    }
}

#[inline(always)]
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Decapsulates GUE data or drops it with the reason; passes the rest.
#[inline(always)]
fn decap_verdict(ctx: &TcContext, side: Side) -> i32 {
    let len = ctx.len();
    match decapsulate(ctx, side) {
        Ok(Some(counter)) => {
            count(counter, len);
            TC_ACT_OK
        }
        Ok(None) => TC_ACT_OK,
        Err(reason) => {
            count(reason, len);
            TC_ACT_SHOT
        }
    }
}

/// `Ok(None)`: not GUE, passed; `Ok(Some(counter))`: passed/decapsulated.
#[inline(always)]
fn decapsulate(ctx: &TcContext, side: Side) -> Result<Option<Counter>, Counter> {
    let Some(ethertype) = read::<2>(ctx, 12) else {
        return Ok(None);
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    match u16::from_be_bytes(ethertype) {
        ETH_P_IP => {
            let Some(h) = read::<20>(ctx, ETH_HLEN) else {
                return Ok(None);
            };
            // Outer headers with IPv4 options are not ours (the programs
            // never send them): passed up, where no data socket waits.
            if h[0] != 0x45
                || h[9] != IPPROTO_UDP
                || (u16::from_be_bytes([h[6], h[7]]) & 0x3fff) != 0
            {
                return Ok(None);
            }
            src[..4].copy_from_slice(&h[12..16]);
            dst[..4].copy_from_slice(&h[16..20]);
            decapsulate_udp::<20>(ctx, FAMILY_IPV4, (&src, &dst), side)
        }
        ETH_P_IPV6 => {
            let Some(h) = read::<40>(ctx, ETH_HLEN) else {
                return Ok(None);
            };
            if h[0] >> 4 != 6 || h[6] != IPPROTO_UDP {
                return Ok(None);
            }
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            decapsulate_udp::<40>(ctx, FAMILY_IPV6, (&src, &dst), side)
        }
        _ => Ok(None),
    }
}

/// The rest of [`decapsulate`] after an outer IP header of `IP_LEN` bytes
/// (a constant, so every header offset below is one).
#[inline(always)]
fn decapsulate_udp<const IP_LEN: usize>(
    ctx: &TcContext,
    outer_family: u8,
    (src, dst): (&[u8; 16], &[u8; 16]),
    side: Side,
) -> Result<Option<Counter>, Counter> {
    let udp_off = ETH_HLEN + IP_LEN;
    let Some(udp) = read::<8>(ctx, udp_off) else {
        return Ok(None);
    };
    if u16::from_be_bytes([udp[2], udp[3]]) != GUE_PORT {
        return Ok(None);
    }
    let gue = read::<8>(ctx, udp_off + UDP_HLEN).ok_or(Counter::DropMalformed)?;
    if gue[0] >> 6 != 0 {
        return Err(Counter::DropMalformed);
    }
    if gue[0] & 0x20 != 0 {
        return match side {
            Side::Gateway => {
                admit_hello(ctx.len() as usize - udp_off, outer_family, src, &udp, &gue)
            }
            Side::Cluster => Ok(Some(Counter::ControlPassed)),
        };
    }
    let inner_family = match gue[1] {
        PROTO_IPV4 => FAMILY_IPV4,
        PROTO_IPV6 => FAMILY_IPV6,
        _ => return Err(Counter::DropMalformed),
    };
    if gue[0] & 0x1f != 1 || u16::from_be_bytes([gue[2], gue[3]]) != FLAG_VNID {
        return Err(Counter::DropMalformed);
    }
    let tunnel_id = u32::from_be_bytes([gue[4], gue[5], gue[6], gue[7]]);
    let tunnel = TUNNELS
        .get_ptr(&TunnelKey { tunnel_id })
        .ok_or(Counter::DropUnknownTunnel)?;
    // SAFETY: valid pointer from a successful lookup; copied out at once.
    let t: TunnelValue = unsafe { core::ptr::read_unaligned(tunnel) };
    if t.state != TUNNEL_VERIFIED {
        return Err(Counter::DropTunnelPending);
    }
    if t.family != outer_family || t.remote_addr != *src || t.remote_port != [udp[0], udp[1]] {
        return Err(Counter::DropWrongSource);
    }
    if t.local_addr != *dst || t.local_port != [udp[2], udp[3]] {
        return Err(Counter::DropWrongDestination);
    }
    let room = IP_LEN + UDP_HLEN + GUE_HLEN;
    let inner = parse_ip(ctx, ETH_HLEN + room).ok_or(Counter::DropInnerUnsupported)?;
    if inner.family != inner_family {
        return Err(Counter::DropInnerUnsupported);
    }
    match side {
        Side::Gateway if !is_reply_of(&inner, tunnel_id) => {
            return Err(Counter::DropInnerNotAllowed);
        }
        Side::Gateway => {}
        Side::Cluster if !is_endpoint_of(&inner, tunnel_id) => {
            return Err(Counter::DropInnerNotEndpoint);
        }
        Side::Cluster => record_reply_flow(&inner, tunnel_id),
    }
    if inner.tcp_flags & TCP_SYN != 0 {
        // Replies leave through this device, encapsulated the same way.
        let (mtu, _) = check_mtu(ctx, 0);
        clamp_mss(
            ctx,
            &inner,
            (mtu as usize).saturating_sub(room + inner.ip_len + 20),
        );
    }
    let flags = match (outer_family, inner_family) {
        (FAMILY_IPV4, FAMILY_IPV6) => u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV6),
        (FAMILY_IPV6, FAMILY_IPV4) => u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
        _ => 0,
    };
    ctx.adjust_room(-(room as i32), BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| Counter::DropHelperFailed)?;
    if outer_family != inner_family {
        let inner_type = if inner_family == FAMILY_IPV4 {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        ctx.store(12, &inner_type.to_be_bytes(), 0)
            .map_err(|_| Counter::DropHelperFailed)?;
    }
    Ok(Some(Counter::Decapsulated))
}

/// Gateway side: passes a GUE control message up only if it is a standard
/// hello or challenge response of exactly `HELLO_LEN` bytes (by the UDP length and by the packet:
/// `udp_bytes` from the UDP header to the end) for a known tunnel, within that
/// tunnel's budget for its kind of source (the verified remote, or any
/// other); the verifier in userspace checks its MAC.
#[inline(always)]
fn admit_hello(
    udp_bytes: usize,
    outer_family: u8,
    src: &[u8; 16],
    udp: &[u8; 8],
    gue: &[u8; 8],
) -> Result<Option<Counter>, Counter> {
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len != UDP_HLEN + HELLO_LEN
        || udp_bytes != UDP_HLEN + HELLO_LEN
        || !is_gateway_control(&gue[..4])
    {
        return Err(Counter::DropHelloMalformed);
    }
    let tunnel_id = u32::from_be_bytes([gue[4], gue[5], gue[6], gue[7]]);
    let tunnel = TUNNELS
        .get_ptr(&TunnelKey { tunnel_id })
        .ok_or(Counter::DropHelloUnknownTunnel)?;
    // SAFETY: valid pointer from a successful lookup; copied out at once.
    let t: TunnelValue = unsafe { core::ptr::read_unaligned(tunnel) };
    let from_remote = t.state == TUNNEL_VERIFIED
        && t.family == outer_family
        && t.remote_addr == *src
        && t.remote_port == [udp[0], udp[1]];
    let (interval, burst) = if from_remote {
        (HELLO_INTERVAL_REMOTE_NS, HELLO_BURST_REMOTE)
    } else {
        (HELLO_INTERVAL_OTHER_NS, HELLO_BURST_OTHER)
    };
    let key = HelloBudgetKey {
        tunnel_id,
        from_remote: u32::from(from_remote),
    };
    // SAFETY: reads the kernel's monotonic clock; no memory is touched.
    let now = unsafe { bpf_ktime_get_ns() };
    let tat = match HELLO_BUDGETS.get_ptr(&key) {
        // SAFETY: valid pointer from a successful lookup; one u64 read.
        Some(budget) => unsafe { (*budget).tat_ns },
        None => 0,
    };
    if tat > now + (burst - 1) * interval {
        return Err(Counter::DropHelloRateLimited);
    }
    let next = HelloBudget {
        tat_ns: if tat > now { tat } else { now } + interval,
    };
    // A full LRU evicts the oldest budget: that tunnel starts afresh.
    let _ = HELLO_BUDGETS.insert(&key, &next, 0);
    Ok(Some(Counter::ControlPassed))
}

/// Whether `packet` is a reply flow recorded for `tunnel_id` (gateway side:
/// by the egress program, when the proxy's request went into the tunnel).
#[inline(always)]
fn is_reply_of(packet: &Ip, tunnel_id: u32) -> bool {
    let key = FlowKey {
        src_addr: packet.src,
        dst_addr: packet.dst,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        protocol: packet.protocol,
        family: packet.family,
        _reserved: [0; 2],
    };
    // SAFETY: a successful lookup returns a valid pointer; one u32 read.
    REPLIES
        .get_ptr(&key)
        .is_some_and(|flow| unsafe { (*flow).tunnel_id } == tunnel_id)
}

/// Whether `packet`'s destination is an endpoint `tunnel_id` may deliver
/// to (cluster side: the endpoint table keyed with the tunnel id as scope).
#[inline(always)]
fn is_endpoint_of(packet: &Ip, tunnel_id: u32) -> bool {
    let key = EndpointKey {
        scope: tunnel_id,
        addr: packet.dst,
        port: packet.dst_port,
        protocol: packet.protocol,
        family: packet.family,
    };
    // SAFETY: a successful lookup returns a valid pointer; one u32 read.
    ENDPOINTS
        .get_ptr(&key)
        .is_some_and(|endpoint| unsafe { (*endpoint).tunnel_id } == tunnel_id)
}

/// Records the reply flow of `request` (proxy → pod) with its tunnel,
/// unless it is already there with that tunnel (no LRU update per packet).
#[inline(always)]
fn record_reply_flow(request: &Ip, tunnel_id: u32) {
    let key = FlowKey {
        src_addr: request.dst,
        dst_addr: request.src,
        src_port: request.dst_port,
        dst_port: request.src_port,
        protocol: request.protocol,
        family: request.family,
        _reserved: [0; 2],
    };
    if let Some(known) = REPLIES.get_ptr(&key) {
        // SAFETY: valid pointer from a successful lookup; one u32 read.
        if unsafe { (*known).tunnel_id } == tunnel_id {
            return;
        }
    }
    let value = FlowValue {
        tunnel_id,
        _reserved: 0,
    };
    // A full LRU evicts the oldest flow; a failure only loses the reply
    // path of this flow, the request is still delivered.
    let _ = REPLIES.insert(&key, &value, 0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path; this only satisfies the
    // no_std requirement for a handler.
    loop {}
}
