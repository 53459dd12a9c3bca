//! What standalone mode is told about its machine, and how it fails.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use epic_gue::hello::VerifierConfig;

#[cfg(doc)]
use crate::envoy::find_envoy;

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

pub(crate) fn file_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> StandaloneError {
    let path = path.to_owned();
    move |source| StandaloneError::File { what, path, source }
}
