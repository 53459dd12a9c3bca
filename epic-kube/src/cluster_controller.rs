//! The cluster controller: a source, the pure mirror, and a list of sinks,
//! run once per debounced burst of changes from either cluster.
//!
//! - Source: [`ClusterSource`] (`user.rs`): the user cluster's reflectors
//!   ([`UserSource`]) and the tenant's mirror on the platform
//!   ([`MirrorSource`]).
//! - Engine: [`mirror`], pure.
//! - Sinks, in order, on one [`ClusterRound`]: [`AddFinalizers`]
//!   (`finalizers.rs`), [`MirrorSink`] (`cluster.rs`: the mirrored objects
//!   applied where they differ), [`ReleaseFinalizers`], [`WriteBackSink`]
//!   (`cluster.rs`: status written back), [`GatewayClassStatusSink`]
//!   (`classes.rs`: `Accepted` and `SupportedVersion` on our classes), and
//!   with an agent namespace
//!   [`NodeKeySink`] (`node_keys.rs`: each node its hello key).
//!
//! Deleting a served `Service` is held by the
//! [`LOAD_BALANCER_FINALIZER`] until its platform gateway is gone (its
//! address released), as the cloud providers' service controllers do.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use tokio::sync::watch;

use crate::classes::GatewayClassStatusSink;
use crate::cluster::{ApplyReport, MirrorSink, WriteBackSink};
pub use crate::drive::LeaseOptions;
use crate::drive::{Leadership, Step, wait_ready};
pub use crate::finalizers::LOAD_BALANCER_FINALIZER;
use crate::finalizers::{AddFinalizers, ReleaseFinalizers};
use crate::node_keys::{NodeKeySink, NodeKeyTarget};
use crate::ops::{Health, Metrics};
use crate::reflect::{Changes, Debouncer};
use crate::round::ClusterRound;
use crate::user::{ClusterSource, MirrorSource, UserSource, gateway_api_installed};
use epic_engine::mirror::{MirrorConfig, mirror};
use epic_engine::runtime::{Sinks, Source};

/// How the cluster controller runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This user cluster's id on the platform.
    pub cluster: String,
    /// What to mirror, and where on the platform.
    pub mirror: MirrorConfig,
    /// Quiet time that ends a burst of changes.
    pub debounce: Duration,
    /// The longest a burst may delay a reconcile.
    pub max_delay: Duration,
    /// The safety-net resync without changes.
    pub resync: Duration,
    /// Leader election among replicas (a `Lease` in the user cluster);
    /// `None`: this replica always leads.
    pub lease: Option<LeaseOptions>,
    /// The user-cluster namespace the cluster agents run in: each node a
    /// tunnel ends on gets its hello key there ([`crate::node_keys`]).
    /// `None`: no node keys are written.
    pub agent_namespace: Option<String>,
}

