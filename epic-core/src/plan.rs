//! The engine: a pure function from desired state and recorded state to a
//! [`Plan`] — addresses, Envoy snapshots, tunnels, data-path endpoints,
//! announcements and status — that sinks apply.
//!
//! Same inputs and recorded state give the same plan: no clock, no
//! randomness, no hash order. Every decision with a reason a user sees
//! (which address, which tunnel id, which condition) is made here.
//!
//! # Rules
//!
//! - A namespaced object belongs to the tenant whose `namespace` is its
//!   namespace; objects in other namespaces are ignored and reported.
//! - A gateway's template is the `GatewayTemplate` of that name in its
//!   namespace, else the built-in template of that name (`tcp`, `udp`,
//!   `http`, `https`) with default settings; the tenant's `templates` list,
//!   when present, must allow it.
//! - Gateways that already hold addresses are planned before new ones, then
//!   by name, so a new gateway never takes a place (an address, a slot under
//!   the tenant's limit) from an existing one.
//! - A gateway's backends are the backend sets of its namespace that belong
//!   to its user cluster (`client.cluster`; all of them if it names none);
//!   its configuration, tunnels and endpoints cover only the clusters its
//!   listeners and routes use.
//! - Translation sees a gateway, its routes and its backends in the user
//!   cluster's namespace (`client.namespace`, a route's `namespace`, a
//!   backend set's `namespace`; default `default`), as the user wrote them.
//! - A gateway whose configuration does not render, is inconsistent, or
//!   whose snapshot is refused gets `Programmed=False` (reason `Invalid`)
//!   with the error and no snapshot, and keeps everything else — proxies,
//!   addresses, announcements, tunnels, endpoints: its proxies keep serving
//!   the last good configuration.
//! - Tunnels: one per (tenant, cluster, cluster node, gateway node) for
//!   every node that hosts a ready or unready endpoint of a programmed
//!   gateway, on every gateway node. Recorded ids are kept; a new tunnel
//!   gets an id derived from its ends under the records' secret
//!   ([`crate::tunnel_ids`]): not guessable, and free.
//! - Data-path endpoints are keyed by (scope, pod address, port, protocol),
//!   the scope being the tenant's id, which its proxies set as the mark of
//!   their upstream sockets: tenants may reuse each other's pod addresses.
//!   Within one tenant, a second gateway that would reach the same pod
//!   address and port through another tunnel (another cluster) gets
//!   `Programmed=False`, reason `EndpointConflict`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::tunnel_ids::TunnelIdSecret;
use epic_ipam::{AllocationRecord, AllocationRequest, Allocator, PoolSet, PortSpec};
use epic_templates::translate::{
    BackendInput, BackendRefInput, GatewayInputs, ListenerInput, Route as TemplateRoute, translate,
};
use epic_templates::{EndpointContext, EnvoyResources, GatewayIdentity};
use epic_xds::{Snapshot, SnapshotError};
use serde::{Deserialize, Serialize};

use crate::admission::{AdmittedPort, EndpointRefusal, Platform, TenantNetworks};
use crate::conditions::{ConditionType, Reason};
use crate::model::{
    AddressPool, BackendSet, Condition, Gateway, GatewayStatus, GatewayTemplate, Listener,
    ListenerProtocol, PortProtocol, Route, RouteStatus, Tenant, TunnelEndpoint, TunnelStatus,
};
pub use crate::render::RenderCache;
use crate::render::Templates;

/// A node of the gateway platform that runs proxies and ends tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayNode {
    /// Node name.
    pub name: String,
    /// The address tunnels use on this node (hellos go there).
    pub address: IpAddr,
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
    /// ([`crate::admission`]).
    pub platform_networks: Vec<ipnet::IpNet>,
    /// The Envoy images a `GatewayTemplate` may name (`envoyImage`);
    /// `None`: any (standalone mode runs its own Envoy and ignores them).
    pub envoy_images: Option<Vec<String>>,
    /// Now, in seconds since the Unix epoch (when released addresses were
    /// released, and whether their grace period is over).
    pub now: u64,
    /// Seconds a released address is held back before another tenant may
    /// get it ([`crate::grace`]); 0: reused at once.
    pub address_grace: u64,
}

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
    pub released: Vec<crate::model::ReleasedAddress>,
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
/// let manager = epic_core::plan::upstream_mark(7);
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

const DEFAULT_NAMESPACE: &str = "default";

/// Most proxies a gateway template may ask for.
pub const MAX_REPLICAS: u32 = 64;

fn ns_or_default(ns: &str) -> &str {
    if ns.is_empty() { DEFAULT_NAMESPACE } else { ns }
}

