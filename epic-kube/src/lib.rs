//! `epic-kube`: the Kubernetes runtime of the engine: the reflector
//! sources, the sinks, and the two controllers built from them.
//!
//! One file per step:
//!
//! - [`reflect`]: reflectors, their merged change stream, the [`Debouncer`](reflect::Debouncer).
//! - Sources: [`platform::PlatformSource`] (the gateway platform),
//!   [`user::UserSource`] and [`user::MirrorSource`] (a user cluster and its
//!   mirror on the platform). Each `load()` reads the stores, no request.
//! - Sinks: [`status::write_statuses`] (gateway status, stamped conditions,
//!   optimistic concurrency), [`proxies::apply_proxies`] (one owned Envoy
//!   `StatefulSet` per programmed gateway, applied only when it differs),
//!   [`cluster`] (the mirror applied where it differs, status written back).
//! - Controllers: [`controller::GatewayController`] (leader election with
//!   [`lease::LeaseLock`]) and [`cluster_controller::ClusterController`]
//!   (with the load-balancer cleanup finalizer); [`ops`] serves their
//!   metrics and health.
//!
//! Recorded state lives in the gateways' status ([`recorded_from`]), so a
//! restarted controller keeps every address and tunnel id. Gateway nodes
//! are the `Node`s labelled [`GATEWAY_NODE_LABEL`]`=true`; their tunnel
//! address is the [`TUNNEL_ADDRESS_ANNOTATION`] annotation, else their
//! first `InternalIP`.
//!
//! One pass without reflectors, as a tool or a test would run it ([`load`]
//! and [`ProxyObjects::list`] read with LISTs):
//!
//! ```no_run
//! # async fn reconcile() -> Result<(), Box<dyn std::error::Error>> {
//! use epic_kube::{ProxyObjects, ProxySettings, apply_proxies, load, write_statuses};
//! use epic_engine::plan::plan;
//!
//! let client = kube::Client::try_default().await?;
//! let loaded = load(&client).await?;
//! let plan = plan(&loaded.inputs, &loaded.recorded);
//! let statuses = write_statuses(&client, &plan, loaded.gateways()).await;
//! let existing = ProxyObjects::list(&client).await?;
//! // The proxies' xDS identities come from the authority in `epic-system`.
//! let authority = epic_kube::xds_identity::authority(&client, "epic-system").await?;
//! let settings = ProxySettings::default();
//! let proxies = apply_proxies(
//!     &client,
//!     &plan,
//!     &loaded.inputs,
//!     &settings,
//!     &existing,
//!     Some(&authority),
//! )
//! .await;
//! for e in statuses.failed.iter().chain(&proxies.failed) {
//!     eprintln!("{e}");
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use epic_ipam::{AllocationRecord, PortSpec};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};

pub mod classes;
pub mod cluster;
pub mod cluster_controller;
pub mod controller;
pub mod drive;
pub mod finalizers;
pub mod index;
pub mod lease;
pub mod node_keys;
pub mod ops;
pub mod platform;
pub mod proxies;
pub mod reflect;
pub mod round;
pub mod status;
pub mod tunnel_keys;
pub mod user;
pub mod xds_identity;

pub use proxies::{
    ProxyObjects, ProxySettings, apply_proxies, proxy_bootstrap, proxy_name, proxy_statefulset,
};
pub use status::write_statuses;

use epic_engine::plan::{DesiredInputs, GatewayNode, Recorded, RecordedTunnel, TunnelKey};
use epic_model::{
    AddressPool, BackendSet, Gateway, GatewayTemplate, ListenerProtocol, ReleasedAddress, Route,
    Tenant,
};

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
    /// An xDS identity could not be made or read.
    #[error("{what}: {message}")]
    Identity {
        /// Which object.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A tunnel key could not be made or read (the message never holds
    /// a key).
    #[error("{what}: {message}")]
    Key {
        /// Which object.
        what: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> K8sError {
    let what = what.into();
    move |source| K8sError::Api {
        what,
        source: Box::new(source),
    }
}

/// Server-side applies `secret` (named `name`) through `secrets` as field
/// manager `manager`, taking over its fields; errors name `what`.
pub(crate) async fn apply_secret(
    secrets: &Api<k8s_openapi::api::core::v1::Secret>,
    name: &str,
    secret: &k8s_openapi::api::core::v1::Secret,
    manager: &str,
    what: &str,
) -> Result<(), K8sError> {
    use kube::api::{Patch, PatchParams};
    secrets
        .patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(secret),
        )
        .await
        .map_err(api_error(what))?;
    Ok(())
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
    /// The objects read, with the records rebuilt from their status. What
    /// only the runtime knows (the platform's networks, allowed images, the
    /// clock, the grace period) is left at its default for it to set.
    pub fn from_inputs(inputs: DesiredInputs) -> Loaded {
        let mut recorded = recorded_from(&inputs.gateways, &inputs.tenants, &inputs.templates);
        recorded.released = released_from(&inputs.pools);
        Loaded { inputs, recorded }
    }

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
    Ok(Loaded::from_inputs(DesiredInputs {
        tenants,
        pools,
        templates,
        gateways,
        routes,
        backend_sets,
        gateway_nodes: gateway_nodes(&nodes),
        ..DesiredInputs::default()
    }))
}

/// The released addresses the pools' status holds back
/// ([`epic_engine::grace`]), sorted.
pub fn released_from(pools: &[AddressPool]) -> Vec<ReleasedAddress> {
    let mut released: Vec<ReleasedAddress> = pools
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.released.iter().cloned())
        .collect();
    released.sort();
    released
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
    let (by_namespace, _) = epic_engine::plan::tenants_by_namespace(tenants);
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
            let sharing_key = epic_engine::plan::sharing_key_of(g, templates);
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

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Resolves once `stop` is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
