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
//!
//! # Phases, one file each
//!
//! [`plan_incremental`] restores the allocator (`plan/allocate.rs`: pools,
//! records, released addresses held back), indexes the inputs
//! (`plan/catalog.rs`), then plans each gateway in plan order
//! (`plan/gateway.rs`): admit it (`plan/admit.rs`: tenant, template,
//! listeners, limits), allocate its addresses (`plan/allocate.rs`),
//! translate its routes and backends (`plan/translate.rs`), keep the
//! endpoints its configuration uses and render it. Each planned gateway
//! then claims its endpoints on every gateway node (`plan/claim.rs`);
//! last, the tunnels the claims need get their ids and the gateways their
//! tunnel status (`plan/tunnels.rs`).

mod admit;
mod allocate;
mod catalog;
mod claim;
mod gateway;
mod translate;
mod tunnels;
mod types;
mod verified;

pub use crate::render::RenderCache;
pub use admit::tenants_by_namespace;
pub use allocate::sharing_key_of;
pub use types::{
    Announcement, DesiredInputs, EndpointPlan, GatewayNode, GatewayPlan, MAX_REPLICAS, Plan,
    Problem, Recorded, RecordedTunnel, TunnelKey, TunnelPlan, owner_of, proxy_node_id, snapshot_of,
    upstream_mark,
};

use crate::admission::Platform;
use crate::render::Templates;
use epic_model::{Condition, GatewayStatus};

const DEFAULT_NAMESPACE: &str = "default";

fn ns_or_default(ns: &str) -> &str {
    if ns.is_empty() { DEFAULT_NAMESPACE } else { ns }
}

fn name_of(meta: &kube::core::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn namespace_of(meta: &kube::core::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

/// Sets `condition` on the gateway, replacing one of its type; the
/// conditions stay sorted by type.
fn set_condition(gp: &mut GatewayPlan, condition: Condition) {
    gp.status.conditions.retain(|c| c.type_ != condition.type_);
    gp.status.conditions.push(condition);
    gp.status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
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
    let pools = allocate::pools(inputs, &mut out.problems);
    let (ipam, held_back) = allocate::restore(inputs, recorded, pools.clone(), &mut out.problems);
    let platform = Platform::new(&inputs.gateway_nodes, &inputs.platform_networks, &pools);
    let catalog = catalog::Catalog::new(inputs, &tenants, platform, &mut out.problems);
    translate::check_routes(inputs, &mut out.problems);

    let mut pass = gateway::Pass {
        tenants: &tenants,
        catalog: &catalog,
        templates: Templates::new(&inputs.templates, cache),
        ipam,
        usage: admit::TenantUsage::with_held_back(held_back),
    };
    let mut claims = claim::Claims::default();
    for g in pass.plan_order(&inputs.gateways) {
        let mut gp = GatewayPlan {
            namespace: namespace_of(&g.metadata).to_owned(),
            name: name_of(&g.metadata).to_owned(),
            tenant: String::new(),
            tenant_id: 0,
            snapshot: None,
            announcements: Vec::new(),
            status: GatewayStatus::default(),
        };
        match pass.plan_gateway(g, &mut gp) {
            Ok(admitted) => claims.claim(&mut gp, admitted, &inputs.gateway_nodes),
            Err(condition) => {
                set_condition(&mut gp, *condition);
                claims.nothing_claimed();
            }
        }
        out.gateways.push(gp);
    }
    let gateway::Pass {
        ipam,
        usage,
        templates,
        ..
    } = pass;
    drop(templates);
    out.problems.extend(claims.take_refused());
    let tunnel_ids = tunnels::assign(&mut out, claims, recorded, &inputs.gateway_nodes);
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
    cache.finish_plan();
    out
}