fn name_of(meta: &kube::core::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn namespace_of(meta: &kube::core::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

/// The IPAM owner of a gateway: its uid, else `namespace/name`.
/// The address allocator's owner id of gateway `g`: its uid, else
/// `namespace/name`.
pub fn owner_of(g: &Gateway) -> String {
    match g.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => format!("{}/{}", namespace_of(&g.metadata), name_of(&g.metadata)),
    }
}

/// How the template of one gateway resolved.
struct ResolvedTemplate {
    render_name: String,
    pool: Option<String>,
    families: crate::model::AddressFamilies,
    replicas: u32,
}

/// The valid tenants by namespace, and the problems of the others: in
/// name order, a tenant with id 0, an id already used, or a namespace
/// already claimed is refused. Every consumer of tenants (the plan, the
/// Kubernetes records) resolves them with this one function.
pub fn tenants_by_namespace(tenants: &[Tenant]) -> (BTreeMap<&str, &Tenant>, Vec<Problem>) {
    let mut by_namespace: BTreeMap<&str, &Tenant> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut ids: BTreeMap<u32, &str> = BTreeMap::new();
    let mut sorted: Vec<&Tenant> = tenants.iter().collect();
    sorted.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    for t in sorted {
        let name = name_of(&t.metadata);
        let object = format!("Tenant {name}");
        let refused = if t.spec.id == 0 {
            Some("id 0 is reserved".to_owned())
        } else if t.spec.id > epic_gue::maps::MAX_TENANT_ID {
            Some(format!(
                "id {} is too large: tenant ids are 1 to {} (a socket mark carries them)",
                t.spec.id,
                epic_gue::maps::MAX_TENANT_ID
            ))
        } else if let Some(other) = ids.get(&t.spec.id) {
            Some(format!(
                "id {} is already used by tenant {other}",
                t.spec.id
            ))
        } else {
            by_namespace.get(t.spec.namespace.as_str()).map(|other| {
                format!(
                    "namespace {} already belongs to tenant {}",
                    t.spec.namespace,
                    name_of(&other.metadata)
                )
            })
        };
        match refused {
            Some(message) => problems.push(Problem { object, message }),
            None => {
                ids.insert(t.spec.id, name);
                by_namespace.insert(t.spec.namespace.as_str(), t);
            }
        }
    }
    (by_namespace, problems)
}

/// The sharing key a gateway's addresses are allocated with: its
/// `sharingKey`, if its template allows sharing (built-in templates do not).
pub fn sharing_key_of(g: &Gateway, templates: &[GatewayTemplate]) -> Option<String> {
    let allowed = templates.iter().any(|t| {
        namespace_of(&t.metadata) == namespace_of(&g.metadata)
            && name_of(&t.metadata) == g.spec.template
            && t.spec.allow_sharing
    });
    g.spec.sharing_key.clone().filter(|_| allowed)
}

/// Plans everything. Pure: see the module docs for the rules.
pub fn plan(inputs: &DesiredInputs, recorded: &Recorded) -> Plan {
    plan_incremental(inputs, recorded, &mut RenderCache::new())
}

/// [`plan`] with a [`RenderCache`] kept between plans: a gateway whose
/// template and rendering context did not change keeps its rendered
/// snapshot instead of being rendered again. The plan is the one [`plan`]
/// gives for the same inputs.
pub fn plan_incremental(
    inputs: &DesiredInputs,
    recorded: &Recorded,
    cache: &mut RenderCache,
) -> Plan {
    let mut out = Plan::default();

    let (tenants, problems) = tenants_by_namespace(&inputs.tenants);
    out.problems.extend(problems);

    // Pools and the allocator, rebuilt from the records.
    let specs: Vec<_> = inputs
        .pools
        .iter()
        .map(|p| p.spec.to_pool_spec(name_of(&p.metadata)))
        .collect();
    let pools = match PoolSet::new(specs) {
        Ok(pools) => pools,
        Err(e) => {
            out.problems.push(Problem {
                object: "AddressPool".into(),
                message: e.to_string(),
            });
            PoolSet::new(Vec::new()).unwrap_or_else(|_| unreachable!("an empty pool set is valid"))
        }
    };
    // Endpoint admission sees the pools as they are declared.
    let platform_pools = pools.clone();
    let (mut ipam, report) = Allocator::with_records(pools, recorded.allocations.iter());
    for c in report.conflicts {
        out.problems.push(Problem {
            object: format!("allocation of {}", c.owner),
            message: format!("not restored: {}", c.error),
        });
    }

    // Release owners that are gone; what they leave free is held back.
    let owners: BTreeSet<String> = inputs.gateways.iter().map(owner_of).collect();
    let before = ipam.records();
    for record in &before {
        if !owners.contains(&record.owner) {
            ipam.release(&record.owner);
        }
    }
    let held_back = crate::grace::hold_back(
        &mut ipam,
        &before,
        &recorded.released,
        inputs.now,
        inputs.address_grace,
    );

    // Templates, registered under `namespace/name`; the inputs indexed.
    let mut templates = Templates::new(&inputs.templates, cache);
    let platform = Platform::new(
        &inputs.gateway_nodes,
        &inputs.platform_networks,
        &platform_pools,
    );
    let catalog = Catalog::new(inputs, &tenants, platform, &mut out.problems);

    for r in &inputs.routes {
        if template_route(r).is_none() {
            out.problems.push(Problem {
                object: format!(
                    "Route {}/{}",
                    namespace_of(&r.metadata),
                    name_of(&r.metadata)
                ),
                message: "exactly one of `http`, `tcp` and `udp` must be set".into(),
            });
        }
    }

    // Plan order: gateways holding addresses first, then by namespace/name.
    let mut gateways: Vec<&Gateway> = inputs.gateways.iter().collect();
    gateways.sort_by_cached_key(|g| {
        (
            ipam.allocation(&owner_of(g)).is_none(),
            namespace_of(&g.metadata).to_owned(),
            name_of(&g.metadata).to_owned(),
        )
    });

    let mut usage = TenantUsage {
        held_back,
        ..Default::default()
    };
    let mut tunnel_ids: BTreeMap<TunnelKey, u32> = recorded
        .tunnels
        .iter()
        .map(|t| (t.key.clone(), t.id))
        .collect();
    let mut wanted_tunnels: BTreeMap<TunnelKey, (u32, IpAddr)> = BTreeMap::new();
    let mut gateway_tunnels: Vec<Vec<(TunnelKey, IpAddr)>> = Vec::new();
    let mut endpoint_owner: BTreeMap<EndpointClaim, (String, TunnelKey)> = BTreeMap::new();
    let mut refused_endpoints: BTreeSet<Problem> = BTreeSet::new();

    for g in gateways {
        let ns = namespace_of(&g.metadata);
        let name = name_of(&g.metadata);
        let mut gp = GatewayPlan {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            tenant: String::new(),
            tenant_id: 0,
            snapshot: None,
            announcements: Vec::new(),
            status: GatewayStatus::default(),
        };
        let mut my_tunnels = Vec::new();
        let outcome = plan_gateway(
            g,
            &tenants,
            &mut templates,
            &mut ipam,
            &mut usage,
            &catalog,
            &mut gp,
        );
        match outcome {
            Ok(Admitted { endpoints, refused }) => {
                refused_endpoints.extend(refused);
                // Tunnels and endpoints for every admitted endpoint.
                let tenant = tenants[ns];
                let tenant_name = name_of(&tenant.metadata).to_owned();
                let mut conflict = None;
                let mut claimed = Vec::new();
                for node in &inputs.gateway_nodes {
                    for &(set, port, endpoint, node_address) in &endpoints {
                        let key = TunnelKey {
                            tenant: tenant_name.clone(),
                            cluster: set.spec.cluster.clone(),
                            node: endpoint.node.clone(),
                            gateway_node: node.name.clone(),
                        };
                        let ekey = (
                            node.name.clone(),
                            epic_gue::maps::tenant_mark(tenant.spec.id),
                            endpoint.address,
                            endpoint.port,
                            port,
                        );
                        match endpoint_owner.get(&ekey) {
                            Some((other, other_key)) if other_key != &key => {
                                conflict = Some(format!(
                                    "endpoint {}:{} is already reached through gateway {other} of another cluster",
                                    endpoint.address, endpoint.port
                                ));
                            }
                            _ => claimed.push((ekey, key.clone())),
                        }
                        if !my_tunnels.iter().any(|(k, _)| k == &key) {
                            my_tunnels.push((key, node_address));
                        }
                    }
                }
                if let Some(message) = conflict {
                    set_condition(
                        &mut gp,
                        ConditionType::Programmed.condition(
                            false,
                            Reason::EndpointConflict,
                            message,
                        ),
                    );
                    gp.snapshot = None;
                    gp.announcements.clear();
                    my_tunnels.clear();
                } else {
                    for (ekey, key) in claimed {
                        endpoint_owner.insert(ekey, (format!("{ns}/{name}"), key));
                    }
                    for (key, node_address) in &my_tunnels {
                        wanted_tunnels
                            .entry(key.clone())
                            .or_insert((tenant.spec.id, *node_address));
                    }
                }
            }
            Err(condition) => set_condition(&mut gp, *condition),
        }
        gateway_tunnels.push(my_tunnels);
        out.gateways.push(gp);
    }

    out.problems.extend(refused_endpoints);

    // Tunnel ids: keep recorded ones still wanted, derive the new ones.
    tunnel_ids.retain(|k, _| wanted_tunnels.contains_key(k));
    let secret = recorded.tunnel_id_secret.clone().unwrap_or_default();
    crate::tunnel_ids::assign(&mut tunnel_ids, wanted_tunnels.keys(), &secret);
    for (key, (tenant_id, node_address)) in &wanted_tunnels {
        out.tunnels.push(TunnelPlan {
            id: tunnel_ids[key],
            key: key.clone(),
            tenant_id: *tenant_id,
            node_address: *node_address,
        });
    }
    out.tunnels.sort_by_key(|t| t.id);
    for ((gateway_node, scope, address, port, protocol), (_, key)) in &endpoint_owner {
        out.endpoints
            .entry(gateway_node.clone())
            .or_default()
            .push(EndpointPlan {
                scope: *scope,
                address: *address,
                port: *port,
                protocol: *protocol,
                tunnel: tunnel_ids[key],
            });
    }
    let mut tunnel_endpoints: BTreeMap<&TunnelKey, BTreeSet<TunnelEndpoint>> = BTreeMap::new();
    for ((_, _, address, port, protocol), (_, key)) in &endpoint_owner {
        if let Some(protocol) = PortProtocol::from_number(*protocol) {
            tunnel_endpoints
                .entry(key)
                .or_default()
                .insert(TunnelEndpoint {
                    address: *address,
                    port: *port,
                    protocol,
                });
        }
    }
    for (gp, keys) in out.gateways.iter_mut().zip(&gateway_tunnels) {
        gp.status.tunnels = keys
            .iter()
            .map(|(k, _)| TunnelStatus {
                id: tunnel_ids[k],
                cluster: k.cluster.clone(),
                node: k.node.clone(),
                gateway_node: k.gateway_node.clone(),
                endpoints: tunnel_endpoints
                    .get(k)
                    .map(|e| e.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect();
        gp.status.tunnels.sort_by_key(|t| t.id);
    }
    out.recorded = Recorded {
        allocations: ipam
            .records()
            .into_iter()
            .filter(|r| !crate::grace::is_placeholder(&r.owner))
            .collect(),
        released: usage.held_back,
        tunnels: tunnel_ids
            .into_iter()
            .map(|(key, id)| RecordedTunnel { key, id })
            .collect(),
        tunnel_id_secret: recorded.tunnel_id_secret.clone(),
    };
    drop(templates);
    cache.finish_plan();
    out
}

fn set_condition(gp: &mut GatewayPlan, condition: Condition) {
    gp.status.conditions.retain(|c| c.type_ != condition.type_);
    gp.status.conditions.push(condition);
    gp.status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The inputs indexed for the per-gateway steps: look-ups instead of scans,
/// so planning stays linear in the number of gateways.
struct Catalog<'a> {
    inputs: &'a DesiredInputs,
    /// What endpoints may not use.
    platform: Platform<'a>,
    /// Each valid tenant's `clusterNetworks`, by namespace.
    networks: BTreeMap<&'a str, TenantNetworks>,
    /// Backend sets by (platform namespace, service).
    sets_by_service: BTreeMap<(&'a str, &'a str), Vec<&'a BackendSet>>,
    /// Routes by platform namespace.
    routes_by_ns: BTreeMap<&'a str, Vec<&'a Route>>,
}

impl<'a> Catalog<'a> {
    fn new(
        inputs: &'a DesiredInputs,
        tenants: &BTreeMap<&'a str, &'a Tenant>,
        platform: Platform<'a>,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut networks = BTreeMap::new();
        for (ns, tenant) in tenants {
            let (parsed, bad) = TenantNetworks::parse(tenant.spec.cluster_networks.as_deref());
            problems.extend(bad.into_iter().map(|message| Problem {
                object: format!("Tenant {}", name_of(&tenant.metadata)),
                message,
            }));
            networks.insert(*ns, parsed);
        }
        let mut sets_by_service: BTreeMap<(&str, &str), Vec<&BackendSet>> = BTreeMap::new();
        for set in &inputs.backend_sets {
            sets_by_service
                .entry((namespace_of(&set.metadata), set.spec.service.as_str()))
                .or_default()
                .push(set);
        }
        let mut routes_by_ns: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
        for route in &inputs.routes {
            routes_by_ns
                .entry(namespace_of(&route.metadata))
                .or_default()
                .push(route);
        }
        // A tenant's routes beyond its limit, in name order, are ignored.
        for (ns, routes) in routes_by_ns.iter_mut() {
            let Some(limit) = tenants.get(ns).and_then(|t| t.spec.limits.routes) else {
                continue;
            };
            routes.sort_by_key(|r| name_of(&r.metadata));
            for r in routes.iter().skip(limit as usize) {
                problems.push(Problem {
                    object: format!("Route {ns}/{}", name_of(&r.metadata)),
                    message: format!("ignored: the tenant may have at most {limit} routes"),
                });
            }
            routes.truncate(limit as usize);
        }
        Catalog {
            inputs,
            platform,
            networks,
            sets_by_service,
            routes_by_ns,
        }
    }
}

/// An endpoint as a gateway node's data path keys it: (gateway node, scope,
/// pod address, port, protocol).
type EndpointClaim = (String, u32, IpAddr, u16, u8);

/// An admitted backend endpoint of a gateway: its set, its protocol
/// number, the endpoint, its node's address.
type BackendEndpoint<'a> = (&'a BackendSet, u8, &'a crate::model::Endpoint, IpAddr);

/// What the tenants planned so far use, for their limits.
#[derive(Debug, Default)]
struct TenantUsage {
    /// Gateways accepted, by tenant namespace.
    gateways: BTreeMap<String, u32>,
    /// Endpoints admitted, by tenant namespace.
    endpoints: BTreeMap<String, u32>,
    /// Released addresses held back ([`crate::grace`]).
    held_back: Vec<crate::model::ReleasedAddress>,
}

impl TenantUsage {
    /// Counts the admitted endpoints of `ports` against the tenant's
    /// endpoint limit; those beyond it move to the refused ones.
    fn limit_endpoints(&mut self, tenant: &Tenant, ports: &mut [AdmittedPort<'_>]) {
        let used = self
            .endpoints
            .entry(tenant.spec.namespace.clone())
            .or_default();
        let limit = tenant.spec.limits.endpoints;
        for port in ports {
            let room = limit.map_or(usize::MAX, |l| l.saturating_sub(*used) as usize);
            if port.endpoints.len() > room {
                let over = port.endpoints.split_off(room);
                let limit = limit.unwrap_or(u32::MAX);
                port.refused.extend(
                    over.into_iter()
                        .map(|(e, _)| (e, EndpointRefusal::TenantLimit(limit))),
                );
            }
            *used = used.saturating_add(u32::try_from(port.endpoints.len()).unwrap_or(u32::MAX));
        }
    }
}

/// What a planned gateway uses: its admitted endpoints, and the refused
/// ones as problems of their backend sets.
struct Admitted<'a> {
    endpoints: Vec<BackendEndpoint<'a>>,
    refused: Vec<Problem>,
}

/// Plans one gateway; `Err` is the condition that stops it.
fn plan_gateway<'a>(
    g: &Gateway,
    tenants: &BTreeMap<&str, &Tenant>,
    templates: &mut Templates<'_>,
    ipam: &mut Allocator,
    usage: &mut TenantUsage,
    catalog: &Catalog<'a>,
    gp: &mut GatewayPlan,
) -> Result<Admitted<'a>, Box<Condition>> {
    let ns = namespace_of(&g.metadata);
    let name = name_of(&g.metadata);
    let owner = owner_of(g);
    let not_accepted = |reason: Reason, message: String| {
        Box::new(ConditionType::Accepted.condition(false, reason, message))
    };
    let Some(tenant) = tenants.get(ns) else {
        ipam.release(&owner);
        return Err(not_accepted(
            Reason::UnknownTenant,
            format!("namespace {ns:?} belongs to no tenant"),
        ));
    };
    let tenant_name = name_of(&tenant.metadata);
    gp.tenant = tenant_name.to_owned();
    gp.tenant_id = tenant.spec.id;

    // Template.
    let resolved = match templates
        .by_key
        .get(&(ns.to_owned(), g.spec.template.clone()))
    {
        Some(t) => {
            let key = format!("{ns}/{}", g.spec.template);
            if !(1..=MAX_REPLICAS).contains(&t.spec.replicas) {
                ipam.release(&owner);
                return Err(not_accepted(
                    Reason::InvalidParameters,
                    format!(
                        "GatewayTemplate {key}: replicas {} is outside 1..={MAX_REPLICAS}",
                        t.spec.replicas
                    ),
                ));
            }
            if let (Some(image), Some(allowed)) =
                (&t.spec.envoy_image, &catalog.inputs.envoy_images)
                && !allowed.contains(image)
            {
                ipam.release(&owner);
                return Err(not_accepted(
                    Reason::NotAllowed,
                    format!(
                        "GatewayTemplate {key}: Envoy image {image:?} is not one the platform allows"
                    ),
                ));
            }
            if let Some(e) = templates.errors.get(&key) {
                ipam.release(&owner);
                return Err(not_accepted(
                    Reason::InvalidParameters,
                    format!("GatewayTemplate {key}: {e}"),
                ));
            }
            ResolvedTemplate {
                render_name: key,
                pool: t.spec.pool.clone(),
                families: t.spec.families,
                replicas: t.spec.replicas,
            }
        }
        None if epic_templates::BUILTIN_TEMPLATES.contains(&g.spec.template.as_str()) => {
            ResolvedTemplate {
                render_name: g.spec.template.clone(),
                pool: None,
                families: Default::default(),
                replicas: 1,
            }
        }
        None => {
            ipam.release(&owner);
            return Err(not_accepted(
                Reason::InvalidParameters,
                format!(
                    "no GatewayTemplate {ns}/{} and no built-in template of that name",
                    g.spec.template
                ),
            ));
        }
    };
    if let Some(allowed) = &tenant.spec.templates
        && !allowed.contains(&g.spec.template)
    {
        ipam.release(&owner);
        return Err(not_accepted(
            Reason::NotAllowed,
            format!(
                "tenant {tenant_name} may not use template {:?}",
                g.spec.template
            ),
        ));
    }
    if let Some(problem) = listener_problem(&g.spec.listeners) {
        ipam.release(&owner);
        return Err(not_accepted(Reason::InvalidParameters, problem));
    }

    // Tenant gateway limit.
    let count = usage
        .gateways
        .entry(tenant.spec.namespace.clone())
        .or_default();
    if let Some(limit) = tenant.spec.limits.gateways
        && *count >= limit
    {
        ipam.release(&owner);
        return Err(not_accepted(
            Reason::TenantLimit,
            format!("tenant {tenant_name} may have at most {limit} gateways"),
        ));
    }
    *count += 1;
    set_condition(
        gp,
        ConditionType::Accepted.condition(true, Reason::Accepted, ""),
    );

    // Addresses.
    let not_programmed = |reason: Reason, message: String| {
        Box::new(ConditionType::Programmed.condition(false, reason, message))
    };
    let mut request = AllocationRequest::new(&owner, tenant_name, resolved.families.into());
    if let Some(pool) = &resolved.pool {
        request = request.in_pool(pool);
    }
    for a in &g.spec.addresses {
        request = request.with_address(*a);
    }
    if let Some(key) = sharing_key_of(g, &catalog.inputs.templates) {
        request = request.with_sharing_key(key);
    }
    request = request.with_ports(g.spec.listeners.iter().map(|l| match l.protocol {
        ListenerProtocol::Udp => PortSpec::udp(l.port),
        _ => PortSpec::tcp(l.port),
    }));
    let allocation = match ipam.allocation(&owner) {
        Some(a)
            if g.spec.addresses.is_empty()
                || g.spec
                    .addresses
                    .iter()
                    .all(|x| a.addresses.iter().any(|y| y.address == *x)) =>
        {
            a
        }
        _ => {
            ipam.release(&owner);
            crate::grace::reclaim(ipam, &mut usage.held_back, tenant_name, &g.spec.addresses);
            match ipam.allocate(&request) {
                Ok(a) => a,
                Err(e) => {
                    return Err(not_programmed(Reason::AddressNotAssigned, e.to_string()));
                }
            }
        }
    };
    // Held-back addresses are the tenant's in the allocator, not in its limit.
    let held = crate::grace::held_for(&usage.held_back, tenant_name);
    if let Some(limit) = tenant.spec.limits.addresses
        && ipam.tenant_address_count(tenant_name).saturating_sub(held) > limit as usize
    {
        ipam.release(&owner);
        return Err(not_programmed(
            Reason::AddressNotAssigned,
            format!("tenant {tenant_name} may hold at most {limit} addresses"),
        ));
    }
    gp.status.addresses = allocation.addresses.iter().map(|a| a.address).collect();
    let announcements: Vec<Announcement> = allocation
        .addresses
        .iter()
        .map(|a| Announcement {
            address: a.address,
            prefix_len: a.prefix.prefix_len(),
        })
        .collect();

    // Translation and rendering: the backend sets of the gateway's own
    // user cluster (any cluster's, for a gateway that names none).
    let client_ns = ns_or_default(&g.spec.client.namespace).to_owned();
    let cluster = g.spec.client.cluster.as_str();
    let serves = |b: &&BackendSet| {
        namespace_of(&b.metadata) == ns && (cluster.is_empty() || b.spec.cluster == cluster)
    };
    // Only the services the listeners or the namespace's routes name are
    // translated: planning stays linear in the number of gateways.
    let mut named: BTreeSet<String> = g
        .spec
        .listeners
        .iter()
        .flat_map(|l| l.backends.iter().map(|b| b.name.clone()))
        .collect();
    let ns_routes = catalog.routes_by_ns.get(ns).map_or(&[][..], Vec::as_slice);
    for r in ns_routes {
        backend_names(
            &serde_json::to_value(&r.spec).unwrap_or_default(),
            &mut named,
        );
    }
    let mut backends = Vec::new();
    let mut endpoints: Vec<BackendEndpoint<'a>> = Vec::new();
    static UNLISTED: TenantNetworks = TenantNetworks::UNLISTED;
    let networks = catalog.networks.get(ns).unwrap_or(&UNLISTED);
    let mut candidates: Vec<AdmittedPort<'a>> = named
        .iter()
        .filter_map(|service| catalog.sets_by_service.get(&(ns, service.as_str())))
        .flatten()
        .copied()
        .filter(serves)
        .flat_map(|set| catalog.platform.admit(set, networks))
        .collect();
    usage.limit_endpoints(tenant, &mut candidates);
    for admitted in &candidates {
        // Only admitted endpoints are rendered.
        backends.push(BackendInput {
            namespace: ns_or_default(&admitted.set.spec.namespace).to_owned(),
            name: admitted.set.spec.service.clone(),
            port: admitted.port.port,
            endpoints: admitted
                .endpoints
                .iter()
                .map(|(e, _)| EndpointContext {
                    address: e.address,
                    port: e.port,
                    ready: e.ready,
                    node: Some(e.node.clone()),
                })
                .collect(),
        });
    }
    let gateway_inputs = GatewayInputs {
        gateway: GatewayIdentity {
            name: name.to_owned(),
            namespace: client_ns.clone(),
            tenant: tenant_name.to_owned(),
            uid: owner.clone(),
        },
        addresses: gp.status.addresses.clone(),
        dns_name: String::new(),
        listeners: g.spec.listeners.iter().map(listener_input).collect(),
        backends,
    };
    let routes: Vec<(&Route, TemplateRoute)> = ns_routes
        .iter()
        .filter_map(|r| template_route(r).map(|t| (*r, t)))
        .collect();
    let template_routes: Vec<TemplateRoute> = routes.iter().map(|(_, t)| t.clone()).collect();
    let mut translation = translate(&gateway_inputs, &template_routes);
    // The gateway's configuration holds the clusters its listeners and
    // routes use, not every backend of the namespace.
    let referenced = referenced_clusters(&translation.context);
    translation
        .context
        .clusters
        .retain(|c| referenced.contains(&c.name));
    for ((route, _), report) in routes.iter().zip(&translation.reports) {
        if report.attached_listeners.is_empty() && report.issues.is_empty() {
            continue; // not for this gateway
        }
        let mut conditions = vec![ConditionType::Accepted.condition(
            report.accepted(),
            if report.accepted() {
                Reason::Accepted
            } else {
                Reason::NotAllowedByListeners
            },
            "",
        )];
        let problems: Vec<String> = report
            .issues
            .iter()
            .map(|i| match i.rule {
                Some(rule) => format!("rule {rule}: {}", i.message),
                None => i.message.clone(),
            })
            .collect();
        conditions.push(ConditionType::ResolvedRefs.condition(
            report.resolved_refs(),
            if report.resolved_refs() {
                Reason::ResolvedRefs
            } else {
                Reason::BackendNotFound
            },
            problems.join("; "),
        ));
        gp.status.routes.push(RouteStatus {
            name: name_of(&route.metadata).to_owned(),
            listeners: report.attached_listeners.clone(),
            conditions,
        });
    }
    // Endpoints of the clusters the configuration uses.
    let used: BTreeSet<(String, String, u16)> = translation
        .context
        .clusters
        .iter()
        .map(|c| {
            (
                c.service.namespace.clone(),
                c.service.name.clone(),
                c.service.port,
            )
        })
        .collect();
    let mut refused = Vec::new();
    for admitted in candidates {
        let id = (
            ns_or_default(&admitted.set.spec.namespace).to_owned(),
            admitted.set.spec.service.clone(),
            admitted.port.port,
        );
        if used.contains(&id) {
            let protocol = admitted.port.protocol.number();
            for (e, node) in admitted.endpoints {
                endpoints.push((admitted.set, protocol, e, node));
            }
            refused.extend(
                admitted
                    .refused
                    .into_iter()
                    .map(|(e, why)| (admitted.set, e, why)),
            );
        }
    }
    set_condition(gp, endpoints_admitted(&refused));
    let refused: Vec<Problem> = refused
        .into_iter()
        .map(|(set, e, why)| Problem {
            object: format!(
                "BackendSet {}/{}",
                namespace_of(&set.metadata),
                name_of(&set.metadata)
            ),
            message: format!("endpoint {}:{} is not used: {why}", e.address, e.port),
        })
        .collect();

    gp.status.proxies = (0..resolved.replicas)
        .map(|i| proxy_node_id(tenant_name, name, i))
        .collect();
    gp.announcements = announcements;
    // A configuration that does not render, is inconsistent or is refused
    // as a snapshot leaves the last good one serving: the gateway keeps its
    // proxies, addresses, tunnels and endpoints; `Programmed` says why.
    let outcome = templates.render(&resolved.render_name, &translation.context);
    match outcome {
        Ok((dns_name, snapshot)) => {
            if !dns_name.is_empty() {
                gp.status.dns_name = Some(dns_name);
            }
            gp.snapshot = Some(snapshot);
            set_condition(
                gp,
                ConditionType::Programmed.condition(true, Reason::Programmed, ""),
            );
        }
        Err(message) => set_condition(gp, *not_programmed(Reason::Invalid, message)),
    }
    Ok(Admitted { endpoints, refused })
}

/// The `EndpointsAdmitted` condition for the `refused` endpoints of a
/// gateway: the first few are named, the count says the rest.
fn endpoints_admitted(
    refused: &[(&BackendSet, &crate::model::Endpoint, EndpointRefusal)],
) -> Condition {
    const NAMED: usize = 5;
    if refused.is_empty() {
        return ConditionType::EndpointsAdmitted.condition(true, Reason::EndpointsAdmitted, "");
    }
    let reason = if refused
        .iter()
        .all(|(_, _, why)| matches!(why, EndpointRefusal::TenantLimit(_)))
    {
        Reason::TenantLimit
    } else {
        Reason::EndpointRefused
    };
    let mut message = format!("{} endpoints refused, not rendered: ", refused.len());
    let named: Vec<String> = refused
        .iter()
        .take(NAMED)
        .map(|(set, e, why)| format!("{}:{} of {} ({why})", e.address, e.port, set.spec.service))
        .collect();
    message.push_str(&named.join("; "));
    if refused.len() > NAMED {
        message.push_str(&format!("; and {} more", refused.len() - NAMED));
    }
    ConditionType::EndpointsAdmitted.condition(false, reason, message)
}

/// Every `name` under a `backendRef`/`backendRefs` key of a route spec
/// (rules, and request mirrors in filters), whatever the route kind.
fn backend_names(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("backendRef", serde_json::Value::Object(r)) => {
                        if let Some(name) = r.get("name").and_then(|n| n.as_str()) {
                            out.insert(name.to_owned());
                        }
                        backend_names(v, out);
                    }
                    ("backendRefs", serde_json::Value::Array(refs)) => {
                        for r in refs {
                            if let Some(name) = r.get("name").and_then(|n| n.as_str()) {
                                out.insert(name.to_owned());
                            }
                            backend_names(r, out);
                        }
                    }
                    _ => backend_names(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| backend_names(v, out)),
        _ => {}
    }
}

/// The clusters a context's listeners and routes send to or mirror to.
fn referenced_clusters(context: &epic_templates::TemplateContext) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in &context.listeners {
        out.extend(l.backends.iter().map(|b| b.cluster.clone()));
        for vh in &l.virtual_hosts {
            for r in &vh.routes {
                if let epic_templates::RouteAction::Forward { backends } = &r.action {
                    out.extend(backends.iter().map(|b| b.cluster.clone()));
                }
                out.extend(r.mirrors.iter().map(|m| m.cluster.clone()));
            }
        }
    }
    out
}

