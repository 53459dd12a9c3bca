//! The template context: the one documented, versioned struct every
//! template is rendered with.
//!
//! Templates see it as plain data: field names below are the variable names
//! (`gateway.name`, `listeners[0].virtual_hosts[0].routes`), enums are their
//! lowercase/uppercase strings as documented, addresses are strings.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The version of [`TemplateContext`]; bumped on any incompatible change.
/// Templates can check `{% if version != 1 %}{{ fail("...") }}{% endif %}`.
pub const CONTEXT_VERSION: u32 = 1;

/// Name of the cluster that route actions point at for a backend that could
/// not be resolved. It is never defined: Envoy answers those requests with a
/// 500 (`cluster_not_found_response_code: INTERNAL_SERVER_ERROR`), as the
/// Gateway API requires, and TCP/UDP connections to it are closed.
pub const INVALID_BACKEND_CLUSTER: &str = "epic/invalid-backend";

/// Everything a template may use (`version` [`CONTEXT_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateContext {
    /// Context version, [`CONTEXT_VERSION`].
    pub version: u32,
    /// The gateway's identity.
    pub gateway: GatewayIdentity,
    /// Public addresses allocated to the gateway.
    pub addresses: PublicAddresses,
    /// Listeners, with their normalised routes.
    pub listeners: Vec<ListenerContext>,
    /// Upstream clusters (one per backend service port) with their endpoints.
    pub clusters: Vec<ClusterContext>,
    /// The gateway's DNS name (rendered from the template's DNS name
    /// template before the Envoy template, empty if none).
    pub dns_name: String,
}

/// Who the gateway is (`gateway.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayIdentity {
    /// `gateway.name`: the Gateway (or Service) name.
    pub name: String,
    /// `gateway.namespace`: its namespace on the gateway platform.
    pub namespace: String,
    /// `gateway.tenant`: the owning tenant.
    pub tenant: String,
    /// `gateway.uid`: the object's UID.
    pub uid: String,
}

/// Public addresses by family (`addresses.*`), each as a string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAddresses {
    /// `addresses.ipv4`: IPv4 addresses.
    pub ipv4: Vec<IpAddr>,
    /// `addresses.ipv6`: IPv6 addresses.
    pub ipv6: Vec<IpAddr>,
    /// `addresses.all`: every address, IPv4 first.
    pub all: Vec<IpAddr>,
}

impl PublicAddresses {
    /// Sorts addresses into families (IPv4 first in `all`, order kept otherwise).
    pub fn new(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let (ipv4, ipv6): (Vec<IpAddr>, Vec<IpAddr>) =
            addresses.into_iter().partition(IpAddr::is_ipv4);
        let all = ipv4.iter().chain(ipv6.iter()).copied().collect();
        Self { ipv4, ipv6, all }
    }
}

/// Listener protocol (`listeners[].protocol`: `"TCP"`, `"UDP"`, `"HTTP"`, `"HTTPS"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// L4 TCP proxy.
    Tcp,
    /// L4 UDP proxy.
    Udp,
    /// Plain-text HTTP.
    Http,
    /// HTTP over TLS terminated at the gateway.
    Https,
}

/// One listener (`listeners[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerContext {
    /// `name`: unique listener name (also the route configuration name for HTTP).
    pub name: String,
    /// `port`: public port.
    pub port: u16,
    /// `protocol`: see [`ListenerProtocol`].
    pub protocol: ListenerProtocol,
    /// `hostname`: the listener's hostname (may be a `*.` wildcard), or none.
    pub hostname: Option<String>,
    /// `tls`: TLS settings (HTTPS listeners).
    pub tls: Option<TlsContext>,
    /// `virtual_hosts`: HTTP/HTTPS only — one per domain, routes in Gateway
    /// API precedence order.
    pub virtual_hosts: Vec<VirtualHostContext>,
    /// `backends`: TCP/UDP only — weighted clusters for the L4 proxy (empty:
    /// no backend, connections are refused).
    pub backends: Vec<WeightedCluster>,
}

/// TLS termination settings (`listeners[].tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsContext {
    /// `secret_name`: the SDS secret holding the certificate and key.
    pub secret_name: String,
}

/// One virtual host (`listeners[].virtual_hosts[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualHostContext {
    /// `name`: unique within the listener.
    pub name: String,
    /// `domains`: Envoy domains (`"*"`, `"example.com"`, `"*.example.com"`).
    pub domains: Vec<String>,
    /// `routes`: in precedence order (first match wins).
    pub routes: Vec<RouteContext>,
}

/// Path match kind (`"exact"`, `"prefix"` — path-segment prefix, `"regex"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatchKind {
    /// Whole path equal.
    Exact,
    /// Path-segment prefix (`/foo` matches `/foo` and `/foo/bar`, not
    /// `/foobar`); the value never ends in `/` except for `/` itself.
    Prefix,
    /// RE2 regular expression on the whole path.
    Regex,
}

/// Header / query parameter match kind (`"exact"`, `"regex"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatchKind {
    /// Equal.
    Exact,
    /// RE2 regular expression.
    Regex,
}

/// A path match (`routes[].path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMatch {
    /// `kind`: see [`PathMatchKind`].
    pub kind: PathMatchKind,
    /// `value`: the path, prefix or regex.
    pub value: String,
}

/// A header or query parameter match (`routes[].headers[]`, `routes[].query_params[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    /// `name`: header (lowercase) or parameter name.
    pub name: String,
    /// `kind`: see [`ValueMatchKind`].
    pub kind: ValueMatchKind,
    /// `value`: the value or regex.
    pub value: String,
}

