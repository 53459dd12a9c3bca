//! Endpoints wait for their tunnels: with the runtime's verified tunnels
//! in the inputs, an endpoint reaches the proxies' configuration only once
//! its tunnel to every gateway node carries packets. Until then a proxy
//! would send its first packet (a SYN) into a pending tunnel, where the
//! gateway's egress program drops it and the client waits for TCP's
//! retransmission (1 s). The endpoint is still claimed and its tunnel
//! planned, so the node's hellos can verify it; the runtime plans again
//! when a tunnel is verified or expires.

use std::collections::BTreeSet;
use std::net::IpAddr;

use epic_templates::TemplateContext;

use super::{GatewayNode, ns_or_default};
use crate::admission::AdmittedPort;
use epic_model::VerifiedTunnel;

/// A rendered endpoint: (namespace, service, service port, address, port).
type RenderedEndpoint<'a> = (&'a str, &'a str, u16, IpAddr, u16);

/// Removes from `context` the endpoints of `candidates` (gateway of
/// `tenant`) whose tunnel to one of `nodes` is not in `verified`; returns
/// how many it held back. `None` verifies every tunnel.
pub(super) fn hold_unverified(
    context: &mut TemplateContext,
    candidates: &[AdmittedPort<'_>],
    tenant: &str,
    nodes: &[GatewayNode],
    verified: Option<&BTreeSet<VerifiedTunnel>>,
) -> usize {
    let Some(verified) = verified else {
        return 0;
    };
    let mut held: BTreeSet<RenderedEndpoint<'_>> = BTreeSet::new();
    for candidate in candidates {
        let set = candidate.set;
        for (endpoint, _) in &candidate.endpoints {
            let carried = nodes.iter().all(|node| {
                verified.contains(&VerifiedTunnel {
                    tenant: tenant.to_owned(),
                    cluster: set.spec.cluster.clone(),
                    node: endpoint.node.clone(),
                    gateway_node: node.name.clone(),
                })
            });
            if !carried {
                held.insert((
                    ns_or_default(&set.spec.namespace),
                    set.spec.service.as_str(),
                    candidate.port.port,
                    endpoint.address,
                    endpoint.port,
                ));
            }
        }
    }
    let mut count = 0;
    for cluster in &mut context.clusters {
        let service = &cluster.service;
        let before = cluster.endpoints.len();
        cluster.endpoints.retain(|e| {
            !held.contains(&(
                service.namespace.as_str(),
                service.name.as_str(),
                service.port,
                e.address,
                e.port,
            ))
        });
        count += before - cluster.endpoints.len();
    }
    count
}
