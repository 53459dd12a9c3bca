//! The user-cluster side on Kubernetes (what `epic-cluster-controller`
//! wires around [`crate::mirror`]): read the user's objects, apply their
//! mirror to the tenant's namespace on the platform, and write the
//! platform's status back.
//!
//! ```no_run
//! # async fn sync() -> Result<(), Box<dyn std::error::Error>> {
//! use epic_core::k8s::cluster::{apply_mirrored, load_user_cluster, write_back};
//! use epic_core::mirror::{MirrorConfig, mirror};
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

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{K8sError, api_error};
use crate::mirror::{
    CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MirrorConfig, Mirrored, SOURCE_ANNOTATION,
    UserCluster, gateway_status, keep_transition_times, label_value, service_status,
};
use crate::model::{BackendSet, Gateway, Route};

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

async fn sync_kind<K>(
    platform: &Client,
    namespace: &str,
    kind: &str,
    wanted: &[K],
    selector: &str,
    report: &mut ApplyReport,
) -> Result<(), K8sError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(platform.clone(), namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for object in wanted {
        let name = object.meta().name.clone().unwrap_or_default();
        api.patch(&name, &apply, &Patch::Apply(object))
            .await
            .map_err(api_error(format!("apply {kind} {namespace}/{name}")))?;
        report.applied.push(format!("{kind} {name}"));
        names.push(name);
    }
    let existing = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(api_error(format!("list {kind} in {namespace}")))?;
    for object in existing.items {
        let Some(name) = object.meta().name.clone() else {
            continue;
        };
        if names.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => report.deleted.push(format!("{kind} {name}")),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(api_error(format!("delete {kind} {namespace}/{name}"))(e)),
        }
    }
    Ok(())
}

/// Applies the mirrored resources to the tenant's namespace on the
/// platform (server-side apply), then deletes what this cluster mirrored
/// before and no longer does (by the cluster and managed-by labels).
/// Backend sets go first and gateways last, so a gateway never appears
/// before its backends.
pub async fn apply_mirrored(
    platform: &Client,
    mirrored: &Mirrored,
    config: &MirrorConfig,
    cluster: &str,
) -> Result<ApplyReport, K8sError> {
    let selector = format!(
        "{CLUSTER_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        label_value(cluster)
    );
    let ns = config.tenant_namespace.as_str();
    let mut report = ApplyReport::default();
    sync_kind::<BackendSet>(
        platform,
        ns,
        "BackendSet",
        &mirrored.backend_sets,
        &selector,
        &mut report,
    )
    .await?;
    sync_kind::<Route>(
        platform,
        ns,
        "Route",
        &mirrored.routes,
        &selector,
        &mut report,
    )
    .await?;
    sync_kind::<Gateway>(
        platform,
        ns,
        "Gateway",
        &mirrored.gateways,
        &selector,
        &mut report,
    )
    .await?;
    Ok(report)
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
    let selector = format!(
        "{CLUSTER_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        label_value(cluster_id)
    );
    let gateways: Api<Gateway> = Api::namespaced(platform.clone(), &config.tenant_namespace);
    let platform_gateways = gateways
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error(format!(
            "list Gateway in {}",
            config.tenant_namespace
        )))?
        .items;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut patched = 0;
    for g in platform_gateways {
        let (Some(status), Some(source)) = (
            g.status.as_ref(),
            g.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SOURCE_ANNOTATION)),
        ) else {
            continue;
        };
        let mut parts = source.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "Service" => {
                let Some(current) = cluster.services.iter().find(|s| {
                    s.metadata.namespace.as_deref() == Some(ns)
                        && s.metadata.name.as_deref() == Some(name)
                }) else {
                    continue;
                };
                let next = service_status(status);
                if current
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    == next.load_balancer.as_ref()
                {
                    continue;
                }
                let api: Api<Service> = Api::namespaced(user.clone(), ns);
                api.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"loadBalancer": next.load_balancer}})),
                )
                .await
                .map_err(api_error(format!("patch status of Service {ns}/{name}")))?;
                patched += 1;
            }
            "Gateway" => {
                let Some(current) = cluster.gateways.iter().find(|x| {
                    x.metadata.namespace.as_deref() == Some(ns)
                        && x.metadata.name.as_deref() == Some(name)
                }) else {
                    continue;
                };
                let mut next = gateway_status(status, current.metadata.generation, now.clone());
                let previous = current
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                if let Some(conditions) = next.conditions.as_mut() {
                    keep_transition_times(&previous, conditions);
                }
                let same = current.status.as_ref().is_some_and(|c| {
                    c.addresses == next.addresses && c.conditions == next.conditions
                });
                if same {
                    continue;
                }
                let api: Api<gateway_api::gateways::Gateway> = Api::namespaced(user.clone(), ns);
                api.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {
                        "addresses": next.addresses,
                        "conditions": next.conditions,
                    }})),
                )
                .await
                .map_err(api_error(format!("patch status of Gateway {ns}/{name}")))?;
                patched += 1;
            }
            _ => {}
        }
    }
    Ok(patched)
}
