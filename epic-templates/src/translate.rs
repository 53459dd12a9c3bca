//! Gateway API translation: a gateway's listeners and backends plus its
//! `HTTPRoute`/`TCPRoute`/`UDPRoute`s (the `gateway-api` crate's types)
//! normalised into a [`TemplateContext`], with per-rule reports for the
//! routes' `Accepted`/`ResolvedRefs` conditions.
//!
//! HTTP route precedence follows the Gateway API specification: within a
//! hostname, an `Exact` path beats any prefix, a longer `PathPrefix` beats
//! a shorter one (regular expressions, implementation-specific, come after
//! prefixes, longer first), then a method match, then more header
//! matches, then more query parameter matches; remaining ties go to the
//! oldest route (creation timestamp), then `namespace/name` in alphabetical
//! order, then rule and match order.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestRedirect, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewritePath, HttpRouteRulesFiltersUrlRewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType, HttpRouteRulesTimeouts,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::refs::{BackendRef, ParentRef, RouteRefs};
use serde::{Deserialize, Serialize};

use crate::context::*;

/// One gateway's desired state, as the engine (or `epicctl render
/// --gateway`) provides it: identity, allocated addresses, listeners and the
/// backend services with their endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayInputs {
    /// The gateway's identity.
    pub gateway: GatewayIdentity,
    /// Public addresses allocated to it.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// DNS name, if already known (a template's DNS name template overrides it).
    #[serde(default)]
    pub dns_name: String,
    /// Listeners.
    pub listeners: Vec<ListenerInput>,
    /// Backend services (one per service port) with their endpoints.
    #[serde(default)]
    pub backends: Vec<BackendInput>,
}

/// A listener of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerInput {
    /// Unique name (the Gateway listener name, or `<protocol>-<port>` for a Service).
    pub name: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Hostname (HTTP/HTTPS), may be a `*.` wildcard.
    #[serde(default)]
    pub hostname: Option<String>,
    /// SDS secret name of the certificate (HTTPS).
    #[serde(default)]
    pub tls_secret: Option<String>,
    /// Default backends (a `Service` of type `LoadBalancer`: TCP/UDP
    /// listeners with no route attached).
    #[serde(default)]
    pub backends: Vec<BackendRefInput>,
}

/// A reference to a backend service port, with a weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRefInput {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A backend service port and its endpoints (from its EndpointSlices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendInput {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Pod endpoints (address, target port, ready, node).
    #[serde(default)]
    pub endpoints: Vec<EndpointContext>,
}

/// A route of any supported kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// `HTTPRoute` (gateway.networking.k8s.io/v1).
    Http(HttpRoute),
    /// `TCPRoute` (v1alpha2, experimental channel).
    Tcp(TcpRoute),
    /// `UDPRoute` (v1alpha2, experimental channel).
    Udp(UdpRoute),
}

/// Why a routes document could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteParseError {
    /// A document is not valid YAML.
    #[error("document {index}: invalid YAML: {source}")]
    Yaml {
        /// 0-based document index.
        index: usize,
        /// Parser error.
        source: serde_yaml_ng::Error,
    },
    /// A document is not a supported route kind.
    #[error(
        "document {index}: unsupported kind {kind:?} (expected HTTPRoute, TCPRoute or UDPRoute)"
    )]
    Kind {
        /// 0-based document index.
        index: usize,
        /// The `kind` found.
        kind: String,
    },
    /// A document does not match its kind's schema.
    #[error("document {index} ({kind}): {source}")]
    Schema {
        /// 0-based document index.
        index: usize,
        /// The kind.
        kind: String,
        /// Field path and error.
        source: serde_path_to_error::Error<serde_json::Error>,
    },
}

impl Route {
    /// Reads routes from YAML (several documents separated by `---`, or a
    /// `List` with `items`).
    pub fn from_yaml(text: &str) -> Result<Vec<Route>, RouteParseError> {
        let mut values = Vec::new();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = serde_json::Value::deserialize(document)
                .map_err(|source| RouteParseError::Yaml { index, source })?;
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::Object(ref map)
                    if map.get("kind").and_then(|k| k.as_str()) == Some("List") =>
                {
                    values.extend(
                        map.get("items")
                            .and_then(|i| i.as_array())
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
                value => values.push(value),
            }
        }
        values
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                let kind = value
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let schema = |source| RouteParseError::Schema {
                    index,
                    kind: kind.clone(),
                    source,
                };
                match kind.as_str() {
                    "HTTPRoute" => serde_path_to_error::deserialize(value)
                        .map(Route::Http)
                        .map_err(schema),
                    "TCPRoute" => serde_path_to_error::deserialize(value)
                        .map(Route::Tcp)
                        .map_err(schema),
                    "UDPRoute" => serde_path_to_error::deserialize(value)
                        .map(Route::Udp)
                        .map_err(schema),
                    _ => Err(RouteParseError::Kind { index, kind }),
                }
            })
            .collect()
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Route::Http(r) => &r.metadata,
            Route::Tcp(r) => &r.metadata,
            Route::Udp(r) => &r.metadata,
        }
    }

    /// The route kind (`HTTPRoute`, `TCPRoute`, `UDPRoute`).
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Http(_) => "HTTPRoute",
            Route::Tcp(_) => "TCPRoute",
            Route::Udp(_) => "UDPRoute",
        }
    }

    fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or("default")
    }

    fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    fn created(&self) -> Option<&Time> {
        self.metadata().creation_timestamp.as_ref()
    }
}

