//! `LocalEnvoy` with a real Envoy, fed by a real `epic_xds::AdsServer`.
//! Needs Envoy (`cargo xtask setup` installs it); not root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use envoy_types::util::pack_any;
use epic_standalone::envoy::{EnvoyConfig, EnvoyError, LocalEnvoy, find_envoy};
use epic_xds::identity::{ProxyTlsFiles, XdsAuthority};
use epic_xds::pb::envoy::config::cluster::v3::Cluster;
use epic_xds::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use epic_xds::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use epic_xds::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use epic_xds::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use epic_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use epic_xds::pb::google::protobuf::Duration as PbDuration;
use epic_xds::{AdsServer, KnownGateways, ServerTls, Snapshot, SnapshotCache};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NODE: &str = "t1/web/proxy-0";

fn envoy_binary() -> PathBuf {
    find_envoy().unwrap_or_else(|e| {
        panic!("these tests need a real Envoy ({e}); check with `python3 -c \"import envoy\"`")
    })
}

/// A fresh work directory, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(tag: &str) -> WorkDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "epic-local-envoy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep what explains the failure.
            eprintln!("envoy work directory kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port().into())),
            ..Default::default()
        })),
    }
}

/// A TCP proxy listener on `listen` to a STATIC cluster with `backend`.
fn tcp_proxy_snapshot(listen: SocketAddr, backend: SocketAddr) -> Snapshot {
    let cluster = Cluster {
        name: "echo".into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "echo".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(backend)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let proxy = TcpProxy {
        stat_prefix: "echo".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("echo".into())),
        ..Default::default()
    };
    let listener = Listener {
        name: "echo".into(),
        address: Some(socket(listen)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Snapshot::builder()
        .cluster(&cluster)
        .listener(&listener)
        .build()
        .unwrap()
}

/// A TCP echo server on 127.0.0.1.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An ADS server on 127.0.0.1:0 admitting gateway t1/web.
struct Ads {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Ads {
    /// With mutual TLS under `authority`, if given.
    async fn start_with(cache: SnapshotCache, authority: Option<&XdsAuthority>) -> Ads {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateways = KnownGateways::new();
        gateways.insert("t1", "web");
        let mut server = AdsServer::new(cache, gateways);
        if let Some(ca) = authority {
            server = server.with_tls(ServerTls {
                ca_pem: ca.cert_pem(),
                server: ca.issue_server().unwrap(),
            });
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Ads {
            addr,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Ads {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Sends `payload` through `addr` and reads it back; `None` if the
/// connection fails or the echo does not come back in 2 s.
async fn echo_through(addr: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(payload).await.ok()?;
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).await.ok()?;
        Some(back)
    })
    .await
    .ok()
    .flatten()
}

fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Gone, or dead and waiting to be reaped.
fn process_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Writes the identity of `identity` under `ca` into `dir` for Envoy.
fn proxy_identity(ca: &XdsAuthority, identity: &str, dir: &Path) -> ProxyTlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let issued = ca.issue_proxy(identity).unwrap();
    let files = ProxyTlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("proxy.crt"),
        key: dir.join("proxy.key"),
    };
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    std::fs::write(&files.cert, &issued.cert_pem).unwrap();
    std::fs::write(&files.key, &issued.key_pem).unwrap();
    files
}

async fn proxies_tcp_through_envoy(delta: bool, mutual_tls: bool) {
    let (backend, _echo) = echo_server().await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, tcp_proxy_snapshot(listen, backend));
    let ca = XdsAuthority::generate().unwrap();
    let ads = Ads::start_with(cache, mutual_tls.then_some(&ca)).await;

    let work = WorkDir::new(if delta { "delta" } else { "sotw" });
    let mut config = EnvoyConfig::new(envoy_binary(), NODE, ads.addr, &work.0);
    config.delta = delta;
    if mutual_tls {
        config.tls = Some(proxy_identity(&ca, NODE, &work.0.join("tls")));
    }
    let mut envoy = LocalEnvoy::start(config).await.unwrap();
    assert_ne!(envoy.admin().port(), 0, "the bound admin port is known");
    let pid = envoy.pid().expect("a running process has a pid");
    if let Err(e) = envoy.wait_ready(Duration::from_secs(30)).await {
        panic!("{e}");
    }
    let (status, body) = envoy.admin_get("/ready").await.unwrap();
    assert_eq!((status, body.trim()), (200, "LIVE"));
    let (status, dump) = envoy.admin_get("/config_dump").await.unwrap();
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(dump["configs"].is_array());

    // Ready means the listener is configured; binding it may lag a little.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let payload = format!("hello through envoy, delta={delta}\n");
    loop {
        if let Some(back) = echo_through(listen, payload.as_bytes()).await {
            assert_eq!(back, payload.as_bytes());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no echo through {listen} within 15 s; envoy log:\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    envoy.stop().await.unwrap();
    assert!(process_gone(pid), "envoy {pid} still exists after stop()");
    assert!(
        echo_through(listen, b"x").await.is_none(),
        "the listener went with Envoy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_envoy_proxies_tcp_and_stops() {
    proxies_tcp_through_envoy(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_proxies_tcp_and_stops() {
    proxies_tcp_through_envoy(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_mutual_tls_proxies_tcp_sotw_and_delta() {
    proxies_tcp_through_envoy(false, true).await;
    proxies_tcp_through_envoy(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_without_its_own_identity_gets_nothing() {
    let (backend, _echo) = echo_server().await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, tcp_proxy_snapshot(listen, backend));
    let ca = XdsAuthority::generate().unwrap();
    let ads = Ads::start_with(cache.clone(), Some(&ca)).await;
    let stranger = XdsAuthority::generate().unwrap();
    let work = WorkDir::new("identity");
    // Another proxy's identity; the right name from another authority;
    // no identity at all (plaintext).
    for (what, tls) in [
        (
            "another proxy's identity",
            Some(proxy_identity(&ca, "t1/web/proxy-1", &work.0.join("a"))),
        ),
        (
            "another authority",
            Some(proxy_identity(&stranger, NODE, &work.0.join("b"))),
        ),
        ("plaintext", None),
    ] {
        let mut config = EnvoyConfig::new(
            envoy_binary(),
            NODE,
            ads.addr,
            work.0.join(what.replace(' ', "-")),
        );
        config.tls = tls;
        let mut envoy = LocalEnvoy::start(config).await.unwrap();
        let waited = envoy.wait_ready(Duration::from_secs(4)).await;
        assert!(
            matches!(waited, Err(EnvoyError::NotReady { .. })),
            "{what}: {waited:?}"
        );
        assert!(
            echo_through(listen, b"x").await.is_none(),
            "{what}: a listener"
        );
        // Envoy has been retrying for seconds: no stream of it is open.
        let status = cache.status();
        let node = status.nodes.iter().find(|n| n.node == NODE);
        assert!(
            node.is_none_or(|n| n.streams.is_empty()),
            "{what}: a stream was admitted: {node:?}"
        );
        envoy.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_missing_binary_is_a_spawn_error() {
    let work = WorkDir::new("missing");
    let config = EnvoyConfig::new(
        "/nonexistent/epic/envoy",
        NODE,
        "127.0.0.1:1".parse().unwrap(),
        &work.0,
    );
    let err = LocalEnvoy::start(config).await.unwrap_err();
    match &err {
        EnvoyError::Spawn { binary, source } => {
            assert_eq!(binary, Path::new("/nonexistent/epic/envoy"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    assert!(err.to_string().contains("/nonexistent/epic/envoy"), "{err}");
}

#[tokio::test]
async fn an_envoy_that_cannot_bind_its_admin_address_exits_with_its_log() {
    let work = WorkDir::new("bad-admin");
    let mut config = EnvoyConfig::new(
        envoy_binary(),
        NODE,
        "127.0.0.1:1".parse().unwrap(),
        &work.0,
    );
    // A loopback port another socket holds: Envoy cannot bind it and gives up.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.admin = taken.local_addr().unwrap();
    let err = match LocalEnvoy::start(config).await {
        Ok(mut envoy) => envoy.wait_ready(Duration::from_secs(20)).await.unwrap_err(),
        Err(e) => e,
    };
    match &err {
        EnvoyError::Exited {
            status, log_tail, ..
        } => {
            assert!(!status.success(), "{status}");
            assert!(!log_tail.trim().is_empty(), "the log tail explains why");
            assert!(log_tail.lines().count() <= 20, "{log_tail}");
        }
        other => panic!("expected Exited, got {other}"),
    }
    eprintln!("{err}");
}

#[tokio::test]
async fn dropping_kills_envoy_and_no_control_plane_means_not_ready() {
    let work = WorkDir::new("drop");
    // Nothing listens on the ADS address: Envoy runs but gets no config.
    let nowhere: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = EnvoyConfig::new(envoy_binary(), NODE, nowhere, &work.0);
    let mut envoy = LocalEnvoy::start(config).await.unwrap();
    let pid = envoy.pid().unwrap();
    let err = envoy
        .wait_ready(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, EnvoyError::NotReady { .. }), "{err}");
    let (status, _) = envoy.admin_get("/ready").await.unwrap();
    assert_eq!(status, 503, "pre-initializing until the first config");
    assert!(!process_dead(pid));

    drop(envoy);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !process_dead(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "envoy {pid} still runs 5 s after drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
