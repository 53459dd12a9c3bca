//! The Kubernetes source and sinks through a real `kube::Client` over an
//! in-memory API server that stores objects, answers lists (with label
//! selectors), merge and apply patches and deletes as the API server does,
//! and records every request.

mod common;

use std::sync::Arc;

use common::{FakeApi, client};
use epic_core::k8s::{ProxySettings, apply_proxies, load, recorded_from, write_statuses};
use epic_core::plan::plan;
use serde_json::{Value, json};

const CRD: &str = "/apis/epic-gateway.org/v1alpha1";

fn seed() -> Arc<FakeApi> {
    let fake = Arc::new(FakeApi::default());
    let cr = |kind: &str, meta: Value, spec: Value| json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": kind, "metadata": meta, "spec": spec});
    fake.put(
        &format!("{CRD}/tenants"),
        cr(
            "Tenant",
            json!({"name": "acme"}),
            json!({"namespace": "acme", "id": 3}),
        ),
    );
    fake.put(
        &format!("{CRD}/addresspools"),
        cr(
            "AddressPool",
            json!({"name": "public"}),
            json!({"addresses": ["203.0.113.0/30"]}),
        ),
    );
    fake.put(
        &format!("{CRD}/backendsets"),
        cr(
            "BackendSet",
            json!({"name": "db", "namespace": "acme"}),
            json!({"cluster": "c1", "namespace": "default", "service": "db",
                   "ports": [{"port": 5432, "endpoints": [{"address": "198.18.0.9", "port": 5432, "node": "n1"}]}],
                   "nodes": [{"name": "n1", "address": "192.0.2.9"}]}),
        ),
    );
    add_gateway(&fake, "web", "uid-web");
    fake.put(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "gw-1", "labels": {"epic-gateway.org/gateway-node": "true"},
                            "annotations": {"epic-gateway.org/tunnel-address": "198.51.100.1"}},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.200"}]}}),
    );
    fake.put(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker"},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.7"}]}}),
    );
    fake
}

fn add_gateway(fake: &FakeApi, name: &str, uid: &str) {
    fake.put(
        &format!("{CRD}/gateways"),
        json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": "Gateway",
               "metadata": {"name": name, "namespace": "acme", "uid": uid},
               "spec": {"template": "tcp",
                        "listeners": [{"name": "pg", "port": 5432, "protocol": "TCP",
                                       "backends": [{"namespace": "default", "name": "db", "port": 5432}]}]}}),
    );
}

async fn reconcile(fake: &Arc<FakeApi>) -> (usize, Vec<String>, Vec<String>) {
    let client = client(fake);
    let loaded = load(&client).await.unwrap();
    let plan = plan(&loaded.inputs, &loaded.recorded);
    // The records rebuilt from status are the plan's own records.
    let mut rebuilt = loaded.recorded.clone();
    let mut planned = plan.recorded.clone();
    for r in [&mut rebuilt, &mut planned] {
        r.allocations.sort();
        r.tunnels.sort();
    }
    let had_status = loaded.gateways().iter().all(|g| g.status.is_some());
    if had_status {
        assert_eq!(rebuilt, planned, "status round-trips the records");
    }
    let statuses = write_statuses(&client, &plan, loaded.gateways()).await;
    let proxies = apply_proxies(&client, &plan, &loaded.inputs, &ProxySettings::default()).await;
    assert!(
        statuses.failed.is_empty() && proxies.failed.is_empty(),
        "{:?} {:?}",
        statuses.failed,
        proxies.failed
    );
    (statuses.done.len(), proxies.done, proxies.deleted)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn reconciles_status_and_proxies_and_keeps_them_across_restarts() {
    rt().block_on(async {
        let fake = seed();
        let (patched, applied, deleted) = reconcile(&fake).await;
        assert_eq!((patched, applied.as_slice(), deleted.len()), (1, &["acme/web-proxy".to_owned()][..], 0));

        // The status holds the address, the tunnel and the proxy.
        let web = fake.get(&format!("{CRD}/gateways"), "acme", "web").unwrap();
        let st = &web["status"];
        assert_eq!(st["addresses"], json!(["203.0.113.0"]));
        assert_eq!(st["proxies"], json!(["acme/web/proxy-0"]));
        assert_eq!(st["tunnels"], json!([{"id": 1, "cluster": "c1", "node": "n1", "gatewayNode": "gw-1"}]));
        let programmed = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Programmed").unwrap();
        assert_eq!(programmed["status"], "True");

        // The proxy: host network on gateway nodes, node id from the ordinal,
        // bootstrap pointing at the ADS service.
        let set = fake.get("/apis/apps/v1/statefulsets", "acme", "web-proxy").unwrap();
        assert_eq!(set["spec"]["replicas"], 1);
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["nodeSelector"]["epic-gateway.org/gateway-node"], "true");
        let command = pod["containers"][0]["command"][2].as_str().unwrap();
        assert!(command.contains("--service-node \"acme/web/proxy-${POD_NAME##*-}\""), "{command}");
        let map = fake.get("/api/v1/configmaps", "acme", "web-proxy").unwrap();
        let bootstrap: Value = serde_json::from_str(map["data"]["bootstrap.json"].as_str().unwrap()).unwrap();
        assert_eq!(
            bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"],
            "epic-gateway-controller.epic-system.svc"
        );

        // Everything applied carries the gateway controller's field manager.
        assert!(
            fake.requests()
                .iter()
                .filter(|(m, p)| m == "PATCH" && !p.contains("/status"))
                .all(|(_, p)| p.contains("fieldManager=epic-gateway-controller"))
        );

        // Idempotent: a second pass patches no status.
        fake.clear_requests();
        let (patched, _, _) = reconcile(&fake).await;
        assert_eq!(patched, 0);
        assert!(fake.requests().iter().all(|(m, p)| m != "PATCH" || !p.contains("/status")));

        // A restarted controller rebuilds the records from status: a new
        // gateway that sorts first does not take web's address or tunnel.
        add_gateway(&fake, "aaa", "uid-aaa");
        let (patched, applied, _) = reconcile(&fake).await;
        assert_eq!(patched, 1, "only the new gateway's status changes");
        assert_eq!(applied.len(), 2);
        let aaa = fake.get(&format!("{CRD}/gateways"), "acme", "aaa").unwrap();
        assert_eq!(aaa["status"]["addresses"], json!(["203.0.113.1"]));
        let web = fake.get(&format!("{CRD}/gateways"), "acme", "web").unwrap();
        assert_eq!(web["status"]["addresses"], json!(["203.0.113.0"]));

        // A gateway that goes away takes its proxy with it.
        fake.remove(&format!("{CRD}/gateways"), "acme", "web");
        let (_, applied, deleted) = reconcile(&fake).await;
        assert_eq!(applied, ["acme/aaa-proxy"]);
        assert_eq!(deleted, ["acme/web-proxy"]);
        assert!(fake.get("/apis/apps/v1/statefulsets", "acme", "web-proxy").is_none());
        assert!(fake.get("/api/v1/configmaps", "acme", "web-proxy").is_none());
    });
}

