//! The isolation matrix (root): two tenants on one gateway node, with
//! overlapping pod addresses, served by standalone mode with its real parts
//! (the gateway eBPF programs on a veth uplink, real Envoys, the ADS server
//! with per-proxy identities, the hello verifier). Each tenant's node gets
//! its tunnel verified with its own key; then tenant A's node and proxy try
//! everything that is not theirs, and every attempt must fail and be
//! counted where it was refused. The table is printed at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use epic_gue::hello::clock::{MonotonicClock, wall_clock_nanos};
use epic_gue::hello::{HelloKey, HelloSender, SenderConfig};
use epic_gue::maps::Counter;
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId};
use epic_standalone::standalone::{Standalone, StandaloneConfig, StatusFile};
use epic_test_support::{Netns, require_root};
use epic_xds::identity::SERVER_NAME;
use epic_xds::pb::envoy::config::core::v3::Node;
use epic_xds::pb::envoy::service::discovery::v3::DiscoveryRequest;
use epic_xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

mod standalone_common;
use standalone_common::{answer_challenge, until};

const GATEWAY: &str = "198.51.100.1";
const NODE_A: &str = "198.51.100.11";
const NODE_B: &str = "198.51.100.12";
/// Both tenants' pod: the same address and port (overlapping pod networks).
const POD: &str = "198.18.7.7";
/// A BGP peer of the platform on the uplink network.
const BGP_PEER: &str = "198.51.100.254";

fn resources() -> String {
    let mut text = String::from(
        r#"
apiVersion: epic-gateway.org/v1alpha1
kind: AddressPool
metadata: {name: public}
spec: {addresses: [203.0.113.8/29]}
"#,
    );
    for (tenant, id, node, address, port) in [
        ("acme", 5, "a1", NODE_A, 5432),
        ("globex", 6, "b1", NODE_B, 5433),
    ] {
        text += &format!(
            r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec: {{namespace: {tenant}, id: {id}, clusterNetworks: [198.18.7.0/24, 198.51.100.0/24]}}
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {{name: db, namespace: {tenant}}}
spec:
  cluster: c1
  namespace: default
  service: db
  ports: [{{port: 5432, endpoints: [{{address: {POD}, port: 5432, node: {node}}}]}}]
  nodes: [{{name: {node}, address: {address}}}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: db, namespace: {tenant}}}
spec:
  template: tcp
  listeners: [{{name: pg, port: {port}, protocol: TCP, backends: [{{namespace: default, name: db, port: 5432}}]}}]
"#
        );
    }
    // Tenant A's endpoints pointed at the platform and at what is not A's:
    // the gateway node, loopback (the ADS server), a BGP peer, an address
    // of the pool (B's public address), and outside A's cluster networks.
    text += &format!(
        r#"
---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {{name: probe, namespace: acme}}
spec:
  cluster: c1
  namespace: default
  service: probe
  ports: [{{port: 80, endpoints: [{PROBES}]}}]
  nodes: [{{name: a1, address: {NODE_A}}}]
---
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: probe, namespace: acme}}
spec:
  template: tcp
  listeners: [{{name: p, port: 5440, protocol: TCP, backends: [{{namespace: default, name: probe, port: 80}}]}}]
"#
    );
    text
}

/// Tenant A's probe endpoints (all on its node `a1`).
const PROBES: &str = "{address: 198.51.100.1, port: 53, node: a1}, \
    {address: 127.0.0.1, port: 18000, node: a1}, \
    {address: 198.51.100.254, port: 179, node: a1}, \
    {address: 203.0.113.9, port: 5433, node: a1}, \
    {address: 192.0.2.50, port: 80, node: a1}";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One gateway's tunnel id and public address, from `status.json`.
fn gateway_status(dir: &Path, tenant: &str) -> (TunnelId, IpAddr) {
    let status: StatusFile =
        serde_json::from_slice(&std::fs::read(dir.join("status.json")).unwrap()).unwrap();
    let g = status
        .gateways
        .iter()
        .find(|g| g.namespace == tenant)
        .unwrap();
    (TunnelId(g.status.tunnels[0].id), g.status.addresses[0])
}

