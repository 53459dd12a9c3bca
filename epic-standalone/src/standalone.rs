//! Standalone mode: the engine on one machine, from a YAML file of
//! resources, with every sink local — the xDS server and a child Envoy per
//! proxy, public addresses on a local interface, the gateway eBPF programs
//! and hello verifier on the uplink, routes for BGP (optional), and status
//! and recorded state in a directory.
//!
//! ```no_run
//! use epic_standalone::standalone::{Standalone, StandaloneConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = StandaloneConfig::new(
//!     "/etc/epic/resources.yaml",
//!     "/var/lib/epic",
//!     "gw-1",
//!     "198.51.100.1".parse()?,
//!     "eth0",
//! );
//! let mut epic = Standalone::start(config).await?;
//! let report = epic.reconcile().await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! # The state directory
//!
//! | path | holds |
//! | --- | --- |
//! | `state.json` | recorded allocations and tunnel ids (and the secret new tunnel ids are derived under), the addresses this node put on the public interface (written atomically after every reconcile: a restart keeps every address and tunnel id) |
//! | `status.json` | every gateway's status and the problems of the last reconcile |
//! | `hello-counters.json` | each tunnel's last accepted hello counter, written (atomically) within 5 s of a change and read at start: a restart refuses every hello accepted before it was written, so only hellos of those last seconds could be replayed |
//! | `keys/<tenant>/<cluster>.key` | cluster keys (hex, mode 0600, refused when looser), generated on first use; tenant and cluster must be DNS-1123 labels; they never leave the gateway |
//! | `keys/<tenant>/<cluster>/<node>.key` | each cluster node's hello key, derived from the cluster key (`HelloKey::node_key`), 0600: the only key that node's `epic agent` gets, so no node can sign as another |
//! | `lock` | held (`flock`) by the one process that uses the directory: a second `epic run` on it is refused |
//! | `envoy/<tenant>-<gateway>-<proxy>/` | each Envoy's bootstrap and log |
//!
//! A resources file that does not parse is reported and changes nothing:
//! the last good configuration keeps serving. So does a file without any
//! object while gateways hold addresses (an editor's truncate-then-write
//! caught in between): deleting every gateway takes a file that still
//! names the Tenants and AddressPools.

use epic_engine::tunnel_ids::TunnelIdSecret;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hellos::{HelloCounters, HelloTask, Op};
use epic_bpf::agent::GatewayHelloAgent;
use epic_bpf::{DataPath, Program};
use epic_gue::hello::{HelloKey, HelloVerifier, TunnelConfig, VerifierConfig};
use epic_gue::maps::{EndpointKey, TunnelValue};
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId};
use epic_xds::{AdsServer, KnownGateways, SnapshotCache};
use serde::{Deserialize, Serialize};

use crate::addresses::LocalAddresses;
use crate::envoy::{EnvoyConfig, LocalEnvoy, find_envoy};
use crate::files::{check_private, read_private, write_atomically, write_private};
use epic_engine::plan::GatewayPlan;
use epic_engine::plan::{
    DesiredInputs, EndpointPlan, GatewayNode, Plan, Problem, Recorded, TunnelPlan, plan,
};
use epic_model::source::parse_resources;

/// What standalone mode needs to know about its machine.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// The resources file.
    pub resources: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// This gateway node's name.
    pub node_name: String,
    /// This node's tunnel address (on the uplink; hellos are sent to it).
    pub tunnel_address: IpAddr,
    /// The uplink, where the gateway eBPF programs attach.
    pub uplink: String,
    /// The interface that holds public addresses (default `lo`).
    pub public_interface: String,
    /// Where the ADS server listens (default `127.0.0.1:18000`).
    pub xds: SocketAddr,
    /// The Envoy binary (default: [`find_envoy`]).
    pub envoy: Option<PathBuf>,
    /// Program the announced routes (`epic-route`, table 4242) for BIRD.
    pub announce: bool,
    /// Hello timing (expiry of learned NAT mappings).
    pub hellos: VerifierConfig,
    /// Networks of the platform no tenant endpoint may use (the uplink's
    /// network, BGP peers, management); the tunnel address and the ADS
    /// address are always added ([`epic_engine::admission`]).
    pub platform_networks: Vec<ipnet::IpNet>,
    /// How long a released address is held back before another tenant
    /// may get it ([`epic_engine::grace`]; recorded in `state.json`).
    pub address_grace: Duration,
}

