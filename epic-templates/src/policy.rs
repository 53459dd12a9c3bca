//! The platform's policy for rendered configuration: what a template may
//! make Envoy do.
//!
//! A tenant's template is tenant input that becomes Envoy configuration on
//! a shared gateway node, so a rendered resource set must stay inside an
//! allowlist before it is served ([`check_policy`]):
//!
//! - **Extensions**: every `typed_config` (any `google.protobuf.Any`,
//!   however deep) has a type from [`ALLOWED_EXTENSIONS`]; Lua, Wasm,
//!   ext_proc, ext_authz, file access logs, dynamic forward proxies and the
//!   rest are refused.
//! - **Fields** that reach outside the gateway: file and environment data
//!   sources, watched directories, configuration from files or from any
//!   server but ADS, Google gRPC clients, pipes and internal addresses,
//!   custom resolvers, transparent listeners, DNS and original-destination
//!   clusters.
//! - **Addresses**: a socket address in a listener is a public address of
//!   the gateway on one of its listener ports; a socket address in a
//!   cluster or endpoint assignment is one of the gateway's (admitted)
//!   endpoints. A template cannot bind another tenant's address or send
//!   traffic to the platform.
//!
//! ```
//! use epic_templates::policy::check_policy;
//! use epic_templates::{EnvoyResources, TemplateContext};
//!
//! let context: TemplateContext = serde_yaml_ng::from_str(r#"
//! version: 1
//! gateway: {name: web, namespace: default, tenant: t1, uid: "1"}
//! addresses: {ipv4: [192.0.2.10], ipv6: [], all: [192.0.2.10]}
//! listeners: [{name: web, port: 80, protocol: TCP, virtual_hosts: [], backends: []}]
//! clusters: []
//! dns_name: ""
//! "#).unwrap();
//! let rendered = EnvoyResources::from_text("t", r#"
//! clusters:
//! - name: metadata
//!   type: STATIC
//!   load_assignment:
//!     cluster_name: metadata
//!     endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 169.254.169.254, port_value: 80}}}}]}]
//! "#).unwrap();
//! let refused = check_policy(&rendered, &context).unwrap_err();
//! assert_eq!(
//!     refused.to_string(),
//!     "clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address: \
//!      169.254.169.254:80 is not an endpoint of the gateway"
//! );
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::context::TemplateContext;
use crate::descriptors;
use crate::resources::EnvoyResources;

/// Extension types a `typed_config` (any `Any`) may hold.
pub const ALLOWED_EXTENSIONS: &[&str] = &[
    // Network and UDP filters.
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
    "envoy.extensions.filters.udp.udp_proxy.v3.Route",
    // Listener filters.
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
    "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
    // HTTP filters.
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.http.cors.v3.Cors",
    "envoy.extensions.filters.http.cors.v3.CorsPolicy",
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
    "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
    "envoy.extensions.filters.http.buffer.v3.Buffer",
    "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
    "envoy.extensions.filters.http.compressor.v3.Compressor",
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
    "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    "envoy.extensions.compression.gzip.compressor.v3.Gzip",
    "envoy.extensions.compression.brotli.compressor.v3.Brotli",
    "envoy.extensions.compression.zstd.compressor.v3.Zstd",
    "envoy.config.route.v3.FilterConfig",
    // Transport sockets and upstream protocol options.
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    "envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions",
    // Access logs to Envoy's own output only.
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
    // Load balancing policies.
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
    "envoy.extensions.load_balancing_policies.random.v3.Random",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev",
    // Matching inputs (UDP routes, RBAC matchers).
    "envoy.extensions.matching.common_inputs.network.v3.SourceIPInput",
    "envoy.extensions.matching.common_inputs.network.v3.SourcePortInput",
    "envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput",
    "envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput",
    "envoy.extensions.matching.common_inputs.network.v3.ServerNameInput",
    "envoy.extensions.matching.input_matchers.ip.v3.Ip",
    "envoy.type.http.v3.PathTransformation",
];

/// Fields no template may set: (message, field, why).
const FORBIDDEN_FIELDS: &[(&str, &str, &str)] = &[
    (
        "envoy.config.core.v3.DataSource",
        "filename",
        "reads a file on the gateway node",
    ),
    (
        "envoy.config.core.v3.DataSource",
        "environment_variable",
        "reads the proxy's environment",
    ),
    (
        "envoy.config.core.v3.ConfigSource",
        "path",
        "reads configuration from a file",
    ),
    (
        "envoy.config.core.v3.ConfigSource",
        "path_config_source",
        "reads configuration from a file",
    ),
    (
        "envoy.config.core.v3.ConfigSource",
        "api_config_source",
        "takes configuration from a server other than ADS",
    ),
    (
        "envoy.config.core.v3.GrpcService",
        "google_grpc",
        "opens a gRPC channel to any target",
    ),
    (
        "envoy.config.core.v3.Address",
        "pipe",
        "uses a local socket",
    ),
    (
        "envoy.config.core.v3.Address",
        "envoy_internal_address",
        "uses an internal listener",
    ),
    (
        "envoy.config.core.v3.SocketAddress",
        "resolver_name",
        "resolves through a custom resolver",
    ),
    (
        "envoy.config.core.v3.SocketAddress",
        "named_port",
        "uses a named port",
    ),
    (
        "envoy.config.listener.v3.Listener",
        "transparent",
        "binds transparently",
    ),
    (
        "envoy.config.listener.v3.Listener",
        "internal_listener",
        "is an internal listener",
    ),
    (
        "envoy.config.cluster.v3.Cluster",
        "upstream_bind_config",
        "binds to a chosen source address",
    ),
];

