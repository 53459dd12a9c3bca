//! The Kubernetes source and sinks against a real kube-apiserver + etcd
//! (`epic_test_support::kube`), the platform's CRDs from its Helm chart.

mod common;

use common::{apply, get, platform, rt};
use epic_engine::plan::plan;
use epic_kube::xds_identity::authority;
use epic_kube::{ProxyObjects, ProxySettings, apply_proxies, load, recorded_from, write_statuses};
use epic_test_support::kube::tenant_platform;
use epic_xds::identity::XdsAuthority;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

const V: &str = "epic-gateway.org/v1alpha1";

/// The common tenant platform ([`tenant_platform`]), a backend set and a
/// node that is not a gateway node.
fn seed() -> String {
    tenant_platform("acme", 3, "203.0.113.0/30", "198.51.100.1")
        + r#"---
apiVersion: epic-gateway.org/v1alpha1
kind: BackendSet
metadata: {name: db, namespace: acme}
spec:
  cluster: c1
  namespace: default
  service: db
  ports: [{port: 5432, endpoints: [{address: 198.18.0.9, port: 5432, node: n1}]}]
  nodes: [{name: n1, address: 192.0.2.9}]
---
apiVersion: v1
kind: Node
metadata: {name: worker}
"#
}

fn gateway(name: &str) -> String {
    format!(
        r#"
apiVersion: epic-gateway.org/v1alpha1
kind: Gateway
metadata: {{name: {name}, namespace: acme}}
spec:
  template: tcp
  listeners:
  - name: pg
    port: 5432
    protocol: TCP
    backends: [{{namespace: default, name: db, port: 5432}}]
"#
    )
}

async fn gw(client: &Client, name: &str) -> Option<Value> {
    get(client, V, "Gateway", "gateways", Some("acme"), name).await
}

async fn statefulset(client: &Client, name: &str) -> Option<Value> {
    get(
        client,
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        Some("acme"),
        name,
    )
    .await
}

async fn configmap(client: &Client, name: &str) -> Option<Value> {
    get(client, "v1", "ConfigMap", "configmaps", Some("acme"), name).await
}

async fn secret(client: &Client, name: &str) -> Option<Secret> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "acme");
    secrets.get_opt(name).await.unwrap()
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

async fn reconcile(client: &Client) -> (usize, Vec<String>, Vec<String>) {
    reconcile_with(client, None).await
}

/// A reconcile whose proxies get xDS identities from `authority`, if given.
async fn reconcile_with(
    client: &Client,
    authority: Option<&XdsAuthority>,
) -> (usize, Vec<String>, Vec<String>) {
    let loaded = load(client).await.unwrap();
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
    let statuses = write_statuses(client, &plan, loaded.gateways()).await;
    let existing = ProxyObjects::list(client).await.unwrap();
    let proxies = apply_proxies(
        client,
        &plan,
        &loaded.inputs,
        &ProxySettings::default(),
        &existing,
        authority,
    )
    .await;
    assert!(
        statuses.failed.is_empty() && proxies.failed.is_empty(),
        "{:?} {:?}",
        statuses.failed,
        proxies.failed
    );
    (statuses.done.len(), proxies.done, proxies.deleted)
}

/// A platform with the seed objects and gateway `web`.
async fn seeded() -> (epic_test_support::kube::ControlPlane, Client) {
    let plane = platform().await;
    let client = plane.client().await.unwrap();
    apply(&client, &seed()).await;
    apply(&client, &gateway("web")).await;
    (plane, client)
}

