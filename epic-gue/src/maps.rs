//! Key and value types of the eBPF maps, shared by the programs and their
//! userspace loader (`epic-bpf`).
//!
//! Every type is `#[repr(C)]`, `Copy`, built only from integers and byte
//! arrays (valid for any bit pattern) and has no implicit padding: explicit
//! `_reserved` fields exist where alignment would add some, and constructors
//! zero them. Const assertions below pin each size. Addresses are 16-byte
//! arrays with a family tag: an IPv4 address sits in the first 4 bytes, the
//! other 12 are zero. Ports are stored in network byte order (`[u8; 2]`, as on
//! the wire) so the programs copy them without swapping.
//!
//! | map | kind | key | value |
//! | --- | --- | --- | --- |
//! | endpoints (gateway egress, cluster ingress) | hash | [`EndpointKey`] | [`EndpointValue`] |
//! | tunnels (both sides) | hash | [`TunnelKey`] | [`TunnelValue`] |
//! | replies (both sides) | LRU hash | [`FlowKey`] | [`FlowValue`] |
//! | hello budgets (gateway ingress) | LRU hash | [`HelloBudgetKey`] | [`HelloBudget`] |
//! | counters | per-CPU array | `u32` ([`Counter`] index) | [`CounterValue`] |

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{TenantId, TunnelId};

/// Family tag of an IPv4 address in a map type.
pub const FAMILY_IPV4: u8 = 4;
/// Family tag of an IPv6 address in a map type.
pub const FAMILY_IPV6: u8 = 6;

/// The tag in the upper 16 bits of a tenant's socket mark ([`tenant_mark`]).
pub const TENANT_MARK_TAG: u32 = 0x4550_0000;
/// The bits of a socket mark that hold [`TENANT_MARK_TAG`].
pub const TENANT_MARK_MASK: u32 = 0xffff_0000;
/// The largest tenant id a socket mark can carry (the lower 16 bits).
pub const MAX_TENANT_ID: u32 = 0xffff;

/// The socket mark of tenant `tenant_id`'s proxies (their upstream
/// sockets): [`TENANT_MARK_TAG`] with the id in the lower 16 bits. The
/// gateway egress program keys endpoints by it, and drops a packet so
/// marked that has no endpoint, rather than send it in clear.
///
/// ```
/// use epic_gue::maps::{is_tenant_mark, tenant_mark};
/// assert_eq!(tenant_mark(7), 0x4550_0007);
/// assert!(is_tenant_mark(tenant_mark(7)));
/// assert!(!is_tenant_mark(0) && !is_tenant_mark(0x4000));
/// ```
pub const fn tenant_mark(tenant_id: u32) -> u32 {
    TENANT_MARK_TAG | (tenant_id & MAX_TENANT_ID)
}

/// Whether `mark` is a tenant's socket mark ([`tenant_mark`]).
pub const fn is_tenant_mark(mark: u32) -> bool {
    mark & TENANT_MARK_MASK == TENANT_MARK_TAG
}

/// Stores an address as `(family, 16 bytes)`.
pub const fn addr_to_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            (
                FAMILY_IPV4,
                [o[0], o[1], o[2], o[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            )
        }
        IpAddr::V6(a) => (FAMILY_IPV6, a.octets()),
    }
}

/// Reads an address stored as `(family, 16 bytes)`; `None` for an unknown family.
pub const fn addr_from_bytes(family: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from_octets(bytes))),
        _ => None,
    }
}

/// Endpoint table key: which tunnel reaches a pod.
///
/// Gateway side (egress): `scope` keeps tenants apart when pod CIDRs
/// overlap: it is the proxy's socket mark, the tenant's data-path scope.
/// Cluster side (ingress): `scope` is the id of a tunnel that may deliver
/// to the pod (the value names the same tunnel), so one pod can be the
/// endpoint of several tunnels.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    /// Proxy interface index or mark (tenant/proxy scope).
    pub scope: u32,
    /// Pod address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Pod port, network byte order.
    pub port: [u8; 2],
    /// IP protocol (6 = TCP, 17 = UDP).
    pub protocol: u8,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
}

impl EndpointKey {
    /// Key for a pod endpoint seen from the proxy identified by `scope`.
    pub const fn new(scope: u32, addr: IpAddr, port: u16, protocol: u8) -> Self {
        let (family, addr) = addr_to_bytes(addr);
        EndpointKey {
            scope,
            addr,
            port: port.to_be_bytes(),
            protocol,
            family,
        }
    }
}

/// Endpoint table value: the tunnel that reaches the pod.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointValue {
    /// Tunnel id (host byte order).
    pub tunnel_id: u32,
    /// Zero.
    pub _reserved: u32,
}

