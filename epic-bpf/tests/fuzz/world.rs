//! The fuzzed world: one gateway and one cluster node's tables (verified
//! IPv4 and IPv6 tunnels, a pending one, an endpoint whose tunnel is
//! unknown; two tenants with the same pod address), programmed into both
//! the kernel maps and the model, and packets built from it.

use std::net::{IpAddr, SocketAddr};

use epic_bpf::DataPath;
use epic_gue::encap::internet_checksum;
use epic_gue::maps::{EndpointKey, TunnelValue, tenant_mark};
use epic_gue::{GUE_PORT, TenantId, TunnelId};

use super::model::Maps;

pub const T_V4: u32 = 0x1f2e_3d4c;
pub const T_V6: u32 = 0x0a0b_0c0d;
pub const T_PENDING: u32 = 0x00c0_ffee;
/// Named by an endpoint, absent from the tunnel table.
pub const T_UNKNOWN: u32 = 0x0bad_f00d;
pub const TUNNEL_IDS: [u32; 4] = [T_V4, T_V6, T_PENDING, T_UNKNOWN];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

pub fn gateway4() -> IpAddr {
    ip("198.51.100.1")
}
pub fn gateway6() -> IpAddr {
    ip("2001:db8:1::1")
}
pub fn nat4() -> SocketAddr {
    "203.0.113.9:40001".parse().expect("literal")
}
pub fn nat6() -> SocketAddr {
    "[2001:db8:9::9]:40002".parse().expect("literal")
}
pub fn node4() -> IpAddr {
    ip("192.0.2.10")
}
pub fn node6() -> IpAddr {
    ip("2001:db8:2::10")
}
pub fn pod1() -> IpAddr {
    ip("198.18.1.5")
}
pub fn pod2() -> IpAddr {
    ip("198.18.2.7")
}
pub fn pod6() -> IpAddr {
    ip("2001:db8:3::10")
}

/// Addresses the generator and mutator draw from, per family.
pub fn pool(v6: bool) -> Vec<IpAddr> {
    if v6 {
        vec![
            gateway6(),
            nat6().ip(),
            node6(),
            pod6(),
            ip("2001:db8:3::99"),
        ]
    } else {
        vec![
            gateway4(),
            nat4().ip(),
            node4(),
            pod1(),
            pod2(),
            ip("198.18.9.9"),
            ip("192.0.2.99"),
        ]
    }
}

/// Ports the generator and mutator draw from.
pub const PORTS: [u16; 10] = [8080, 53, 443, 80, 9000, 6080, 40001, 40002, 33000, 33001];
/// The proxies' source ports (few, so replies meet recorded flows).
pub const PROXY_PORTS: [u16; 2] = [33000, 33001];

/// Both sides' tables, as the model holds them, with the endpoints in a
/// list for random picks.
pub struct World {
    pub gw: Maps,
    pub cl: Maps,
    pub gw_endpoints: Vec<(EndpointKey, u32)>,
    pub cl_endpoints: Vec<(EndpointKey, u32)>,
}

fn verified(tenant: u32, local: IpAddr, remote: SocketAddr) -> TunnelValue {
    TunnelValue::pending(TenantId(tenant), local, GUE_PORT)
        .verified(remote.ip(), remote.port())
        .expect("one family")
}

impl World {
    pub fn new() -> World {
        let mut w = World {
            gw: Maps::default(),
            cl: Maps::default(),
            gw_endpoints: Vec::new(),
            cl_endpoints: Vec::new(),
        };
        let g = &mut w.gw.tunnels;
        g.insert(T_V4, verified(1, gateway4(), nat4()));
        g.insert(T_V6, verified(2, gateway6(), nat6()));
        g.insert(
            T_PENDING,
            TunnelValue::pending(TenantId(3), gateway4(), GUE_PORT),
        );
        let c = &mut w.cl.tunnels;
        c.insert(
            T_V4,
            verified(1, node4(), SocketAddr::new(gateway4(), GUE_PORT)),
        );
        c.insert(
            T_V6,
            verified(2, node6(), SocketAddr::new(gateway6(), GUE_PORT)),
        );
        c.insert(
            T_PENDING,
            TunnelValue::pending(TenantId(3), node4(), GUE_PORT),
        );
        let endpoints = [
            // (tenant, pod, port, protocol, tunnel)
            (1, pod1(), 8080, 6, T_V4),
            (1, pod1(), 53, 17, T_V4),
            (1, pod6(), 443, 6, T_V4),
            (2, pod1(), 8080, 6, T_V6),
            (2, pod6(), 443, 6, T_V6),
            (2, pod2(), 53, 17, T_V6),
            (3, pod2(), 80, 6, T_PENDING),
            (4, pod2(), 80, 6, T_UNKNOWN),
        ];
        for (tenant, pod, port, protocol, tunnel) in endpoints {
            let key = EndpointKey::new(tenant_mark(tenant), pod, port, protocol);
            w.gw.endpoints.insert(key, tunnel);
            w.gw_endpoints.push((key, tunnel));
            let key = EndpointKey::new(tunnel, pod, port, protocol);
            w.cl.endpoints.insert(key, tunnel);
            w.cl_endpoints.push((key, tunnel));
        }
        // An unmarked scope (a single-tenant node) on the gateway.
        let key = EndpointKey::new(0, pod2(), 9000, 17);
        w.gw.endpoints.insert(key, T_V4);
        w.gw_endpoints.push((key, T_V4));
        w
    }