/// Gateway API reasons for a route issue (the reason of the condition it affects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IssueReason {
    /// `Accepted=False`: no parentRef names this gateway/listener.
    NoMatchingParent,
    /// `Accepted=False`: the listener does not allow this route (protocol, or already taken).
    NotAllowedByListeners,
    /// `Accepted=False`: no hostname intersects the listener's.
    NoMatchingListenerHostname,
    /// `Accepted`: a value the implementation does not support (reported per rule).
    UnsupportedValue,
    /// `ResolvedRefs=False`: a backend does not exist.
    BackendNotFound,
    /// `ResolvedRefs=False`: a backend reference of an unsupported group/kind.
    InvalidKind,
    /// `ResolvedRefs=False`: a cross-namespace reference without a grant.
    RefNotPermitted,
}

impl IssueReason {
    /// The condition type this reason belongs to (`Accepted` or `ResolvedRefs`).
    pub fn condition(self) -> &'static str {
        match self {
            IssueReason::BackendNotFound
            | IssueReason::InvalidKind
            | IssueReason::RefNotPermitted => "ResolvedRefs",
            _ => "Accepted",
        }
    }
}

/// One problem found while translating a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteIssue {
    /// The rule index, or none for route-level problems.
    pub rule: Option<usize>,
    /// Gateway API reason.
    pub reason: IssueReason,
    /// Human-readable detail, including what was done instead.
    pub message: String,
}

/// The translation outcome for one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    /// `HTTPRoute`, `TCPRoute` or `UDPRoute`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Listeners the route attached to.
    pub attached_listeners: Vec<String>,
    /// Problems, per rule where they apply.
    pub issues: Vec<RouteIssue>,
}

impl RouteReport {
    /// `Accepted`: attached to at least one listener.
    pub fn accepted(&self) -> bool {
        !self.attached_listeners.is_empty()
    }

    /// `ResolvedRefs`: every backend reference resolved.
    pub fn resolved_refs(&self) -> bool {
        !self
            .issues
            .iter()
            .any(|i| i.reason.condition() == "ResolvedRefs")
    }
}

/// A translated gateway: the template context and a report per route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The context to render templates with.
    pub context: TemplateContext,
    /// One report per input route, in input order.
    pub reports: Vec<RouteReport>,
}

/// Translates a gateway and its routes into a template context.
pub fn translate(inputs: &GatewayInputs, routes: &[Route]) -> Translation {
    let clusters = clusters_of(inputs);
    let mut t = Translator {
        inputs,
        reports: routes.iter().map(empty_report).collect(),
        http: BTreeMap::new(),
        l4: BTreeMap::new(),
    };
    // Oldest first, so that L4 listeners go to the oldest route.
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by(|&a, &b| precedence_tail(&routes[a]).cmp(&precedence_tail(&routes[b])));
    for index in order {
        t.route(index, &routes[index]);
    }

    let listeners = inputs.listeners.iter().map(|l| t.listener(l)).collect();

    Translation {
        context: TemplateContext {
            version: CONTEXT_VERSION,
            gateway: inputs.gateway.clone(),
            addresses: PublicAddresses::new(inputs.addresses.iter().copied()),
            listeners,
            clusters,
            dns_name: inputs.dns_name.clone(),
        },
        reports: t.reports,
    }
}

/// One cluster per backend service port, sorted by name, without
/// duplicates.
fn clusters_of(inputs: &GatewayInputs) -> Vec<ClusterContext> {
    let mut clusters: Vec<ClusterContext> = inputs
        .backends
        .iter()
        .map(|b| {
            let service = ServiceRef {
                namespace: b.namespace.clone(),
                name: b.name.clone(),
                port: b.port,
            };
            ClusterContext {
                name: ClusterContext::name_for(&service),
                service,
                endpoints: b.endpoints.clone(),
            }
        })
        .collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    clusters.dedup_by(|a, b| a.name == b.name);
    clusters
}