#[test]
fn reconciles_status_and_proxies_and_keeps_them_across_restarts() {
    rt().block_on(async {
        let (_plane, client) = seeded().await;
        // The authority is created once in the controller's namespace and
        // loaded, the same, by every later call (another replica, a restart).
        let ca = authority(&client, "acme").await.unwrap();
        assert_eq!(authority(&client, "acme").await.unwrap().cert_pem(), ca.cert_pem());
        let reconcile = |client: &Client| {
            let (client, ca) = (client.clone(), &ca);
            async move { reconcile_with(&client, Some(ca)).await }
        };
        let (patched, applied, deleted) = reconcile(&client).await;
        assert_eq!((patched, applied.as_slice(), deleted.len()), (1, &["acme/web-proxy".to_owned()][..], 0));

        // The status holds the address, the tunnel and the proxy.
        let web = gw(&client, "web").await.unwrap();
        let st = &web["status"];
        assert_eq!(st["addresses"], json!(["203.0.113.0"]));
        assert_eq!(st["proxies"], json!(["acme/web/proxy-0"]));
        let tunnel_id = st["tunnels"][0]["id"].as_u64().unwrap();
        assert_ne!(tunnel_id, 0);
        assert_eq!(st["tunnels"], json!([{"id": tunnel_id, "cluster": "c1", "node": "n1", "gatewayNode": "gw-1", "gatewayAddress": "198.51.100.1", "tenantId": 3, "endpoints": [{"address": "198.18.0.9", "port": 5432, "protocol": "TCP"}]}]));
        let programmed = st["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Programmed").unwrap();
        assert_eq!(programmed["status"], "True");
        // Kubernetes condition conventions: the generation it describes and
        // when it last changed.
        assert_eq!(programmed["observedGeneration"], web["metadata"]["generation"]);
        assert!(programmed["lastTransitionTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{programmed}");

        // The proxy: host network on gateway nodes, node id from the ordinal,
        // bootstrap pointing at the ADS service; applied by the controller.
        let set = statefulset(&client, "web-proxy").await.unwrap();
        assert_eq!(set["spec"]["replicas"], 1);
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["nodeSelector"]["epic-gateway.org/gateway-node"], "true");
        // No shell: Envoy with its arguments, the ordinal from the
        // StatefulSet's pod-index label through the downward API.
        let envoy = &pod["containers"][0];
        assert_eq!(envoy["command"], json!(["envoy"]));
        assert_eq!(
            envoy["args"],
            json!(["-c", "/etc/epic/bootstrap/bootstrap-$(POD_INDEX).json", "--service-cluster", "acme/web",
                   "--service-node", "acme/web/proxy-$(POD_INDEX)", "--disable-hot-restart"])
        );
        assert_eq!(envoy["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.labels['apps.kubernetes.io/pod-index']");
        // Least privilege: no API token, no escalation, only the
        // capabilities for low ports and SO_MARK.
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(envoy["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            envoy["securityContext"]["capabilities"],
            json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "NET_RAW"]})
        );
        // Replicas on distinct nodes (host-network ports would collide).
        let anti = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(anti["labelSelector"]["matchLabels"], json!({"epic-gateway.org/gateway": "web"}));
        let managers: Vec<&str> = set["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert_eq!(managers, ["epic-gateway-controller"]);
        // Owned by the gateway: the garbage collector removes it with it.
        let owner = &set["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Gateway"), Some("web")));
        assert_eq!(owner["uid"], web["metadata"]["uid"]);
        assert_eq!(owner["controller"], true);
        let map = configmap(&client, "web-proxy").await.unwrap();
        let bootstrap: Value = serde_json::from_str(map["data"]["bootstrap-0.json"].as_str().unwrap()).unwrap();
        let xds = &bootstrap["static_resources"]["clusters"][0];
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"],
            "epic-gateway-controller.epic-system.svc"
        );
        // Mutual TLS to the ADS server with proxy 0's own identity, from the
        // gateway's identity Secret, mounted read-only, 0400.
        let tls = &xds["transport_socket"]["typed_config"]["common_tls_context"];
        assert_eq!(tls["tls_certificates"][0]["certificate_chain"]["filename"], "/etc/epic/xds/proxy-0.crt");
        assert_eq!(tls["tls_certificates"][0]["private_key"]["filename"], "/etc/epic/xds/proxy-0.key");
        assert_eq!(tls["validation_context"]["trusted_ca"]["filename"], "/etc/epic/xds/ca.crt");
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "xds-identity").unwrap();
        assert_eq!(volume["secret"], json!({"secretName": "web-proxy-xds", "defaultMode": 0o400}));
        let identities = secret(&client, "web-proxy-xds").await.unwrap();
        let owner = &identities.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(Some(owner.uid.as_str()), web["metadata"]["uid"].as_str());
        assert_eq!(secret_text(&identities, "ca.crt"), ca.cert_pem());
        let cert = secret_text(&identities, "proxy-0.crt");
        assert!(ca.is_identity_of(&cert, "acme/web/proxy-0"));
        assert!(secret_text(&identities, "proxy-0.key").contains("PRIVATE KEY"));
        // The key is in no status.
        assert!(!web.to_string().contains("PRIVATE KEY"));

        // Idempotent: a second pass patches no status, and the gateway's
        // resourceVersion stays.
        let version = web["metadata"]["resourceVersion"].clone();
        let (patched, _, _) = reconcile(&client).await;
        assert_eq!(patched, 0);
        assert_eq!(gw(&client, "web").await.unwrap()["metadata"]["resourceVersion"], version);
        // The identities are kept, not issued again.
        let kept = secret(&client, "web-proxy-xds").await.unwrap();
        assert_eq!(kept.metadata.resource_version, identities.metadata.resource_version);

        // A restarted controller rebuilds the records from status: a new
        // gateway that sorts first does not take web's address or tunnel.
        apply(&client, &gateway("aaa")).await;
        let (patched, applied, _) = reconcile(&client).await;
        assert_eq!(patched, 1, "only the new gateway's status changes");
        assert_eq!(applied, ["acme/aaa-proxy"], "web's unchanged proxy is not applied again");
        assert_eq!(gw(&client, "aaa").await.unwrap()["status"]["addresses"], json!(["203.0.113.1"]));
        assert_eq!(gw(&client, "web").await.unwrap()["status"]["addresses"], json!(["203.0.113.0"]));

        // A gateway that goes away takes its proxy with it.
        let gateways: Api<epic_model::Gateway> = Api::namespaced(client.clone(), "acme");
        gateways.delete("web", &DeleteParams::default()).await.unwrap();
        let (_, applied, deleted) = reconcile(&client).await;
        assert!(applied.is_empty(), "{applied:?}");
        assert_eq!(deleted, ["acme/web-proxy"]);
        assert!(statefulset(&client, "web-proxy").await.is_none());
        assert!(configmap(&client, "web-proxy").await.is_none());
        assert!(secret(&client, "web-proxy-xds").await.is_none());
    });
}

