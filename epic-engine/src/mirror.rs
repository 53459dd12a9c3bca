//! The pure translation core of `epic-cluster-controller`: a snapshot of a
//! user cluster's objects in, the EPIC-RS custom resources to apply in the
//! tenant's namespace on the gateway platform out ([`mirror`]), and the
//! platform's gateway status back as user-cluster status
//! ([`service_status`], [`gateway_status`]).
//!
//! No client, no clock, no I/O: the controller lists the objects, calls
//! [`mirror`], applies the difference with server-side apply (and deletes
//! the platform objects labelled with its cluster that are no longer
//! mirrored), then copies status back.
//!
//! # Rules
//!
//! - A `Service` of type `LoadBalancer` whose `loadBalancerClass` is
//!   [`MirrorConfig::load_balancer_class`] becomes a platform `Gateway`
//!   named `svc-<namespace>-<name>`: one `TCP`/`UDP` listener per service
//!   port, named `<protocol>-<port>` (`tcp-80`), whose default backend is
//!   that service port; the sharing key comes from the annotation
//!   [`SHARING_KEY_ANNOTATION`]. `SCTP` ports are skipped.
//! - A Gateway API `Gateway` whose `GatewayClass` has
//!   [`MirrorConfig::controller_name`] becomes a platform `Gateway` named
//!   `<namespace>-<name>` with its `HTTP`, `HTTPS` (TLS terminated, the
//!   first certificate ref's name as the secret), `TCP` and `UDP`
//!   listeners, under their own names; other listeners are skipped.
//!   `spec.addresses` of type `IPAddress` are asked for, and the same
//!   annotation sets the sharing key. The template: any HTTPS listener →
//!   [`MirrorConfig::template_for_https`]; all UDP →
//!   [`MirrorConfig::template_for_udp`]; all TCP →
//!   [`MirrorConfig::template_for_service`]; else
//!   [`MirrorConfig::template_for_gateway`].
//! - An `HTTPRoute`, `TCPRoute` or `UDPRoute` with a parentRef to a
//!   mirrored Gateway that one of its mirrored listeners allows
//!   (`allowedRoutes`: namespaces `Same`, `All` or `Selector`, and kinds)
//!   becomes a platform `Route` named `<namespace>-<name>`, seen in its
//!   user namespace; only those parentRefs are kept, renamed to the
//!   platform gateway (the namespace is kept only when the gateway's
//!   namespace differs from the route's, since the platform resolves a
//!   parentRef without one in the route's namespace).
//! - Every `Service` that a mirrored Service gateway stands for, or that a
//!   mirrored route's `backendRefs` (and `RequestMirror` filters) name,
//!   becomes a `BackendSet` named `<namespace>-<name>`: one port per
//!   `TCP`/`UDP` service port, with the endpoints of the EndpointSlices
//!   labelled `kubernetes.io/service-name` whose port has the service
//!   port's name and protocol (the slice port is the resolved target port,
//!   as kube-proxy sees it), and the nodes that host them. An endpoint
//!   listed twice is ready if either copy is; an endpoint without
//!   `nodeName`, on an unknown node, or on a node without an `InternalIP`
//!   or `ExternalIP` is skipped (the gateway could not reach it).
//! - Names are DNS-1123 labels: lowercased, other characters turned to
//!   `-`; when that changed anything or the name is longer than 63
//!   characters it is cut and gets a stable 8-hex-digit hash of the source
//!   object as a suffix. When two objects still want the same name, the
//!   older one (then the smaller `Kind/namespace/name`) keeps it and the
//!   other gets the hash suffix.
//! - Outputs are sorted by name and every input list is read in sorted
//!   order: the result does not depend on the order of the snapshot.
//!   An object listed twice (same namespace and name) counts once: the one
//!   with the smaller uid.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use epic_model as model;
use epic_model::conditions::{ConditionType, Reason};
use epic_templates::refs::{GATEWAY_API_GROUP, ParentRef, RouteRefs};
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways as gw;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Namespace, Node, Service, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::ObjectMeta;