/// The report of `route` before translation: not attached, no issues.
fn empty_report(route: &Route) -> RouteReport {
    RouteReport {
        kind: route.kind().to_owned(),
        namespace: route.namespace().to_owned(),
        name: route.name().to_owned(),
        attached_listeners: Vec::new(),
        issues: Vec::new(),
    }
}

/// A listener's virtual hosts, one per domain, routes in precedence order.
fn virtual_hosts(
    hosts: BTreeMap<String, Vec<(PrecedenceKey, RouteContext)>>,
) -> Vec<VirtualHostContext> {
    hosts
        .into_iter()
        .map(|(domain, mut routes)| {
            routes.sort_by(|a, b| a.0.cmp(&b.0));
            VirtualHostContext {
                name: domain.clone(),
                domains: vec![domain],
                routes: routes.into_iter().map(|(_, r)| r).collect(),
            }
        })
        .collect()
}

/// The route-level tail of the precedence order: oldest first (routes
/// without a timestamp last), then `namespace/name`.
fn precedence_tail(route: &Route) -> (bool, Option<Time>, String) {
    (
        route.created().is_none(),
        route.created().cloned(),
        format!("{}/{}", route.namespace(), route.name()),
    )
}

/// The full precedence key of one HTTP route match (smaller sorts first).
type PrecedenceKey = (
    u8,
    Reverse<usize>,
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
    (bool, Option<Time>, String),
    usize,
    usize,
);

struct Translator<'a> {
    inputs: &'a GatewayInputs,
    reports: Vec<RouteReport>,
    /// listener → domain → routes with their precedence keys.
    http: BTreeMap<String, BTreeMap<String, Vec<(PrecedenceKey, RouteContext)>>>,
    /// listener → backends (TCP/UDP).
    l4: BTreeMap<String, Vec<WeightedCluster>>,
}

