//! `epic-model`: the resource model of EPIC-RS, shared by every runtime.
//!
//! - The custom resources of the gateway platform (group `epic-gateway.org`,
//!   version `v1alpha1`) as Rust types; the CRD schemas are generated from
//!   them ([`crds`]). Namespaced kinds live in a tenant's namespace:
//!   [`GatewayTemplate`], [`Gateway`], [`Route`], [`BackendSet`].
//!   Cluster-scoped: [`AddressPool`], [`Tenant`].
//! - [`conditions`]: Kubernetes-style conditions, their types and reasons.
//! - [`DesiredInputs`]: everything the engine (`epic-engine`) plans from.
//! - [`source`]: the same kinds from a YAML file (standalone mode).
//!
//! ```
//! let inputs = epic_model::source::parse_resources(r#"
//! apiVersion: epic-gateway.org/v1alpha1
//! kind: Tenant
//! metadata: {name: acme}
//! spec: {namespace: acme, id: 1}
//! "#).unwrap();
//! assert_eq!(inputs.tenants[0].spec.namespace, "acme");
//! ```
#![deny(missing_docs)]

pub mod conditions;
mod inputs;
pub mod source;

pub use inputs::{DesiredInputs, GatewayNode, VerifiedTunnel};

use std::net::IpAddr;

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every EPIC-RS resource.
pub const GROUP: &str = "epic-gateway.org";
/// The API version of every EPIC-RS resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every EPIC-RS resource.
pub const API_VERSION: &str = "epic-gateway.org/v1alpha1";

fn one() -> u32 {
    1
}

/// A tenant: who may use the platform from which namespace, within which
/// limits.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(group = "epic-gateway.org", version = "v1alpha1", kind = "Tenant")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    /// The tenant's namespace on the platform: every namespaced resource of
    /// the tenant lives there.
    pub namespace: String,
    /// The tenant's number in the data path (hello tenant field, tunnel
    /// table). Unique, not 0.
    pub id: u32,
    /// Limits.
    #[serde(default)]
    pub limits: TenantLimits,
    /// Template names the tenant may use (its own `GatewayTemplate`s or the
    /// built-in `tcp`, `udp`, `http`, `https`); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<Vec<String>>,
    /// The pod and node networks of the tenant's clusters (CIDRs or single
    /// addresses): endpoint and cluster-node addresses outside them are
    /// refused by endpoint admission. Absent: every address the
    /// platform does not reserve for itself; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_networks: Option<Vec<String>>,
}

/// A tenant's limits; absent: unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantLimits {
    /// Most gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<u32>,
    /// Most public addresses held at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<u32>,
    /// Most `Route`s in the tenant's namespace; those beyond it (in name
    /// order) are ignored and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<u32>,
    /// Most endpoints the tenant's gateways render together (counted in
    /// plan order over the backends each gateway names); a gateway beyond
    /// it renders what fits and gets `EndpointsAdmitted=False`,
    /// `TenantLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<u32>,
}

/// An address released by its last gateway and held back from everyone
/// else for the platform's grace period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleasedAddress {
    /// The address.
    pub address: IpAddr,
    /// The tenant (name) whose gateway held it: the only one that may take
    /// it back (by asking for it) within the grace period.
    pub tenant: String,
    /// The pool it belongs to.
    pub pool: String,
    /// When it was released, in seconds since the Unix epoch.
    pub released_at: u64,
}

/// What the platform records in an address pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressPoolStatus {
    /// Addresses of this pool released by their last gateway and held
    /// back until their grace period ends (the records a restarted
    /// controller rebuilds from).
    #[serde(default)]
    pub released: Vec<ReleasedAddress>,
}

/// A pool of public addresses (see `epic_ipam::PoolSpec` for the rules).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "epic-gateway.org",
    version = "v1alpha1",
    kind = "AddressPool",
    status = "AddressPoolStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressPoolSpec {
    /// CIDRs, single addresses and `start-end` ranges, IPv4 and IPv6.
    pub addresses: Vec<String>,
    /// Entries never handed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Skip IPv4 addresses ending in `.0` or `.255`.
    #[serde(default)]
    pub avoid_buggy_ips: bool,
    /// Prefix length announced for an IPv4 address (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_ipv4: Option<u8>,
    /// Prefix length announced for an IPv6 address (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_ipv6: Option<u8>,
    /// Whether templates that name no pool may use it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Larger is preferred (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Tenants allowed; absent: every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
}

