//! criterion benchmarks: snapshot build+encode at scale, and pushing one
//! endpoint change to 100 subscribed gRPC streams in-process (loopback), and
//! the memory of 100 nodes sharing one 10k-cluster snapshot.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
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
use prost::Message;
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

/// The system allocator, counting live heap while `COUNTING` is on: the bytes
/// asked for, and the bytes glibc's malloc really holds for them (chunk
/// header and 16-byte rounding, 32 bytes at least).
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static LIVE_CHUNKS: AtomicIsize = AtomicIsize::new(0);

fn chunk(size: usize) -> isize {
    ((size + 8 + 15) & !15).max(32) as isize
}

fn count(size: usize, sign: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(sign * size as isize, Ordering::Relaxed);
        LIVE_CHUNKS.fetch_add(sign * chunk(size), Ordering::Relaxed);
    }
}

// GlobalAlloc is an unsafe trait; this forwards every call to `System` unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Live heap (asked, held by malloc) while counting.
fn live() -> (isize, isize) {
    (
        LIVE.load(Ordering::Relaxed),
        LIVE_CHUNKS.load(Ordering::Relaxed),
    )
}

fn build_encode(c: &mut Criterion) {
    let clusters: Vec<_> = (0..10_000).map(cluster).collect();
    let cla: Vec<_> = (0..10_000).map(|i| assignment(i, 10, 0)).collect();

    // Memory: one snapshot shared by 100 nodes, against its encoded size.
    // The heap the snapshot retains and what 100 nodes add to it are counted
    // exactly; RSS growth is an upper bound (it keeps the builder's freed
    // garbage).
    COUNTING.store(true, Ordering::Relaxed);
    let rss0 = rss_bytes();
    let heap0 = live();
    let snapshot = Arc::new(build(&clusters, &cla));
    let heap1 = live();
    let rss1 = rss_bytes();
    let cache = SnapshotCache::new();
    for p in 0..100 {
        cache.set_snapshot(&format!("bench/gw/p{p}"), snapshot.clone());
    }
    let heap2 = live();
    let rss2 = rss_bytes();
    COUNTING.store(false, Ordering::Relaxed);
    let encoded = snapshot.encoded_len() as f64;
    let mib = |b: f64| b / 1048576.0;
    let snap = ((heap1.0 - heap0.0) as f64, (heap1.1 - heap0.1) as f64);
    let nodes = ((heap2.0 - heap1.0) as f64, (heap2.1 - heap1.1) as f64);
    eprintln!(
        "memory: 10k clusters + 100k endpoints, encoded {:.2} MiB; snapshot heap {:.2} MiB \
         ({:.2} MiB in malloc chunks); 100 nodes sharing it add {:.1} KiB ({:.0} B/node); \
         total {:.2}x encoded ({:.2}x asked); RSS growth {:.2} MiB = {:.2}x (upper bound; \
         nodes {:.0} KiB)",
        mib(encoded),
        mib(snap.0),
        mib(snap.1),
        nodes.1 / 1024.0,
        nodes.1 / 100.0,
        (snap.1 + nodes.1) / encoded,
        (snap.0 + nodes.0) / encoded,
        mib(rss2.saturating_sub(rss0) as f64),
        rss2.saturating_sub(rss0) as f64 / encoded,
        rss2.saturating_sub(rss1) as f64 / 1024.0,
    );
    drop(cache);
    drop(snapshot);

    let mut g = c.benchmark_group("snapshot");
    g.bench_function("build_encode_10k_clusters_100k_endpoints", |b| {
        b.iter_with_large_drop(|| build(black_box(&clusters), black_box(&cla)))
    });
    g.finish();
}

/// Which change the clients wait for, and how many streams have seen it.
///
/// A stream counts once it received a response carrying `target` (the
/// endpoint type version of the new snapshot) and `cluster-0` in it, so the
/// figure is the time until every one of the streams has the change.
#[derive(Default)]
struct Progress {
    target: std::sync::Mutex<String>,
    reached: AtomicU64,
    notify: Notify,
}

