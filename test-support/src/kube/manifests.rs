//! Manifests onto a real API server: Helm charts rendered by real Helm, the
//! Gateway API CRDs from their release, and server-side apply of any YAML
//! stream.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};

use super::{Error, gateway_api_crds_dir, repo_root};

/// The field manager of everything the tests apply.
const MANAGER: &str = "epic-test";

/// Renders `chart` (a directory under `charts/`) with real Helm
/// (`charts/render_chart.py`, helm-python-sdk from `cargo xtask setup`) and
/// `values` (JSON); returns its CRDs and manifests as one YAML stream.
pub fn render_chart(chart: &str, values: &str, namespace: &str) -> Result<String, Error> {
    let charts = repo_root().join("charts");
    let out = Command::new("python3")
        .arg(charts.join("render_chart.py"))
        .arg(charts.join(chart))
        .arg(values)
        .arg(namespace)
        .output()
        .map_err(|source| Error::Spawn {
            program: "python3 charts/render_chart.py".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Manifest(format!(
            "rendering chart {chart} with {values}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| Error::Manifest(e.to_string()))
}

/// The Gateway API CRDs of one channel (`standard` or `experimental`) as one
/// YAML stream, from the release `cargo xtask setup` took from its Go module.
pub fn gateway_api_crds(channel: &str) -> Result<String, Error> {
    let dir = gateway_api_crds_dir()?.join(channel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    let mut stream = String::new();
    for path in names {
        stream.push_str(&read(&path)?);
        stream.push_str("\n---\n");
    }
    Ok(stream)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The documents of a YAML stream, empty ones left out.
fn documents(yaml: &str) -> Result<Vec<DynamicObject>, Error> {
    let mut objects = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)
            .map_err(|e| Error::Manifest(format!("document {}: {e}", i + 1)))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value)
            .map_err(|e| Error::Manifest(format!("document {}: {e}", i + 1)))?;
        objects.push(object);
    }
    Ok(objects)
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    }
}

/// Creates namespace `name` unless it exists (as `helm install
/// --create-namespace` does).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.patch(
        name,
        &PatchParams::apply(MANAGER),
        &Patch::Apply(&namespace),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error::Manifest(format!("creating namespace {name}: {e}")))
}

/// Applies every object of `yaml` (server-side apply, field manager
/// `epic-test`): namespaces first, then CRDs (waiting until each is
/// established), then the rest; the namespace of each namespaced object is
/// created if missing. Returns `Kind/name` of each object applied.
pub async fn apply_manifests(client: &Client, yaml: &str) -> Result<Vec<String>, Error> {
    let mut objects = documents(yaml)?;
    objects.sort_by_key(|o| kind_rank(o.types.as_ref().map_or("", |t| t.kind.as_str())));
    let mut applied = Vec::new();
    let mut crds: Vec<String> = Vec::new();
    let mut namespaces: Vec<String> = Vec::new();
    for object in objects {
        let types = object
            .types
            .clone()
            .ok_or_else(|| Error::Manifest("an object without apiVersion/kind".into()))?;
        if types.kind != "CustomResourceDefinition" && !crds.is_empty() {
            for crd in std::mem::take(&mut crds) {
                wait_established(client, &crd).await?;
            }
        }
        let name = object
            .metadata
            .name
            .clone()
            .ok_or_else(|| Error::Manifest(format!("a {} without a name", types.kind)))?;
        let gvk = GroupVersionKind::try_from(&types)
            .map_err(|e| Error::Manifest(format!("{}/{name}: {e}", types.kind)))?;
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| Error::Manifest(format!("discovering {}: {e}", types.kind)))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
                if !namespaces.iter().any(|n| n == namespace) {
                    ensure_namespace(client, namespace).await?;
                    namespaces.push(namespace.to_owned());
                }
                Api::namespaced_with(client.clone(), namespace, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(|e| Error::Manifest(format!("applying {}/{name}: {e}", types.kind)))?;
        if types.kind == "CustomResourceDefinition" {
            crds.push(name.clone());
        }
        applied.push(format!("{}/{name}", types.kind));
    }
    for crd in crds {
        wait_established(client, &crd).await?;
    }
    Ok(applied)
}

/// Waits (at most 30 s) until the CRD `name` is established.
async fn wait_established(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let crd = api
            .get(name)
            .await
            .map_err(|e| Error::Manifest(format!("reading CRD {name}: {e}")))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Manifest(format!(
        "CRD {name} not established after 30 s"
    )))
}

/// The platform objects most tests start from: tenant `tenant` (data-path
/// id `id`) owning the namespace of its name, an `AddressPool` named
/// `public` over `pool`, and one gateway `Node` `gw-1` whose tunnel address
/// is `tunnel_address`. A YAML stream for [`apply_manifests`].
///
/// ```
/// let seed = epic_test_support::kube::tenant_platform("acme", 3, "203.0.113.0/30", "198.51.100.1");
/// assert!(seed.contains("kind: Tenant") && seed.contains("203.0.113.0/30"));
/// ```
pub fn tenant_platform(tenant: &str, id: u32, pool: &str, tunnel_address: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {tenant}}}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec: {{namespace: {tenant}, id: {id}}}
---
apiVersion: epic-gateway.org/v1alpha1
kind: AddressPool
metadata: {{name: public}}
spec: {{addresses: ["{pool}"]}}
---
apiVersion: v1
kind: Node
metadata:
  name: gw-1
  labels: {{epic-gateway.org/gateway-node: "true"}}
  annotations: {{epic-gateway.org/tunnel-address: {tunnel_address}}}
"#
    )
}
