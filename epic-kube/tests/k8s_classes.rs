//! The cluster controller's GatewayClass status on a real user cluster
//! (kube-apiserver + etcd, the Gateway API CRDs): its own classes get
//! `Accepted` and `SupportedVersion` from the installed bundle version,
//! written once; other controllers' classes are left alone; an
//! unsupported version is refused with `UnsupportedVersion`.

mod common;

use common::{apply, rt, user_cluster};
use epic_kube::classes::{BUNDLE_VERSION_ANNOTATION, GatewayClassStatusSink};
use gateway_api::gatewayclasses::GatewayClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const CLASSES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: epic}
spec: {controllerName: epic-gateway.org/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
"#;

const OURS: &str = "epic-gateway.org/gateway-controller";

/// (type, status, reason, observedGeneration) of each condition.
fn conditions(class: &GatewayClass) -> Vec<(String, String, String, Option<i64>)> {
    class
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status, c.reason, c.observed_generation))
        .collect()
}

#[test]
fn our_gateway_classes_are_accepted_for_a_supported_version_only() {
    rt().block_on(async {
        let plane = user_cluster(true).await;
        let user = plane.client().await.unwrap();
        apply(&user, CLASSES).await;
        let api: Api<GatewayClass> = Api::all(user.clone());
        let list = || async { api.list(&ListParams::default()).await.unwrap().items };

        let mut sink = GatewayClassStatusSink::new(user.clone(), OURS);
        assert_eq!(sink.write(&list().await).await.unwrap(), 1);
        let epic = api.get("epic").await.unwrap();
        let generation = epic.metadata.generation;
        assert_eq!(
            conditions(&epic),
            [
                (
                    "Accepted".into(),
                    "True".into(),
                    "Accepted".into(),
                    generation
                ),
                (
                    "SupportedVersion".into(),
                    "True".into(),
                    "SupportedVersion".into(),
                    generation
                ),
            ]
        );
        let message = &epic.status.as_ref().unwrap().conditions.as_ref().unwrap()[1].message;
        assert!(message.contains("v1.5"), "{message}");
        // Another controller's class keeps the API server's default.
        let other = api.get("other").await.unwrap();
        assert!(
            conditions(&other)
                .iter()
                .all(|(_, status, _, _)| status == "Unknown"),
            "{:?}",
            conditions(&other)
        );
        // Nothing changed: nothing written.
        let version = epic.metadata.resource_version.clone();
        assert_eq!(sink.write(&list().await).await.unwrap(), 0);
        assert_eq!(
            api.get("epic").await.unwrap().metadata.resource_version,
            version
        );

        // CRDs of a release the mirror does not understand: refused.
        let crds: Api<CustomResourceDefinition> = Api::all(user.clone());
        let annotate = json!({"metadata": {"annotations": {BUNDLE_VERSION_ANNOTATION: "v2.0.0"}}});
        crds.patch(
            "gatewayclasses.gateway.networking.k8s.io",
            &PatchParams::default(),
            &Patch::Merge(&annotate),
        )
        .await
        .unwrap();
        let mut sink = GatewayClassStatusSink::new(user.clone(), OURS);
        assert_eq!(sink.write(&list().await).await.unwrap(), 1);
        let epic = api.get("epic").await.unwrap();
        assert_eq!(
            conditions(&epic),
            [
                (
                    "Accepted".into(),
                    "False".into(),
                    "UnsupportedVersion".into(),
                    generation
                ),
                (
                    "SupportedVersion".into(),
                    "False".into(),
                    "UnsupportedVersion".into(),
                    generation
                ),
            ]
        );
        let message = &epic.status.as_ref().unwrap().conditions.as_ref().unwrap()[0].message;
        assert!(message.contains("v2.0.0"), "{message}");
    });
}
