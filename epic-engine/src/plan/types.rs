//! The engine's inputs, records and output: what sources give the plan
//! and what sinks apply.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use epic_ipam::AllocationRecord;
use epic_templates::EnvoyResources;
use epic_xds::{Snapshot, SnapshotError};
use serde::{Deserialize, Serialize};

use super::{name_of, namespace_of};
use crate::tunnel_ids::TunnelIdSecret;
use epic_model::conditions::ConditionType;
use epic_model::{Condition, Gateway, GatewayStatus};
pub use epic_model::{DesiredInputs, GatewayNode};

/// Identity of a tunnel: both ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelKey {
    /// Tenant name.
    pub tenant: String,
    /// User cluster.
    pub cluster: String,
    /// Cluster node.
    pub node: String,
    /// Gateway node.
    pub gateway_node: String,
}

/// A recorded tunnel id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedTunnel {
    /// Its ends.
    #[serde(flatten)]
    pub key: TunnelKey,
    /// Its id.
    pub id: u32,
}

/// What earlier plans decided and must survive restarts: address
/// allocations and tunnel ids. Kubernetes mode rebuilds it from gateway
/// status, standalone mode keeps it in a state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recorded {
    /// Address allocations.
    #[serde(default)]
    pub allocations: Vec<AllocationRecord>,
    /// Tunnel ids.
    #[serde(default)]
    pub tunnels: Vec<RecordedTunnel>,
    /// Released addresses still held back ([`crate::grace`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<epic_model::ReleasedAddress>,
    /// The secret new tunnel ids are derived under; without one (tests,
    /// one-shot tools) the all-zero secret, whose ids anyone can compute.
    /// The runtimes set a random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_id_secret: Option<TunnelIdSecret>,
}

/// A problem not tied to one gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The object (`Kind namespace/name` or `Kind name`).
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// One gateway's plan.
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    /// Namespace on the platform.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Tenant name (empty if the namespace has no tenant).
    pub tenant: String,
    /// The tenant's id (0 if the namespace has no tenant): the data-path
    /// scope of its endpoints, which its proxies set as the mark of their
    /// upstream sockets ([`upstream_mark`]).
    pub tenant_id: u32,
    /// The Envoy configuration for its proxies; `None`: leave what the
    /// proxies have (rejected or not programmed).
    pub snapshot: Option<Arc<Snapshot>>,
    /// Public prefixes to announce once a proxy is ready.
    pub announcements: Vec<Announcement>,
    /// Its status.
    pub status: GatewayStatus,
}

impl GatewayPlan {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_.as_str())
    }

    /// Whether the gateway is programmed (has a snapshot and addresses).
    pub fn programmed(&self) -> bool {
        self.condition(ConditionType::Programmed)
            .is_some_and(Condition::is_true)
    }

    /// Whether the gateway is accepted.
    pub fn accepted(&self) -> bool {
        self.condition(ConditionType::Accepted)
            .is_some_and(Condition::is_true)
    }
}

/// A public prefix to announce for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Announcement {
    /// The allocated address.
    pub address: IpAddr,
    /// The announced prefix length (the pool's aggregation).
    pub prefix_len: u8,
}

/// A tunnel to program on a gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelPlan {
    /// Id.
    pub id: u32,
    /// Its ends.
    #[serde(flatten)]
    pub key: TunnelKey,
    /// The tenant's data-path id.
    pub tenant_id: u32,
    /// The cluster node's address before NAT is learned.
    pub node_address: IpAddr,
}

/// A pod endpoint to program on a gateway node: which tunnel reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPlan {
    /// The data-path scope: the tenant's mark
    /// ([`epic_gue::maps::tenant_mark`]), which its proxies carry on their
    /// upstream sockets.
    pub scope: u32,
    /// Pod address.
    pub address: IpAddr,
    /// Pod port.
    pub port: u16,
    /// IP protocol (6 or 17).
    pub protocol: u8,
    /// Tunnel id.
    pub tunnel: u32,
}

/// The engine's output.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every gateway, in plan order.
    pub gateways: Vec<GatewayPlan>,
    /// Tunnels, by id.
    pub tunnels: Vec<TunnelPlan>,
    /// Endpoints per gateway node.
    pub endpoints: BTreeMap<String, Vec<EndpointPlan>>,
    /// Problems not tied to a gateway.
    pub problems: Vec<Problem>,
    /// What to record for the next plan.
    pub recorded: Recorded,
}

impl Plan {
    /// The plan of gateway `namespace/name`.
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&GatewayPlan> {
        self.gateways
            .iter()
            .find(|g| g.namespace == namespace && g.name == name)
    }

    /// Tunnels ending on `gateway_node`.
    pub fn tunnels_on<'a>(&'a self, gateway_node: &'a str) -> impl Iterator<Item = &'a TunnelPlan> {
        self.tunnels
            .iter()
            .filter(move |t| t.key.gateway_node == gateway_node)
    }
}

/// `SO_MARK` (`SOL_SOCKET` 1, option 36).
const SO_MARK: (i64, i64) = (1, 36);

/// The bootstrap `cluster_manager` of a proxy of tenant `tenant_id`:
/// every upstream socket carries the tenant's mark
/// ([`epic_gue::maps::tenant_mark`]), which the gateway egress program
/// reads as the endpoint key's scope (and drops, unencapsulated, when no
/// endpoint has it). A template cannot
/// change it: per-cluster `upstream_bind_config` is refused by the
/// platform's policy (`epic_templates::policy`). Setting a mark needs
/// `CAP_NET_RAW` or `CAP_NET_ADMIN`.
///
/// ```
/// let manager = epic_engine::plan::upstream_mark(7);
/// assert_eq!(manager["upstream_bind_config"]["socket_options"][0]["int_value"], 0x4550_0007);
/// ```
pub fn upstream_mark(tenant_id: u32) -> serde_json::Value {
    let scope = epic_gue::maps::tenant_mark(tenant_id);
    serde_json::json!({
        "upstream_bind_config": {
            "socket_options": [{
                "description": "SO_MARK: the tenant's data-path scope",
                "level": SO_MARK.0,
                "name": SO_MARK.1,
                "int_value": scope,
                "state": "STATE_PREBIND"
            }]
        }
    })
}

/// The Envoy node id of proxy `index` of a gateway: `<tenant>/<gateway>/proxy-<index>`.
pub fn proxy_node_id(tenant: &str, gateway: &str, index: u32) -> String {
    format!("{tenant}/{gateway}/proxy-{index}")
}

/// Builds the xDS snapshot of rendered resources.
pub fn snapshot_of(resources: &EnvoyResources) -> Result<Snapshot, SnapshotError> {
    let mut builder = Snapshot::builder();
    for c in &resources.clusters {
        builder = builder.cluster(c);
    }
    for e in &resources.cluster_load_assignments {
        builder = builder.endpoints(e);
    }
    for l in &resources.listeners {
        builder = builder.listener(l);
    }
    for r in &resources.route_configurations {
        builder = builder.route(r);
    }
    builder.build()
}

/// Most proxies a gateway template may ask for.
pub const MAX_REPLICAS: u32 = 64;

/// The address allocator's owner id of gateway `g`: its uid, else
/// `namespace/name`.
pub fn owner_of(g: &Gateway) -> String {
    match g.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => format!("{}/{}", namespace_of(&g.metadata), name_of(&g.metadata)),
    }
}
