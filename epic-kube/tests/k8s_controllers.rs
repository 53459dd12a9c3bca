//! The watch-driven controllers against real control planes: the gateway
//! controller reacts to changes without polling and writes nothing while
//! idle; proxies are garbage-collected by the real controller-manager
//! through their owner references; the cluster controller holds a deleted
//! `Service` with the load-balancer finalizer until its platform gateway is
//! gone; and the tenant role confines a tenant to its own namespace.

mod common;

use std::time::{Duration, Instant};

use common::{apply, get, rt};
use epic_kube::cluster_controller::{ClusterController, ClusterOptions, LOAD_BALANCER_FINALIZER};
use epic_kube::controller::{GatewayController, Options};
use epic_test_support::kube::{
    ControlPlane, Options as PlaneOptions, apply_manifests, render_chart, tenant_platform,
};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use std::future::Future;

const V: &str = "epic-gateway.org/v1alpha1";

/// The common tenant platform ([`tenant_platform`]).
fn seed() -> String {
    tenant_platform("acme", 3, "203.0.113.0/28", "198.51.100.1")
}

fn backend_set(node: &str) -> String {
    format!(
        r#"
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {{name: db, namespace: acme}}
spec:
  cluster: c1
  namespace: default
  service: db
  ports: [{{port: 5432, endpoints: [{{address: 198.18.0.9, port: 5432, node: {node}}}]}}]
  nodes: [{{name: {node}, address: 192.0.2.9}}]
"#
    )
}

const GATEWAY: &str = r#"
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {name: web, namespace: acme}
spec:
  template: tcp
  listeners:
  - {name: pg, port: 5432, protocol: TCP, backends: [{namespace: default, name: db, port: 5432}]}
"#;

/// Polls `check` every 50 ms until it returns `Some` (at most `limit`).
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn gateway(client: &Client, name: &str) -> Option<Value> {
    get(client, V, "Gateway", "gateways", Some("acme"), name).await
}

async fn platform_with(options: PlaneOptions, values: &str) -> (ControlPlane, Client) {
    let plane = ControlPlane::start("platform", options).await.unwrap();
    let client = plane.client().await.unwrap();
    let chart = render_chart("epic-gateway", values, "epic-system").unwrap();
    apply_manifests(&client, &chart).await.unwrap();
    apply(&client, &seed()).await;
    (plane, client)
}

fn spawn_gateway_controller(
    client: &Client,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), String>>,
    std::sync::Arc<epic_kube::ops::Metrics>,
) {
    let controller = GatewayController::new(client.clone(), Options::default());
    let metrics = controller.metrics();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    (stop, tokio::spawn(controller.run(stopped)), metrics)
}

fn reconciles(metrics: &epic_kube::ops::Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("epic_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_gateway_controller_follows_changes_and_is_quiet_when_idle() {
    common::logs();
    rt().block_on(async {
        let (_plane, client) = platform_with(
            PlaneOptions {
                controller_manager: true,
                ..Default::default()
            },
            common::GATEWAY_VALUES,
        )
        .await;
        apply(&client, &backend_set("n1")).await;
        let (stop, task, metrics) = spawn_gateway_controller(&client);

        // A new gateway: its status is written as soon as the watch sees it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!task.is_finished(), "{:?}", task.await);
        apply(&client, GATEWAY).await;
        let (web, took) = eventually(Duration::from_secs(20), "web's address", || async {
            gateway(&client, "web")
                .await
                .filter(|g| g["status"]["addresses"] == json!(["203.0.113.0"]))
        })
        .await;
        println!("gateway created -> status written: {took:?}");
        assert_eq!(web["status"]["tunnels"][0]["node"], "n1");
        // The proxy sink runs right after the status sink.
        let (set, _) = eventually(Duration::from_secs(10), "web's proxy", || async {
            get(
                &client,
                "apps/v1",
                "StatefulSet",
                "statefulsets",
                Some("acme"),
                "web-proxy",
            )
            .await
        })
        .await;
        assert_eq!(
            set["metadata"]["ownerReferences"][0]["uid"],
            web["metadata"]["uid"]
        );

        // Idle: no reconcile writes anything, and none runs without a change.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (before, count) = (gateway(&client, "web").await.unwrap(), reconciles(&metrics));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            gateway(&client, "web").await.unwrap()["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        assert_eq!(
            reconciles(&metrics),
            count,
            "no reconcile while nothing changes"
        );

        // An endpoint moves to another node: the tunnel follows.
        apply(&client, &backend_set("n2")).await;
        let (_, took) = eventually(Duration::from_secs(20), "the tunnel to n2", || async {
            gateway(&client, "web")
                .await
                .filter(|g| g["status"]["tunnels"][0]["node"] == "n2")
        })
        .await;
        println!("endpoint changed -> status written: {took:?}");
        assert_eq!(
            gateway(&client, "web").await.unwrap()["status"]["addresses"],
            json!(["203.0.113.0"])
        );

        // With the controller stopped, deleting the gateway still removes its
        // proxies: the real garbage collector follows the owner references.
        stop.send_replace(true);
        task.await.unwrap().unwrap();
        Api::<epic_model::Gateway>::namespaced(client.clone(), "acme")
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        let (_, took) = eventually(
            Duration::from_secs(60),
            "garbage collection of web-proxy",
            || async {
                let set = get(
                    &client,
                    "apps/v1",
                    "StatefulSet",
                    "statefulsets",
                    Some("acme"),
                    "web-proxy",
                )
                .await;
                let map = get(
                    &client,
                    "v1",
                    "ConfigMap",
                    "configmaps",
                    Some("acme"),
                    "web-proxy",
                )
                .await;
                (set.is_none() && map.is_none()).then_some(())
            },
        )
        .await;
        println!("gateway deleted -> proxies collected: {took:?}");
    });
}

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

