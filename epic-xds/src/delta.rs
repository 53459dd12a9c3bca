//! Sans-IO state machine of one incremental (delta) ADS stream.

use std::collections::{BTreeSet, HashMap, VecDeque};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use crate::cache::{Published, StreamEvent};
use crate::resource::ResourceType;
use crate::snapshot::ResourceSet;
use crate::sotw::Output;

/// Responses awaiting an ACK or NACK, per type (older ones are dropped).
const OUTSTANDING: usize = 8;

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// Resource versions the client has (or has been sent), by name.
    known: HashMap<String, String>,
    /// Sent responses awaiting ACK/NACK: (nonce, type version, revision).
    outstanding: VecDeque<(String, String, u64)>,
    acked_version: Option<String>,
    /// The client subscribed for the first time and needs an answer even if empty.
    initial: bool,
    /// Version of the type's set at the last snapshot seen, to skip unchanged types.
    seen_set: Option<String>,
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
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
                        out.events.push(StreamEvent::Nack {
                            kind,
                            version,
                            revision,
                            error: err.message,
                        });
                    }
                    None => {
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
        if !t.subscribed {
            t.subscribed = true;
            t.initial = true;
            t.wildcard = req.resource_names_subscribe.is_empty() && kind.wildcard_by_default();
            t.known = req.initial_resource_versions;
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                t.wildcard = true;
            } else {
                t.names.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                t.wildcard = false;
            } else {
                t.names.remove(&name);
            }
            t.known.remove(&name);
        }
        if !t.wildcard {
            let names = &t.names;
            t.known.retain(|n, _| names.contains(n));
        }
        if let Some(p) = self.published.clone() {
            let set = p.snapshot.shared_set(kind).clone();
            self.respond(kind, &set, true, true, p.revision, &mut out);
        }
        self.check_applied(&mut out);
        out
    }

    /// Handles a new snapshot: updates in type order, then removals in reverse order.
    pub(crate) fn on_snapshot(&mut self, p: Published) -> Output<DeltaDiscoveryResponse> {
        let mut out = Output::default();
        self.published = Some(p.clone());
        // A type whose set did not change since the last snapshot has nothing to send.
        let changed = ResourceType::ALL.map(|kind| {
            let t = &mut self.types[kind.index()];
            let version = p.snapshot.resources(kind).version();
            let changed = t.seen_set.as_deref() != Some(version);
            t.seen_set = Some(version.to_string());
            changed
        });
        for kind in ResourceType::ALL.into_iter().filter(|k| changed[k.index()]) {
            let set = p.snapshot.shared_set(kind).clone();
            self.respond(kind, &set, true, false, p.revision, &mut out);
        }
        for kind in ResourceType::ALL
            .into_iter()
            .rev()
            .filter(|k| changed[k.index()])
        {
            let set = p.snapshot.shared_set(kind).clone();
            self.respond(kind, &set, false, true, p.revision, &mut out);
        }
        out
    }

    fn respond(
        &mut self,
        kind: ResourceType,
        set: &ResourceSet,
        updates: bool,
        removals: bool,
        revision: u64,
        out: &mut Output<DeltaDiscoveryResponse>,
    ) {
        let t = &mut self.types[kind.index()];
        if !t.subscribed {
            return;
        }
        let mut resources = Vec::new();
        if updates {
            let push = |r: &crate::resource::SharedResource| {
                if t.known.get(r.name()).map(String::as_str) != Some(r.version()) {
                    resources.push(Resource {
                        name: r.name().to_string(),
                        version: r.version().to_string(),
                        resource: Some(r.to_any()),
                        ..Default::default()
                    });
                }
            };
            if t.wildcard {
                set.resources().iter().for_each(push);
            } else {
                t.names.iter().filter_map(|n| set.get(n)).for_each(push);
            }
        }
        let mut removed = Vec::new();
        if removals {
            removed = t
                .known
                .keys()
                .filter(|n| set.get(n).is_none() || !t.wants(n))
                .cloned()
                .collect();
            removed.sort();
        }
        if resources.is_empty() && removed.is_empty() && !(t.initial && removals) {
            return;
        }
        t.initial = false;
        for r in &resources {
            t.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            t.known.remove(n);
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let version = set.version().to_string();
        t.outstanding
            .push_back((nonce.clone(), version.clone(), revision));
        if t.outstanding.len() > OUTSTANDING {
            t.outstanding.pop_front();
        }
        out.events.push(StreamEvent::Sent {
            kind,
            version: version.clone(),
            revision,
        });
        out.responses.push(DeltaDiscoveryResponse {
            system_version_info: version,
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
            if !t.subscribed {
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
