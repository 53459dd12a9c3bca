//! The GUE programs under BPF_PROG_TEST_RUN, checked byte by byte against
//! `epic_gue::encap`: encapsulation, decapsulation, drops and their counters.

use std::net::{IpAddr, SocketAddr};

use epic_bpf::{DataPath, Program};
use epic_gue::encap::{OuterRepr, encapsulate};
use epic_gue::maps::{Counter, EndpointKey, FlowKey, TunnelValue, tenant_mark};
use epic_gue::{GUE_PORT, GueRepr, InnerProto, TenantId, TunnelId};
use epic_test_support::require_root;

mod common;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TUNNEL: TunnelId = TunnelId(0x0102_0304);
/// The NAT's public port for the cluster node's hellos.
const NAT_PORT: u16 = 40001;

struct Case {
    name: &'static str,
    gateway: IpAddr,
    nat: IpAddr,
    proxy: IpAddr,
    pod: IpAddr,
}

fn cases() -> Vec<Case> {
    let v4 = (
        "198.51.100.1",
        "198.51.100.254",
        "198.51.100.1",
        "203.0.113.10",
    );
    let v6 = (
        "2001:db8:1::1",
        "2001:db8:1::fe",
        "2001:db8:1::1",
        "2001:db8:3::10",
    );
    let mk = |name, outer: (&str, &str, &str, &str), inner: (&str, &str, &str, &str)| Case {
        name,
        gateway: outer.0.parse().unwrap(),
        nat: outer.1.parse().unwrap(),
        proxy: inner.2.parse().unwrap(),
        pod: inner.3.parse().unwrap(),
    };
    vec![
        mk("v4 in v4", v4, v4),
        mk("v6 in v6", v6, v6),
        mk("v6 in v4", v4, v6),
        mk("v4 in v6", v6, v4),
    ]
}

/// What `epic_gue::encap` makes of `inner` in this tunnel, in an Ethernet frame.
fn expected_frame(src: SocketAddr, dst: SocketAddr, inner: &[u8]) -> Vec<u8> {
    let outer = OuterRepr {
        src,
        dst,
        hop_limit: 64,
        dont_fragment: true,
    };
    let proto = if inner[0] >> 4 == 4 {
        InnerProto::Ipv4
    } else {
        InnerProto::Ipv6
    };
    let mut buf = vec![0u8; inner.len() + 128];
    let len = encapsulate(&outer, &GueRepr::data(TUNNEL, proto), inner, &mut buf).unwrap();
    let mut frame = common::frame(&buf[..len]);
    if src.is_ipv6() {
        // The programs send a zero outer UDP checksum over IPv6 (RFC 6935).
        frame[14 + 40 + 6..14 + 40 + 8].fill(0);
    }
    frame
}

/// What the NAT does to a tunnel packet: toward the cluster, destination
/// port NAT_PORT → 6080; toward the gateway, source port 6080 → NAT_PORT.
/// (Only ports change; the outer UDP checksums are zero.)
fn nat(frame: &[u8], toward_cluster: bool) -> Vec<u8> {
    let mut f = frame.to_vec();
    let udp = 14 + if f[12] == 0x08 { 20 } else { 40 };
    let (at, from, to) = if toward_cluster {
        (udp + 2, NAT_PORT, GUE_PORT)
    } else {
        (udp, GUE_PORT, NAT_PORT)
    };
    assert_eq!(f[at..at + 2], from.to_be_bytes());
    f[at..at + 2].copy_from_slice(&to.to_be_bytes());
    f
}

fn run(dp: &DataPath, program: Program, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = dp.test_run(program, frame, &mut out).unwrap();
    out.truncate(r.len);
    (r.verdict, out)
}

/// The gateway egress program on `frame` sent from a socket marked `mark`.
fn egress_marked(gw: &DataPath, frame: &[u8], mark: u32) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = gw
        .test_run_marked(Program::GatewayEgress, frame, &mut out, mark)
        .unwrap();
    out.truncate(r.len);
    (r.verdict, out)
}

