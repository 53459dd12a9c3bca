//! Inputs: well-formed packets built from the world for each program (so
//! the deep paths are reached), and mutations of kept inputs (bit flips,
//! interesting bytes at header offsets, addresses, ports and tunnel ids from
//! the world, truncation, extension, splicing).

use std::net::{IpAddr, SocketAddr};

use epic_gue::GUE_PORT;
use epic_gue::maps::{EndpointKey, addr_from_bytes, tenant_mark};

use super::model::Prog;
use super::world::{
    self, L4, PORTS, PROXY_PORTS, Packet, T_PENDING, T_UNKNOWN, T_V4, T_V6, TUNNEL_IDS, Tcp, World,
};

/// Frames are kept within these lengths (`BPF_PROG_TEST_RUN` needs at
/// least an Ethernet header).
pub const MIN_FRAME: usize = 14;
pub const MAX_FRAME: usize = 2048;

/// One input: a frame and the socket mark it carries.
#[derive(Debug, Clone)]
pub struct Input {
    pub frame: Vec<u8>,
    pub mark: u32,
}

const INTERESTING: [u8; 18] = [
    0, 1, 2, 4, 5, 6, 17, 0x20, 0x25, 0x40, 0x41, 0x45, 0x46, 0x4f, 0x60, 0x80, 0xc0, 0xff,
];

/// Offsets of header fields in the frames the generator builds (outer IPv4
/// and IPv6, GUE, inner IPv4 and IPv6, L4), for targeted mutations.
const FIELDS: [usize; 34] = [
    12,
    13,
    14,
    15,
    20,
    21,
    22,
    23,
    20 + 3,
    14 + 9,
    14 + 6,
    14 + 7,
    34,
    35,
    36,
    37,
    38,
    39,
    42,
    43,
    44,
    45,
    50,
    51,
    56,
    57,
    59,
    62,
    63,
    64,
    65,
    70,
    76,
    79,
];

/// The shortest frame `BPF_PROG_TEST_RUN` accepts with this ethertype: an
/// Ethernet header, and the whole IP header its ethertype names (the kernel
/// refuses shorter IPv4 and IPv6 frames with `EINVAL`).
fn min_len(frame: &[u8]) -> usize {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => MIN_FRAME + 20,
        Some([0x86, 0xdd]) => MIN_FRAME + 40,
        Some(_) => MIN_FRAME,
        None => MIN_FRAME,
    }
}

pub struct Gen {
    pub rng: fastrand::Rng,
}