impl Translator<'_> {
    /// The context of listener `l`, with the routes attached to it (a TCP or
    /// UDP listener without a route keeps its default backends).
    fn listener(&mut self, l: &ListenerInput) -> ListenerContext {
        let mut listener = ListenerContext {
            name: l.name.clone(),
            port: l.port,
            protocol: l.protocol,
            hostname: l.hostname.clone(),
            tls: l
                .tls_secret
                .clone()
                .map(|secret_name| TlsContext { secret_name }),
            virtual_hosts: Vec::new(),
            backends: Vec::new(),
        };
        if let Some(hosts) = self.http.remove(&l.name) {
            listener.virtual_hosts = virtual_hosts(hosts);
        }
        listener.backends = match self.l4.remove(&l.name) {
            Some(backends) => backends,
            None => {
                let (valid, invalid) = resolve_inputs(self.inputs, &l.backends);
                weighted(valid, invalid)
            }
        };
        listener
    }

    fn issue(&mut self, index: usize, rule: Option<usize>, reason: IssueReason, message: String) {
        self.reports[index].issues.push(RouteIssue {
            rule,
            reason,
            message,
        });
    }

    /// Listeners of this gateway that the route's parentRefs select and that
    /// accept its kind.
    fn attach(&mut self, index: usize, route: &Route, refs: &[ParentRef<'_>]) -> Vec<usize> {
        let gateway = &self.inputs.gateway;
        let mut selected = Vec::new();
        let mut named_us = false;
        for parent in refs {
            let namespace = parent.namespace_or(route.namespace());
            if !parent.is_gateway() || parent.name != gateway.name || namespace != gateway.namespace
            {
                continue;
            }
            named_us = true;
            let mut any = false;
            for (li, listener) in self.inputs.listeners.iter().enumerate() {
                if parent.section_name.is_some_and(|s| s != listener.name)
                    || parent.port.is_some_and(|p| p != i32::from(listener.port))
                {
                    continue;
                }
                let compatible = matches!(
                    (route, listener.protocol),
                    (
                        Route::Http(_),
                        ListenerProtocol::Http | ListenerProtocol::Https
                    ) | (Route::Tcp(_), ListenerProtocol::Tcp)
                        | (Route::Udp(_), ListenerProtocol::Udp)
                );
                if compatible {
                    any = true;
                    if !selected.contains(&li) {
                        selected.push(li);
                    }
                }
            }
            if !any {
                self.issue(
                    index,
                    None,
                    IssueReason::NotAllowedByListeners,
                    format!(
                        "no {} listener matches parentRef {}{}{}",
                        route.kind(),
                        parent.name,
                        parent
                            .section_name
                            .map(|s| format!(" sectionName {s}"))
                            .unwrap_or_default(),
                        parent
                            .port
                            .map(|p| format!(" port {p}"))
                            .unwrap_or_default()
                    ),
                );
            }
        }
        if !named_us {
            self.issue(
                index,
                None,
                IssueReason::NoMatchingParent,
                format!(
                    "no parentRef names gateway {}/{}",
                    gateway.namespace, gateway.name
                ),
            );
        }
        selected
    }

    fn route(&mut self, index: usize, route: &Route) {
        match route {
            Route::Http(http) => {
                let refs = http.spec.parent_refs();
                let listeners = self.attach(index, route, &refs);
                self.http_route(index, route, http, listeners);
            }
            Route::Tcp(tcp) => {
                let refs = tcp.spec.parent_refs();
                let listeners = self.attach(index, route, &refs);
                let rules = tcp.spec.rule_backend_refs();
                self.l4_route(index, route, &rules, listeners, false);
            }
            Route::Udp(udp) => {
                let refs = udp.spec.parent_refs();
                let listeners = self.attach(index, route, &refs);
                let rules = udp.spec.rule_backend_refs();
                self.l4_route(index, route, &rules, listeners, true);
            }
        }
    }

    fn l4_route(
        &mut self,
        index: usize,
        route: &Route,
        rules: &[Vec<BackendRef<'_>>],
        listeners: Vec<usize>,
        udp: bool,
    ) {
        if rules.len() > 1 {
            self.issue(
                index,
                Some(1),
                IssueReason::UnsupportedValue,
                format!(
                    "{} supports one rule; rules after the first are ignored",
                    route.kind()
                ),
            );
        }
        let (valid, invalid) = match rules.first() {
            Some(refs) => self.resolve(index, 0, route.namespace(), refs),
            None => (Vec::new(), 0),
        };
        let mut backends = weighted(valid, invalid);
        if udp && backends.len() > 1 {
            backends.sort_by_key(|b| Reverse(b.weight));
            self.issue(
                index,
                Some(0),
                IssueReason::UnsupportedValue,
                format!(
                    "the UDP proxy sends a listener to one backend; using {} (highest weight), ignoring {}",
                    backends[0].cluster,
                    backends.len() - 1
                ),
            );
            backends.truncate(1);
        }
        for li in listeners {
            let name = self.inputs.listeners[li].name.clone();
            if self.l4.contains_key(&name) {
                self.issue(
                    index,
                    None,
                    IssueReason::NotAllowedByListeners,
                    format!(
                        "listener {name} already carries an older {} route",
                        route.kind()
                    ),
                );
                continue;
            }
            self.l4.insert(name.clone(), backends.clone());
            self.reports[index].attached_listeners.push(name);
        }
    }

    /// Resolves backend refs: valid weighted clusters (weight > 0) and the
    /// total weight of invalid ones, reporting each problem.
    fn resolve(
        &mut self,
        index: usize,
        rule: usize,
        namespace: &str,
        refs: &[BackendRef<'_>],
    ) -> (Vec<WeightedCluster>, u32) {
        let mut valid = Vec::new();
        let mut invalid = 0u32;
        for backend in refs {
            let weight = u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(0);
            let target_ns = backend.namespace_or(namespace);
            let problem = if !backend.is_service() {
                Some((
                    IssueReason::InvalidKind,
                    format!(
                        "backendRef {} has unsupported kind {}/{}",
                        backend.name,
                        backend.group.unwrap_or(""),
                        backend.kind.unwrap_or("Service")
                    ),
                ))
            } else if target_ns != namespace {
                Some((
                    IssueReason::RefNotPermitted,
                    format!(
                        "backendRef {target_ns}/{} is in another namespace (ReferenceGrant not supported)",
                        backend.name
                    ),
                ))
            } else if backend.has_filters {
                Some((
                    IssueReason::UnsupportedValue,
                    format!(
                        "backendRef {} has filters, which are not supported; its share gets 500",
                        backend.name
                    ),
                ))
            } else {
                match backend.port.and_then(|p| u16::try_from(p).ok()) {
                    None => Some((
                        IssueReason::UnsupportedValue,
                        format!("backendRef {} has no valid port", backend.name),
                    )),
                    Some(port) => {
                        let found = self.inputs.backends.iter().any(|b| {
                            b.namespace == target_ns && b.name == backend.name && b.port == port
                        });
                        if found {
                            if weight > 0 {
                                let service = ServiceRef {
                                    namespace: target_ns.to_owned(),
                                    name: backend.name.to_owned(),
                                    port,
                                };
                                valid.push(WeightedCluster {
                                    cluster: ClusterContext::name_for(&service),
                                    weight,
                                });
                            }
                            None
                        } else {
                            Some((
                                IssueReason::BackendNotFound,
                                format!("service {target_ns}/{}:{port} not found", backend.name),
                            ))
                        }
                    }
                }
            };
            if let Some((reason, message)) = problem {
                invalid = invalid.saturating_add(weight);
                self.issue(index, Some(rule), reason, message);
            }
        }
        (valid, invalid)
    }

    fn http_route(&mut self, index: usize, route: &Route, http: &HttpRoute, listeners: Vec<usize>) {
        let namespace = route.namespace().to_owned();
        let source = format!("{namespace}/{}", route.name());
        let tail = precedence_tail(route);
        let route_hosts: Vec<String> = http.spec.hostnames.clone().unwrap_or_default();
        let rules: &[HttpRouteRules] = http.spec.rules.as_deref().unwrap_or_default();
        let default_rule = [HttpRouteRules::default()];
        let rules = if rules.is_empty() {
            &default_rule[..]
        } else {
            rules
        };
        let compiled: Vec<RuleParts> = rules
            .iter()
            .enumerate()
            .map(|(ri, rule)| self.http_rule(index, &namespace, ri, rule))
            .collect();

        for li in listeners {
            let listener = &self.inputs.listeners[li];
            let domains = intersect_hostnames(listener.hostname.as_deref(), &route_hosts);
            if domains.is_empty() {
                self.issue(
                    index,
                    None,
                    IssueReason::NoMatchingListenerHostname,
                    format!("no route hostname intersects listener {}", listener.name),
                );
                continue;
            }
            let listener_name = listener.name.clone();
            self.reports[index]
                .attached_listeners
                .push(listener_name.clone());
            let hosts = self.http.entry(listener_name).or_default();
            for domain in domains {
                let entries = hosts.entry(domain).or_default();
                for (ri, (rule, parts)) in rules.iter().zip(&compiled).enumerate() {
                    let default_match = [HttpRouteRulesMatches::default()];
                    let matches = rule
                        .matches
                        .as_deref()
                        .filter(|m| !m.is_empty())
                        .unwrap_or(&default_match);
                    for (mi, m) in matches.iter().enumerate() {
                        let mut context = parts.route_for(&source, ri, mi, m);
                        redirect_to_listener_port(&mut context.action, listener);
                        let key: PrecedenceKey = (
                            match context.path.kind {
                                PathMatchKind::Exact => 0,
                                PathMatchKind::Prefix => 1,
                                PathMatchKind::Regex => 2,
                            },
                            Reverse(context.path.value.len()),
                            Reverse(context.method.is_some()),
                            Reverse(context.headers.len()),
                            Reverse(context.query_params.len()),
                            tail.clone(),
                            ri,
                            mi,
                        );
                        entries.push((key, context));
                    }
                }
            }
        }
    }

    /// Translates the parts of a rule that do not depend on the match.
    fn http_rule(
        &mut self,
        index: usize,
        namespace: &str,
        ri: usize,
        rule: &HttpRouteRules,
    ) -> RuleParts {
        let mut parts = RuleParts::default();
        let mut unsupported = Vec::new();
        for filter in rule.filters.iter().flatten() {
            self.http_filter(index, namespace, ri, filter, &mut parts, &mut unsupported);
        }
        if parts.redirect.is_some()
            && (parts.rewrite_host.is_some() || parts.rewrite_path.is_some())
        {
            unsupported.push("RequestRedirect together with URLRewrite".to_owned());
        }
        if let Some(timeouts) = &rule.timeouts {
            self.rule_timeouts(index, ri, timeouts, &mut parts.timeouts);
        }

        let refs = crate::refs::http_rule_backend_refs(rule);
        let (valid, invalid) = self.resolve(index, ri, namespace, &refs);
        parts.backends = weighted(valid, invalid);

        if !unsupported.is_empty() {
            // A filter must not be skipped: requests it would have handled get a 500.
            self.issue(
                index,
                Some(ri),
                IssueReason::UnsupportedValue,
                format!(
                    "unsupported: {}; the rule answers 500",
                    unsupported.join(", ")
                ),
            );
            parts.disabled = true;
        }
        parts
    }

    /// Adds one filter of rule `ri` to `parts`; what it cannot do goes to
    /// `unsupported`.
    fn http_filter(
        &mut self,
        index: usize,
        namespace: &str,
        ri: usize,
        filter: &HttpRouteRulesFilters,
        parts: &mut RuleParts,
        unsupported: &mut Vec<String>,
    ) {
        match filter.r#type {
            HttpRouteRulesFiltersType::RequestHeaderModifier => {
                if let Some(m) = &filter.request_header_modifier {
                    header_modifier(
                        &mut parts.request_headers,
                        m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                        m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                        m.remove.iter().flatten(),
                    );
                }
            }
            HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                if let Some(m) = &filter.response_header_modifier {
                    header_modifier(
                        &mut parts.response_headers,
                        m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                        m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                        m.remove.iter().flatten(),
                    );
                }
            }
            HttpRouteRulesFiltersType::RequestRedirect => {
                if let Some(r) = &filter.request_redirect {
                    parts.redirect = Some(redirect_parts(r, unsupported));
                }
            }
            HttpRouteRulesFiltersType::UrlRewrite => {
                if let Some(r) = &filter.url_rewrite {
                    parts.rewrite_host = r.hostname.clone();
                    parts.rewrite_path = r.path.as_ref().map(url_rewrite_path);
                }
            }
            HttpRouteRulesFiltersType::RequestMirror => {
                if let Some(m) = &filter.request_mirror {
                    let mirrors = self.request_mirror(index, namespace, ri, m);
                    parts.mirrors.extend(mirrors);
                }
            }
            HttpRouteRulesFiltersType::ExtensionRef => {
                unsupported.push("filter ExtensionRef".to_owned())
            }
            HttpRouteRulesFiltersType::Cors => unsupported.push("filter CORS".to_owned()),
        }
    }

    /// The mirrors of a `RequestMirror` filter of rule `ri`: its backend, if
    /// it resolves, with the share of requests it gets.
    fn request_mirror(
        &mut self,
        index: usize,
        namespace: &str,
        ri: usize,
        m: &HttpRouteRulesFiltersRequestMirror,
    ) -> Vec<Mirror> {
        let b = &m.backend_ref;
        let refs = [BackendRef {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            namespace: b.namespace.as_deref(),
            name: &b.name,
            port: b.port,
            weight: Some(1),
            has_filters: false,
        }];
        let (valid, _) = self.resolve(index, ri, namespace, &refs);
        let per_million = mirror_per_million(m);
        valid
            .into_iter()
            .map(|w| Mirror {
                cluster: w.cluster,
                per_million,
            })
            .collect()
    }

    /// The timeouts of rule `ri`; an invalid duration is reported and
    /// ignored.
    fn rule_timeouts(
        &mut self,
        index: usize,
        ri: usize,
        timeouts: &HttpRouteRulesTimeouts,
        parts: &mut Timeouts,
    ) {
        for (field, value, slot) in [
            ("request", &timeouts.request, &mut parts.request),
            (
                "backendRequest",
                &timeouts.backend_request,
                &mut parts.backend_request,
            ),
        ] {
            if let Some(value) = value {
                match gateway_api::Duration::from_str(value) {
                    Ok(d) => *slot = Some(proto_duration(d.as_secs(), d.subsec_nanos())),
                    Err(err) => self.issue(
                        index,
                        Some(ri),
                        IssueReason::UnsupportedValue,
                        format!("timeouts.{field} {value:?} is invalid ({err}); ignored"),
                    ),
                }
            }
        }
    }
}

