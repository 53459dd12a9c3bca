//! The ADS gRPC server (SotW and delta) over tonic.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::cache::{NodeId, SnapshotCache, StreamId, StreamKind};
use crate::delta::DeltaStream;
use crate::sotw::SotwStream;

/// Responses buffered per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 16;

/// What one client may hold of the server: a stream that breaks a limit is
/// refused or ended with `RESOURCE_EXHAUSTED` / `DEADLINE_EXCEEDED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// How long a client may take to send a stream's first request.
    pub first_request: Duration,
    /// Open streams per node id (a proxy needs one; a restart briefly two).
    pub streams_per_node: usize,
    /// Resource names one request may name (SotW `resource_names`; delta
    /// `resource_names_subscribe` plus `resource_names_unsubscribe`).
    pub names_per_request: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            first_request: Duration::from_secs(10),
            streams_per_node: 4,
            names_per_request: 10_000,
        }
    }
}

/// The resource names a request carries.
trait NamedRequest {
    fn names(&self) -> usize;
}

impl NamedRequest for DiscoveryRequest {
    fn names(&self) -> usize {
        self.resource_names.len()
    }
}

impl NamedRequest for DeltaDiscoveryRequest {
    fn names(&self) -> usize {
        self.resource_names_subscribe.len() + self.resource_names_unsubscribe.len()
    }
}

/// `Err` if `req` names more resources than `limits` allow.
fn check_names(req: &impl NamedRequest, limits: &StreamLimits) -> Result<(), Status> {
    let n = req.names();
    if n > limits.names_per_request {
        return Err(Status::resource_exhausted(format!(
            "a request names {n} resources; at most {} are allowed",
            limits.names_per_request
        )));
    }
    Ok(())
}

/// Decides whether a node may connect.
pub trait NodeAuthorizer: Send + Sync + 'static {
    /// `Ok` if the node maps to a tenant and gateway this server serves, else why not.
    fn authorize(&self, node: &NodeId) -> Result<(), String>;
}

impl<F: Fn(&NodeId) -> bool + Send + Sync + 'static> NodeAuthorizer for F {
    fn authorize(&self, node: &NodeId) -> Result<(), String> {
        if self(node) {
            Ok(())
        } else {
            Err(format!(
                "tenant {:?} gateway {:?} is not served here",
                node.tenant, node.gateway
            ))
        }
    }
}

/// The set of (tenant, gateway) pairs a server accepts nodes for.
#[derive(Debug, Default, Clone)]
pub struct KnownGateways(Arc<RwLock<HashSet<(String, String)>>>);

impl KnownGateways {
    /// An empty set: every node is refused until its gateway is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts nodes of this tenant's gateway.
    pub fn insert(&self, tenant: &str, gateway: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.into(), gateway.into()));
    }

    /// Stops accepting new streams from this gateway's nodes.
    pub fn remove(&self, tenant: &str, gateway: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.to_string(), gateway.to_string()));
    }
}

impl NodeAuthorizer for KnownGateways {
    fn authorize(&self, node: &NodeId) -> Result<(), String> {
        let known = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(node.tenant.clone(), node.gateway.clone()));
        if known {
            Ok(())
        } else {
            Err(format!(
                "tenant {:?} has no gateway {:?} on this control plane",
                node.tenant, node.gateway
            ))
        }
    }
}

/// Errors from running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The gRPC transport failed (or its TLS configuration was refused).
    #[error("xDS gRPC transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Mutual TLS on the ADS port: the server's certificate and the authority
/// every client certificate must chain to ([`crate::identity`]).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The authority's certificate (PEM).
    pub ca_pem: String,
    /// The server's certificate and key.
    pub server: crate::identity::IssuedCert,
}

/// The client certificates of a request (`None` without TLS).
type PeerCerts = Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>;

/// The Aggregated Discovery Service, serving a [`SnapshotCache`].
#[derive(Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    authorizer: Arc<dyn NodeAuthorizer>,
    shutdown: watch::Sender<bool>,
    limits: StreamLimits,
    tls: Option<Arc<ServerTls>>,
}

