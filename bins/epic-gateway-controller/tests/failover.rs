//! Leader election between two real `epic-gateway-controller` processes on
//! a real API server: one leads, the other stands by; `kill -9` of the
//! leader hands over within the lease time, and the new leader keeps every
//! address, tunnel id and proxy identity (both share one xDS authority).

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use epic_test_support::kube::{
    ControlPlane, Options, apply_manifests, render_chart, tenant_platform,
};
use epic_xds::identity::XdsAuthority;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serde_json::Value;

/// The common tenant platform ([`tenant_platform`]) and a backend set.
fn seed() -> String {
    tenant_platform("acme", 3, "203.0.113.0/28", "198.51.100.1")
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
"#
}

fn gateway(name: &str) -> String {
    format!(
        "apiVersion: epic-gateway.org/v1alpha1\nkind: Gateway\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  template: tcp\n  listeners:\n  - {{name: pg, port: 5432, protocol: TCP, backends: [{{namespace: default, name: db, port: 5432}}]}}\n"
    )
}

/// One controller process, as its pod runs it (the chart's arguments), on
/// loopback ports of its own.
fn controller(plane: &ControlPlane, holder: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_epic-gateway-controller"))
        .env("KUBECONFIG", &plane.admin().kubeconfig)
        .env("POD_NAME", holder)
        .env("POD_NAMESPACE", "epic-system")
        .args([
            "--xds-listen=127.0.0.1:0",
            "--ops-listen=127.0.0.1:0",
            "--lease-seconds=3",
            "--lease-retry-seconds=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the controller binary starts")
}

/// Key `key` of `secret` as text.
fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("the secret has data");
    String::from_utf8(data[key].0.clone()).expect("PEM is text")
}

async fn status(client: &Client, name: &str) -> Option<Value> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "acme",
        &kube::api::ApiResource {
            group: "epic-gateway.org".into(),
            version: "v1alpha1".into(),
            api_version: "epic-gateway.org/v1alpha1".into(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        },
    );
    let object = api.get_opt(name).await.ok()??;
    let status = serde_json::to_value(&object).ok()?["status"].clone();
    (!status["addresses"].as_array()?.is_empty()).then_some(status)
}

async fn holder(client: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), "epic-system")
        .get_opt("epic-gateway-controller")
        .await
        .ok()??;
    lease.spec?.holder_identity
}

async fn wait<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn killing_the_leader_hands_over_without_moving_anything() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let plane = ControlPlane::start("platform", Options::default())
            .await
            .unwrap();
        let client = plane.client().await.unwrap();
        let chart = render_chart(
            "epic-gateway",
            r#"{"networkPolicy": {"xdsFrom": ["198.51.100.0/24"]}}"#,
            "epic-system",
        )
        .unwrap();
        apply_manifests(&client, &chart).await.unwrap();
        apply_manifests(&client, &seed()).await.unwrap();
        apply_manifests(&client, &gateway("web")).await.unwrap();

        let mut a = controller(&plane, "replica-a");
        let mut b = controller(&plane, "replica-b");
        let (web, _) = wait(Duration::from_secs(30), "web programmed", || {
            status(&client, "web")
        })
        .await;
        let (leader, _) = wait(Duration::from_secs(10), "a lease holder", || {
            holder(&client)
        })
        .await;

        // Both replicas share the one xDS authority (whichever created its
        // Secret first), and web's proxy has its identity under it.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "epic-system");
        let ca = secrets.get("epic-xds-ca").await.unwrap();
        let ca = XdsAuthority::from_pem(&text(&ca, "ca.crt"), &text(&ca, "ca.key")).unwrap();
        let identities: Api<Secret> = Api::namespaced(client.clone(), "acme");
        let (web_identity, _) = wait(Duration::from_secs(10), "web's proxy identity", || async {
            identities.get_opt("web-proxy-xds").await.ok().flatten()
        })
        .await;
        assert!(ca.is_identity_of(&text(&web_identity, "proxy-0.crt"), "acme/web/proxy-0"));

        // Kill the leader the hard way: no lease release.
        let started = Instant::now();
        let (dead, alive) = if leader == "replica-a" {
            (&mut a, "replica-b")
        } else {
            (&mut b, "replica-a")
        };
        dead.kill().unwrap();
        dead.wait().unwrap();
        apply_manifests(&client, &gateway("second")).await.unwrap();
        let (second, _) = wait(
            Duration::from_secs(20),
            "the new leader to program a new gateway",
            || status(&client, "second"),
        )
        .await;
        let took = started.elapsed();
        println!("leader killed -> new leader reconciled: {took:?} (lease 3 s)");
        assert_eq!(holder(&client).await.as_deref(), Some(alive));
        assert!(
            took < Duration::from_secs(3 + 1 + 3),
            "hand-over took {took:?}"
        );

        // Nothing moved: web keeps its address and tunnel id.
        let web_after = status(&client, "web").await.unwrap();
        assert_eq!(web_after["addresses"], web["addresses"]);
        assert_eq!(web_after["tunnels"], web["tunnels"]);
        assert_ne!(second["addresses"], web["addresses"]);
        // The new leader kept web's identity and issued second's under the
        // same authority.
        let web_identity_after = identities.get("web-proxy-xds").await.unwrap();
        assert_eq!(
            web_identity_after.metadata.resource_version,
            web_identity.metadata.resource_version
        );
        let second_identity = identities.get("second-proxy-xds").await.unwrap();
        assert!(ca.is_identity_of(
            &text(&second_identity, "proxy-0.crt"),
            "acme/second/proxy-0"
        ));
        for child in [&mut a, &mut b] {
            let _ = child.kill();
            let _ = child.wait();
        }
    });
}
