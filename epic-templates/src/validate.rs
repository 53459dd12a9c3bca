//! Validation of a rendered resource set: internal consistency (always
//! cheap, pure) and, optionally, real Envoy (`envoy --mode validate`) on the
//! set written as a static bootstrap.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, Listener, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    RouteAction, RouteConfiguration, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3::UdpProxyConfig;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::context::INVALID_BACKEND_CLUSTER;
use crate::resources::{EnvoyResources, dynamic_to_json};
use crate::{ResourceKind, descriptors};

/// One internal inconsistency, with the field path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency {
    /// Field path, e.g. `route_configurations[0].virtual_hosts[1].routes[0].route.cluster`.
    pub path: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// The kinds of internal inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Two resources of one kind share a name.
    #[error("duplicate {kind} name {name:?}")]
    DuplicateName {
        /// Resource kind.
        kind: ResourceKind,
        /// The name.
        name: String,
    },
    /// A resource has an empty name.
    #[error("empty {0} name")]
    EmptyName(ResourceKind),
    /// A route, proxy or mirror names a cluster that is not defined.
    #[error("cluster {0:?} is not defined")]
    MissingCluster(String),
    /// A listener uses RDS with a route configuration that is not defined.
    #[error("route configuration {0:?} is not defined")]
    MissingRouteConfiguration(String),
    /// An EDS cluster has no endpoint assignment.
    #[error("EDS cluster has no cluster_load_assignment for {0:?}")]
    MissingAssignment(String),
    /// An endpoint assignment matches no EDS cluster.
    #[error("no EDS cluster uses assignment {0:?}")]
    OrphanAssignment(String),
    /// A port is 0 or above 65535.
    #[error("port {0} is out of range 1-65535")]
    PortOutOfRange(u32),
    /// A filter's typed config does not decode as its announced type.
    #[error("typed_config does not decode as {type_url}: {message}")]
    BadTypedConfig {
        /// The `@type`.
        type_url: String,
        /// Decode error.
        message: String,
    },
}

/// Why a resource set failed validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Internal consistency problems (all of them).
    #[error("{} consistency problem(s): {}", .0.len(), join(.0))]
    Inconsistent(Vec<Inconsistency>),
    /// Envoy rejected the configuration; `output` is what it printed.
    #[error("envoy rejected the configuration: {output}")]
    EnvoyRejected {
        /// Envoy's output (stdout and stderr).
        output: String,
    },
    /// Envoy could not be run.
    #[error("cannot run envoy ({binary}): {source}")]
    EnvoyUnavailable {
        /// The binary tried.
        binary: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bootstrap file could not be written.
    #[error("cannot write the bootstrap file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn join(items: &[Inconsistency]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const UDP_PROXY: &str = "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig";

fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Checks that the set is internally consistent: names unique and
/// non-empty, every referenced cluster and route configuration defined,
/// every EDS cluster with an assignment (and the reverse), every port in
/// 1-65535. Clusters named [`INVALID_BACKEND_CLUSTER`] are deliberately
/// undefined and allowed.
pub fn check_consistency(resources: &EnvoyResources) -> Result<(), ValidationError> {
    let mut checker = Checker::default();
    checker.run(resources);
    if checker.problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::Inconsistent(checker.problems))
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Inconsistency>,
    clusters: HashSet<String>,
}

impl Checker {
    fn report(&mut self, path: impl Into<String>, problem: Problem) {
        self.problems.push(Inconsistency {
            path: path.into(),
            problem,
        });
    }

