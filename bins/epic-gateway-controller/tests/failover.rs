//! Leader election between two real `epic-gateway-controller` processes on
//! a real API server: one leads, the other stands by; `kill -9` of the
//! leader hands over within the lease time, and the new leader keeps every
//! address and tunnel id.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use epic_test_support::kube::{
    ControlPlane, Options, apply_manifests, render_chart, tenant_platform,
};
use k8s_openapi::api::coordination::v1::Lease;
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
        for child in [&mut a, &mut b] {
            let _ = child.kill();
            let _ = child.wait();
        }
    });
}