impl EndpointValue {
    /// Value pointing at `tunnel`.
    pub const fn new(tunnel: TunnelId) -> Self {
        EndpointValue {
            tunnel_id: tunnel.0,
            _reserved: 0,
        }
    }
}

/// Tunnel table key: the tunnel id (host byte order). Tunnel ids are unique
/// across tenants (the gateway controller allocates them).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TunnelKey {
    /// Tunnel id (host byte order).
    pub tunnel_id: u32,
}

impl TunnelKey {
    /// Key of `tunnel`.
    pub const fn new(tunnel: TunnelId) -> Self {
        TunnelKey {
            tunnel_id: tunnel.0,
        }
    }
}

/// [`TunnelValue::state`]: no verified remote yet; packets are dropped.
pub const TUNNEL_PENDING: u8 = 0;
/// [`TunnelValue::state`]: the remote end was verified by a hello.
pub const TUNNEL_VERIFIED: u8 = 1;

/// Tunnel table value: the outer addresses to encapsulate with and accept from.
///
/// Local and remote share one family (outer IPv4 or IPv6). Userspace writes
/// `remote_*` only after a hello verified (`state` = [`TUNNEL_VERIFIED`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TunnelValue {
    /// Local outer address.
    pub local_addr: [u8; 16],
    /// Verified remote outer address (the NAT mapping), zero while pending.
    pub remote_addr: [u8; 16],
    /// Local UDP port, network byte order.
    pub local_port: [u8; 2],
    /// Verified remote UDP port, network byte order.
    pub remote_port: [u8; 2],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`] of both addresses.
    pub family: u8,
    /// [`TUNNEL_PENDING`] or [`TUNNEL_VERIFIED`].
    pub state: u8,
    /// Zero.
    pub _reserved: [u8; 2],
    /// Owning tenant (for accounting and checks).
    pub tenant: u32,
}

impl TunnelValue {
    /// A tunnel waiting for its first verified hello.
    pub const fn pending(tenant: TenantId, local: IpAddr, local_port: u16) -> Self {
        let (family, local_addr) = addr_to_bytes(local);
        TunnelValue {
            local_addr,
            remote_addr: [0; 16],
            local_port: local_port.to_be_bytes(),
            remote_port: [0; 2],
            family,
            state: TUNNEL_PENDING,
            _reserved: [0; 2],
            tenant: tenant.0,
        }
    }

    /// This tunnel with a verified remote end; `None` if its family differs.
    pub const fn verified(self, remote: IpAddr, remote_port: u16) -> Option<Self> {
        let (family, remote_addr) = addr_to_bytes(remote);
        if family != self.family {
            return None;
        }
        Some(TunnelValue {
            remote_addr,
            remote_port: remote_port.to_be_bytes(),
            state: TUNNEL_VERIFIED,
            ..self
        })
    }
}

/// Reply table key (cluster side, LRU): an inner flow in the reply direction
/// (source = pod, destination = proxy), recorded when the request is decapsulated.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address (the pod).
    pub src_addr: [u8; 16],
    /// Destination address (the proxy).
    pub dst_addr: [u8; 16],
    /// Source port, network byte order.
    pub src_port: [u8; 2],
    /// Destination port, network byte order.
    pub dst_port: [u8; 2],
    /// IP protocol (6 = TCP, 17 = UDP).
    pub protocol: u8,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`] of both addresses.
    pub family: u8,
    /// Zero.
    pub _reserved: [u8; 2],
}

impl FlowKey {
    /// Key of a reply flow; `None` if the two addresses' families differ.
    pub const fn new(
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
        protocol: u8,
    ) -> Option<Self> {
        let (family, src_addr) = addr_to_bytes(src);
        let (dst_family, dst_addr) = addr_to_bytes(dst);
        if family != dst_family {
            return None;
        }
        Some(FlowKey {
            src_addr,
            dst_addr,
            src_port: src_port.to_be_bytes(),
            dst_port: dst_port.to_be_bytes(),
            protocol,
            family,
            _reserved: [0; 2],
        })
    }
}

/// Reply table value: the tunnel the request came in on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowValue {
    /// Tunnel id (host byte order).
    pub tunnel_id: u32,
    /// Zero.
    pub _reserved: u32,
}

impl FlowValue {
    /// Value pointing at `tunnel`.
    pub const fn new(tunnel: TunnelId) -> Self {
        FlowValue {
            tunnel_id: tunnel.0,
            _reserved: 0,
        }
    }
}

/// One per-CPU counter slot: packets and bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CounterValue {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole packet as seen by the program).
    pub bytes: u64,
}