#[test]
fn a_deleted_service_waits_for_its_gateway_to_go() {
    rt().block_on(async {
        let tenants = r#"{"networkPolicy": {"xdsFrom": ["198.51.100.0/24"]}, "tenants": [{"namespace": "acme", "group": "epic-tenant:acme"}]}"#;
        let ((platform_plane, platform), user_plane) = tokio::join!(
            platform_with(PlaneOptions::default(), tenants),
            ControlPlane::start("user", PlaneOptions::default())
        );
        let user_plane = user_plane.unwrap();
        let user = user_plane.client().await.unwrap();
        apply(&user, USER).await;
        // Node addresses are status: set as a kubelet would (the tunnel to
        // node-a needs one).
        Api::<k8s_openapi::api::core::v1::Node>::all(user.clone())
            .patch_status(
                "node-a",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    &json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.21"}]}}),
                ),
            )
            .await
            .unwrap();
        // The cluster controller writes the platform with the tenant's
        // credentials only (the chart's tenant role).
        let tenant = platform_plane
            .client_as("acme-cluster-1", &["epic-tenant:acme"])
            .await
            .unwrap();
        let (stop, gateway_task, _) = spawn_gateway_controller(&platform);
        apply(&user, "apiVersion: v1\nkind: Namespace\nmetadata: {name: epic-system}\n").await;
        let mut options = ClusterOptions::new("c1", "acme");
        options.agent_namespace = Some("epic-system".into());
        let cluster = ClusterController::new(user.clone(), tenant.clone(), options);
        let (stop_cluster, stopped) = tokio::sync::watch::channel(false);
        let cluster_task = tokio::spawn(cluster.run(stopped));

        let services: Api<Service> = Api::namespaced(user.clone(), "default");
        let (svc, took) = eventually(Duration::from_secs(30), "the Service's ingress", || async {
            let svc = services.get("web").await.ok()?;
            let ip = svc
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?
                .ip
                .clone()?;
            Some((svc, ip))
        })
        .await;
        println!("Service created -> ingress written back: {took:?}");
        assert_eq!(svc.1, "203.0.113.0");
        let finalizers = svc.0.metadata.finalizers.unwrap_or_default();
        assert!(
            finalizers.iter().any(|f| f == LOAD_BALANCER_FINALIZER),
            "{finalizers:?}"
        );
        let keys = node_keys_are_distributed(&platform, &tenant, &user).await;

        // Deleting the Service: held until the platform gateway is gone.
        services
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        let (_, took) = eventually(Duration::from_secs(30), "the Service to go", || async {
            services
                .get_opt("web")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        println!("Service deleted -> finalizer released: {took:?}");
        assert!(
            gateway(&platform, "svc-default-web").await.is_none(),
            "the platform gateway is gone first"
        );
        // No tunnel ends on node-a any more: its key goes; the cluster key
        // stays (the cluster's next gateway uses it).
        let user_secrets: Api<Secret> = Api::namespaced(user.clone(), "epic-system");
        eventually(Duration::from_secs(30), "node-a's key to go", || async {
            user_secrets
                .get_opt("epic-node-key-node-a")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        let platform_secrets: Api<Secret> = Api::namespaced(platform.clone(), "acme");
        let kept = platform_secrets.get("epic-tunnel-keys").await.unwrap();
        assert_eq!(secret_value(&kept, "c1"), keys.0);

        stop.send_replace(true);
        stop_cluster.send_replace(true);
        gateway_task.await.unwrap().unwrap();
        cluster_task.await.unwrap().unwrap();
        drop(user_plane);
    });
}

fn secret_value(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// Waits for the cluster's key on the platform and node-a's key in the
/// user cluster; checks how they relate, who owns and may read them, and
/// that no status holds them. Returns (cluster key, node key), hex.
async fn node_keys_are_distributed(
    platform: &Client,
    tenant: &Client,
    user: &Client,
) -> (String, String) {
    use epic_gue::hello::HelloKey;
    let user_secrets: Api<Secret> = Api::namespaced(user.clone(), "epic-system");
    let (node_secret, took) =
        eventually(Duration::from_secs(30), "node-a's key Secret", || async {
            user_secrets.get_opt("epic-node-key-node-a").await.unwrap()
        })
        .await;
    println!("ingress written back -> node key in the user cluster: {took:?}");
    let cluster_secret = Api::<Secret>::namespaced(platform.clone(), "acme")
        .get("epic-tunnel-keys")
        .await
        .unwrap();
    let cluster_hex = secret_value(&cluster_secret, "c1");
    let cluster_key = HelloKey::from_hex(&cluster_hex).expect("64 hex digits");
    let node_hex = secret_value(&node_secret, "key");
    // The node gets its own key, derived from the cluster's, never the
    // cluster key itself.
    assert_eq!(node_hex, cluster_key.node_key("node-a").to_hex());
    assert_ne!(node_hex, cluster_hex);
    // With its tunnels: where the hellos go, the tenant id they carry, the
    // pods they may deliver to; the tunnel the platform status names.
    let tunnels: Vec<epic_kube::node_keys::NodeTunnel> =
        serde_json::from_str(&secret_value(&node_secret, "tunnels.json")).unwrap();
    let status = gateway(platform, "svc-default-web").await.unwrap();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(json!(tunnels[0].id), status["status"]["tunnels"][0]["id"]);
    assert_eq!(tunnels[0].gateway.to_string(), "198.51.100.1");
    assert_eq!(tunnels[0].tenant_id, 3);
    let endpoints: Vec<String> = tunnels[0]
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.address, e.port))
        .collect();
    assert_eq!(endpoints, ["198.18.3.4:8080"]);
    // The cluster key goes with its Tenant.
    let owners = cluster_secret.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        owners
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
            .collect::<Vec<_>>(),
        [("Tenant", "acme")]
    );
    // The tenant reads its cluster keys and no other Secret of its namespace.
    let tenant_secrets: Api<Secret> = Api::namespaced(tenant.clone(), "acme");
    tenant_secrets.get("epic-tunnel-keys").await.unwrap();
    assert!(forbidden(tenant_secrets.list(&ListParams::default()).await));
    assert!(forbidden(
        tenant_secrets.get("svc-default-web-proxy-xds").await
    ));
    // No status on either side holds a key.
    let statuses = [
        serde_json::to_string(&gateway(platform, "svc-default-web").await).unwrap(),
        serde_json::to_string(
            &get(user, "v1", "Service", "services", Some("default"), "web").await,
        )
        .unwrap(),
    ];
    for status in statuses {
        assert!(!status.contains(&cluster_hex) && !status.contains(&node_hex));
    }
    (cluster_hex, node_hex)
}

/// Whether a request was refused by RBAC (403).
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(e)) if e.code == 403)
}

