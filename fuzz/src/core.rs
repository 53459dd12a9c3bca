//! Fuzz entry point for epic-model and epic-engine: the resources parser and the engine.

use std::collections::BTreeMap;

use epic_engine::plan::{GatewayNode, Recorded, plan};
use epic_model::source::parse_resources;

/// Parses `data` as a resources file; when it parses, plans it twice (the
/// second time from the first plan's records) and checks that replanning
/// moves no programmed gateway's address. Must never panic.
pub fn resources_plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut inputs) = parse_resources(text) else {
        return;
    };
    inputs.gateway_nodes = vec![GatewayNode {
        name: "gw".into(),
        address: std::net::IpAddr::from([192, 0, 2, 1]),
    }];
    let first = plan(&inputs, &Recorded::default());
    let again = plan(&inputs, &first.recorded);
    let addresses: BTreeMap<_, _> = first
        .gateways
        .iter()
        .filter(|g| g.programmed())
        .map(|g| ((g.namespace.clone(), g.name.clone()), g.status.addresses.clone()))
        .collect();
    for g in again.gateways.iter().filter(|g| g.programmed()) {
        if let Some(before) = addresses.get(&(g.namespace.clone(), g.name.clone())) {
            assert_eq!(before, &g.status.addresses, "{}/{} moved", g.namespace, g.name);
        }
    }
}
