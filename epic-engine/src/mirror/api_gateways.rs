//! Gateway API `Gateway`s of our classes as platform gateways, and the
//! `HTTPRoute`s, `TCPRoute`s and `UDPRoute`s attached to them as platform
//! routes.

use std::collections::{BTreeMap, BTreeSet};

use epic_model as model;
use epic_templates::refs::{GATEWAY_API_GROUP, ParentRef, RouteRefs};
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gateways as gw;
use gateway_api::httproutes::HttpRoute;

use super::names::{Key, NameClaim, key_of, namespace_of, sharing_key, uid_of};
use super::services::port_u16;
use super::{GatewayDraft, MirrorConfig, Skipped};

// ---------------------------------------------------------------------------
// Label selectors (GatewayListenersAllowedRoutesNamespacesSelector).

/// Whether `labels` (a namespace's) match an `allowedRoutes` selector;
/// no selector matches nothing.
fn selector_matches(
    selector: Option<&gw::GatewayListenersAllowedRoutesNamespacesSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

// ---------------------------------------------------------------------------
// Gateways.

/// A mirrored user Gateway, as routes see it.
pub(super) struct MirroredGateway<'a> {
    /// Platform name.
    pub(super) name: String,
    /// The user Gateway.
    pub(super) source: &'a gw::Gateway,
    /// Names of its mirrored listeners.
    pub(super) listeners: BTreeSet<String>,
}

/// The platform listener for a Gateway listener of `object`, or why not.
fn gateway_listener(l: &gw::GatewayListeners, object: &str) -> Result<model::Listener, Skipped> {
    let skip = |reason: String| Skipped {
        object: format!("{object} listener {}", l.name),
        reason,
    };
    let port = port_u16(l.port).ok_or_else(|| skip("port is out of range".into()))?;
    let (protocol, tls_secret) = match l.protocol.as_str() {
        "HTTP" => (model::ListenerProtocol::Http, None),
        "HTTPS" => {
            let tls = l.tls.as_ref();
            if matches!(
                tls.and_then(|t| t.mode.as_ref()),
                Some(gw::GatewayListenersTlsMode::Passthrough)
            ) {
                return Err(skip("TLS passthrough is not supported".into()));
            }
            let secret = tls
                .and_then(|t| t.certificate_refs.as_ref())
                .and_then(|refs| refs.first())
                .map(|r| r.name.clone())
                .ok_or_else(|| skip("HTTPS listener without a certificateRef".into()))?;
            (model::ListenerProtocol::Https, Some(secret))
        }
        "TCP" => (model::ListenerProtocol::Tcp, None),
        "UDP" => (model::ListenerProtocol::Udp, None),
        "TLS" => return Err(skip("TLS passthrough is not supported".into())),
        other => return Err(skip(format!("protocol {other} is not supported"))),
    };
    let hostname = match protocol {
        model::ListenerProtocol::Http | model::ListenerProtocol::Https => l.hostname.clone(),
        _ => None,
    };
    Ok(model::Listener {
        name: l.name.clone(),
        port,
        protocol,
        hostname,
        tls_secret,
        backends: Vec::new(),
    })
}

