//! Immutable, consistency-checked snapshots of one node's configuration.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::{Message, Name};

use crate::resource::{EncodedResource, ResourceType, SetHasher, SharedResource};

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A resource has an empty name.
    #[error("a {kind} resource has an empty name")]
    EmptyName {
        /// Type of the resource.
        kind: ResourceType,
    },
    /// Two resources of one type share a name.
    #[error("duplicate {kind} resource {name:?}")]
    DuplicateResource {
        /// Type of the resources.
        kind: ResourceType,
        /// The repeated name.
        name: String,
    },
    /// An EDS cluster has no `ClusterLoadAssignment`.
    #[error("EDS cluster {cluster:?} has no ClusterLoadAssignment named {service:?}")]
    MissingEndpoints {
        /// The cluster.
        cluster: String,
        /// The EDS service name it asks for.
        service: String,
    },
    /// A `ClusterLoadAssignment` that no EDS cluster asks for.
    #[error("ClusterLoadAssignment {name:?} is not used by any EDS cluster")]
    OrphanEndpoints {
        /// The assignment's cluster name.
        name: String,
    },
    /// A listener refers to a route configuration the snapshot does not hold.
    #[error("listener {listener:?} refers to missing RouteConfiguration {route:?}")]
    MissingRoute {
        /// The listener.
        listener: String,
        /// The RDS route configuration name.
        route: String,
    },
    /// A listener's HTTP connection manager config does not decode.
    #[error("listener {listener:?} has an undecodable HttpConnectionManager: {reason}")]
    InvalidFilterConfig {
        /// The listener.
        listener: String,
        /// The decode error.
        reason: String,
    },
}

/// One resource type's resources in a snapshot, sorted by name, with the set's version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    version: String,
    resources: Vec<SharedResource>,
}

impl ResourceSet {
    /// `resources` must be sorted by name without duplicates.
    fn new(resources: Vec<SharedResource>) -> Self {
        let mut h = SetHasher::default();
        for r in &resources {
            h.add(r.name());
            h.add(r.version());
        }
        ResourceSet {
            version: h.finish(),
            resources,
        }
    }

    /// Version of the whole set: a hash of names and resource versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Resources, sorted by name.
    pub fn resources(&self) -> &[SharedResource] {
        &self.resources
    }

    /// Looks a resource up by name.
    pub fn get(&self, name: &str) -> Option<&SharedResource> {
        self.resources
            .binary_search_by(|r| r.name().cmp(name))
            .ok()
            .map(|i| &self.resources[i])
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// An immutable, consistent set of resources for one node (or many nodes sharing it).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    version: String,
    sets: [Arc<ResourceSet>; 5],
}

impl Snapshot {
    /// Starts building a snapshot.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// Version of the snapshot: a hash of the per-type versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The resources of one type.
    pub fn resources(&self, kind: ResourceType) -> &ResourceSet {
        &self.sets[kind.index()]
    }

    /// The shared resource set of one type.
    pub(crate) fn shared_set(&self, kind: ResourceType) -> &Arc<ResourceSet> {
        &self.sets[kind.index()]
    }

    /// Total encoded size of all resources, in bytes.
    pub fn encoded_len(&self) -> usize {
        self.sets
            .iter()
            .flat_map(|s| s.resources.iter())
            .map(|r| r.encoded_len())
            .sum()
    }
}

/// Collects typed resources, encodes each once, and checks consistency on [`build`](Self::build).
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    sets: [Vec<SharedResource>; 5],
    eds_refs: Vec<(String, String)>,
    rds_refs: Vec<(String, String)>,
    errors: Vec<SnapshotError>,
}

impl SnapshotBuilder {
    fn push<M: Message>(&mut self, kind: ResourceType, name: &str, m: &M) {
        self.sets[kind.index()].push(Arc::new(EncodedResource::encode(kind, name, m)));
    }

