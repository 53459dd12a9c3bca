//! The user-cluster side on Kubernetes (what `epic-cluster-controller`
//! wires around [`epic_engine::mirror`]): read the user's objects, apply their
//! mirror to the tenant's namespace on the platform, and write the
//! platform's status back.
//!
//! ```no_run
//! # async fn sync() -> Result<(), Box<dyn std::error::Error>> {
//! use epic_kube::cluster::{apply_mirrored, load_user_cluster, write_back};
//! use epic_engine::mirror::{MirrorConfig, mirror};
//!
//! let user = kube::Client::try_default().await?;
//! let platform = user.clone(); // in practice: a client from the tenant's kubeconfig
//! let config = MirrorConfig::new("acme");
//! let cluster = load_user_cluster(&user, "cluster-1").await?;
//! let mirrored = mirror(&cluster, &config);
//! let report = apply_mirrored(&platform, &mirrored, &config, "cluster-1").await?;
//! write_back(&user, &platform, &cluster, &config, "cluster-1").await?;
//! # let _ = report; Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use serde_json::json;

use crate::index::ByKey;
use crate::reflect::sorted;
use crate::round::ClusterRound;
use crate::user::{MirrorSource, mirrored_selector};
use crate::{K8sError, api_error};
use epic_engine::mirror::{
    MirrorConfig, Mirrored, SOURCE_ANNOTATION, UserCluster, gateway_status, keep_transition_times,
    service_status,
};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_model::{BackendSet, Gateway, GatewayStatus, Route};

/// The field manager of everything the cluster controller writes.
pub const FIELD_MANAGER: &str = "epic-cluster-controller";

async fn list<K>(client: &Client, kind: &str, optional: bool) -> Result<Vec<K>, K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        // The Gateway API CRDs are optional in a user cluster.
        Err(kube::Error::Api(e)) if optional && e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(api_error(format!("list {kind}"))(e)),
    }
}

/// Reads every object the mirror needs from the user cluster. The Gateway
/// API kinds may be absent (their CRDs not installed): they read as empty.
pub async fn load_user_cluster(client: &Client, cluster: &str) -> Result<UserCluster, K8sError> {
    Ok(UserCluster {
        cluster: cluster.to_owned(),
        services: list::<Service>(client, "Service", false).await?,
        endpoint_slices: list::<EndpointSlice>(client, "EndpointSlice", false).await?,
        nodes: list::<Node>(client, "Node", false).await?,
        namespaces: list::<Namespace>(client, "Namespace", false).await?,
        gateway_classes: list(client, "GatewayClass", true).await?,
        gateways: list(client, "Gateway", true).await?,
        http_routes: list(client, "HTTPRoute", true).await?,
        tcp_routes: list(client, "TCPRoute", true).await?,
        udp_routes: list(client, "UDPRoute", true).await?,
    })
}

/// What [`apply_mirrored`] did, as `Kind name` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Applied (created or updated).
    pub applied: Vec<String>,
    /// Deleted: mirrored earlier by this cluster, gone now.
    pub deleted: Vec<String>,
}

/// Whether two objects agree on what the mirror sets: spec, labels and
/// annotations (the server adds the rest).
fn same_object<K: serde::Serialize>(a: &K, b: &K) -> bool {
    let (a, b) = (serde_json::to_value(a).ok(), serde_json::to_value(b).ok());
    let pick = |v: &Option<serde_json::Value>, path: &str| {
        v.as_ref().and_then(|v| v.pointer(path).cloned())
    };
    ["/spec", "/metadata/labels", "/metadata/annotations"]
        .iter()
        .all(|path| pick(&a, path) == pick(&b, path))
}

/// Makes `namespace` hold exactly `wanted` of kind `K` among `existing`
/// (what this cluster mirrored before): applies what is missing or differs,
/// deletes what is no longer wanted. Continues past one object's error.
async fn sync_kind<K>(
    platform: &Client,
    namespace: &str,
    kind: &str,
    wanted: &[K],
    existing: &[K],
    report: &mut ApplyReport,
    errors: &mut Vec<K8sError>,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(platform.clone(), namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let name_of = |o: &K| o.meta().name.clone().unwrap_or_default();
    let existing_by_name: HashMap<String, &K> = existing.iter().map(|e| (name_of(e), e)).collect();
    let wanted_names: HashSet<String> = wanted.iter().map(name_of).collect();
    for object in wanted {
        let name = name_of(object);
        if existing_by_name
            .get(&name)
            .is_some_and(|e| same_object(*e, object))
        {
            continue;
        }
        match api.patch(&name, &apply, &Patch::Apply(object)).await {
            Ok(_) => report.applied.push(format!("{kind} {name}")),
            Err(e) => errors.push(api_error(format!("apply {kind} {namespace}/{name}"))(e)),
        }
    }
    for object in existing {
        let name = name_of(object);
        if wanted_names.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => report.deleted.push(format!("{kind} {name}")),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => errors.push(api_error(format!("delete {kind} {namespace}/{name}"))(e)),
        }
    }
}

