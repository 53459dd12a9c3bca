//! Tunnels: the recorded ids of the tunnels the claims still need are
//! kept, new ones derived under the records' secret
//! ([`crate::tunnel_ids`]); then the tunnel and endpoint plans of every
//! gateway node and each gateway's tunnel status.

use std::collections::{BTreeMap, BTreeSet};

use super::claim::Claims;
use super::{EndpointPlan, GatewayNode, Plan, Recorded, TunnelKey, TunnelPlan};
use epic_model::{PortProtocol, TunnelEndpoint, TunnelStatus};

/// Gives the tunnels `claims` need their ids and fills in `out`'s tunnels,
/// endpoints and gateway tunnel status; returns the ids to record.
pub(super) fn assign(
    out: &mut Plan,
    claims: Claims,
    recorded: &Recorded,
    nodes: &[GatewayNode],
) -> BTreeMap<TunnelKey, u32> {
    let mut ids: BTreeMap<TunnelKey, u32> = recorded
        .tunnels
        .iter()
        .filter(|t| claims.wanted.contains_key(&t.key))
        .map(|t| (t.key.clone(), t.id))
        .collect();
    let secret = recorded.tunnel_id_secret.clone().unwrap_or_default();
    crate::tunnel_ids::assign(&mut ids, claims.wanted.keys(), &secret);
    for (key, (tenant_id, node_address)) in &claims.wanted {
        out.tunnels.push(TunnelPlan {
            id: ids[key],
            key: key.clone(),
            tenant_id: *tenant_id,
            node_address: *node_address,
        });
    }
    out.tunnels.sort_by_key(|t| t.id);
    for ((gateway_node, scope, address, port, protocol), (_, key)) in &claims.owners {
        out.endpoints
            .entry(gateway_node.clone())
            .or_default()
            .push(EndpointPlan {
                scope: *scope,
                address: *address,
                port: *port,
                protocol: *protocol,
                tunnel: ids[key],
            });
    }
    set_tunnel_status(out, &claims, &ids, nodes);
    ids
}

/// Each gateway's tunnels, with their gateway node's address, tenant id
/// and the endpoints each carries, by id.
fn set_tunnel_status(
    out: &mut Plan,
    claims: &Claims,
    ids: &BTreeMap<TunnelKey, u32>,
    nodes: &[GatewayNode],
) {
    let mut carried: BTreeMap<&TunnelKey, BTreeSet<TunnelEndpoint>> = BTreeMap::new();
    for ((_, _, address, port, protocol), (_, key)) in &claims.owners {
        if let Some(protocol) = PortProtocol::from_number(*protocol) {
            carried.entry(key).or_default().insert(TunnelEndpoint {
                address: *address,
                port: *port,
                protocol,
            });
        }
    }
    for (gp, keys) in out.gateways.iter_mut().zip(&claims.per_gateway) {
        gp.status.tunnels = keys
            .iter()
            .map(|(k, _)| TunnelStatus {
                id: ids[k],
                cluster: k.cluster.clone(),
                node: k.node.clone(),
                gateway_node: k.gateway_node.clone(),
                gateway_address: nodes
                    .iter()
                    .find(|n| n.name == k.gateway_node)
                    .map(|n| n.address),
                tenant_id: claims.wanted.get(k).map(|(tenant_id, _)| *tenant_id),
                endpoints: carried
                    .get(k)
                    .map(|e| e.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect();
        gp.status.tunnels.sort_by_key(|t| t.id);
    }
}
