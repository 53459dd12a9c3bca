//! The gateway controller: a source, the pure plan, and a list of sinks,
//! run once per debounced burst of changes while this replica leads.
//!
//! - Source: [`PlatformSource`] (reflector stores; `platform.rs`).
//! - Engine: [`plan_incremental`], then [`publish`] to the xDS cache (a
//!   standby replica does only this, so proxies that reach it are served).
//! - Sinks, in order, on one [`PlatformRound`]: [`TunnelKeySink`] (each
//!   cluster with a tunnel gets its key before any status names the
//!   tunnel; `tunnel_keys.rs`), [`GatewayStatusSink`] and
//!   [`PoolStatusSink`] (`status.rs`), [`ProxySink`] (`proxies.rs`).
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use epic_kube::controller::{GatewayController, Options};
//!
//! let client = kube::Client::try_default().await.map_err(|e| e.to_string())?;
//! let (stop_tx, stop) = tokio::sync::watch::channel(false);
//! let controller = GatewayController::new(client, Options::default());
//! controller.run(stop).await?;
//! # drop(stop_tx); Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use epic_xds::{KnownGateways, SnapshotCache};
use kube::Client;
use tokio::sync::watch;

pub use crate::drive::LeaseOptions;
use crate::drive::{Leadership, Step, wait_ready};
use crate::ops::{ConditionLabels, Health, Metrics};
use std::convert::Infallible;

use crate::K8sError;
use crate::platform::{PlatformSource, PlatformState};
use crate::proxies::{ProxySettings, ProxySink};
use crate::reflect::Debouncer;
use crate::round::PlatformRound;
use crate::status::{GatewayStatusSink, PoolStatusSink};
use crate::tunnel_keys::TunnelKeySink;
use epic_engine::plan::{Plan, RenderCache, plan_incremental};
use epic_engine::publish::{Published, publish};
use epic_engine::runtime::{Sinks, Source};
use epic_engine::tunnel_ids::TunnelIdSecret;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How proxies are run.
    pub proxies: ProxySettings,
    /// Quiet time that ends a burst of changes.
    pub debounce: Duration,
    /// The longest a burst may delay a reconcile.
    pub max_delay: Duration,
    /// The safety-net resync without changes.
    pub resync: Duration,
    /// Leader election: the lease `namespace/name` and this replica's
    /// identity; `None` runs without election (one replica).
    pub lease: Option<LeaseOptions>,
    /// The secret new tunnel ids are derived under (ids already in the
    /// gateways' status are kept whatever it is): random per process.
    pub tunnel_ids: TunnelIdSecret,
    /// The platform's own networks (node and service networks, BGP peers,
    /// the API server): no tenant endpoint may use them
    /// ([`epic_engine::admission`]).
    pub platform_networks: Vec<ipnet::IpNet>,
    /// The authority of the proxies' xDS identities
    /// ([`crate::xds_identity::authority`]): each gateway's proxies get
    /// their identities and reach the ADS server over mutual TLS (serve it
    /// with [`epic_xds::AdsServer::with_tls`]). `None`: plaintext xDS.
    pub xds_authority: Option<Arc<epic_xds::identity::XdsAuthority>>,
    /// How long a released address is held back before another tenant
    /// may get it ([`epic_engine::grace`]; recorded in the pools' status).
    pub address_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxies: ProxySettings::default(),
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            resync: Duration::from_secs(300),
            lease: None,
            tunnel_ids: TunnelIdSecret::random()
                .expect("the kernel's random source (getrandom(2)) failed"),
            platform_networks: Vec::new(),
            xds_authority: None,
            address_grace: Duration::from_secs(300),
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Gateways whose status was patched.
    pub statuses: Vec<String>,
    /// Proxies applied.
    pub proxies: Vec<String>,
    /// Proxies deleted.
    pub deleted: Vec<String>,
    /// Errors, each naming its object.
    pub errors: Vec<String>,
}

