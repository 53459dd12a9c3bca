//! The real control plane: etcd + kube-apiserver from `cargo xtask setup`,
//! two of them in one test, RBAC enforced, CRDs from the chart and from the
//! Gateway API release accepted by the real server.

#![cfg(feature = "kube")]

use std::time::Instant;

use epic_test_support::kube::{
    ControlPlane, Options, apply_manifests, gateway_api_crds, render_chart,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn two_control_planes_with_rbac_and_crds() {
    rt().block_on(async {
        let started = Instant::now();
        let (platform, user) = tokio::join!(
            ControlPlane::start("platform", Options::default()),
            ControlPlane::start("user", Options::default())
        );
        let (platform, user) = (platform.unwrap(), user.unwrap());
        println!("two control planes ready in {:?}", started.elapsed());
        assert_ne!(platform.url(), user.url());

        // The admin may do anything; an identity with no bindings nothing.
        let admin = platform.client().await.unwrap();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.contains(&"kube-system".to_owned()), "{names:?}");
        let nobody = platform.client_as("nobody", &[]).await.unwrap();
        let err = Api::<Namespace>::all(nobody)
            .list(&ListParams::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("forbidden"), "{err}");

        // The platform takes the chart's CRDs, the user cluster the Gateway API's.
        let chart = render_chart(
            "epic-gateway",
            r#"{"networkPolicy": {"xdsFrom": ["198.51.100.0/24"]}}"#,
            "epic-system",
        ).unwrap();
        let applied = apply_manifests(&admin, &chart).await.unwrap();
        assert!(
            applied.contains(&"CustomResourceDefinition/gateways.epic-gateway.org".to_owned()),
            "{applied:?}"
        );
        assert!(
            applied.contains(&"Deployment/epic-gateway-controller".to_owned()),
            "{applied:?}"
        );
        let user_admin = user.client().await.unwrap();
        let crds = gateway_api_crds("experimental").unwrap();
        let applied = apply_manifests(&user_admin, &crds).await.unwrap();
        for kind in [
            "gateways",
            "httproutes",
            "tcproutes",
            "udproutes",
            "referencegrants",
        ] {
            let name = format!("CustomResourceDefinition/{kind}.gateway.networking.k8s.io");
            assert!(applied.contains(&name), "{name} not in {applied:?}");
        }
        // The user cluster's chart, with platform credentials: the real API
        // server accepts every object (server-side apply checks each field
        // against the schema).
        let values = r#"{"clusterId": "c1", "tenantNamespace": "acme", "platformKubeconfigSecret": "platform"}"#;
        let chart = render_chart("epic-cluster", values, "epic-system").unwrap();
        let applied = apply_manifests(&user_admin, &chart).await.unwrap();
        assert!(applied.contains(&"Deployment/epic-cluster-controller".to_owned()), "{applied:?}");
    });
}