#[test]
fn the_tenant_role_confines_a_tenant_to_its_namespace() {
    rt().block_on(async {
        let tenants = r#"{"networkPolicy": {"xdsFrom": ["198.51.100.0/24"]}, "tenants": [{"namespace": "acme", "group": "epic-tenant:acme"}, {"namespace": "globex", "group": "epic-tenant:globex"}]}"#;
        let (plane, admin) = platform_with(PlaneOptions::default(), tenants).await;
        apply(&admin, "apiVersion: v1\nkind: Namespace\nmetadata: {name: globex}\n").await;
        let acme = plane.client_as("acme-cluster-1", &["epic-tenant:acme"]).await.unwrap();
        let gateway: epic_model::Gateway = serde_yaml_ng::from_str(GATEWAY).unwrap();
        let own: Api<epic_model::Gateway> = Api::namespaced(acme.clone(), "acme");
        let other: Api<epic_model::Gateway> = Api::namespaced(acme.clone(), "globex");

        // Its own gateways, routes and backend sets: yes.
        own.create(&PostParams::default(), &gateway).await.unwrap();
        assert_eq!(own.list(&ListParams::default()).await.unwrap().items.len(), 1);
        Api::<epic_model::BackendSet>::namespaced(acme.clone(), "acme")
            .list(&ListParams::default())
            .await
            .unwrap();
        Api::<epic_model::Route>::namespaced(acme.clone(), "acme")
            .list(&ListParams::default())
            .await
            .unwrap();
        // The platform's records in its gateways' status: no.
        let status = json!({"status": {"addresses": ["203.0.113.9"]}});
        assert!(forbidden(own.patch_status("web", &Default::default(), &kube::api::Patch::Merge(&status)).await));
        // Another tenant's namespace: no, neither read nor write.
        assert!(forbidden(other.list(&ListParams::default()).await));
        let mut theirs = gateway.clone();
        theirs.metadata.namespace = Some("globex".into());
        assert!(forbidden(other.create(&PostParams::default(), &theirs).await));
        // Templates, address pools, tenants, secrets: no.
        assert!(forbidden(Api::<epic_model::GatewayTemplate>::namespaced(acme.clone(), "acme").list(&ListParams::default()).await));
        assert!(forbidden(Api::<epic_model::AddressPool>::all(acme.clone()).list(&ListParams::default()).await));
        assert!(forbidden(Api::<epic_model::Tenant>::all(acme.clone()).list(&ListParams::default()).await));
        assert!(forbidden(Api::<Secret>::namespaced(acme.clone(), "acme").list(&ListParams::default()).await));
        // Another tenant's cluster keys: no.
        assert!(forbidden(Api::<Secret>::namespaced(acme.clone(), "globex").get("epic-tunnel-keys").await));
    });
}

