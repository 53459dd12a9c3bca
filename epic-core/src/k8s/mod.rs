//! Kubernetes source and sinks for the engine (feature `k8s`): what
//! `epic-gateway-controller` wires on the gateway platform.
//!
//! - [`load`] reads the desired state (every EPIC-RS resource and the
//!   gateway nodes) and rebuilds the recorded state from the gateways'
//!   status ([`recorded_from`]), so a restarted controller keeps every
//!   address and tunnel id.
//! - [`write_statuses`] patches the status subresource of each gateway whose
//!   planned status differs from the one it has.
//! - [`apply_proxies`] keeps one `StatefulSet` of Envoy per programmed
//!   gateway ([`proxy_statefulset`]) in its namespace, and deletes the ones
//!   of gateways that are gone.
//!
//! [`cluster`] is the user-cluster side: the mirror's Kubernetes I/O.
//!
//! Gateway nodes are the `Node`s labelled [`GATEWAY_NODE_LABEL`]`=true`;
//! their tunnel address is the [`TUNNEL_ADDRESS_ANNOTATION`] annotation, else
//! their first `InternalIP`.
//!
//! ```no_run
//! # async fn reconcile() -> Result<(), Box<dyn std::error::Error>> {
//! use epic_core::k8s::{ProxySettings, apply_proxies, load, write_statuses};
//! use epic_core::plan::plan;
//!
//! let client = kube::Client::try_default().await?;
//! let loaded = load(&client).await?;
//! let plan = plan(&loaded.inputs, &loaded.recorded);
//! let statuses = write_statuses(&client, &plan, loaded.gateways()).await;
//! let proxies = apply_proxies(&client, &plan, &loaded.inputs, &ProxySettings::default()).await;
//! for e in statuses.failed.iter().chain(&proxies.failed) {
//!     eprintln!("{e}");
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use epic_ipam::{AllocationRecord, PortSpec};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, Node, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use serde_json::json;

pub mod cluster;

use crate::model::{
    AddressPool, BackendSet, Gateway, GatewayTemplate, ListenerProtocol, Route, Tenant,
};
use crate::plan::{DesiredInputs, GatewayNode, Plan, Recorded, RecordedTunnel, TunnelKey};

/// The field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "epic-gateway-controller";
/// Label of the nodes that run proxies and end tunnels (value `true`).
pub const GATEWAY_NODE_LABEL: &str = "epic-gateway.org/gateway-node";
/// Annotation with a gateway node's tunnel address.
pub const TUNNEL_ADDRESS_ANNOTATION: &str = "epic-gateway.org/tunnel-address";
/// Label on every proxy object: the gateway it serves.
pub const GATEWAY_LABEL: &str = "epic-gateway.org/gateway";
/// `app.kubernetes.io/managed-by` value of every proxy object.
pub const MANAGED_BY: &str = "epic-gateway-controller";

/// Why the Kubernetes side failed.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// An API request failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done (`list Gateway`, `patch status of acme/web`).
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
}

pub(crate) fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> K8sError {
    let what = what.into();
    move |source| K8sError::Api {
        what,
        source: Box::new(source),
    }
}

/// What [`load`] read.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The desired state, gateway nodes included.
    pub inputs: DesiredInputs,
    /// The recorded state, rebuilt from the gateways' status.
    pub recorded: Recorded,
}

impl Loaded {
    /// The gateways as read (with their current status).
    pub fn gateways(&self) -> &[Gateway] {
        &self.inputs.gateways
    }
}

async fn list_all<K>(client: &Client, kind: &str) -> Result<Vec<K>, K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(api_error(format!("list {kind}")))?
        .items)
}

