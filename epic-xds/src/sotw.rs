//! Sans-IO state machine of one state-of-the-world ADS stream.
//!
//! CDS and LDS responses carry every resource the client wants; EDS, RDS and
//! SDS responses carry only what changed (or was newly requested), as the
//! xDS protocol allows for those types ("grouping resources into responses").

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;

use crate::cache::{Published, StreamEvent};
use crate::resource::{ResourceType, SharedResource};
use crate::snapshot::ResourceSet;
use crate::subscription::Subscription;

/// Suffix of the version of a transitional CDS response that still holds removed clusters.
const TRANSITION: &str = "+keep";

#[derive(Debug, Default)]
struct TypeState {
    /// What the client wants and was sent.
    sub: Subscription,
    /// The resource names of the last request, as sent.
    requested: Vec<String>,
    /// A subscription change that needs an answer.
    dirty: bool,
    /// Names the last subscription change added (for types sent by resource).
    added: Vec<String>,
    last_nonce: String,
    sent_version: Option<String>,
    sent_revision: u64,
    sent_set: Option<Arc<ResourceSet>>,
    acked_version: Option<String>,
    nacked_version: Option<String>,
}

impl TypeState {
    /// Types sent by resource: what `set` has that the client wants and was
    /// not sent; only the shared diff from the base set when in step.
    fn changes(&mut self, set: &Arc<ResourceSet>, everything: bool) -> Vec<Any> {
        let added = std::mem::take(&mut self.added);
        if everything || self.sub.base.is_none() {
            let (updates, _) = self.sub.reconcile(set);
            return updates.iter().map(|r| r.to_any()).collect();
        }
        let (mut updates, _) = self.sub.advance(set);
        for name in &added {
            if let Some(r) = set.get(name)
                && self.sub.record(r)
            {
                updates.push(r.clone());
            }
        }
        updates.iter().map(|r| r.to_any()).collect()
    }

    /// The type moved to `version` with nothing for this client: once it has
    /// applied what it was sent, it runs `version`.
    fn nothing_to_send(&mut self, version: &str, revision: u64) {
        if self.sent_version.is_some() && self.nacked_version != self.sent_version {
            if self.acked_version == self.sent_version {
                self.acked_version = Some(version.to_string());
            }
            self.sent_version = Some(version.to_string());
            self.sent_revision = revision;
        }
    }
}

/// What the shell must do after feeding the state machine.
#[derive(Debug, Default)]
pub(crate) struct Output<R> {
    /// Responses to send, in order.
    pub responses: Vec<R>,
    /// Facts to record in the cache.
    pub events: Vec<StreamEvent>,
}

/// One SotW ADS stream: subscriptions, nonces, versions sent, acked and nacked.
#[derive(Debug, Default)]
pub(crate) struct SotwStream {
    nonce: u64,
    published: Option<Published>,
    last_applied: Option<u64>,
    types: [TypeState; 5],
}