/// The annotation of a `Service` or `Gateway` that sets the platform
/// gateway's sharing key.
pub const SHARING_KEY_ANNOTATION: &str = "epic-gateway.org/sharing-key";
/// The label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label on every mirrored object naming the user cluster.
pub const CLUSTER_LABEL: &str = "epic-gateway.org/cluster";
/// The `app.kubernetes.io/managed-by` label on every mirrored object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "epic-cluster-controller";
/// The annotation on every mirrored object naming its source
/// (`Kind/namespace/name`).
pub const SOURCE_ANNOTATION: &str = "epic-gateway.org/source";

const MAX_NAME: usize = 63;
const HASH_LEN: usize = 8;

/// The objects of one user cluster the controller mirrors, as listed.
#[derive(Debug, Clone, Default)]
pub struct UserCluster {
    /// The user cluster's id (the platform's `client.cluster`).
    pub cluster: String,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Namespaces (their labels, for `allowedRoutes` selectors).
    pub namespaces: Vec<Namespace>,
    /// GatewayClasses.
    pub gateway_classes: Vec<GatewayClass>,
    /// Gateways.
    pub gateways: Vec<gw::Gateway>,
    /// HTTPRoutes.
    pub http_routes: Vec<HttpRoute>,
    /// TCPRoutes.
    pub tcp_routes: Vec<TcpRoute>,
    /// UDPRoutes.
    pub udp_routes: Vec<UdpRoute>,
}

/// What to mirror and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The tenant's namespace on the platform: every mirrored object goes
    /// there.
    pub tenant_namespace: String,
    /// The `controllerName` of the GatewayClasses to mirror.
    pub controller_name: String,
    /// The `loadBalancerClass` of the Services to mirror.
    pub load_balancer_class: String,
    /// The template of Services with a TCP port and of Gateways whose
    /// listeners are all TCP.
    pub template_for_service: String,
    /// The template of Services and Gateways whose listeners are all UDP.
    pub template_for_udp: String,
    /// The template of other Gateways.
    pub template_for_gateway: String,
    /// The template of Gateways with an HTTPS listener.
    pub template_for_https: String,
}

impl MirrorConfig {
    /// The default configuration for `tenant_namespace`.
    pub fn new(tenant_namespace: impl Into<String>) -> Self {
        MirrorConfig {
            tenant_namespace: tenant_namespace.into(),
            ..Default::default()
        }
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            tenant_namespace: String::new(),
            controller_name: "epic-gateway.org/gateway-controller".into(),
            load_balancer_class: "epic-gateway.org/gateway".into(),
            template_for_service: "tcp".into(),
            template_for_udp: "udp".into(),
            template_for_gateway: "http".into(),
            template_for_https: "https".into(),
        }
    }
}

/// Something of ours that could not be mirrored, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    /// The object (`Kind namespace/name`, with the part when it is one
    /// listener, port or endpoint).
    pub object: String,
    /// Why.
    pub reason: String,
}

/// The platform objects mirrored from a user cluster, each sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Mirrored {
    /// Gateways.
    pub gateways: Vec<model::Gateway>,
    /// Routes.
    pub routes: Vec<model::Route>,
    /// Backend sets.
    pub backend_sets: Vec<model::BackendSet>,
    /// What was left out, sorted.
    pub skipped: Vec<Skipped>,
}

// ---------------------------------------------------------------------------
// Small helpers.

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

