//! Sans-IO state machine of one incremental (delta) ADS stream.

use std::collections::VecDeque;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use crate::cache::{Published, StreamEvent};
use crate::resource::{ResourceType, SharedResource};
use crate::sotw::Output;
use crate::subscription::Subscription;

/// Responses awaiting an ACK or NACK, per type (older ones are dropped).
const OUTSTANDING: usize = 8;

#[derive(Debug, Default)]
struct TypeState {
    /// What the client wants and has.
    sub: Subscription,
    /// Sent responses awaiting ACK/NACK: (nonce, type version, revision).
    outstanding: VecDeque<(String, String, u64)>,
    acked_version: Option<String>,
    /// The last answered response was a NACK.
    rejected: bool,
    /// The client subscribed for the first time and needs an answer even if empty.
    initial: bool,
}

/// A resource as a delta response carries it.
fn to_resource(r: &SharedResource) -> Resource {
    Resource {
        name: r.name().to_string(),
        version: r.version().to_string(),
        resource: Some(r.to_any()),
        ..Default::default()
    }
}

/// Updates and removed names, as a delta response carries them.
fn to_delta(
    (updates, removed): (Vec<SharedResource>, Vec<String>),
) -> (Vec<Resource>, Vec<String>) {
    (updates.iter().map(to_resource).collect(), removed)
}

impl TypeState {
    /// The type moved to `version` with nothing for this client: once it has
    /// applied what it was sent, it runs `version`.
    fn nothing_to_send(&mut self, version: &str, revision: u64) {
        match self.outstanding.back_mut() {
            Some(last) => {
                last.1 = version.to_string();
                last.2 = revision;
            }
            None if !self.rejected => self.acked_version = Some(version.to_string()),
            None => {}
        }
    }
}

/// One delta ADS stream: per-resource versions known to the client.
#[derive(Debug, Default)]
pub(crate) struct DeltaStream {
    nonce: u64,
    published: Option<Published>,
    last_applied: Option<u64>,
    types: [TypeState; 5],
}