impl StandaloneConfig {
    /// A configuration with the defaults for the rest.
    pub fn new(
        resources: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        node_name: impl Into<String>,
        tunnel_address: IpAddr,
        uplink: impl Into<String>,
    ) -> Self {
        StandaloneConfig {
            resources: resources.into(),
            state_dir: state_dir.into(),
            node_name: node_name.into(),
            tunnel_address,
            uplink: uplink.into(),
            public_interface: "lo".into(),
            xds: SocketAddr::from(([127, 0, 0, 1], 18000)),
            envoy: None,
            announce: false,
            hellos: VerifierConfig::default(),
            platform_networks: Vec::new(),
            address_grace: Duration::from_secs(300),
        }
    }
}

/// Why standalone mode could not start or reconcile.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    File {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A name that becomes part of a path is not a DNS-1123 label.
    #[error(
        "{what} {name:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63): it names a key file"
    )]
    InvalidName {
        /// What the name is (`tenant`, `cluster`).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An xDS identity could not be made or read.
    #[error("xDS identity: {0}")]
    XdsIdentity(#[from] epic_xds::identity::IdentityError),
    /// A key file others may read or write.
    #[error("{path}: mode {mode:o} lets others read or write the key; it must be 600 (chmod 600)")]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another `epic run` holds the state directory.
    #[error(
        "{path}: another process holds this state directory (stop it, or use another --state-dir)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The kernel's random source failed (a new tunnel id secret).
    #[error("random source: {0}")]
    Random(getrandom::Error),
    /// A state or key file is corrupt.
    #[error("{path}: {message}")]
    Corrupt {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The resources file is invalid (nothing was changed).
    #[error("{path}: {source}")]
    Resources {
        /// The file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: Box<epic_model::source::SourceError>,
    },
    /// The resources file holds no object while gateways are served: most
    /// likely a file caught mid-write, so nothing was changed.
    #[error(
        "{path}: no objects in the file while {gateways} gateway(s) hold addresses; refusing to delete them all (keep the Tenants and AddressPools in the file and remove the Gateways to delete them)"
    )]
    EmptyResources {
        /// The file.
        path: PathBuf,
        /// How many gateways hold addresses.
        gateways: usize,
    },
    /// The data path failed.
    #[error("data path: {0}")]
    DataPath(#[from] epic_bpf::Error),
    /// The hello socket could not be opened.
    #[error("hello socket {address}: {source}")]
    HelloSocket {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The ADS server could not listen.
    #[error("xDS server on {address}: {source}")]
    Xds {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Envoy failed.
    #[error("proxy {node}: {source}")]
    Envoy {
        /// The proxy's node id.
        node: String,
        /// The problem.
        #[source]
        source: crate::envoy::EnvoyError,
    },
    /// The public addresses could not be set.
    #[error("public addresses: {0}")]
    Addresses(#[from] crate::addresses::AddressError),
    /// The routes could not be programmed.
    #[error("routes: {0}")]
    Routes(#[from] epic_route::Error),
    /// The verifier's tunnel table is full.
    #[error("hello verifier: {0}")]
    Verifier(String),
    /// The task that owns the data path and the verifier stopped, or did
    /// not answer in time.
    #[error("the hello task {0}")]
    HelloTask(&'static str),
}

/// What this node keeps between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeState {
    /// The engine's recorded state.
    #[serde(default)]
    pub recorded: Recorded,
    /// Addresses this node put on the public interface.
    #[serde(default)]
    pub addresses: BTreeSet<IpAddr>,
}

/// One gateway in `status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatusEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: epic_model::GatewayStatus,
}

/// The content of `status.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    /// Every gateway.
    pub gateways: Vec<GatewayStatusEntry>,
    /// Problems not tied to a gateway.
    pub problems: Vec<String>,
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Gateways programmed / in total.
    pub programmed: usize,
    /// Gateways in total.
    pub gateways: usize,
    /// Proxies started.
    pub proxies_started: Vec<String>,
    /// Proxies stopped.
    pub proxies_stopped: Vec<String>,
    /// Proxies ready (serving) after the reconcile.
    pub proxies_ready: usize,
    /// Tunnels added / removed.
    pub tunnels: (usize, usize),
    /// Endpoints added / removed.
    pub endpoints: (usize, usize),
    /// Public addresses added / removed.
    pub addresses: (Vec<IpAddr>, Vec<IpAddr>),
    /// Problems.
    pub problems: Vec<String>,
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} gateways programmed; proxies +{:?} -{:?}, {} ready; tunnels +{} -{}; endpoints +{} -{}; addresses +{:?} -{:?}",
            self.programmed,
            self.gateways,
            self.proxies_started,
            self.proxies_stopped,
            self.proxies_ready,
            self.tunnels.0,
            self.tunnels.1,
            self.endpoints.0,
            self.endpoints.1,
            self.addresses.0,
            self.addresses.1
        )?;
        for p in &self.problems {
            write!(f, "; problem: {p}")?;
        }
        Ok(())
    }
}