/// Gateway and cluster data paths with the tunnel programmed as after a
/// verified hello: the gateway sends to the NAT mapping, the cluster to the gateway.
fn gateway_and_cluster(c: &Case) -> (DataPath, DataPath) {
    let mut gw = DataPath::load().unwrap();
    gw.add_tunnel(
        TUNNEL,
        TunnelValue::pending(TenantId(1), c.gateway, GUE_PORT),
    )
    .unwrap();
    gw.set_verified_remote(TUNNEL, SocketAddr::new(c.nat, NAT_PORT))
        .unwrap();
    gw.add_endpoint(EndpointKey::new(0, c.pod, 8080, 6), TUNNEL)
        .unwrap();
    gw.add_endpoint(EndpointKey::new(0, c.pod, 5353, 17), TUNNEL)
        .unwrap();
    let mut cl = DataPath::load().unwrap();
    // The cluster node's address is the NAT's here (the NAT only changes
    // ports in these tests, see `nat`): it sends from 6080 to the gateway's 6080.
    let value = TunnelValue::pending(TenantId(1), c.nat, GUE_PORT)
        .verified(c.gateway, GUE_PORT)
        .unwrap();
    cl.add_tunnel(TUNNEL, value).unwrap();
    cl.add_local_endpoint(TUNNEL, c.pod, 8080, 6).unwrap();
    cl.add_local_endpoint(TUNNEL, c.pod, 5353, 17).unwrap();
    (gw, cl)
}

#[test]
fn encapsulation_matches_epic_gue_and_decapsulation_restores_the_packet() {
    if !require_root("encapsulation_matches_epic_gue_and_decapsulation_restores_the_packet") {
        return;
    }
    for c in cases() {
        let (gw, cl) = gateway_and_cluster(&c);
        for (protocol, port, payload) in [(6u8, 8080u16, 0usize), (17, 5353, 100), (17, 5353, 1300)]
        {
            let what = format!("{} proto {protocol} payload {payload}", c.name);
            let request = common::ip_packet(c.proxy, 41000, c.pod, port, protocol, payload);
            let frame = common::frame(&request);

            // Gateway egress: exactly epic_gue's encapsulation toward the NAT mapping.
            let (verdict, encapsulated) = run(&gw, Program::GatewayEgress, &frame);
            assert_eq!(verdict, TC_ACT_OK, "{what}");
            let expected = expected_frame(
                SocketAddr::new(c.gateway, GUE_PORT),
                SocketAddr::new(c.nat, NAT_PORT),
                &request,
            );
            assert_eq!(encapsulated, expected, "{what}: encapsulation");

            // Cluster ingress: the original frame again, and the reply flow recorded.
            let (verdict, decapsulated) =
                run(&cl, Program::ClusterIngress, &nat(&encapsulated, true));
            assert_eq!(
                (verdict, &decapsulated),
                (TC_ACT_OK, &frame),
                "{what}: decapsulation"
            );
            let reply_key = FlowKey::new(c.pod, port, c.proxy, 41000, protocol).unwrap();
            assert!(
                cl.flows()
                    .unwrap()
                    .iter()
                    .any(|(k, v)| *k == reply_key && v.tunnel_id == TUNNEL.0),
                "{what}: reply flow recorded"
            );

            // Cluster egress: the reply goes back in the tunnel, to the gateway.
            let reply = common::ip_packet(c.pod, port, c.proxy, 41000, protocol, payload);
            let reply_frame = common::frame(&reply);
            let (verdict, encapsulated_reply) = run(&cl, Program::ClusterEgress, &reply_frame);
            assert_eq!(verdict, TC_ACT_OK, "{what}");
            let expected = expected_frame(
                SocketAddr::new(c.nat, GUE_PORT),
                SocketAddr::new(c.gateway, GUE_PORT),
                &reply,
            );
            assert_eq!(encapsulated_reply, expected, "{what}: reply encapsulation");

            // Gateway ingress: from the verified remote (the NAT mapping), decapsulated.
            let (verdict, decapsulated) = run(
                &gw,
                Program::GatewayIngress,
                &nat(&encapsulated_reply, false),
            );
            assert_eq!(
                (verdict, &decapsulated),
                (TC_ACT_OK, &reply_frame),
                "{what}: reply decapsulation"
            );
        }
        assert_eq!(
            gw.counter(Counter::Encapsulated).unwrap().packets,
            3,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::Decapsulated).unwrap().packets,
            3,
            "{}",
            c.name
        );
        assert_eq!(
            cl.counter(Counter::Encapsulated).unwrap().packets,
            3,
            "{}",
            c.name
        );
        assert_eq!(
            cl.counter(Counter::Decapsulated).unwrap().packets,
            3,
            "{}",
            c.name
        );
        let drops: u64 = gw
            .counters()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.name().starts_with("drop"))
            .map(|(_, v)| v.packets)
            .sum();
        assert_eq!(drops, 0, "{}", c.name);
    }
}