    /// Writes the model's tables into the kernel maps.
    pub fn program(&self, gw: &mut DataPath, cl: &mut DataPath) {
        for (maps, dp) in [(&self.gw, gw), (&self.cl, cl)] {
            for (id, value) in &maps.tunnels {
                dp.add_tunnel(TunnelId(*id), *value).expect("add tunnel");
            }
            for (key, tunnel) in &maps.endpoints {
                dp.add_endpoint(*key, TunnelId(*tunnel))
                    .expect("add endpoint");
            }
        }
    }
}

/// How a generated TCP segment looks.
#[derive(Debug, Clone, Copy)]
pub struct Tcp {
    pub flags: u8,
    /// `Some(mss)`: an MSS option first (data offset 6).
    pub mss: Option<u16>,
}

/// What rides in an IP packet.
#[derive(Debug, Clone, Copy)]
pub enum L4 {
    Tcp(Tcp),
    Udp,
    /// Another protocol (ICMP, GRE, ...) with 8 bytes of header.
    Other(u8),
}

/// An IP packet `src:sport → dst:dport` with `payload` bytes; IPv4 with
/// `options` words of IP options and the fragment field `frag`.
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    pub payload: usize,
    pub options: usize,
    pub frag: u16,
}

impl Packet {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, l4: L4) -> Packet {
        Packet {
            src,
            dst,
            sport,
            dport,
            l4,
            payload: 0,
            options: 0,
            frag: 0x4000,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        let protocol = match self.l4 {
            L4::Tcp(tcp) => {
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&self.dport.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
                l4.push(if tcp.mss.is_some() { 0x60 } else { 0x50 });
                l4.extend_from_slice(&[tcp.flags, 0xff, 0xff, 0x5a, 0xa5, 0, 0]);
                if let Some(mss) = tcp.mss {
                    l4.extend_from_slice(&[2, 4]);
                    l4.extend_from_slice(&mss.to_be_bytes());
                }
                6
            }
            L4::Udp => {
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&self.dport.to_be_bytes());
                l4.extend_from_slice(&((8 + self.payload) as u16).to_be_bytes());
                l4.extend_from_slice(&[0x12, 0x34]);
                17
            }
            L4::Other(protocol) => {
                l4.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
                protocol
            }
        };
        l4.extend((0..self.payload).map(|i| i as u8));
        let mut ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hlen = 20 + 4 * self.options;
                let mut h = vec![0x40 | (hlen / 4) as u8, 0];
                h.extend_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0x12, 0x34]);
                h.extend_from_slice(&self.frag.to_be_bytes());
                h.extend_from_slice(&[64, protocol, 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend(std::iter::repeat_n(1u8, 4 * self.options));
                let c = internet_checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0x60, 0, 0, 0];
                h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                h.extend_from_slice(&[protocol, 64]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h
            }
            _ => panic!("a packet has one family"),
        };
        ip.extend_from_slice(&l4);
        ip
    }
}

pub use crate::common::frame;

/// An Ethernet frame with outer IP (DF, TTL 64) + UDP (checksum zero)
/// `src → dst` around `payload`.
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = internet_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(udp_len as u16).to_be_bytes());
            h.extend_from_slice(&[17, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h
        }
        _ => panic!("outer addresses of one family"),
    };
    ip.extend_from_slice(&udp);
    frame(&ip)
}

/// A GUE data message for `tunnel` around `inner`.
pub fn gue_data(tunnel: u32, inner: &[u8]) -> Vec<u8> {
    let proto = if inner.first().is_some_and(|b| b >> 4 == 6) {
        41
    } else {
        4
    };
    let mut g = vec![0x01, proto, 0x80, 0x00];
    g.extend_from_slice(&tunnel.to_be_bytes());
    g.extend_from_slice(inner);
    g
}