    /// Adds a cluster; EDS clusters must get a matching [`endpoints`](Self::endpoints).
    pub fn cluster(mut self, cluster: &Cluster) -> Self {
        if cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        {
            let service = cluster
                .eds_cluster_config
                .as_ref()
                .map(|c| c.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&cluster.name);
            self.eds_refs
                .push((cluster.name.clone(), service.to_string()));
        }
        self.push(ResourceType::Cluster, &cluster.name, cluster);
        self
    }

    /// Adds a `ClusterLoadAssignment`, named by its `cluster_name`.
    pub fn endpoints(mut self, assignment: &ClusterLoadAssignment) -> Self {
        self.push(ResourceType::Endpoint, &assignment.cluster_name, assignment);
        self
    }

    /// Adds a listener; RDS names its HTTP connection managers (in filter chains or
    /// `api_listener`) use must be added too.
    pub fn listener(mut self, listener: &Listener) -> Self {
        let chains = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.iter());
        let filters = chains
            .flat_map(|c| c.filters.iter())
            .filter_map(|f| match &f.config_type {
                Some(ConfigType::TypedConfig(any)) => Some(any),
                _ => None,
            });
        // gRPC clients carry their connection manager in `api_listener`.
        let api = listener
            .api_listener
            .as_ref()
            .and_then(|a| a.api_listener.as_ref());
        for any in filters.chain(api) {
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            match HttpConnectionManager::decode(any.value.as_slice()) {
                Ok(hcm) => {
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        self.rds_refs
                            .push((listener.name.clone(), rds.route_config_name));
                    }
                }
                Err(e) => self.errors.push(SnapshotError::InvalidFilterConfig {
                    listener: listener.name.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        self.push(ResourceType::Listener, &listener.name, listener);
        self
    }

    /// Adds a route configuration.
    pub fn route(mut self, route: &RouteConfiguration) -> Self {
        self.push(ResourceType::Route, &route.name, route);
        self
    }

    /// Adds a TLS secret (SDS).
    pub fn secret(mut self, secret: &Secret) -> Self {
        self.push(ResourceType::Secret, &secret.name, secret);
        self
    }

    /// Checks consistency and freezes the snapshot.
    ///
    /// Every EDS cluster must have an assignment and every assignment an EDS
    /// cluster; every RDS name a listener uses must exist; names are non-empty
    /// and unique per type. The first problem found is returned.
    pub fn build(self) -> Result<Snapshot, SnapshotError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        let mut sets = self.sets;
        for kind in ResourceType::ALL {
            let set = &mut sets[kind.index()];
            set.sort_unstable_by(|a, b| a.name().cmp(b.name()));
            if set.first().is_some_and(|r| r.name().is_empty()) {
                return Err(SnapshotError::EmptyName { kind });
            }
            if let Some(w) = set.windows(2).find(|w| w[0].name() == w[1].name()) {
                return Err(SnapshotError::DuplicateResource {
                    kind,
                    name: w[0].name().to_string(),
                });
            }
        }
        let has = |kind: ResourceType, name: &str| {
            sets[kind.index()]
                .binary_search_by(|r| r.name().cmp(name))
                .is_ok()
        };
        for (cluster, service) in &self.eds_refs {
            if !has(ResourceType::Endpoint, service) {
                return Err(SnapshotError::MissingEndpoints {
                    cluster: cluster.clone(),
                    service: service.clone(),
                });
            }
        }
        let wanted: std::collections::HashSet<&str> =
            self.eds_refs.iter().map(|(_, s)| s.as_str()).collect();
        for r in &sets[ResourceType::Endpoint.index()] {
            if !wanted.contains(r.name()) {
                return Err(SnapshotError::OrphanEndpoints {
                    name: r.name().to_string(),
                });
            }
        }
        for (listener, route) in &self.rds_refs {
            if !has(ResourceType::Route, route) {
                return Err(SnapshotError::MissingRoute {
                    listener: listener.clone(),
                    route: route.clone(),
                });
            }
        }
        let sets = sets.map(|m| Arc::new(ResourceSet::new(m)));
        let mut h = SetHasher::default();
        for s in &sets {
            h.add(s.version());
        }
        Ok(Snapshot {
            version: h.finish(),
            sets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn consistent_snapshot_builds_with_stable_versions() {
        let a = basic(1).build().unwrap();
        let b = basic(1).build().unwrap();
        let c = basic(2).build().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        // Only the endpoint set changed.
        for kind in [
            ResourceType::Cluster,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
            assert_eq!(a.resources(kind).version(), c.resources(kind).version());
        }
        assert_ne!(
            a.resources(ResourceType::Endpoint).version(),
            c.resources(ResourceType::Endpoint).version()
        );
        assert_eq!(a.resources(ResourceType::Cluster).len(), 1);
        assert!(a.encoded_len() > 0);
    }

    #[test]
    fn missing_endpoints_are_refused() {
        let err = Snapshot::builder()
            .cluster(&eds_cluster("c1"))
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            SnapshotError::MissingEndpoints {
                cluster: "c1".into(),
                service: "c1".into()
            }
        );
    }

    #[test]
    fn eds_service_name_is_honoured() {
        let mut c = eds_cluster("c1");
        c.eds_cluster_config.as_mut().unwrap().service_name = "svc".into();
        assert!(
            Snapshot::builder()
                .cluster(&c)
                .endpoints(&cla("svc", 1))
                .build()
                .is_ok()
        );
        let err = Snapshot::builder()
            .cluster(&c)
            .endpoints(&cla("c1", 1))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, SnapshotError::MissingEndpoints { ref service, .. } if service == "svc")
        );
    }

    #[test]
    fn orphan_endpoints_are_refused() {
        let err = Snapshot::builder()
            .endpoints(&cla("ghost", 1))
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            SnapshotError::OrphanEndpoints {
                name: "ghost".into()
            }
        );
    }