impl DeltaStream {
    /// Handles one request from the client.
    pub(crate) fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
    ) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "delta request for an unserved type ignored");
            return out;
        };
        let t = &mut self.types[kind.index()];
        if !req.response_nonce.is_empty() {
            if let Some(pos) = t
                .outstanding
                .iter()
                .position(|(n, _, _)| *n == req.response_nonce)
            {
                let (_, version, revision) = t.outstanding[pos].clone();
                t.outstanding.drain(..=pos);
                match req.error_detail {
                    Some(err) => {
                        tracing::warn!(%kind, %version, error = %err.message, "delta NACK");
                        t.rejected = true;
                        out.events.push(StreamEvent::Nack {
                            kind,
                            version,
                            revision,
                            error: err.message,
                        });
                    }
                    None => {
                        t.rejected = false;
                        t.acked_version = Some(version.clone());
                        out.events.push(StreamEvent::Ack {
                            kind,
                            version,
                            revision,
                        });
                    }
                }
            } else {
                tracing::debug!(%kind, nonce = %req.response_nonce, "stale delta nonce");
            }
        }
        // A plain ACK changes no subscription and needs no comparison.
        let change = t.sub.update_delta(
            kind,
            req.resource_names_subscribe,
            req.resource_names_unsubscribe,
            req.initial_resource_versions,
        );
        if change.first {
            t.initial = true;
        }
        if let Some(p) = &self.published {
            let set = p.snapshot.shared_set(kind).clone();
            let revision = p.revision;
            let t = &mut self.types[kind.index()];
            let in_step = t.sub.base.as_ref().is_some_and(|b| Arc::ptr_eq(b, &set));
            let (updates, removed) = if change.everything || !in_step {
                to_delta(t.sub.reconcile(&set))
            } else {
                let added = change.added.iter().filter_map(|name| set.get(name));
                let updates = added.filter(|r| t.sub.record(r)).map(to_resource).collect();
                (updates, Vec::new())
            };
            let initial = t.initial;
            if !updates.is_empty() || !removed.is_empty() || initial {
                self.respond(kind, updates, removed, set.version(), revision, &mut out);
            }
        }
        self.check_applied(&mut out);
        out
    }

    /// Handles a new snapshot: updates in type order, then removals in reverse order.
    pub(crate) fn on_snapshot(&mut self, p: Published) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        let mut removals: [Vec<String>; 5] = Default::default();
        for kind in ResourceType::ALL {
            let t = &mut self.types[kind.index()];
            if !t.sub.subscribed {
                continue;
            }
            let set = p.snapshot.shared_set(kind);
            let (updates, removed) = to_delta(t.sub.advance(set));
            if updates.is_empty() && removed.is_empty() && !t.initial {
                t.nothing_to_send(set.version(), p.revision);
                continue;
            }
            if !updates.is_empty() {
                self.respond(
                    kind,
                    updates,
                    Vec::new(),
                    set.version(),
                    p.revision,
                    &mut out,
                );
            }
            removals[kind.index()] = removed;
        }
        for kind in ResourceType::ALL.into_iter().rev() {
            let removed = std::mem::take(&mut removals[kind.index()]);
            if !removed.is_empty() || self.types[kind.index()].initial {
                let set = p.snapshot.shared_set(kind);
                self.respond(
                    kind,
                    Vec::new(),
                    removed,
                    set.version(),
                    p.revision,
                    &mut out,
                );
            }
        }
        self.published = Some(p);
        self.check_applied(&mut out);
        out
    }

    fn respond(
        &mut self,
        kind: ResourceType,
        resources: Vec<Resource>,
        removed: Vec<String>,
        version: &str,
        revision: u64,
        out: &mut Output<DeltaDiscoveryResponse>,
    ) {
        let t = &mut self.types[kind.index()];
        t.initial = false;
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        t.outstanding
            .push_back((nonce.clone(), version.to_string(), revision));
        if t.outstanding.len() > OUTSTANDING {
            t.outstanding.pop_front();
        }
        out.events.push(StreamEvent::Sent {
            kind,
            version: version.to_string(),
            revision,
        });
        out.responses.push(DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources,
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        });
    }

    fn check_applied(&mut self, out: &mut Output<DeltaDiscoveryResponse>) {
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
            if t.acked_version.as_deref() != Some(p.snapshot.resources(kind).version())
                || !t.outstanding.is_empty()
            {
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
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::snapshot::Snapshot;
    use crate::sotw::tests::published;
    use envoy_types::pb::google::rpc::Status;

    fn req(kind: ResourceType, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
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
    fn only_changed_resources_are_sent() {
        let mut s = DeltaStream::default();
        s.on_snapshot(published(1, two_clusters(1000)));
        let out = s.on_request(req(ResourceType::Endpoint, &["c1", "c2"], &[], ""));
        assert_eq!(out.responses.len(), 1);
        assert_eq!(out.responses[0].resources.len(), 2);
        let nonce = out.responses[0].nonce.clone();
        let ack = s.on_request(req(ResourceType::Endpoint, &[], &[], &nonce));
        assert!(ack.events.contains(&StreamEvent::Applied { revision: 1 }));

        let out = s.on_snapshot(published(2, two_clusters(1001)));
        assert_eq!(out.responses.len(), 1);
        let names: Vec<_> = out.responses[0]
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["c1"]);
        assert!(out.responses[0].removed_resources.is_empty());
    }

    #[test]
    fn plain_acks_send_nothing_and_unrelated_changes_count_as_applied() {
        let mut s = DeltaStream::default();
        s.on_snapshot(published(1, two_clusters(1000)));
        let out = s.on_request(req(ResourceType::Endpoint, &["c2"], &[], ""));
        assert_eq!(out.responses.len(), 1);
        let nonce = out.responses[0].nonce.clone();
        let ack = s.on_request(req(ResourceType::Endpoint, &[], &[], &nonce));
        assert!(ack.responses.is_empty());
        // c1 changed, the stream only wants c2: nothing to send, revision applied.
        let out = s.on_snapshot(published(2, two_clusters(1001)));
        assert!(out.responses.is_empty());
        assert!(out.events.contains(&StreamEvent::Applied { revision: 2 }));
        // Subscribing to c1 later sends just c1.
        let out = s.on_request(req(ResourceType::Endpoint, &["c1"], &[], ""));
        let names: Vec<_> = out.responses[0]
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["c1"]);
    }

    #[test]
    fn wildcard_removals_come_after_updates() {
        let mut s = DeltaStream::default();
        s.on_snapshot(published(1, two_clusters(1000)));
        let out = s.on_request(req(ResourceType::Cluster, &[], &[], ""));
        assert_eq!(out.responses[0].resources.len(), 2);
        s.on_request(req(ResourceType::Listener, &[], &[], ""));
        let next = Snapshot::builder()
            .cluster(&eds_cluster("c1"))
            .endpoints(&cla("c1", 1000))
            .listener(&http_listener("l1", "r1"))
            .route(&route("r1"))
            .build()
            .unwrap();
        let out = s.on_snapshot(published(2, next));
        let shape: Vec<_> = out
            .responses
            .iter()
            .map(|r| {
                (
                    ResourceType::from_type_url(&r.type_url).unwrap(),
                    r.resources.len(),
                    r.removed_resources.clone(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (ResourceType::Listener, 1, vec![]),
                (ResourceType::Cluster, 0, vec!["c2".to_string()]),
            ]
        );
    }

    #[test]
    fn initial_versions_and_unsubscribe_are_honoured() {
        let snap = two_clusters(1000);
        let v1 = snap
            .resources(ResourceType::Endpoint)
            .get("c1")
            .unwrap()
            .version()
            .to_string();
        let mut s = DeltaStream::default();
        s.on_snapshot(published(1, snap));
        let mut r = req(ResourceType::Endpoint, &["c1", "c2"], &[], "");
        r.initial_resource_versions.insert("c1".into(), v1);
        let out = s.on_request(r);
        let names: Vec<_> = out.responses[0]
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["c2"], "the client already has c1 at this version");
        let out = s.on_request(req(ResourceType::Endpoint, &[], &["c2"], ""));
        assert!(out.responses.is_empty());
        let out = s.on_snapshot(published(2, two_clusters(1000)));
        assert!(out.responses.is_empty());
    }

    #[test]
    fn nack_is_recorded_and_not_resent() {
        let mut s = DeltaStream::default();
        s.on_snapshot(published(1, two_clusters(1000)));
        let out = s.on_request(req(ResourceType::Endpoint, &["c1"], &[], ""));
        let nonce = out.responses[0].nonce.clone();
        let mut n = req(ResourceType::Endpoint, &[], &[], &nonce);
        n.error_detail = Some(Status {
            code: 3,
            message: "rejected".into(),
            details: vec![],
        });
        let out = s.on_request(n);
        assert!(out.responses.is_empty());
        assert!(
            matches!(&out.events[0], StreamEvent::Nack { error, revision: 1, .. } if error == "rejected")
        );
        assert!(
            s.on_snapshot(published(2, two_clusters(1000)))
                .responses
                .is_empty()
        );
    }
}
