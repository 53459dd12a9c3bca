//! Endpoints: those a gateway's configuration uses, kept (the others of
//! its backends dropped, the refused ones reported in `EndpointsAdmitted`),
//! then claimed on every gateway node. A data-path endpoint is keyed by
//! (gateway node, tenant scope, pod address, port, protocol); within a
//! tenant, a second gateway that would reach it through another tunnel
//! (another cluster) gets `Programmed=False`, reason `EndpointConflict`,
//! and claims nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use epic_templates::TemplateContext;

use super::{
    GatewayNode, GatewayPlan, Problem, TunnelKey, name_of, namespace_of, ns_or_default,
    set_condition,
};
use crate::admission::{AdmittedPort, EndpointRefusal};
use epic_model::conditions::{ConditionType, Reason};
use epic_model::{BackendSet, Condition, Endpoint};

/// An endpoint as a gateway node's data path keys it: (gateway node, scope,
/// pod address, port, protocol).
pub(super) type EndpointClaim = (String, u32, IpAddr, u16, u8);

/// An admitted backend endpoint of a gateway: its set, its protocol
/// number, the endpoint, its node's address.
type BackendEndpoint<'a> = (&'a BackendSet, u8, &'a Endpoint, IpAddr);

/// A refused endpoint of a used backend, and why.
type Refused<'a> = (&'a BackendSet, &'a Endpoint, EndpointRefusal);

/// What a planned gateway uses: the admitted endpoints of the clusters its
/// configuration uses, and the refused ones of those clusters.
pub(super) struct Admitted<'a> {
    endpoints: Vec<BackendEndpoint<'a>>,
    refused: Vec<Refused<'a>>,
}

impl<'a> Admitted<'a> {
    /// The endpoints of `candidates` whose cluster `context` uses.
    pub fn used(context: &TemplateContext, candidates: Vec<AdmittedPort<'a>>) -> Self {
        let used: BTreeSet<(&str, &str, u16)> = context
            .clusters
            .iter()
            .map(|c| {
                (
                    c.service.namespace.as_str(),
                    c.service.name.as_str(),
                    c.service.port,
                )
            })
            .collect();
        let mut admitted = Admitted {
            endpoints: Vec::new(),
            refused: Vec::new(),
        };
        for port in candidates {
            let set = port.set;
            let id = (
                ns_or_default(&set.spec.namespace),
                set.spec.service.as_str(),
                port.port.port,
            );
            if !used.contains(&id) {
                continue;
            }
            let protocol = port.port.protocol.number();
            for (e, node) in port.endpoints {
                admitted.endpoints.push((set, protocol, e, node));
            }
            admitted
                .refused
                .extend(port.refused.into_iter().map(|(e, why)| (set, e, why)));
        }
        admitted
    }

    /// The `EndpointsAdmitted` condition.
    pub fn condition(&self) -> Condition {
        endpoints_admitted(&self.refused)
    }
}

/// The `EndpointsAdmitted` condition for the `refused` endpoints of a
/// gateway: the first few are named, the count says the rest.
fn endpoints_admitted(refused: &[Refused<'_>]) -> Condition {
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

/// The endpoint claims of the gateways planned so far.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// Each claimed endpoint: the gateway (`namespace/name`) and tunnel
    /// that reach it.
    pub owners: BTreeMap<EndpointClaim, (String, TunnelKey)>,
    /// The tunnels the claims need: tenant id and cluster node address.
    pub wanted: BTreeMap<TunnelKey, (u32, IpAddr)>,
    /// Each gateway's tunnels (and their cluster node addresses), in plan
    /// order.
    pub per_gateway: Vec<Vec<(TunnelKey, IpAddr)>>,
    /// The refused endpoints, as problems of their backend sets.
    refused: BTreeSet<Problem>,
}

impl Claims {
    /// Claims what gateway `gp` uses on every gateway node, or nothing
    /// (with `EndpointConflict`, no snapshot and no announcements) if
    /// another cluster's gateway of the tenant has one of its endpoints.
    pub fn claim(&mut self, gp: &mut GatewayPlan, admitted: Admitted<'_>, nodes: &[GatewayNode]) {
        self.refused
            .extend(admitted.refused.iter().map(refused_problem));
        let Wanted {
            claimed,
            tunnels,
            conflict,
        } = self.claims_of(gp, &admitted.endpoints, nodes);
        if let Some(message) = conflict {
            set_condition(
                gp,
                ConditionType::Programmed.condition(false, Reason::EndpointConflict, message),
            );
            gp.snapshot = None;
            gp.announcements.clear();
            self.per_gateway.push(Vec::new());
            return;
        }
        let gateway = format!("{}/{}", gp.namespace, gp.name);
        for (claim, key) in claimed {
            self.owners.insert(claim, (gateway.clone(), key));
        }
        for (key, node_address) in &tunnels {
            self.wanted
                .entry(key.clone())
                .or_insert((gp.tenant_id, *node_address));
        }
        self.per_gateway.push(tunnels);
    }

    /// A gateway that was not planned: no claims, no tunnels.
    pub fn nothing_claimed(&mut self) {
        self.per_gateway.push(Vec::new());
    }

    /// The refused endpoints, as problems of their backend sets.
    pub fn take_refused(&mut self) -> BTreeSet<Problem> {
        std::mem::take(&mut self.refused)
    }

    /// The claims and tunnels `endpoints` need on `nodes`, and the first
    /// conflict with an earlier gateway's claims.
    fn claims_of(
        &self,
        gp: &GatewayPlan,
        endpoints: &[BackendEndpoint<'_>],
        nodes: &[GatewayNode],
    ) -> Wanted {
        let scope = epic_gue::maps::tenant_mark(gp.tenant_id);
        let mut wanted = Wanted::default();
        for node in nodes {
            for &(set, port, endpoint, node_address) in endpoints {
                let key = TunnelKey {
                    tenant: gp.tenant.clone(),
                    cluster: set.spec.cluster.clone(),
                    node: endpoint.node.clone(),
                    gateway_node: node.name.clone(),
                };
                let claim = (
                    node.name.clone(),
                    scope,
                    endpoint.address,
                    endpoint.port,
                    port,
                );
                match self.owners.get(&claim) {
                    Some((other, other_key)) if other_key != &key => {
                        wanted.conflict = Some(format!(
                            "endpoint {}:{} is already reached through gateway {other} of another cluster",
                            endpoint.address, endpoint.port
                        ));
                    }
                    _ => wanted.claimed.push((claim, key.clone())),
                }
                if !wanted.tunnels.iter().any(|(k, _)| k == &key) {
                    wanted.tunnels.push((key, node_address));
                }
            }
        }
        wanted
    }
}

/// What one gateway would claim, and its first conflict.
#[derive(Default)]
struct Wanted {
    claimed: Vec<(EndpointClaim, TunnelKey)>,
    tunnels: Vec<(TunnelKey, IpAddr)>,
    conflict: Option<String>,
}

/// A refused endpoint as a problem of its backend set.
fn refused_problem((set, e, why): &Refused<'_>) -> Problem {
    Problem {
        object: format!(
            "BackendSet {}/{}",
            namespace_of(&set.metadata),
            name_of(&set.metadata)
        ),
        message: format!("endpoint {}:{} is not used: {why}", e.address, e.port),
    }
}
