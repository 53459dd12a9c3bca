//! A small custom gateway built from the EPIC-RS crates, without Kubernetes
//! and without the standalone runtime: the steps an integrator composes.
//!
//! 1. **Resources** (`epic_model::source::parse_resources`): the desired
//!    state as the CRD types — here from [`RESOURCES`], a YAML file; an
//!    integrator may build `DesiredInputs` from anything.
//! 2. **Plan** (`epic_engine::plan::plan`): the pure engine — addresses from
//!    the pool, the Envoy configuration rendered from the `http` template,
//!    tunnels, data-path endpoints and status. [`plan_resources`] refuses a
//!    plan whose gateway is not programmed, with the condition's message.
//! 3. **Serve** ([`ControlPlane`]): `epic_engine::publish::publish` puts each
//!    proxy's snapshot in an `epic_xds::SnapshotCache` and admits its
//!    gateway; an `epic_xds::AdsServer` serves it (plaintext on loopback
//!    here; `AdsServer::with_tls` for mutual TLS).
//! 4. **Proxy**: any Envoy pointed at the ADS server with node id
//!    [`PROXY`]; `epic_standalone::envoy` starts one as a child process.
//!
//! What this example leaves out is what the reference binaries add: public
//! addresses on an interface, BGP announcements, the eBPF tunnel to the
//! pods, hellos (`epic run` does all of it).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use epic_example_custom_gateway::{ControlPlane, PROXY, RESOURCES, plan_resources};
//!
//! let plan = plan_resources(RESOURCES)?;
//! let control = ControlPlane::start(&plan).await?;
//! println!("Envoy node {PROXY}: ADS at {}", control.address());
//! control.stop().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};

use epic_engine::plan::{Plan, Recorded};
use epic_engine::publish::{Published, publish};
use epic_model::conditions::ConditionType;
use epic_xds::{AdsServer, KnownGateways, SnapshotCache};

/// The example's resources: tenant `shop`, an HTTP gateway `web` on port
/// 8080, a route to the two pods of service `storefront`.
pub const RESOURCES: &str = include_str!("../resources.yaml");

/// The Envoy node id of the gateway's one proxy.
pub const PROXY: &str = "shop/web/proxy-0";

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// The resources do not parse.
    #[error("resources: {0}")]
    Resources(#[from] epic_model::source::SourceError),
    /// A gateway was planned without a configuration.
    #[error("gateway {gateway} is not programmed: {why}")]
    NotProgrammed {
        /// `namespace/name`.
        gateway: String,
        /// The `Accepted` or `Programmed` condition's message.
        why: String,
    },
    /// The ADS server's socket.
    #[error("ADS server: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses `yaml` and plans it from nothing recorded; every gateway must be
/// programmed.
pub fn plan_resources(yaml: &str) -> Result<Plan, ExampleError> {
    let inputs = epic_model::source::parse_resources(yaml)?;
    let plan = epic_engine::plan::plan(&inputs, &Recorded::default());
    for g in &plan.gateways {
        if !g.programmed() {
            let why = [ConditionType::Accepted, ConditionType::Programmed]
                .into_iter()
                .filter_map(|t| g.condition(t))
                .find(|c| !c.is_true())
                .map_or_else(String::new, |c| c.message.clone());
            return Err(ExampleError::NotProgrammed {
                gateway: format!("{}/{}", g.namespace, g.name),
                why,
            });
        }
    }
    Ok(plan)
}

/// An ADS server on loopback serving a plan's gateways to their proxies.
pub struct ControlPlane {
    cache: SnapshotCache,
    known: KnownGateways,
    published: Published,
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), epic_xds::ServerError>>,
}

impl ControlPlane {
    /// Publishes `plan` and serves it on 127.0.0.1 (a free port).
    pub async fn start(plan: &Plan) -> Result<ControlPlane, ExampleError> {
        let cache = SnapshotCache::new();
        let known = KnownGateways::new();
        let published = publish(plan, &cache, &known, &Published::default());
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = AdsServer::new(cache.clone(), known.clone());
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(ControlPlane {
            cache,
            known,
            published,
            address,
            stop,
            task,
        })
    }

    /// Publishes a new plan: changed snapshots go to the proxies, gateways
    /// no longer planned are refused.
    pub fn update(&mut self, plan: &Plan) {
        self.published = publish(plan, &self.cache, &self.known, &self.published);
    }

    /// Where the ADS server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The snapshot cache: revisions and their ACK/NACK state per proxy.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// Stops the server (closing every stream) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