fn uid_of(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

/// A user object's identity: `(namespace, name)`.
type Key = (String, String);

fn key_of(meta: &ObjectMeta) -> Key {
    (namespace_of(meta).to_owned(), name_of(meta).to_owned())
}

/// The objects sorted by (namespace, name, uid), one per namespace/name.
fn sorted<T>(items: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    v.sort_by(|a, b| {
        let (a, b) = (meta(a), meta(b));
        (namespace_of(a), name_of(a), uid_of(a)).cmp(&(namespace_of(b), name_of(b), uid_of(b)))
    });
    v.dedup_by(|later, earlier| key_of(meta(*later)) == key_of(meta(*earlier)));
    v
}

/// FNV-1a, 64 bits: stable across releases and platforms.
fn fnv1a(data: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// 8 hex digits of the hash of `identity`.
fn short_hash(identity: &str) -> String {
    let h = fnv1a(identity);
    format!("{:08x}", (h ^ (h >> 32)) & 0xffff_ffff)
}

/// `base` made a DNS-1123 label; `None` when that was lossy or too long.
fn clean_label(base: &str) -> Result<String, String> {
    let mapped: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches('-').to_owned();
    if trimmed == base && !trimmed.is_empty() && trimmed.len() <= MAX_NAME {
        Ok(trimmed)
    } else {
        Err(trimmed)
    }
}

/// `cleaned` cut to leave room for `-<hash>`, with the hash of `identity`.
fn hashed_label(cleaned: &str, identity: &str) -> String {
    let hash = short_hash(identity);
    // `cleaned` is ASCII: byte slicing is character slicing.
    let keep = MAX_NAME - HASH_LEN - 1;
    let prefix = cleaned.get(..keep.min(cleaned.len())).unwrap_or("");
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Whether `s` is a DNS-1123 label (lowercase alphanumerics and `-`,
/// alphanumeric at both ends, 1 to 63 characters).
pub fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Whether `s` is a DNS-1123 subdomain (what Kubernetes allows as a node
/// name): dot-separated DNS-1123 labels, 253 characters at most.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A label value for `s`: itself if valid, else a cleaned, hashed form.
/// `value` as a valid label value (what the cluster label holds).
pub fn label_value(s: &str) -> String {
    let valid = s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if valid {
        s.to_owned()
    } else {
        let cleaned = match clean_label(&s.to_ascii_lowercase()) {
            Ok(c) | Err(c) => c,
        };
        hashed_label(&cleaned, s)
    }
}

/// One object that wants a platform name.
struct NameClaim {
    /// `Kind/namespace/name`.
    identity: String,
    /// The wanted name, before cleaning.
    base: String,
    /// Creation time (older wins a contested name).
    created: Option<Time>,
}

/// Names for the claims of one platform kind, by identity.
fn assign_names(claims: &[NameClaim], skipped: &mut Vec<Skipped>) -> BTreeMap<String, String> {
    let mut order: Vec<&NameClaim> = claims.iter().collect();
    order.sort_by(|a, b| (&a.created, &a.identity).cmp(&(&b.created, &b.identity)));
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut names = BTreeMap::new();
    // First pass: names that are clean keep them, oldest first; the rest
    // wait for the second pass so a hashed name never takes a clean one.
    let mut later = Vec::new();
    for c in order {
        match clean_label(&c.base) {
            Ok(name) if !used.contains(&name) => {
                used.insert(name.clone());
                names.insert(c.identity.clone(), name);
            }
            Ok(name) | Err(name) => later.push((c, name)),
        }
    }
    for (c, cleaned) in later {
        let name = hashed_label(&cleaned, &c.identity);
        if used.insert(name.clone()) {
            names.insert(c.identity.clone(), name);
        } else {
            skipped.push(Skipped {
                object: c.identity.replacen('/', " ", 1),
                reason: format!("platform name {name} is already taken"),
            });
        }
    }
    names
}

fn platform_meta(name: String, config: &MirrorConfig, cluster: &str, identity: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(config.tenant_namespace.clone()),
        labels: Some(BTreeMap::from([
            (CLUSTER_LABEL.to_owned(), label_value(cluster)),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ])),
        annotations: Some(BTreeMap::from([(
            SOURCE_ANNOTATION.to_owned(),
            identity.to_owned(),
        )])),
        ..Default::default()
    }
}

fn sharing_key(meta: &ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(SHARING_KEY_ANNOTATION))
        .filter(|k| !k.is_empty())
        .cloned()
}

fn port_u16(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn port_protocol(protocol: Option<&str>) -> Result<model::PortProtocol, String> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Ok(model::PortProtocol::Tcp),
        "UDP" => Ok(model::PortProtocol::Udp),
        other => Err(format!(
            "protocol {other} is not supported (TCP and UDP are)"
        )),
    }
}

// ---------------------------------------------------------------------------
// Label selectors (GatewayListenersAllowedRoutesNamespacesSelector).

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
struct MirroredGateway<'a> {
    /// Platform name.
    name: String,
    /// The user Gateway.
    source: &'a gw::Gateway,
    /// Names of its mirrored listeners.
    listeners: BTreeSet<String>,
}

/// A platform gateway waiting for its name.
struct GatewayDraft {
    claim: NameClaim,
    spec: model::GatewaySpec,
    /// The user Gateway it stands for (`None`: a Service).
    user_gateway: Option<Key>,
}

fn service_gateway(
    svc: &Service,
    cluster: &str,
    config: &MirrorConfig,
    skipped: &mut Vec<Skipped>,
) -> Option<GatewayDraft> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.load_balancer_class.as_deref() != Some(config.load_balancer_class.as_str())
    {
        return None;
    }
    let (ns, name) = key_of(&svc.metadata);
    let object = format!("Service {ns}/{name}");
    let mut listeners = Vec::new();
    for p in spec.ports.iter().flatten() {
        let what = format!("{object} port {}", p.port);
        let protocol = match port_protocol(p.protocol.as_deref()) {
            Ok(protocol) => protocol,
            Err(reason) => {
                skipped.push(Skipped {
                    object: what,
                    reason,
                });
                continue;
            }
        };
        let Some(port) = port_u16(p.port) else {
            skipped.push(Skipped {
                object: what,
                reason: "port is out of range".into(),
            });
            continue;
        };
        let (lower, listener_protocol) = match protocol {
            model::PortProtocol::Tcp => ("tcp", model::ListenerProtocol::Tcp),
            model::PortProtocol::Udp => ("udp", model::ListenerProtocol::Udp),
        };
        listeners.push(model::Listener {
            name: format!("{lower}-{port}"),
            port,
            protocol: listener_protocol,
            hostname: None,
            tls_secret: None,
            backends: vec![model::BackendRef {
                namespace: ns.clone(),
                name: name.clone(),
                port,
                weight: 1,
            }],
        });
    }
    if listeners.is_empty() {
        skipped.push(Skipped {
            object,
            reason: "no TCP or UDP port to serve".into(),
        });
        return None;
    }
    let template = if listeners
        .iter()
        .all(|l| l.protocol == model::ListenerProtocol::Udp)
    {
        &config.template_for_udp
    } else {
        &config.template_for_service
    };
    Some(GatewayDraft {
        claim: NameClaim {
            identity: format!("Service/{ns}/{name}"),
            base: format!("svc-{ns}-{name}"),
            created: svc.metadata.creation_timestamp.clone(),
        },
        spec: model::GatewaySpec {
            template: template.clone(),
            client: model::ClientRef {
                cluster: cluster.to_owned(),
                namespace: ns,
                name,
                uid: uid_of(&svc.metadata).to_owned(),
            },
            listeners,
            sharing_key: sharing_key(&svc.metadata),
            addresses: Vec::new(),
        },
        user_gateway: None,
    })
}

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