impl AddressPoolSpec {
    /// The `epic-ipam` pool for this spec, named `name`.
    pub fn to_pool_spec(&self, name: &str) -> epic_ipam::PoolSpec {
        let mut pool = epic_ipam::PoolSpec::new(name, self.addresses.iter().cloned());
        pool.exclude = self.exclude.clone();
        pool.avoid_buggy_ips = self.avoid_buggy_ips;
        if let Some(v4) = self.aggregation_ipv4 {
            pool.aggregation.ipv4 = v4;
        }
        if let Some(v6) = self.aggregation_ipv6 {
            pool.aggregation.ipv6 = v6;
        }
        pool.auto_assign = self.auto_assign.unwrap_or(true);
        pool.priority = self.priority;
        pool.tenants = self.tenants.as_ref().map(|t| t.iter().cloned().collect());
        pool
    }
}

/// Which address families a gateway gets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AddressFamilies {
    /// One IPv4 address.
    #[default]
    #[serde(rename = "IPv4")]
    Ipv4,
    /// One IPv6 address.
    #[serde(rename = "IPv6")]
    Ipv6,
    /// One per family where available, at least one.
    PreferDualStack,
    /// One per family, or none.
    RequireDualStack,
}

impl From<AddressFamilies> for epic_ipam::FamilyPolicy {
    fn from(f: AddressFamilies) -> Self {
        match f {
            AddressFamilies::Ipv4 => epic_ipam::FamilyPolicy::Ipv4,
            AddressFamilies::Ipv6 => epic_ipam::FamilyPolicy::Ipv6,
            AddressFamilies::PreferDualStack => epic_ipam::FamilyPolicy::PreferDualStack,
            AddressFamilies::RequireDualStack => epic_ipam::FamilyPolicy::RequireDualStack,
        }
    }
}

/// How a tenant's gateways of one kind are built: addresses, proxies and
/// the Envoy configuration template.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "epic-gateway.org",
    version = "v1alpha1",
    kind = "GatewayTemplate",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTemplateSpec {
    /// The address pool; absent: any auto-assign pool the tenant may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Address families.
    #[serde(default)]
    pub families: AddressFamilies,
    /// Proxy replicas per gateway (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Envoy image (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_image: Option<String>,
    /// Whether gateways with the same sharing key may share an address.
    #[serde(default)]
    pub allow_sharing: bool,
    /// A built-in Envoy template (`tcp`, `udp`, `http`, `https`); exactly
    /// one of `builtin` and `envoy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// The Envoy resources template (see `epic_templates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<String>,
    /// The DNS name template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

/// The user-cluster object a gateway stands for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientRef {
    /// The user cluster's id.
    pub cluster: String,
    /// Namespace of the `Service` or `Gateway` there.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
}

/// A listener protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// TCP proxy.
    Tcp,
    /// UDP proxy.
    Udp,
    /// HTTP.
    Http,
    /// HTTPS (TLS terminated at the gateway).
    Https,
}

impl From<ListenerProtocol> for epic_templates::ListenerProtocol {
    fn from(p: ListenerProtocol) -> Self {
        match p {
            ListenerProtocol::Tcp => epic_templates::ListenerProtocol::Tcp,
            ListenerProtocol::Udp => epic_templates::ListenerProtocol::Udp,
            ListenerProtocol::Http => epic_templates::ListenerProtocol::Http,
            ListenerProtocol::Https => epic_templates::ListenerProtocol::Https,
        }
    }
}

/// A backend service port with a weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// Namespace of the Service (in the user cluster).
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

/// A listener of a gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Public port.
    pub port: u16,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Hostname (HTTP/HTTPS), may be a `*.` wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// SDS secret name of the certificate (HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// Default backends (a `Service` of type `LoadBalancer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendRef>,
}

/// A gateway: public addresses, listeners, and proxies that serve them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "epic-gateway.org",
    version = "v1alpha1",
    kind = "Gateway",
    namespaced,
    status = "GatewayStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The `GatewayTemplate` (in the same namespace) or built-in template.
    pub template: String,
    /// The user-cluster object this gateway stands for.
    #[serde(default)]
    pub client: ClientRef,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Gateways of the tenant with the same key may share an address
    /// (if their template allows it and their ports differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_key: Option<String>,
    /// Specific addresses asked for (one per family).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
}

/// A status condition (Kubernetes `metav1.Condition` conventions). The
/// engine makes them clock-free ([`crate::conditions`]); the status writer
/// adds `observedGeneration` and `lastTransitionTime`
/// ([`crate::conditions::stamp`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`, `Programmed`, `ResolvedRefs` ([`crate::conditions::ConditionType`]).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// CamelCase reason ([`crate::conditions::Reason`]).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
}