    fn names<'a>(
        &mut self,
        kind: ResourceKind,
        field: &str,
        names: impl Iterator<Item = &'a str>,
    ) -> HashSet<String> {
        let mut seen = HashSet::new();
        for (index, name) in names.enumerate() {
            let path = format!("{}[{index}].{field}", kind.key());
            if name.is_empty() {
                self.report(path, Problem::EmptyName(kind));
            } else if !seen.insert(name.to_owned()) {
                self.report(
                    path,
                    Problem::DuplicateName {
                        kind,
                        name: name.to_owned(),
                    },
                );
            }
        }
        seen
    }

    fn cluster_ref(&mut self, path: String, name: &str) {
        if name != INVALID_BACKEND_CLUSTER && !self.clusters.contains(name) {
            self.report(path, Problem::MissingCluster(name.to_owned()));
        }
    }

    fn address(&mut self, path: String, address: Option<&Address>) {
        if let Some(Address {
            address: Some(address::Address::SocketAddress(socket)),
        }) = address
            && let Some(socket_address::PortSpecifier::PortValue(port)) = socket.port_specifier
            && !(1..=65535).contains(&port)
        {
            self.report(
                format!("{path}.socket_address.port_value"),
                Problem::PortOutOfRange(port),
            );
        }
    }

    fn run(&mut self, resources: &EnvoyResources) {
        self.names(
            ResourceKind::Listener,
            "name",
            resources.listeners.iter().map(|l| l.name.as_str()),
        );
        self.clusters = self.names(
            ResourceKind::Cluster,
            "name",
            resources.clusters.iter().map(|c| c.name.as_str()),
        );
        let route_configs = self.names(
            ResourceKind::RouteConfiguration,
            "name",
            resources
                .route_configurations
                .iter()
                .map(|r| r.name.as_str()),
        );
        let assignments = self.names(
            ResourceKind::ClusterLoadAssignment,
            "cluster_name",
            resources
                .cluster_load_assignments
                .iter()
                .map(|c| c.cluster_name.as_str()),
        );

        for (li, listener) in resources.listeners.iter().enumerate() {
            self.listener(&format!("listeners[{li}]"), listener, &route_configs);
        }

        for (ri, config) in resources.route_configurations.iter().enumerate() {
            for (vi, vhost) in config.virtual_hosts.iter().enumerate() {
                for (ti, route) in vhost.routes.iter().enumerate() {
                    if let Some(route::Action::Route(action)) = &route.action {
                        let path = format!(
                            "route_configurations[{ri}].virtual_hosts[{vi}].routes[{ti}].route"
                        );
                        self.route_action(&path, action);
                    }
                }
            }
        }

        self.eds(resources, &assignments);
    }

    /// A listener's addresses, filter chains and UDP proxy listener filters.
    fn listener(&mut self, base: &str, listener: &Listener, route_configs: &HashSet<String>) {
        self.address(format!("{base}.address"), listener.address.as_ref());
        for (ai, extra) in listener.additional_addresses.iter().enumerate() {
            self.address(
                format!("{base}.additional_addresses[{ai}].address"),
                extra.address.as_ref(),
            );
        }
        let chains = listener
            .filter_chains
            .iter()
            .enumerate()
            .map(|(ci, chain)| (format!("{base}.filter_chains[{ci}]"), chain))
            .chain(
                listener
                    .default_filter_chain
                    .iter()
                    .map(|c| (format!("{base}.default_filter_chain"), c)),
            );
        for (chain_path, chain) in chains.collect::<Vec<_>>() {
            self.filter_chain(&chain_path, chain, route_configs);
        }
        for (fi, lf) in listener.listener_filters.iter().enumerate() {
            if let Some(listener_filter::ConfigType::TypedConfig(any)) = &lf.config_type
                && type_name(&any.type_url) == UDP_PROXY
            {
                let path = format!("{base}.listener_filters[{fi}].typed_config");
                self.udp_proxy(path, any);
            }
        }
    }

    /// The clusters a UDP proxy listener filter's config names.
    fn udp_proxy(&mut self, path: String, any: &Any) {
        match UdpProxyConfig::decode(any.value.as_slice()) {
            Ok(udp) => {
                let desc = descriptors::message(UDP_PROXY).expect("in pool");
                let json = dynamic_to_json(desc, &udp);
                for (p, cluster) in udp_clusters(&json, &path) {
                    self.cluster_ref(p, &cluster);
                }
            }
            Err(err) => self.report(
                path,
                Problem::BadTypedConfig {
                    type_url: any.type_url.clone(),
                    message: err.to_string(),
                },
            ),
        }
    }

    /// The clusters a route action forwards and mirrors to.
    fn route_action(&mut self, path: &str, action: &RouteAction) {
        match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(name)) => {
                self.cluster_ref(format!("{path}.cluster"), name);
            }
            Some(route_action::ClusterSpecifier::WeightedClusters(weighted)) => {
                for (wi, c) in weighted.clusters.iter().enumerate() {
                    self.cluster_ref(
                        format!("{path}.weighted_clusters.clusters[{wi}].name"),
                        &c.name,
                    );
                }
            }
            _ => {}
        }
        for (mi, mirror) in action.request_mirror_policies.iter().enumerate() {
            self.cluster_ref(
                format!("{path}.request_mirror_policies[{mi}].cluster"),
                &mirror.cluster,
            );
        }
    }

    /// EDS clusters against the assignments (`assignments`: their names)
    /// both ways, and the endpoints of every assignment.
    fn eds(&mut self, resources: &EnvoyResources, assignments: &HashSet<String>) {
        let mut eds_names = HashSet::new();
        for (ci, cluster) in resources.clusters.iter().enumerate() {
            if cluster.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
            {
                let service = cluster
                    .eds_cluster_config
                    .as_ref()
                    .map(|c| c.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&cluster.name);
                eds_names.insert(service.to_owned());
                if !assignments.contains(service) {
                    self.report(
                        format!("clusters[{ci}]"),
                        Problem::MissingAssignment(service.to_owned()),
                    );
                }
            }
            if let Some(assignment) = &cluster.load_assignment {
                self.endpoints(&format!("clusters[{ci}].load_assignment"), assignment);
            }
        }
        for (ai, assignment) in resources.cluster_load_assignments.iter().enumerate() {
            if !eds_names.contains(&assignment.cluster_name) {
                self.report(
                    format!("cluster_load_assignments[{ai}].cluster_name"),
                    Problem::OrphanAssignment(assignment.cluster_name.clone()),
                );
            }
            self.endpoints(&format!("cluster_load_assignments[{ai}]"), assignment);
        }
    }

    fn endpoints(&mut self, base: &str, assignment: &ClusterLoadAssignment) {
        for (li, locality) in assignment.endpoints.iter().enumerate() {
            for (ei, lb) in locality.lb_endpoints.iter().enumerate() {
                if let Some(HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier {
                    self.address(
                        format!("{base}.endpoints[{li}].lb_endpoints[{ei}].endpoint.address"),
                        endpoint.address.as_ref(),
                    );
                }
            }
        }
    }

    fn filter_chain(&mut self, base: &str, chain: &FilterChain, route_configs: &HashSet<String>) {
        for (fi, filter) in chain.filters.iter().enumerate() {
            let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
                continue;
            };
            let path = format!("{base}.filters[{fi}].typed_config");
            let bad = |err: prost::DecodeError| Problem::BadTypedConfig {
                type_url: any.type_url.clone(),
                message: err.to_string(),
            };
            match type_name(&any.type_url) {
                HCM => match HttpConnectionManager::decode(any.value.as_slice()) {
                    Ok(hcm) => {
                        if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier
                            && !route_configs.contains(&rds.route_config_name)
                        {
                            self.report(
                                format!("{path}.rds.route_config_name"),
                                Problem::MissingRouteConfiguration(rds.route_config_name.clone()),
                            );
                        }
                    }
                    Err(err) => self.report(path, bad(err)),
                },
                TCP_PROXY => match TcpProxy::decode(any.value.as_slice()) {
                    Ok(tcp) => match &tcp.cluster_specifier {
                        Some(tcp_proxy::ClusterSpecifier::Cluster(name)) => {
                            self.cluster_ref(format!("{path}.cluster"), name);
                        }
                        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weighted)) => {
                            for (wi, c) in weighted.clusters.iter().enumerate() {
                                self.cluster_ref(
                                    format!("{path}.weighted_clusters.clusters[{wi}].name"),
                                    &c.name,
                                );
                            }
                        }
                        None => {}
                    },
                    Err(err) => self.report(path, bad(err)),
                },
                _ => {}
            }
        }
    }
}