fn api_gateway(
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
        claim: NameClaim {
            identity: format!("Gateway/{ns}/{name}"),
            base: format!("{ns}-{name}"),
            created: g.metadata.creation_timestamp.clone(),
        },
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
struct RouteContext<'a> {
    gateways: &'a BTreeMap<Key, MirroredGateway<'a>>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
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
struct RouteDraft {
    claim: NameClaim,
    spec: model::RouteSpec,
    /// Services its backendRefs name.
    services: BTreeSet<Key>,
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

fn http_route(
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
        claim: NameClaim {
            identity: format!("HTTPRoute/{ns}/{name}"),
            base: format!("{ns}-{name}"),
            created: route.metadata.creation_timestamp.clone(),
        },
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
        fn $fn_name(
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
                claim: NameClaim {
                    identity: format!("{}/{ns}/{name}", $kind),
                    base: format!("{ns}-{name}"),
                    created: route.metadata.creation_timestamp.clone(),
                },
                spec: route_spec,
                services,
            })
        }
    };
}

l4_route!(tcp_route, TcpRoute, "TCPRoute", tcp);
l4_route!(udp_route, UdpRoute, "UDPRoute", udp);

// ---------------------------------------------------------------------------
// Backend sets.

/// The address of `node` tunnels use: an `InternalIP`, else an
/// `ExternalIP`, of a family in `families` first (IPv4 before IPv6).
fn node_address(node: &Node, families: &BTreeSet<bool>) -> Option<IpAddr> {
    let addresses: Vec<(&str, IpAddr)> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| a.address.parse().ok().map(|ip| (a.type_.as_str(), ip)))
        .collect();
    for kind in ["InternalIP", "ExternalIP"] {
        let of_kind = || addresses.iter().filter(move |(t, _)| *t == kind);
        // `families` holds `is_ipv6()`: false (IPv4) sorts first.
        for v6 in families {
            if let Some((_, ip)) = of_kind().find(|(_, ip)| ip.is_ipv6() == *v6) {
                return Some(*ip);
            }
        }
        if let Some((_, ip)) = of_kind().next() {
            return Some(*ip);
        }
    }
    None
}