impl SotwStream {
    /// Handles one request from the client.
    pub(crate) fn on_request(&mut self, req: DiscoveryRequest) -> Output<DiscoveryResponse> {
        let mut out = Output::default();
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "request for an unserved type ignored");
            return out;
        };
        let t = &mut self.types[kind.index()];
        if !req.response_nonce.is_empty() {
            if req.response_nonce != t.last_nonce {
                tracing::debug!(%kind, nonce = %req.response_nonce, "stale nonce ignored");
                return out;
            }
            let version = t.sent_version.clone().unwrap_or_default();
            if let Some(err) = req.error_detail {
                tracing::warn!(%kind, %version, error = %err.message, "NACK");
                t.nacked_version = Some(version.clone());
                out.events.push(StreamEvent::Nack {
                    kind,
                    version,
                    revision: t.sent_revision,
                    error: err.message,
                });
            } else {
                t.acked_version = Some(version.clone());
                out.events.push(StreamEvent::Ack {
                    kind,
                    version,
                    revision: t.sent_revision,
                });
            }
        }
        // Clients repeat their whole subscription in every ACK: the same list
        // as last time is the same subscription, without building a set.
        if !(t.sub.subscribed && req.resource_names == t.requested) {
            let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
            let wildcard = names.contains("*") || (names.is_empty() && kind.wildcard_by_default());
            t.requested = req.resource_names;
            if let Some(added) = t.sub.update_sotw(kind, names, wildcard) {
                t.added = added;
                t.dirty = true;
            }
        }
        if self.types[kind.index()].dirty
            && let Some(p) = self.published.clone()
        {
            let set = p.snapshot.shared_set(kind).clone();
            if kind.complete_in_sotw() {
                self.respond(kind, &set, None, p.revision, &mut out);
            } else {
                let t = &mut self.types[kind.index()];
                let everything = t.sub.base.is_none();
                let resources = t.changes(&set, everything);
                self.respond_with(kind, &set, resources, p.revision, &mut out);
            }
        }
        self.check_applied(&mut out);
        out
    }

    /// Handles a new snapshot for the node: ordered pushes, removals last.
    pub(crate) fn on_snapshot(&mut self, p: Published) -> Output<DiscoveryResponse> {
        let mut out = Output::default();
        self.published = Some(p.clone());
        let needs = |t: &TypeState, set: &ResourceSet| {
            t.sub.subscribed
                && (t.dirty
                    || (t.sent_version.as_deref() != Some(set.version())
                        && t.nacked_version.as_deref() != Some(set.version())))
        };
        let sets: Vec<Arc<ResourceSet>> = ResourceType::ALL
            .iter()
            .map(|k| p.snapshot.shared_set(*k).clone())
            .collect();
        let later_changes = [ResourceType::Listener, ResourceType::Route]
            .iter()
            .any(|k| needs(&self.types[k.index()], &sets[k.index()]));
        let mut final_cds = None;
        for kind in ResourceType::ALL {
            let set = &sets[kind.index()];
            if !needs(&self.types[kind.index()], set) {
                continue;
            }
            if !kind.complete_in_sotw() {
                let t = &mut self.types[kind.index()];
                let resources = t.changes(set, false);
                if resources.is_empty() && !t.dirty {
                    t.nothing_to_send(set.version(), p.revision);
                } else {
                    self.respond_with(kind, set, resources, p.revision, &mut out);
                }
                continue;
            }
            let t = &self.types[kind.index()];
            let removed: Vec<_> = match &t.sent_set {
                Some(old) if kind == ResourceType::Cluster && later_changes => old
                    .resources()
                    .iter()
                    .filter(|r| set.get(r.name()).is_none())
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            if removed.is_empty() {
                self.respond(kind, set, None, p.revision, &mut out);
            } else {
                // Make before break: keep removed clusters until listeners and
                // routes that may still use them have been replaced.
                self.respond(kind, set, Some(&removed), p.revision, &mut out);
                final_cds = Some(set.clone());
            }
        }
        if let Some(set) = final_cds {
            self.respond(ResourceType::Cluster, &set, None, p.revision, &mut out);
        }
        self.check_applied(&mut out);
        out
    }

    /// Sends every resource of `set` the client wants (CDS, LDS), plus `keep`.
    fn respond(
        &mut self,
        kind: ResourceType,
        set: &Arc<ResourceSet>,
        keep: Option<&[SharedResource]>,
        revision: u64,
        out: &mut Output<DiscoveryResponse>,
    ) {
        let t = &self.types[kind.index()];
        let mut resources: Vec<_> = t.sub.wanted(set).iter().map(|r| r.to_any()).collect();
        let mut version = set.version().to_string();
        if let Some(keep) = keep {
            resources.extend(keep.iter().map(|r| r.to_any()));
            version.push_str(TRANSITION);
        }
        self.send(kind, set, version, resources, revision, out);
    }

    /// Sends `resources` of `set` (EDS, RDS, SDS: what changed or was requested).
    fn respond_with(
        &mut self,
        kind: ResourceType,
        set: &Arc<ResourceSet>,
        resources: Vec<Any>,
        revision: u64,
        out: &mut Output<DiscoveryResponse>,
    ) {
        let version = set.version().to_string();
        self.send(kind, set, version, resources, revision, out);
    }

    fn send(
        &mut self,
        kind: ResourceType,
        set: &Arc<ResourceSet>,
        version: String,
        resources: Vec<Any>,
        revision: u64,
        out: &mut Output<DiscoveryResponse>,
    ) {
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let t = &mut self.types[kind.index()];
        t.dirty = false;
        t.last_nonce = nonce.clone();
        t.sent_version = Some(version.clone());
        t.sent_revision = revision;
        t.sent_set = Some(set.clone());
        out.events.push(StreamEvent::Sent {
            kind,
            version: version.clone(),
            revision,
        });
        out.responses.push(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: kind.type_url().to_string(),
            nonce,
            ..Default::default()
        });
    }

    fn check_applied(&mut self, out: &mut Output<DiscoveryResponse>) {
        let Some(p) = &self.published else { return };
        if self.last_applied == Some(p.revision) {
            return;
        }
        let mut any = false;
        for kind in ResourceType::ALL {
            let t = &self.types[kind.index()];
            if !t.sub.subscribed {
                continue;
            }
            any = true;
            if t.acked_version.as_deref() != Some(p.snapshot.resources(kind).version()) {
                return;
            }
        }
        if any {
            self.last_applied = Some(p.revision);
            out.events.push(StreamEvent::Applied {
                revision: p.revision,
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::snapshot::Snapshot;
    use envoy_types::pb::google::rpc::Status;

    pub(crate) fn published(revision: u64, s: Snapshot) -> Published {
        Published {
            revision,
            snapshot: Arc::new(s),
        }
    }

    fn req(kind: ResourceType, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn nack(kind: ResourceType, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: "bad listener".into(),
                details: vec![],
            }),
            ..req(kind, names, nonce)
        }
    }

    fn kinds(out: &Output<DiscoveryResponse>) -> Vec<ResourceType> {
        out.responses
            .iter()
            .map(|r| ResourceType::from_type_url(&r.type_url).unwrap())
            .collect()
    }

    /// Subscribes to all four types and ACKs everything; returns the stream.
    fn synced(p: Published) -> SotwStream {
        let mut s = SotwStream::default();
        assert!(
            s.on_snapshot(p).responses.is_empty(),
            "nothing subscribed yet"
        );
        for (kind, names) in [
            (ResourceType::Cluster, vec![]),
            (ResourceType::Endpoint, vec!["c1"]),
            (ResourceType::Listener, vec![]),
            (ResourceType::Route, vec!["r1"]),
        ] {
            let out = s.on_request(req(kind, &names, ""));
            assert_eq!(kinds(&out), vec![kind]);
            let nonce = out.responses[0].nonce.clone();
            assert!(!out.responses[0].resources.is_empty());
            s.on_request(req(kind, &names, &nonce));
        }
        s
    }

    #[test]
    fn initial_requests_are_answered_and_acks_mark_revision_applied() {
        let mut s = SotwStream::default();
        let out = s.on_request(req(ResourceType::Cluster, &[], ""));
        assert!(out.responses.is_empty(), "no snapshot yet: wait");
        let out = s.on_snapshot(published(1, basic(1000).build().unwrap()));
        assert_eq!(kinds(&out), vec![ResourceType::Cluster]);
        let cds = &out.responses[0];
        assert_eq!(cds.resources[0].type_url, ResourceType::Cluster.type_url());
        let ack = s.on_request(req(ResourceType::Cluster, &[], &cds.nonce));
        assert!(ack.responses.is_empty());
        // All subscribed types (only CDS so far) acked: revision applied.
        assert!(ack.events.contains(&StreamEvent::Applied { revision: 1 }));
    }

    #[test]
    fn changes_are_pushed_in_order_cds_eds_lds_rds() {
        let mut s = synced(published(1, basic(1000).build().unwrap()));
        let next = Snapshot::builder()
            .cluster(&{
                let mut c = eds_cluster("c1");
                c.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 3,
                    nanos: 0,
                });
                c
            })
            .endpoints(&cla("c1", 2000))
            .listener(&{
                let mut l = http_listener("l1", "r1");
                l.stat_prefix = "changed".into();
                l
            })
            .route(&{
                let mut r = route("r1");
                r.validate_clusters =
                    Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
                r
            })
            .build()
            .unwrap();
        let out = s.on_snapshot(published(2, next));
        assert_eq!(
            kinds(&out),
            vec![
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener,
                ResourceType::Route
            ]
        );
    }

    #[test]
    fn only_changed_types_are_sent() {
        let mut s = synced(published(1, basic(1000).build().unwrap()));
        let out = s.on_snapshot(published(2, basic(2000).build().unwrap()));
        assert_eq!(kinds(&out), vec![ResourceType::Endpoint]);
    }

    fn names_in(r: &DiscoveryResponse) -> Vec<String> {
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use prost::Message;
        r.resources
            .iter()
            .map(|a| {
                ClusterLoadAssignment::decode(a.value.as_slice())
                    .unwrap()
                    .cluster_name
            })
            .collect()
    }

    fn two_clusters(port: u32) -> Snapshot {
        Snapshot::builder()
            .cluster(&eds_cluster("c1"))
            .endpoints(&cla("c1", port))
            .cluster(&eds_cluster("c2"))
            .endpoints(&cla("c2", 2000))
            .build()
            .unwrap()
    }

    #[test]
    fn eds_sends_only_changed_and_newly_requested_assignments() {
        let mut s = SotwStream::default();
        s.on_snapshot(published(1, two_clusters(1000)));
        let out = s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], ""));
        assert_eq!(names_in(&out.responses[0]), ["c1", "c2"]);
        let nonce = out.responses[0].nonce.clone();
        s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], &nonce));

        // One assignment changed: only it is sent, at the new type version.
        let p2 = published(2, two_clusters(1001));
        let v2 = p2
            .snapshot
            .resources(ResourceType::Endpoint)
            .version()
            .to_string();
        let out = s.on_snapshot(p2);
        assert_eq!(out.responses.len(), 1);
        assert_eq!(names_in(&out.responses[0]), ["c1"]);
        assert_eq!(out.responses[0].version_info, v2);
        let nonce = out.responses[0].nonce.clone();
        let ack = s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], &nonce));
        assert!(ack.events.contains(&StreamEvent::Applied { revision: 2 }));

        // Dropping and re-adding a name resends it although it did not change.
        let out = s.on_request(req(ResourceType::Endpoint, &["c1"], &nonce));
        assert!(names_in(&out.responses[0]).is_empty());
        let nonce = out.responses[0].nonce.clone();
        let out = s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], &nonce));
        assert_eq!(names_in(&out.responses[0]), ["c2"]);
        let nonce = out.responses[0].nonce.clone();
        s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], &nonce));

        // A change to an assignment the client did not ask for sends nothing,
        // and the client counts as running the new revision.
        let mut s1 = SotwStream::default();
        s1.on_snapshot(published(1, two_clusters(1000)));
        let out = s1.on_request(req(ResourceType::Endpoint, &["c2"], ""));
        let nonce = out.responses[0].nonce.clone();
        s1.on_request(req(ResourceType::Endpoint, &["c2"], &nonce));
        let out = s1.on_snapshot(published(2, two_clusters(1001)));
        assert!(out.responses.is_empty());
        assert!(out.events.contains(&StreamEvent::Applied { revision: 2 }));
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let mut s = synced(published(1, basic(1000).build().unwrap()));
        let out = s.on_snapshot(published(2, basic(2000).build().unwrap()));
        let fresh = out.responses[0].nonce.clone();
        // A request carrying an older nonce (even a NACK) changes nothing.
        let out = s.on_request(nack(ResourceType::Endpoint, &["c1"], "1"));
        assert!(out.responses.is_empty() && out.events.is_empty());
        let out = s.on_request(req(ResourceType::Endpoint, &["c1"], &fresh));
        assert!(out.events.contains(&StreamEvent::Applied { revision: 2 }));
    }

    #[test]
    fn nacked_version_is_recorded_and_never_resent() {
        let mut s = synced(published(1, basic(1000).build().unwrap()));
        let p2 = published(2, basic(2000).build().unwrap());
        let out = s.on_snapshot(p2.clone());
        let nonce = out.responses[0].nonce.clone();
        let out = s.on_request(nack(ResourceType::Endpoint, &["c1"], &nonce));
        assert!(out.responses.is_empty(), "a NACK is not answered");
        assert!(matches!(
            &out.events[0],
            StreamEvent::Nack { kind: ResourceType::Endpoint, revision: 2, error, .. } if error == "bad listener"
        ));
        // The same content published again (e.g. another node's update) is not resent.
        assert!(
            s.on_snapshot(published(3, basic(2000).build().unwrap()))
                .responses
                .is_empty()
        );
        assert!(s.on_snapshot(p2).responses.is_empty());
        // A new version is.
        let out = s.on_snapshot(published(4, basic(3000).build().unwrap()));
        assert_eq!(kinds(&out), vec![ResourceType::Endpoint]);
    }

    #[test]
    fn subscription_change_is_answered_at_the_same_version() {
        let mut s = synced(published(1, basic(1000).build().unwrap()));
        let out = s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], ""));
        assert_eq!(kinds(&out), vec![ResourceType::Endpoint]);
    }

    #[test]
    fn removed_clusters_are_kept_until_listeners_moved() {
        let two = Snapshot::builder()
            .cluster(&eds_cluster("c1"))
            .endpoints(&cla("c1", 1000))
            .cluster(&eds_cluster("old"))
            .endpoints(&cla("old", 1001))
            .listener(&http_listener("l1", "r1"))
            .route(&route("r1"))
            .build()
            .unwrap();
        let mut s = synced(published(1, two));
        let next = Snapshot::builder()
            .cluster(&eds_cluster("c1"))
            .endpoints(&cla("c1", 1000))
            .listener(&http_listener("l2", "r1"))
            .route(&route("r1"))
            .build()
            .unwrap();
        let out = s.on_snapshot(published(2, next));
        // c1's assignment did not change: EDS has nothing to send.
        assert_eq!(
            kinds(&out),
            vec![
                ResourceType::Cluster,
                ResourceType::Listener,
                ResourceType::Cluster
            ]
        );
        assert_eq!(
            out.responses[0].resources.len(),
            2,
            "transitional CDS keeps the removed cluster"
        );
        assert!(out.responses[0].version_info.ends_with(TRANSITION));
        assert_eq!(out.responses[2].resources.len(), 1, "final CDS removes it");
    }
}