#[test]
fn unrelated_traffic_passes_unchanged() {
    if !require_root("unrelated_traffic_passes_unchanged") {
        return;
    }
    let c = &cases()[0];
    let (gw, cl) = gateway_and_cluster(c);
    // No endpoint for this port, no reply flow for this packet, not GUE.
    let frame = common::frame(&common::ip_packet(c.proxy, 41000, c.pod, 9999, 6, 0));
    for (dp, program) in [
        (&gw, Program::GatewayEgress),
        (&gw, Program::GatewayIngress),
        (&cl, Program::ClusterEgress),
        (&cl, Program::ClusterIngress),
    ] {
        assert_eq!(
            run(dp, program, &frame),
            (TC_ACT_OK, frame.clone()),
            "{program}"
        );
    }
    let arp = [&common::ETH[..], &[0x08, 0x06], &[0u8; 28]].concat();
    assert_eq!(
        run(&gw, Program::GatewayEgress, &arp),
        (TC_ACT_OK, arp.clone())
    );
    for (counter, value) in gw.counters().unwrap() {
        assert_eq!(value.packets, 0, "{}", counter.name());
    }
}

#[test]
fn pending_and_unknown_tunnels_drop_with_their_reason() {
    if !require_root("pending_and_unknown_tunnels_drop_with_their_reason") {
        return;
    }
    for c in cases() {
        let (mut gw, _cl) = gateway_and_cluster(&c);
        let request = common::frame(&common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0));
        gw.set_pending(TUNNEL).unwrap();
        assert_eq!(
            run(&gw, Program::GatewayEgress, &request).0,
            TC_ACT_SHOT,
            "{}",
            c.name
        );
        let pending = gw.counter(Counter::DropTunnelPending).unwrap();
        assert_eq!(
            (pending.packets, pending.bytes),
            (1, request.len() as u64),
            "{}",
            c.name
        );

        gw.remove_tunnel(TUNNEL).unwrap();
        assert_eq!(
            run(&gw, Program::GatewayEgress, &request).0,
            TC_ACT_SHOT,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::DropUnknownTunnel).unwrap().packets,
            1,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::Encapsulated).unwrap().packets,
            0,
            "{}",
            c.name
        );
    }
}

#[test]
fn gue_data_from_a_wrong_source_or_unverified_tunnel_is_dropped() {
    if !require_root("gue_data_from_a_wrong_source_or_unverified_tunnel_is_dropped") {
        return;
    }
    for c in cases() {
        let (mut gw, _cl) = gateway_and_cluster(&c);
        let reply = common::ip_packet(c.pod, 8080, c.proxy, 41000, 6, 0);
        let remote = SocketAddr::new(c.nat, NAT_PORT);
        let to_gateway = SocketAddr::new(c.gateway, GUE_PORT);
        // Right address, wrong port; wrong address, right port.
        let wrong_port = expected_frame(SocketAddr::new(c.nat, NAT_PORT + 1), to_gateway, &reply);
        let other: IpAddr = if c.nat.is_ipv4() {
            "198.51.100.99"
        } else {
            "2001:db8:1::99"
        }
        .parse()
        .unwrap();
        let wrong_addr = expected_frame(SocketAddr::new(other, NAT_PORT), to_gateway, &reply);
        for frame in [&wrong_port, &wrong_addr] {
            assert_eq!(
                run(&gw, Program::GatewayIngress, frame).0,
                TC_ACT_SHOT,
                "{}",
                c.name
            );
        }
        assert_eq!(
            gw.counter(Counter::DropWrongSource).unwrap().packets,
            2,
            "{}",
            c.name
        );

        // The right source, but the tunnel expired: pending.
        let good = expected_frame(remote, to_gateway, &reply);
        gw.set_pending(TUNNEL).unwrap();
        assert_eq!(
            run(&gw, Program::GatewayIngress, &good).0,
            TC_ACT_SHOT,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::DropTunnelPending).unwrap().packets,
            1,
            "{}",
            c.name
        );

        // A malformed data header (Hlen 2) is dropped as such.
        let mut bad = good.clone();
        let gue = 14 + if c.nat.is_ipv4() { 20 } else { 40 } + 8;
        bad[gue] = 0x02;
        assert_eq!(
            run(&gw, Program::GatewayIngress, &bad).0,
            TC_ACT_SHOT,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::DropMalformed).unwrap().packets,
            1,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::Decapsulated).unwrap().packets,
            0,
            "{}",
            c.name
        );
    }
}