fn backend_set(
    svc: &Service,
    slices: &[&EndpointSlice],
    nodes: &BTreeMap<&str, &Node>,
    cluster: &str,
    skipped: &mut Vec<Skipped>,
) -> Option<(NameClaim, model::BackendSetSpec)> {
    let (ns, name) = key_of(&svc.metadata);
    let object = format!("Service {ns}/{name}");
    let mut ports = Vec::new();
    // node name → families of its endpoints.
    let mut hosts: BTreeMap<String, BTreeSet<bool>> = BTreeMap::new();
    for sp in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
        let (Ok(protocol), Some(port)) = (port_protocol(sp.protocol.as_deref()), port_u16(sp.port))
        else {
            continue; // SCTP or out of range: nothing can use it.
        };
        let port_name = sp.name.as_deref().unwrap_or("");
        let protocol_name = match protocol {
            model::PortProtocol::Tcp => "TCP",
            model::PortProtocol::Udp => "UDP",
        };
        // (address, port) → (ready, node); slices in name order.
        let mut endpoints: BTreeMap<(IpAddr, u16), (bool, String)> = BTreeMap::new();
        for slice in slices {
            let slice_object = format!("EndpointSlice {ns}/{}", name_of(&slice.metadata));
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                skipped.push(Skipped {
                    object: slice_object,
                    reason: format!("address type {} is not supported", slice.address_type),
                });
                continue;
            }
            let targets: Vec<u16> = slice
                .ports
                .iter()
                .flatten()
                .filter(|p| {
                    p.name.as_deref().unwrap_or("") == port_name
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol_name
                })
                .filter_map(|p| p.port.and_then(port_u16))
                .collect();
            for e in slice.endpoints.iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let addresses = e.addresses.join(",");
                let Some(node) = e.node_name.as_deref().filter(|n| !n.is_empty()) else {
                    skipped.push(Skipped {
                        object: format!("{slice_object} endpoint {addresses}"),
                        reason: "no nodeName: the gateway cannot reach it".into(),
                    });
                    continue;
                };
                let Some(host) = nodes.get(node) else {
                    skipped.push(Skipped {
                        object: format!("{slice_object} endpoint {addresses}"),
                        reason: format!("node {node} is not in the cluster"),
                    });
                    continue;
                };
                let mut parsed = Vec::new();
                for a in &e.addresses {
                    match a.parse::<IpAddr>() {
                        Ok(ip) => parsed.push(ip),
                        Err(_) => skipped.push(Skipped {
                            object: format!("{slice_object} endpoint {a}"),
                            reason: "not an IP address".into(),
                        }),
                    }
                }
                let families: BTreeSet<bool> = parsed.iter().map(IpAddr::is_ipv6).collect();
                if node_address(host, &families).is_none() {
                    skipped.push(Skipped {
                        object: format!("{slice_object} endpoint {addresses}"),
                        reason: format!("node {node} has no InternalIP or ExternalIP"),
                    });
                    continue;
                }
                for ip in parsed {
                    for target in &targets {
                        let entry = endpoints
                            .entry((ip, *target))
                            .or_insert_with(|| (ready, node.to_owned()));
                        entry.0 |= ready;
                        if node < entry.1.as_str() {
                            node.clone_into(&mut entry.1);
                        }
                    }
                    if !targets.is_empty() {
                        hosts
                            .entry(node.to_owned())
                            .or_default()
                            .insert(ip.is_ipv6());
                    }
                }
            }
        }
        ports.push(model::BackendPort {
            port,
            protocol,
            endpoints: endpoints
                .into_iter()
                .map(|((address, port), (ready, node))| model::Endpoint {
                    address,
                    port,
                    ready,
                    node,
                })
                .collect(),
        });
    }
    if ports.is_empty() {
        skipped.push(Skipped {
            object,
            reason: "no TCP or UDP port to serve".into(),
        });
        return None;
    }
    let nodes = hosts
        .iter()
        .filter_map(|(name, families)| {
            let node = nodes.get(name.as_str())?;
            Some(model::ClusterNode {
                name: name.clone(),
                address: node_address(node, families)?,
            })
        })
        .collect();
    Some((
        NameClaim {
            identity: format!("Service/{ns}/{name}"),
            base: format!("{ns}-{name}"),
            created: svc.metadata.creation_timestamp.clone(),
        },
        model::BackendSetSpec {
            cluster: cluster.to_owned(),
            namespace: ns,
            service: name,
            ports,
            nodes,
        },
    ))
}