impl Gen {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.usize(..items.len())]
    }

    fn tcp(&mut self) -> L4 {
        let flags = self.pick(&[0x02, 0x12, 0x10, 0x18, 0x11, 0x04]);
        let mss = self
            .rng
            .bool()
            .then(|| self.pick(&[1460u16, 1400, 1200, 536, 8960, 65495, 1]));
        L4::Tcp(Tcp { flags, mss })
    }

    fn l4(&mut self, protocol: u8) -> L4 {
        match protocol {
            6 => self.tcp(),
            17 => L4::Udp,
            p => L4::Other(p),
        }
    }

    fn random_protocol(&mut self, v6: bool) -> u8 {
        self.pick(&[6, 6, 17, 17, if v6 { 58 } else { 1 }, 47])
    }

    fn shape(&mut self, p: &mut Packet) {
        p.payload = match self.rng.u8(..10) {
            0 => self.rng.usize(1200..1500),
            1..=4 => 0,
            _ => self.rng.usize(1..48),
        };
        if p.src.is_ipv4() && self.rng.u8(..8) == 0 {
            p.options = self.rng.usize(1..3);
        }
        if p.src.is_ipv4() && self.rng.u8(..16) == 0 {
            p.frag = self.pick(&[0x2000, 0x0001, 0x2010, 0]);
        }
    }

    /// A packet from a proxy to the endpoint `key` (the key's own protocol).
    fn request_to(&mut self, key: &EndpointKey) -> Packet {
        let pod = addr_from_bytes(key.family, key.addr).expect("world endpoint");
        let proxy = if pod.is_ipv6() {
            world::gateway6()
        } else {
            world::gateway4()
        };
        let sport = self.pick(&PROXY_PORTS);
        let mut p = Packet::new(
            proxy,
            sport,
            pod,
            u16::from_be_bytes(key.port),
            self.l4(key.protocol),
        );
        self.shape(&mut p);
        p
    }

    fn random_packet(&mut self) -> Packet {
        let v6 = self.rng.bool();
        let pool = world::pool(v6);
        let protocol = self.random_protocol(v6);
        let l4 = self.l4(protocol);
        let mut p = Packet::new(
            self.pick(&pool),
            self.pick(&PORTS),
            self.pick(&pool),
            self.pick(&PORTS),
            l4,
        );
        self.shape(&mut p);
        p
    }

    fn mark(&mut self) -> u32 {
        let random = self.rng.u32(..);
        self.pick(&[
            0,
            tenant_mark(1),
            tenant_mark(2),
            tenant_mark(3),
            tenant_mark(4),
            tenant_mark(9),
            0x4000,
            random,
        ])
    }

    /// A fresh, mostly well-formed input for `prog`.
    pub fn seed(&mut self, prog: Prog, w: &World) -> Input {
        match prog {
            Prog::GatewayEgress => self.gateway_egress(w),
            Prog::GatewayIngress => self.gateway_ingress(w),
            Prog::ClusterEgress => self.cluster_egress(w),
            Prog::ClusterIngress => self.cluster_ingress(w),
        }
    }

    fn gateway_egress(&mut self, w: &World) -> Input {
        if self.rng.u8(..10) < 7 {
            let (key, _) = self.pick(&w.gw_endpoints);
            let p = self.request_to(&key);
            let mark = if self.rng.u8(..5) < 4 {
                key.scope
            } else {
                self.mark()
            };
            Input {
                frame: world::frame(&p.bytes()),
                mark,
            }
        } else {
            let p = self.random_packet();
            Input {
                frame: world::frame(&p.bytes()),
                mark: self.mark(),
            }
        }
    }

    /// The reply of a request to a world endpoint (pod → proxy).
    fn reply(&mut self, endpoints: &[(EndpointKey, u32)]) -> Packet {
        let (key, _) = self.pick(endpoints);
        let mut p = self.request_to(&key);
        std::mem::swap(&mut p.src, &mut p.dst);
        std::mem::swap(&mut p.sport, &mut p.dport);
        p
    }

    fn tunnel_id(&mut self) -> u32 {
        let random = self.rng.u32(..);
        self.pick(&[T_V4, T_V4, T_V6, T_V6, T_PENDING, T_UNKNOWN, random])
    }

    /// The outer ends of `tunnel` as the far end sends into it.
    fn ends(&mut self, maps: &super::model::Maps, tunnel: u32) -> (SocketAddr, SocketAddr) {
        let fallback = TUNNEL_IDS[self.rng.usize(..2)];
        let t = maps
            .tunnels
            .get(&tunnel)
            .or_else(|| maps.tunnels.get(&fallback))
            .expect("world tunnels");
        let local = addr_from_bytes(t.family, t.local_addr).expect("world tunnel");
        let remote = match addr_from_bytes(t.family, t.remote_addr) {
            Some(r) if t.state == epic_gue::maps::TUNNEL_VERIFIED => {
                SocketAddr::new(r, u16::from_be_bytes(t.remote_port))
            }
            _ => SocketAddr::new(self.pick(&world::pool(local.is_ipv6())), 40001),
        };
        if self.rng.u8(..10) == 0 {
            let other = SocketAddr::new(self.pick(&world::pool(local.is_ipv6())), 40001);
            return (other, SocketAddr::new(local, GUE_PORT));
        }
        (remote, SocketAddr::new(local, GUE_PORT))
    }

    fn hello(&mut self, maps: &super::model::Maps) -> Input {
        let tunnel = self.tunnel_id();
        let (remote, local) = self.ends(maps, tunnel);
        let src = if self.rng.bool() {
            remote
        } else {
            SocketAddr::new(self.pick(&world::pool(local.is_ipv6())), self.pick(&PORTS))
        };
        // A hello, a response, or now and then a challenge (which only the
        // cluster side may receive).
        let ctype = self.pick(&[0x80u8, 0x80, 0x82, 0x81]);
        let mut hello = vec![0x25, ctype, 0xc0, 0x00];
        hello.extend_from_slice(&tunnel.to_be_bytes());
        hello.extend((0..48).map(|_| self.rng.u8(..)));
        Input {
            frame: world::udp_frame(src, local, &hello),
            mark: 0,
        }
    }

    fn gateway_ingress(&mut self, w: &World) -> Input {
        if self.rng.u8(..100) < 15 {
            return self.hello(&w.gw);
        }
        let tunnel = self.tunnel_id();
        let (remote, local) = self.ends(&w.gw, tunnel);
        let inner = if self.rng.u8(..10) < 8 {
            self.reply(&w.gw_endpoints)
        } else {
            self.random_packet()
        };
        Input {
            frame: world::udp_frame(remote, local, &world::gue_data(tunnel, &inner.bytes())),
            mark: 0,
        }
    }

    fn cluster_ingress(&mut self, w: &World) -> Input {
        let tunnel = self.tunnel_id();
        let (remote, local) = self.ends(&w.cl, tunnel);
        if self.rng.u8(..10) == 0 {
            let mut control = vec![0x25, self.rng.u8(..), 0xc0, 0x00];
            control.extend_from_slice(&tunnel.to_be_bytes());
            control.extend((0..self.rng.usize(0..64)).map(|_| self.rng.u8(..)));
            return Input {
                frame: world::udp_frame(remote, local, &control),
                mark: 0,
            };
        }
        let inner = if self.rng.u8(..10) < 8 {
            let (key, _) = self.pick(&w.cl_endpoints);
            self.request_to(&key)
        } else {
            self.random_packet()
        };
        Input {
            frame: world::udp_frame(remote, local, &world::gue_data(tunnel, &inner.bytes())),
            mark: 0,
        }
    }

    fn cluster_egress(&mut self, w: &World) -> Input {
        let p = if self.rng.u8(..10) < 8 {
            self.reply(&w.cl_endpoints)
        } else {
            self.random_packet()
        };
        Input {
            frame: world::frame(&p.bytes()),
            mark: 0,
        }
    }

    /// Applies one to four mutations to `input`; `other` is for splicing.
    pub fn mutate(&mut self, input: &mut Input, other: &Input) {
        for _ in 0..self.rng.usize(1..=4) {
            self.mutate_once(input, other);
        }
        input.frame.truncate(MAX_FRAME);
        for _ in 0..2 {
            // Twice: padding to an Ethernet header may complete an ethertype.
            let min = min_len(&input.frame);
            if input.frame.len() < min {
                input.frame.resize(min, 0);
            }
        }
    }

    fn at(&mut self, len: usize) -> usize {
        if self.rng.bool() {
            self.pick(&FIELDS).min(len - 1)
        } else {
            self.rng.usize(..len)
        }
    }

    fn write(&mut self, f: &mut [u8], bytes: &[u8]) {
        if f.len() <= bytes.len() {
            return;
        }
        let at = self.at(f.len() - bytes.len());
        f[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn mutate_once(&mut self, input: &mut Input, other: &Input) {
        let f = &mut input.frame;
        let len = f.len();
        match self.rng.u8(..10) {
            0 => {
                let at = self.rng.usize(..len);
                f[at] ^= 1 << self.rng.u8(..8);
            }
            1 => {
                let at = self.at(len);
                f[at] = self.pick(&INTERESTING);
            }
            2 if len > MIN_FRAME => {
                let keep = self.rng.usize(MIN_FRAME..len);
                f.truncate(keep);
            }
            3 => {
                let extra = self.rng.usize(1..64);
                f.extend((0..extra).map(|_| self.rng.u8(..)));
            }
            4 => {
                let v6 = self.rng.bool();
                let addr = self.pick(&world::pool(v6));
                match addr {
                    IpAddr::V4(a) => self.write(f, &a.octets()),
                    IpAddr::V6(a) => self.write(f, &a.octets()),
                }
            }
            5 => {
                let port = self.pick(&PORTS);
                self.write(f, &port.to_be_bytes());
            }
            6 => {
                let id = self.tunnel_id();
                self.write(f, &id.to_be_bytes());
            }
            7 => input.mark = self.mark(),
            8 if !other.frame.is_empty() => {
                let at = self.rng.usize(..len);
                let from = self.rng.usize(..other.frame.len());
                f.truncate(at);
                f.extend_from_slice(&other.frame[from..]);
            }
            _ => {
                let at = self.at(len);
                f[at] = self.rng.u8(..);
            }
        }
    }
}