/// Reads every EPIC-RS resource and the gateway nodes.
pub async fn load(client: &Client) -> Result<Loaded, K8sError> {
    let tenants: Vec<Tenant> = list_all(client, "Tenant").await?;
    let pools: Vec<AddressPool> = list_all(client, "AddressPool").await?;
    let templates: Vec<GatewayTemplate> = list_all(client, "GatewayTemplate").await?;
    let gateways: Vec<Gateway> = list_all(client, "Gateway").await?;
    let routes: Vec<Route> = list_all(client, "Route").await?;
    let backend_sets: Vec<BackendSet> = list_all(client, "BackendSet").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes
        .list(&ListParams::default().labels(&format!("{GATEWAY_NODE_LABEL}=true")))
        .await
        .map_err(api_error("list Node"))?
        .items;
    let recorded = recorded_from(&gateways, &tenants, &templates);
    Ok(Loaded {
        inputs: DesiredInputs {
            tenants,
            pools,
            templates,
            gateways,
            routes,
            backend_sets,
            gateway_nodes: gateway_nodes(&nodes),
        },
        recorded,
    })
}

/// The gateway nodes among `nodes` (labelled [`GATEWAY_NODE_LABEL`]`=true`),
/// sorted by name; a node without a usable address is left out.
pub fn gateway_nodes(nodes: &[Node]) -> Vec<GatewayNode> {
    let mut out: Vec<GatewayNode> = nodes
        .iter()
        .filter(|n| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GATEWAY_NODE_LABEL))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let annotated = n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TUNNEL_ADDRESS_ANNOTATION))
                .and_then(|a| a.parse::<IpAddr>().ok());
            let internal = || {
                n.status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<IpAddr>().ok())
            };
            Some(GatewayNode {
                name,
                address: annotated.or_else(internal)?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The recorded state as the gateways' status holds it: each gateway's
/// addresses and tunnel ids, with the owner, tenant and sharing key the
/// engine allocates with (its uid, else `namespace/name`; the tenant the
/// engine resolves for the namespace; the key only if the template allows
/// sharing), so a restarted controller plans exactly what it had.
pub fn recorded_from(
    gateways: &[Gateway],
    tenants: &[Tenant],
    templates: &[GatewayTemplate],
) -> Recorded {
    let (by_namespace, _) = crate::plan::tenants_by_namespace(tenants);
    let tenant_of: BTreeMap<&str, &str> = by_namespace
        .iter()
        .filter_map(|(ns, t)| Some((*ns, t.metadata.name.as_deref()?)))
        .collect();
    let mut recorded = Recorded::default();
    let mut tunnels: BTreeMap<TunnelKey, u32> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut sorted: Vec<&Gateway> = gateways.iter().collect();
    sorted.sort_by_key(|g| (g.metadata.namespace.clone(), g.metadata.name.clone()));
    for g in sorted {
        let ns = g.metadata.namespace.as_deref().unwrap_or_default();
        let Some(tenant) = tenant_of.get(ns) else {
            continue;
        };
        let Some(status) = &g.status else {
            continue;
        };
        if !status.addresses.is_empty() {
            let owner = match g.metadata.uid.as_deref() {
                Some(uid) if !uid.is_empty() => uid.to_owned(),
                _ => format!("{ns}/{}", g.metadata.name.as_deref().unwrap_or_default()),
            };
            let sharing_key = crate::plan::sharing_key_of(g, templates);
            let ports = if sharing_key.is_some() {
                g.spec
                    .listeners
                    .iter()
                    .map(|l| match l.protocol {
                        ListenerProtocol::Udp => PortSpec::udp(l.port),
                        _ => PortSpec::tcp(l.port),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            recorded.allocations.push(AllocationRecord {
                owner,
                tenant: (*tenant).to_owned(),
                addresses: status.addresses.clone(),
                sharing_key,
                ports,
            });
        }
        for t in &status.tunnels {
            let key = TunnelKey {
                tenant: (*tenant).to_owned(),
                cluster: t.cluster.clone(),
                node: t.node.clone(),
                gateway_node: t.gateway_node.clone(),
            };
            // One id per tunnel and one tunnel per id: the first record wins.
            if !tunnels.contains_key(&key) && ids.insert(t.id) {
                tunnels.insert(key, t.id);
            }
        }
    }
    recorded.tunnels = tunnels
        .into_iter()
        .map(|(key, id)| RecordedTunnel { key, id })
        .collect();
    recorded
}

/// What a pass of a sink did: the objects it wrote (`namespace/name`) and
/// the errors of those it could not. One object's error (a quota, an
/// admission webhook in one tenant's namespace) never stops the others.
#[derive(Debug, Default)]
pub struct SinkReport {
    /// Written (patched, applied).
    pub done: Vec<String>,
    /// Deleted.
    pub deleted: Vec<String>,
    /// What failed, each naming its object.
    pub failed: Vec<K8sError>,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Patches the status of every gateway whose planned status differs from
/// its current one. A gateway deleted meanwhile (404) is skipped.
pub async fn write_statuses(client: &Client, plan: &Plan, current: &[Gateway]) -> SinkReport {
    let mut report = SinkReport::default();
    for g in &plan.gateways {
        let now = current.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(g.namespace.as_str())
                && c.metadata.name.as_deref() == Some(g.name.as_str())
        });
        if now.and_then(|c| c.status.as_ref()) == Some(&g.status) {
            continue;
        }
        let api: Api<Gateway> = Api::namespaced(client.clone(), &g.namespace);
        let mut status = serde_json::to_value(&g.status).unwrap_or_default();
        // A merge patch keeps what it does not mention: clear a DNS name
        // that is gone explicitly.
        if g.status.dns_name.is_none() {
            status["dnsName"] = serde_json::Value::Null;
        }
        let patch = json!({ "status": status });
        let what = format!("{}/{}", g.namespace, g.name);
        match api
            .patch_status(&g.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => report.done.push(what),
            Err(e) if is_not_found(&e) => {}
            Err(e) => report
                .failed
                .push(api_error(format!("patch status of Gateway {what}"))(e)),
        }
    }
    report
}

/// How proxies are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Envoy image, unless the template names one.
    pub image: String,
    /// The ADS server as proxies reach it (`host:port`).
    pub xds: String,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            image: "envoyproxy/envoy:v1.40.0".into(),
            xds: "epic-gateway-controller.epic-system.svc:18000".into(),
        }
    }
}

/// The name of a gateway's proxy `StatefulSet` and `ConfigMap`.
pub fn proxy_name(gateway: &str) -> String {
    format!("{gateway}-proxy")
}

/// The Envoy bootstrap every proxy of a gateway starts from: ADS over
/// gRPC to `settings.xds`; the node id comes from the command line.
pub fn proxy_bootstrap(settings: &ProxySettings) -> serde_json::Value {
    let (host, port) = settings
        .xds
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse::<u16>().unwrap_or(18000)))
        .unwrap_or_else(|| (settings.xds.clone(), 18000));
    json!({
        // Port 0: proxies share the host network of a gateway node.
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "epic-xds"}}],
                "set_node_on_first_message_only": true
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": [{
            "name": "epic-xds",
            "type": "STRICT_DNS",
            "connect_timeout": "2s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {"cluster_name": "epic-xds", "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}
            }]}]}
        }]}
    })
}

