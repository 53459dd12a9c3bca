//! Measured scenario (not criterion: every sample is a real round trip
//! through two real API servers): both controllers, N LoadBalancer
//! Services, and
//!
//! - Service created → `status.loadBalancer.ingress` written (user cluster →
//!   cluster controller → platform → gateway controller → back), p50/p99;
//! - EndpointSlice moved to another node → the platform gateway's status
//!   shows the new tunnel, p50/p99;
//! - API requests per minute while idle, from each API server's own
//!   `apiserver_request_total`, against the same window before the
//!   controllers started (the servers' own background requests);
//! - the gateway controller's RSS with N gateways.
//!
//! `cargo bench -p epic-gateway-controller --bench reconcile`; sizes from
//! `EPIC_BENCH_GATEWAYS` (default `10,1000`), samples from
//! `EPIC_BENCH_SAMPLES` (default 20).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use epic_kube::cluster_controller::{ClusterController, ClusterOptions};
use epic_test_support::kube::{ControlPlane, Options, apply_manifests, render_chart};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const PLATFORM: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: acme}
---
apiVersion: epic-gateway.org/v1alpha1
kind: Tenant
metadata: {name: acme}
spec: {namespace: acme, id: 3, limits: {gateways: 100000, addresses: 100000}}
---
apiVersion: epic-gateway.org/v1alpha1
kind: AddressPool
metadata: {name: public}
spec: {addresses: ["198.18.0.0/16"]}
---
apiVersion: v1
kind: Node
metadata:
  name: gw-1
  labels: {epic-gateway.org/gateway-node: "true"}
  annotations: {epic-gateway.org/tunnel-address: 198.51.100.1}
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {what}: p50 {:?}, p99 {:?}, max {:?} ({} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
        samples.len()
    );
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "epic-gateway.org/gateway",
                 // Endpoints are reached directly (EndpointSlices): no node
                 // ports, and no 2,768-port limit on the Services.
                 "allocateLoadBalancerNodePorts": false,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap()
}

fn slice(name: &str, node: &str, address: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "nodeName": node, "conditions": {"ready": true}}]
    }))
    .unwrap()
}

async fn create_service(user: &Client, name: &str, i: usize) {
    let address = format!("203.0.113.{}", 1 + i % 250);
    Api::<Service>::namespaced(user.clone(), "default")
        .create(&PostParams::default(), &service(name))
        .await
        .unwrap();
    Api::<EndpointSlice>::namespaced(user.clone(), "default")
        .create(&PostParams::default(), &slice(name, "node-a", &address))
        .await
        .unwrap();
}

async fn ingress(user: &Client, name: &str) -> bool {
    Api::<Service>::namespaced(user.clone(), "default")
        .get(name)
        .await
        .ok()
        .and_then(|s| s.status?.load_balancer?.ingress)
        .is_some_and(|i| !i.is_empty())
}