/// Standalone mode, running.
pub struct Standalone {
    config: StandaloneConfig,
    envoy_binary: PathBuf,
    cache: SnapshotCache,
    known: KnownGateways,
    /// The data path and the hello verifier, owned by their task.
    hellos: HelloTask,
    xds_stop: Option<tokio::sync::oneshot::Sender<()>>,
    xds_task: Option<tokio::task::JoinHandle<Result<(), epic_xds::ServerError>>>,
    xds_address: SocketAddr,
    /// Issues each proxy its xDS identity (the ADS server requires one).
    authority: epic_xds::identity::XdsAuthority,
    envoys: BTreeMap<String, LocalEnvoy>,
    addresses: LocalAddresses,
    routes: Option<epic_route::RouteProgrammer>,
    state: NodeState,
    /// Held while this process runs: see [`lock_state_dir`].
    _lock: std::fs::File,
    tunnels: BTreeMap<u32, TunnelPlan>,
    endpoints: BTreeSet<EndpointPlan>,
    published: epic_engine::publish::Published,
    /// Hello counters persisted by the last run, restored into the
    /// verifier as its tunnels are added.
    saved_counters: BTreeMap<u32, u64>,
}

/// Reads `hello-counters.json` (none yet: empty; corrupt: an error, as a
/// restart without them would reopen replays).
fn load_counters(path: &Path) -> Result<BTreeMap<u32, u64>, StandaloneError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<HelloCounters>(&bytes)
            .map(|c| c.tunnels)
            .map_err(|e| StandaloneError::Corrupt {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(file_error("hello counters", path)(e)),
    }
}

impl fmt::Debug for Standalone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Standalone")
            .field("node", &self.config.node_name)
            .field("xds", &self.xds_address)
            .field("proxies", &self.envoys.keys().collect::<Vec<_>>())
            .field("tunnels", &self.tunnels.len())
            .finish()
    }
}

pub(crate) fn file_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> StandaloneError {
    let path = path.to_owned();
    move |source| StandaloneError::File { what, path, source }
}

/// Whether `inputs` holds no object at all.
fn is_empty(inputs: &DesiredInputs) -> bool {
    inputs.tenants.is_empty()
        && inputs.pools.is_empty()
        && inputs.templates.is_empty()
        && inputs.gateways.is_empty()
        && inputs.routes.is_empty()
        && inputs.backend_sets.is_empty()
}

/// Locks `state_dir` for this process (an exclusive lock on its `lock`
/// file, released when the returned file is dropped or the process ends):
/// two `epic run` on one state directory would undo each other's work.
pub fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, StandaloneError> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(file_error("state directory lock", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StandaloneError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(file_error("state directory lock", &path)(e)),
    }
}