#[test]
fn a_gateway_that_stops_rendering_keeps_its_proxies() {
    rt().block_on(async {
        let fake = seed();
        reconcile(&fake).await;
        // The gateway's template now fails to render: the gateway is still
        // accepted, not programmed (Invalid), and keeps serving its last
        // configuration, so its proxy and its address stay.
        fake.put(
            &format!("{CRD}/gatewaytemplates"),
            json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": "GatewayTemplate",
                   "metadata": {"name": "broken", "namespace": "acme"},
                   "spec": {"envoy": "{{ fail(\"broken on purpose\") }}"}}),
        );
        let mut web = fake.get(&format!("{CRD}/gateways"), "acme", "web").unwrap();
        web["spec"]["template"] = json!("broken");
        fake.put(&format!("{CRD}/gateways"), web);
        let (patched, applied, deleted) = reconcile(&fake).await;
        assert_eq!(patched, 1);
        assert!(
            applied.is_empty() && deleted.is_empty(),
            "{applied:?} {deleted:?}"
        );
        let web = fake.get(&format!("{CRD}/gateways"), "acme", "web").unwrap();
        let programmed = web["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Programmed")
            .unwrap()
            .clone();
        assert_eq!(programmed["reason"], "Invalid");
        assert_eq!(
            web["status"]["addresses"],
            json!(["203.0.113.0"]),
            "the address is kept"
        );
        assert!(
            fake.get("/apis/apps/v1/statefulsets", "acme", "web-proxy")
                .is_some()
        );
    });
}

#[test]
fn api_errors_say_what_was_being_done() {
    rt().block_on(async {
        let fake = seed();
        fake.forbidden
            .lock()
            .unwrap()
            .push(format!("{CRD}/tenants"));
        let err = load(&client(&fake)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("list Tenant: "), "{text}");
        assert!(text.contains("forbidden by the test"), "{text}");
    });
}

#[test]
fn records_come_from_status_one_id_per_tunnel() {
    use epic_core::model::{Gateway, Tenant};
    let tenant: Tenant = serde_json::from_value(
        json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "acme"}, "spec": {"namespace": "acme", "id": 3}}),
    )
    .unwrap();
    let gw = |name: &str, id: u32, node: &str| -> Gateway {
        serde_json::from_value(json!({"apiVersion": "epic-gateway.org/v1alpha1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "acme"},
            "spec": {"template": "tcp", "sharingKey": "k", "listeners": [{"name": "a", "port": 53, "protocol": "UDP"}]},
            "status": {"addresses": ["203.0.113.2"], "tunnels": [{"id": id, "cluster": "c1", "node": node, "gatewayNode": "gw-1"}]}}))
        .unwrap()
    };
    // b's tunnel claims id 1 for another node: the first record (a) keeps it.
    use epic_core::model::GatewayTemplate;
    let sharing: GatewayTemplate =
        serde_json::from_value(json!({"apiVersion": "epic-gateway.org/v1alpha1",
        "kind": "GatewayTemplate", "metadata": {"name": "shared", "namespace": "acme"},
        "spec": {"builtin": "udp", "allowSharing": true}}))
        .unwrap();
    // Without a template that allows sharing, no key is recorded.
    let recorded = recorded_from(
        &[gw("b", 1, "n2"), gw("a", 1, "n1")],
        std::slice::from_ref(&tenant),
        &[],
    );
    assert!(
        recorded
            .allocations
            .iter()
            .all(|a| a.sharing_key.is_none() && a.ports.is_empty())
    );
    let mut a = gw("a", 1, "n1");
    a.spec.template = "shared".into();
    let recorded = recorded_from(&[gw("b", 1, "n2"), a], &[tenant], &[sharing]);
    assert_eq!(recorded.tunnels.len(), 1);
    assert_eq!(recorded.tunnels[0].key.node, "n1");
    assert_eq!(recorded.allocations.len(), 2);
    assert_eq!(recorded.allocations[0].owner, "acme/a");
    assert_eq!(recorded.allocations[0].sharing_key.as_deref(), Some("k"));
    assert_eq!(recorded.allocations[0].ports.len(), 1);
}