/// `name`'s first address once its status has one.
async fn address_of(client: &Client, ns: &str, name: &str) -> Option<String> {
    let g = get(client, V, "Gateway", "gateways", Some(ns), name).await?;
    g["status"]["addresses"][0].as_str().map(str::to_owned)
}

#[test]
fn a_deleted_gateways_address_is_held_back_in_its_pools_status() {
    common::logs();
    rt().block_on(async {
        let (_plane, client) = platform_with(PlaneOptions::default(), common::GATEWAY_VALUES).await;
        apply(&client, &backend_set("n1")).await;
        apply(
            &client,
            &tenant_platform("globex", 4, "203.0.113.0/28", "198.51.100.1"),
        )
        .await;
        apply(&client, GATEWAY).await;
        let (stop, task, _) = spawn_gateway_controller(&client);
        let wait = Duration::from_secs(30);
        let (held, _) =
            eventually(wait, "web's address", || address_of(&client, "acme", "web")).await;

        // Deleted (its status goes with it): the pool's status holds its
        // address back, for acme, with the time it was released.
        let gateways: Api<epic_model::Gateway> = Api::namespaced(client.clone(), "acme");
        gateways
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        let (released, _) = eventually(wait, "the pool's status holds the address", || async {
            let pool = get(&client, V, "AddressPool", "addresspools", None, "public").await?;
            let released = pool["status"]["released"].as_array()?.clone();
            (!released.is_empty()).then_some(released)
        })
        .await;
        assert_eq!(released.len(), 1, "{released:?}");
        assert_eq!(released[0]["address"], held.as_str());
        assert_eq!(released[0]["tenant"], "acme");
        assert!(
            released[0]["releasedAt"]
                .as_u64()
                .is_some_and(|t| t > 1_700_000_000)
        );

        // Another tenant's new gateway gets another address.
        let edge = GATEWAY.replace(
            "name: web, namespace: acme",
            "name: edge, namespace: globex",
        );
        apply(&client, &edge).await;
        let (edge_address, _) = eventually(wait, "edge's address", || {
            address_of(&client, "globex", "edge")
        })
        .await;
        assert_ne!(edge_address, held);

        // A restarted controller (no memory) still holds it back: the
        // records are the pool's status.
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
        let (stop, task, _) = spawn_gateway_controller(&client);
        apply(&client, &GATEWAY.replace("name: web,", "name: web2,")).await;
        let (web2, _) = eventually(wait, "web2's address", || {
            address_of(&client, "acme", "web2")
        })
        .await;
        assert_ne!(web2, held);
        assert_ne!(web2, edge_address);
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    });
}
