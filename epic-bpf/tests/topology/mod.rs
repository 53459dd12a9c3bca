//! The issue's end-to-end topology, shared by the namespace tests and the
//! throughput benchmark:
//!
//! ```text
//! client ns ── gateway ns ─────────────── NAT ns ─────────────── node ns ── pod ns
//!  (client)    proxy stand-in (relay)     nftables masquerade    cluster    echo servers
//!              + gateway programs (gw0)   (no new inward flows)  programs   (TCP, UDP)
//!                                                                (node0)
//! ```
//!
//! The gateway reaches the pod network only through the NAT, so only through
//! the tunnel. Every thread here is bounded (stop flags, read timeouts), and
//! every namespace is removed on drop.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use epic_bpf::agent::{ClusterHelloAgent, GatewayHelloAgent};
use epic_bpf::{DataPath, Program};
use epic_gue::hello::clock::{MonotonicClock, wall_clock_nanos};
use epic_gue::hello::{
    HelloKey, HelloSender, HelloVerifier, SenderConfig, TunnelConfig, VerifierConfig,
};
use epic_gue::maps::{EndpointKey, TunnelValue};
use epic_gue::{GUE_PORT, HelloEvent, NodeId, TenantId, TunnelId};
use epic_test_support::Netns;

/// The tunnel every test uses.
pub const TUNNEL: TunnelId = TunnelId(42);
/// The pod's TCP echo port (and the relay's).
pub const TCP_PORT: u16 = 7000;
/// The pod's UDP echo port (and the relay's).
pub const UDP_PORT: u16 = 7001;
/// A port in the pod for other servers (iperf3); not relayed, not a tunnel endpoint
/// unless a test adds it.
pub const EXTRA_PORT: u16 = 7002;
/// Socket timeouts in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The masquerade port range the NAT starts with.
pub const NAT_PORTS: (u16, u16) = (20000, 30000);

/// Addresses of one address family.
pub struct Plan {
    /// IPv6 or IPv4.
    pub v6: bool,
    /// Client, on the client ↔ gateway link.
    pub client: &'static str,
    /// Gateway, on the client ↔ gateway link (the relay listens here).
    pub gateway_front: &'static str,
    /// Gateway uplink (toward the NAT): the tunnel's local end.
    pub gateway: &'static str,
    /// NAT, outside (gateway side): the address hellos appear from.
    pub nat_outside: &'static str,
    /// NAT, inside (cluster side).
    pub nat_inside: &'static str,
    /// Cluster node uplink.
    pub node: &'static str,
    /// Cluster node, pod side.
    pub node_pod_side: &'static str,
    /// The pod.
    pub pod: &'static str,
    /// Prefix length of every link.
    pub prefix: u8,
    /// The pod network.
    pub pod_net: &'static str,
}

/// IPv4 everywhere.
pub const V4: Plan = Plan {
    v6: false,
    client: "198.18.0.1",
    gateway_front: "198.18.0.254",
    gateway: "198.51.100.1",
    nat_outside: "198.51.100.254",
    nat_inside: "192.0.2.254",
    node: "192.0.2.1",
    node_pod_side: "203.0.113.1",
    pod: "203.0.113.10",
    prefix: 24,
    pod_net: "203.0.113.0/24",
};

/// IPv6 everywhere.
pub const V6: Plan = Plan {
    v6: true,
    client: "2001:db8:4::1",
    gateway_front: "2001:db8:4::fe",
    gateway: "2001:db8:1::1",
    nat_outside: "2001:db8:1::fe",
    nat_inside: "2001:db8:2::fe",
    node: "2001:db8:2::1",
    node_pod_side: "2001:db8:3::1",
    pod: "2001:db8:3::10",
    prefix: 64,
    pod_net: "2001:db8:3::/64",
};

/// Parses an address of the plan.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Plan {
    /// The pod's address and `port`.
    pub fn pod_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(ip(self.pod), port)
    }

    /// The relay's (proxy stand-in's) address and `port`, as the client sees it.
    pub fn front_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(ip(self.gateway_front), port)
    }
}