impl Progress {
    fn arm(&self, version: &str) {
        *self.target.lock().unwrap() = version.to_string();
        self.reached.store(0, Ordering::Release);
    }

    fn saw(&self, version: &str, has_cluster_0: bool) {
        if has_cluster_0 && *self.target.lock().unwrap() == version {
            self.reached.fetch_add(1, Ordering::AcqRel);
            self.notify.notify_waiters();
        }
    }

    async fn wait_for(&self, target: u64) {
        loop {
            let n = self.notify.notified();
            if self.reached.load(Ordering::Acquire) >= target {
                return;
            }
            n.await;
        }
    }
}

async fn delta_client(addr: String, node: String, names: Vec<String>, progress: Arc<Progress>) {
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
        let has = resp.resources.iter().any(|r| r.name == "cluster-0");
        progress.saw(&resp.system_version_info, has);
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
}

async fn sotw_client(addr: String, node: String, names: Vec<String>, progress: Arc<Progress>) {
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
        let has = resp.resources.iter().any(|r| {
            ClusterLoadAssignment::decode(r.value.as_slice())
                .is_ok_and(|a| a.cluster_name == "cluster-0")
        });
        progress.saw(&resp.version_info, has);
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
    }
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5); index 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Time from `set_snapshot` (one endpoint of `cluster-0` moved) to every one of
/// 100 streams — one per node, each subscribed to the 100 assignments of a
/// 100-cluster snapshot — having received the change.
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
    let versions: Vec<String> = variants
        .iter()
        .map(|v| v.resources(ResourceType::Endpoint).version().to_string())
        .collect();
    let names: Vec<String> = clusters.iter().map(|c| c.name.clone()).collect();

    let mut g = c.benchmark_group("push");
    for delta in [true, false] {
        let cache = SnapshotCache::new();
        let nodes: Vec<String> = (0..STREAMS).map(|p| format!("bench/gw/p{p}")).collect();
        for n in &nodes {
            cache.set_snapshot(n, variants[0].clone());
        }
        let progress = Arc::new(Progress::default());
        progress.arm(&versions[0]);
        let server = AdsServer::new(cache.clone(), |_: &epic_xds::NodeId| true);
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(server.clone().serve(listener, std::future::pending()));
            for n in &nodes {
                let (a, n, names, p) = (addr.clone(), n.clone(), names.clone(), progress.clone());
                if delta {
                    tokio::spawn(delta_client(a, n, names, p));
                } else {
                    tokio::spawn(sotw_client(a, n, names, p));
                }
            }
            tokio::time::timeout(Duration::from_secs(30), progress.wait_for(STREAMS as u64))
                .await
                .expect("initial sync");
        });
        let mut turn = 0usize;
        let mut samples = Vec::new();
        let cpu_before = cpu_time();
        let mut step = || {
            turn += 1;
            let next = variants[turn % 2].clone();
            progress.arm(&versions[turn % 2]);
            let start = Instant::now();
            rt.block_on(async {
                for n in &nodes {
                    cache.set_snapshot(n, next.clone());
                }
                tokio::time::timeout(Duration::from_secs(10), progress.wait_for(STREAMS as u64))
                    .await
                    .expect("every stream received the change");
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
        let cpu = cpu_time().saturating_sub(cpu_before);
        samples.sort();
        if !samples.is_empty() {
            let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
            eprintln!(
                "{name}: {} pushes, p50 {:?}, p99 {:?}, max {:?}, process CPU {:?} per push",
                samples.len(),
                pct(0.50),
                pct(0.99),
                samples[samples.len() - 1],
                cpu / samples.len() as u32,
            );
        }
        server.close_streams();
    }
    g.finish();
}

criterion_group!(benches, build_encode, push);
criterion_main!(benches);
