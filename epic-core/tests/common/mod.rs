//! An in-memory Kubernetes API server for `kube::Client` in tests: it
//! stores objects, answers lists (with label selectors), merge and apply
//! patches and deletes as the API server does, records every request, and
//! can refuse (403) or lack (404) whole collections.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// One stored collection: `<prefix>/<plural>` (prefix `/api/v1` or
/// `/apis/<group>/<version>`), objects by (namespace, name).
type Store = BTreeMap<String, BTreeMap<(String, String), Value>>;

/// The fake API server.
#[derive(Default)]
pub struct FakeApi {
    /// Objects by collection.
    pub store: Mutex<Store>,
    /// Every request: method and path with query.
    pub requests: Mutex<Vec<(String, String)>>,
    /// Collections that answer 403.
    pub forbidden: Mutex<Vec<String>>,
    /// Collections that do not exist (404), like a CRD not installed.
    pub missing: Mutex<Vec<String>>,
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
    pub fn put(&self, collection: &str, obj: Value) {
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

    pub fn get(&self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        self.store
            .lock()
            .unwrap()
            .get(collection)?
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn remove(&self, collection: &str, ns: &str, name: &str) {
        if let Some(c) = self.store.lock().unwrap().get_mut(collection) {
            c.remove(&(ns.to_owned(), name.to_owned()));
        }
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.requests.lock().unwrap().clear();
    }

    pub async fn handle(
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
        if self.missing.lock().unwrap().contains(&t.collection) {
            return Ok(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
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
                    let manager = query_param(&query, "fieldManager").unwrap_or("");
                    assert!(manager.starts_with("epic-"), "field manager {manager:?}");
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

/// A `kube::Client` whose every request goes to `fake`.
pub fn client(fake: &Arc<FakeApi>) -> kube::Client {
    let fake = fake.clone();
    let service = tower::service_fn(move |req| {
        let fake = fake.clone();
        async move { fake.handle(req).await }
    });
    kube::Client::new(service, "default")
}