/// Applies the mirrored resources to the tenant's namespace on the
/// platform where they differ from `existing` (what the reflectors hold of
/// this cluster's mirror), then deletes what this cluster mirrored before
/// and no longer does. Backend sets go first and gateways last, so a
/// gateway never appears before its backends. Every error is returned, one
/// per object; the others are still written.
pub async fn apply_mirrored_diff(
    platform: &Client,
    mirrored: &Mirrored,
    config: &MirrorConfig,
    existing: &MirrorSource,
) -> Result<ApplyReport, Vec<K8sError>> {
    let ns = config.tenant_namespace.as_str();
    let (sets, routes, gateways) = (
        sorted(&existing.backend_sets),
        sorted(&existing.routes),
        sorted(&existing.gateways),
    );
    let (report, errors) = sync_all(platform, ns, mirrored, (&sets, &routes, &gateways)).await;
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

/// What this cluster mirrored before, by kind.
type Existing<'a> = (&'a [BackendSet], &'a [Route], &'a [Gateway]);

/// [`sync_kind`] for every kind, backend sets first and gateways last.
async fn sync_all(
    platform: &Client,
    ns: &str,
    mirrored: &Mirrored,
    (sets, routes, gateways): Existing<'_>,
) -> (ApplyReport, Vec<K8sError>) {
    let mut report = ApplyReport::default();
    let mut errors = Vec::new();
    let (r, e) = (&mut report, &mut errors);
    sync_kind(
        platform,
        ns,
        "BackendSet",
        &mirrored.backend_sets,
        sets,
        r,
        e,
    )
    .await;
    sync_kind(platform, ns, "Route", &mirrored.routes, routes, r, e).await;
    sync_kind(platform, ns, "Gateway", &mirrored.gateways, gateways, r, e).await;
    (report, errors)
}

async fn list_mirrored<K>(
    platform: &Client,
    namespace: &str,
    kind: &str,
    selector: &str,
) -> Result<Vec<K>, K8sError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(platform.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .map_err(api_error(format!("list {kind} in {namespace}")))
}

/// [`apply_mirrored_diff`] for one-shot tools and tests: reads what this
/// cluster mirrored before with one LIST per kind. Stops at the first
/// error.
pub async fn apply_mirrored(
    platform: &Client,
    mirrored: &Mirrored,
    config: &MirrorConfig,
    cluster: &str,
) -> Result<ApplyReport, K8sError> {
    let selector = mirrored_selector(cluster);
    let ns = config.tenant_namespace.as_str();
    let sets: Vec<BackendSet> = list_mirrored(platform, ns, "BackendSet", &selector).await?;
    let routes: Vec<Route> = list_mirrored(platform, ns, "Route", &selector).await?;
    let gateways: Vec<Gateway> = list_mirrored(platform, ns, "Gateway", &selector).await?;
    let (report, errors) = sync_all(platform, ns, mirrored, (&sets, &routes, &gateways)).await;
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Writes each platform gateway's status back to the user object it
/// mirrors (named by its source annotation): a `Service`'s
/// `loadBalancer.ingress`, a Gateway API `Gateway`'s addresses and
/// conditions (transition times kept while a status holds). Returns how
/// many user objects were patched; unchanged ones are not.
pub async fn write_back(
    user: &Client,
    platform: &Client,
    cluster: &UserCluster,
    config: &MirrorConfig,
    cluster_id: &str,
) -> Result<usize, K8sError> {
    let platform_gateways: Vec<Gateway> = list_mirrored(
        platform,
        &config.tenant_namespace,
        "Gateway",
        &mirrored_selector(cluster_id),
    )
    .await?;
    // One-shot: the first error stands for all (every object was tried).
    write_back_from(user, &platform_gateways, cluster)
        .await
        .map_err(|errors| errors.into_iter().next().expect("an error"))
}

/// [`write_back`] from the platform gateways as read (the cluster
/// controller's store of its mirror).
///
/// One object's error does not stop the others: every error is returned,
/// after all objects were tried.
pub async fn write_back_from(
    user: &Client,
    platform_gateways: &[Gateway],
    cluster: &UserCluster,
) -> Result<usize, Vec<K8sError>> {
    let mut errors = Vec::new();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut patched = 0;
    let services = ByKey::new(&cluster.services);
    let gateways = ByKey::new(&cluster.gateways);
    for g in platform_gateways {
        let Some((status, kind, ns, name)) = mirrored_from(g) else {
            continue;
        };
        let written = match kind {
            "Service" => match services.get(ns, name) {
                Some(current) => write_service_status(user, current, status).await,
                None => Ok(false),
            },
            "Gateway" => match gateways.get(ns, name) {
                Some(current) => write_gateway_status(user, current, status, &now).await,
                None => Ok(false),
            },
            _ => Ok(false),
        };
        match written {
            Ok(true) => patched += 1,
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(patched)
    } else {
        Err(errors)
    }
}

/// A platform gateway's status and the user object it mirrors, from its
/// source annotation (`<kind>/<namespace>/<name>`).
fn mirrored_from(g: &Gateway) -> Option<(&GatewayStatus, &str, &str, &str)> {
    let status = g.status.as_ref()?;
    let source = g.metadata.annotations.as_ref()?.get(SOURCE_ANNOTATION)?;
    let mut parts = source.splitn(3, '/');
    Some((status, parts.next()?, parts.next()?, parts.next()?))
}

/// Patches the status of `current` (a user cluster's object) with
/// `status`; an object deleted meanwhile is no error.
pub(crate) async fn patch_user_status<K>(
    api: Api<K>,
    what: &str,
    current: &ObjectMeta,
    status: serde_json::Value,
) -> Result<bool, K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (ns, name) = (
        current.namespace.as_deref().unwrap_or_default(),
        current.name.as_deref().unwrap_or_default(),
    );
    let patch = Patch::Merge(json!({ "status": status }));
    match api
        .patch_status(name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if crate::is_not_found(&e) => Ok(false),
        Err(e) => Err(api_error(format!("patch status of {what} {ns}/{name}"))(e)),
    }
}

/// A `Service`'s load-balancer status from its platform gateway, written
/// where it differs.
async fn write_service_status(
    user: &Client,
    current: &Service,
    status: &GatewayStatus,
) -> Result<bool, K8sError> {
    let ports = current
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let next = service_status(status, ports);
    let now = current
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref());
    if now == next.load_balancer.as_ref() {
        return Ok(false);
    }
    let ns = current.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(user.clone(), ns);
    let body = json!({"loadBalancer": next.load_balancer});
    patch_user_status(api, "Service", &current.metadata, body).await
}