/// A valid hello of `tunnel` (its MAC under a test key).
fn hello_bytes(tunnel: TunnelId) -> Vec<u8> {
    use epic_gue::NodeId;
    use epic_gue::hello::{HelloKey, HelloSender, Instant, SenderConfig};
    let mut sender = HelloSender::new(
        &SenderConfig::new(
            tunnel,
            HelloKey::new([7; 32]),
            TenantId(1),
            NodeId::from_name("n"),
        ),
        Instant::ZERO,
        1_700_000_000_000_000_000,
    );
    sender
        .poll_transmit(Instant::ZERO)
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// An Ethernet frame of a UDP datagram from `src` to the gateway's
/// 198.51.100.1:6080 carrying `payload`.
fn to_gateway_6080(src: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let IpAddr::V4(ip) = src.ip() else {
        unreachable!("IPv4 sources only")
    };
    let o = ip.octets();
    let mut packet = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, o[0], o[1], o[2], o[3], 198, 51, 100, 1,
    ];
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&GUE_PORT.to_be_bytes());
    packet.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    let total = packet.len() as u16;
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    let csum = epic_gue::encap::internet_checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&csum.to_be_bytes());
    common::frame(&packet)
}

#[test]
fn control_messages_are_passed_up_unchanged() {
    if !require_root("control_messages_are_passed_up_unchanged") {
        return;
    }
    let c = &cases()[0];
    let (gw, _cl) = gateway_and_cluster(c);
    // A hello, and a challenge response, from the NAT mapping to the
    // gateway's port 6080 (the verifier checks their MACs).
    let hello = hello_bytes(TUNNEL);
    let mut response = hello.clone();
    response[1] = epic_gue::wire::CTYPE_RESPONSE;
    for message in [&hello, &response] {
        let frame = to_gateway_6080(SocketAddr::new(c.nat, NAT_PORT), message);
        assert_eq!(
            run(&gw, Program::GatewayIngress, &frame),
            (TC_ACT_OK, frame.clone())
        );
    }
    assert_eq!(gw.counter(Counter::ControlPassed).unwrap().packets, 2);
    assert_eq!(gw.counter(Counter::Decapsulated).unwrap().packets, 0);
}

#[test]
fn hellos_are_filtered_before_they_reach_the_verifier() {
    if !require_root("hellos_are_filtered_before_they_reach_the_verifier") {
        return;
    }
    use epic_gue::maps::{HELLO_BURST_OTHER, HELLO_BURST_REMOTE};
    let c = &cases()[0];
    let remote = SocketAddr::new(c.nat, NAT_PORT);
    let forger: SocketAddr = "198.51.100.77:5555".parse().unwrap();
    let verdict = |gw: &DataPath, frame: &[u8]| run(gw, Program::GatewayIngress, frame).0;

    // Not a hello of exactly the hello length: dropped.
    let (gw, _cl) = gateway_and_cluster(c);
    let hello = hello_bytes(TUNNEL);
    // A challenge (0x81) goes from the gateway, never to it.
    let other_type = |ctype| {
        let mut bytes = hello.clone();
        bytes[1] = ctype;
        bytes
    };
    for bad in [
        &hello[..hello.len() - 1],
        &other_type(epic_gue::wire::CTYPE_CHALLENGE)[..],
        &other_type(0x83)[..],
        &[hello.as_slice(), &[0]].concat(),
    ] {
        assert_eq!(verdict(&gw, &to_gateway_6080(remote, bad)), TC_ACT_SHOT);
    }
    assert_eq!(gw.counter(Counter::DropHelloMalformed).unwrap().packets, 4);
    // A hello for a tunnel the node does not have: dropped.
    let unknown = to_gateway_6080(remote, &hello_bytes(TunnelId(0x0909_0909)));
    assert_eq!(verdict(&gw, &unknown), TC_ACT_SHOT);
    assert_eq!(
        gw.counter(Counter::DropHelloUnknownTunnel).unwrap().packets,
        1
    );
    assert_eq!(gw.counter(Counter::ControlPassed).unwrap().packets, 0);

    // A flood of forged hellos from elsewhere spends only the budget of
    // other sources; the node's own hellos, from the verified remote,
    // keep theirs.
    let flood = to_gateway_6080(forger, &hello);
    let passed = (0..100)
        .filter(|_| verdict(&gw, &flood) == TC_ACT_OK)
        .count();
    assert_eq!(passed as u64, HELLO_BURST_OTHER);
    assert_eq!(
        gw.counter(Counter::DropHelloRateLimited).unwrap().packets,
        100 - HELLO_BURST_OTHER
    );
    let own = to_gateway_6080(remote, &hello);
    let passed = (0..HELLO_BURST_REMOTE + 5)
        .filter(|_| verdict(&gw, &own) == TC_ACT_OK)
        .count();
    assert_eq!(passed as u64, HELLO_BURST_REMOTE, "the remote's own burst");
    assert_eq!(
        gw.counter(Counter::ControlPassed).unwrap().packets,
        HELLO_BURST_OTHER + HELLO_BURST_REMOTE
    );
}