/// Clusters named by a UDP proxy config (its deprecated `cluster` and every
/// `Route` action in its matcher), with their paths.
fn udp_clusters(json: &serde_json::Value, base: &str) -> Vec<(String, String)> {
    fn walk(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                let is_route = map.get("@type").and_then(|t| t.as_str()).is_some_and(|t| {
                    type_name(t) == "envoy.extensions.filters.udp.udp_proxy.v3.Route"
                });
                for (key, child) in map {
                    if key == "cluster"
                        && let Some(name) = child.as_str()
                        && (is_route
                            || path.ends_with("typed_config") && !map.contains_key("@type"))
                    {
                        out.push((format!("{path}.cluster"), name.to_owned()));
                    }
                    walk(child, format!("{path}.{key}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(json, base.to_owned(), &mut out);
    out
}

/// The resource set as a static Envoy bootstrap (proto3 JSON): listeners
/// with their RDS route configurations inlined, EDS clusters turned into
/// static clusters with their assignments, plus an ADS config (pointing at a
/// placeholder `epic-validate-xds` cluster) so SDS secrets and any other
/// `ads: {}` source stay valid. Meant for `envoy --mode validate`.
pub fn validation_bootstrap(resources: &EnvoyResources) -> serde_json::Value {
    let mut inlined = resources.clone();
    inline_rds(&mut inlined.listeners, &resources.route_configurations);
    inline_eds(&mut inlined.clusters, &resources.cluster_load_assignments);
    let json = inlined.to_json();
    let mut clusters = json["clusters"].as_array().cloned().unwrap_or_default();
    clusters.push(serde_json::json!({
        "name": "epic-validate-xds",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "epic-validate-xds",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18000}}}}]}]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        }
    }));
    serde_json::json!({
        "node": {"id": "epic-validate", "cluster": "epic-validate"},
        "static_resources": {"listeners": json["listeners"], "clusters": clusters},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "epic-validate-xds"}}]
            }
        }
    })
}

