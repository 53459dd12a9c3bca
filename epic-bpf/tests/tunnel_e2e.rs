//! End to end through real namespaces: gateway ns ↔ NAT ns (nftables
//! masquerade, no new connections inward) ↔ cluster-node ns ↔ pod ns. The
//! cluster agent's hello opens the NAT mapping, the gateway agent verifies it
//! and programs the tunnel, then TCP and UDP echo through the GUE tunnel.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use epic_bpf::agent::{ClusterHelloAgent, GatewayHelloAgent};
use epic_bpf::{DataPath, Program};
use epic_gue::hello::clock::{MonotonicClock, wall_clock_nanos};
use epic_gue::hello::{
    HelloKey, HelloSender, HelloVerifier, SenderConfig, TunnelConfig, VerifierConfig,
};
use epic_gue::maps::{Counter, EndpointKey, TUNNEL_VERIFIED, TunnelValue};
use epic_gue::{GUE_PORT, HelloEvent, NodeId, TenantId, TunnelId};
use epic_test_support::{Netns, require_root};

const TUNNEL: TunnelId = TunnelId(42);
const TCP_PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

struct Plan {
    v6: bool,
    gateway: &'static str,
    nat_outside: &'static str,
    nat_inside: &'static str,
    node: &'static str,
    node_pod_side: &'static str,
    pod: &'static str,
    prefix: u8,
    pod_net: &'static str,
}

const V4: Plan = Plan {
    v6: false,
    gateway: "198.51.100.1",
    nat_outside: "198.51.100.254",
    nat_inside: "192.0.2.254",
    node: "192.0.2.1",
    node_pod_side: "203.0.113.1",
    pod: "203.0.113.10",
    prefix: 24,
    pod_net: "203.0.113.0/24",
};

