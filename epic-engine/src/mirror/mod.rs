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
//!
//! # Files
//!
//! [`mirror`] and the public types live in `mirror/mod.rs`; it reads the
//! snapshot in sorted order and names objects with `mirror/names.rs`
//! (DNS-1123 labels, hashed names, contested names, the metadata every
//! mirrored object carries), makes gateways of `Service`s
//! (`mirror/services.rs`) and of Gateway API gateways, and routes of the
//! routes attached to them (`mirror/api_gateways.rs`), then backend sets of
//! the `Service`s those use (`mirror/backends.rs`). The status written
//! back is `mirror/status.rs`.

use std::collections::{BTreeMap, BTreeSet};

use epic_model as model;
use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways as gw;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::ObjectMeta;

mod api_gateways;
mod backends;
mod names;
mod services;
mod status;

use api_gateways::{MirroredGateway, RouteContext, api_gateway, http_route, tcp_route, udp_route};
use backends::backend_set;
use names::{Key, NameClaim, assign_names, key_of, name_of, namespace_of, platform_meta, sorted};
pub use names::{is_dns1123_label, is_dns1123_subdomain, label_value};
use services::service_gateway;
pub use status::{
    SUPPORTED_GATEWAY_API_MINORS, gateway_class_conditions, gateway_status, keep_transition_times,
    service_status, supported_gateway_api_version,
};

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

/// A platform gateway waiting for its name.
struct GatewayDraft {
    claim: NameClaim,
    spec: model::GatewaySpec,
    /// The user Gateway it stands for (`None`: a Service).
    user_gateway: Option<Key>,
}

// ---------------------------------------------------------------------------
// The translation.

/// Mirrors a user cluster's objects as platform objects in
/// `config.tenant_namespace`. Pure and deterministic; see the module docs
/// for the rules.
pub fn mirror(cluster: &UserCluster, config: &MirrorConfig) -> Mirrored {
    let mut run = Mirroring {
        cluster,
        config,
        skipped: Vec::new(),
    };
    let services = sorted(&cluster.services, |s| &s.metadata);
    let MirroredGateways {
        mut gateways,
        by_user_gateway,
        mut wanted_services,
    } = run.gateways(&services);
    let mut routes = run.routes(&by_user_gateway, &mut wanted_services);
    let mut backend_sets = run.backend_sets(&services, &wanted_services);

    gateways.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    routes.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    backend_sets.sort_by(|a, b| name_of(&a.metadata).cmp(name_of(&b.metadata)));
    let mut skipped = run.skipped;
    skipped.sort();
    skipped.dedup();
    Mirrored {
        gateways,
        routes,
        backend_sets,
        skipped,
    }
}

/// The Services to mirror as backend sets → the routes that name them
/// (none for the Service of a Service gateway).
type WantedServices = BTreeMap<Key, BTreeSet<String>>;

/// The gateways phase's output.
struct MirroredGateways<'a> {
    /// The platform gateways.
    gateways: Vec<model::Gateway>,
    /// The mirrored user Gateways by key, as routes see them.
    by_user_gateway: BTreeMap<Key, MirroredGateway<'a>>,
    /// The Services of the Service gateways that got a name.
    wanted_services: WantedServices,
}

/// One run of [`mirror`]: what every phase reads, and what they skipped.
struct Mirroring<'a> {
    cluster: &'a UserCluster,
    config: &'a MirrorConfig,
    skipped: Vec<Skipped>,
}

impl<'a> Mirroring<'a> {
    /// The metadata of the platform object `name`, mirrored from `identity`.
    fn meta(&self, name: &str, identity: &str) -> ObjectMeta {
        platform_meta(
            name.to_owned(),
            self.config,
            &self.cluster.cluster,
            identity,
        )
    }