/// The five namespaces, linked and addressed, NAT and routes in place.
pub struct Topology {
    /// Client.
    pub client: Netns,
    /// Gateway node (proxy stand-in + gateway programs on `gw0`).
    pub gw: Netns,
    /// NAT (`nat0` outside, `nat1` inside).
    pub nat: Netns,
    /// Cluster node (cluster programs on `node0`).
    pub node: Netns,
    /// Pod.
    pub pod: Netns,
    v6: bool,
}

impl Topology {
    /// Builds the namespaces for `p`; `cluster_mtu` lowers the MTU of the
    /// NAT ↔ cluster-node link (both ends).
    pub fn new(p: &Plan, cluster_mtu: Option<u32>) -> Topology {
        let t = Topology {
            client: Netns::new("e2e-cli").unwrap(),
            gw: Netns::new("e2e-gw").unwrap(),
            nat: Netns::new("e2e-nat").unwrap(),
            node: Netns::new("e2e-node").unwrap(),
            pod: Netns::new("e2e-pod").unwrap(),
            v6: p.v6,
        };
        let cidr = |a: &str| format!("{a}/{}", p.prefix);
        t.client.add_veth("cli0", &t.gw, "front0").unwrap();
        t.gw.add_veth("gw0", &t.nat, "nat0").unwrap();
        t.nat.add_veth("nat1", &t.node, "node0").unwrap();
        t.node.add_veth("podh", &t.pod, "pod0").unwrap();
        if let Some(mtu) = cluster_mtu {
            let mtu = mtu.to_string();
            t.nat.ip(["link", "set", "nat1", "mtu", &mtu]).unwrap();
            t.node.ip(["link", "set", "node0", "mtu", &mtu]).unwrap();
        }
        t.client.add_address("cli0", &cidr(p.client)).unwrap();
        t.gw.add_address("front0", &cidr(p.gateway_front)).unwrap();
        t.gw.add_address("gw0", &cidr(p.gateway)).unwrap();
        t.nat.add_address("nat0", &cidr(p.nat_outside)).unwrap();
        t.nat.add_address("nat1", &cidr(p.nat_inside)).unwrap();
        t.node.add_address("node0", &cidr(p.node)).unwrap();
        t.node.add_address("podh", &cidr(p.node_pod_side)).unwrap();
        t.pod.add_address("pod0", &cidr(p.pod)).unwrap();
        let fam = if p.v6 { "-6" } else { "-4" };
        // The gateway reaches pods only through the NAT (i.e. only through the tunnel).
        t.gw.ip([fam, "route", "add", p.pod_net, "via", p.nat_outside])
            .unwrap();
        t.node
            .ip([fam, "route", "add", "default", "via", p.nat_inside])
            .unwrap();
        t.pod
            .ip([fam, "route", "add", "default", "via", p.node_pod_side])
            .unwrap();
        let forwarding = if p.v6 {
            "net.ipv6.conf.all.forwarding=1"
        } else {
            "net.ipv4.ip_forward=1"
        };
        for ns in [&t.nat, &t.node] {
            ns.exec("sysctl", ["-qw", forwarding]).unwrap();
        }
        t.set_nat_ports(NAT_PORTS);
        t
    }

    /// (Re)writes the NAT's rules: masquerade toward the gateway, UDP onto
    /// `ports`; nothing new enters from the gateway side.
    pub fn set_nat_ports(&self, ports: (u16, u16)) {
        let family = if self.v6 { "ip6" } else { "ip" };
        let (low, high) = ports;
        // `add` + `delete` first makes the file idempotent.
        let rules = format!(
            "table {family} epic_nat\n\
             delete table {family} epic_nat\n\
             table {family} epic_nat {{\n\
               chain post {{ type nat hook postrouting priority 100; oifname \"nat0\" meta l4proto udp masquerade to :{low}-{high}; oifname \"nat0\" masquerade; }}\n\
               chain inward {{ type filter hook forward priority 0; policy accept;\n\
                 ct state established,related accept; iifname \"nat0\" drop; }}\n\
             }}\n"
        );
        let path = std::env::temp_dir().join(format!("{}.nft", self.nat.name()));
        std::fs::write(&path, rules).unwrap();
        let result = self.nat.exec("nft", ["-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        result.unwrap();
    }

    /// Lets the gateway reach the pod network through the NAT in clear (a
    /// route to the pods, no inward filter): the direct path, for comparisons.
    pub fn route_pods_directly(&self, p: &Plan) {
        let fam = if self.v6 { "-6" } else { "-4" };
        self.nat
            .ip([fam, "route", "add", p.pod_net, "via", p.node])
            .unwrap();
        let family = if self.v6 { "ip6" } else { "ip" };
        self.nat
            .exec("nft", ["flush", "chain", family, "epic_nat", "inward"])
            .unwrap();
    }

    /// Forgets every NAT mapping (the NAT namespace's conntrack table).
    pub fn flush_nat_conntrack(&self) {
        self.nat
            .exec("conntrack", ["-F"])
            .expect("`conntrack -F` in the NAT namespace (Debian package `conntrack`; `cargo xtask setup` installs it)");
    }
}

/// A thread in a namespace with a stop flag, stopped and joined on drop.
pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), epic_test_support::Error>>>,
}

