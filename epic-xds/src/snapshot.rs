//! Immutable, consistency-checked snapshots of one node's configuration.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

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

/// Diffs a resource set remembers (from the sets that preceded it).
const DIFF_MEMO: usize = 4;

/// One resource type's resources in a snapshot, sorted by name, with the set's version.
#[derive(Default)]
pub struct ResourceSet {
    version: String,
    resources: Vec<SharedResource>,
    /// Diffs from earlier sets, computed once and shared by every stream.
    diffs: Mutex<VecDeque<(Weak<ResourceSet>, Arc<SetDiff>)>>,
}

/// What changed from one resource set to the next, computed once per pair of
/// sets and shared by every stream that moves between them.
#[derive(Debug, Default)]
pub(crate) struct SetDiff {
    /// Resources that are new or whose content changed, sorted by name.
    pub(crate) changed: Vec<SharedResource>,
    /// Resources of the old set that the new one no longer has, sorted by name.
    pub(crate) removed: Vec<SharedResource>,
}

impl fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceSet")
            .field("version", &self.version)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

impl Clone for ResourceSet {
    fn clone(&self) -> Self {
        ResourceSet {
            version: self.version.clone(),
            resources: self.resources.clone(),
            diffs: Mutex::default(),
        }
    }
}

impl PartialEq for ResourceSet {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.resources == other.resources
    }
}

impl ResourceSet {
    /// `resources` must be sorted by name without duplicates.
    fn new(mut resources: Vec<SharedResource>) -> Self {
        resources.shrink_to_fit();
        let mut h = SetHasher::default();
        for r in &resources {
            h.add(r.name());
            h.add(r.version());
        }
        ResourceSet {
            version: h.finish(),
            resources,
            diffs: Mutex::default(),
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
            .binary_search_by(|r| r.name_bytes().cmp(name.as_bytes()))
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

    /// What changed from `old` to `new`.
    ///
    /// Computed once per pair and remembered by `new` (for its last few
    /// predecessors), so a hundred streams moving between the same two sets
    /// share one diff instead of each comparing whole sets.
    pub(crate) fn diff(old: &Arc<ResourceSet>, new: &Arc<ResourceSet>) -> Arc<SetDiff> {
        if Arc::ptr_eq(old, new) || old.version == new.version {
            return Arc::default();
        }
        let mut memo = new.diffs.lock().unwrap_or_else(|p| p.into_inner());
        // A Weak keeps its allocation, so the address cannot be reused while
        // the entry exists: pointer equality identifies the set.
        if let Some((_, d)) = memo.iter().find(|(w, _)| w.as_ptr() == Arc::as_ptr(old)) {
            return d.clone();
        }
        let d = Arc::new(SetDiff::between(&old.resources, &new.resources));
        memo.push_back((Arc::downgrade(old), d.clone()));
        if memo.len() > DIFF_MEMO {
            memo.pop_front();
        }
        d
    }
}

impl SetDiff {
    /// Merges two name-sorted resource lists.
    fn between(old: &[SharedResource], new: &[SharedResource]) -> SetDiff {
        let mut d = SetDiff::default();
        let (mut i, mut j) = (0, 0);
        loop {
            match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) => match o.name_bytes().cmp(n.name_bytes()) {
                    Ordering::Less => {
                        d.removed.push(o.clone());
                        i += 1;
                    }
                    Ordering::Greater => {
                        d.changed.push(n.clone());
                        j += 1;
                    }
                    Ordering::Equal => {
                        if !Arc::ptr_eq(o, n) && !o.same_as(n) {
                            d.changed.push(n.clone());
                        }
                        i += 1;
                        j += 1;
                    }
                },
                (Some(o), None) => {
                    d.removed.push(o.clone());
                    i += 1;
                }
                (None, Some(n)) => {
                    d.changed.push(n.clone());
                    j += 1;
                }
                (None, None) => return d,
            }
        }
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
    /// EDS clusters and the service name they ask for, if not their own name.
    eds_refs: Vec<(SharedResource, Option<String>)>,
    rds_refs: Vec<(String, String)>,
    errors: Vec<SnapshotError>,
}

impl SnapshotBuilder {
    fn push<M: Message>(&mut self, kind: ResourceType, name: &str, m: &M) -> SharedResource {
        let r = Arc::new(EncodedResource::encode(kind, name, m));
        self.sets[kind.index()].push(r.clone());
        r
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
                .filter(|s| !s.is_empty() && *s != cluster.name);
            let encoded = self.push(ResourceType::Cluster, &cluster.name, cluster);
            self.eds_refs.push((encoded, service.map(str::to_string)));
        } else {
            self.push(ResourceType::Cluster, &cluster.name, cluster);
        }
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
            set.sort_unstable_by(|a, b| a.name_bytes().cmp(b.name_bytes()));
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
                .binary_search_by(|r| r.name_bytes().cmp(name.as_bytes()))
                .is_ok()
        };
        let mut wanted: Vec<&str> = Vec::with_capacity(self.eds_refs.len());
        for (cluster, service) in &self.eds_refs {
            let service = service.as_deref().unwrap_or(cluster.name());
            if !has(ResourceType::Endpoint, service) {
                return Err(SnapshotError::MissingEndpoints {
                    cluster: cluster.name().to_string(),
                    service: service.to_string(),
                });
            }
            wanted.push(service);
        }
        wanted.sort_unstable();
        for r in &sets[ResourceType::Endpoint.index()] {
            if wanted.binary_search(&r.name()).is_err() {
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
    fn diffs_are_computed_once_and_shared() {
        let a = Arc::new(
            Snapshot::builder()
                .cluster(&eds_cluster("c1"))
                .endpoints(&cla("c1", 1000))
                .cluster(&eds_cluster("c2"))
                .endpoints(&cla("c2", 1000))
                .build()
                .unwrap(),
        );
        let b = Arc::new(
            Snapshot::builder()
                .cluster(&eds_cluster("c1"))
                .endpoints(&cla("c1", 1001))
                .cluster(&eds_cluster("c3"))
                .endpoints(&cla("c3", 1000))
                .build()
                .unwrap(),
        );
        let eds = |s: &Snapshot| s.shared_set(ResourceType::Endpoint).clone();
        let d = ResourceSet::diff(&eds(&a), &eds(&b));
        let names =
            |v: &[SharedResource]| v.iter().map(|r| r.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&d.changed), ["c1", "c3"]);
        assert_eq!(names(&d.removed), ["c2"]);
        assert!(
            Arc::ptr_eq(&d, &ResourceSet::diff(&eds(&a), &eds(&b))),
            "memoised"
        );
        // Same content, other allocation: nothing changed.
        let again = Arc::new(basic(1).build().unwrap());
        let same = ResourceSet::diff(&eds(&again), &eds(&Arc::new(basic(1).build().unwrap())));
        assert!(same.changed.is_empty() && same.removed.is_empty());
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