/// The proxies of a programmed gateway: a `StatefulSet` of Envoy on the
/// gateway nodes (host network, so they bind the public addresses the
/// gateway agent puts on the node), one replica per planned proxy. Pod `i`
/// connects as node `<tenant>/<gateway>/proxy-<i>`, as the engine plans.
pub fn proxy_statefulset(
    tenant: &str,
    namespace: &str,
    gateway: &str,
    replicas: i32,
    image: &str,
) -> StatefulSet {
    let name = proxy_name(gateway);
    let labels: BTreeMap<String, String> = [
        (GATEWAY_LABEL.to_owned(), gateway.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "epic-proxy".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    // `proxy-${POD_NAME##*-}`: the StatefulSet ordinal as the proxy index.
    let command = format!(
        "exec envoy -c /etc/epic/bootstrap.json --service-cluster '{tenant}/{gateway}' \
         --service-node \"{tenant}/{gateway}/proxy-${{POD_NAME##*-}}\" --disable-hot-restart"
    );
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(name.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    node_selector: Some(
                        [(GATEWAY_NODE_LABEL.to_owned(), "true".to_owned())]
                            .into_iter()
                            .collect(),
                    ),
                    containers: vec![Container {
                        name: "envoy".into(),
                        image: Some(image.to_owned()),
                        command: Some(vec!["/bin/sh".into(), "-c".into(), command]),
                        env: Some(vec![EnvVar {
                            name: "POD_NAME".into(),
                            value_from: Some(EnvVarSource {
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "bootstrap".into(),
                            mount_path: "/etc/epic".into(),
                            read_only: Some(true),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "bootstrap".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: name.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Applies the proxies of every programmed gateway (server-side apply of
/// its bootstrap `ConfigMap` and `StatefulSet`), leaves those of accepted
/// gateways whose new configuration was rejected as they are (the last good
/// configuration keeps serving), and deletes the others: `done` and
/// `deleted` name them as `namespace/name`.
pub async fn apply_proxies(
    client: &Client,
    plan: &Plan,
    inputs: &DesiredInputs,
    settings: &ProxySettings,
) -> SinkReport {
    let mut report = SinkReport::default();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let bootstrap = serde_json::to_string_pretty(&proxy_bootstrap(settings)).unwrap_or_default();
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    // An accepted gateway whose new configuration was rejected keeps
    // serving its last one: its proxies stay as they are.
    for g in plan.gateways.iter().filter(|g| {
        !g.programmed()
            && !g.status.addresses.is_empty()
            && g.condition("Accepted").is_some_and(|c| c.is_true())
    }) {
        wanted.insert((g.namespace.clone(), proxy_name(&g.name)));
    }
    for g in plan.gateways.iter().filter(|g| g.programmed()) {
        let image = inputs
            .gateways
            .iter()
            .find(|x| {
                x.metadata.namespace.as_deref() == Some(g.namespace.as_str())
                    && x.metadata.name.as_deref() == Some(g.name.as_str())
            })
            .and_then(|x| {
                inputs.templates.iter().find(|t| {
                    t.metadata.namespace == x.metadata.namespace
                        && t.metadata.name.as_deref() == Some(x.spec.template.as_str())
                })
            })
            .and_then(|t| t.spec.envoy_image.clone())
            .unwrap_or_else(|| settings.image.clone());
        let name = proxy_name(&g.name);
        let replicas = i32::try_from(g.status.proxies.len()).unwrap_or(i32::MAX);
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(g.namespace.clone()),
                labels: Some(
                    [
                        (GATEWAY_LABEL.to_owned(), g.name.clone()),
                        (
                            "app.kubernetes.io/managed-by".to_owned(),
                            MANAGED_BY.to_owned(),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            },
            data: Some(
                [("bootstrap.json".to_owned(), bootstrap.clone())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        let what = format!("{}/{name}", g.namespace);
        // Wanted whether or not this pass can apply it: a failure must not
        // delete what serves.
        wanted.insert((g.namespace.clone(), name.clone()));
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &g.namespace);
        if let Err(e) = maps.patch(&name, &apply, &Patch::Apply(&config_map)).await {
            report
                .failed
                .push(api_error(format!("apply ConfigMap {what}"))(e));
            continue;
        }
        let set = proxy_statefulset(&g.tenant, &g.namespace, &g.name, replicas, &image);
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &g.namespace);
        match sets.patch(&name, &apply, &Patch::Apply(&set)).await {
            Ok(_) => report.done.push(what),
            Err(e) => report
                .failed
                .push(api_error(format!("apply StatefulSet {what}"))(e)),
        }
    }
    // Proxies of gateways that are gone.
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let existing = match sets
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}")))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            report.failed.push(api_error("list StatefulSet")(e));
            return report;
        }
    };
    for set in existing {
        let (Some(ns), Some(name)) = (set.metadata.namespace, set.metadata.name) else {
            continue;
        };
        if wanted.contains(&(ns.clone(), name.clone())) {
            continue;
        }
        let what = format!("{ns}/{name}");
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        match sets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                report
                    .failed
                    .push(api_error(format!("delete StatefulSet {what}"))(e));
                continue;
            }
        }
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        match maps.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => report
                .failed
                .push(api_error(format!("delete ConfigMap {what}"))(e)),
        }
        report.deleted.push(what);
    }
    report
}
