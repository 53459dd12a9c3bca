//! The source of the cluster controller ([`ClusterSource`]): the user
//! cluster and the tenant's mirror on the platform, one reflector per kind,
//! and [`UserSource::load`], the [`UserCluster`] the pure mirror reads, from
//! those stores.

use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::experimental::udproutes::UdpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways as gw;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use std::convert::Infallible;

use crate::reflect::{Changes, ready, reflect, sorted};
use crate::{K8sError, api_error};
use epic_engine::mirror::{CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, UserCluster, label_value};
use epic_engine::runtime::Source;
use epic_model::{BackendSet, Gateway, Route};

/// The Gateway API kinds, when their CRDs are installed.
#[derive(Clone, Debug)]
pub struct GatewayApiStores {
    /// GatewayClasses.
    pub classes: Store<GatewayClass>,
    /// Gateways.
    pub gateways: Store<gw::Gateway>,
    /// HTTPRoutes.
    pub http_routes: Store<HttpRoute>,
    /// TCPRoutes.
    pub tcp_routes: Store<TcpRoute>,
    /// UDPRoutes.
    pub udp_routes: Store<UdpRoute>,
}

/// The stores of the user cluster.
#[derive(Clone, Debug)]
pub struct UserSource {
    /// Services.
    pub services: Store<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// The Gateway API kinds; `None` while their CRDs are not installed.
    pub gateway_api: Option<GatewayApiStores>,
}

/// Whether the Gateway API CRDs are served (a one-item list of
/// GatewayClasses answers rather than `404`).
pub async fn gateway_api_installed(client: &Client) -> Result<bool, K8sError> {
    let api: Api<GatewayClass> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(api_error("list GatewayClass")(e)),
    }
}

impl UserSource {
    /// Starts the reflectors of the core kinds (and of the Gateway API kinds
    /// if `gateway_api`); returns the stores and their merged changes.
    pub fn watch(client: &Client, gateway_api: bool) -> (UserSource, Changes) {
        let all = watcher::Config::default();
        let mut changes = Changes::new();
        let (services, s) = reflect("Service", Api::all(client.clone()), all.clone());
        changes.push(s);
        let (endpoint_slices, s) = reflect("EndpointSlice", Api::all(client.clone()), all.clone());
        changes.push(s);
        let (nodes, s) = reflect("Node", Api::all(client.clone()), all.clone());
        changes.push(s);
        let (namespaces, s) = reflect("Namespace", Api::all(client.clone()), all.clone());
        changes.push(s);
        let gateway_api = gateway_api.then(|| {
            let (classes, s) = reflect("GatewayClass", Api::all(client.clone()), all.clone());
            changes.push(s);
            let (gateways, s) = reflect("Gateway", Api::all(client.clone()), all.clone());
            changes.push(s);
            let (http_routes, s) = reflect("HTTPRoute", Api::all(client.clone()), all.clone());
            changes.push(s);
            let (tcp_routes, s) = reflect("TCPRoute", Api::all(client.clone()), all.clone());
            changes.push(s);
            let (udp_routes, s) = reflect("UDPRoute", Api::all(client.clone()), all);
            changes.push(s);
            GatewayApiStores {
                classes,
                gateways,
                http_routes,
                tcp_routes,
                udp_routes,
            }
        });
        let source = UserSource {
            services,
            endpoint_slices,
            nodes,
            namespaces,
            gateway_api,
        };
        (source, changes)
    }

    /// Waits until every store has its first complete list.
    pub async fn ready(&self) -> Result<(), String> {
        ready("Service", &self.services).await?;
        ready("EndpointSlice", &self.endpoint_slices).await?;
        ready("Node", &self.nodes).await?;
        ready("Namespace", &self.namespaces).await?;
        if let Some(g) = &self.gateway_api {
            ready("GatewayClass", &g.classes).await?;
            ready("Gateway", &g.gateways).await?;
            ready("HTTPRoute", &g.http_routes).await?;
            ready("TCPRoute", &g.tcp_routes).await?;
            ready("UDPRoute", &g.udp_routes).await?;
        }
        Ok(())
    }

    /// The user cluster `cluster` as the stores hold it.
    pub fn load(&self, cluster: &str) -> UserCluster {
        let g = self.gateway_api.as_ref();
        UserCluster {
            cluster: cluster.to_owned(),
            services: sorted(&self.services),
            endpoint_slices: sorted(&self.endpoint_slices),
            nodes: sorted(&self.nodes),
            namespaces: sorted(&self.namespaces),
            gateway_classes: g.map(|g| sorted(&g.classes)).unwrap_or_default(),
            gateways: g.map(|g| sorted(&g.gateways)).unwrap_or_default(),
            http_routes: g.map(|g| sorted(&g.http_routes)).unwrap_or_default(),
            tcp_routes: g.map(|g| sorted(&g.tcp_routes)).unwrap_or_default(),
            udp_routes: g.map(|g| sorted(&g.udp_routes)).unwrap_or_default(),
        }
    }
}

/// What this cluster mirrored to the tenant's namespace on the platform
/// (selected by the cluster and managed-by labels), with the platform's
/// status of each gateway.
#[derive(Clone, Debug)]
pub struct MirrorSource {
    /// Platform `Gateway`s.
    pub gateways: Store<Gateway>,
    /// Platform `Route`s.
    pub routes: Store<Route>,
    /// Platform `BackendSet`s.
    pub backend_sets: Store<BackendSet>,
}

/// The label selector of what cluster `cluster` mirrored.
pub fn mirrored_selector(cluster: &str) -> String {
    format!(
        "{CLUSTER_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        label_value(cluster)
    )
}

impl MirrorSource {
    /// Starts the reflectors in `namespace` on the platform (namespaced
    /// watches: a tenant's credentials reach only its own namespace).
    pub fn watch(platform: &Client, namespace: &str, cluster: &str) -> (MirrorSource, Changes) {
        let mine = watcher::Config::default().labels(&mirrored_selector(cluster));
        let mut changes = Changes::new();
        let (gateways, s) = reflect(
            "Gateway",
            Api::namespaced(platform.clone(), namespace),
            mine.clone(),
        );
        changes.push(s);
        let (routes, s) = reflect(
            "Route",
            Api::namespaced(platform.clone(), namespace),
            mine.clone(),
        );
        changes.push(s);
        let (backend_sets, s) = reflect(
            "BackendSet",
            Api::namespaced(platform.clone(), namespace),
            mine,
        );
        changes.push(s);
        (
            MirrorSource {
                gateways,
                routes,
                backend_sets,
            },
            changes,
        )
    }

    /// Waits until every store has its first complete list.
    pub async fn ready(&self) -> Result<(), String> {
        ready("platform Gateway", &self.gateways).await?;
        ready("platform Route", &self.routes).await?;
        ready("platform BackendSet", &self.backend_sets).await
    }
}

/// The source of the cluster controller: the user cluster's stores and
/// this cluster's mirror on the platform.
#[derive(Clone, Debug)]
pub struct ClusterSource {
    /// This user cluster's id on the platform.
    pub cluster: String,
    /// The user cluster.
    pub user: UserSource,
    /// Its mirror on the platform.
    pub mirrored: MirrorSource,
}

impl Source for ClusterSource {
    type State = (UserCluster, MirrorSource);
    type Error = Infallible;

    fn read(&mut self) -> Result<(UserCluster, MirrorSource), Infallible> {
        Ok((self.user.load(&self.cluster), self.mirrored.clone()))
    }
}
