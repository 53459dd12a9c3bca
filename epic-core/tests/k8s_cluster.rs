//! Both controllers against two in-memory API servers (a user cluster and
//! the gateway platform), through real `kube::Client`s: a `Service` of type
//! `LoadBalancer` is mirrored to the tenant's namespace, planned by the
//! gateway controller, and its address comes back in the `Service`'s status;
//! when the `Service` goes, its platform resources go too.

mod common;

use std::sync::Arc;

use common::{FakeApi, client};
use epic_core::k8s::cluster::{apply_mirrored, load_user_cluster, write_back};
use epic_core::k8s::{load, write_statuses};
use epic_core::mirror::{MirrorConfig, mirror};
use epic_core::plan::plan;
use serde_json::json;

const CRD: &str = "/apis/epic-gateway.org/v1alpha1";

fn user_cluster() -> Arc<FakeApi> {
    let user = Arc::new(FakeApi::default());
    // No Gateway API CRDs in this cluster: those lists are 404.
    for plural in ["gatewayclasses", "gateways", "httproutes"] {
        user.missing
            .lock()
            .unwrap()
            .push(format!("/apis/gateway.networking.k8s.io/v1/{plural}"));
    }
    for plural in ["tcproutes", "udproutes"] {
        user.missing
            .lock()
            .unwrap()
            .push(format!("/apis/gateway.networking.k8s.io/v1alpha2/{plural}"));
    }
    user.put(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    );
    user.put(
        "/api/v1/services",
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid-1"},
               "spec": {"type": "LoadBalancer", "loadBalancerClass": "epic-gateway.org/gateway",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
    );
    user.put(
        "/apis/discovery.k8s.io/v1/endpointslices",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-abc", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["198.18.3.4"], "nodeName": "node-a",
                              "conditions": {"ready": true}}]}),
    );
    user.put(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
               "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.21"}]}}),
    );
    user
}

fn platform() -> Arc<FakeApi> {
    let platform = Arc::new(FakeApi::default());
    platform.put(
        &format!("{CRD}/tenants"),
        json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": "Tenant",
               "metadata": {"name": "acme"}, "spec": {"namespace": "acme", "id": 4}}),
    );
    platform.put(
        &format!("{CRD}/addresspools"),
        json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": "AddressPool",
               "metadata": {"name": "public"}, "spec": {"addresses": ["203.0.113.64/30"]}}),
    );
    platform.put(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "gw-1", "labels": {"epic-gateway.org/gateway-node": "true"}},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.3"}]}}),
    );
    platform
}

/// One pass of each controller: cluster → platform → plan → status back.
async fn pass(user: &Arc<FakeApi>, platform: &Arc<FakeApi>) -> (Vec<String>, Vec<String>, usize) {
    let (user_client, platform_client) = (client(user), client(platform));
    let config = MirrorConfig::new("acme");
    let cluster = load_user_cluster(&user_client, "c1").await.unwrap();
    let mirrored = mirror(&cluster, &config);
    assert!(mirrored.skipped.is_empty(), "{:?}", mirrored.skipped);
    let report = apply_mirrored(&platform_client, &mirrored, &config, "c1")
        .await
        .unwrap();
    let loaded = load(&platform_client).await.unwrap();
    let planned = plan(&loaded.inputs, &loaded.recorded);
    let statuses = write_statuses(&platform_client, &planned, loaded.gateways()).await;
    assert!(statuses.failed.is_empty(), "{:?}", statuses.failed);
    let cluster = load_user_cluster(&user_client, "c1").await.unwrap();
    let back = write_back(&user_client, &platform_client, &cluster, &config, "c1")
        .await
        .unwrap();
    (report.applied, report.deleted, back)
}

#[test]
fn a_load_balancer_service_gets_its_platform_address_and_leaves_no_trace() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (user, platform) = (user_cluster(), platform());
        let (applied, deleted, back) = pass(&user, &platform).await;
        assert_eq!(
            applied,
            ["BackendSet default-web", "Gateway svc-default-web"]
        );
        assert!(deleted.is_empty());
        assert_eq!(back, 1);

        // On the platform: the mirrored gateway, programmed with an address
        // and a tunnel to the endpoint's node.
        let gw = platform
            .get(&format!("{CRD}/gateways"), "acme", "svc-default-web")
            .unwrap();
        assert_eq!(gw["spec"]["client"]["uid"], "svc-uid-1");
        assert_eq!(gw["status"]["addresses"], json!(["203.0.113.64"]));
        assert_eq!(gw["status"]["tunnels"][0]["node"], "node-a");
        let set = platform
            .get(&format!("{CRD}/backendsets"), "acme", "default-web")
            .unwrap();
        assert_eq!(set["spec"]["ports"][0]["endpoints"][0]["port"], 8080);
        assert_eq!(set["spec"]["nodes"][0]["address"], "192.0.2.21");

        // In the user cluster: the Service's load balancer ingress.
        let svc = user.get("/api/v1/services", "default", "web").unwrap();
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"][0]["ip"],
            "203.0.113.64"
        );

        // A second pass changes nothing in the user cluster.
        let (_, deleted, back) = pass(&user, &platform).await;
        assert!(deleted.is_empty());
        assert_eq!(back, 0);

        // The Service goes: so do its platform resources.
        user.remove("/api/v1/services", "default", "web");
        let (applied, deleted, _) = pass(&user, &platform).await;
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(
            deleted,
            ["BackendSet default-web", "Gateway svc-default-web"]
        );
        assert!(
            platform
                .get(&format!("{CRD}/gateways"), "acme", "svc-default-web")
                .is_none()
        );
    });
}

#[test]
fn a_missing_core_kind_is_an_error_but_missing_gateway_api_is_not() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let user = user_cluster();
        let cluster = load_user_cluster(&client(&user), "c1").await.unwrap();
        assert!(cluster.gateways.is_empty() && cluster.http_routes.is_empty());
        assert_eq!(cluster.services.len(), 1);
        user.forbidden.lock().unwrap().push("/api/v1/nodes".into());
        let err = load_user_cluster(&client(&user), "c1").await.unwrap_err();
        assert!(err.to_string().starts_with("list Node: "), "{err}");
    });
}
