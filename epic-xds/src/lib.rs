//! `epic-xds`: the xDS control plane of EPIC-RS — a snapshot cache and an
//! Aggregated Discovery Service (state-of-the-world and delta) for Envoy.
//!
//! - [`Snapshot`]s are immutable, consistency-checked sets of clusters,
//!   endpoints, listeners, routes and secrets. Each resource is encoded once
//!   and versioned by its content; share one `Arc<Snapshot>` between nodes to
//!   share the encoded bytes.
//! - [`SnapshotCache`] keeps the current snapshot per node id and a bounded
//!   revision history (default 10) with what each stream ACKed or NACKed,
//!   and optionally rolls back a revision every stream rejected.
//! - [`AdsServer`] serves the cache over gRPC: ordered ADS (clusters,
//!   endpoints, listeners, routes; removals last), nonces and versions per
//!   the xDS protocol, a NACKed version is never resent, nodes are admitted by
//!   a [`NodeAuthorizer`] (`<tenant>/<gateway>/<proxy>`).
//! - With [`AdsServer::with_tls`], only mutually authenticated proxies are
//!   served: each presents a client certificate from the
//!   [`identity::XdsAuthority`] that names exactly its node id.
//! - [`serve_admin`] shows the cache as JSON (`epicctl xds status`).
//!
//! # A minimal control plane
//!
//! One EDS cluster with its endpoints, served to the proxies of one gateway,
//! with the admin endpoint alongside; shut down gracefully at the end.
//!
//! ```
//! use epic_xds::{AdsServer, KnownGateways, Snapshot, SnapshotCache, pb, serve_admin};
//! use pb::envoy::config::cluster::v3::{Cluster, cluster::{ClusterDiscoveryType, DiscoveryType}};
//! use pb::envoy::config::core::v3::{ConfigSource, AggregatedConfigSource, config_source};
//! use pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! // 1. Resources: an EDS cluster fed over ADS, and its (empty) assignment.
//! let ads = ConfigSource {
//!     config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
//!         AggregatedConfigSource {},
//!     )),
//!     ..Default::default()
//! };
//! let cluster = Cluster {
//!     name: "backend".into(),
//!     cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
//!     eds_cluster_config: Some(pb::envoy::config::cluster::v3::cluster::EdsClusterConfig {
//!         eds_config: Some(ads),
//!         service_name: String::new(),
//!     }),
//!     ..Default::default()
//! };
//! let endpoints = ClusterLoadAssignment { cluster_name: "backend".into(), ..Default::default() };
//!
//! // 2. A consistency-checked snapshot, set for a proxy of gateway tenant-a/web.
//! let snapshot = Snapshot::builder().cluster(&cluster).endpoints(&endpoints).build()?;
//! let cache = SnapshotCache::new();
//! let revision = cache.set_snapshot("tenant-a/web/proxy-0", snapshot);
//! assert_eq!(revision, 1);
//!
//! // 3. The ADS server admits only nodes of known gateways.
//! let gateways = KnownGateways::new();
//! gateways.insert("tenant-a", "web");
//! let server = AdsServer::new(cache.clone(), gateways);
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let mut s1 = stopped.clone();
//! let mut s2 = stopped;
//! let ads_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let ads = tokio::spawn(server.serve(ads_listener, async move {
//!     let _ = s1.wait_for(|s| *s).await;
//! }));
//! let admin = tokio::spawn(serve_admin(admin_listener, cache, async move {
//!     let _ = s2.wait_for(|s| *s).await;
//! }));
//!
//! // ... Envoy connects with node id "tenant-a/web/proxy-0" ...
//!
//! // 4. Graceful shutdown: streams end, connections drain.
//! stop.send_replace(true);
//! ads.await??;
//! admin.await??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
#![deny(missing_docs)]

mod admin;
mod cache;
mod delta;
#[cfg(test)]
mod fixtures;
pub mod identity;
mod resource;
mod server;
mod snapshot;
mod sotw;
mod subscription;

pub use admin::serve_admin;
pub use cache::{
    CacheError, CacheOptions, CacheStatus, NackRecord, NodeId, NodeIdError, NodeStatus, Published,
    Revision, RevisionState, SnapshotCache, StreamId, StreamKind, StreamStatus,
};
pub use resource::{EncodedResource, ResourceType, SharedResource};
pub use server::{AdsServer, KnownGateways, NodeAuthorizer, ServerError, ServerTls, StreamLimits};
pub use snapshot::{ResourceSet, Snapshot, SnapshotBuilder, SnapshotError};

/// The Envoy protobuf types (re-exported from `envoy-types`).
pub use envoy_types::pb;