/// The tunnel key of a tenant's cluster, stored in the state directory.
///
/// Created on first use from the kernel's random source (mode 0600);
/// afterwards read back, refused if others may read or write it. The
/// cluster agent of that cluster needs the same key. `tenant` and
/// `cluster` become path components: both must be DNS-1123 labels.
pub fn tunnel_key(
    state_dir: &Path,
    tenant: &str,
    cluster: &str,
) -> Result<HelloKey, StandaloneError> {
    for (what, name) in [("tenant", tenant), ("cluster", cluster)] {
        if !epic_engine::mirror::is_dns1123_label(name) {
            return Err(StandaloneError::InvalidName {
                what,
                name: name.to_owned(),
            });
        }
    }
    let dir = state_dir.join("keys").join(tenant);
    let path = dir.join(format!("{cluster}.key"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            check_private("tunnel key", &path)?;
            HelloKey::from_hex(text.trim()).ok_or_else(|| StandaloneError::Corrupt {
                path: path.clone(),
                message: "expected 64 hex digits (a 32-byte key)".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            let mut random = std::fs::File::open("/dev/urandom")
                .map_err(file_error("random source", Path::new("/dev/urandom")))?;
            std::io::Read::read_exact(&mut random, &mut bytes)
                .map_err(file_error("random source", Path::new("/dev/urandom")))?;
            let key = HelloKey::new(bytes);
            write_private(
                "tunnel key",
                &path,
                format!("{}\n", key.to_hex()).as_bytes(),
            )?;
            Ok(key)
        }
        Err(e) => Err(StandaloneError::File {
            what: "tunnel key",
            path,
            source: e,
        }),
    }
}

/// Writes the hello key of cluster node `node` — derived from the cluster
/// key ([`HelloKey::node_key`]), the only key that node's agent needs — to
/// `keys/<tenant>/<cluster>/<node>.key` (0600) unless it holds it already;
/// returns its path. `node` becomes a path component: it must be a
/// DNS-1123 subdomain, as Kubernetes node names are.
pub fn node_key_file(
    state_dir: &Path,
    tenant: &str,
    cluster: &str,
    node: &str,
    cluster_key: &HelloKey,
) -> Result<PathBuf, StandaloneError> {
    if !epic_engine::mirror::is_dns1123_subdomain(node) {
        return Err(StandaloneError::InvalidName {
            what: "node",
            name: node.to_owned(),
        });
    }
    let path = state_dir
        .join("keys")
        .join(tenant)
        .join(cluster)
        .join(format!("{node}.key"));
    let hex = format!("{}\n", cluster_key.node_key(node).to_hex());
    if read_private("node key", &path)?.as_deref() != Some(hex.as_str()) {
        write_private("node key", &path, hex.as_bytes())?;
    }
    Ok(path)
}

/// The node's state file (none yet: empty), with a tunnel-id secret: new
/// tunnel ids are derived under one kept with the records (a state file
/// from before it gets one now).
fn load_state(state_dir: &Path) -> Result<NodeState, StandaloneError> {
    let state_path = state_dir.join("state.json");
    let mut state: NodeState = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StandaloneError::Corrupt {
            path: state_path.clone(),
            message: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeState::default(),
        Err(e) => return Err(file_error("state file", &state_path)(e)),
    };
    if state.recorded.tunnel_id_secret.is_none() {
        let secret = TunnelIdSecret::random().map_err(StandaloneError::Random)?;
        state.recorded.tunnel_id_secret = Some(secret);
    }
    Ok(state)
}

/// Loads and attaches the gateway programs on the uplink, binds the hello
/// socket and starts the hello task; the counters persisted by the last
/// run come back to be restored as tunnels are added.
fn start_hellos(
    config: &StandaloneConfig,
) -> Result<(HelloTask, BTreeMap<u32, u64>), StandaloneError> {
    let mut datapath = DataPath::load()?;
    datapath.attach(Program::GatewayEgress, &config.uplink)?;
    datapath.attach(Program::GatewayIngress, &config.uplink)?;
    let address = SocketAddr::new(config.tunnel_address, GUE_PORT);
    let socket_error = |source| StandaloneError::HelloSocket { address, source };
    let socket = UdpSocket::bind(address).map_err(socket_error)?;
    let counters_path = config.state_dir.join("hello-counters.json");
    let saved_counters = load_counters(&counters_path)?;
    let verifier = HelloVerifier::with_capacity(16384, config.hellos);
    let agent = GatewayHelloAgent::new(socket, verifier);
    let hellos = HelloTask::spawn(datapath, agent, counters_path).map_err(socket_error)?;
    Ok((hellos, saved_counters))
}

/// The ADS server's task, serving on `address` until its stop is sent.
type XdsTask = tokio::task::JoinHandle<Result<(), epic_xds::ServerError>>;

/// Serves `server` on `address`: the bound address, the stop, the task.
async fn serve_xds(
    server: AdsServer,
    address: SocketAddr,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>, XdsTask), StandaloneError> {
    let xds_error = |source| StandaloneError::Xds { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(xds_error)?;
    let bound = listener.local_addr().map_err(xds_error)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok((bound, stop, task))
}

impl Standalone {
    /// Loads and attaches the gateway programs on the uplink, opens the
    /// hello socket, starts the ADS server and reads the recorded state.
    /// Must run inside a tokio runtime; needs root.
    pub async fn start(config: StandaloneConfig) -> Result<Standalone, StandaloneError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(file_error("state directory", &config.state_dir))?;
        let lock = lock_state_dir(&config.state_dir)?;
        let state = load_state(&config.state_dir)?;
        let envoy_binary = match &config.envoy {
            Some(path) => path.clone(),
            None => find_envoy().map_err(|source| StandaloneError::Envoy {
                node: "(any)".into(),
                source,
            })?,
        };
        let (hellos, saved_counters) = start_hellos(&config)?;
        let cache = SnapshotCache::new();
        let known = KnownGateways::new();
        let authority = crate::xds_identity::authority(&config.state_dir)?;
        let server = AdsServer::new(cache.clone(), known.clone())
            .with_tls(crate::xds_identity::server_tls(&authority)?);
        let (xds_address, xds_stop, xds_task) = serve_xds(server, config.xds).await?;
        let addresses = LocalAddresses::connect(&config.public_interface)?;
        let routes = if config.announce {
            Some(epic_route::RouteProgrammer::connect(
                epic_route::RouteConfig::new(epic_route::RouteTarget::Interface(
                    config.public_interface.clone(),
                )),
            )?)
        } else {
            None
        };
        Ok(Standalone {
            config,
            envoy_binary,
            cache,
            known,
            hellos,
            xds_stop: Some(xds_stop),
            xds_task: Some(xds_task),
            xds_address,
            authority,
            envoys: BTreeMap::new(),
            addresses,
            routes,
            state,
            _lock: lock,
            tunnels: BTreeMap::new(),
            endpoints: BTreeSet::new(),
            published: epic_engine::publish::Published::default(),
            saved_counters,
        })
    }

    /// The address the ADS server listens on.
    pub fn xds_address(&self) -> SocketAddr {
        self.xds_address
    }

    /// The snapshot cache (what the proxies are served).
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// The recorded state.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// Reads the resources file, plans, and applies the plan to every sink.
    /// An unreadable or invalid file changes nothing, and neither does a file
    /// without any object while gateways hold addresses
    /// ([`StandaloneError::EmptyResources`]).
    pub async fn reconcile(&mut self) -> Result<ReconcileReport, StandaloneError> {
        let path = &self.config.resources;
        let text = std::fs::read_to_string(path).map_err(file_error("resources file", path))?;
        let mut inputs = parse_resources(&text).map_err(|source| StandaloneError::Resources {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let held = self.state.recorded.allocations.len();
        if held > 0 && is_empty(&inputs) {
            return Err(StandaloneError::EmptyResources {
                path: path.clone(),
                gateways: held,
            });
        }
        inputs.gateway_nodes = vec![GatewayNode {
            name: self.config.node_name.clone(),
            address: self.config.tunnel_address,
        }];
        inputs.now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        inputs.address_grace = self.config.address_grace.as_secs();
        inputs.platform_networks = self.config.platform_networks.clone();
        inputs.platform_networks.push(self.config.xds.ip().into());
        let plan = plan(&inputs, &self.state.recorded);
        self.apply(&plan).await
    }

    async fn apply(&mut self, plan: &Plan) -> Result<ReconcileReport, StandaloneError> {
        let mut report = ReconcileReport {
            gateways: plan.gateways.len(),
            programmed: plan.gateways.iter().filter(|g| g.programmed()).count(),
            problems: plan
                .problems
                .iter()
                .map(|Problem { object, message }| format!("{object}: {message}"))
                .collect(),
            ..Default::default()
        };
        // 1. Data path: tunnels (with their keys) before endpoints.
        self.apply_data_path(plan, &mut report)?;
        // 2. xDS: snapshots of accepted gateways; a rejected configuration
        // keeps the last good one; gone gateways are refused.
        self.published =
            epic_engine::publish::publish(plan, &self.cache, &self.known, &self.published);
        // 3. Public addresses, before the proxies that bind them.
        self.apply_addresses(plan, &mut report).await?;
        // 4. Proxies.
        let ready = self.apply_proxies(plan, &mut report).await?;
        // 5. Routes for BGP: announced once the proxies are ready.
        self.apply_routes(plan, &ready).await?;
        // 6. Status and recorded state.
        self.write_status(plan, &report)?;
        Ok(report)
    }

    /// Whether gateway `g` is served (published to the ADS server).
    fn served(&self, g: &GatewayPlan) -> bool {
        self.published
            .gateways
            .contains(&(g.tenant.clone(), g.name.clone()))
    }

    /// The served gateways' addresses on the public interface. Owned: what
    /// this node added. What it may add is recorded before it is added, so
    /// a crash part-way cannot leak an address; an address that was on the
    /// interface before is never owned, never removed.
    async fn apply_addresses(
        &mut self,
        plan: &Plan,
        report: &mut ReconcileReport,
    ) -> Result<(), StandaloneError> {
        let public: BTreeSet<IpAddr> = plan
            .gateways
            .iter()
            .filter(|g| self.served(g))
            .flat_map(|g| g.status.addresses.iter().copied())
            .collect();
        let owned = self.state.addresses.clone();
        let present = self.addresses.list().await?;
        self.state.addresses = owned
            .iter()
            .copied()
            .chain(public.difference(&present).copied())
            .collect();
        self.save_state()?;
        let changes = self.addresses.sync(&public, &owned).await?;
        report.addresses = (changes.added.clone(), changes.removed.clone());
        self.state.addresses = owned
            .intersection(&public)
            .copied()
            .chain(changes.added.iter().copied())
            .collect();
        self.save_state()
    }

    /// Stops the proxies no gateway has, starts the new ones, restarts the
    /// exited ones; returns those that are ready.
    async fn apply_proxies(
        &mut self,
        plan: &Plan,
        report: &mut ReconcileReport,
    ) -> Result<BTreeSet<String>, StandaloneError> {
        let proxies = self.published.proxies.clone();
        let gone: Vec<String> = self
            .envoys
            .keys()
            .filter(|p| !proxies.contains(*p))
            .cloned()
            .collect();
        for proxy in gone {
            if let Some(envoy) = self.envoys.remove(&proxy) {
                let _ = envoy.stop().await;
            }
            report.proxies_stopped.push(proxy);
        }
        // Each proxy marks its upstream sockets with its tenant's scope.
        let scopes: BTreeMap<&str, u32> = plan
            .gateways
            .iter()
            .flat_map(|g| g.status.proxies.iter().map(|p| (p.as_str(), g.tenant_id)))
            .collect();
        let new: Vec<&String> = proxies
            .iter()
            .filter(|p| !self.envoys.contains_key(*p))
            .collect();
        for proxy in new {
            let mark = scopes.get(proxy.as_str()).copied();
            // One proxy that does not start is that gateway's problem, not
            // every gateway's: it is reported and tried again next time.
            match self.start_proxy(proxy, mark).await {
                Ok(envoy) => {
                    self.envoys.insert(proxy.clone(), envoy);
                    report.proxies_started.push(proxy.clone());
                }
                Err(e) => report.problems.push(format!("proxy {proxy}: {e}")),
            }
        }
        for (proxy, error) in self.heal().await {
            report
                .problems
                .push(format!("proxy {proxy} restarted: {error}"));
        }
        let mut ready = BTreeSet::new();
        for (proxy, envoy) in &mut self.envoys {
            match envoy.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => {
                    ready.insert(proxy.clone());
                }
                Err(e) => report.problems.push(format!("proxy {proxy}: {e}")),
            }
        }
        report.proxies_ready = ready.len();
        Ok(ready)
    }

    /// Starts the Envoy of `proxy` (node id), its upstream sockets marked
    /// with `mark`, with its own xDS identity; the error says why not.
    async fn start_proxy(&self, proxy: &str, mark: Option<u32>) -> Result<LocalEnvoy, String> {
        let dir = self
            .config
            .state_dir
            .join("envoy")
            .join(proxy.replace('/', "-"));
        std::fs::create_dir_all(&dir)
            .map_err(file_error("envoy directory", &dir))
            .map_err(|e| e.to_string())?;
        let cluster = proxy.rsplit_once('/').map_or(proxy, |(g, _)| g);
        let mut config = EnvoyConfig::new(self.envoy_binary.clone(), proxy, self.xds_address, &dir);
        config.node_cluster = cluster.to_owned();
        config.upstream_mark = mark;
        let files = crate::xds_identity::proxy_files(&self.authority, proxy, &dir);
        config.tls = Some(files.map_err(|e| e.to_string())?);
        LocalEnvoy::start(config).await.map_err(|e| e.to_string())
    }

    /// Announces the served gateways whose proxies are all `ready`.
    async fn apply_routes(
        &self,
        plan: &Plan,
        ready: &BTreeSet<String>,
    ) -> Result<(), StandaloneError> {
        let Some(routes) = &self.routes else {
            return Ok(());
        };
        let desired: epic_route::DesiredRoutes = plan
            .gateways
            .iter()
            .filter(|g| self.served(g) && g.status.proxies.iter().all(|p| ready.contains(p)))
            .flat_map(|g| g.announcements.iter())
            .map(|a| epic_route::Announcement {
                address: a.address,
                aggregation: a.prefix_len,
                proxy_ready: true,
            })
            .collect();
        routes.sync(&desired).await?;
        Ok(())
    }

    /// Writes `status.json` and records the plan's state.
    fn write_status(
        &mut self,
        plan: &Plan,
        report: &ReconcileReport,
    ) -> Result<(), StandaloneError> {
        let status = StatusFile {
            gateways: plan
                .gateways
                .iter()
                .map(|g| GatewayStatusEntry {
                    namespace: g.namespace.clone(),
                    name: g.name.clone(),
                    status: g.status.clone(),
                })
                .collect(),
            problems: report.problems.clone(),
        };
        let status_path = self.config.state_dir.join("status.json");
        let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
        write_atomically("status file", &status_path, &json)?;
        self.state.recorded = plan.recorded.clone();
        self.save_state()
    }

    /// Restarts every proxy whose Envoy has exited; returns each one with
    /// why it had stopped. A proxy that cannot be restarted is dropped from
    /// the running set, so the next call (or reconcile) tries again.
    pub async fn heal(&mut self) -> Vec<(String, crate::envoy::EnvoyError)> {
        let mut healed = Vec::new();
        let proxies: Vec<String> = self.envoys.keys().cloned().collect();
        for proxy in proxies {
            let Some(envoy) = self.envoys.get_mut(&proxy) else {
                continue;
            };
            let Err(error) = envoy.check_running() else {
                continue;
            };
            let config = envoy.config().clone();
            self.envoys.remove(&proxy);
            tracing::warn!("proxy {proxy}: {error}; restarting it");
            match LocalEnvoy::start(config).await {
                Ok(envoy) => {
                    self.envoys.insert(proxy.clone(), envoy);
                }
                Err(e) => tracing::error!("proxy {proxy}: restart failed: {e}"),
            }
            healed.push((proxy, error));
        }
        healed
    }

    /// The running proxies (Envoy node id) and their process ids.
    pub fn proxies(&self) -> Vec<(String, Option<u32>)> {
        self.envoys
            .iter()
            .map(|(proxy, envoy)| (proxy.clone(), envoy.pid()))
            .collect()
    }

    fn save_state(&self) -> Result<(), StandaloneError> {
        let path = self.config.state_dir.join("state.json");
        let json = serde_json::to_vec_pretty(&self.state).unwrap_or_default();
        write_atomically("state file", &path, &json)
    }

    /// This node's part of `plan` in the data path and the verifier,
    /// applied by the hello task. What it applied is recorded op by op, so
    /// a failure part-way leaves `self.tunnels`/`self.endpoints` equal to
    /// the maps and the next reconcile finishes the job.
    fn apply_data_path(
        &mut self,
        plan: &Plan,
        report: &mut ReconcileReport,
    ) -> Result<(), StandaloneError> {
        let node = self.config.node_name.clone();
        let wanted: BTreeMap<u32, TunnelPlan> =
            plan.tunnels_on(&node).map(|t| (t.id, t.clone())).collect();
        let wanted_endpoints: BTreeSet<EndpointPlan> = plan
            .endpoints
            .get(&node)
            .map(|e| e.iter().copied().collect())
            .unwrap_or_default();
        let mut changes = self.endpoint_removals(&wanted_endpoints);
        changes.extend(self.tunnel_changes(&wanted, report)?);
        changes.extend(wanted_endpoints.difference(&self.endpoints).map(|e| {
            (
                Op::AddEndpoint(endpoint_key(e), TunnelId(e.tunnel)),
                Done::AddedEndpoint(*e),
            )
        }));
        let (ops, done): (Vec<Op>, Vec<Done>) = changes.into_iter().unzip();
        let applied = self.hellos.apply(ops);
        for change in done.into_iter().take(applied.done) {
            self.record(change, report);
        }
        applied.error.map_or(Ok(()), Err)
    }

    /// The endpoints in the data path that `wanted` no longer has.
    fn endpoint_removals(&self, wanted: &BTreeSet<EndpointPlan>) -> Vec<(Op, Done)> {
        self.endpoints
            .difference(wanted)
            .map(|e| {
                (
                    Op::RemoveEndpoint(endpoint_key(e)),
                    Done::RemovedEndpoint(*e),
                )
            })
            .collect()
    }

    /// Tunnels gone or changed (other ends, other tenant) are removed; a
    /// changed one is added again. Every wanted tunnel gives the verifier
    /// its node's key (a bad node name is that node's problem: its tunnel
    /// verifies nothing), and its counter from before a restart.
    fn tunnel_changes(
        &self,
        wanted: &BTreeMap<u32, TunnelPlan>,
        report: &mut ReconcileReport,
    ) -> Result<Vec<(Op, Done)>, StandaloneError> {
        let mut changes: Vec<(Op, Done)> = self
            .tunnels
            .iter()
            .filter(|(id, old)| {
                wanted
                    .get(*id)
                    .is_none_or(|t| t.key != old.key || t.tenant_id != old.tenant_id)
            })
            .map(|(id, _)| (Op::RemoveTunnel(TunnelId(*id)), Done::RemovedTunnel(*id)))
            .collect();
        let removed: BTreeSet<u32> = changes
            .iter()
            .filter_map(|(_, d)| match d {
                Done::RemovedTunnel(id) => Some(*id),
                _ => None,
            })
            .collect();
        let mut keys = BTreeMap::new();
        for (id, t) in wanted {
            let cluster = (t.key.tenant.clone(), t.key.cluster.clone());
            let cluster_key = match keys.entry(cluster) {
                std::collections::btree_map::Entry::Occupied(k) => k.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let (tenant, cluster) = slot.key();
                    let key = tunnel_key(&self.config.state_dir, tenant, cluster)?;
                    slot.insert(key)
                }
            };
            if let Err(e) = node_key_file(
                &self.config.state_dir,
                &t.key.tenant,
                &t.key.cluster,
                &t.key.node,
                cluster_key,
            ) {
                report.problems.push(format!("tunnel {id}: {e}"));
                continue;
            }
            let new = !self.tunnels.contains_key(id) || removed.contains(id);
            let op = Op::SetTunnel {
                config: TunnelConfig::new(
                    TunnelId(*id),
                    cluster_key.node_key(&t.key.node),
                    TenantId(t.tenant_id),
                    NodeId::from_name(&t.key.node),
                ),
                counter: self.saved_counters.get(id).copied(),
                pending: new.then(|| {
                    TunnelValue::pending(
                        TenantId(t.tenant_id),
                        self.config.tunnel_address,
                        GUE_PORT,
                    )
                }),
            };
            changes.push((op, Done::SetTunnel(*id, new.then(|| t.clone()))));
        }
        Ok(changes)
    }

    /// Records one change the hello task applied.
    fn record(&mut self, change: Done, report: &mut ReconcileReport) {
        match change {
            Done::RemovedEndpoint(e) => {
                self.endpoints.remove(&e);
                report.endpoints.1 += 1;
            }
            Done::RemovedTunnel(id) => {
                self.tunnels.remove(&id);
                report.tunnels.1 += 1;
            }
            Done::SetTunnel(id, added) => {
                self.saved_counters.remove(&id);
                if let Some(t) = added {
                    self.tunnels.insert(id, t);
                    report.tunnels.0 += 1;
                }
            }
            Done::AddedEndpoint(e) => {
                self.endpoints.insert(e);
                report.endpoints.0 += 1;
            }
        }
    }

    /// Hello statistics so far.
    pub fn hello_stats(&self) -> epic_bpf::agent::HelloStats {
        self.hellos.stats()
    }

    /// The data path's counters.
    pub fn counters(
        &self,
    ) -> Result<Vec<(epic_gue::maps::Counter, epic_bpf::CounterValue)>, StandaloneError> {
        self.hellos.counters()
    }

    /// Stops the proxies, the ADS server and the hello thread, and detaches
    /// the programs. Public addresses, routes and state stay, so a restart
    /// adopts them.
    pub async fn shutdown(mut self) {
        for (_, envoy) in std::mem::take(&mut self.envoys) {
            let _ = envoy.stop().await;
        }
        if let Some(stop) = self.xds_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.xds_task.take() {
            let _ = task.await;
        }
        self.stop_hellos();
    }

    fn stop_hellos(&mut self) {
        self.hellos.stop();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.stop_hellos();
    }
}

/// A data-path change the hello task applied, for the books.
enum Done {
    RemovedEndpoint(EndpointPlan),
    RemovedTunnel(u32),
    /// The verifier has the tunnel; with its plan if it was added to the map.
    SetTunnel(u32, Option<TunnelPlan>),
    AddedEndpoint(EndpointPlan),
}

/// The data-path key of an endpoint.
fn endpoint_key(e: &EndpointPlan) -> EndpointKey {
    EndpointKey::new(e.scope, e.address, e.port, e.protocol)
}