/// Messages no template may use at all: (message, why).
const FORBIDDEN_MESSAGES: &[(&str, &str)] = &[(
    "envoy.config.core.v3.WatchedDirectory",
    "watches a directory on the gateway node",
)];

/// Cluster discovery types a template may use.
const ALLOWED_CLUSTER_TYPES: &[&str] = &["STATIC", "EDS"];

/// One policy violation, with the field path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field path, e.g. `listeners[0].filter_chains[0].filters[0].typed_config`.
    pub path: String,
    /// What is not allowed.
    pub problem: PolicyProblem,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// What a rendered configuration may not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyProblem {
    /// A `typed_config` of a type outside [`ALLOWED_EXTENSIONS`].
    #[error("extension {0} is not allowed")]
    Extension(String),
    /// A forbidden field is set.
    #[error("{message}.{field} is not allowed: it {why}")]
    Field {
        /// The message.
        message: String,
        /// The field.
        field: String,
        /// What it would do.
        why: &'static str,
    },
    /// A cluster of a discovery type other than `STATIC` or `EDS`.
    #[error("cluster type {0} is not allowed (only STATIC and EDS)")]
    ClusterType(String),
    /// A listener address that is not the gateway's public address and port.
    #[error("{0} is not a public address and listener port of the gateway")]
    ListenerAddress(String),
    /// An upstream address that is not an endpoint of the gateway.
    #[error("{0} is not an endpoint of the gateway")]
    UpstreamAddress(String),
    /// An `Any` whose value does not decode as its type.
    #[error("typed_config does not decode as {0}")]
    Undecodable(String),
}

/// Every violation of a rendered set (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError(pub Vec<Violation>);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        for (i, v) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Where a socket address is found, and so what it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// In a listener: a public address of the gateway.
    Listener,
    /// In a cluster, assignment or route: an endpoint of the gateway.
    Upstream,
}

/// Checks `resources` against the platform's policy (module docs) for the
/// gateway of `context`.
pub fn check_policy(
    resources: &EnvoyResources,
    context: &TemplateContext,
) -> Result<(), PolicyError> {
    let mut walker = Walker {
        listen: context
            .addresses
            .all
            .iter()
            .flat_map(|a| context.listeners.iter().map(move |l| (*a, l.port)))
            .collect(),
        upstream: context
            .clusters
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| (e.address, e.port)))
            .collect(),
        violations: Vec::new(),
        path: String::new(),
        scope: Scope::Listener,
    };
    walker.resources(
        ("listeners", "envoy.config.listener.v3.Listener"),
        Scope::Listener,
        &resources.listeners,
    );
    walker.resources(
        ("clusters", "envoy.config.cluster.v3.Cluster"),
        Scope::Upstream,
        &resources.clusters,
    );
    walker.resources(
        (
            "route_configurations",
            "envoy.config.route.v3.RouteConfiguration",
        ),
        Scope::Upstream,
        &resources.route_configurations,
    );
    walker.resources(
        (
            "cluster_load_assignments",
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
        ),
        Scope::Upstream,
        &resources.cluster_load_assignments,
    );
    if walker.violations.is_empty() {
        Ok(())
    } else {
        Err(PolicyError(walker.violations))
    }
}

struct Walker {
    listen: BTreeSet<(IpAddr, u16)>,
    upstream: BTreeSet<(IpAddr, u16)>,
    violations: Vec<Violation>,
    path: String,
    scope: Scope,
}

impl Walker {
    fn report(&mut self, problem: PolicyProblem) {
        self.violations.push(Violation {
            path: self.path.clone(),
            problem,
        });
    }

    /// Walks the resources of one `(list, message type)`.
    fn resources<M: Message>(
        &mut self,
        (list, type_name): (&str, &str),
        scope: Scope,
        items: &[M],
    ) {
        self.scope = scope;
        let Some(descriptor) = descriptors::message(type_name) else {
            return self.report(PolicyProblem::Undecodable(type_name.to_owned()));
        };
        for (i, item) in items.iter().enumerate() {
            self.path = format!("{list}[{i}]");
            match DynamicMessage::decode(descriptor.clone(), item.encode_to_vec().as_slice()) {
                Ok(message) => self.message(&message),
                Err(_) => self.report(PolicyProblem::Undecodable(type_name.to_owned())),
            }
        }
    }

