//! Standalone mode: the engine on one machine — a source, the pure plan,
//! and a list of sinks, all local.
//!
//! - Source: the resources file ([`ResourcesFile`], re-read whole on every
//!   reconcile).
//! - Engine: [`epic_engine::plan::plan`] from the resources and the
//!   records of `state.json`.
//! - Sinks ([`crate::sinks`], applied in order to one [`Round`]): the
//!   gateway eBPF data path and hello verifier on the uplink, the xDS
//!   cache, public addresses on a local interface, a child Envoy per proxy,
//!   routes for BGP (optional), and status and records in the state
//!   directory.
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

use std::net::SocketAddr;

use epic_engine::plan::plan;
use epic_engine::runtime::{Sinks, Source};
use epic_xds::{AdsServer, KnownGateways, SnapshotCache};

use crate::addresses::LocalAddresses;
pub use crate::config::{StandaloneConfig, StandaloneError};
use crate::envoy::find_envoy;
pub use crate::keys::{node_key_file, tunnel_key};
pub use crate::resources::ResourcesFile;
use crate::resources::is_empty;
pub use crate::round::{ReconcileReport, Round};
use crate::sinks::{AddressSink, DataPathSink, ProxySink, RouteSink, StatusSink, XdsSink};
pub use crate::sinks::{GatewayStatusEntry, StatusFile};
use crate::state::load_state;
pub use crate::state::{NodeState, lock_state_dir};

/// Standalone mode, running: its source, its sinks, its records.
pub struct Standalone {
    source: ResourcesFile,
    sinks: Sinks<Round, StandaloneError>,
    state: NodeState,
    /// Held while this process runs: see [`lock_state_dir`].
    _lock: std::fs::File,
    cache: SnapshotCache,
    xds_address: SocketAddr,
    xds_stop: Option<tokio::sync::oneshot::Sender<()>>,
    xds_task: Option<XdsTask>,
}

impl std::fmt::Debug for Standalone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standalone")
            .field("resources", self.source.path())
            .field("sinks", &self.sinks)
            .field("xds_address", &self.xds_address)
            .finish_non_exhaustive()
    }
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

/// The sinks of `config`, in the order a round applies them.
fn sinks(
    config: &StandaloneConfig,
    data_path: DataPathSink,
    xds: XdsSink,
    proxies: ProxySink,
) -> Result<Sinks<Round, StandaloneError>, StandaloneError> {
    let addresses = LocalAddresses::connect(&config.public_interface)?;
    let mut sinks = Sinks::new()
        .with(data_path)
        .with(xds)
        .with(AddressSink::new(addresses, config.state_dir.clone()))
        .with(proxies);
    if config.announce {
        let target = epic_route::RouteTarget::Interface(config.public_interface.clone());
        let routes = epic_route::RouteProgrammer::connect(epic_route::RouteConfig::new(target))?;
        sinks = sinks.with(RouteSink::new(routes));
    }
    Ok(sinks.with(StatusSink::new(config.state_dir.clone())))
}