/// A header name and value (`set[]`, `add[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderValue {
    /// `name`.
    pub name: String,
    /// `value`.
    pub value: String,
}

/// Header modifications (`routes[].request_headers`, `routes[].response_headers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// `set`: overwrite or add.
    pub set: Vec<HeaderValue>,
    /// `add`: append or add.
    pub add: Vec<HeaderValue>,
    /// `remove`: header names to remove.
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// True when the modifier changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A cluster with a weight (`routes[].action.backends[]`, `listeners[].backends[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedCluster {
    /// `cluster`: a `clusters[].name`, or [`INVALID_BACKEND_CLUSTER`].
    pub cluster: String,
    /// `weight`: relative weight, always > 0.
    pub weight: u32,
}

/// A path rewrite (`rewrite.path`, `action.path` of a redirect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PathRewrite {
    /// Replace the matched prefix with `value` (Envoy `prefix_rewrite`).
    Prefix {
        /// The replacement prefix.
        value: String,
    },
    /// Replace the path with a regex substitution (Envoy `regex_rewrite`);
    /// used for full-path replacement and for prefix replacement by `/`.
    Regex {
        /// RE2 pattern.
        pattern: String,
        /// Substitution.
        substitution: String,
    },
}

/// A request rewrite before forwarding (`routes[].rewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// `hostname`: replace the Host header.
    pub hostname: Option<String>,
    /// `path`: see [`PathRewrite`].
    pub path: Option<PathRewrite>,
}

/// What a route does (`routes[].action`, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteAction {
    /// `kind: "forward"`: send to `backends` (at least one).
    Forward {
        /// Weighted clusters (weight > 0 only).
        backends: Vec<WeightedCluster>,
    },
    /// `kind: "redirect"`: answer with a redirect.
    Redirect {
        /// `scheme`: `"http"`/`"https"` or none.
        scheme: Option<String>,
        /// `hostname` or none.
        hostname: Option<String>,
        /// `port` or none.
        port: Option<u16>,
        /// `path`: prefix or full-path (regex) replacement, or none.
        path: Option<PathRewrite>,
        /// `response_code`: Envoy `RedirectResponseCode` name (`"FOUND"`, ...).
        response_code: String,
    },
    /// `kind: "direct_response"`: answer with `status` (500 when no backend is valid).
    DirectResponse {
        /// HTTP status.
        status: u16,
    },
}

/// A request mirror (`routes[].mirrors[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    /// `cluster`: the mirror cluster.
    pub cluster: String,
    /// `per_million`: share of requests mirrored, in millionths (1000000 = all).
    pub per_million: u32,
}

/// Route timeouts as proto3 JSON durations (`"10s"`, `"0.500s"`; `"0s"` disables).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// `request`: whole request (Envoy route `timeout`).
    pub request: Option<String>,
    /// `backend_request`: each upstream attempt (Envoy `per_try_timeout`).
    pub backend_request: Option<String>,
}

/// One normalised HTTP route: one match of one rule (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteContext {
    /// `name`: `<namespace>/<route>/rule<N>/match<M>`, unique in a virtual host.
    pub name: String,
    /// `source`: `<namespace>/<route>` of the HTTPRoute.
    pub source: String,
    /// `rule`: rule index in the HTTPRoute.
    pub rule: usize,
    /// `path`: see [`PathMatch`].
    pub path: PathMatch,
    /// `method`: HTTP method to match, or none.
    pub method: Option<String>,
    /// `headers`: header matches (all must match).
    pub headers: Vec<ValueMatch>,
    /// `query_params`: query parameter matches (all must match).
    pub query_params: Vec<ValueMatch>,
    /// `action`: see [`RouteAction`].
    pub action: RouteAction,
    /// `request_headers`: request header modifications.
    pub request_headers: HeaderModifier,
    /// `response_headers`: response header modifications.
    pub response_headers: HeaderModifier,
    /// `rewrite`: URL rewrite before forwarding, or none.
    pub rewrite: Option<Rewrite>,
    /// `mirrors`: request mirrors.
    pub mirrors: Vec<Mirror>,
    /// `timeouts`: see [`Timeouts`].
    pub timeouts: Timeouts,
}

/// The backend service a cluster stands for (`clusters[].service`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    /// `namespace` of the Service in the user cluster.
    pub namespace: String,
    /// `name` of the Service.
    pub name: String,
    /// `port`: the Service port.
    pub port: u16,
}

/// One endpoint (`clusters[].endpoints[]`): a pod address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointContext {
    /// `address`: the pod address.
    pub address: IpAddr,
    /// `port`: the pod port for the backend's port.
    pub port: u16,
    /// `ready`: whether the endpoint is ready (unready: `UNHEALTHY` in EDS).
    pub ready: bool,
    /// `node`: the cluster node hosting the pod, if known.
    pub node: Option<String>,
}

/// An upstream cluster (`clusters[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterContext {
    /// `name`: the Envoy cluster name, `<namespace>/<service>:<port>`.
    pub name: String,
    /// `service`: see [`ServiceRef`].
    pub service: ServiceRef,
    /// `endpoints`: pod endpoints.
    pub endpoints: Vec<EndpointContext>,
}

impl ClusterContext {
    /// The conventional cluster name for a service port.
    pub fn name_for(service: &ServiceRef) -> String {
        format!("{}/{}:{}", service.namespace, service.name, service.port)
    }
}
