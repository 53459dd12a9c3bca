//! The Kubernetes source and sinks through a real `kube::Client` over an
//! in-memory API server that stores objects, answers lists (with label
//! selectors), merge and apply patches and deletes as the API server does,
//! and records every request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use epic_core::k8s::{ProxySettings, apply_proxies, load, recorded_from, write_statuses};
use epic_core::plan::plan;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// One stored collection: `<prefix>/<plural>` (prefix `/api/v1` or
/// `/apis/<group>/<version>`), objects by (namespace, name).
type Store = BTreeMap<String, BTreeMap<(String, String), Value>>;

#[derive(Default)]
struct FakeApi {
    store: Mutex<Store>,
    requests: Mutex<Vec<(String, String)>>,
    forbidden: Mutex<Vec<String>>,
}

/// A parsed request path.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (prefix, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("/api/v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("/apis/{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some((*name).to_owned()), false),
        [plural, name, "status"] => (*plural, Some((*name).to_owned()), true),
        _ => return None,
    };
    Some(Target {
        collection: format!("{prefix}/{plural}"),
        namespace,
        name,
        status,
    })
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn decode(s: &str) -> String {
    s.replace("%3D", "=")
        .replace("%2F", "/")
        .replace("%2C", ",")
}

fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn response(code: u16, body: Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<Full<Bytes>> {
    response(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl FakeApi {
    fn put(&self, collection: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.store
            .lock()
            .unwrap()
            .entry(collection.to_owned())
            .or_default()
            .insert((ns, name), obj);
    }

    fn get(&self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        self.store
            .lock()
            .unwrap()
            .get(collection)?
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    fn remove(&self, collection: &str, ns: &str, name: &str) {
        if let Some(c) = self.store.lock().unwrap().get_mut(collection) {
            c.remove(&(ns.to_owned(), name.to_owned()));
        }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }

    async fn handle(
        &self,
        req: http::Request<kube::client::Body>,
    ) -> Result<http::Response<Full<Bytes>>, Infallible> {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let query = decode(req.uri().query().unwrap_or(""));
        self.requests
            .lock()
            .unwrap()
            .push((method.clone(), format!("{path}?{query}")));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let Some(t) = parse_path(&path) else {
            return Ok(status(404, "NotFound", &format!("no route {path}")));
        };
        if self.forbidden.lock().unwrap().contains(&t.collection) {
            return Ok(status(403, "Forbidden", "forbidden by the test"));
        }
        let ns = t.namespace.clone().unwrap_or_default();
        Ok(match (method.as_str(), &t.name) {
            ("GET", None) => {
                let selector = query_param(&query, "labelSelector").unwrap_or("");
                let items: Vec<Value> = self
                    .store
                    .lock()
                    .unwrap()
                    .get(&t.collection)
                    .map(|c| {
                        c.iter()
                            .filter(|((n, _), _)| t.namespace.is_none() || *n == ns)
                            .map(|(_, v)| v.clone())
                            .filter(|v| matches_selector(v, selector))
                            .collect()
                    })
                    .unwrap_or_default();
                response(
                    200,
                    json!({"apiVersion": "v1", "kind": "List",
                                     "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", Some(name)) => match self.get(&t.collection, &ns, name) {
                Some(obj) => response(200, obj),
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            ("PATCH", Some(name)) => {
                let patch: Value = serde_json::from_slice(&body).unwrap();
                if t.status {
                    let Some(mut obj) = self.get(&t.collection, &ns, name) else {
                        return Ok(status(404, "NotFound", &format!("{name} not found")));
                    };
                    obj["status"] = patch["status"].clone();
                    self.put(&t.collection, obj.clone());
                    response(200, obj)
                } else {
                    // Server-side apply: the applied object replaces ours.
                    assert_eq!(
                        query_param(&query, "fieldManager"),
                        Some("epic-gateway-controller")
                    );
                    assert_eq!(query_param(&query, "force"), Some("true"));
                    self.put(&t.collection, patch.clone());
                    response(200, patch)
                }
            }
            ("DELETE", Some(name)) => match self.get(&t.collection, &ns, name) {
                Some(obj) => {
                    self.remove(&t.collection, &ns, name);
                    response(200, obj)
                }
                None => status(404, "NotFound", &format!("{name} not found")),
            },
            _ => status(405, "MethodNotAllowed", &method),
        })
    }
}

const CRD: &str = "/apis/epic-gateway.org/v1alpha1";

fn client(fake: &Arc<FakeApi>) -> kube::Client {
    let fake = fake.clone();
    let service = tower::service_fn(move |req| {
        let fake = fake.clone();
        async move { fake.handle(req).await }
    });
    kube::Client::new(service, "default")
}

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
    let patched = write_statuses(&client, &plan, loaded.gateways())
        .await
        .unwrap();
    let (applied, deleted) =
        apply_proxies(&client, &plan, &loaded.inputs, &ProxySettings::default())
            .await
            .unwrap();
    (patched, applied, deleted)
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
    let recorded = recorded_from(&[gw("b", 1, "n2"), gw("a", 1, "n1")], &[tenant]);
    assert_eq!(recorded.tunnels.len(), 1);
    assert_eq!(recorded.tunnels[0].key.node, "n1");
    assert_eq!(recorded.allocations.len(), 2);
    assert_eq!(recorded.allocations[0].owner, "acme/a");
    assert_eq!(recorded.allocations[0].sharing_key.as_deref(), Some("k"));
    assert_eq!(recorded.allocations[0].ports.len(), 1);
}