/// A Gateway API `Gateway`'s addresses and conditions from its platform
/// gateway (transition times kept where a condition did not change),
/// written where they differ.
async fn write_gateway_status(
    user: &Client,
    current: &gateway_api::gateways::Gateway,
    status: &GatewayStatus,
    now: &Time,
) -> Result<bool, K8sError> {
    let mut next = gateway_status(status, current.metadata.generation, now.clone());
    let previous = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(conditions) = next.conditions.as_mut() {
        keep_transition_times(&previous, conditions);
    }
    let same = current
        .status
        .as_ref()
        .is_some_and(|c| c.addresses == next.addresses && c.conditions == next.conditions);
    if same {
        return Ok(false);
    }
    let ns = current.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<gateway_api::gateways::Gateway> = Api::namespaced(user.clone(), ns);
    let body = json!({"addresses": next.addresses, "conditions": next.conditions});
    patch_user_status(api, "Gateway", &current.metadata, body).await
}

/// The mirror sink of the cluster controller: the engine's mirror applied
/// to the tenant's namespace where it differs ([`apply_mirrored_diff`]).
pub struct MirrorSink {
    platform: Client,
    config: MirrorConfig,
}

impl MirrorSink {
    /// A sink writing through `platform` (the tenant's credentials).
    pub fn new(platform: Client, config: MirrorConfig) -> Self {
        MirrorSink { platform, config }
    }
}

impl Sink<ClusterRound, Infallible> for MirrorSink {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn apply<'a>(&'a mut self, round: &'a mut ClusterRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            let (wanted, existing) = (&round.wanted, &round.mirrored);
            match apply_mirrored_diff(&self.platform, wanted, &self.config, existing).await {
                Ok(report) => round.done.mirrored = report,
                Err(errors) => round
                    .done
                    .errors
                    .extend(errors.iter().map(ToString::to_string)),
            }
            Ok(())
        })
    }
}

/// The write-back sink of the cluster controller: the platform's status
/// of each mirrored gateway onto the user's objects ([`write_back_from`]).
pub struct WriteBackSink {
    user: Client,
}

impl WriteBackSink {
    /// A sink writing through `user`.
    pub fn new(user: Client) -> Self {
        WriteBackSink { user }
    }
}

impl Sink<ClusterRound, Infallible> for WriteBackSink {
    fn name(&self) -> &'static str {
        "status write-back"
    }

    fn apply<'a>(&'a mut self, round: &'a mut ClusterRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            let platform_gateways = sorted(&round.mirrored.gateways);
            match write_back_from(&self.user, &platform_gateways, &round.cluster).await {
                Ok(n) => round.done.written_back = n,
                Err(errors) => round
                    .done
                    .errors
                    .extend(errors.iter().map(ToString::to_string)),
            }
            Ok(())
        })
    }
}
