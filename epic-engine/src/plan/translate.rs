//! Translation of one gateway: the backend sets its listeners and its
//! namespace's routes name (only their admitted endpoints, within the
//! tenant's endpoint limit) and the routes, as the user wrote them in the
//! user cluster's namespaces, into the context templates render; each
//! route's status for this gateway.

use std::collections::BTreeSet;

use epic_templates::refs::RouteRefs;
use epic_templates::translate::{
    BackendInput, BackendRefInput, GatewayInputs, ListenerInput, Route as TemplateRoute,
    RouteReport, Translation, translate,
};
use epic_templates::{EndpointContext, GatewayIdentity};

use super::gateway::Pass;
use super::{DesiredInputs, GatewayPlan, Problem, name_of, namespace_of, ns_or_default};
use crate::admission::{AdmittedPort, TenantNetworks};
use epic_model::conditions::{ConditionType, Reason};
use epic_model::{BackendSet, Gateway, Listener, Route, RouteStatus, Tenant};

/// Reports the routes that set not exactly one of `http`, `tcp`, `udp`.
pub(super) fn check_routes(inputs: &DesiredInputs, problems: &mut Vec<Problem>) {
    for r in &inputs.routes {
        if template_route(r).is_none() {
            problems.push(Problem {
                object: format!(
                    "Route {}/{}",
                    namespace_of(&r.metadata),
                    name_of(&r.metadata)
                ),
                message: "exactly one of `http`, `tcp` and `udp` must be set".into(),
            });
        }
    }
}

impl<'a> Pass<'a, '_> {
    /// Translates gateway `g` of `tenant` (allocator owner `owner`), with
    /// its route statuses set in `gp`; the admitted ports of the backends
    /// it names come back with the translation.
    pub fn translate(
        &mut self,
        g: &Gateway,
        tenant: &Tenant,
        owner: &str,
        gp: &mut GatewayPlan,
    ) -> (Translation, Vec<AdmittedPort<'a>>) {
        let catalog = self.catalog;
        let ns_routes = catalog
            .routes_by_ns
            .get(gp.namespace.as_str())
            .map_or(&[][..], Vec::as_slice);
        let mut candidates = self.candidates(g, &gp.namespace, ns_routes);
        self.usage.limit_endpoints(tenant, &mut candidates);
        let inputs = gateway_inputs(g, gp, owner, &candidates);
        let routes: Vec<(&Route, TemplateRoute)> = ns_routes
            .iter()
            .filter_map(|r| template_route(r).map(|t| (*r, t)))
            .collect();
        let template_routes: Vec<TemplateRoute> = routes.iter().map(|(_, t)| t.clone()).collect();
        let mut translation = translate(&inputs, &template_routes);
        // The gateway's configuration holds the clusters its listeners and
        // routes use, not every backend of the namespace.
        let referenced = referenced_clusters(&translation.context);
        translation
            .context
            .clusters
            .retain(|c| referenced.contains(&c.name));
        for ((route, _), report) in routes.iter().zip(&translation.reports) {
            if let Some(status) = route_status(route, report) {
                gp.status.routes.push(status);
            }
        }
        (translation, candidates)
    }

    /// The admitted ports of the backend sets of gateway `g` (namespace
    /// `ns`) that its listeners or `routes` name: those of its own user
    /// cluster (any cluster's, for a gateway that names none). Only named
    /// services are looked at, so planning stays linear in the gateways.
    fn candidates(&self, g: &Gateway, ns: &str, routes: &[&Route]) -> Vec<AdmittedPort<'a>> {
        let catalog = self.catalog;
        let cluster = g.spec.client.cluster.as_str();
        let serves = |b: &&BackendSet| {
            namespace_of(&b.metadata) == ns && (cluster.is_empty() || b.spec.cluster == cluster)
        };
        let mut named: BTreeSet<String> = g
            .spec
            .listeners
            .iter()
            .flat_map(|l| l.backends.iter().map(|b| b.name.clone()))
            .collect();
        for route in routes.iter().filter_map(|r| template_route(r)) {
            named.extend(backend_names(&route));
        }
        static UNLISTED: TenantNetworks = TenantNetworks::UNLISTED;
        let networks = catalog.networks.get(ns).unwrap_or(&UNLISTED);
        named
            .iter()
            .filter_map(|service| catalog.sets_by_service.get(&(ns, service.as_str())))
            .flatten()
            .copied()
            .filter(serves)
            .flat_map(|set| catalog.platform.admit(set, networks))
            .collect()
    }
}

/// The translation inputs of gateway `g`: itself as the user wrote it, its
/// addresses (in `gp`), and its candidates' admitted endpoints (only
/// admitted endpoints are rendered).
fn gateway_inputs(
    g: &Gateway,
    gp: &GatewayPlan,
    owner: &str,
    candidates: &[AdmittedPort<'_>],
) -> GatewayInputs {
    let backends = candidates
        .iter()
        .map(|admitted| BackendInput {
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
        })
        .collect();
    GatewayInputs {
        gateway: GatewayIdentity {
            name: gp.name.clone(),
            namespace: ns_or_default(&g.spec.client.namespace).to_owned(),
            tenant: gp.tenant.clone(),
            uid: owner.to_owned(),
        },
        addresses: gp.status.addresses.clone(),
        dns_name: String::new(),
        listeners: g.spec.listeners.iter().map(listener_input).collect(),
        backends,
    }
}

/// The status of `route` for this gateway, if it is for this gateway (it
/// attached to a listener, or has issues).
fn route_status(route: &Route, report: &RouteReport) -> Option<RouteStatus> {
    if report.attached_listeners.is_empty() && report.issues.is_empty() {
        return None;
    }
    let accepted = ConditionType::Accepted.condition(
        report.accepted(),
        if report.accepted() {
            Reason::Accepted
        } else {
            Reason::NotAllowedByListeners
        },
        "",
    );
    let problems: Vec<String> = report
        .issues
        .iter()
        .map(|i| match i.rule {
            Some(rule) => format!("rule {rule}: {}", i.message),
            None => i.message.clone(),
        })
        .collect();
    let resolved = ConditionType::ResolvedRefs.condition(
        report.resolved_refs(),
        if report.resolved_refs() {
            Reason::ResolvedRefs
        } else {
            Reason::BackendNotFound
        },
        problems.join("; "),
    );
    Some(RouteStatus {
        name: name_of(&route.metadata).to_owned(),
        listeners: report.attached_listeners.clone(),
        conditions: vec![accepted, resolved],
    })
}

/// The names of the Services a route sends or mirrors to.
fn backend_names(route: &TemplateRoute) -> Vec<String> {
    let refs = match route {
        TemplateRoute::Http(r) => r.spec.all_backend_refs(),
        TemplateRoute::Tcp(r) => r.spec.all_backend_refs(),
        TemplateRoute::Udp(r) => r.spec.all_backend_refs(),
    };
    refs.iter()
        .filter(|b| b.is_service())
        .map(|b| b.name.to_owned())
        .collect()
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
