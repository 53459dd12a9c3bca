//! Mutual TLS on the ADS port, over real gRPC on loopback: only a client
//! with a certificate from the server's authority that names exactly the
//! node id it asks for is served; every other client gets nothing.

mod common;

use std::time::Duration;

use common::{assignment, eds_cluster};
use epic_xds::identity::{IssuedCert, SERVER_NAME, XdsAuthority};
use epic_xds::pb::envoy::config::core::v3::Node;
use epic_xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use epic_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use epic_xds::{AdsServer, NodeId, ResourceType, ServerTls, Snapshot, SnapshotCache};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const NODE: &str = "tenant-a/web/proxy-0";
const OTHER: &str = "tenant-b/web/proxy-0";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

/// Serves ADS with mutual TLS under `ca` on a loopback port, a snapshot
/// published for both nodes; returns its address.
async fn serve(ca: &XdsAuthority) -> std::net::SocketAddr {
    let cache = SnapshotCache::new();
    let snapshot = Snapshot::builder()
        .cluster(&eds_cluster("c0"))
        .endpoints(&assignment("c0", &[8080]))
        .build()
        .unwrap();
    cache.set_snapshot(NODE, snapshot.clone());
    cache.set_snapshot(OTHER, snapshot);
    let tls = ServerTls {
        ca_pem: ca.cert_pem(),
        server: ca.issue_server().unwrap(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AdsServer::new(cache, |_: &NodeId| true).with_tls(tls);
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

/// A TLS channel trusting `trust`, presenting `cert` if given.
async fn channel(
    addr: std::net::SocketAddr,
    trust: &XdsAuthority,
    cert: Option<&IssuedCert>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trust.cert_pem()))
        .domain_name(SERVER_NAME);
    if let Some(cert) = cert {
        tls = tls.identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(WAIT)
        .connect()
        .await
}

fn request(node: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    }
}

/// What a SotW stream asking as `node` over `channel` gets first: the
/// resources' type URL, or the refusal.
async fn ask(channel: Channel, node: &str) -> Result<String, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let requests = tokio_stream::iter([request(node)]).chain(tokio_stream::pending());
    let call = tokio::time::timeout(WAIT, client.stream_aggregated_resources(requests))
        .await
        .expect("the server answers within the wait")?;
    let mut inbound = call.into_inner();
    match tokio::time::timeout(WAIT, inbound.next()).await {
        Ok(Some(Ok(response))) => Ok(response.type_url),
        Ok(Some(Err(status))) => Err(status),
        Ok(None) => Err(tonic::Status::cancelled("stream ended")),
        Err(_) => Err(tonic::Status::deadline_exceeded("no response")),
    }
}

#[tokio::test]
async fn a_proxy_with_its_own_identity_is_served() {
    let ca = XdsAuthority::generate().unwrap();
    let addr = serve(&ca).await;
    let cert = ca.issue_proxy(NODE).unwrap();
    let channel = channel(addr, &ca, Some(&cert)).await.unwrap();
    assert_eq!(
        ask(channel, NODE).await.unwrap(),
        ResourceType::Cluster.type_url()
    );
}

#[tokio::test]
async fn a_proxy_asking_as_another_node_gets_nothing() {
    let ca = XdsAuthority::generate().unwrap();
    let addr = serve(&ca).await;
    let cert = ca.issue_proxy(NODE).unwrap();
    // SotW and delta alike.
    let status = ask(channel(addr, &ca, Some(&cert)).await.unwrap(), OTHER)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(
        status.message().contains("tenant-a/web/proxy-0"),
        "{status}"
    );
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel(addr, &ca, Some(&cert)).await.unwrap());
    let delta = DeltaDiscoveryRequest {
        node: Some(Node {
            id: OTHER.into(),
            ..Default::default()
        }),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    };
    let requests = tokio_stream::iter([delta]).chain(tokio_stream::pending());
    let status = tokio::time::timeout(WAIT, client.delta_aggregated_resources(requests))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
}

#[tokio::test]
async fn clients_without_a_certificate_of_the_authority_get_nothing() {
    let ca = XdsAuthority::generate().unwrap();
    let addr = serve(&ca).await;
    // No client certificate; a certificate of another authority: the TLS
    // handshake fails, so no call gets through (the error surfaces on
    // connect or on the first call, as the handshake completes).
    let stranger = XdsAuthority::generate().unwrap();
    let foreign = stranger.issue_proxy(NODE).unwrap();
    for (what, cert) in [("no certificate", None), ("foreign", Some(&foreign))] {
        let outcome = match channel(addr, &ca, cert).await {
            Err(_) => None,
            Ok(channel) => Some(ask(channel, NODE).await),
        };
        assert!(
            !matches!(outcome, Some(Ok(_))),
            "{what}: served {outcome:?}"
        );
        if let Some(Err(status)) = &outcome {
            // The handshake's alert, as a transport error.
            assert!(
                matches!(status.code(), Code::Unknown | Code::Unavailable),
                "{what}: {status:?}"
            );
            assert!(
                format!("{status:?}").contains("alert"),
                "{what}: {status:?}"
            );
        }
    }
    // Plaintext gRPC: no TLS, nothing served.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(WAIT)
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(ask(plain, NODE).await.is_err());
    }
    // A server certificate is no proxy's identity.
    let server_cert = ca.issue_server().unwrap();
    if let Ok(channel) = channel(addr, &ca, Some(&server_cert)).await {
        assert!(ask(channel, NODE).await.is_err());
    }
}
