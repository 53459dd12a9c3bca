//! criterion benchmarks: snapshot build+encode at scale, and pushing one
//! endpoint change to 100 subscribed gRPC streams in-process (loopback).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use epic_xds::pb;
use epic_xds::{AdsServer, ResourceType, Snapshot, SnapshotCache};
use pb::envoy::config::cluster::v3::Cluster;
use pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use pb::envoy::config::core::v3::{Address, Node, SocketAddress, address, socket_address};
use pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

fn cluster(i: usize) -> Cluster {
    Cluster {
        name: format!("cluster-{i}"),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        ..Default::default()
    }
}

/// An assignment with `n` endpoints in 198.18.0.0/15; `shift` moves the first one.
fn assignment(i: usize, n: usize, shift: u32) -> ClusterLoadAssignment {
    let lb_endpoints = (0..n)
        .map(|j| {
            let host = (i * n + j) as u32 + shift;
            LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: format!("198.18.{}.{}", (host >> 8) & 0xff, host & 0xff),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                8080 + j as u32 + if j == 0 { shift } else { 0 },
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: format!("cluster-{i}"),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn build(clusters: &[Cluster], cla: &[ClusterLoadAssignment]) -> Snapshot {
    let b = clusters
        .iter()
        .fold(Snapshot::builder(), |b, c| b.cluster(c));
    cla.iter()
        .fold(b, |b, a| b.endpoints(a))
        .build()
        .expect("consistent")
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn build_encode(c: &mut Criterion) {
    let clusters: Vec<_> = (0..10_000).map(cluster).collect();
    let cla: Vec<_> = (0..10_000).map(|i| assignment(i, 10, 0)).collect();

    // Memory: one snapshot shared by 100 nodes, against its encoded size.
    // RSS growth is an upper bound (it includes the builder's freed garbage);
    // the structural estimate counts what the snapshot retains.
    let before = rss_bytes();
    let snapshot = Arc::new(build(&clusters, &cla));
    let cache = SnapshotCache::new();
    for p in 0..100 {
        cache.set_snapshot(&format!("bench/gw/p{p}"), snapshot.clone());
    }
    let grown = rss_bytes().saturating_sub(before);
    let encoded = snapshot.encoded_len();
    let retained: usize = ResourceType::ALL
        .iter()
        .flat_map(|k| snapshot.resources(*k).resources())
        .map(|r| {
            r.encoded_len()
                + r.name().len()
                + size_of::<epic_xds::EncodedResource>()
                + 2 * size_of::<usize>() // Arc counts
                + size_of::<epic_xds::SharedResource>() // slot in the set
        })
        .sum();
    let mib = |b: usize| b as f64 / 1048576.0;
    eprintln!(
        "memory: 10k clusters + 100k endpoints shared by 100 nodes: encoded {:.2} MiB, \
         retained (structural) {:.2} MiB = {:.2}x, RSS growth {:.2} MiB = {:.2}x (upper bound)",
        mib(encoded),
        mib(retained),
        retained as f64 / encoded as f64,
        mib(grown),
        grown as f64 / encoded as f64
    );
    drop(cache);
    drop(snapshot);

    let mut g = c.benchmark_group("snapshot");
    g.bench_function("build_encode_10k_clusters_100k_endpoints", |b| {
        b.iter_with_large_drop(|| build(black_box(&clusters), black_box(&cla)))
    });
    g.finish();
}

/// Counts responses received by all clients.
#[derive(Default)]
struct Received {
    count: AtomicU64,
    notify: Notify,
}

impl Received {
    async fn wait_for(&self, target: u64) {
        loop {
            let n = self.notify.notified();
            if self.count.load(Ordering::Acquire) >= target {
                return;
            }
            n.await;
        }
    }
}

async fn delta_client(addr: String, node: String, names: Vec<String>, rx_count: Arc<Received>) {
    let mut client = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: node,
            ..Default::default()
        }),
        type_url: ResourceType::Endpoint.type_url().into(),
        resource_names_subscribe: names,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(resp)) = inbound.message().await {
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
        rx_count.count.fetch_add(1, Ordering::AcqRel);
        rx_count.notify.notify_waiters();
    }
}

async fn sotw_client(addr: String, node: String, names: Vec<String>, rx_count: Arc<Received>) {
    let mut client = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let req = DiscoveryRequest {
        node: Some(Node {
            id: node,
            ..Default::default()
        }),
        type_url: ResourceType::Endpoint.type_url().into(),
        resource_names: names.clone(),
        ..Default::default()
    };
    tx.send(req).await.unwrap();
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(resp)) = inbound.message().await {
        let ack = DiscoveryRequest {
            type_url: resp.type_url,
            version_info: resp.version_info,
            response_nonce: resp.nonce,
            resource_names: names.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
        rx_count.count.fetch_add(1, Ordering::AcqRel);
        rx_count.notify.notify_waiters();
    }
}

fn push(c: &mut Criterion) {
    const STREAMS: usize = 100;
    const CLUSTERS: usize = 100;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clusters: Vec<_> = (0..CLUSTERS).map(cluster).collect();
    let variants: Vec<Arc<Snapshot>> = (0..2)
        .map(|shift| {
            let mut cla: Vec<_> = (0..CLUSTERS).map(|i| assignment(i, 10, 0)).collect();
            cla[0] = assignment(0, 10, shift);
            Arc::new(build(&clusters, &cla))
        })
        .collect();
    let names: Vec<String> = clusters.iter().map(|c| c.name.clone()).collect();

    let mut g = c.benchmark_group("push");
    for delta in [true, false] {
        let cache = SnapshotCache::new();
        let nodes: Vec<String> = (0..STREAMS).map(|p| format!("bench/gw/p{p}")).collect();
        for n in &nodes {
            cache.set_snapshot(n, variants[0].clone());
        }
        let received = Arc::new(Received::default());
        let server = AdsServer::new(cache.clone(), |_: &epic_xds::NodeId| true);
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(server.clone().serve(listener, std::future::pending()));
            for n in &nodes {
                let (a, n, names, r) = (addr.clone(), n.clone(), names.clone(), received.clone());
                if delta {
                    tokio::spawn(delta_client(a, n, names, r));
                } else {
                    tokio::spawn(sotw_client(a, n, names, r));
                }
            }
            tokio::time::timeout(Duration::from_secs(30), received.wait_for(STREAMS as u64))
                .await
                .expect("initial sync");
        });
        let mut turn = 0usize;
        let mut samples = Vec::new();
        let mut step = || {
            turn += 1;
            let next = variants[turn % 2].clone();
            let target = received.count.load(Ordering::Acquire) + STREAMS as u64;
            let start = Instant::now();
            rt.block_on(async {
                for n in &nodes {
                    cache.set_snapshot(n, next.clone());
                }
                tokio::time::timeout(Duration::from_secs(10), received.wait_for(target))
                    .await
                    .expect("all streams received the change");
            });
            let took = start.elapsed();
            samples.push(took);
            took
        };
        let name = if delta {
            "one_endpoint_change_to_100_delta_streams"
        } else {
            "one_endpoint_change_to_100_sotw_streams"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| step()).sum())
        });
        samples.sort();
        if !samples.is_empty() {
            let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
            eprintln!(
                "{name}: {} pushes, p50 {:?}, p99 {:?}, max {:?}",
                samples.len(),
                pct(0.50),
                pct(0.99),
                samples[samples.len() - 1]
            );
        }
        server.close_streams();
    }
    g.finish();
}

criterion_group!(benches, build_encode, push);
criterion_main!(benches);