fn read_key(path: PathBuf) -> HelloKey {
    HelloKey::from_hex(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

/// An IPv4 UDP packet (checksums filled in) from `src` to `dst`.
fn ipv4_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    let total = 20 + 8 + payload.len();
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&s.octets());
    p.extend_from_slice(&d.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The UDP payload of a GUE data packet of `tunnel` carrying `inner` (IPv4).
fn gue_data(tunnel: TunnelId, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0x01, 4, 0x80, 0x00];
    p.extend_from_slice(&tunnel.0.to_be_bytes());
    p.extend_from_slice(inner);
    p
}

/// One row of the matrix.
struct Row {
    attempt: &'static str,
    tries: u64,
    refused: u64,
    by: String,
}

/// What a stream asking as `node` with `identity` (PEM certificate and key
/// files) gets from the ADS server at `ads`: `Ok` if it was served.
async fn ask_xds(
    ads: SocketAddr,
    ca: &str,
    identity: Option<(&Path, &Path)>,
    node: &str,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(SERVER_NAME);
    if let Some((cert, key)) = identity {
        let (cert, key) = (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap());
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{ads}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let first = DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    let requests =
        tokio_stream::StreamExt::chain(tokio_stream::iter([first]), tokio_stream::pending());
    let call = tokio::time::timeout(
        Duration::from_secs(10),
        client.stream_aggregated_resources(requests),
    )
    .await
    .map_err(|_| "no answer".to_owned())?;
    let mut inbound = call
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err("stream ended".into()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("no response".into()),
    }
}

#[test]
fn no_tenant_reaches_what_is_not_its_own() {
    if !require_root("no_tenant_reaches_what_is_not_its_own") {
        return;
    }
    let gw = Netns::new("iso-gw").unwrap();
    let nodes = Netns::new("iso-nodes").unwrap();
    gw.add_veth("up0", &nodes, "up1").unwrap();
    gw.add_address("up0", &format!("{GATEWAY}/24")).unwrap();
    nodes.add_address("up1", &format!("{NODE_A}/24")).unwrap();
    nodes.add_address("up1", &format!("{NODE_B}/24")).unwrap();
    let (sock_a, sock_b) = nodes
        .run_in(|| {
            (
                UdpSocket::bind((ip(NODE_A), GUE_PORT)).unwrap(),
                UdpSocket::bind((ip(NODE_B), GUE_PORT)).unwrap(),
            )
        })
        .unwrap();
    let dir = std::env::temp_dir().join(format!("epic-isolation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("resources.yaml");
    std::fs::write(&file, resources()).unwrap();
    let dir2 = dir.clone();
    let rows = gw.run_in(move || {
        let dir = dir2;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut config = StandaloneConfig::new(&file, &dir, "gw-1", ip(GATEWAY), "up0");
            config.xds = "127.0.0.1:0".parse().unwrap();
            config.platform_networks = vec![format!("{BGP_PEER}/32").parse().unwrap()];
            let mut epic = Standalone::start(config).await.unwrap();
            let report = epic.reconcile().await.unwrap();
            // Both tenants' pods have one address and port: each gets its
            // own data-path endpoint (scoped by the tenant's socket mark);
            // none of A's probes gets one.
            assert_eq!(report.endpoints, (2, 0), "{report}");
            let probes = report
                .problems
                .iter()
                .filter(|p| p.starts_with("BackendSet acme/probe"))
                .count() as u64;
            let mut rows = vec![Row {
                attempt: "A's endpoints → gateway node, ADS, BGP peer, pool, outside A's networks",
                tries: 5,
                refused: probes,
                by: "endpoint admission: EndpointsAdmitted=False, not rendered".into(),
            }];
            rows.extend(matrix(&mut epic, &dir, &sock_a, &sock_b).await);
            epic.shutdown().await;
            rows
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    let rows = rows.unwrap();
    println!("| attempt | tries | refused | refused by |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r.attempt, r.tries, r.refused, r.by);
    }
    for r in &rows {
        assert_eq!(
            r.refused, r.tries,
            "{}: refused {} of {}",
            r.attempt, r.refused, r.tries
        );
    }
}

/// Verifies both tunnels, then runs every attempt of tenant A (acme).
async fn matrix(epic: &mut Standalone, dir: &Path, a: &UdpSocket, b: &UdpSocket) -> Vec<Row> {
    let (tunnel_a, public_a) = gateway_status(dir, "acme");
    let (tunnel_b, public_b) = gateway_status(dir, "globex");
    let gateway = SocketAddr::new(ip(GATEWAY), GUE_PORT);
    let clock = MonotonicClock::new();
    let key_a = read_key(dir.join("keys/acme/c1/a1.key"));
    let key_b = read_key(dir.join("keys/globex/c1/b1.key"));
    // Both nodes' tunnels verified, each by its own node key.
    let mut senders = Vec::new();
    for (socket, tunnel, key, tenant, node) in [
        (a, tunnel_a, key_a.clone(), 5, "a1"),
        (b, tunnel_b, key_b, 6, "b1"),
    ] {
        let config = SenderConfig::new(tunnel, key, TenantId(tenant), NodeId::from_name(node));
        let mut sender = HelloSender::new(&config, clock.now(), wall_clock_nanos());
        socket
            .send_to(sender.hello_now(clock.now()).as_bytes(), gateway)
            .unwrap();
        answer_challenge(socket, &mut sender);
        senders.push(sender);
    }
    until("both tunnels verified", || epic.hello_stats().learned == 2).await;

    let mut rows = Vec::new();
    let counter = |epic: &Standalone, c: Counter| {
        epic.counters()
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, v)| v.packets)
    };
    // Forged GUE data through A's own verified tunnel (outer source A's
    // node, the verified remote): the inner packet is not a reply to a
    // flow A's proxy opened.
    let pod = SocketAddr::new(ip(POD), 5432);
    let forged: [(&'static str, SocketAddr, SocketAddr); 6] = [
        (
            "A's node → B's public address (as B's pod)",
            pod,
            SocketAddr::new(public_b, 5433),
        ),
        (
            "A's node → A's public address, spoofed source",
            SocketAddr::new(ip("198.18.7.99"), 5432),
            SocketAddr::new(public_a, 5432),
        ),
        (
            "A's node → the gateway node's uplink address",
            pod,
            SocketAddr::new(ip(GATEWAY), 53),
        ),
        (
            "A's node → the ADS server (loopback)",
            pod,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), epic.xds_address().port()),
        ),
        (
            "A's node → a BGP peer",
            pod,
            SocketAddr::new(ip(BGP_PEER), 179),
        ),
        ("A's node → B's pod (overlapping address)", pod, pod),
    ];
    for (attempt, src, dst) in forged {
        let before = counter(epic, Counter::DropInnerNotAllowed);
        let packet = gue_data(tunnel_a, &ipv4_udp(src, dst, b"forged"));
        for _ in 0..5 {
            a.send_to(&packet, gateway).unwrap();
        }
        let done = || counter(epic, Counter::DropInnerNotAllowed) >= before + 5;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rows.push(Row {
            attempt,
            tries: 5,
            refused: counter(epic, Counter::DropInnerNotAllowed) - before,
            by: "gateway ingress: drop_inner_not_allowed".into(),
        });
    }
    // GUE data on B's tunnel id from A's node: not B's verified remote.
    let before = counter(epic, Counter::DropWrongSource);
    let packet = gue_data(
        tunnel_b,
        &ipv4_udp(pod, SocketAddr::new(public_b, 5433), b"x"),
    );
    for _ in 0..5 {
        a.send_to(&packet, gateway).unwrap();
    }
    until("wrong-source drops", || {
        counter(epic, Counter::DropWrongSource) >= before + 5
    })
    .await;
    rows.push(Row {
        attempt: "A's node → data on B's tunnel",
        tries: 5,
        refused: counter(epic, Counter::DropWrongSource) - before,
        by: "gateway ingress: drop_wrong_source".into(),
    });
    // A hello for B's tunnel, claiming B's node, signed with A's node key.
    let bad_mac = epic.hello_stats().bad_mac;
    let config = SenderConfig::new(tunnel_b, key_a, TenantId(6), NodeId::from_name("b1"));
    let mut forger = HelloSender::new(&config, clock.now(), wall_clock_nanos());
    a.send_to(forger.hello_now(clock.now()).as_bytes(), gateway)
        .unwrap();
    until("the forged hello is refused", || {
        epic.hello_stats().bad_mac > bad_mac
    })
    .await;
    rows.push(Row {
        attempt: "A's node → hello taking over B's tunnel",
        tries: 1,
        refused: epic.hello_stats().bad_mac - bad_mac,
        by: "hello verifier: bad MAC (per-node keys)".into(),
    });
    // B's own fresh hello, captured on path and sent first from A's node:
    // the gateway challenges A's address, which cannot answer for B.
    // First let B's tunnel's budget for other sources refill (4 a second:
    // B's own learning and A's forgery spent three), so that what A sends
    // reaches the verifier rather than the eBPF rate limit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = epic.hello_stats();
    let captured = senders[1].hello_now(clock.now());
    a.send_to(captured.as_bytes(), gateway).unwrap();
    let mut challenge = [0u8; 100];
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (len, _) = a.recv_from(&mut challenge).unwrap();
    // A sends it back as a response (its MAC cannot be redone without
    // B's key); B's node then sends its own copy of the hello.
    challenge[1] = epic_gue::wire::CTYPE_RESPONSE;
    a.send_to(&challenge[..len], gateway).unwrap();
    b.send_to(captured.as_bytes(), gateway).unwrap();
    until(
        "the relabelled challenge and the late copy are refused",
        || {
            let now = epic.hello_stats();
            now.bad_mac > stats.bad_mac && now.replayed > stats.replayed
        },
    )
    .await;
    let now = epic.hello_stats();
    rows.push(Row {
        attempt: "A's node → B's tunnel by replaying B's fresh hello from A",
        tries: 1,
        refused: u64::from(now.challenged == stats.challenged + 1 && now.learned == stats.learned),
        by: "hello verifier: challenge to A's address, unanswerable".into(),
    });
    assert_eq!(epic.hello_stats().rebound, 0, "no tunnel moved");

    // A's proxy identity asking for B's configuration; no identity at all.
    let ads = epic.xds_address();
    let ca = std::fs::read_to_string(dir.join("xds/ca.crt")).unwrap();
    let a_dir = dir.join("envoy/acme-db-proxy-0");
    let (cert, key) = (a_dir.join("xds.crt"), a_dir.join("xds.key"));
    assert_eq!(
        ask_xds(ads, &ca, Some((&cert, &key)), "acme/db/proxy-0").await,
        Ok(())
    );
    for (attempt, identity) in [
        (
            "A's proxy → B's xDS configuration",
            Some((cert.as_path(), key.as_path())),
        ),
        ("anyone without an identity → B's xDS configuration", None),
    ] {
        let refused = ask_xds(ads, &ca, identity, "globex/db/proxy-0")
            .await
            .is_err();
        rows.push(Row {
            attempt,
            tries: 1,
            refused: u64::from(refused),
            by: "ADS server: mutual TLS, identity = node id".into(),
        });
    }
    // B's keys are not A's to read: every key file is private.
    use std::os::unix::fs::PermissionsExt;
    let keys = ["keys/globex/c1.key", "keys/globex/c1/b1.key", "xds/ca.key"];
    let private = keys
        .iter()
        .filter(|k| std::fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o077 == 0)
        .count();
    rows.push(Row {
        attempt: "B's cluster, node and xDS keys readable by others",
        tries: keys.len() as u64,
        refused: private as u64,
        by: "key files 0600".into(),
    });
    rows
}