#[test]
fn a_gateway_that_stops_rendering_keeps_its_proxies() {
    rt().block_on(async {
        let (_plane, client) = seeded().await;
        reconcile(&client).await;
        // The gateway's template now fails to render: the gateway is still
        // accepted, not programmed (Invalid), and keeps serving its last
        // configuration, so its proxy and its address stay.
        apply(
            &client,
            r#"
apiVersion: epic-gateway.org/v1alpha1
kind: GatewayTemplate
metadata: {name: broken, namespace: acme}
spec: {envoy: '{{ fail("broken on purpose") }}'}
"#,
        )
        .await;
        apply(
            &client,
            &gateway("web").replace("template: tcp", "template: broken"),
        )
        .await;
        let (patched, applied, deleted) = reconcile(&client).await;
        assert_eq!(patched, 1);
        assert!(
            applied.is_empty() && deleted.is_empty(),
            "{applied:?} {deleted:?}"
        );
        let web = gw(&client, "web").await.unwrap();
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
        assert!(statefulset(&client, "web-proxy").await.is_some());
    });
}

#[test]
fn api_errors_say_what_was_being_done() {
    rt().block_on(async {
        let plane = platform().await;
        // An identity without any role: the real RBAC refuses the first list.
        let nobody = plane.client_as("nobody", &[]).await.unwrap();
        let err = load(&nobody).await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("list Tenant: "), "{text}");
        assert!(text.contains("forbidden"), "{text}");
    });
}

#[test]
fn records_come_from_status_one_id_per_tunnel() {
    use epic_model::{Gateway, Tenant};
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
    use epic_model::GatewayTemplate;
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
