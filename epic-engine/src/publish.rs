//! Publishing a plan to the xDS server: the sink both worlds share.

use std::collections::BTreeSet;

use epic_xds::{KnownGateways, SnapshotCache};

use crate::plan::Plan;

/// What [`publish`] left served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Gateways admitted to the ADS server, as (tenant, gateway).
    pub gateways: BTreeSet<(String, String)>,
    /// Envoy node ids that have a configuration.
    pub proxies: BTreeSet<String>,
}

/// Sets each accepted gateway's snapshot for its proxies and admits the
/// gateway to the ADS server. A gateway whose new configuration was
/// rejected (no snapshot in the plan) keeps the one its proxies have;
/// gateways in `before` that are no longer served are refused and their
/// proxies' snapshots removed.
pub fn publish(
    plan: &Plan,
    cache: &SnapshotCache,
    known: &KnownGateways,
    before: &Published,
) -> Published {
    let mut now = Published::default();
    for g in &plan.gateways {
        if !g.accepted() {
            continue;
        }
        if let Some(snapshot) = &g.snapshot {
            for proxy in &g.status.proxies {
                cache.set_snapshot(proxy, snapshot.clone());
            }
        }
        let configured = !g.status.proxies.is_empty()
            && g.status.proxies.iter().all(|p| cache.snapshot(p).is_some());
        if configured {
            known.insert(&g.tenant, &g.name);
            now.gateways.insert((g.tenant.clone(), g.name.clone()));
            now.proxies.extend(g.status.proxies.iter().cloned());
        }
    }
    for (tenant, name) in before.gateways.difference(&now.gateways) {
        known.remove(tenant, name);
    }
    for proxy in before.proxies.difference(&now.proxies) {
        cache.remove_node(proxy);
    }
    now
}