/// A redirect without a scheme or a port keeps the listener's port, as
/// the Gateway API requires (the redirect port is the listener's when no
/// scheme is given), unless it is the default port of the listener's
/// protocol, which a `Location` omits. With a hostname and no port, Envoy
/// would otherwise drop the port. A redirect with a scheme and no port
/// goes to that scheme's default port, which Envoy does already.
fn redirect_to_listener_port(action: &mut RouteAction, listener: &ListenerInput) {
    let RouteAction::Redirect {
        scheme: None,
        port: port @ None,
        ..
    } = action
    else {
        return;
    };
    let default = match listener.protocol {
        ListenerProtocol::Https => 443,
        _ => 80,
    };
    if listener.port != default {
        *port = Some(listener.port);
    }
}

/// The redirect of a `RequestRedirect` filter; an unsupported status code
/// goes to `unsupported` (and the redirect says `FOUND`).
fn redirect_parts(
    r: &HttpRouteRulesFiltersRequestRedirect,
    unsupported: &mut Vec<String>,
) -> RedirectParts {
    let response_code = match r.status_code.unwrap_or(302) {
        301 => "MOVED_PERMANENTLY",
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        other => {
            unsupported.push(format!("redirect status code {other}"));
            "FOUND"
        }
    };
    RedirectParts {
        scheme: r.scheme.as_ref().map(|s| match s {
            HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".to_owned(),
            HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".to_owned(),
        }),
        hostname: r.hostname.clone(),
        port: r.port.and_then(|p| u16::try_from(p).ok()),
        path: r.path.as_ref().map(|p| match p.r#type {
            HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath => {
                PathReplace::Full(p.replace_full_path.clone().unwrap_or_else(|| "/".into()))
            }
            HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch => {
                PathReplace::Prefix(p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()))
            }
        }),
        response_code: response_code.to_owned(),
    }
}