impl Worker {
    fn start(ns: &Netns, body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Worker {
            stop,
            handle: Some(ns.spawn_thread(move || body(flag))),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

const POLL: Duration = Duration::from_millis(20);

/// Copies `from` → `to` until EOF, error or timeout, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Accepts TCP connections on `listener` until stopped; `serve` handles each
/// on its own thread (inheriting the namespace).
fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    serve: impl Fn(TcpStream) + Send + Clone + 'static,
) {
    listener.set_nonblocking(true).unwrap();
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let serve = serve.clone();
                conns.push(std::thread::spawn(move || serve(conn)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => break,
        }
    }
    for conn in conns {
        let _ = conn.join();
    }
}

/// The pod's TCP and UDP echo servers.
pub fn echo_servers(t: &Topology, p: &Plan) -> (Worker, Worker) {
    let tcp_addr = p.pod_addr(TCP_PORT);
    // Sockets are bound before the workers start, so nothing sent right
    // after the harness is built can find a closed port.
    let listener = t
        .pod
        .run_in(|| TcpListener::bind(tcp_addr).unwrap())
        .unwrap();
    let tcp = Worker::start(&t.pod, move |stop| {
        accept_loop(listener, stop, |conn| {
            let back = conn.try_clone().unwrap();
            pump(conn, back);
        });
    });
    let udp_addr = p.pod_addr(UDP_PORT);
    let socket = t.pod.run_in(|| UdpSocket::bind(udp_addr).unwrap()).unwrap();
    let udp = Worker::start(&t.pod, move |stop| {
        socket.set_read_timeout(Some(POLL)).unwrap();
        let mut buf = [0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
    (tcp, udp)
}

/// The proxy stand-in in the gateway namespace: relays TCP and UDP from the
/// client side (`gateway_front`) to the pod, over the gateway's own sockets
/// (mark 0, the endpoints' scope).
pub fn proxy_relays(t: &Topology, p: &Plan) -> (Worker, Worker) {
    let front = p.front_addr(TCP_PORT);
    let upstream = p.pod_addr(TCP_PORT);
    let listener = t.gw.run_in(|| TcpListener::bind(front).unwrap()).unwrap();
    let tcp = Worker::start(&t.gw, move |stop| {
        accept_loop(listener, stop, move |client| {
            // This thread was started by the relay's, so it is in the gateway namespace.
            let Ok(pod) = TcpStream::connect_timeout(&upstream, IO_TIMEOUT) else {
                return;
            };
            pod.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            pod.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            let (c2, p2) = (client.try_clone().unwrap(), pod.try_clone().unwrap());
            let back = std::thread::spawn(move || pump(p2, c2));
            pump(client, pod);
            let _ = back.join();
        });
    });
    let udp_front = p.front_addr(UDP_PORT);
    let udp_pod = p.pod_addr(UDP_PORT);
    let (front, upstream) =
        t.gw.run_in(|| {
            let front = UdpSocket::bind(udp_front).unwrap();
            let local = SocketAddr::new(
                if udp_pod.is_ipv6() {
                    ip("::")
                } else {
                    ip("0.0.0.0")
                },
                0,
            );
            let upstream = UdpSocket::bind(local).unwrap();
            upstream.connect(udp_pod).unwrap();
            (front, upstream)
        })
        .unwrap();
    let udp = Worker::start(&t.gw, move |stop| {
        front.set_read_timeout(Some(POLL)).unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, client)) = front.recv_from(&mut buf) else {
                continue;
            };
            if upstream.send(&buf[..n]).is_err() {
                continue;
            }
            if let Ok(n) = upstream.recv(&mut buf) {
                let _ = front.send_to(&buf[..n], client);
            }
        }
    });
    (tcp, udp)
}

/// Options of a [`Harness`].
#[derive(Default)]
pub struct Options {
    /// The gateway verifier's timing (expiry).
    pub verifier: VerifierConfig,
    /// MTU of the NAT ↔ cluster-node link.
    pub cluster_mtu: Option<u32>,
}

/// The topology with both sides' programs loaded and attached, both agents,
/// the echo servers and the proxy relays running, the tunnel pending.
pub struct Harness {
    /// The address plan.
    pub plan: &'static Plan,
    /// Gateway programs (on `gw0`).
    pub gw_dp: DataPath,
    /// Cluster-node programs (on `node0`).
    pub cl_dp: DataPath,
    /// Verifies hellos on the gateway's port 6080.
    pub gw_agent: GatewayHelloAgent,
    /// Sends hellos from the node's port 6080.
    pub cl_agent: ClusterHelloAgent,
    /// The hello sender's configuration (key, tenant, node), for tests that
    /// make hellos of their own.
    pub hello: SenderConfig,
    /// The node's hello socket (a clone of the agent's), for those hellos.
    pub node_socket: UdpSocket,
    workers: Vec<Worker>,
    /// The namespaces; dropped last.
    pub topo: Topology,
}

impl Harness {
    /// Builds everything for `plan`.
    pub fn new(plan: &'static Plan, options: Options) -> Harness {
        let p = plan;
        let topo = Topology::new(p, options.cluster_mtu);
        let key = HelloKey::new([9; 32]);
        let node_id = NodeId::from_name("node-1");
        let tenant = TenantId(3);

        // Gateway: programs, tunnel pending, endpoints (mark 0 = the proxy's scope).
        let (mut gw_dp, gw_socket) = topo
            .gw
            .run_in(|| {
                let mut dp = DataPath::load().unwrap();
                dp.attach(Program::GatewayEgress, "gw0").unwrap();
                dp.attach(Program::GatewayIngress, "gw0").unwrap();
                let socket = UdpSocket::bind(SocketAddr::new(ip(p.gateway), GUE_PORT)).unwrap();
                (dp, socket)
            })
            .unwrap();
        gw_dp
            .add_tunnel(
                TUNNEL,
                TunnelValue::pending(tenant, ip(p.gateway), GUE_PORT),
            )
            .unwrap();
        for (port, protocol) in [(TCP_PORT, 6), (UDP_PORT, 17), (EXTRA_PORT, 6)] {
            gw_dp
                .add_endpoint(EndpointKey::new(0, ip(p.pod), port, protocol), TUNNEL)
                .unwrap();
        }
        let mut verifier = HelloVerifier::with_capacity(8, options.verifier);
        verifier
            .add_tunnel(&TunnelConfig::new(TUNNEL, key.clone(), tenant, node_id))
            .unwrap();
        let gw_agent = GatewayHelloAgent::new(gw_socket, verifier);

        // Cluster node: programs, tunnel toward the gateway's known address.
        let (mut cl_dp, cl_socket) = topo
            .node
            .run_in(|| {
                let mut dp = DataPath::load().unwrap();
                dp.attach(Program::ClusterIngress, "node0").unwrap();
                dp.attach(Program::ClusterEgress, "node0").unwrap();
                let socket = UdpSocket::bind(SocketAddr::new(ip(p.node), GUE_PORT)).unwrap();
                (dp, socket)
            })
            .unwrap();
        let value = TunnelValue::pending(tenant, ip(p.node), GUE_PORT)
            .verified(ip(p.gateway), GUE_PORT)
            .unwrap();
        cl_dp.add_tunnel(TUNNEL, value).unwrap();
        for (port, protocol) in [(TCP_PORT, 6), (UDP_PORT, 17), (EXTRA_PORT, 6)] {
            cl_dp
                .add_local_endpoint(TUNNEL, ip(p.pod), port, protocol)
                .unwrap();
        }
        let clock = MonotonicClock::new();
        let mut hello = SenderConfig::new(TUNNEL, key, tenant, node_id);
        hello.interval = Duration::from_millis(500);
        let sender = HelloSender::new(&hello, clock.now(), wall_clock_nanos());
        let node_socket = cl_socket.try_clone().unwrap();
        let mut cl_agent = ClusterHelloAgent::new(cl_socket, clock);
        cl_agent.add_sender(SocketAddr::new(ip(p.gateway), GUE_PORT), sender);

        let (echo_tcp, echo_udp) = echo_servers(&topo, p);
        let (relay_tcp, relay_udp) = proxy_relays(&topo, p);
        Harness {
            plan,
            gw_dp,
            cl_dp,
            gw_agent,
            cl_agent,
            hello,
            node_socket,
            workers: vec![relay_tcp, relay_udp, echo_tcp, echo_udp],
            topo,
        }
    }

    /// The gateway agent handles what arrives within `budget`.
    pub fn gateway_events(&mut self, budget: Duration) -> Vec<HelloEvent> {
        self.gw_agent.run_for(&mut self.gw_dp, budget).unwrap()
    }

    /// The cluster agent sends its due hello (one, at the first call and
    /// every interval after); the gateway handles it. If the gateway
    /// challenged, the agent answers (through the NAT) and the gateway
    /// handles the response. Returns the gateway's events.
    pub fn hello_round(&mut self) -> Vec<HelloEvent> {
        // Bounded: the sender is due at most one interval from now.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.cl_agent.send_due().unwrap() == 0 {
            assert!(Instant::now() < deadline, "no hello due within 2 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut events = self.gateway_events(Duration::from_millis(300));
        if events
            .iter()
            .any(|e| matches!(e, HelloEvent::Challenge { .. }))
        {
            assert!(
                self.cl_agent
                    .answer_one(Duration::from_millis(500))
                    .unwrap(),
                "the node answers the gateway's challenge"
            );
            events.extend(self.gateway_events(Duration::from_millis(300)));
        }
        events
    }

    /// Sends the first hello, answers the challenge, and returns the NAT
    /// mapping the gateway learned (where it sent the challenge).
    pub fn learn(&mut self) -> SocketAddr {
        match self.hello_round().as_slice() {
            [
                HelloEvent::Challenge { addr: to, .. },
                HelloEvent::Learned { tunnel, addr },
            ] if *tunnel == TUNNEL && to == addr => *addr,
            other => panic!("expected a challenge and Learned, got {other:?}"),
        }
    }

    /// A UDP socket in the client namespace.
    pub fn client_udp(&self) -> UdpSocket {
        let local = SocketAddr::new(ip(self.plan.client), 0);
        let socket = self
            .topo
            .client
            .run_in(|| UdpSocket::bind(local).unwrap())
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        socket
    }

    /// Sends up to `attempts` datagrams from the client through the relay;
    /// `true` as soon as one comes back echoed.
    pub fn udp_echo(&self, socket: &UdpSocket, attempts: u8) -> bool {
        let to = self.plan.front_addr(UDP_PORT);
        let mut buf = [0u8; 2048];
        for attempt in 0..attempts {
            let msg = [attempt; 1000];
            socket.send_to(&msg, to).unwrap();
            // Late echoes of earlier attempts count too.
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if from == to && n == msg.len() && buf[..n].iter().all(|b| *b <= attempt) {
                    return true;
                }
            }
        }
        false
    }

    /// Connects from the client to the relay's TCP port.
    pub fn client_tcp(&self) -> std::io::Result<TcpStream> {
        let to = self.plan.front_addr(TCP_PORT);
        let stream = self
            .topo
            .client
            .run_in(|| TcpStream::connect_timeout(&to, IO_TIMEOUT))
            .unwrap()?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }

    /// Sends `len` bytes from the client through relay and tunnel to the
    /// pod's TCP echo and reads them back; `true` if they match.
    pub fn tcp_echo(&self, len: usize) -> std::io::Result<bool> {
        let mut stream = self.client_tcp()?;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut reader = stream.try_clone()?;
        let expected = data.clone();
        let reading = std::thread::spawn(move || {
            let mut got = vec![0u8; expected.len()];
            reader.read_exact(&mut got).map(|()| got == expected)
        });
        stream.write_all(&data)?;
        let matched = reading.join().unwrap()?;
        let _ = stream.shutdown(Shutdown::Both);
        Ok(matched)
    }
}