impl fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdsServer")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl AdsServer {
    /// A server for `cache`, admitting nodes that `authorizer` accepts.
    pub fn new(cache: SnapshotCache, authorizer: impl NodeAuthorizer) -> Self {
        AdsServer {
            cache,
            authorizer: Arc::new(authorizer),
            shutdown: watch::channel(false).0,
            limits: StreamLimits::default(),
            tls: None,
        }
    }

    /// This server with mutual TLS: [`AdsServer::serve`] accepts only
    /// clients whose certificate chains to `tls.ca_pem`, and a stream is
    /// admitted only if that certificate's identity
    /// ([`crate::identity::node_ids_of`]) is the node id of its first
    /// request; any other client gets `PERMISSION_DENIED` and nothing else.
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// This server with other `limits` (default: [`StreamLimits::default`]).
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The cache this server serves.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// The tonic service, to mount on your own `tonic::transport::Server`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(16 << 20)
    }

    /// Ends every open stream (clients reconnect elsewhere or later).
    pub fn close_streams(&self) {
        self.shutdown.send_replace(true);
    }

    /// Serves ADS on `listener` until `signal` completes, then closes every
    /// stream and waits for connections to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let this = self.clone();
        let signal = async move {
            signal.await;
            tracing::info!("xDS server shutting down");
            this.close_streams();
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            use tonic::transport::{Certificate, Identity, ServerTlsConfig};
            let config = ServerTlsConfig::new()
                .identity(Identity::from_pem(
                    &tls.server.cert_pem,
                    &tls.server.key_pem,
                ))
                .client_ca_root(Certificate::from_pem(&tls.ca_pem));
            builder = builder.tls_config(config)?;
        }
        builder
            .serve_with_incoming_shutdown(
                self.into_service(),
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await?;
        Ok(())
    }

    /// Waits (within the first-request limit) for a stream's first request.
    async fn first<R: NamedRequest>(&self, inbound: &mut Streaming<R>) -> Result<R, Status> {
        let limit = self.limits.first_request;
        let first = match tokio::time::timeout(limit, inbound.next()).await {
            Ok(Some(r)) => r?,
            Ok(None) => return Err(Status::cancelled("stream closed before its first request")),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no first request within {limit:?}"
                )));
            }
        };
        check_names(&first, &self.limits)?;
        Ok(first)
    }

    /// Registers a stream of `node` within the per-node limit.
    fn register(&self, node: &str, kind: StreamKind) -> Result<StreamId, Status> {
        let limit = self.limits.streams_per_node;
        self.cache
            .try_register_stream(node, kind, limit)
            .ok_or_else(|| {
                tracing::warn!(node, limit, "xDS stream refused: too many streams");
                Status::resource_exhausted(format!(
                    "node {node:?} already has {limit} open streams"
                ))
            })
    }

    /// Checks the first request's node id: well-formed, the identity of
    /// the client certificate (with TLS), and accepted by the authorizer.
    fn admit(&self, node: Option<&str>, peer: &PeerCerts) -> Result<String, Status> {
        let id = node.unwrap_or_default();
        let parsed: NodeId = id
            .parse()
            .map_err(|e: crate::cache::NodeIdError| Status::invalid_argument(e.to_string()))?;
        if self.tls.is_some() {
            self.check_identity(id, peer)?;
        }
        self.authorizer.authorize(&parsed).map_err(|why| {
            tracing::warn!(node = id, %why, "xDS stream refused");
            Status::permission_denied(format!("node {id:?} refused: {why}"))
        })?;
        Ok(id.to_string())
    }

    /// `Ok` if the client's certificate is the identity of node `id`.
    fn check_identity(&self, id: &str, peer: &PeerCerts) -> Result<(), Status> {
        let refuse = |why: String| {
            tracing::warn!(node = id, %why, "xDS stream refused");
            Status::permission_denied(format!("node {id:?} refused: {why}"))
        };
        let cert = peer
            .as_ref()
            .and_then(|certs| certs.first())
            .ok_or_else(|| refuse("no client certificate".into()))?;
        let names = crate::identity::node_ids_of(cert)
            .map_err(|e| refuse(format!("client certificate: {e}")))?;
        if names.iter().any(|n| n == id) {
            Ok(())
        } else {
            Err(refuse(format!(
                "the client certificate is the identity of {names:?}, not of this node"
            )))
        }
    }
}