#[test]
fn map_operations_list_and_expire() {
    if !require_root("map_operations_list_and_expire") {
        return;
    }
    let c = &cases()[0];
    let (mut gw, mut cl) = gateway_and_cluster(c);
    assert_eq!(gw.tunnels().unwrap().len(), 1);
    assert_eq!(gw.endpoints().unwrap().len(), 2);
    assert!(
        gw.remove_endpoint(EndpointKey::new(0, c.pod, 8080, 6))
            .unwrap()
    );
    assert!(
        !gw.remove_endpoint(EndpointKey::new(0, c.pod, 8080, 6))
            .unwrap()
    );
    assert_eq!(
        gw.endpoints().unwrap(),
        vec![(EndpointKey::new(0, c.pod, 5353, 17), TUNNEL)]
    );
    let err = gw
        .set_verified_remote(TunnelId(99), "198.51.100.7:1".parse().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("no tunnel 99"), "{err}");
    let err = gw
        .set_verified_remote(TUNNEL, "[2001:db8::7]:1".parse().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("TUNNELS"), "{err}");

    // Flows recorded by the cluster ingress go away with their tunnel.
    let request = common::frame(&common::ip_packet(c.proxy, 41000, c.pod, 5353, 17, 10));
    let (_, encapsulated) = run(&gw, Program::GatewayEgress, &request);
    run(&cl, Program::ClusterIngress, &nat(&encapsulated, true));
    assert_eq!(cl.flows().unwrap().len(), 1);
    assert_eq!(cl.expire_flows(TunnelId(5)).unwrap(), 0);
    assert_eq!(cl.expire_flows(TUNNEL).unwrap(), 1);
    assert!(cl.flows().unwrap().is_empty());
    assert!(cl.remove_tunnel(TUNNEL).unwrap());
    assert!(!cl.remove_tunnel(TUNNEL).unwrap());
}

/// GUE data from the verified remote whose inner packet is not a reply to
/// a flow the gateway sent into that tunnel — a forged packet to the
/// gateway node itself, with the endpoint's source or a spoofed one, or a
/// real flow's reply arriving through another tunnel — is dropped as
/// `drop_inner_not_allowed`; inner packets the tunnel never carries as
/// `drop_inner_unsupported`; data to another outer destination as
/// `drop_wrong_destination`. The recorded reply itself still passes.
#[test]
fn the_gateway_decapsulates_only_replies_to_its_own_flows() {
    if !require_root("the_gateway_decapsulates_only_replies_to_its_own_flows") {
        return;
    }
    for c in cases() {
        let (mut gw, _cl) = gateway_and_cluster(&c);
        let remote = SocketAddr::new(c.nat, NAT_PORT);
        let to_gateway = SocketAddr::new(c.gateway, GUE_PORT);
        let spoofed: IpAddr = if c.pod.is_ipv4() {
            "198.18.7.7"
        } else {
            "2001:db8:7::7"
        }
        .parse()
        .unwrap();
        let in_tunnel = |inner: &[u8]| expected_frame(remote, to_gateway, inner);
        let dropped = |gw: &DataPath, frame: &[u8], counter: Counter, what: &str| {
            let before = gw.counter(counter).unwrap().packets;
            assert_eq!(
                run(gw, Program::GatewayIngress, frame).0,
                TC_ACT_SHOT,
                "{what}"
            );
            assert_eq!(gw.counter(counter).unwrap().packets, before + 1, "{what}");
        };
        let name = c.name;

        // Before any request: nothing is a reply.
        let reply = common::ip_packet(c.pod, 8080, c.proxy, 41000, 6, 0);
        dropped(&gw, &in_tunnel(&reply), Counter::DropInnerNotAllowed, name);
        // Forged packets to the gateway node (the proxy's address, another
        // of the node's), from the endpoint and from a spoofed source.
        let node: IpAddr = if c.pod.is_ipv4() {
            "198.51.100.2"
        } else {
            "2001:db8:1::2"
        }
        .parse()
        .unwrap();
        for src in [c.pod, spoofed] {
            for dst in [c.proxy, node] {
                let forged = common::ip_packet(src, 8080, dst, 53, 17, 20);
                let what = format!("{name}: forged {src} -> {dst}");
                dropped(
                    &gw,
                    &in_tunnel(&forged),
                    Counter::DropInnerNotAllowed,
                    &what,
                );
            }
        }

        // The proxy's request records the flow: its reply now passes.
        let request = common::frame(&common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0));
        assert_eq!(run(&gw, Program::GatewayEgress, &request).0, TC_ACT_OK);
        let frame = in_tunnel(&reply);
        assert_eq!(
            run(&gw, Program::GatewayIngress, &frame),
            (TC_ACT_OK, common::frame(&reply)),
            "{name}"
        );
        // The flow's other direction, a neighbouring port, or the same
        // reply from a spoofed source: not the flow.
        for inner in [
            common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0),
            common::ip_packet(c.pod, 8080, c.proxy, 41001, 6, 0),
            common::ip_packet(spoofed, 8080, c.proxy, 41000, 6, 0),
            common::ip_packet(c.pod, 8080, c.proxy, 41000, 17, 0),
        ] {
            dropped(&gw, &in_tunnel(&inner), Counter::DropInnerNotAllowed, name);
        }

        // The same reply through another verified tunnel: not its flow.
        let other = TunnelId(TUNNEL.0 + 1);
        gw.add_tunnel(
            other,
            TunnelValue::pending(TenantId(2), c.gateway, GUE_PORT),
        )
        .unwrap();
        gw.set_verified_remote(other, SocketAddr::new(c.nat, NAT_PORT + 1))
            .unwrap();
        let mut via_other =
            expected_frame(SocketAddr::new(c.nat, NAT_PORT + 1), to_gateway, &reply);
        let gue = 14 + if c.nat.is_ipv4() { 20 } else { 40 } + 8;
        via_other[gue + 4..gue + 8].copy_from_slice(&other.0.to_be_bytes());
        dropped(&gw, &via_other, Counter::DropInnerNotAllowed, name);

        // Not TCP or UDP (ICMP), or not the family the GUE header says.
        let icmp = if c.pod.is_ipv4() { 1 } else { 58 };
        let ping = common::ip_packet(c.pod, 0, c.proxy, 0, icmp, 8);
        dropped(&gw, &in_tunnel(&ping), Counter::DropInnerUnsupported, name);
        let mut mislabelled = frame.clone();
        mislabelled[gue + 1] = if c.pod.is_ipv4() { 41 } else { 4 };
        dropped(&gw, &mislabelled, Counter::DropInnerUnsupported, name);

        // To another outer destination than the tunnel's local end.
        let elsewhere: IpAddr = if c.gateway.is_ipv4() {
            "198.51.100.77"
        } else {
            "2001:db8:1::77"
        }
        .parse()
        .unwrap();
        let misdirected = expected_frame(remote, SocketAddr::new(elsewhere, GUE_PORT), &reply);
        dropped(&gw, &misdirected, Counter::DropWrongDestination, name);

        // The tunnel's flows expire with it: the reply no longer passes.
        assert_eq!(gw.expire_flows(TUNNEL).unwrap(), 1, "{name}");
        dropped(&gw, &frame, Counter::DropInnerNotAllowed, name);
        assert_eq!(
            gw.counter(Counter::Decapsulated).unwrap().packets,
            1,
            "{name}"
        );
    }
}