async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn requests_total(client: &Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn requests_per_minute(planes: &[&Client], window: Duration) -> Vec<f64> {
    let mut before = Vec::new();
    for c in planes {
        before.push(requests_total(c).await);
    }
    tokio::time::sleep(window).await;
    let mut out = Vec::new();
    for (c, b) in planes.iter().zip(before) {
        out.push((requests_total(c).await - b) * 60.0 / window.as_secs_f64());
    }
    out
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn gateway_controller(platform: &ControlPlane) -> Child {
    Command::new(env!("CARGO_BIN_EXE_epic-gateway-controller"))
        .env("KUBECONFIG", &platform.admin().kubeconfig)
        .args([
            "--xds-listen=127.0.0.1:0",
            "--ops-listen=127.0.0.1:0",
            "--leader-elect=false",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn scenario(n: usize, samples: usize) {
    println!("{n} gateways:");
    let (platform, user) = tokio::join!(
        ControlPlane::start("platform", Options::default()),
        ControlPlane::start("user", Options::default())
    );
    let (platform, user) = (platform.unwrap(), user.unwrap());
    let admin = platform.client().await.unwrap();
    let tenants = r#"{"networkPolicy": {"xdsFrom": ["198.51.100.0/24"]}, "tenants": [{"namespace": "acme", "group": "epic-tenant:acme"}]}"#;
    apply_manifests(
        &admin,
        &render_chart("epic-gateway", tenants, "epic-system").unwrap(),
    )
    .await
    .unwrap();
    apply_manifests(&admin, PLATFORM).await.unwrap();
    let uc = user.client().await.unwrap();
    for node in ["node-a", "node-b"] {
        apply_manifests(
            &uc,
            &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n"),
        )
        .await
        .unwrap();
    }
    for (node, address) in [("node-a", "192.0.2.21"), ("node-b", "192.0.2.22")] {
        Api::<k8s_openapi::api::core::v1::Node>::all(uc.clone())
            .patch_status(
                node,
                &PatchParams::default(),
                &Patch::Merge(
                    &json!({"status": {"addresses": [{"type": "InternalIP", "address": address}]}}),
                ),
            )
            .await
            .unwrap();
    }
    for i in 0..n {
        create_service(&uc, &format!("svc-{i}"), i).await;
    }
    let idle_before = requests_per_minute(&[&admin, &uc], Duration::from_secs(30)).await;

    let started = Instant::now();
    let mut controller = gateway_controller(&platform);
    let tenant = platform
        .client_as("acme-cluster-1", &["epic-tenant:acme"])
        .await
        .unwrap();
    let cluster = ClusterController::new(uc.clone(), tenant, ClusterOptions::new("c1", "acme"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cluster_task = tokio::spawn(cluster.run(stopped));
    let services: Api<Service> = Api::namespaced(uc.clone(), "default");
    until(Duration::from_secs(1800), async || {
        // A LIST of every Service: once a second, not a load of its own.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let list = services.list(&ListParams::default()).await.unwrap();
        let served = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty())
            })
            .count();
        served >= n
    })
    .await;
    println!("  {n} Services served from cold in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "  gateway controller RSS: {:.1} MiB",
        rss_mib(controller.id())
    );

    let mut created = Vec::new();
    for i in 0..samples {
        let name = format!("new-{i}");
        let start = Instant::now();
        create_service(&uc, &name, i).await;
        until(Duration::from_secs(60), async || ingress(&uc, &name).await).await;
        created.push(start.elapsed());
    }
    summary("Service created -> ingress written back", created);

    let gateways = Api::<epic_model::Gateway>::namespaced(admin.clone(), "acme");
    let mut moved = Vec::new();
    // Each sample moves a different Service's endpoint (at most n).
    for i in 0..samples.min(n) {
        let name = format!("svc-{i}");
        let start = Instant::now();
        Api::<EndpointSlice>::namespaced(uc.clone(), "default")
            .patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"endpoints": [{"addresses": ["203.0.113.200"], "nodeName": "node-b", "conditions": {"ready": true}}]})))
            .await
            .unwrap();
        let platform_name = format!("svc-default-{name}");
        until(Duration::from_secs(60), async || {
            gateways
                .get(&platform_name)
                .await
                .ok()
                .and_then(|g| g.status)
                .is_some_and(|s| s.tunnels.iter().any(|t| t.node == "node-b"))
        })
        .await;
        moved.push(start.elapsed());
    }
    summary("EndpointSlice moved -> platform gateway status", moved);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = requests_per_minute(&[&admin, &uc], Duration::from_secs(30)).await;
    println!(
        "  idle API requests/min with the controllers, less the servers' own: platform {:.0} ({:.0} - {:.0}), user cluster {:.0} ({:.0} - {:.0})",
        idle[0] - idle_before[0],
        idle[0],
        idle_before[0],
        idle[1] - idle_before[1],
        idle[1],
        idle_before[1]
    );
    println!(
        "  gateway controller RSS: {:.1} MiB",
        rss_mib(controller.id())
    );
    stop.send_replace(true);
    let _ = cluster_task.await;
    let _ = controller.kill();
    let _ = controller.wait();
}

fn main() {
    let sizes: Vec<usize> = std::env::var("EPIC_BENCH_GATEWAYS")
        .unwrap_or_else(|_| "10,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let samples = std::env::var("EPIC_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // `cargo bench` passes `--bench`; `cargo test --benches` would run it
    // as a test: it only makes sense measured.
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench -p epic-gateway-controller --bench reconcile`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in sizes {
        rt.block_on(scenario(n, samples));
    }
}