/// The platform gateway for the Gateway API gateway `g`, if it has a
/// listener to serve.
pub(super) fn api_gateway(
    g: &gw::Gateway,
    cluster: &str,
    config: &MirrorConfig,
    skipped: &mut Vec<Skipped>,
) -> Option<GatewayDraft> {
    let (ns, name) = key_of(&g.metadata);
    let object = format!("Gateway {ns}/{name}");
    let mut listeners = Vec::new();
    for l in &g.spec.listeners {
        match gateway_listener(l, &object) {
            Ok(l) => listeners.push(l),
            Err(s) => skipped.push(s),
        }
    }
    if listeners.is_empty() {
        skipped.push(Skipped {
            object,
            reason: "no listener to serve".into(),
        });
        return None;
    }
    let mut addresses = Vec::new();
    for a in g.spec.addresses.iter().flatten() {
        let value = a.value.as_deref().unwrap_or("");
        match (a.r#type.as_deref().unwrap_or("IPAddress"), value.parse()) {
            ("IPAddress", Ok(ip)) => addresses.push(ip),
            (t, _) => skipped.push(Skipped {
                object: format!("{object} address {value}"),
                reason: format!("only IPAddress addresses are supported (got {t} {value:?})"),
            }),
        }
    }
    let all = |p: model::ListenerProtocol| listeners.iter().all(|l| l.protocol == p);
    let template = if listeners
        .iter()
        .any(|l| l.protocol == model::ListenerProtocol::Https)
    {
        &config.template_for_https
    } else if all(model::ListenerProtocol::Udp) {
        &config.template_for_udp
    } else if all(model::ListenerProtocol::Tcp) {
        &config.template_for_service
    } else {
        &config.template_for_gateway
    };
    Some(GatewayDraft {
        claim: NameClaim::new("Gateway", "", &ns, &name, &g.metadata.creation_timestamp),
        spec: model::GatewaySpec {
            template: template.clone(),
            client: model::ClientRef {
                cluster: cluster.to_owned(),
                namespace: ns.clone(),
                name: name.clone(),
                uid: uid_of(&g.metadata).to_owned(),
            },
            listeners,
            sharing_key: sharing_key(&g.metadata),
            addresses,
        },
        user_gateway: Some((ns, name)),
    })
}

// ---------------------------------------------------------------------------
// Routes.

/// The Services a route's backendRefs and mirrors name, as `(namespace, name)`.
fn services_of(spec: &impl RouteRefs, route_ns: &str) -> BTreeSet<Key> {
    spec.all_backend_refs()
        .iter()
        .filter_map(|b| b.service(route_ns))
        .collect()
}

/// Routes' view of the mirrored gateways and the user's namespaces.
pub(super) struct RouteContext<'a> {
    pub(super) gateways: &'a BTreeMap<Key, MirroredGateway<'a>>,
    pub(super) namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl RouteContext<'_> {
    /// For each parentRef: the platform gateway name and the namespace to
    /// write, if the ref is to a mirrored gateway that lets the route in.
    fn parents(
        &self,
        kind: &str,
        route_ns: &str,
        object: &str,
        refs: &[ParentRef<'_>],
        skipped: &mut Vec<Skipped>,
    ) -> Vec<Option<(String, Option<String>)>> {
        refs.iter()
            .map(|p| {
                if !p.is_gateway() {
                    return None;
                }
                let gw_ns = p.namespace_or(route_ns);
                let m = self.gateways.get(&(gw_ns.to_owned(), p.name.to_owned()))?;
                if !self.allowed(m, kind, route_ns, p) {
                    skipped.push(Skipped {
                        object: format!("{object} parentRef {gw_ns}/{}", p.name),
                        reason: "no listener of the Gateway allows this route".into(),
                    });
                    return None;
                }
                let namespace = (gw_ns != route_ns).then(|| gw_ns.to_owned());
                Some((m.name.clone(), namespace))
            })
            .collect()
    }

    /// Whether a mirrored listener selected by `p` admits the route.
    fn allowed(
        &self,
        m: &MirroredGateway<'_>,
        kind: &str,
        route_ns: &str,
        p: &ParentRef<'_>,
    ) -> bool {
        let gw_ns = namespace_of(&m.source.metadata);
        m.source.spec.listeners.iter().any(|l| {
            if !m.listeners.contains(&l.name)
                || p.section_name.is_some_and(|s| s != l.name)
                || p.port.is_some_and(|port| port != l.port)
            {
                return false;
            }
            let allowed = l.allowed_routes.as_ref();
            let kinds_ok = match allowed.and_then(|a| a.kinds.as_ref()) {
                Some(kinds) if !kinds.is_empty() => kinds.iter().any(|k| {
                    k.kind == kind
                        && k.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP
                }),
                _ => true,
            };
            let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
            let namespace_ok = match namespaces.and_then(|n| n.from.as_ref()) {
                None | Some(gw::GatewayListenersAllowedRoutesNamespacesFrom::Same) => {
                    route_ns == gw_ns
                }
                Some(gw::GatewayListenersAllowedRoutesNamespacesFrom::All) => true,
                Some(gw::GatewayListenersAllowedRoutesNamespacesFrom::Selector) => {
                    let empty = BTreeMap::new();
                    let labels = self.namespace_labels.get(route_ns).unwrap_or(&empty);
                    selector_matches(namespaces.and_then(|n| n.selector.as_ref()), labels)
                }
            };
            kinds_ok && namespace_ok
        })
    }
}