#[test]
fn the_cluster_node_delivers_only_to_the_tunnels_endpoints() {
    if !require_root("the_cluster_node_delivers_only_to_the_tunnels_endpoints") {
        return;
    }
    for c in cases() {
        let (_gw, mut cl) = gateway_and_cluster(&c);
        let name = c.name;
        // What the gateway sends: from its 6080 to the NAT mapping, which
        // forwards it to the node's 6080.
        let from_gateway = |inner: &[u8]| {
            nat(
                &expected_frame(
                    SocketAddr::new(c.gateway, GUE_PORT),
                    SocketAddr::new(c.nat, NAT_PORT),
                    inner,
                ),
                true,
            )
        };
        let dropped = |cl: &DataPath, frame: &[u8], what: &str| {
            let before = cl.counter(Counter::DropInnerNotEndpoint).unwrap().packets;
            assert_eq!(
                run(cl, Program::ClusterIngress, frame).0,
                TC_ACT_SHOT,
                "{what}"
            );
            assert_eq!(
                cl.counter(Counter::DropInnerNotEndpoint).unwrap().packets,
                before + 1,
                "{what}"
            );
        };
        // The node's own address (the NAT's in these tests), or one of
        // the node's in the inner family.
        let node: IpAddr = match (c.pod.is_ipv4(), c.nat.is_ipv4()) {
            (true, true) | (false, false) => c.nat,
            (true, false) => "192.0.2.1".parse().unwrap(),
            (false, true) => "2001:db8:2::1".parse().unwrap(),
        };
        let other_pod: IpAddr = if c.pod.is_ipv4() {
            "203.0.113.11"
        } else {
            "2001:db8:3::11"
        }
        .parse()
        .unwrap();
        // The node itself, another pod, the endpoint's other port, the
        // endpoint's port in the other protocol.
        for (dst, port, protocol) in [
            (node, 22, 6),
            (node, 8080, 6),
            (other_pod, 8080, 6),
            (c.pod, 8081, 6),
            (c.pod, 8080, 17),
        ] {
            let forged = common::ip_packet(c.proxy, 41000, dst, port, protocol, 0);
            dropped(
                &cl,
                &from_gateway(&forged),
                &format!("{name}: {dst}:{port}/{protocol}"),
            );
        }
        // The endpoint through a tunnel that does not serve it.
        let other = TunnelId(TUNNEL.0 + 1);
        let value = TunnelValue::pending(TenantId(1), c.nat, GUE_PORT)
            .verified(c.gateway, GUE_PORT)
            .unwrap();
        cl.add_tunnel(other, value).unwrap();
        let request = common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0);
        let mut via_other = from_gateway(&request);
        let gue = 14 + if c.nat.is_ipv4() { 20 } else { 40 } + 8;
        via_other[gue + 4..gue + 8].copy_from_slice(&other.0.to_be_bytes());
        dropped(&cl, &via_other, &format!("{name}: via another tunnel"));
        // Once that tunnel serves the endpoint too, both deliver.
        cl.add_local_endpoint(other, c.pod, 8080, 6).unwrap();
        for frame in [&from_gateway(&request), &via_other] {
            assert_eq!(
                run(&cl, Program::ClusterIngress, frame),
                (TC_ACT_OK, common::frame(&request)),
                "{name}"
            );
        }
        // Nothing forged reached the reply table.
        assert_eq!(cl.flows().unwrap().len(), 1, "{name}");
        assert_eq!(
            cl.counter(Counter::Decapsulated).unwrap().packets,
            2,
            "{name}"
        );
    }
}