/// The path replacement of a `URLRewrite` filter (default `/`).
fn url_rewrite_path(p: &HttpRouteRulesFiltersUrlRewritePath) -> PathReplace {
    match p.r#type {
        HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath => {
            PathReplace::Full(p.replace_full_path.clone().unwrap_or_else(|| "/".into()))
        }
        HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch => {
            PathReplace::Prefix(p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()))
        }
    }
}

/// The share of requests a `RequestMirror` filter mirrors, in parts per
/// million (all of them when it says nothing).
fn mirror_per_million(m: &HttpRouteRulesFiltersRequestMirror) -> u32 {
    match (&m.fraction, m.percent) {
        (Some(f), _) => {
            let denominator = i64::from(f.denominator.unwrap_or(100).max(1));
            u32::try_from((i64::from(f.numerator) * 1_000_000 / denominator).clamp(0, 1_000_000))
                .unwrap_or(0)
        }
        (None, Some(p)) => u32::try_from(p.clamp(0, 100)).unwrap_or(0) * 10_000,
        (None, None) => 1_000_000,
    }
}

/// Turns valid weighted clusters plus the weight of invalid backends into
/// the final list: invalid weight goes to [`INVALID_BACKEND_CLUSTER`]
/// (answered with 500), none valid gives an empty list.
fn weighted(valid: Vec<WeightedCluster>, invalid: u32) -> Vec<WeightedCluster> {
    if valid.is_empty() {
        return Vec::new();
    }
    let mut backends = valid;
    if invalid > 0 {
        backends.push(WeightedCluster {
            cluster: INVALID_BACKEND_CLUSTER.to_owned(),
            weight: invalid,
        });
    }
    backends
}

