//! The source of the gateway controller: one reflector per kind it reads,
//! and [`PlatformSource::load`], the desired and recorded state read from
//! those stores (no API request); as a [`Source`], the proxy objects that
//! exist too.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use std::convert::Infallible;

use crate::proxies::ProxyObjects;
use crate::reflect::{Changes, ready, reflect, sorted};
use crate::{GATEWAY_NODE_LABEL, Loaded, MANAGED_BY, gateway_nodes};
use epic_engine::plan::DesiredInputs;
use epic_engine::runtime::Source;
use epic_model::{AddressPool, BackendSet, Gateway, GatewayTemplate, Route, Tenant};

/// The stores of every kind the gateway controller reads.
#[derive(Clone)]
pub struct PlatformSource {
    /// `Tenant`s (cluster-scoped).
    pub tenants: Store<Tenant>,
    /// `AddressPool`s (cluster-scoped).
    pub pools: Store<AddressPool>,
    /// `GatewayTemplate`s in every namespace.
    pub templates: Store<GatewayTemplate>,
    /// `Gateway`s in every namespace (with their status: the records).
    pub gateways: Store<Gateway>,
    /// `Route`s in every namespace.
    pub routes: Store<Route>,
    /// `BackendSet`s in every namespace.
    pub backend_sets: Store<BackendSet>,
    /// The gateway `Node`s (labelled [`GATEWAY_NODE_LABEL`]`=true`).
    pub nodes: Store<Node>,
    /// The proxy `StatefulSet`s this controller made.
    pub proxy_sets: Store<StatefulSet>,
    /// The proxy bootstrap `ConfigMap`s this controller made.
    pub proxy_maps: Store<ConfigMap>,
}

impl PlatformSource {
    /// Starts the reflectors; returns the stores and their merged change
    /// stream (poll it, or the stores never fill).
    pub fn watch(client: &Client) -> (PlatformSource, Changes) {
        let all = watcher::Config::default();
        let managed = watcher::Config::default()
            .labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
        let gateway_nodes =
            watcher::Config::default().labels(&format!("{GATEWAY_NODE_LABEL}=true"));
        let mut changes = Changes::new();
        let mut add = |stream| changes.push(stream);
        let (tenants, s) = reflect("Tenant", Api::all(client.clone()), all.clone());
        add(s);
        let (pools, s) = reflect("AddressPool", Api::all(client.clone()), all.clone());
        add(s);
        let (templates, s) = reflect("GatewayTemplate", Api::all(client.clone()), all.clone());
        add(s);
        let (gateways, s) = reflect("Gateway", Api::all(client.clone()), all.clone());
        add(s);
        let (routes, s) = reflect("Route", Api::all(client.clone()), all.clone());
        add(s);
        let (backend_sets, s) = reflect("BackendSet", Api::all(client.clone()), all);
        add(s);
        let (nodes, s) = reflect("Node", Api::all(client.clone()), gateway_nodes);
        add(s);
        let (proxy_sets, s) = reflect("StatefulSet", Api::all(client.clone()), managed.clone());
        add(s);
        let (proxy_maps, s) = reflect("ConfigMap", Api::all(client.clone()), managed);
        add(s);
        let source = PlatformSource {
            tenants,
            pools,
            templates,
            gateways,
            routes,
            backend_sets,
            nodes,
            proxy_sets,
            proxy_maps,
        };
        (source, changes)
    }

    /// Waits until every store has its first complete list.
    pub async fn ready(&self) -> Result<(), String> {
        ready("Tenant", &self.tenants).await?;
        ready("AddressPool", &self.pools).await?;
        ready("GatewayTemplate", &self.templates).await?;
        ready("Gateway", &self.gateways).await?;
        ready("Route", &self.routes).await?;
        ready("BackendSet", &self.backend_sets).await?;
        ready("Node", &self.nodes).await?;
        ready("StatefulSet", &self.proxy_sets).await?;
        ready("ConfigMap", &self.proxy_maps).await
    }

    /// The desired state and the records (rebuilt from the gateways'
    /// status), read from the stores.
    pub fn load(&self) -> Loaded {
        Loaded::from_inputs(DesiredInputs {
            tenants: sorted(&self.tenants),
            pools: sorted(&self.pools),
            templates: sorted(&self.templates),
            gateways: sorted(&self.gateways),
            routes: sorted(&self.routes),
            backend_sets: sorted(&self.backend_sets),
            gateway_nodes: gateway_nodes(&sorted(&self.nodes)),
            ..DesiredInputs::default()
        })
    }
}

/// What one read of the platform's stores gives.
#[derive(Debug, Clone)]
pub struct PlatformState {
    /// The desired state and the records.
    pub loaded: Loaded,
    /// This controller's proxy objects.
    pub proxies: ProxyObjects,
}

impl Source for PlatformSource {
    type State = PlatformState;
    type Error = Infallible;

    fn read(&mut self) -> Result<PlatformState, Infallible> {
        Ok(PlatformState {
            loaded: self.load(),
            proxies: ProxyObjects::from_stores(&self.proxy_sets, &self.proxy_maps),
        })
    }
}
