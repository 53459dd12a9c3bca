//! A second, independent xDS client: gRPC's own (Python `grpcio`), which asks
//! for named resources LDS → RDS → CDS → EDS, resolves `xds:///echo` through
//! the epic-xds server and calls a backend.
//!
//! Needs `python3` (or `$EPIC_PYTHON`) with the `grpcio` package; the test
//! installs nothing and fails with a clear message if it is missing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use epic_xds::pb;
use epic_xds::{Snapshot, SnapshotCache};
use pb::envoy::config::listener::v3::{ApiListener, Listener};
use pb::envoy::config::route::v3::RouteConfiguration;
use pb::envoy::extensions::filters::http::router::v3::Router;
use pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};

const GRPC_NODE: &str = "tenant-a/web/grpc-0";

fn python() -> String {
    std::env::var("EPIC_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The resources gRPC needs for `xds:///echo`.
fn echo_snapshot(port: u16) -> Snapshot {
    let hcm = HttpConnectionManager {
        stat_prefix: "echo".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: "echo_routes".into(),
        })),
        http_filters: vec![HttpFilter {
            name: "router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: "echo".into(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    };
    let mut route: RouteConfiguration = route_to("echo_routes", "echo_cluster");
    route.virtual_hosts[0].domains = vec!["echo".into()];
    Snapshot::builder()
        .cluster(&eds_cluster("echo_cluster"))
        .endpoints(&assignment("echo_cluster", &[port]))
        .listener(&listener)
        .route(&route)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_xds_client_resolves_through_the_server() {
    let has_grpcio = Command::new(python())
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_grpcio,
        "this test needs gRPC's Python xDS client: `pip install grpcio` (or set EPIC_PYTHON)"
    );
    let cache = SnapshotCache::new();
    let server = XdsServer::start(cache.clone(), 0).await;
    let dir = TempDir::new("grpc");
    let bootstrap = dir.0.join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        serde_json::json!({
            "xds_servers": [{
                "server_uri": format!("127.0.0.1:{}", server.port),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"]
            }],
            "node": {"id": GRPC_NODE, "cluster": "epic-test"}
        })
        .to_string(),
    )
    .unwrap();
    // The package directory at run time (cargo sets it): a test binary kept
    // from a build in another clone must not look in that clone.
    let script = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("tests/grpc_xds_client.py");
    let mut child = Command::new(python())
        .arg(script)
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let Some(port) = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse::<u16>().ok())
    else {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "backend port, got {line:?}; the gRPC client exited with {}, stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let revision = cache.set_snapshot(GRPC_NODE, echo_snapshot(port));
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let reply = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).map(|_| line)
    });
    let reply = tokio::time::timeout(Duration::from_secs(30), reply)
        .await
        .map_err(|_| {
            let _ = child.kill();
            "no reply from the gRPC client within 30s"
        })
        .unwrap()
        .unwrap()
        .unwrap();
    let status = child.wait_with_output().unwrap();
    assert_eq!(
        reply.trim(),
        "REPLY echo:hello",
        "gRPC client stderr: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    // gRPC asked for each type by name, and applied the revision.
    let node = cache
        .status()
        .nodes
        .into_iter()
        .find(|n| n.node == GRPC_NODE)
        .unwrap();
    let rev = node
        .revisions
        .iter()
        .find(|r| r.number == revision)
        .unwrap();
    assert!(!rev.acked_by.is_empty(), "revision acked: {rev:?}");
}