fn resolve_inputs(inputs: &GatewayInputs, refs: &[BackendRefInput]) -> (Vec<WeightedCluster>, u32) {
    let mut valid = Vec::new();
    let mut invalid = 0u32;
    for r in refs {
        let found = inputs
            .backends
            .iter()
            .any(|b| b.namespace == r.namespace && b.name == r.name && b.port == r.port);
        if !found {
            invalid = invalid.saturating_add(r.weight);
        } else if r.weight > 0 {
            let service = ServiceRef {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                port: r.port,
            };
            valid.push(WeightedCluster {
                cluster: ClusterContext::name_for(&service),
                weight: r.weight,
            });
        }
    }
    (valid, invalid)
}

fn header_modifier<'h>(
    target: &mut HeaderModifier,
    set: impl Iterator<Item = (&'h String, &'h String)>,
    add: impl Iterator<Item = (&'h String, &'h String)>,
    remove: impl Iterator<Item = &'h String>,
) {
    target.set.extend(set.map(|(n, v)| HeaderValue {
        name: n.to_ascii_lowercase(),
        value: v.clone(),
    }));
    target.add.extend(add.map(|(n, v)| HeaderValue {
        name: n.to_ascii_lowercase(),
        value: v.clone(),
    }));
    target.remove.extend(remove.map(|n| n.to_ascii_lowercase()));
}

/// A proto3 JSON duration (`"10s"`, `"0.500s"`).
fn proto_duration(secs: u64, nanos: u32) -> String {
    if nanos == 0 {
        format!("{secs}s")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{secs}.{}s", fraction.trim_end_matches('0'))
    }
}