    /// The names of the GatewayClasses whose Gateways we mirror.
    fn our_gateway_classes(&self) -> BTreeSet<&'a str> {
        sorted(&self.cluster.gateway_classes, |c| &c.metadata)
            .into_iter()
            .filter(|c| c.spec.controller_name == self.config.controller_name)
            .map(|c| name_of(&c.metadata))
            .collect()
    }

    /// The platform gateways: Services, then Gateway API gateways.
    fn gateways(&mut self, services: &[&Service]) -> MirroredGateways<'a> {
        let cluster = self.cluster;
        let mut drafts = Vec::new();
        let mut wanted_services = WantedServices::new();
        for svc in services {
            if let Some(d) = service_gateway(svc, &cluster.cluster, self.config, &mut self.skipped)
            {
                wanted_services.entry(key_of(&svc.metadata)).or_default();
                drafts.push(d);
            }
        }
        let our_classes = self.our_gateway_classes();
        let user_gateways = sorted(&cluster.gateways, |g| &g.metadata);
        for g in &user_gateways {
            if our_classes.contains(g.spec.gateway_class_name.as_str())
                && let Some(d) = api_gateway(g, &cluster.cluster, self.config, &mut self.skipped)
            {
                drafts.push(d);
            }
        }
        let claims: Vec<NameClaim> = drafts.iter().map(|d| d.claim.clone()).collect();
        let gateway_names = assign_names(&claims, &mut self.skipped);
        let user_gateway_index: BTreeMap<Key, &gw::Gateway> = user_gateways
            .iter()
            .map(|g| (key_of(&g.metadata), *g))
            .collect();
        let mut by_user_gateway = BTreeMap::new();
        let mut gateways = Vec::new();
        for d in drafts {
            let Some(name) = gateway_names.get(&d.claim.identity) else {
                continue;
            };
            if let Some(key) = &d.user_gateway
                && let Some(source) = user_gateway_index.get(key)
            {
                by_user_gateway.insert(
                    key.clone(),
                    MirroredGateway {
                        name: name.clone(),
                        source,
                        listeners: d.spec.listeners.iter().map(|l| l.name.clone()).collect(),
                    },
                );
            }
            let mut g = model::Gateway::new(name, d.spec);
            g.metadata = self.meta(name, &d.claim.identity);
            gateways.push(g);
        }
        // A Service gateway that lost its name needs no backend set.
        let service_gateways = service_gateway_keys(&gateways);
        wanted_services.retain(|k, _| service_gateways.contains(k));
        MirroredGateways {
            gateways,
            by_user_gateway,
            wanted_services,
        }
    }

    /// The platform routes attached to `gateways`; the Services they name
    /// join `wanted_services`.
    fn routes(
        &mut self,
        gateways: &BTreeMap<Key, MirroredGateway<'_>>,
        wanted_services: &mut WantedServices,
    ) -> Vec<model::Route> {
        let cluster = self.cluster;
        let ctx = RouteContext {
            gateways,
            namespace_labels: namespace_labels(cluster),
        };
        let mut route_drafts = Vec::new();
        for r in sorted(&cluster.http_routes, |r| &r.metadata) {
            route_drafts.extend(http_route(r, &ctx, &mut self.skipped));
        }
        for r in sorted(&cluster.tcp_routes, |r| &r.metadata) {
            route_drafts.extend(tcp_route(r, &ctx, &mut self.skipped));
        }
        for r in sorted(&cluster.udp_routes, |r| &r.metadata) {
            route_drafts.extend(udp_route(r, &ctx, &mut self.skipped));
        }
        let claims: Vec<NameClaim> = route_drafts.iter().map(|d| d.claim.clone()).collect();
        let route_names = assign_names(&claims, &mut self.skipped);
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
            r.metadata = self.meta(name, &d.claim.identity);
            routes.push(r);
        }
        routes
    }

    /// The platform backend sets of `wanted_services`.
    fn backend_sets(
        &mut self,
        services: &[&Service],
        wanted_services: &WantedServices,
    ) -> Vec<model::BackendSet> {
        let cluster = self.cluster;
        let service_index: BTreeMap<Key, &Service> =
            services.iter().map(|s| (key_of(&s.metadata), *s)).collect();
        let slices = slices_by_service(cluster);
        let nodes: BTreeMap<&str, &Node> = sorted(&cluster.nodes, |n| &n.metadata)
            .into_iter()
            .map(|n| (name_of(&n.metadata), n))
            .collect();
        let mut set_drafts = Vec::new();
        for (key, referrers) in wanted_services {
            let Some(svc) = service_index.get(key) else {
                self.skipped.push(Skipped {
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
                &cluster.cluster,
                &mut self.skipped,
            ));
        }
        let claims: Vec<NameClaim> = set_drafts.iter().map(|(c, _)| c.clone()).collect();
        let set_names = assign_names(&claims, &mut self.skipped);
        let mut backend_sets = Vec::new();
        for (claim, spec) in set_drafts {
            if let Some(name) = set_names.get(&claim.identity) {
                let mut b = model::BackendSet::new(name, spec);
                b.metadata = self.meta(name, &claim.identity);
                backend_sets.push(b);
            }
        }
        backend_sets
    }
}

/// The keys of the Services that platform gateways among `gateways` stand
/// for.
fn service_gateway_keys(gateways: &[model::Gateway]) -> BTreeSet<Key> {
    gateways
        .iter()
        .filter(|g| {
            g.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SOURCE_ANNOTATION))
                .is_some_and(|s| s.starts_with("Service/"))
        })
        .map(|g| (g.spec.client.namespace.clone(), g.spec.client.name.clone()))
        .collect()
}

/// The user namespaces' labels, by name (for `allowedRoutes` selectors).
fn namespace_labels(cluster: &UserCluster) -> BTreeMap<String, BTreeMap<String, String>> {
    sorted(&cluster.namespaces, |n| &n.metadata)
        .into_iter()
        .map(|n| {
            (
                name_of(&n.metadata).to_owned(),
                n.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The EndpointSlices by the Service they are labelled with, in name order.
fn slices_by_service(cluster: &UserCluster) -> BTreeMap<Key, Vec<&EndpointSlice>> {
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
    slices
}
