//! The ADS server against the real Envoy (1.40, `$EPIC_ENVOY` or `envoy` on PATH).
//!
//! Every test has its own xDS port, Envoy (admin and listeners on ephemeral
//! loopback ports) and temp directory; every wait is bounded.

mod common;

use std::time::Duration;

use common::*;
use epic_xds::{CacheOptions, ResourceType, RevisionState, SnapshotCache};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Waits until `revision` of NODE is acked by some stream.
async fn wait_acked(cache: &SnapshotCache, revision: u64) {
    wait_for(&format!("revision {revision} acked"), 30, || async {
        cache
            .revisions(NODE)
            .iter()
            .any(|r| r.number == revision && r.state == RevisionState::Acked)
            .then_some(())
    })
    .await;
}

/// Serves TCP and HTTP through Envoy; checks config_dump, traffic and the admin JSON.
async fn serves_tcp_and_http(delta: bool) {
    let (tcp_port, _t) = tcp_backend("tcp-a").await;
    let (http_port, _h) = http_backend("http-a").await;
    let cache = SnapshotCache::new();
    let snapshot = gateway(tcp_port, http_port).build().unwrap();
    let rev = cache.set_snapshot(NODE, snapshot.clone());
    let server = XdsServer::start(cache.clone(), 0).await;
    let envoy = Envoy::start(server.port, NODE, delta).await;

    let tcp = envoy.listener_port("tcp").await;
    let http = envoy.listener_port("http").await;
    let (greeting, _conn) = wait_for("tcp through envoy", 20, || tcp_hello(tcp)).await;
    assert_eq!(greeting, "tcp-a");
    let (code, body) = wait_for("http through envoy", 20, || async {
        http_get(http, "/").await.filter(|(c, _)| *c == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "http-a"));

    // config_dump shows our resources at our versions.
    // Delta reports each resource's version, SotW the type's version.
    let dump = envoy.config_dump().await.to_string();
    let version = |kind: ResourceType, name: &str| {
        let set = snapshot.resources(kind);
        if delta {
            set.get(name).unwrap().version()
        } else {
            set.version()
        }
        .to_string()
    };
    for needle in [
        "\"tcp\"".to_string(),
        "\"http_routes\"".to_string(),
        version(ResourceType::Cluster, "tcp"),
        version(ResourceType::Listener, "http"),
        version(ResourceType::Route, "http_routes"),
    ] {
        assert!(dump.contains(&needle), "config_dump lacks {needle}");
    }
    wait_acked(&cache, rev).await;

    // The admin endpoint reports the stream and what it acked.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_port = admin.local_addr().unwrap().port();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(epic_xds::serve_admin(admin, cache.clone(), async {
        let _ = rx.await;
    }));
    let (code, body) = http_get(admin_port, "/status").await.unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let node = &v["nodes"][0];
    assert_eq!(node["node"], NODE);
    assert_eq!(
        node["streams"][0]["kind"],
        if delta { "delta" } else { "sotw" }
    );
    assert_eq!(
        node["streams"][0]["acked"]["cluster"],
        snapshot.resources(ResourceType::Cluster).version()
    );
    assert_eq!(node["revisions"][0]["state"], "acked");
    let _ = stop.send(());
    admin_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_serves_tcp_proxy_and_http_route() {
    serves_tcp_and_http(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_serves_tcp_proxy_and_http_route() {
    serves_tcp_and_http(true).await;
}

/// Moves the TCP endpoint; new connections go to the new backend, the open one survives.
async fn endpoint_change_keeps_connections(delta: bool) {
    let (a, _ta) = tcp_backend("tcp-a").await;
    let (b, _tb) = tcp_backend("tcp-b").await;
    let (http_port, _h) = http_backend("http-a").await;
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, gateway(a, http_port).build().unwrap());
    let server = XdsServer::start(cache.clone(), 0).await;
    let envoy = Envoy::start(server.port, NODE, delta).await;
    let tcp = envoy.listener_port("tcp").await;
    let (greeting, mut open) = wait_for("tcp-a", 20, || tcp_hello(tcp)).await;
    assert_eq!(greeting, "tcp-a");

    let next = gateway(b, http_port).build().unwrap();
    let responses_before = stream_responses(&cache, ResourceType::Cluster);
    let rev = cache.set_snapshot(NODE, next);
    wait_for("traffic on tcp-b", 20, || async {
        tcp_hello(tcp)
            .await
            .filter(|(g, _)| g == "tcp-b")
            .map(|_| ())
    })
    .await;
    wait_acked(&cache, rev).await;
    // Only endpoints changed: no CDS push.
    assert_eq!(
        stream_responses(&cache, ResourceType::Cluster),
        responses_before
    );

    // The connection established before the change still works.
    open.get_mut().write_all(b"still here\n").await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(3), open.read_line(&mut line))
        .await
        .expect("echo on the old connection")
        .unwrap();
    assert_eq!(line, "still here\n");
}