#[test]
fn the_socket_mark_chooses_the_tenants_endpoint() {
    if !require_root("the_socket_mark_chooses_the_tenants_endpoint") {
        return;
    }
    // Two tenants' pods share one address and port; each tenant's proxies
    // mark their sockets with its scope, and each scope has its own tunnel.
    const OTHER: TunnelId = TunnelId(0x0a0b_0c0d);
    let c = &cases()[0];
    let mut gw = DataPath::load().unwrap();
    let other_nat: IpAddr = "198.51.100.253".parse().unwrap();
    for (tunnel, tenant, nat) in [(TUNNEL, 1, c.nat), (OTHER, 2, other_nat)] {
        gw.add_tunnel(
            tunnel,
            TunnelValue::pending(TenantId(tenant), c.gateway, GUE_PORT),
        )
        .unwrap();
        gw.set_verified_remote(tunnel, SocketAddr::new(nat, NAT_PORT))
            .unwrap();
        gw.add_endpoint(
            EndpointKey::new(tenant_mark(tenant), c.pod, 8080, 6),
            tunnel,
        )
        .unwrap();
    }
    let request = common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0);
    let frame = common::frame(&request);
    let marked = |mark: u32| egress_marked(&gw, &frame, mark);
    // Tenant 1's mark goes to tenant 1's node, tenant 2's to tenant 2's.
    let (verdict, one) = marked(tenant_mark(1));
    assert_eq!(verdict, TC_ACT_OK);
    let gue = 14 + 20 + 8;
    assert_eq!(
        one[gue + 4..gue + 8],
        TUNNEL.0.to_be_bytes(),
        "tunnel of scope 1"
    );
    assert_eq!(
        one[14 + 16..14 + 20],
        [198, 51, 100, 254],
        "to tenant 1's NAT"
    );
    let (verdict, two) = marked(tenant_mark(2));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        two[gue + 4..gue + 8],
        OTHER.0.to_be_bytes(),
        "tunnel of scope 2"
    );
    assert_eq!(
        two[14 + 16..14 + 20],
        [198, 51, 100, 253],
        "to tenant 2's NAT"
    );
    // Unmarked, or another program's mark (kube-proxy's 0x4000): not a
    // tenant's packet, passed as it is.
    for mark in [0, 0x4000, 3] {
        let (verdict, out) = marked(mark);
        assert_eq!((verdict, out), (TC_ACT_OK, frame.clone()), "mark {mark:#x}");
    }
    assert_eq!(gw.counter(Counter::DropNoEndpoint).unwrap().packets, 0);
}