impl Standalone {
    /// Loads and attaches the gateway programs on the uplink, opens the
    /// hello socket, starts the ADS server and reads the recorded state.
    /// Must run inside a tokio runtime; needs root.
    pub async fn start(config: StandaloneConfig) -> Result<Standalone, StandaloneError> {
        std::fs::create_dir_all(&config.state_dir).map_err(crate::config::file_error(
            "state directory",
            &config.state_dir,
        ))?;
        let lock = lock_state_dir(&config.state_dir)?;
        let state = load_state(&config.state_dir)?;
        let envoy_binary = match &config.envoy {
            Some(path) => path.clone(),
            None => find_envoy().map_err(|source| StandaloneError::Envoy {
                node: "(any)".into(),
                source,
            })?,
        };
        let data_path = DataPathSink::start(&config)?;
        let (cache, known) = (SnapshotCache::new(), KnownGateways::new());
        let authority = crate::xds_identity::authority(&config.state_dir)?;
        let server = AdsServer::new(cache.clone(), known.clone())
            .with_tls(crate::xds_identity::server_tls(&authority)?);
        let (xds_address, xds_stop, xds_task) = serve_xds(server, config.xds).await?;
        let proxies = ProxySink::new(
            envoy_binary,
            xds_address,
            authority,
            config.state_dir.clone(),
        );
        let xds = XdsSink::new(cache.clone(), known);
        Ok(Standalone {
            source: ResourcesFile::new(&config),
            sinks: sinks(&config, data_path, xds, proxies)?,
            state,
            _lock: lock,
            cache,
            xds_address,
            xds_stop: Some(xds_stop),
            xds_task: Some(xds_task),
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

    /// Reads the resources file, plans, and applies the plan to every sink
    /// in order, stopping at the first that fails (the next reconcile
    /// starts from what is true). An unreadable or invalid file changes
    /// nothing, and neither does a file without any object while gateways
    /// hold addresses ([`StandaloneError::EmptyResources`]).
    ///
    /// An endpoint reaches the proxies only once its tunnel is verified:
    /// plan again when [`Standalone::tunnel_changes`] is signalled.
    pub async fn reconcile(&mut self) -> Result<ReconcileReport, StandaloneError> {
        let mut inputs = self.source.read()?;
        inputs.verified_tunnels = self.data_path().map(DataPathSink::verified);
        let held = self.state.recorded.allocations.len();
        if held > 0 && is_empty(&inputs) {
            return Err(StandaloneError::EmptyResources {
                path: self.source.path().clone(),
                gateways: held,
            });
        }
        let plan = plan(&inputs, &self.state.recorded);
        let mut round = Round::new(plan, std::mem::take(&mut self.state));
        let applied = self.sinks.apply(&mut round).await;
        self.state = round.state;
        applied.map(|()| round.report)
    }

    /// Restarts every proxy whose Envoy has exited; returns each one with
    /// why it had stopped.
    pub async fn heal(&mut self) -> Vec<(String, crate::envoy::EnvoyError)> {
        match self.sinks.get_mut::<ProxySink>() {
            Some(proxies) => proxies.heal().await,
            None => Vec::new(),
        }
    }

    /// The running proxies (Envoy node id) and their process ids.
    pub fn proxies(&self) -> Vec<(String, Option<u32>)> {
        self.sinks
            .get::<ProxySink>()
            .map(ProxySink::proxies)
            .unwrap_or_default()
    }

    /// Signalled (a stored permit if no one waits) whenever a tunnel is
    /// verified or expires: what it carries changed, so the endpoints the
    /// proxies get do. [`Standalone::reconcile`] then.
    pub fn tunnel_changes(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.data_path()
            .map(DataPathSink::verification_changes)
            .unwrap_or_default()
    }

    /// Hello statistics so far.
    pub fn hello_stats(&self) -> epic_bpf::agent::HelloStats {
        self.data_path()
            .map(DataPathSink::hello_stats)
            .unwrap_or_default()
    }

    /// The data path's counters.
    pub fn counters(
        &self,
    ) -> Result<Vec<(epic_gue::maps::Counter, epic_bpf::CounterValue)>, StandaloneError> {
        self.data_path()
            .ok_or(StandaloneError::HelloTask("is not running"))?
            .counters()
    }

    fn data_path(&self) -> Option<&DataPathSink> {
        self.sinks.get::<DataPathSink>()
    }

    /// Stops the proxies, the ADS server and the hello thread, and detaches
    /// the programs. Public addresses, routes and state stay, so a restart
    /// adopts them.
    pub async fn shutdown(mut self) {
        if let Some(proxies) = self.sinks.get_mut::<ProxySink>() {
            proxies.stop_all().await;
        }
        if let Some(stop) = self.xds_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.xds_task.take() {
            let _ = task.await;
        }
        if let Some(data_path) = self.sinks.get_mut::<DataPathSink>() {
            data_path.stop();
        }
    }
}