fn stream_responses(cache: &SnapshotCache, kind: ResourceType) -> u64 {
    cache.status().nodes[0]
        .streams
        .iter()
        .map(|s| s.responses.get(&kind).copied().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_endpoint_change_moves_traffic_without_dropping_connections() {
    endpoint_change_keeps_connections(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_endpoint_change_moves_traffic_without_dropping_connections() {
    endpoint_change_keeps_connections(true).await;
}

/// An invalid listener is NACKed: recorded with Envoy's error, not resent, the
/// old config keeps serving; with auto rollback the node returns to the good revision.
async fn nack_is_recorded_not_resent(delta: bool, auto_rollback: bool) {
    let (a, _ta) = tcp_backend("tcp-a").await;
    let (http_port, _h) = http_backend("http-a").await;
    let cache = SnapshotCache::with_options(CacheOptions {
        history: 10,
        auto_rollback,
    });
    let good = cache.set_snapshot(NODE, gateway(a, http_port).build().unwrap());
    let server = XdsServer::start(cache.clone(), 0).await;
    let envoy = Envoy::start(server.port, NODE, delta).await;
    let tcp = envoy.listener_port("tcp").await;
    wait_for("tcp-a", 20, || tcp_hello(tcp)).await;
    wait_acked(&cache, good).await;

    // Schema-invalid for Envoy (tcp_proxy needs a stat_prefix), consistent for us.
    let bad = gateway(a, http_port)
        .listener(&tcp_listener("bad", "tcp", ""))
        .build()
        .unwrap();
    let bad_rev = cache.set_snapshot(NODE, bad);
    let nack = wait_for("NACK recorded", 30, || async {
        cache
            .revisions(NODE)
            .into_iter()
            .find(|r| r.number == bad_rev)
            .and_then(|r| r.nacks.first().cloned())
    })
    .await;
    assert_eq!(nack.resource_type, ResourceType::Listener);
    assert!(
        nack.error.contains("bad"),
        "Envoy's error names the listener: {}",
        nack.error
    );

    if auto_rollback {
        let revs = wait_for("rollback acked", 30, || async {
            let revs = cache.revisions(NODE);
            revs.iter()
                .any(|r| r.rollback_of == Some(good) && r.state == RevisionState::Acked)
                .then_some(revs)
        })
        .await;
        let tainted = revs.iter().find(|r| r.number == bad_rev).unwrap();
        assert_eq!(tainted.state, RevisionState::Tainted);
    } else {
        // Not resent: the LDS response count and Envoy's rejection count stay put.
        let sent = stream_responses(&cache, ResourceType::Listener);
        let rejected_stat = "listener_manager.lds.update_rejected";
        let rejected = envoy.stat(rejected_stat).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(stream_responses(&cache, ResourceType::Listener), sent);
        assert_eq!(envoy.stat(rejected_stat).await, rejected);
        assert_eq!(rejected, Some(1));
        let state = cache
            .revisions(NODE)
            .into_iter()
            .find(|r| r.number == bad_rev)
            .unwrap()
            .state;
        assert_eq!(state, RevisionState::Nacked);
    }
    // Envoy keeps serving the last good config.
    let (greeting, _c) = tcp_hello(tcp).await.expect("tcp still served");
    assert_eq!(greeting, "tcp-a");
    let dump = envoy.config_dump().await.to_string();
    assert!(
        dump.contains("error_state") || auto_rollback,
        "config_dump shows the rejection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nack_is_recorded_and_not_resent() {
    nack_is_recorded_not_resent(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_is_recorded_and_not_resent() {
    nack_is_recorded_not_resent(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_nack_rolls_back_when_enabled() {
    nack_is_recorded_not_resent(false, true).await;
}

/// The server restarts: Envoy keeps serving meanwhile and resyncs on reconnect.
async fn restart_resyncs(delta: bool) {
    let (a, _ta) = tcp_backend("tcp-a").await;
    let (b, _tb) = tcp_backend("tcp-b").await;
    let (http_port, _h) = http_backend("http-a").await;
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, gateway(a, http_port).build().unwrap());
    let server = XdsServer::start(cache, 0).await;
    let port = server.port;
    let envoy = Envoy::start(port, NODE, delta).await;
    let tcp = envoy.listener_port("tcp").await;
    wait_for("tcp-a", 20, || tcp_hello(tcp)).await;

    server.stop().await;
    wait_for("envoy notices", 20, || async {
        (envoy.stat("control_plane.connected_state").await == Some(0)).then_some(())
    })
    .await;
    let (greeting, _c) = tcp_hello(tcp)
        .await
        .expect("served while the control plane is down");
    assert_eq!(greeting, "tcp-a");

    // A fresh server process state: a new cache rebuilt with the current config.
    let cache = SnapshotCache::new();
    let rev = cache.set_snapshot(NODE, gateway(b, http_port).build().unwrap());
    let _server = XdsServer::start(cache.clone(), port).await;
    wait_for("traffic on tcp-b after resync", 30, || async {
        tcp_hello(tcp)
            .await
            .filter(|(g, _)| g == "tcp-b")
            .map(|_| ())
    })
    .await;
    wait_acked(&cache, rev).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_server_restart_resyncs() {
    restart_resyncs(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_server_restart_resyncs() {
    restart_resyncs(true).await;
}

/// A node of an unknown gateway is refused with a clear status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_gateway_is_refused() {
    let cache = SnapshotCache::new();
    let server = XdsServer::start(cache.clone(), 0).await;
    let envoy = Envoy::start(server.port, "tenant-b/other/proxy-0", false).await;
    let log = wait_for("refusal in envoy's log", 20, || async {
        let log = envoy.log();
        log.contains("refused").then_some(log)
    })
    .await;
    // gRPC percent-encodes grpc-message; Envoy logs it as received.
    let log = log.replace("%20", " ").replace("%22", "\"");
    assert!(
        log.contains(
            "closed: 7, node \"tenant-b/other/proxy-0\" refused: tenant \"tenant-b\" has no gateway \"other\""
        ),
        "PERMISSION_DENIED with a clear reason in: {log}"
    );
    assert!(cache.status().nodes.iter().all(|n| n.streams.is_empty()));
}

/// Measured scenario (not a timed assertion): time from `set_snapshot` to the
/// change visible in Envoy's `/config_dump`, at 100 and 1,000 clusters.
/// Run with `cargo test -p epic-xds --test envoy -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints figures"]
async fn measure_set_snapshot_to_config_dump() {
    for delta in [false, true] {
        for clusters in [100usize, 1000] {
            let build = |port: u16| {
                (0..clusters)
                    .fold(epic_xds::Snapshot::builder(), |b, i| {
                        let name = format!("c{i}");
                        b.cluster(&eds_cluster(&name))
                            .endpoints(&assignment(&name, &[port]))
                    })
                    .build()
                    .unwrap()
            };
            let cache = SnapshotCache::new();
            let first = cache.set_snapshot(NODE, build(10_000));
            let server = XdsServer::start(cache.clone(), 0).await;
            let envoy = Envoy::start(server.port, NODE, delta).await;
            wait_acked(&cache, first).await;
            let probe = std::time::Instant::now();
            envoy.admin("/config_dump?include_eds").await.unwrap();
            let dump_cost = probe.elapsed();
            let mut samples = Vec::new();
            for (round, port) in (10_001u16..10_006).enumerate() {
                let next = build(port);
                let needle = format!("\"port_value\":{port}");
                let start = std::time::Instant::now();
                cache.set_snapshot(NODE, next);
                // Poll every 10 ms (bounded: 60 s).
                let deadline = start + Duration::from_secs(60);
                loop {
                    let body = envoy
                        .admin("/config_dump?include_eds")
                        .await
                        .unwrap_or_default();
                    let compact: String = body.split_whitespace().collect();
                    // Every cluster's assignment carries the new port.
                    if compact.matches(&needle).count() >= clusters {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "change not visible in 60s"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let took = start.elapsed();
                if round > 0 {
                    samples.push(took);
                }
            }
            samples.sort();
            println!(
                "set_snapshot -> /config_dump ({}, {clusters} clusters, every endpoint changed): median {:?}, max {:?} (one /config_dump fetch alone: {:?})",
                if delta { "delta" } else { "sotw" },
                samples[samples.len() / 2],
                samples[samples.len() - 1],
                dump_cost
            );
            drop(envoy);
            server.stop().await;
        }
    }
}