const V6: Plan = Plan {
    v6: true,
    gateway: "2001:db8:1::1",
    nat_outside: "2001:db8:1::fe",
    nat_inside: "2001:db8:2::fe",
    node: "2001:db8:2::1",
    node_pod_side: "2001:db8:3::1",
    pod: "2001:db8:3::10",
    prefix: 64,
    pod_net: "2001:db8:3::/64",
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Topology {
    gw: Netns,
    nat: Netns,
    node: Netns,
    pod: Netns,
}

fn topology(p: &Plan) -> Topology {
    let t = Topology {
        gw: Netns::new("e2e-gw").unwrap(),
        nat: Netns::new("e2e-nat").unwrap(),
        node: Netns::new("e2e-node").unwrap(),
        pod: Netns::new("e2e-pod").unwrap(),
    };
    let cidr = |a: &str| format!("{a}/{}", p.prefix);
    t.gw.add_veth("gw0", &t.nat, "nat0").unwrap();
    t.nat.add_veth("nat1", &t.node, "node0").unwrap();
    t.node.add_veth("podh", &t.pod, "pod0").unwrap();
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
    for ns in [&t.nat, &t.node] {
        let key = if p.v6 {
            "net.ipv6.conf.all.forwarding=1"
        } else {
            "net.ipv4.ip_forward=1"
        };
        ns.exec("sysctl", ["-qw", key]).unwrap();
    }
    let family = if p.v6 { "ip6" } else { "ip" };
    let rules = format!(
        "table {family} epic_nat {{\n\
           chain post {{ type nat hook postrouting priority 100; oifname \"nat0\" meta l4proto udp masquerade to :20000-30000; oifname \"nat0\" masquerade; }}\n\
           chain inward {{ type filter hook forward priority 0; policy accept;\n\
             ct state established,related accept; iifname \"nat0\" drop; }}\n\
         }}\n"
    );
    let path = std::env::temp_dir().join(format!("{}.nft", t.nat.name()));
    std::fs::write(&path, rules).unwrap();
    t.nat.exec("nft", ["-f", path.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&path);
    t
}

fn run_tunnel(p: &Plan, name: &str) {
    if !require_root(name) {
        return;
    }
    let t = topology(p);
    let key = HelloKey::new([9; 32]);
    let node_id = NodeId::from_name("node-1");
    let tenant = TenantId(3);

    // Gateway: programs, tunnel pending, two endpoints (mark 0 = the proxy's scope).
    let (mut gw_dp, gw_socket) =
        t.gw.run_in(|| {
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
    gw_dp
        .add_endpoint(EndpointKey::new(0, ip(p.pod), TCP_PORT, 6), TUNNEL)
        .unwrap();
    gw_dp
        .add_endpoint(EndpointKey::new(0, ip(p.pod), UDP_PORT, 17), TUNNEL)
        .unwrap();
    let mut verifier = HelloVerifier::with_capacity(8, VerifierConfig::default());
    verifier
        .add_tunnel(&TunnelConfig::new(TUNNEL, key.clone(), tenant, node_id))
        .unwrap();
    let mut gw_agent = GatewayHelloAgent::new(gw_socket, verifier);

    // Cluster node: programs, tunnel toward the gateway (known address, verified by configuration).
    let (mut cl_dp, cl_socket) = t
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
    let clock = MonotonicClock::new();
    let mut sender_cfg = SenderConfig::new(TUNNEL, key, tenant, node_id);
    sender_cfg.interval = Duration::from_millis(500);
    let sender = HelloSender::new(&sender_cfg, clock.now(), wall_clock_nanos());
    let mut cl_agent = ClusterHelloAgent::new(
        cl_socket,
        SocketAddr::new(ip(p.gateway), GUE_PORT),
        vec![sender],
        clock,
    );

    // Pod: echo servers.
    let (tcp_listener, udp_echo) = t
        .pod
        .run_in(|| {
            (
                TcpListener::bind(SocketAddr::new(ip(p.pod), TCP_PORT)).unwrap(),
                UdpSocket::bind(SocketAddr::new(ip(p.pod), UDP_PORT)).unwrap(),
            )
        })
        .unwrap();
    let tcp_server = std::thread::spawn(move || {
        let (mut conn, _) = tcp_listener.accept().unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 16384];
        let mut echoed = 0usize;
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return echoed,
                Ok(n) => {
                    conn.write_all(&buf[..n]).unwrap();
                    echoed += n;
                }
            }
        }
    });
    udp_echo.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let udp_server = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n_echoed = 0;
        for _ in 0..6 {
            let Ok((n, from)) = udp_echo.recv_from(&mut buf) else {
                break;
            };
            udp_echo.send_to(&buf[..n], from).unwrap();
            n_echoed += 1;
        }
        n_echoed
    });

    // The proxy stand-in's UDP socket, in the gateway namespace.
    let udp_client =
        t.gw.run_in(|| UdpSocket::bind(SocketAddr::new(ip(p.gateway), 0)).unwrap())
            .unwrap();
    udp_client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let pod_udp = SocketAddr::new(ip(p.pod), UDP_PORT);

    // 1. No verified remote yet: dropped with the reason, never sent in clear.
    udp_client.send_to(b"too early", pod_udp).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        udp_client.recv_from(&mut buf).is_err(),
        "no answer before the hello"
    );
    assert_eq!(
        gw_dp.counter(Counter::DropTunnelPending).unwrap().packets,
        1
    );

    // 2. The hello crosses the NAT; the gateway learns the mapping.
    assert_eq!(cl_agent.send_due().unwrap(), 1);
    let events = gw_agent
        .run_for(&mut gw_dp, Duration::from_millis(500))
        .unwrap();
    let learned = match events.as_slice() {
        [HelloEvent::Learned { tunnel, addr }] if *tunnel == TUNNEL => *addr,
        other => panic!("expected one Learned event, got {other:?}"),
    };
    assert_eq!(learned.ip(), ip(p.nat_outside), "the NAT's address");
    assert!(
        (20000..=30000).contains(&learned.port()),
        "the NAT's port: {learned}"
    );
    let tunnel = gw_dp.tunnel(TUNNEL).unwrap().unwrap();
    assert_eq!(tunnel.state, TUNNEL_VERIFIED);
    assert_eq!(tunnel.remote_port, learned.port().to_be_bytes());

    // 3. UDP echo through the tunnel.
    //    (Bounded retries: the first datagram may wait for neighbour discovery.)
    let mut echoed = 0;
    for attempt in 0..6u8 {
        let msg = [attempt; 1000];
        udp_client.send_to(&msg, pod_udp).unwrap();
        if let Ok((n, from)) = udp_client.recv_from(&mut buf) {
            // A late echo of an earlier attempt is as good.
            assert_eq!((n, from), (msg.len(), pod_udp));
            assert!(buf[0] <= attempt && buf[..n].iter().all(|b| *b == buf[0]));
            echoed += 1;
            if echoed == 2 {
                break;
            }
        }
    }
    assert_eq!(echoed, 2, "UDP echo through the tunnel");

    // 4. TCP echo, 1 MB: the payload exceeds the MTU after encapsulation
    //    without MSS clamping.
    let mut stream = t
        .gw
        .run_in(|| TcpStream::connect_timeout(&SocketAddr::new(ip(p.pod), TCP_PORT), IO_TIMEOUT))
        .unwrap()
        .expect("TCP connect through the tunnel");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut reader = stream.try_clone().unwrap();
    let expected = data.clone();
    let reading = std::thread::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        reader.read_exact(&mut got).map(|()| got == expected)
    });
    stream.write_all(&data).unwrap();
    assert!(
        reading.join().unwrap().expect("TCP echo read"),
        "TCP echo matches"
    );
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(tcp_server.join().unwrap(), data.len());

    // 5. A forged hello (wrong key) changes nothing.
    let forged_cfg = SenderConfig::new(TUNNEL, HelloKey::new([1; 32]), tenant, node_id);
    let forger_clock = MonotonicClock::new();
    let start = forger_clock.now();
    let mut forger = HelloSender::new(&forged_cfg, start, wall_clock_nanos() + 1_000_000_000);
    let forged = forger.hello_now(start);
    let forge_socket = t
        .nat
        .run_in(|| UdpSocket::bind(SocketAddr::new(ip(p.nat_outside), 5555)).unwrap())
        .unwrap();
    forge_socket
        .send_to(forged.as_bytes(), SocketAddr::new(ip(p.gateway), GUE_PORT))
        .unwrap();
    let events = gw_agent
        .run_for(&mut gw_dp, Duration::from_millis(300))
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, HelloEvent::Rejected { .. }))
            && !events.is_empty(),
        "{events:?}"
    );
    assert_eq!(
        gw_dp.tunnel(TUNNEL).unwrap().unwrap().remote_port,
        learned.port().to_be_bytes()
    );

    // 6. GUE data for the tunnel from a wrong source is dropped and counted.
    let mut data_msg = vec![0x01, if p.v6 { 41 } else { 4 }, 0x80, 0x00];
    data_msg.extend_from_slice(&TUNNEL.0.to_be_bytes());
    data_msg.extend_from_slice(&[0x45; 40]);
    forge_socket
        .send_to(&data_msg, SocketAddr::new(ip(p.gateway), GUE_PORT))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gw_dp.counter(Counter::DropWrongSource).unwrap().packets, 1);

    drop(udp_client);
    assert!(udp_server.join().unwrap() >= 2);
    let gw_enc = gw_dp.counter(Counter::Encapsulated).unwrap();
    let gw_dec = gw_dp.counter(Counter::Decapsulated).unwrap();
    let cl_enc = cl_dp.counter(Counter::Encapsulated).unwrap();
    let cl_dec = cl_dp.counter(Counter::Decapsulated).unwrap();
    assert!(
        gw_enc.packets >= 4 && cl_dec.packets >= 4,
        "{gw_enc:?} {cl_dec:?}"
    );
    assert!(
        cl_enc.packets >= 4 && gw_dec.packets >= 4,
        "{cl_enc:?} {gw_dec:?}"
    );
    assert!(!cl_dp.flows().unwrap().is_empty());
    assert_eq!(gw_dp.counter(Counter::DropTooBig).unwrap().packets, 0);
    drop(cl_agent);
}

#[test]
fn tcp_and_udp_echo_through_the_tunnel_and_a_nat_ipv4() {
    run_tunnel(&V4, "tcp_and_udp_echo_through_the_tunnel_and_a_nat_ipv4");
}

#[test]
fn tcp_and_udp_echo_through_the_tunnel_and_a_nat_ipv6() {
    run_tunnel(&V6, "tcp_and_udp_echo_through_the_tunnel_and_a_nat_ipv6");
}