#[derive(Debug, Clone)]
enum PathReplace {
    Full(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
struct RedirectParts {
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<PathReplace>,
    response_code: String,
}

/// The match-independent parts of a translated rule.
#[derive(Debug, Clone, Default)]
struct RuleParts {
    request_headers: HeaderModifier,
    response_headers: HeaderModifier,
    redirect: Option<RedirectParts>,
    rewrite_host: Option<String>,
    rewrite_path: Option<PathReplace>,
    mirrors: Vec<Mirror>,
    timeouts: Timeouts,
    backends: Vec<WeightedCluster>,
    disabled: bool,
}

impl RuleParts {
    fn route_for(
        &self,
        source: &str,
        rule: usize,
        index: usize,
        m: &HttpRouteRulesMatches,
    ) -> RouteContext {
        let path = normalise_path(m);
        let action = self.action(&path);
        let forwarding = matches!(action, RouteAction::Forward { .. });
        let rewrite = (forwarding && (self.rewrite_host.is_some() || self.rewrite_path.is_some()))
            .then(|| Rewrite {
                hostname: self.rewrite_host.clone(),
                path: self.rewrite_path.as_ref().map(|r| path_rewrite(&path, r)),
            });
        RouteContext {
            name: format!("{source}/rule{rule}/match{index}"),
            source: source.to_owned(),
            rule,
            path,
            method: match_method(m),
            headers: header_matches(m),
            query_params: query_param_matches(m),
            action,
            request_headers: if forwarding {
                self.request_headers.clone()
            } else {
                HeaderModifier::default()
            },
            response_headers: self.response_headers.clone(),
            rewrite,
            mirrors: if forwarding {
                self.mirrors.clone()
            } else {
                Vec::new()
            },
            timeouts: if forwarding {
                self.timeouts.clone()
            } else {
                Timeouts::default()
            },
        }
    }

    /// What the rule does with a request matching `path`: 500 when
    /// disabled, else redirect, else forward (500 without a backend).
    fn action(&self, path: &PathMatch) -> RouteAction {
        if self.disabled {
            RouteAction::DirectResponse { status: 500 }
        } else if let Some(r) = &self.redirect {
            RouteAction::Redirect {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                port: r.port,
                path: r.path.as_ref().map(|replace| path_rewrite(path, replace)),
                response_code: r.response_code.clone(),
            }
        } else if self.backends.is_empty() {
            RouteAction::DirectResponse { status: 500 }
        } else {
            RouteAction::Forward {
                backends: self.backends.clone(),
            }
        }
    }
}

/// The rewrite of the path matched by `path` that `replace` asks for.
fn path_rewrite(path: &PathMatch, replace: &PathReplace) -> PathRewrite {
    match replace {
        PathReplace::Full(value) => PathRewrite::Regex {
            pattern: "^/.*$".into(),
            substitution: value.clone(),
        },
        PathReplace::Prefix(value) => prefix_rewrite(path, value),
    }
}

/// The match's HTTP method, as the Gateway API spells it.
fn match_method(m: &HttpRouteRulesMatches) -> Option<String> {
    m.method
        .as_ref()
        .and_then(|method| serde_json::to_value(method).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// The match's header matches (names lowercased).
fn header_matches(m: &HttpRouteRulesMatches) -> Vec<ValueMatch> {
    m.headers
        .iter()
        .flatten()
        .map(|h| ValueMatch {
            name: h.name.to_ascii_lowercase(),
            kind: match h.r#type {
                Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => ValueMatchKind::Regex,
                _ => ValueMatchKind::Exact,
            },
            value: h.value.clone(),
        })
        .collect()
}

/// The match's query parameter matches (names as written).
fn query_param_matches(m: &HttpRouteRulesMatches) -> Vec<ValueMatch> {
    m.query_params
        .iter()
        .flatten()
        .map(|q| ValueMatch {
            name: q.name.clone(),
            kind: match q.r#type {
                Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => {
                    ValueMatchKind::Regex
                }
                _ => ValueMatchKind::Exact,
            },
            value: q.value.clone(),
        })
        .collect()
}

/// The match's path, normalised (default `PathPrefix /`; prefixes without
/// a trailing `/`).
fn normalise_path(m: &HttpRouteRulesMatches) -> PathMatch {
    let (kind, value) = match &m.path {
        None => (PathMatchKind::Prefix, "/".to_owned()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            match p.r#type {
                Some(HttpRouteRulesMatchesPathType::Exact) => (PathMatchKind::Exact, value),
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    (PathMatchKind::Regex, value)
                }
                _ => (PathMatchKind::Prefix, value),
            }
        }
    };
    let value = if kind == PathMatchKind::Prefix {
        let trimmed = value.trim_end_matches('/');
        if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        }
    } else {
        value
    };
    PathMatch { kind, value }
}

/// A `ReplacePrefixMatch` for a match: Envoy's `prefix_rewrite` where it
/// has the Gateway API meaning, a regex otherwise (replacement `/`, or a
/// `/` match prefix).
fn prefix_rewrite(path: &PathMatch, replacement: &str) -> PathRewrite {
    let replacement = replacement.trim_end_matches('/');
    if path.kind == PathMatchKind::Prefix && path.value == "/" {
        return PathRewrite::Regex {
            pattern: "^/".into(),
            substitution: format!("{replacement}/"),
        };
    }
    if replacement.is_empty() {
        return PathRewrite::Regex {
            pattern: format!("^{}/*", regex_escape(&path.value)),
            substitution: "/".into(),
        };
    }
    PathRewrite::Prefix {
        value: replacement.to_owned(),
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Hostnames of a route on a listener (Gateway API intersection rules),
/// `["*"]` when neither has one; empty when they do not intersect.
fn intersect_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let mut out: Vec<String> = match (listener, route.is_empty()) {
        (None, true) => vec!["*".into()],
        (None, false) => route.to_vec(),
        (Some(l), true) => vec![l.to_owned()],
        (Some(l), false) => route
            .iter()
            .filter_map(|h| {
                if host_matches(l, h) {
                    Some(h.clone())
                } else if host_matches(h, l) {
                    Some(l.to_owned())
                } else {
                    None
                }
            })
            .collect(),
    };
    out.iter_mut().for_each(|h| *h = h.to_ascii_lowercase());
    out.sort();
    out.dedup();
    out
}

/// Whether `pattern` (possibly `*.suffix`) covers `host` (possibly a wildcard itself).
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    if pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        None => false,
        Some(suffix) => {
            let host = host.strip_prefix("*.").unwrap_or(&host);
            host.len() > suffix.len() && host.ends_with(&format!(".{suffix}"))
        }
    }
}
