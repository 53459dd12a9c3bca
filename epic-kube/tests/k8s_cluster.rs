//! Both controllers' Kubernetes I/O against two real control planes (a user
//! cluster and the gateway platform, each kube-apiserver + etcd): a
//! `Service` of type `LoadBalancer` is mirrored to the tenant's namespace,
//! planned by the gateway controller, and its address comes back in the
//! `Service`'s status; when the `Service` goes, its platform resources go
//! too.

mod common;

use common::{apply, get, platform, rt, user_cluster};
use epic_engine::mirror::{MirrorConfig, mirror};
use epic_engine::plan::plan;
use epic_kube::cluster::{apply_mirrored, load_user_cluster, write_back};
use epic_kube::{load, write_statuses};
use epic_test_support::kube::tenant_platform;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const V: &str = "epic-gateway.org/v1alpha1";

const USER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: epic-gateway.org/gateway
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [198.18.3.4], nodeName: node-a, conditions: {ready: true}}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
"#;

/// The common tenant platform ([`tenant_platform`]).
fn seed() -> String {
    tenant_platform("acme", 4, "203.0.113.64/30", "198.51.100.3")
}

/// Node addresses are status: set as a kubelet would.
async fn set_node_address(client: &Client, node: &str, address: &str) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .patch_status(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                &json!({"status": {"addresses": [{"type": "InternalIP", "address": address}]}}),
            ),
        )
        .await
        .unwrap();
}

/// One pass of each controller: cluster → platform → plan → status back.
async fn pass(user: &Client, platform: &Client) -> (Vec<String>, Vec<String>, usize) {
    let config = MirrorConfig::new("acme");
    let cluster = load_user_cluster(user, "c1").await.unwrap();
    let mirrored = mirror(&cluster, &config);
    assert!(mirrored.skipped.is_empty(), "{:?}", mirrored.skipped);
    let report = apply_mirrored(platform, &mirrored, &config, "c1")
        .await
        .unwrap();
    let loaded = load(platform).await.unwrap();
    let planned = plan(&loaded.inputs, &loaded.recorded);
    let statuses = write_statuses(platform, &planned, loaded.gateways()).await;
    assert!(statuses.failed.is_empty(), "{:?}", statuses.failed);
    let cluster = load_user_cluster(user, "c1").await.unwrap();
    let back = write_back(user, platform, &cluster, &config, "c1")
        .await
        .unwrap();
    (report.applied, report.deleted, back)
}

#[test]
fn a_load_balancer_service_gets_its_platform_address_and_leaves_no_trace() {
    rt().block_on(async {
        let (user_plane, platform_plane) = tokio::join!(user_cluster(false), platform());
        let (user, platform) = (
            user_plane.client().await.unwrap(),
            platform_plane.client().await.unwrap(),
        );
        apply(&user, USER).await;
        set_node_address(&user, "node-a", "192.0.2.21").await;
        apply(&platform, &seed()).await;
        let uid = Api::<Service>::namespaced(user.clone(), "default")
            .get("web")
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap();

        let (applied, deleted, back) = pass(&user, &platform).await;
        assert_eq!(
            applied,
            ["BackendSet default-web", "Gateway svc-default-web"]
        );
        assert!(deleted.is_empty());
        assert_eq!(back, 1);

        // On the platform: the mirrored gateway, programmed with an address
        // and a tunnel to the endpoint's node.
        let gw = get(
            &platform,
            V,
            "Gateway",
            "gateways",
            Some("acme"),
            "svc-default-web",
        )
        .await
        .unwrap();
        assert_eq!(gw["spec"]["client"]["uid"], json!(uid));
        assert_eq!(gw["status"]["addresses"], json!(["203.0.113.64"]));
        assert_eq!(gw["status"]["tunnels"][0]["node"], "node-a");
        let set = get(
            &platform,
            V,
            "BackendSet",
            "backendsets",
            Some("acme"),
            "default-web",
        )
        .await
        .unwrap();
        assert_eq!(set["spec"]["ports"][0]["endpoints"][0]["port"], 8080);
        assert_eq!(set["spec"]["nodes"][0]["address"], "192.0.2.21");

        // In the user cluster: the Service's load balancer ingress.
        let svc = get(&user, "v1", "Service", "services", Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"][0]["ip"],
            "203.0.113.64"
        );
        // With the Service's ports, served (no error).
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"][0]["ports"],
            json!([{"port": 80, "protocol": "TCP"}])
        );

        // A second pass changes nothing in the user cluster.
        let (_, deleted, back) = pass(&user, &platform).await;
        assert!(deleted.is_empty());
        assert_eq!(back, 0);

        // The Service goes: so do its platform resources.
        Api::<Service>::namespaced(user.clone(), "default")
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        let (applied, deleted, _) = pass(&user, &platform).await;
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(
            deleted,
            ["BackendSet default-web", "Gateway svc-default-web"]
        );
        assert!(
            get(
                &platform,
                V,
                "Gateway",
                "gateways",
                Some("acme"),
                "svc-default-web"
            )
            .await
            .is_none()
        );
    });
}

#[test]
fn a_missing_core_kind_is_an_error_but_missing_gateway_api_is_not() {
    rt().block_on(async {
        let plane = user_cluster(false).await;
        let admin = plane.client().await.unwrap();
        apply(&admin, USER).await;
        // No Gateway API CRDs in this cluster: those kinds read as empty.
        let cluster = load_user_cluster(&admin, "c1").await.unwrap();
        assert!(cluster.gateways.is_empty() && cluster.http_routes.is_empty());
        // Every Service is read (the API server adds its own `kubernetes`
        // Service at some point after it is ready: not asserted).
        let names: Vec<_> = cluster
            .services
            .iter()
            .filter_map(|s| s.metadata.name.as_deref())
            .collect();
        assert!(names.contains(&"web"), "{names:?}");
        // An identity that may read nothing: the first core list is refused.
        let nobody = plane.client_as("nobody", &[]).await.unwrap();
        let err = load_user_cluster(&nobody, "c1").await.unwrap_err();
        assert!(err.to_string().starts_with("list Service: "), "{err}");
        assert!(err.to_string().contains("forbidden"), "{err}");
    });
}