/// Index into the per-CPU counter array: what was counted (one reason per drop).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Packets encapsulated.
    Encapsulated = 0,
    /// Packets decapsulated.
    Decapsulated = 1,
    /// Control messages passed up to the host stack.
    ControlPassed = 2,
    /// Dropped (gateway egress): a packet of a tenant's proxy (its socket
    /// carries a [`tenant_mark`]) to no endpoint of that tenant, or that is
    /// not TCP or UDP (ICMP, fragments, IPv6 extension headers): a tenant's
    /// traffic never leaves the uplink unencapsulated.
    DropNoEndpoint = 3,
    /// Dropped: the tunnel is unknown.
    DropUnknownTunnel = 4,
    /// Dropped: the tunnel has no verified remote yet (or it expired).
    DropTunnelPending = 5,
    /// Dropped: GUE data from a source other than the verified remote.
    DropWrongSource = 6,
    /// Dropped: the GUE header did not parse.
    DropMalformed = 7,
    /// Dropped: the packet would exceed the path MTU (ICMP sent instead).
    DropTooBig = 8,
    /// Dropped: a kernel helper failed (adjust room, store bytes, redirect).
    DropHelperFailed = 9,
    /// Dropped: GUE data of a known tunnel sent to an address or port that
    /// is not the tunnel's local end.
    DropWrongDestination = 10,
    /// Dropped: the decapsulated packet is not one the tunnel carries (not
    /// TCP or UDP, a non-first fragment, IPv6 extension headers, or an
    /// inner family other than the GUE header says).
    DropInnerUnsupported = 11,
    /// Dropped (gateway ingress): the decapsulated packet is not a reply
    /// to a flow the gateway sent into this tunnel, so its inner source is
    /// not the tunnel's endpoint or its inner destination not the proxy
    /// that opened the flow (e.g. a forged packet to the gateway node).
    DropInnerNotAllowed = 12,
    /// Dropped (gateway ingress): a GUE control message that is not a
    /// standard hello of exactly [`crate::wire::HELLO_LEN`] bytes.
    DropHelloMalformed = 13,
    /// Dropped (gateway ingress): a hello for a tunnel the node does not
    /// have.
    DropHelloUnknownTunnel = 14,
    /// Dropped (gateway ingress): a hello over its tunnel's budget
    /// ([`HelloBudgetKey`]).
    DropHelloRateLimited = 15,
    /// Dropped (cluster ingress): the decapsulated packet's destination is
    /// not an endpoint of the tunnel it came in (its address, port and
    /// protocol are not in the endpoint table under that tunnel's id): a
    /// gateway, or anyone who took over a tunnel, reaches only the pods the
    /// tunnel serves, never the node itself or another pod.
    DropInnerNotEndpoint = 16,
}

impl Counter {
    /// Number of counter slots (size of the array map).
    pub const COUNT: u32 = 17;

    /// Every counter, in index order.
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::Encapsulated,
        Counter::Decapsulated,
        Counter::ControlPassed,
        Counter::DropNoEndpoint,
        Counter::DropUnknownTunnel,
        Counter::DropTunnelPending,
        Counter::DropWrongSource,
        Counter::DropMalformed,
        Counter::DropTooBig,
        Counter::DropHelperFailed,
        Counter::DropWrongDestination,
        Counter::DropInnerUnsupported,
        Counter::DropInnerNotAllowed,
        Counter::DropHelloMalformed,
        Counter::DropHelloUnknownTunnel,
        Counter::DropHelloRateLimited,
        Counter::DropInnerNotEndpoint,
    ];

    /// The map index.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The counter at `index`, if any.
    pub const fn from_index(index: u32) -> Option<Self> {
        if index < Counter::COUNT {
            Some(Counter::ALL[index as usize])
        } else {
            None
        }
    }

    /// Stable snake_case name for metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Encapsulated => "encapsulated",
            Counter::Decapsulated => "decapsulated",
            Counter::ControlPassed => "control_passed",
            Counter::DropNoEndpoint => "drop_no_endpoint",
            Counter::DropUnknownTunnel => "drop_unknown_tunnel",
            Counter::DropTunnelPending => "drop_tunnel_pending",
            Counter::DropWrongSource => "drop_wrong_source",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropTooBig => "drop_too_big",
            Counter::DropHelperFailed => "drop_helper_failed",
            Counter::DropWrongDestination => "drop_wrong_destination",
            Counter::DropInnerUnsupported => "drop_inner_unsupported",
            Counter::DropInnerNotAllowed => "drop_inner_not_allowed",
            Counter::DropHelloMalformed => "drop_hello_malformed",
            Counter::DropHelloUnknownTunnel => "drop_hello_unknown_tunnel",
            Counter::DropHelloRateLimited => "drop_hello_rate_limited",
            Counter::DropInnerNotEndpoint => "drop_inner_not_endpoint",
        }
    }
}