impl Reconciled {
    /// Records what a sink could not write.
    pub fn record_failures(&mut self, failed: &[K8sError]) {
        self.errors.extend(failed.iter().map(ToString::to_string));
    }
}

/// The gateway controller.
pub struct GatewayController {
    client: Client,
    options: Options,
    cache: SnapshotCache,
    known: KnownGateways,
    published: Published,
    renders: RenderCache,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The allocations of the last plan: a gateway deleted since (its
    /// status gone with it) is released from them, so its addresses are
    /// held back.
    last_allocations: Vec<epic_ipam::AllocationRecord>,
    sinks: Sinks<PlatformRound, Infallible>,
}

impl GatewayController {
    /// A controller writing through `client`, with a fresh snapshot cache.
    pub fn new(client: Client, options: Options) -> Self {
        GatewayController {
            cache: SnapshotCache::new(),
            known: KnownGateways::new(),
            published: Published::default(),
            renders: RenderCache::new(),
            metrics: Arc::new(Metrics::new("gateway")),
            health: Arc::new(Health::default()),
            last_allocations: Vec::new(),
            sinks: Sinks::new()
                .with(TunnelKeySink::new(client.clone()))
                .with(GatewayStatusSink::new(client.clone()))
                .with(PoolStatusSink::new(client.clone()))
                .with(ProxySink::new(
                    client.clone(),
                    options.proxies.clone(),
                    options.xds_authority.clone(),
                )),
            client,
            options,
        }
    }

    /// The snapshot cache the ADS server serves.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// The gateways the ADS server accepts proxies of.
    pub fn known(&self) -> &KnownGateways {
        &self.known
    }

    /// The metrics (for the operations endpoint).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Readiness (for the operations endpoint).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// One reconcile from the stores: plan (incremental: only gateways
    /// whose rendering inputs changed render again), publish, then every
    /// sink in order.
    pub async fn reconcile(&mut self, source: &mut PlatformSource) -> Reconciled {
        let started = Instant::now();
        let Ok(PlatformState { loaded, proxies }) = source.read();
        let loaded = self.complete(loaded);
        let plan = self.plan_and_publish(&loaded);
        for p in &plan.problems {
            tracing::warn!(object = %p.object, "{}", p.message);
        }
        let mut round = PlatformRound {
            loaded,
            plan,
            proxies,
            done: Reconciled::default(),
        };
        let Ok(()) = self.sinks.apply(&mut round).await;
        self.record(
            source,
            &round.plan,
            started.elapsed(),
            round.done.errors.len(),
        );
        round.done
    }

    fn record(&self, source: &PlatformSource, plan: &Plan, took: Duration, errors: usize) {
        let m = &self.metrics;
        m.reconciled(took, errors == 0);
        m.sink_errors.inc_by(errors as u64);
        m.set_objects("Tenant", source.tenants.state().len());
        m.set_objects("AddressPool", source.pools.state().len());
        m.set_objects("GatewayTemplate", source.templates.state().len());
        m.set_objects("Gateway", source.gateways.state().len());
        m.set_objects("Route", source.routes.state().len());
        m.set_objects("BackendSet", source.backend_sets.state().len());
        m.set_objects("Node", source.nodes.state().len());
        m.gateways.clear();
        for g in &plan.gateways {
            for c in &g.status.conditions {
                m.gateways
                    .get_or_create(&ConditionLabels {
                        condition: c.type_.clone(),
                        status: c.status.clone(),
                    })
                    .inc();
            }
        }
        let status = self.cache.status();
        let streams: usize = status.nodes.iter().map(|n| n.streams.len()).sum();
        let nacks: u64 = status
            .nodes
            .iter()
            .flat_map(|n| &n.streams)
            .map(|s| s.nacks)
            .sum();
        m.xds_streams.set(streams as i64);
        m.xds_nacks.set(i64::try_from(nacks).unwrap_or(i64::MAX));
    }

