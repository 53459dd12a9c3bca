//! Shared harness for the real-Envoy tests: resources, loopback backends, an
//! Envoy child process with its own ports and directory, and bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use epic_xds::pb;
use epic_xds::{AdsServer, CacheOptions, KnownGateways, Snapshot, SnapshotCache};
use pb::envoy::config::cluster::v3::Cluster;
use pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The node id every test proxy uses.
pub const NODE: &str = "tenant-a/web/proxy-0";

pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A config source pointing at ADS.
pub fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn loopback(port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

pub fn assignment(name: &str, ports: &[u16]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: ports
                .iter()
                .map(|p| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(loopback(*p)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            // gRPC clients ignore localities without a weight.
            // gRPC also requires a locality.
            load_balancing_weight: Some(pb::google::protobuf::UInt32Value { value: 1 }),
            locality: Some(pb::envoy::config::core::v3::Locality::default()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn tcp_listener(name: &str, cluster: &str, stat_prefix: &str) -> Listener {
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(loopback(0)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&proxy))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn http_listener(name: &str, route_config: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config.into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(loopback(0)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn route_to(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The test gateway: a TCP proxy to `tcp_port` and an HTTP route to `http_port`.
pub fn gateway(tcp_port: u16, http_port: u16) -> epic_xds::SnapshotBuilder {
    Snapshot::builder()
        .cluster(&eds_cluster("tcp"))
        .endpoints(&assignment("tcp", &[tcp_port]))
        .cluster(&eds_cluster("http"))
        .endpoints(&assignment("http", &[http_port]))
        .listener(&tcp_listener("tcp", "tcp", "tcp"))
        .listener(&http_listener("http", "http_routes"))
        .route(&route_to("http_routes", "http"))
}

/// A TCP backend: greets each connection with `name\n`, then echoes lines.
pub async fn tcp_backend(name: &'static str) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, task)
}

/// An HTTP/1.1 backend answering every request with body `name`.
pub async fn http_backend(name: &'static str) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{name}",
                                name.len()
                            );
                            if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (port, task)
}

/// GET `path` on 127.0.0.1:`port`; returns (status code, body). Bounded by 5 s.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Some((
            code,
            if chunked {
                dechunk(body)?
            } else {
                body.to_string()
            },
        ))
    })
    .await
    .ok()
    .flatten()
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// Connects through Envoy to a TCP backend and returns the greeting and the open stream.
pub async fn tcp_hello(port: u16) -> Option<(String, BufReader<TcpStream>)> {
    tokio::time::timeout(Duration::from_secs(3), async {
        let s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.ok()?;
        (!line.is_empty()).then(|| (line.trim().to_string(), r))
    })
    .await
    .ok()
    .flatten()
}

/// Polls `f` every 100 ms until it yields `Some`, at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running ADS server on an ephemeral loopback port.
pub struct XdsServer {
    pub port: u16,
    pub cache: SnapshotCache,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl XdsServer {
    pub async fn start(cache: SnapshotCache, port: u16) -> XdsServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gateways = KnownGateways::new();
        gateways.insert("tenant-a", "web");
        let (stop, rx) = oneshot::channel();
        let server = AdsServer::new(cache.clone(), gateways);
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        XdsServer {
            port,
            cache,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn with_options(options: CacheOptions) -> SnapshotCache {
        SnapshotCache::with_options(options)
    }

    /// Graceful shutdown; bounded by 10 s.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("graceful shutdown within 10s")
            .unwrap();
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "epic-xds-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Envoy binary: `$EPIC_ENVOY`, else `envoy` on PATH.
pub fn envoy_bin() -> String {
    std::env::var("EPIC_ENVOY").unwrap_or_else(|_| "envoy".into())
}

/// A real Envoy child process, killed on drop.
pub struct Envoy {
    child: Child,
    pub admin_port: u16,
    pub dir: TempDir,
}

impl Envoy {
    /// Starts Envoy with ADS at 127.0.0.1:`xds_port` (`delta` selects DELTA_GRPC).
    pub async fn start(xds_port: u16, node: &str, delta: bool) -> Envoy {
        let dir = TempDir::new("envoy");
        let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
        let bootstrap = format!(
            r#"node: {{ id: "{node}", cluster: epic-test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
    - envoy_grpc:
        cluster_name: xds
        retry_policy:
          retry_back_off: {{ base_interval: 0.1s, max_interval: 0.5s }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {xds_port} }} }} }}
"#
        );
        let cfg = dir.0.join("bootstrap.yaml");
        std::fs::write(&cfg, bootstrap).unwrap();
        let admin_file = dir.0.join("admin.txt");
        let log = std::fs::File::create(dir.0.join("envoy.log")).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("envoy binary (set EPIC_ENVOY or put envoy on PATH)");
        let mut envoy = Envoy {
            child,
            admin_port: 0,
            dir,
        };
        let admin = wait_for("envoy admin address", 20, || {
            let s = std::fs::read_to_string(&admin_file).ok();
            async move { s.and_then(|s| s.trim().rsplit(':').next()?.parse::<u16>().ok()) }
        })
        .await;
        envoy.admin_port = admin;
        envoy
    }

    /// GET on the admin port; the body if 200.
    pub async fn admin(&self, path: &str) -> Option<String> {
        match http_get(self.admin_port, path).await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// The JSON config dump.
    pub async fn config_dump(&self) -> serde_json::Value {
        let body = self
            .admin("/config_dump?include_eds")
            .await
            .expect("config_dump");
        serde_json::from_str(&body).unwrap()
    }

    /// The bound port of a listener, once it is active.
    pub async fn listener_port(&self, name: &str) -> u16 {
        wait_for(&format!("listener {name}"), 30, || async {
            let body = self.admin("/listeners?format=json").await?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["listener_statuses"].as_array()?.iter().find_map(|l| {
                (l["name"] == name)
                    .then(|| l["local_address"]["socket_address"]["port_value"].as_u64())
                    .flatten()
                    .filter(|p| *p != 0)
                    .map(|p| p as u16)
            })
        })
        .await
    }

    /// A counter or gauge from `/stats`.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let body = self.admin(&format!("/stats?filter=^{name}$")).await?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- envoy log tail ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
