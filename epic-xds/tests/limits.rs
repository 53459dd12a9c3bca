//! What one client may hold of the ADS server, over real gRPC on loopback:
//! a silent client is cut off, a node cannot open streams without bound,
//! and a request cannot name resources without bound.

use std::time::Duration;

use epic_xds::pb::envoy::config::core::v3::Node;
use epic_xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use epic_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use epic_xds::{AdsServer, NodeId, ResourceType, SnapshotCache, StreamLimits};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const NODE: &str = "tenant-a/web/proxy-0";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

fn limits() -> StreamLimits {
    StreamLimits {
        first_request: Duration::from_millis(300),
        streams_per_node: 2,
        names_per_request: 5,
    }
}

/// Serves ADS with [`limits`] on a loopback port; returns its URL.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AdsServer::new(SnapshotCache::new(), |_: &NodeId| true).with_limits(limits());
    tokio::spawn(server.serve(listener, std::future::pending()));
    format!("http://{addr}")
}

fn request(names: usize) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: NODE.into(),
            ..Default::default()
        }),
        type_url: ResourceType::Cluster.type_url().into(),
        resource_names: (0..names).map(|i| format!("c{i}")).collect(),
        ..Default::default()
    }
}

/// Opens a SotW stream; `first` is sent at once if given. Returns the
/// sender (kept to hold the stream open) and the call's outcome.
async fn open(
    url: &str,
    first: Option<DiscoveryRequest>,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<Streaming<DiscoveryResponse>, tonic::Status>,
) {
    let mut client = AggregatedDiscoveryServiceClient::connect(url.to_owned())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    if let Some(first) = first {
        tx.send(first).await.unwrap();
    }
    let call = tokio::time::timeout(
        WAIT,
        client.stream_aggregated_resources(ReceiverStream::new(rx)),
    )
    .await
    .expect("the server answers the call within the wait");
    (tx, call.map(|r| r.into_inner()))
}

#[tokio::test]
async fn a_client_that_sends_no_first_request_is_cut_off() {
    let url = serve().await;
    let (_tx, call) = open(&url, None).await;
    let status = call.expect_err("no stream without a first request");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(
        status.message().contains("no first request within 300ms"),
        "{status}"
    );
}

#[tokio::test]
async fn a_node_opens_at_most_its_limit_of_streams() {
    let url = serve().await;
    let (tx1, first) = open(&url, Some(request(1))).await;
    let (_tx2, second) = open(&url, Some(request(1))).await;
    assert!(first.is_ok() && second.is_ok());
    let (_tx3, third) = open(&url, Some(request(1))).await;
    let status = third.expect_err("a third stream is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("already has 2 open streams"),
        "{status}"
    );
    // Closing one frees its place (the server notices within the wait).
    drop(tx1);
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_tx, again) = open(&url, Some(request(1))).await;
        if again.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place is never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_names_at_most_its_limit_of_resources() {
    let url = serve().await;
    // In the first request: refused at once.
    let (_tx, call) = open(&url, Some(request(6))).await;
    let status = call.expect_err("too many names");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("names 6 resources; at most 5"),
        "{status}"
    );
    // In a later request: the stream ends with the same status.
    let (tx, call) = open(&url, Some(request(5))).await;
    let mut stream = call.expect("five names are allowed");
    tx.send(request(6)).await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends within the wait");
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended}");
}

#[tokio::test]
async fn delta_requests_count_subscribes_and_unsubscribes() {
    let url = serve().await;
    let mut client = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: NODE.into(),
            ..Default::default()
        }),
        type_url: ResourceType::Cluster.type_url().into(),
        resource_names_subscribe: vec!["a".into(), "b".into(), "c".into()],
        resource_names_unsubscribe: vec!["d".into(), "e".into(), "f".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let status = tokio::time::timeout(
        WAIT,
        client.delta_aggregated_resources(ReceiverStream::new(rx)),
    )
    .await
    .unwrap()
    .expect_err("six names");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
}
