//! What the engine plans from: the resources and what the runtime knows
//! of the platform (its gateway nodes, its own networks, the clock).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{AddressPool, BackendSet, Gateway, GatewayTemplate, Route, Tenant};

/// A node of the gateway platform that runs proxies and ends tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayNode {
    /// Node name.
    pub name: String,
    /// The address tunnels use on this node (hellos go there).
    pub address: IpAddr,
}

/// A tunnel from a user-cluster node to a gateway node whose remote end
/// the gateway node verified (its hello answered a challenge, and has not
/// expired since): the tunnel carries packets now.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerifiedTunnel {
    /// The tenant (its platform namespace).
    pub tenant: String,
    /// The user cluster.
    pub cluster: String,
    /// The user-cluster node.
    pub node: String,
    /// The gateway node the tunnel ends on.
    pub gateway_node: String,
}

/// Everything the engine plans from.
#[derive(Debug, Clone, Default)]
pub struct DesiredInputs {
    /// Tenants.
    pub tenants: Vec<Tenant>,
    /// Address pools.
    pub pools: Vec<AddressPool>,
    /// Gateway templates.
    pub templates: Vec<GatewayTemplate>,
    /// Gateways.
    pub gateways: Vec<Gateway>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Backend sets.
    pub backend_sets: Vec<BackendSet>,
    /// Gateway nodes.
    pub gateway_nodes: Vec<GatewayNode>,
    /// Networks the platform reserves for itself beyond its gateway nodes'
    /// tunnel addresses and its pools: node and service networks, BGP peers,
    /// the API and ADS servers. No endpoint or cluster node may use them
    /// (`epic_engine::admission`).
    pub platform_networks: Vec<ipnet::IpNet>,
    /// The Envoy images a `GatewayTemplate` may name (`envoyImage`);
    /// `None`: any (standalone mode runs its own Envoy and ignores them).
    pub envoy_images: Option<Vec<String>>,
    /// Now, in seconds since the Unix epoch (when released addresses were
    /// released, and whether their grace period is over).
    pub now: u64,
    /// Seconds a released address is held back before another tenant may
    /// get it (`epic_engine::grace`); 0: reused at once.
    pub address_grace: u64,
    /// The tunnels that carry packets now; `None`: every planned tunnel
    /// counts as verified. With a set, an endpoint is rendered into the
    /// proxies' configuration only once its tunnels to every gateway node
    /// are in it, so no proxy sends a first packet into a tunnel that
    /// would drop it (its tunnel is still planned, so its hellos can be
    /// verified).
    pub verified_tunnels: Option<BTreeSet<VerifiedTunnel>>,
}