/// A platform route waiting for its name.
pub(super) struct RouteDraft {
    pub(super) claim: NameClaim,
    pub(super) spec: model::RouteSpec,
    /// Services its backendRefs name.
    pub(super) services: BTreeSet<Key>,
}

/// Keeps the parentRefs `parents` accepts, rewritten; `None` if none.
macro_rules! rewrite_parents {
    ($refs:expr, $parents:expr) => {{
        let kept: Vec<_> = $refs
            .iter()
            .zip($parents)
            .filter_map(|(p, target)| {
                target.map(|(name, namespace)| {
                    let mut p = p.clone();
                    p.name = name;
                    p.namespace = namespace;
                    p
                })
            })
            .collect();
        kept
    }};
}

/// The platform route for `route`, if a mirrored gateway lets it in.
pub(super) fn http_route(
    route: &HttpRoute,
    ctx: &RouteContext<'_>,
    skipped: &mut Vec<Skipped>,
) -> Option<RouteDraft> {
    let (ns, name) = key_of(&route.metadata);
    let object = format!("HTTPRoute {ns}/{name}");
    let refs = route.spec.parent_refs.as_deref().unwrap_or(&[]);
    let parents = ctx.parents(
        "HTTPRoute",
        &ns,
        &object,
        &route.spec.parent_refs(),
        skipped,
    );
    let kept = rewrite_parents!(refs, parents);
    if kept.is_empty() {
        return None;
    }
    let mut spec = route.spec.clone();
    spec.parent_refs = Some(kept);
    let services = services_of(&spec, &ns);
    Some(RouteDraft {
        claim: NameClaim::new(
            "HTTPRoute",
            "",
            &ns,
            &name,
            &route.metadata.creation_timestamp,
        ),
        spec: model::RouteSpec {
            namespace: ns,
            http: Some(spec),
            tcp: None,
            udp: None,
        },
        services,
    })
}

/// An L4 route draft (`TCPRoute`, `UDPRoute`): the two kinds have the same
/// shape over distinct generated types, so one body serves both.
macro_rules! l4_route {
    ($fn_name:ident, $route:ty, $kind:literal, $field:ident) => {
        pub(super) fn $fn_name(
            route: &$route,
            ctx: &RouteContext<'_>,
            skipped: &mut Vec<Skipped>,
        ) -> Option<RouteDraft> {
            let (ns, name) = key_of(&route.metadata);
            let object = format!("{} {ns}/{name}", $kind);
            let refs = route.spec.parent_refs.as_deref().unwrap_or(&[]);
            let parents = ctx.parents($kind, &ns, &object, &route.spec.parent_refs(), skipped);
            let kept = rewrite_parents!(refs, parents);
            if kept.is_empty() {
                return None;
            }
            let mut spec = route.spec.clone();
            spec.parent_refs = Some(kept);
            let services = services_of(&spec, &ns);
            let mut route_spec = model::RouteSpec {
                namespace: ns.clone(),
                http: None,
                tcp: None,
                udp: None,
            };
            route_spec.$field = Some(spec);
            Some(RouteDraft {
                claim: NameClaim::new($kind, "", &ns, &name, &route.metadata.creation_timestamp),
                spec: route_spec,
                services,
            })
        }
    };
}

l4_route!(tcp_route, TcpRoute, "TCPRoute", tcp);
l4_route!(udp_route, UdpRoute, "UDPRoute", udp);