impl Condition {
    /// Whether the status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// A tunnel serving a gateway: one per (cluster node, gateway node).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// Tunnel id.
    pub id: u32,
    /// User cluster.
    pub cluster: String,
    /// Cluster node name.
    pub node: String,
    /// Gateway node name.
    pub gateway_node: String,
    /// The gateway node's tunnel address: where the cluster node's agent
    /// sends this tunnel's hellos and packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_address: Option<IpAddr>,
    /// The tenant's data-path id, which the node's hellos carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<u32>,
    /// The pod endpoints it delivers to: the cluster node's agent lets the
    /// tunnel reach these and nothing else.
    #[serde(default)]
    pub endpoints: Vec<TunnelEndpoint>,
}

/// A pod endpoint a tunnel delivers to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelEndpoint {
    /// Pod address.
    pub address: IpAddr,
    /// Pod port.
    pub port: u16,
    /// Protocol.
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// What the platform made of a route attached to a gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The `Route` name.
    pub name: String,
    /// Listeners it attached to.
    pub listeners: Vec<String>,
    /// Its conditions (`Accepted`, `ResolvedRefs`).
    pub conditions: Vec<Condition>,
}

/// A gateway's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Allocated public addresses, IPv4 first.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The rendered DNS name, if the template has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// Envoy node ids of its proxies.
    #[serde(default)]
    pub proxies: Vec<String>,
    /// Tunnels to its endpoints' nodes.
    #[serde(default)]
    pub tunnels: Vec<TunnelStatus>,
    /// Attached routes.
    #[serde(default)]
    pub routes: Vec<RouteStatus>,
    /// `Accepted` and `Programmed`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A route in a tenant's namespace: exactly one of the Gateway API route
/// specs, with the platform gateways as parents (`parentRefs` by name).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "epic-gateway.org",
    version = "v1alpha1",
    kind = "Route",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// The route's namespace in the user cluster (default `default`): its
    /// `parentRefs` and `backendRefs` are resolved there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// An `HTTPRoute` spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<gateway_api::httproutes::HttpRouteSpec>,
    /// A `TCPRoute` spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<gateway_api::experimental::tcproutes::TcpRouteSpec>,
    /// A `UDPRoute` spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<gateway_api::experimental::udproutes::UdpRouteSpec>,
}

/// A transport protocol of a backend port.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            PortProtocol::Tcp => 6,
            PortProtocol::Udp => 17,
        }
    }

    /// The protocol of IP protocol number `number`, if it is TCP or UDP.
    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(PortProtocol::Tcp),
            17 => Some(PortProtocol::Udp),
            _ => None,
        }
    }
}

/// A pod endpoint of a backend port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Pod address.
    pub address: IpAddr,
    /// Pod port.
    pub port: u16,
    /// Ready.
    #[serde(default = "yes")]
    pub ready: bool,
    /// The cluster node hosting the pod.
    pub node: String,
}

fn yes() -> bool {
    true
}

/// One port of a backend service and its endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendPort {
    /// Service port.
    pub port: u16,
    /// Protocol.
    #[serde(default)]
    pub protocol: PortProtocol,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// A node of a user cluster, as tunnels reach it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNode {
    /// Node name (its hello identity is derived from it).
    pub name: String,
    /// The node's address as the gateway first tries it (before NAT is
    /// learned from hellos).
    pub address: IpAddr,
}

/// One backend service of one user cluster, with its endpoints and the
/// nodes that host them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "epic-gateway.org",
    version = "v1alpha1",
    kind = "BackendSet",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSetSpec {
    /// The user cluster.
    pub cluster: String,
    /// Namespace of the Service there.
    pub namespace: String,
    /// Name of the Service.
    pub service: String,
    /// Ports with endpoints.
    pub ports: Vec<BackendPort>,
    /// Nodes hosting the endpoints.
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
}

/// The CustomResourceDefinitions of every kind, in a stable order.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        Tenant::crd(),
        AddressPool::crd(),
        GatewayTemplate::crd(),
        Gateway::crd(),
        Route::crd(),
        BackendSet::crd(),
    ]
}

/// Every CustomResourceDefinition as `---`-separated YAML documents, as
/// `epicctl crds` prints them and `charts/epic-gateway/crds/` holds them.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| format!("---\n{}", serde_yaml_ng::to_string(crd).unwrap_or_default()))
        .collect()
}