/// Inlines into each HTTP connection manager of `listeners` the route
/// configuration (of `route_configurations`) its RDS names, if defined.
fn inline_rds(listeners: &mut [Listener], route_configurations: &[RouteConfiguration]) {
    let routes: HashMap<&str, _> = route_configurations
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();
    for listener in listeners {
        for chain in listener
            .filter_chains
            .iter_mut()
            .chain(listener.default_filter_chain.iter_mut())
        {
            for filter in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
                    continue;
                };
                if type_name(&any.type_url) != HCM {
                    continue;
                }
                let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                    continue;
                };
                if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier
                    && let Some(config) = routes.get(rds.route_config_name.as_str())
                {
                    hcm.route_specifier = Some(RouteSpecifier::RouteConfig((*config).clone()));
                    any.value = hcm.encode_to_vec();
                }
            }
        }
    }
}

/// Turns each EDS cluster of `clusters` with an assignment (of
/// `cluster_load_assignments`) into a static cluster holding it.
fn inline_eds(clusters: &mut [Cluster], cluster_load_assignments: &[ClusterLoadAssignment]) {
    let assignments: HashMap<&str, _> = cluster_load_assignments
        .iter()
        .map(|c| (c.cluster_name.as_str(), c))
        .collect();
    for cluster in clusters {
        if cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        {
            let service = cluster
                .eds_cluster_config
                .as_ref()
                .map(|c| c.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| cluster.name.clone());
            if let Some(assignment) = assignments.get(service.as_str()) {
                let mut assignment = (*assignment).clone();
                assignment.cluster_name = cluster.name.clone();
                cluster.cluster_discovery_type =
                    Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
                cluster.eds_cluster_config = None;
                cluster.load_assignment = Some(assignment);
            }
        }
    }
}

/// Runs real Envoy in validation mode on a rendered resource set.
#[derive(Debug, Clone)]
pub struct EnvoyValidator {
    binary: PathBuf,
}

impl Default for EnvoyValidator {
    fn default() -> Self {
        Self::from_env()
    }
}

impl EnvoyValidator {
    /// The binary named by `$EPIC_ENVOY`, else `envoy` on `PATH`.
    pub fn from_env() -> Self {
        let binary =
            std::env::var_os("EPIC_ENVOY").map_or_else(|| PathBuf::from("envoy"), PathBuf::from);
        Self { binary }
    }

    /// A validator running `binary`.
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
        }
    }

    /// Whether the binary can be run (`envoy --version` succeeds).
    pub fn is_available(&self) -> bool {
        Command::new(&self.binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Checks consistency, writes [`validation_bootstrap`] to a temporary
    /// file and runs `envoy --mode validate -c FILE`.
    pub fn validate(&self, resources: &EnvoyResources) -> Result<(), ValidationError> {
        check_consistency(resources)?;
        self.validate_bootstrap(&validation_bootstrap(resources))
    }

    /// Runs `envoy --mode validate` on a bootstrap.
    pub fn validate_bootstrap(&self, bootstrap: &serde_json::Value) -> Result<(), ValidationError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "epic-validate-{}-{}.json",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bootstrap.to_string()).map_err(|source| ValidationError::Io {
            path: path.clone(),
            source,
        })?;
        let output = Command::new(&self.binary)
            .args([
                "--mode",
                "validate",
                "--log-level",
                "warn",
                "--disable-hot-restart",
                "-c",
            ])
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let output = output.map_err(|source| ValidationError::EnvoyUnavailable {
            binary: self.binary.display().to_string(),
            source,
        })?;
        if output.status.success() {
            Ok(())
        } else {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            Err(ValidationError::EnvoyRejected {
                output: text.trim().to_owned(),
            })
        }
    }
}