    /// Runs until `stop` is set: starts the reflectors, waits for their
    /// first lists, and reconciles on every debounced burst of changes (or
    /// resync) while leading. Losing the lease ends the run with an error,
    /// so the process restarts as a candidate with fresh state.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let (mut source, changes) = PlatformSource::watch(&self.client);
        let mut triggers = Debouncer::new(
            changes,
            self.options.debounce,
            self.options.max_delay,
            self.options.resync,
        );
        if !wait_ready(source.ready(), &mut triggers, &mut stop).await? {
            return Ok(());
        }
        let (client, lease) = (self.client.clone(), self.options.lease.clone());
        let (health, metrics) = (self.health.clone(), self.metrics.clone());
        let mut lead = Leadership::start(&client, lease.as_ref(), &health, &metrics, &stop);
        loop {
            match lead.next(&mut triggers, &mut stop).await {
                Ok(Step::Lead) => {
                    self.reconcile_logged(&mut source).await;
                    lead.reconciled();
                }
                // A standby serves the same snapshots (the plan is pure and
                // its records live in status), so proxies that reach it
                // through the ADS Service get their configuration; it writes
                // nothing.
                Ok(Step::Standby) => {
                    self.publish(&source);
                }
                Ok(Step::Stop) => break,
                Err(e) => {
                    lead.finish().await;
                    return Err(e);
                }
            }
        }
        lead.finish().await;
        Ok(())
    }

    /// Plans from the stores and publishes the snapshots, writing nothing
    /// to the API (what a standby replica does).
    pub fn publish(&mut self, source: &PlatformSource) -> Plan {
        let loaded = self.complete(source.load());
        self.plan_and_publish(&loaded)
    }

    /// The stores' state completed with what this controller knows: its
    /// tunnel id secret, the platform's networks, the allowed images, the
    /// clock, the grace period, and the gateways deleted since its last plan.
    fn complete(&self, mut loaded: crate::Loaded) -> crate::Loaded {
        loaded.recorded.tunnel_id_secret = Some(self.options.tunnel_ids.clone());
        loaded.inputs.platform_networks = self.options.platform_networks.clone();
        loaded.inputs.envoy_images = Some(self.options.proxies.allowed_images());
        loaded.inputs.now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        loaded.inputs.address_grace = self.options.address_grace.as_secs();
        // Gateways deleted since the last plan: their allocations, so the
        // plan releases them (and holds their addresses back).
        let present: std::collections::BTreeSet<String> = loaded
            .inputs
            .gateways
            .iter()
            .map(epic_engine::plan::owner_of)
            .collect();
        let gone = self
            .last_allocations
            .iter()
            .filter(|r| !present.contains(&r.owner))
            .cloned();
        loaded.recorded.allocations.extend(gone);
        loaded
    }

    /// Plans (incrementally: unchanged gateways keep their rendered
    /// snapshots) and publishes the snapshots to the cache.
    fn plan_and_publish(&mut self, loaded: &crate::Loaded) -> Plan {
        let plan = plan_incremental(&loaded.inputs, &loaded.recorded, &mut self.renders);
        self.published = publish(&plan, &self.cache, &self.known, &self.published);
        self.last_allocations = plan.recorded.allocations.clone();
        plan
    }

    async fn reconcile_logged(&mut self, source: &mut PlatformSource) {
        use tracing::Instrument;
        let span = tracing::info_span!("reconcile", controller = "gateway");
        let started = Instant::now();
        let done = self.reconcile(source).instrument(span.clone()).await;
        let _entered = span.enter();
        self.health.set_reconciled();
        tracing::info!(
            statuses = done.statuses.len(),
            proxies = done.proxies.len(),
            deleted = done.deleted.len(),
            errors = done.errors.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        for e in &done.errors {
            tracing::error!("{e}");
        }
    }
}