fn listener_problem(listeners: &[Listener]) -> Option<String> {
    if listeners.is_empty() {
        return Some("a gateway needs at least one listener".into());
    }
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for l in listeners {
        if !names.insert(l.name.as_str()) {
            return Some(format!("listener name {:?} is used twice", l.name));
        }
        let udp = l.protocol == ListenerProtocol::Udp;
        if !ports.insert((l.port, udp)) {
            return Some(format!(
                "port {}/{} is used by two listeners",
                l.port,
                if udp { "udp" } else { "tcp" }
            ));
        }
        if l.port == 0 {
            return Some(format!("listener {:?}: port 0", l.name));
        }
    }
    None
}

fn listener_input(l: &Listener) -> ListenerInput {
    ListenerInput {
        name: l.name.clone(),
        port: l.port,
        protocol: l.protocol.into(),
        hostname: l.hostname.clone(),
        tls_secret: l.tls_secret.clone(),
        backends: l
            .backends
            .iter()
            .map(|b| BackendRefInput {
                namespace: ns_or_default(&b.namespace).to_owned(),
                name: b.name.clone(),
                port: b.port,
                weight: b.weight,
            })
            .collect(),
    }
}

/// The Gateway API route of a `Route`, seen in its user namespace.
fn template_route(r: &Route) -> Option<TemplateRoute> {
    use gateway_api::experimental::tcproutes::TcpRoute;
    use gateway_api::experimental::udproutes::UdpRoute;
    use gateway_api::httproutes::HttpRoute;
    let name = name_of(&r.metadata);
    let meta = kube::core::ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns_or_default(&r.spec.namespace).to_owned()),
        creation_timestamp: r.metadata.creation_timestamp.clone(),
        ..Default::default()
    };
    match (&r.spec.http, &r.spec.tcp, &r.spec.udp) {
        (Some(http), None, None) => Some(TemplateRoute::Http(HttpRoute {
            metadata: meta,
            spec: http.clone(),
            status: None,
        })),
        (None, Some(tcp), None) => Some(TemplateRoute::Tcp(TcpRoute {
            metadata: meta,
            spec: tcp.clone(),
            status: None,
        })),
        (None, None, Some(udp)) => Some(TemplateRoute::Udp(UdpRoute {
            metadata: meta,
            spec: udp.clone(),
            status: None,
        })),
        _ => None,
    }
}
