//! The inputs indexed for the per-gateway phases: the platform's own
//! addresses, each tenant's networks, backend sets by service, routes by
//! namespace (within the tenant's route limit).

use std::collections::BTreeMap;

use super::{DesiredInputs, Problem, name_of, namespace_of};
use crate::admission::{Platform, TenantNetworks};
use epic_model::{BackendSet, Route, Tenant};

/// The inputs indexed for the per-gateway steps: look-ups instead of scans,
/// so planning stays linear in the number of gateways.
pub(super) struct Catalog<'a> {
    /// The inputs.
    pub inputs: &'a DesiredInputs,
    /// What endpoints may not use.
    pub platform: Platform<'a>,
    /// Each valid tenant's `clusterNetworks`, by namespace.
    pub networks: BTreeMap<&'a str, TenantNetworks>,
    /// Backend sets by (platform namespace, service).
    pub sets_by_service: BTreeMap<(&'a str, &'a str), Vec<&'a BackendSet>>,
    /// Routes by platform namespace.
    pub routes_by_ns: BTreeMap<&'a str, Vec<&'a Route>>,
}

impl<'a> Catalog<'a> {
    pub fn new(
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
