//! What one reconcile of each controller decided and what its sinks did:
//! the round its sinks read and add to, in order.

use k8s_openapi::api::core::v1::Service;

use crate::Loaded;
use crate::cluster_controller::ClusterReconciled;
use crate::controller::Reconciled;
use crate::proxies::ProxyObjects;
use crate::user::MirrorSource;
use epic_engine::mirror::{Mirrored, UserCluster};
use epic_engine::plan::Plan;

/// One round of the gateway controller.
#[derive(Debug)]
pub struct PlatformRound {
    /// The desired and recorded state the plan was made from.
    pub loaded: Loaded,
    /// The plan (already published to the xDS cache).
    pub plan: Plan,
    /// The proxy objects that exist.
    pub proxies: ProxyObjects,
    /// What the sinks did; each object's failure is one error, the others
    /// go on.
    pub done: Reconciled,
}

/// One round of the cluster controller.
#[derive(Debug)]
pub struct ClusterRound {
    /// The user cluster as read, without the Services being deleted.
    pub cluster: UserCluster,
    /// Services being deleted: their platform gateways go, then their
    /// finalizers.
    pub deleting: Vec<Service>,
    /// The mirror the engine computed from `cluster`.
    pub wanted: Mirrored,
    /// What this cluster mirrored before, with the platform's status.
    pub mirrored: MirrorSource,
    /// What the sinks did.
    pub done: ClusterReconciled,
}