    /// Walks one message: its own rules, then every set field.
    fn message(&mut self, message: &DynamicMessage) {
        let descriptor = message.descriptor();
        let name = descriptor.full_name();
        if let Some((_, why)) = FORBIDDEN_MESSAGES.iter().find(|(m, _)| *m == name) {
            self.report(PolicyProblem::Field {
                message: name.to_owned(),
                field: "*".to_owned(),
                why,
            });
            return;
        }
        match name {
            "google.protobuf.Any" => return self.any(message),
            "envoy.config.core.v3.SocketAddress" => self.socket_address(message),
            "envoy.config.cluster.v3.Cluster" => self.cluster_type(message),
            _ => {}
        }
        for (field, value) in message.fields() {
            if let Some((_, _, why)) = FORBIDDEN_FIELDS
                .iter()
                .find(|(m, f, _)| *m == name && *f == field.name())
            {
                let at = self.path.len();
                self.path.push('.');
                self.path.push_str(field.name());
                self.report(PolicyProblem::Field {
                    message: name.to_owned(),
                    field: field.name().to_owned(),
                    why,
                });
                self.path.truncate(at);
                continue;
            }
            self.field(field.name(), value);
        }
    }

    fn field(&mut self, name: &str, value: &Value) {
        let at = self.path.len();
        self.path.push('.');
        self.path.push_str(name);
        match value {
            Value::Message(m) => self.message(m),
            Value::List(items) => {
                let base = self.path.len();
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        self.path.push_str(&format!("[{i}]"));
                        self.message(m);
                        self.path.truncate(base);
                    }
                }
            }
            Value::Map(entries) => {
                let base = self.path.len();
                let mut keys: Vec<_> = entries.iter().collect();
                keys.sort_by_key(|(k, _)| format!("{k:?}"));
                for (key, item) in keys {
                    if let Value::Message(m) = item {
                        self.path.push_str(&format!("[{key:?}]"));
                        self.message(m);
                        self.path.truncate(base);
                    }
                }
            }
            _ => {}
        }
        self.path.truncate(at);
    }

    /// An `Any`: its type must be allowed; its content is walked too.
    fn any(&mut self, message: &DynamicMessage) {
        let type_url = match message.get_field_by_name("type_url").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let type_name = type_url.rsplit('/').next().unwrap_or_default();
        if !ALLOWED_EXTENSIONS.contains(&type_name) {
            return self.report(PolicyProblem::Extension(type_name.to_owned()));
        }
        let Some(descriptor): Option<MessageDescriptor> = descriptors::message(type_name) else {
            return self.report(PolicyProblem::Undecodable(type_name.to_owned()));
        };
        let bytes = match message.get_field_by_name("value").as_deref() {
            Some(Value::Bytes(b)) => b.clone(),
            _ => Default::default(),
        };
        match DynamicMessage::decode(descriptor, bytes) {
            Ok(inner) => self.message(&inner),
            Err(_) => self.report(PolicyProblem::Undecodable(type_name.to_owned())),
        }
    }

    fn socket_address(&mut self, message: &DynamicMessage) {
        let address = match message.get_field_by_name("address").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let port = match message.get_field_by_name("port_value").as_deref() {
            Some(Value::U32(p)) => *p,
            _ => 0,
        };
        let parsed = address.parse::<IpAddr>().ok().zip(u16::try_from(port).ok());
        let shown = match address.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{address}]:{port}"),
            _ => format!("{address}:{port}"),
        };
        match self.scope {
            Scope::Listener if !parsed.is_some_and(|a| self.listen.contains(&a)) => {
                self.report(PolicyProblem::ListenerAddress(shown))
            }
            Scope::Upstream if !parsed.is_some_and(|a| self.upstream.contains(&a)) => {
                self.report(PolicyProblem::UpstreamAddress(shown))
            }
            _ => {}
        }
    }

    fn cluster_type(&mut self, message: &DynamicMessage) {
        let Some(field) = message.descriptor().get_field_by_name("type") else {
            return;
        };
        if !message.has_field(&field) {
            return; // STATIC by default, or a `cluster_type` extension (an Any).
        }
        let Value::EnumNumber(n) = *message.get_field(&field) else {
            return;
        };
        let name = field
            .kind()
            .as_enum()
            .and_then(|e| e.get_value(n))
            .map_or_else(|| n.to_string(), |v| v.name().to_owned());
        if !ALLOWED_CLUSTER_TYPES.contains(&name.as_str()) {
            let at = self.path.len();
            self.path.push_str(".type");
            self.report(PolicyProblem::ClusterType(name));
            self.path.truncate(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_extension_is_an_envoy_message() {
        for name in ALLOWED_EXTENSIONS {
            assert!(descriptors::message(name).is_some(), "{name}");
        }
        for (message, field, _) in FORBIDDEN_FIELDS {
            let d = descriptors::message(message).unwrap_or_else(|| panic!("{message}"));
            assert!(d.get_field_by_name(field).is_some(), "{message}.{field}");
        }
        for (message, _) in FORBIDDEN_MESSAGES {
            assert!(descriptors::message(message).is_some(), "{message}");
        }
    }
}