// ---------------------------------------------------------------------------
// The translation.

/// Mirrors a user cluster's objects as platform objects in
/// `config.tenant_namespace`. Pure and deterministic; see the module docs
/// for the rules.
pub fn mirror(cluster: &UserCluster, config: &MirrorConfig) -> Mirrored {
    let mut skipped = Vec::new();
    let cluster_id = cluster.cluster.as_str();

    let services = sorted(&cluster.services, |s| &s.metadata);
    let service_index: BTreeMap<Key, &Service> =
        services.iter().map(|s| (key_of(&s.metadata), *s)).collect();
    let mut slices: BTreeMap<Key, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in sorted(&cluster.endpoint_slices, |s| &s.metadata) {
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices
                .entry((namespace_of(&s.metadata).to_owned(), svc.clone()))
                .or_default()
                .push(s);
        }
    }
    let nodes: BTreeMap<&str, &Node> = sorted(&cluster.nodes, |n| &n.metadata)
        .into_iter()
        .map(|n| (name_of(&n.metadata), n))
        .collect();
    let our_classes: BTreeSet<&str> = sorted(&cluster.gateway_classes, |c| &c.metadata)
        .into_iter()
        .filter(|c| c.spec.controller_name == config.controller_name)
        .map(|c| name_of(&c.metadata))
        .collect();

    // Gateways: Services, then Gateway API gateways.
    let mut drafts = Vec::new();
    let mut wanted_services: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for svc in &services {
        if let Some(d) = service_gateway(svc, cluster_id, config, &mut skipped) {
            wanted_services.entry(key_of(&svc.metadata)).or_default();
            drafts.push(d);
        }
    }
    let user_gateways = sorted(&cluster.gateways, |g| &g.metadata);
    for g in &user_gateways {
        if our_classes.contains(g.spec.gateway_class_name.as_str())
            && let Some(d) = api_gateway(g, cluster_id, config, &mut skipped)
        {
            drafts.push(d);
        }
    }
    let claims: Vec<NameClaim> = drafts
        .iter()
        .map(|d| NameClaim {
            identity: d.claim.identity.clone(),
            base: d.claim.base.clone(),
            created: d.claim.created.clone(),
        })
        .collect();
    let gateway_names = assign_names(&claims, &mut skipped);
    let user_gateway_index: BTreeMap<Key, &gw::Gateway> = user_gateways
        .iter()
        .map(|g| (key_of(&g.metadata), *g))
        .collect();
    let mut mirrored_gateways: BTreeMap<Key, MirroredGateway<'_>> = BTreeMap::new();
    let mut gateways = Vec::new();
    for d in drafts {
        let Some(name) = gateway_names.get(&d.claim.identity) else {
            continue;
        };
        if let Some(key) = &d.user_gateway
            && let Some(source) = user_gateway_index.get(key)
        {
            mirrored_gateways.insert(
                key.clone(),
                MirroredGateway {
                    name: name.clone(),
                    source,
                    listeners: d.spec.listeners.iter().map(|l| l.name.clone()).collect(),
                },
            );
        }
        let mut g = model::Gateway::new(name, d.spec);
        g.metadata = platform_meta(name.clone(), config, cluster_id, &d.claim.identity);
        gateways.push(g);
    }
    // A Service gateway that lost its name needs no backend set.
    let service_gateways: BTreeSet<Key> = gateways
        .iter()
        .filter(|g| {
            g.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SOURCE_ANNOTATION))
                .is_some_and(|s| s.starts_with("Service/"))
        })
        .map(|g| (g.spec.client.namespace.clone(), g.spec.client.name.clone()))
        .collect();
    wanted_services.retain(|k, _| service_gateways.contains(k));

    // Routes.
    let ctx = RouteContext {
        gateways: &mirrored_gateways,
        namespace_labels: sorted(&cluster.namespaces, |n| &n.metadata)
            .into_iter()
            .map(|n| {
                (
                    name_of(&n.metadata).to_owned(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect(),
    };
    let mut route_drafts = Vec::new();
    for r in sorted(&cluster.http_routes, |r| &r.metadata) {
        route_drafts.extend(http_route(r, &ctx, &mut skipped));
    }
    for r in sorted(&cluster.tcp_routes, |r| &r.metadata) {
        route_drafts.extend(tcp_route(r, &ctx, &mut skipped));
    }
    for r in sorted(&cluster.udp_routes, |r| &r.metadata) {
        route_drafts.extend(udp_route(r, &ctx, &mut skipped));
    }
    let claims: Vec<NameClaim> = route_drafts
        .iter()
        .map(|d| NameClaim {
            identity: d.claim.identity.clone(),
            base: d.claim.base.clone(),
            created: d.claim.created.clone(),
        })
        .collect();
    let route_names = assign_names(&claims, &mut skipped);
    let mut routes = Vec::new();
    for d in route_drafts {
        let Some(name) = route_names.get(&d.claim.identity) else {
            continue;
        };
        for s in d.services {
            wanted_services
                .entry(s)
                .or_default()
                .insert(d.claim.identity.replacen('/', " ", 1));
        }
        let mut r = model::Route::new(name, d.spec);
        r.metadata = platform_meta(name.clone(), config, cluster_id, &d.claim.identity);
        routes.push(r);
    }

    // Backend sets.
    let mut set_drafts = Vec::new();
    for (key, referrers) in &wanted_services {
        let Some(svc) = service_index.get(key) else {
            skipped.push(Skipped {
                object: format!("Service {}/{}", key.0, key.1),
                reason: format!(
                    "not found (referenced by {})",
                    referrers.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
            continue;
        };
        let svc_slices = slices.get(key).map(Vec::as_slice).unwrap_or(&[]);
        set_drafts.extend(backend_set(
            svc,
            svc_slices,
            &nodes,
            cluster_id,
            &mut skipped,
        ));
    }
    let claims: Vec<NameClaim> = set_drafts
        .iter()
        .map(|(c, _)| NameClaim {
            identity: c.identity.clone(),
            base: c.base.clone(),
            created: c.created.clone(),
        })
        .collect();
    let set_names = assign_names(&claims, &mut skipped);
    let mut backend_sets = Vec::new();
    for (claim, spec) in set_drafts {
        if let Some(name) = set_names.get(&claim.identity) {
            let mut b = model::BackendSet::new(name, spec);
            b.metadata = platform_meta(name.clone(), config, cluster_id, &claim.identity);
            backend_sets.push(b);
        }
    }

    gateways.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    routes.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    backend_sets.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    skipped.sort();
    skipped.dedup();
    Mirrored {
        gateways,
        routes,
        backend_sets,
        skipped,
    }
}

// ---------------------------------------------------------------------------
// Status back.

/// The `Service` status for a platform gateway's status: one
/// `loadBalancer.ingress` per address (`ipMode: VIP`), with the DNS name
/// as `hostname` when there is one.
pub fn service_status(platform: &model::GatewayStatus) -> ServiceStatus {
    let mut ingress: Vec<LoadBalancerIngress> = platform
        .addresses
        .iter()
        .map(|a| LoadBalancerIngress {
            ip: Some(a.to_string()),
            hostname: platform.dns_name.clone(),
            ip_mode: Some("VIP".into()),
            ports: None,
        })
        .collect();
    if ingress.is_empty()
        && let Some(dns) = &platform.dns_name
    {
        ingress.push(LoadBalancerIngress {
            hostname: Some(dns.clone()),
            ..Default::default()
        });
    }
    ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        }),
        conditions: None,
    }
}

/// Gateway API reasons of `Accepted`.
const ACCEPTED_REASONS: [&str; 6] = [
    "Accepted",
    "ListenersNotValid",
    "Pending",
    "UnsupportedAddress",
    "InvalidParameters",
    "NotReady",
];
/// Gateway API reasons of `Programmed`.
const PROGRAMMED_REASONS: [&str; 6] = [
    "Programmed",
    "Invalid",
    "Pending",
    "NoResources",
    "AddressNotAssigned",
    "AddressNotUsable",
];

/// A Gateway API condition for the platform's condition of `type_`.
fn gateway_condition(
    type_: &str,
    platform: Option<&model::Condition>,
    standard: &[&str],
    fallback: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let (status, reason, message) = match platform {
        Some(c) if standard.contains(&c.reason.as_str()) => {
            (c.status.clone(), c.reason.clone(), c.message.clone())
        }
        Some(c) => {
            let message = if c.message.is_empty() {
                c.reason.clone()
            } else {
                format!("{}: {}", c.reason, c.message)
            };
            (c.status.clone(), fallback.to_owned(), message)
        }
        None => (
            "Unknown".to_owned(),
            "Pending".to_owned(),
            "waiting for the gateway platform".to_owned(),
        ),
    };
    Condition {
        type_: type_.to_owned(),
        status,
        reason,
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The Gateway API `Gateway` status for a platform gateway's status:
/// addresses (`IPAddress`, then the DNS name as `Hostname`) and the
/// `Accepted` and `Programmed` conditions, with Gateway API reasons (a
/// platform-only reason becomes `InvalidParameters` / `Invalid`, kept at
/// the front of the message). A gateway the platform has not accepted is
/// `Programmed=False`, reason `Invalid`; one it has not seen yet is
/// `Unknown`, reason `Pending`. Every condition gets `observedGeneration`
/// = `generation` and `lastTransitionTime` = `now` (see
/// [`keep_transition_times`]).
pub fn gateway_status(
    platform: &model::GatewayStatus,
    generation: Option<i64>,
    now: Time,
) -> gw::GatewayStatus {
    let find = |t: ConditionType| platform.conditions.iter().find(|c| c.type_ == t.as_str());
    let accepted = find(ConditionType::Accepted);
    let not_accepted = accepted.filter(|c| !c.is_true()).map(|c| {
        ConditionType::Programmed.condition(
            false,
            Reason::Invalid,
            format!("not accepted: {}", c.message),
        )
    });
    let programmed = find(ConditionType::Programmed).or(not_accepted.as_ref());
    let mut addresses: Vec<gw::GatewayStatusAddresses> = platform
        .addresses
        .iter()
        .map(|a| gw::GatewayStatusAddresses {
            r#type: Some("IPAddress".into()),
            value: a.to_string(),
        })
        .collect();
    if let Some(dns) = &platform.dns_name {
        addresses.push(gw::GatewayStatusAddresses {
            r#type: Some("Hostname".into()),
            value: dns.clone(),
        });
    }
    gw::GatewayStatus {
        addresses: (!addresses.is_empty()).then_some(addresses),
        attached_listener_sets: None,
        conditions: Some(vec![
            gateway_condition(
                "Accepted",
                accepted,
                &ACCEPTED_REASONS,
                "InvalidParameters",
                generation,
                &now,
            ),
            gateway_condition(
                "Programmed",
                programmed,
                &PROGRAMMED_REASONS,
                "Invalid",
                generation,
                &now,
            ),
        ]),
        listeners: None,
    }
}

/// Keeps `lastTransitionTime` of each condition in `next` whose type and
/// status are unchanged from `previous` (Kubernetes convention: the time
/// moves only when the status does).
pub fn keep_transition_times(previous: &[Condition], next: &mut [Condition]) {
    for c in next {
        if let Some(old) = previous
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn labels_are_cleaned_or_hashed() {
        assert_eq!(clean_label("default-web"), Ok("default-web".into()));
        assert_eq!(clean_label("default-my.gw"), Err("default-my-gw".into()));
        assert_eq!(clean_label("-x-"), Err("x".into()));
        let long = "a".repeat(80);
        let hashed = hashed_label(&long, "Service/a/b");
        assert_eq!(hashed.len(), 63);
        assert!(is_dns1123_label(&hashed));
        assert_eq!(hashed_label("", "x").len(), HASH_LEN);
        assert!(is_dns1123_label(&hashed_label("---", "x")));
        assert_ne!(hashed_label("a", "x"), hashed_label("a", "y"));
    }

    #[test]
    fn label_values_stay_valid() {
        assert_eq!(label_value("c1"), "c1");
        assert_eq!(label_value("prod.eu_1"), "prod.eu_1");
        let odd = label_value("https://Cluster/One");
        assert!(
            odd.len() <= MAX_NAME && odd.starts_with("https---cluster-one-"),
            "{odd}"
        );
        assert!(label_value(&"x".repeat(100)).len() <= MAX_NAME);
    }
}