#[test]
fn a_tenants_packet_that_no_tunnel_carries_never_leaves_in_clear() {
    if !require_root("a_tenants_packet_that_no_tunnel_carries_never_leaves_in_clear") {
        return;
    }
    for c in cases() {
        let (mut gw, _cl) = gateway_and_cluster(&c);
        // Tenant 1's endpoint, in its scope.
        gw.add_endpoint(EndpointKey::new(tenant_mark(1), c.pod, 8080, 6), TUNNEL)
            .unwrap();
        let elsewhere: IpAddr = if c.pod.is_ipv4() {
            "203.0.113.99"
        } else {
            "2001:db8:3::99"
        }
        .parse()
        .unwrap();
        let icmp = if c.pod.is_ipv4() { 1 } else { 58 };
        let tenant_traffic = [
            (
                "another address",
                common::ip_packet(c.proxy, 41000, elsewhere, 8080, 6, 0),
            ),
            (
                "another port",
                common::ip_packet(c.proxy, 41000, c.pod, 8081, 6, 0),
            ),
            (
                "UDP to the TCP endpoint",
                common::ip_packet(c.proxy, 41000, c.pod, 8080, 17, 8),
            ),
            (
                "ICMP to the endpoint",
                common::ip_packet(c.proxy, 0, c.pod, 0, icmp, 8),
            ),
        ];
        for (what, packet) in &tenant_traffic {
            let frame = common::frame(packet);
            let before = gw.counter(Counter::DropNoEndpoint).unwrap().packets;
            assert_eq!(
                egress_marked(&gw, &frame, tenant_mark(1)).0,
                TC_ACT_SHOT,
                "{}: {what}",
                c.name
            );
            assert_eq!(
                gw.counter(Counter::DropNoEndpoint).unwrap().packets,
                before + 1,
                "{}: {what}",
                c.name
            );
            // The same packet from anything but a tenant's proxy passes.
            assert_eq!(egress_marked(&gw, &frame, 0), (TC_ACT_OK, frame.clone()));
        }
        // Another tenant's mark does not reach tenant 1's endpoint either.
        let request = common::frame(&common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0));
        assert_eq!(
            egress_marked(&gw, &request, tenant_mark(2)).0,
            TC_ACT_SHOT,
            "{}",
            c.name
        );
        // Tenant 1's request is encapsulated.
        assert_eq!(
            egress_marked(&gw, &request, tenant_mark(1)).0,
            TC_ACT_OK,
            "{}",
            c.name
        );
        assert_eq!(
            gw.counter(Counter::Encapsulated).unwrap().packets,
            1,
            "{}",
            c.name
        );
    }
}

/// `packet` (IPv4) with 20 bytes of IP options whose first four bytes are
/// `sport`, `fake_dport` (what a parser reading the L4 header at offset 20
/// would take for the ports); the real L4 header follows them.
fn with_misleading_options(packet: &[u8], sport: u16, fake_dport: u16) -> Vec<u8> {
    let mut options = [1u8; 20];
    options[..2].copy_from_slice(&sport.to_be_bytes());
    options[2..4].copy_from_slice(&fake_dport.to_be_bytes());
    let mut p = packet[..20].to_vec();
    p[0] = 0x4a;
    let total = (packet.len() + 20) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[10..12].fill(0);
    let csum = epic_gue::encap::internet_checksum(&p);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend_from_slice(&options);
    p.extend_from_slice(&packet[20..]);
    p
}

#[test]
fn the_ports_after_ipv4_options_are_the_ones_that_count() {
    if !require_root("the_ports_after_ipv4_options_are_the_ones_that_count") {
        return;
    }
    for c in cases().into_iter().filter(|c| c.pod.is_ipv4()) {
        let (mut gw, _cl) = gateway_and_cluster(&c);
        gw.add_endpoint(EndpointKey::new(tenant_mark(1), c.pod, 8080, 6), TUNNEL)
            .unwrap();
        // Options that look like ports 41000 → 8080, the real ones 41000 → 9999:
        // not the endpoint (an IPv4 header with 20 bytes of options is as
        // long as an IPv6 header; its ports are still after the options).
        let other_port = common::ip_packet(c.proxy, 41000, c.pod, 9999, 6, 0);
        let disguised = common::frame(&with_misleading_options(&other_port, 41000, 8080));
        assert_eq!(
            egress_marked(&gw, &disguised, tenant_mark(1)).0,
            TC_ACT_SHOT,
            "{}",
            c.name
        );
        assert_eq!(gw.counter(Counter::DropNoEndpoint).unwrap().packets, 1);
        // The real ports 41000 → 8080 behind unrelated options: the endpoint.
        let endpoint = common::ip_packet(c.proxy, 41000, c.pod, 8080, 6, 0);
        let with_options = common::frame(&with_misleading_options(&endpoint, 1, 1));
        assert_eq!(
            egress_marked(&gw, &with_options, tenant_mark(1)).0,
            TC_ACT_OK,
            "{}",
            c.name
        );
        assert_eq!(gw.counter(Counter::Encapsulated).unwrap().packets, 1);
    }
}