impl ClusterOptions {
    /// Options for cluster `cluster` of the tenant in `tenant_namespace`.
    pub fn new(cluster: &str, tenant_namespace: &str) -> Self {
        ClusterOptions {
            cluster: cluster.to_owned(),
            mirror: MirrorConfig::new(tenant_namespace),
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            resync: Duration::from_secs(300),
            lease: None,
            agent_namespace: None,
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct ClusterReconciled {
    /// Platform objects applied and deleted.
    pub mirrored: ApplyReport,
    /// User objects whose status was written back.
    pub written_back: usize,
    /// Finalizers added (`namespace/name` of each Service).
    pub finalized: Vec<String>,
    /// Finalizers removed (the Service's platform gateway is gone).
    pub released: Vec<String>,
    /// Errors, each naming its object.
    pub errors: Vec<String>,
}

/// The cluster controller.
pub struct ClusterController {
    user: Client,
    platform: Client,
    options: ClusterOptions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    sinks: Sinks<ClusterRound, Infallible>,
}

impl ClusterController {
    /// A controller reading `user` and writing the tenant's namespace
    /// through `platform` (the tenant's credentials).
    pub fn new(user: Client, platform: Client, options: ClusterOptions) -> Self {
        let config = &options.mirror;
        let mut sinks = Sinks::new()
            .with(AddFinalizers::new(user.clone(), config.clone()))
            .with(MirrorSink::new(platform.clone(), config.clone()))
            .with(ReleaseFinalizers::new(user.clone(), config.clone()))
            .with(WriteBackSink::new(user.clone()))
            .with(GatewayClassStatusSink::new(
                user.clone(),
                config.controller_name.clone(),
            ));
        if let Some(namespace) = &options.agent_namespace {
            let target = NodeKeyTarget {
                tenant_namespace: config.tenant_namespace.clone(),
                cluster: options.cluster.clone(),
                namespace: namespace.clone(),
            };
            sinks = sinks.with(NodeKeySink::new(user.clone(), platform.clone(), target));
        }
        ClusterController {
            user,
            platform,
            options,
            metrics: Arc::new(Metrics::new("cluster")),
            health: Arc::new(Health::default()),
            sinks,
        }
    }

    /// The metrics (for the operations endpoint).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Readiness (for the operations endpoint).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// One reconcile from the stores: the mirror of what the user cluster
    /// wants (a Service being deleted is no longer wanted: its platform
    /// gateway goes, then its finalizer), then every sink in order.
    pub async fn reconcile(&mut self, source: &mut ClusterSource) -> ClusterReconciled {
        let started = Instant::now();
        let Ok((mut cluster, mirrored)) = source.read();
        let (deleting, kept) = std::mem::take(&mut cluster.services)
            .into_iter()
            .partition(|s| s.metadata.deletion_timestamp.is_some());
        cluster.services = kept;
        let wanted = mirror(&cluster, &self.options.mirror);
        for s in &wanted.skipped {
            tracing::warn!(object = %s.object, "{}", s.reason);
        }
        let mut round = ClusterRound {
            cluster,
            deleting,
            wanted,
            mirrored,
            done: ClusterReconciled::default(),
        };
        let Ok(()) = self.sinks.apply(&mut round).await;
        self.record(source, &round.done, started.elapsed());
        round.done
    }

    fn record(&self, source: &ClusterSource, done: &ClusterReconciled, took: Duration) {
        let m = &self.metrics;
        m.reconciled(took, done.errors.is_empty());
        m.sink_errors.inc_by(done.errors.len() as u64);
        m.set_objects("Service", source.user.services.state().len());
        m.set_objects("EndpointSlice", source.user.endpoint_slices.state().len());
        m.set_objects("platform Gateway", source.mirrored.gateways.state().len());
    }

    /// Runs until `stop` is set: reflectors on both clusters, one reconcile
    /// per debounced burst of changes from either.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let with_gateway_api = gateway_api_installed(&self.user)
            .await
            .map_err(|e| e.to_string())?;
        if !with_gateway_api {
            tracing::info!("the Gateway API CRDs are not installed: serving Services only");
        }
        let (user, user_changes) = UserSource::watch(&self.user, with_gateway_api);
        let (mirrored, platform_changes) = MirrorSource::watch(
            &self.platform,
            &self.options.mirror.tenant_namespace,
            &self.options.cluster,
        );
        let changes: Changes =
            futures::stream::select_all([user_changes.boxed(), platform_changes.boxed()]);
        let mut triggers = Debouncer::new(
            changes,
            self.options.debounce,
            self.options.max_delay,
            self.options.resync,
        );
        let ready = async {
            user.ready().await?;
            mirrored.ready().await
        };
        if !wait_ready(ready, &mut triggers, &mut stop).await? {
            return Ok(());
        }
        let mut source = ClusterSource {
            cluster: self.options.cluster.clone(),
            user,
            mirrored,
        };
        let (client, lease) = (self.user.clone(), self.options.lease.clone());
        let (health, metrics) = (self.health.clone(), self.metrics.clone());
        let mut lead = Leadership::start(&client, lease.as_ref(), &health, &metrics, &stop);
        let result = loop {
            match lead.next(&mut triggers, &mut stop).await {
                Ok(Step::Lead) => {
                    self.reconcile_logged(&mut source).await;
                    lead.reconciled();
                }
                Ok(Step::Standby) => {}
                Ok(Step::Stop) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        lead.finish().await;
        result
    }

    async fn reconcile_logged(&mut self, source: &mut ClusterSource) {
        use tracing::Instrument;
        let span = tracing::info_span!("reconcile", controller = "cluster", cluster = %self.options.cluster);
        let started = Instant::now();
        let done = self.reconcile(source).instrument(span.clone()).await;
        self.health.set_reconciled();
        let _entered = span.enter();
        tracing::info!(
            applied = done.mirrored.applied.len(),
            deleted = done.mirrored.deleted.len(),
            written_back = done.written_back,
            finalized = done.finalized.len(),
            released = done.released.len(),
            errors = done.errors.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        for e in &done.errors {
            tracing::error!("{e}");
        }
    }
}