type Outbound<R> = mpsc::Sender<Result<R, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.peer_certs();
        let mut inbound = request.into_inner();
        let first = self.first(&mut inbound).await?;
        let node = self.admit(first.node.as_ref().map(|n| n.id.as_str()), &peer)?;
        let id = self.register(&node, StreamKind::Sotw)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("ads", node = %node, kind = "sotw");
        let stream = Opened { node, id, first };
        tokio::spawn(run_sotw(self.clone(), stream, inbound, tx).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request.peer_certs();
        let mut inbound = request.into_inner();
        let first = self.first(&mut inbound).await?;
        let node = self.admit(first.node.as_ref().map(|n| n.id.as_str()), &peer)?;
        let id = self.register(&node, StreamKind::Delta)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("ads", node = %node, kind = "delta");
        let stream = Opened { node, id, first };
        tokio::spawn(run_delta(self.clone(), stream, inbound, tx).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// An admitted, registered stream and its first request.
struct Opened<R> {
    node: String,
    id: StreamId,
    first: R,
}

/// Generates the stream task for one protocol flavour.
macro_rules! stream_task {
    ($name:ident, $core:ty, $req:ty, $resp:ty) => {
        async fn $name(
            server: AdsServer,
            stream: Opened<$req>,
            mut inbound: Streaming<$req>,
            tx: Outbound<$resp>,
        ) {
            let Opened { node, id, first } = stream;
            let cache = server.cache.clone();
            tracing::info!(stream = id, "stream opened");
            let mut snapshots = cache.subscribe(&node);
            let mut shutdown = server.shutdown.subscribe();
            let mut core = <$core>::default();
            let current = snapshots.borrow_and_update().clone();
            let mut ok = true;
            if let Some(p) = current {
                ok = deliver(&cache, &node, id, core.on_snapshot(p), &tx).await;
            }
            if ok {
                ok = deliver(&cache, &node, id, core.on_request(first), &tx).await;
            }
            while ok && !*shutdown.borrow_and_update() {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(Status::unavailable("control plane shutting down"))).await;
                        break;
                    }
                    changed = snapshots.changed() => {
                        if changed.is_err() { break; }
                        let p = snapshots.borrow_and_update().clone();
                        if let Some(p) = p {
                            ok = deliver(&cache, &node, id, core.on_snapshot(p), &tx).await;
                        }
                    }
                    msg = inbound.next() => match msg {
                        Some(Ok(req)) => {
                            if let Err(status) = check_names(&req, &server.limits) {
                                tracing::warn!(%status, "stream ended");
                                let _ = tx.send(Err(status)).await;
                                break;
                            }
                            ok = deliver(&cache, &node, id, core.on_request(req), &tx).await;
                        }
                        Some(Err(status)) => {
                            tracing::debug!(%status, "stream error");
                            break;
                        }
                        None => break,
                    },
                }
            }
            cache.unregister_stream(&node, id);
            tracing::info!(stream = id, "stream closed");
        }
    };
}

stream_task!(run_sotw, SotwStream, DiscoveryRequest, DiscoveryResponse);
stream_task!(
    run_delta,
    DeltaStream,
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse
);

/// Records events and sends responses; `false` once the client is gone.
async fn deliver<R>(
    cache: &SnapshotCache,
    node: &str,
    id: u64,
    out: crate::sotw::Output<R>,
    tx: &Outbound<R>,
) -> bool {
    cache.record_all(node, id, &out.events);
    for r in out.responses {
        if tx.send(Ok(r)).await.is_err() {
            return false;
        }
    }
    true
}
