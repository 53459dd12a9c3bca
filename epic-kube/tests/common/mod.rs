//! Real control planes for the Kubernetes tests: etcd + kube-apiserver from
//! `cargo xtask setup` (see `epic_test_support::kube`), the platform with the
//! CRDs of its Helm chart (rendered by real Helm), the user cluster with or
//! without the Gateway API CRDs, and objects created from YAML.
#![allow(dead_code)]

use epic_test_support::kube::{
    ControlPlane, Options, apply_manifests, gateway_api_crds, render_chart,
};
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::Value;

/// The gateway chart's values for the tests: the ADS port's sources (the
/// chart's NetworkPolicy needs some).
pub const GATEWAY_VALUES: &str = r#"{"networkPolicy": {"xdsFrom": ["198.51.100.0/24"]}}"#;

/// A gateway platform: the chart's CRDs applied (the controller's own
/// objects too; nothing runs them).
pub async fn platform() -> ControlPlane {
    let plane = ControlPlane::start("platform", Options::default())
        .await
        .unwrap();
    let chart = render_chart("epic-gateway", GATEWAY_VALUES, "epic-system").unwrap();
    apply_manifests(&plane.client().await.unwrap(), &chart)
        .await
        .unwrap();
    plane
}

/// A user cluster, with the Gateway API CRDs (experimental channel) or not.
pub async fn user_cluster(gateway_api: bool) -> ControlPlane {
    let plane = ControlPlane::start("user", Options::default())
        .await
        .unwrap();
    if gateway_api {
        let crds = gateway_api_crds("experimental").unwrap();
        apply_manifests(&plane.client().await.unwrap(), &crds)
            .await
            .unwrap();
    }
    plane
}

/// Creates (or updates) the objects of a YAML stream.
pub async fn apply(client: &Client, yaml: &str) {
    apply_manifests(client, yaml).await.unwrap();
}

/// An object as JSON, `None` if it does not exist. `api_version` e.g.
/// `epic-gateway.org/v1alpha1`, `plural` e.g. `gateways`.
pub async fn get(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = kube::api::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

/// A current-thread runtime for one test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Logs of the code under test on stderr (shown for failing tests).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
}