/// Key of a hello budget: a tunnel, and whether the hello comes from the
/// tunnel's verified remote (its current NAT mapping) or from anywhere
/// else. The two budgets are separate, so a flood of forged hellos from
/// other sources never spends the budget of the node's own hellos.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HelloBudgetKey {
    /// The tunnel id the hello names.
    pub tunnel_id: u32,
    /// 1: from the verified remote; 0: from any other source.
    pub from_remote: u32,
}

/// A hello budget as a GCRA (generic cell rate algorithm) state: the
/// theoretical arrival time of the next hello, in `bpf_ktime_get_ns`
/// nanoseconds. A hello at `now` passes if `tat <= now + (burst - 1) ×
/// interval`, and then `tat = max(tat, now) + interval`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HelloBudget {
    /// Theoretical arrival time, nanoseconds.
    pub tat_ns: u64,
}

/// Hellos from a tunnel's verified remote: one per this many nanoseconds
/// on average (10 per second; agents send one per 1–3 s).
pub const HELLO_INTERVAL_REMOTE_NS: u64 = 100_000_000;
/// Hellos from a tunnel's verified remote passed back to back.
pub const HELLO_BURST_REMOTE: u64 = 10;
/// Hellos from any other source (a new NAT mapping, a first hello): one per
/// this many nanoseconds on average (4 per second).
pub const HELLO_INTERVAL_OTHER_NS: u64 = 250_000_000;
/// Hellos from other sources passed back to back.
pub const HELLO_BURST_OTHER: u64 = 4;

// Sizes, and "no implicit padding": each size equals the sum of its fields.
const _: () =
    assert!(size_of::<EndpointKey>() == 24 && size_of::<EndpointKey>() == 4 + 16 + 2 + 1 + 1);
const _: () = assert!(size_of::<EndpointValue>() == 8);
const _: () = assert!(size_of::<TunnelKey>() == 4);
const _: () = assert!(
    size_of::<TunnelValue>() == 44 && size_of::<TunnelValue>() == 16 + 16 + 2 + 2 + 1 + 1 + 2 + 4
);
const _: () =
    assert!(size_of::<FlowKey>() == 40 && size_of::<FlowKey>() == 16 + 16 + 2 + 2 + 1 + 1 + 2);
const _: () = assert!(size_of::<FlowValue>() == 8);
const _: () = assert!(size_of::<CounterValue>() == 16);
const _: () = assert!(size_of::<HelloBudgetKey>() == 8 && size_of::<HelloBudget>() == 8);
const _: () = assert!(align_of::<EndpointKey>() == 4 && align_of::<TunnelValue>() == 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let v4: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for a in [v4, v6] {
            let (f, b) = addr_to_bytes(a);
            assert_eq!(addr_from_bytes(f, b), Some(a));
        }
        assert_eq!(addr_from_bytes(0, [0; 16]), None);
        assert_eq!(addr_to_bytes(v4).1[4..], [0; 12]);
    }

    #[test]
    fn constructors() {
        let k = EndpointKey::new(7, "10.244.1.5".parse().unwrap(), 8080, 6);
        assert_eq!(
            (k.scope, k.port, k.protocol, k.family),
            (7, [0x1f, 0x90], 6, FAMILY_IPV4)
        );
        let t = TunnelValue::pending(TenantId(2), "198.51.100.1".parse().unwrap(), 6080);
        assert_eq!((t.state, t.local_port), (TUNNEL_PENDING, [0x17, 0xc0]));
        let v = t.verified("203.0.113.9".parse().unwrap(), 40000).unwrap();
        assert_eq!(
            (v.state, v.remote_port, &v.remote_addr[..4]),
            (
                TUNNEL_VERIFIED,
                40000u16.to_be_bytes(),
                &[203, 0, 113, 9][..]
            )
        );
        assert_eq!(t.verified("2001:db8::1".parse().unwrap(), 1), None);
        assert!(
            FlowKey::new(
                "10.0.0.1".parse().unwrap(),
                1,
                "2001:db8::1".parse().unwrap(),
                2,
                6
            )
            .is_none()
        );
        assert_eq!(EndpointValue::new(TunnelId(9)).tunnel_id, 9);
        assert_eq!(FlowValue::new(TunnelId(9)).tunnel_id, 9);
        assert_eq!(TunnelKey::new(TunnelId(9)).tunnel_id, 9);
    }

    #[test]
    fn counters_index() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            assert_eq!(Counter::from_index(i as u32), Some(*c));
            assert!(!c.name().is_empty());
        }
        assert_eq!(Counter::from_index(Counter::COUNT), None);
    }
}