    #[test]
    fn missing_route_is_refused() {
        let err = Snapshot::builder()
            .listener(&http_listener("l1", "nope"))
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            SnapshotError::MissingRoute {
                listener: "l1".into(),
                route: "nope".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "listener \"l1\" refers to missing RouteConfiguration \"nope\""
        );
    }

    #[test]
    fn duplicates_and_empty_names_are_refused() {
        let err = basic(1).route(&route("r1")).build().unwrap_err();
        assert_eq!(
            err,
            SnapshotError::DuplicateResource {
                kind: ResourceType::Route,
                name: "r1".into()
            }
        );
        let err = Snapshot::builder().route(&route("")).build().unwrap_err();
        assert_eq!(
            err,
            SnapshotError::EmptyName {
                kind: ResourceType::Route
            }
        );
    }

    #[test]
    fn api_listener_route_names_are_checked() {
        use envoy_types::pb::envoy::config::listener::v3::ApiListener;
        let mut l = http_listener("grpc", "r1");
        let hcm = match l.filter_chains.remove(0).filters.remove(0).config_type {
            Some(ConfigType::TypedConfig(any)) => any,
            _ => unreachable!(),
        };
        l.api_listener = Some(ApiListener {
            api_listener: Some(hcm),
        });
        let err = Snapshot::builder().listener(&l).build().unwrap_err();
        assert!(matches!(err, SnapshotError::MissingRoute { ref route, .. } if route == "r1"));
        assert!(
            Snapshot::builder()
                .listener(&l)
                .route(&route("r1"))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn undecodable_connection_manager_is_refused() {
        let mut l = http_listener("l1", "r1");
        if let Some(ConfigType::TypedConfig(any)) = &mut l.filter_chains[0].filters[0].config_type {
            any.value = vec![0xff, 0xff, 0xff];
        }
        let err = Snapshot::builder().listener(&l).build().unwrap_err();
        assert!(
            matches!(err, SnapshotError::InvalidFilterConfig { ref listener, .. } if listener == "l1")
        );
    }
}
