//! The cluster controller: the user cluster's reflectors ([`UserSource`])
//! and the tenant's mirror on the platform ([`MirrorSource`]), the pure
//! mirror, and the sinks (mirrored objects applied where they differ,
//! status written back, the load-balancer cleanup finalizer), run once per
//! debounced burst of changes from either cluster.
//!
//! Deleting a served `Service` is held by the
//! [`LOAD_BALANCER_FINALIZER`] until its platform gateway is gone (its
//! address released), as the cloud providers' service controllers do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::{ApplyReport, write_back_from};
pub use crate::drive::LeaseOptions;
use crate::drive::{Leadership, Step, wait_ready};
use crate::ops::{Health, Metrics};
use crate::reflect::{Changes, Debouncer, sorted};
use crate::user::{MirrorSource, UserSource, gateway_api_installed};
use crate::{K8sError, api_error, is_not_found};
use epic_engine::mirror::{MirrorConfig, Mirrored, SOURCE_ANNOTATION, UserCluster, mirror};

/// The finalizer on every `Service` the controller serves (the name the
/// Kubernetes service controller uses for the same purpose).
pub const LOAD_BALANCER_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

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
}

/// Whether `svc` is a `Service` this controller serves.
fn served(svc: &Service, config: &MirrorConfig) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer")
            && s.load_balancer_class.as_deref() == Some(config.load_balancer_class.as_str())
    })
}

fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == LOAD_BALANCER_FINALIZER))
}

fn key(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

impl ClusterController {
    /// A controller reading `user` and writing the tenant's namespace
    /// through `platform` (the tenant's credentials).
    pub fn new(user: Client, platform: Client, options: ClusterOptions) -> Self {
        ClusterController {
            user,
            platform,
            options,
            metrics: Arc::new(Metrics::new("cluster")),
            health: Arc::new(Health::default()),
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

    /// One reconcile from the stores.
    pub async fn reconcile(&self, user: &UserSource, mirrored: &MirrorSource) -> ClusterReconciled {
        let started = Instant::now();
        let mut done = ClusterReconciled::default();
        let config = &self.options.mirror;
        let mut cluster = user.load(&self.options.cluster);
        // A Service being deleted is no longer wanted: its platform
        // gateway goes, then its finalizer.
        let deleting: Vec<Service> = cluster
            .services
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_some())
            .cloned()
            .collect();
        cluster
            .services
            .retain(|s| s.metadata.deletion_timestamp.is_none());
        self.add_finalizers(&cluster, &mut done).await;
        let wanted = mirror(&cluster, config);
        for s in &wanted.skipped {
            tracing::warn!(object = %s.object, "{}", s.reason);
        }
        match crate::cluster::apply_mirrored_diff(&self.platform, &wanted, config, mirrored).await {
            Ok(report) => done.mirrored = report,
            Err(errors) => done.errors.extend(errors.iter().map(ToString::to_string)),
        }
        self.release_finalizers(&cluster, &deleting, &wanted, mirrored, &mut done)
            .await;
        let platform_gateways = sorted(&mirrored.gateways);
        match write_back_from(&self.user, &platform_gateways, &cluster).await {
            Ok(n) => done.written_back = n,
            Err(errors) => done.errors.extend(errors.iter().map(ToString::to_string)),
        }
        self.metrics
            .reconciled(started.elapsed(), done.errors.is_empty());
        self.metrics.sink_errors.inc_by(done.errors.len() as u64);
        self.metrics
            .set_objects("Service", user.services.state().len());
        self.metrics
            .set_objects("EndpointSlice", user.endpoint_slices.state().len());
        self.metrics
            .set_objects("platform Gateway", mirrored.gateways.state().len());
        done
    }

    /// Adds the finalizer to every served Service that lacks it.
    async fn add_finalizers(&self, cluster: &UserCluster, done: &mut ClusterReconciled) {
        for svc in cluster
            .services
            .iter()
            .filter(|s| served(s, &self.options.mirror) && !has_finalizer(s))
        {
            let (ns, name) = key(svc);
            let mut finalizers = svc.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(LOAD_BALANCER_FINALIZER.to_owned());
            match self.patch_finalizers(svc, finalizers).await {
                Ok(()) => done.finalized.push(format!("{ns}/{name}")),
                Err(e) => done.errors.push(e.to_string()),
            }
        }
    }

    /// Removes the finalizer from Services that are being deleted or no
    /// longer served, once no platform gateway mirrors them.
    async fn release_finalizers(
        &self,
        cluster: &UserCluster,
        deleting: &[Service],
        wanted: &Mirrored,
        mirrored: &MirrorSource,
        done: &mut ClusterReconciled,
    ) {
        let unserved = cluster
            .services
            .iter()
            .filter(|s| !served(s, &self.options.mirror));
        for svc in deleting.iter().chain(unserved).filter(|s| has_finalizer(s)) {
            let (ns, name) = key(svc);
            let source = format!("Service/{ns}/{name}");
            let mirrors = |g: &epic_model::Gateway| {
                g.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SOURCE_ANNOTATION))
                    .is_some_and(|s| *s == source)
            };
            let still_there = mirrored.gateways.state().iter().any(|g| mirrors(g))
                || wanted.gateways.iter().any(mirrors);
            if still_there {
                continue;
            }
            let finalizers: Vec<String> = svc
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != LOAD_BALANCER_FINALIZER)
                .cloned()
                .collect();
            match self.patch_finalizers(svc, finalizers).await {
                Ok(()) => done.released.push(format!("{ns}/{name}")),
                Err(e) => done.errors.push(e.to_string()),
            }
        }
    }

    /// Sets a Service's finalizers, conditional on the resourceVersion read.
    async fn patch_finalizers(
        &self,
        svc: &Service,
        finalizers: Vec<String>,
    ) -> Result<(), K8sError> {
        let (ns, name) = key(svc);
        let api: Api<Service> = Api::namespaced(self.user.clone(), &ns);
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": svc.metadata.resource_version,
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_error(format!(
                "patch finalizers of Service {ns}/{name}"
            ))(e)),
        }
    }

    /// Runs until `stop` is set: reflectors on both clusters, one reconcile
    /// per debounced burst of changes from either.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
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
        let lease = self.options.lease.as_ref();
        let mut lead = Leadership::start(&self.user, lease, &self.health, &self.metrics, &stop);
        let result = loop {
            match lead.next(&mut triggers, &mut stop).await {
                Ok(Step::Lead) => {
                    self.reconcile_logged(&user, &mirrored).await;
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

    async fn reconcile_logged(&self, user: &UserSource, mirrored: &MirrorSource) {
        use tracing::Instrument;
        let span = tracing::info_span!("reconcile", controller = "cluster", cluster = %self.options.cluster);
        let started = Instant::now();
        let done = self
            .reconcile(user, mirrored)
            .instrument(span.clone())
            .await;
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
