//! The snapshot cache: current snapshot, revision history and stream bookkeeping per node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::resource::ResourceType;
use crate::snapshot::Snapshot;

/// An Envoy node id, `<tenant>/<gateway>/<proxy>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The tenant.
    pub tenant: String,
    /// The gateway, within the tenant.
    pub gateway: String,
    /// The proxy instance.
    pub proxy: String,
}

/// A node id that is not `<tenant>/<gateway>/<proxy>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} is not of the form <tenant>/<gateway>/<proxy>")]
pub struct NodeIdError(pub String);

impl FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(g), Some(p), None)
                if !t.is_empty() && !g.is_empty() && !p.is_empty() =>
            {
                Ok(NodeId {
                    tenant: t.into(),
                    gateway: g.into(),
                    proxy: p.into(),
                })
            }
            _ => Err(NodeIdError(s.into())),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.gateway, self.proxy)
    }
}

/// Errors from cache operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The node has no snapshot.
    #[error("node {0:?} has no snapshot")]
    UnknownNode(String),
    /// The revision is not (or no longer) in the node's history.
    #[error("node {node:?} has no revision {revision} in its history")]
    UnknownRevision {
        /// The node.
        node: String,
        /// The requested revision.
        revision: u64,
    },
    /// A restored revision number is not past the node's existing revisions.
    #[error("node {node:?} cannot restore revision {revision}: the next revision is {next}")]
    StaleRevision {
        /// The node.
        node: String,
        /// The revision asked for.
        revision: u64,
        /// The lowest revision number still free.
        next: u64,
    },
}

/// Cache tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Revisions kept per node (at least 1).
    pub history: usize,
    /// Roll a node back to its last acked revision when every stream NACKs the current one.
    pub auto_rollback: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            history: 10,
            auto_rollback: false,
        }
    }
}

/// A snapshot as published to a node's streams, with its revision number.
#[derive(Debug, Clone)]
pub struct Published {
    /// Revision number, increasing per node.
    pub revision: u64,
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
}

/// Identifies one xDS stream within the cache.
pub type StreamId = u64;

/// Flavour of an xDS stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// State-of-the-world ADS.
    Sotw,
    /// Incremental (delta) ADS.
    Delta,
}

/// The longest NACK error message kept, in bytes (the rest is cut).
pub const MAX_NACK_ERROR_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes, at a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A NACK recorded against a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NackRecord {
    /// The stream that rejected it.
    pub stream: StreamId,
    /// The resource type rejected.
    pub resource_type: ResourceType,
    /// The type version rejected.
    pub version: String,
    /// Envoy's `error_detail` message.
    pub error: String,
}

/// Where a revision stands with the proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionState {
    /// No stream has applied or rejected it yet.
    Pending,
    /// At least one stream applied all of it, none rejected it.
    Acked,
    /// At least one stream rejected part of it.
    Nacked,
    /// Rejected by every stream and rolled back; never republished automatically.
    Tainted,
}

/// One entry of a node's revision history.
#[derive(Debug, Clone, Serialize)]
pub struct Revision {
    /// Revision number.
    pub number: u64,
    /// Snapshot version.
    pub version: String,
    /// Current state.
    pub state: RevisionState,
    /// Streams that applied the whole revision.
    pub acked_by: BTreeSet<StreamId>,
    /// Rejections, with Envoy's error.
    pub nacks: Vec<NackRecord>,
    /// The revision this one restored, if it is a rollback.
    pub rollback_of: Option<u64>,
    /// Seconds since the epoch when it was set.
    pub set_at: u64,
    #[serde(skip)]
    snapshot: Arc<Snapshot>,
}

impl Revision {
    /// The snapshot of this revision.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    fn refresh_state(&mut self) {
        if self.state == RevisionState::Tainted {
            return;
        }
        self.state = if !self.nacks.is_empty() {
            RevisionState::Nacked
        } else if !self.acked_by.is_empty() {
            RevisionState::Acked
        } else {
            RevisionState::Pending
        };
    }
}

/// What one stream has done, as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Stream id.
    pub id: StreamId,
    /// SotW or delta.
    pub kind: StreamKind,
    /// Seconds since the epoch when it connected.
    pub connected_at: u64,
    /// Type version each resource type last ACKed.
    pub acked: BTreeMap<ResourceType, String>,
    /// Last revision this stream applied completely.
    pub applied_revision: Option<u64>,
    /// Responses sent, per type.
    pub responses: BTreeMap<ResourceType, u64>,
    /// NACKs received.
    pub nacks: u64,
}

/// One node, as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Node id.
    pub node: String,
    /// Current revision, if a snapshot is set.
    pub current_revision: Option<u64>,
    /// Current snapshot version.
    pub current_version: Option<String>,
    /// Connected streams.
    pub streams: Vec<StreamStatus>,
    /// Revision history, oldest first.
    pub revisions: Vec<Revision>,
}

/// The whole cache, as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// Nodes with a snapshot or a stream, by id.
    pub nodes: Vec<NodeStatus>,
}

struct NodeEntry {
    tx: watch::Sender<Option<Published>>,
    revisions: VecDeque<Revision>,
    next_revision: u64,
    streams: BTreeMap<StreamId, StreamStatus>,
}

impl NodeEntry {
    fn new() -> Self {
        NodeEntry {
            tx: watch::channel(None).0,
            revisions: VecDeque::new(),
            next_revision: 1,
            streams: BTreeMap::new(),
        }
    }

    fn revision_mut(&mut self, number: u64) -> Option<&mut Revision> {
        self.revisions.iter_mut().find(|r| r.number == number)
    }

    fn publish(
        &mut self,
        snapshot: Arc<Snapshot>,
        rollback_of: Option<u64>,
        history: usize,
    ) -> u64 {
        let number = self.next_revision;
        self.next_revision += 1;
        self.revisions.push_back(Revision {
            number,
            version: snapshot.version().to_string(),
            state: RevisionState::Pending,
            acked_by: BTreeSet::new(),
            nacks: Vec::new(),
            rollback_of,
            set_at: now_secs(),
            snapshot: snapshot.clone(),
        });
        while self.revisions.len() > history.max(1) {
            self.revisions.pop_front();
        }
        self.tx.send_replace(Some(Published {
            revision: number,
            snapshot,
        }));
        number
    }

    fn current(&self) -> Option<Published> {
        self.tx.borrow().clone()
    }
}

#[derive(Default)]
struct CacheState {
    nodes: HashMap<String, NodeEntry>,
    next_stream: StreamId,
}

/// Snapshots per node, their revision history, and what each stream acked.
///
/// Cheap to clone; clones share the same cache.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    state: Arc<Mutex<CacheState>>,
    options: CacheOptions,
}

impl fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SnapshotCache {
    /// A cache with default options (history 10, no automatic rollback).
    pub fn new() -> Self {
        Self::with_options(CacheOptions::default())
    }

    /// A cache with the given options.
    pub fn with_options(options: CacheOptions) -> Self {
        SnapshotCache {
            state: Arc::default(),
            options,
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a node's snapshot and returns its revision number.
    ///
    /// Setting a snapshot with the current version is a no-op returning the
    /// current revision. Share one `Arc<Snapshot>` between nodes to share its
    /// encoded resources.
    pub fn set_snapshot(&self, node: &str, snapshot: impl Into<Arc<Snapshot>>) -> u64 {
        let snapshot = snapshot.into();
        let history = self.options.history;
        let mut st = self.lock();
        let entry = st
            .nodes
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new);
        if let Some(cur) = entry.current()
            && cur.snapshot.version() == snapshot.version()
        {
            return cur.revision;
        }
        let n = entry.publish(snapshot, None, history);
        tracing::debug!(node, revision = n, "snapshot set");
        n
    }

    /// Seeds a node after a control-plane restart: publishes `snapshot` as
    /// revision `revision` (the number recorded before the restart), so that
    /// revision numbers continue instead of starting again at 1.
    ///
    /// Snapshot versions are content hashes and need no seeding: the same
    /// resources get the same versions after a restart. Refused if the node
    /// already has a revision at or past `revision`.
    pub fn restore_snapshot(
        &self,
        node: &str,
        revision: u64,
        snapshot: impl Into<Arc<Snapshot>>,
    ) -> Result<u64, CacheError> {
        let history = self.options.history;
        let mut st = self.lock();
        let entry = st
            .nodes
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new);
        if revision == 0 || revision < entry.next_revision {
            return Err(CacheError::StaleRevision {
                node: node.into(),
                revision,
                next: entry.next_revision,
            });
        }
        entry.next_revision = revision;
        let n = entry.publish(snapshot.into(), None, history);
        tracing::debug!(node, revision = n, "snapshot restored");
        Ok(n)
    }

    /// The node's current snapshot and revision.
    pub fn snapshot(&self, node: &str) -> Option<Published> {
        self.lock().nodes.get(node).and_then(NodeEntry::current)
    }

    /// Forgets a node: its snapshot and history go, and its open streams end.
    pub fn remove_node(&self, node: &str) -> bool {
        self.lock().nodes.remove(node).is_some()
    }

    /// Republishes a revision from the node's history as a new revision.
    pub fn rollback(&self, node: &str, revision: u64) -> Result<u64, CacheError> {
        let history = self.options.history;
        let mut st = self.lock();
        let entry = st
            .nodes
            .get_mut(node)
            .ok_or_else(|| CacheError::UnknownNode(node.into()))?;
        let snap = entry
            .revision_mut(revision)
            .map(|r| r.snapshot.clone())
            .ok_or(CacheError::UnknownRevision {
                node: node.into(),
                revision,
            })?;
        Ok(entry.publish(snap, Some(revision), history))
    }

    /// The node's revision history, oldest first.
    pub fn revisions(&self, node: &str) -> Vec<Revision> {
        self.lock()
            .nodes
            .get(node)
            .map(|e| e.revisions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Everything the admin endpoint shows.
    pub fn status(&self) -> CacheStatus {
        let st = self.lock();
        let mut nodes: Vec<NodeStatus> = st
            .nodes
            .iter()
            .map(|(id, e)| {
                let cur = e.current();
                NodeStatus {
                    node: id.clone(),
                    current_revision: cur.as_ref().map(|p| p.revision),
                    current_version: cur.map(|p| p.snapshot.version().to_string()),
                    streams: e.streams.values().cloned().collect(),
                    revisions: e.revisions.iter().cloned().collect(),
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        CacheStatus { nodes }
    }

    pub(crate) fn subscribe(&self, node: &str) -> watch::Receiver<Option<Published>> {
        let mut st = self.lock();
        st.nodes
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new)
            .tx
            .subscribe()
    }

    #[cfg(test)]
    pub(crate) fn register_stream(&self, node: &str, kind: StreamKind) -> StreamId {
        self.try_register_stream(node, kind, usize::MAX)
            .unwrap_or_else(|| unreachable!("no limit"))
    }

    /// Registers a stream of `node` unless it already has `limit` open.
    pub(crate) fn try_register_stream(
        &self,
        node: &str,
        kind: StreamKind,
        limit: usize,
    ) -> Option<StreamId> {
        let mut st = self.lock();
        let open = st.nodes.get(node).map_or(0, |e| e.streams.len());
        if open >= limit {
            return None;
        }
        st.next_stream += 1;
        let id = st.next_stream;
        st.nodes
            .entry(node.to_string())
            .or_insert_with(NodeEntry::new)
            .streams
            .insert(
                id,
                StreamStatus {
                    id,
                    kind,
                    connected_at: now_secs(),
                    acked: BTreeMap::new(),
                    applied_revision: None,
                    responses: BTreeMap::new(),
                    nacks: 0,
                },
            );
        Some(id)
    }

    pub(crate) fn unregister_stream(&self, node: &str, id: StreamId) {
        if let Some(e) = self.lock().nodes.get_mut(node) {
            e.streams.remove(&id);
        }
    }

    /// Applies what a stream reported.
    #[cfg(test)]
    pub(crate) fn record(&self, node: &str, id: StreamId, event: &StreamEvent) {
        self.record_all(node, id, std::slice::from_ref(event));
    }

    /// Applies what a stream reported, in order, under one lock.
    pub(crate) fn record_all(&self, node: &str, id: StreamId, events: &[StreamEvent]) {
        if events.is_empty() {
            return;
        }
        let mut st = self.lock();
        let Some(entry) = st.nodes.get_mut(node) else {
            return;
        };
        for event in events {
            self.apply(node, entry, id, event);
        }
    }

    fn apply(&self, node: &str, entry: &mut NodeEntry, id: StreamId, event: &StreamEvent) {
        let history = self.options.history;
        let auto_rollback = self.options.auto_rollback;
        match event {
            StreamEvent::Sent { kind, .. } => {
                if let Some(s) = entry.streams.get_mut(&id) {
                    *s.responses.entry(*kind).or_default() += 1;
                }
            }
            StreamEvent::Ack { kind, version, .. } => {
                if let Some(s) = entry.streams.get_mut(&id) {
                    s.acked.insert(*kind, version.clone());
                }
            }
            StreamEvent::Applied { revision } => {
                if let Some(s) = entry.streams.get_mut(&id) {
                    s.applied_revision = Some(*revision);
                }
                if let Some(r) = entry.revision_mut(*revision) {
                    r.acked_by.insert(id);
                    r.refresh_state();
                }
            }
            StreamEvent::Nack {
                kind,
                version,
                revision,
                error,
            } => {
                if let Some(s) = entry.streams.get_mut(&id) {
                    s.nacks += 1;
                }
                let Some(r) = entry.revision_mut(*revision) else {
                    return;
                };
                // One record per (stream, type): a client repeating its NACK
                // replaces it, so records stay bounded by the open streams.
                let record = NackRecord {
                    stream: id,
                    resource_type: *kind,
                    version: version.clone(),
                    error: bounded(error, MAX_NACK_ERROR_BYTES),
                };
                match r
                    .nacks
                    .iter_mut()
                    .find(|n| n.stream == id && n.resource_type == *kind)
                {
                    Some(old) => *old = record,
                    None => r.nacks.push(record),
                }
                r.refresh_state();
                let nackers: BTreeSet<StreamId> = r.nacks.iter().map(|n| n.stream).collect();
                let is_current = entry.current().is_some_and(|p| p.revision == *revision);
                let all_nacked = entry.streams.keys().all(|s| nackers.contains(s));
                if auto_rollback && is_current && all_nacked {
                    let good = entry
                        .revisions
                        .iter()
                        .rev()
                        .find(|r| r.state == RevisionState::Acked && r.number != *revision)
                        .map(|r| (r.number, r.snapshot.clone()));
                    if let Some((good_number, snap)) = good {
                        if let Some(r) = entry.revision_mut(*revision) {
                            r.state = RevisionState::Tainted;
                        }
                        let n = entry.publish(snap, Some(good_number), history);
                        tracing::warn!(
                            node,
                            tainted = revision,
                            restored = good_number,
                            revision = n,
                            "every stream rejected the revision; rolled back"
                        );
                    }
                }
            }
        }
    }
}

/// What a stream reports to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEvent {
    /// A response was sent.
    Sent {
        kind: ResourceType,
        version: String,
        revision: u64,
    },
    /// A response was accepted.
    Ack {
        kind: ResourceType,
        version: String,
        revision: u64,
    },
    /// A response was rejected.
    Nack {
        kind: ResourceType,
        version: String,
        revision: u64,
        error: String,
    },
    /// Every subscribed type now runs this revision.
    Applied { revision: u64 },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::basic;

    fn nack(revision: u64) -> StreamEvent {
        StreamEvent::Nack {
            kind: ResourceType::Listener,
            version: "v".into(),
            revision,
            error: "invalid listener".into(),
        }
    }

    #[test]
    fn node_ids_parse() {
        let id: NodeId = "t/g/p".parse().unwrap();
        assert_eq!(
            (id.tenant.as_str(), id.gateway.as_str(), id.proxy.as_str()),
            ("t", "g", "p")
        );
        assert_eq!(id.to_string(), "t/g/p");
        for bad in ["", "t/g", "t/g/p/x", "t//p", "/g/p"] {
            assert_eq!(bad.parse::<NodeId>(), Err(NodeIdError(bad.into())));
        }
    }

    #[test]
    fn history_is_bounded_and_same_version_is_a_noop() {
        let cache = SnapshotCache::with_options(CacheOptions {
            history: 3,
            auto_rollback: false,
        });
        for port in 1..=5 {
            assert_eq!(
                cache.set_snapshot("n", basic(port).build().unwrap()),
                u64::from(port)
            );
        }
        assert_eq!(cache.set_snapshot("n", basic(5).build().unwrap()), 5);
        let revs: Vec<u64> = cache.revisions("n").iter().map(|r| r.number).collect();
        assert_eq!(revs, [3, 4, 5]);
        assert_eq!(cache.snapshot("n").unwrap().revision, 5);
        assert_eq!(
            cache.rollback("n", 1),
            Err(CacheError::UnknownRevision {
                node: "n".into(),
                revision: 1
            })
        );
        assert_eq!(
            cache.rollback("x", 1),
            Err(CacheError::UnknownNode("x".into()))
        );
        assert_eq!(cache.rollback("n", 4), Ok(6));
        let cur = cache.snapshot("n").unwrap();
        let revs = cache.revisions("n");
        assert_eq!(revs.iter().map(|r| r.number).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(cur.snapshot.version(), revs[0].version);
        assert_eq!(revs[2].rollback_of, Some(4));
    }

    #[test]
    fn restored_revision_numbers_continue() {
        let cache = SnapshotCache::new();
        assert_eq!(
            cache.restore_snapshot("n", 41, basic(1).build().unwrap()),
            Ok(41)
        );
        // The same content again is a no-op; a change continues the numbering.
        assert_eq!(cache.set_snapshot("n", basic(1).build().unwrap()), 41);
        assert_eq!(cache.set_snapshot("n", basic(2).build().unwrap()), 42);
        assert_eq!(
            cache.restore_snapshot("n", 42, basic(3).build().unwrap()),
            Err(CacheError::StaleRevision {
                node: "n".into(),
                revision: 42,
                next: 43
            })
        );
        assert!(
            cache
                .restore_snapshot("m", 0, basic(1).build().unwrap())
                .is_err()
        );
        let revs: Vec<u64> = cache.revisions("n").iter().map(|r| r.number).collect();
        assert_eq!(revs, [41, 42]);
    }

    #[test]
    fn acks_and_nacks_move_revision_state() {
        let cache = SnapshotCache::new();
        cache.set_snapshot("n", basic(1).build().unwrap());
        let s1 = cache.register_stream("n", StreamKind::Sotw);
        assert_eq!(cache.revisions("n")[0].state, RevisionState::Pending);
        cache.record("n", s1, &StreamEvent::Applied { revision: 1 });
        let r = &cache.revisions("n")[0];
        assert_eq!(r.state, RevisionState::Acked);
        assert_eq!(r.acked_by, BTreeSet::from([s1]));
        cache.set_snapshot("n", basic(2).build().unwrap());
        cache.record("n", s1, &nack(2));
        let r = &cache.revisions("n")[1];
        assert_eq!(r.state, RevisionState::Nacked);
        assert_eq!(r.nacks[0].error, "invalid listener");
        // No automatic rollback by default.
        assert_eq!(cache.snapshot("n").unwrap().revision, 2);
        let status = cache.status();
        assert_eq!(status.nodes[0].streams[0].nacks, 1);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["nodes"][0]["revisions"][1]["state"], "nacked");
    }

    #[test]
    fn auto_rollback_when_every_stream_nacks() {
        let cache = SnapshotCache::with_options(CacheOptions {
            history: 10,
            auto_rollback: true,
        });
        cache.set_snapshot("n", basic(1).build().unwrap());
        let s1 = cache.register_stream("n", StreamKind::Sotw);
        let s2 = cache.register_stream("n", StreamKind::Delta);
        cache.record("n", s1, &StreamEvent::Applied { revision: 1 });
        cache.set_snapshot("n", basic(2).build().unwrap());
        cache.record("n", s1, &nack(2));
        assert_eq!(
            cache.snapshot("n").unwrap().revision,
            2,
            "s2 has not rejected it"
        );
        cache.record("n", s2, &nack(2));
        let cur = cache.snapshot("n").unwrap();
        assert_eq!(cur.revision, 3);
        let revs = cache.revisions("n");
        assert_eq!(revs[1].state, RevisionState::Tainted);
        assert_eq!(revs[2].rollback_of, Some(1));
        assert_eq!(revs[2].version, revs[0].version);
    }

    #[test]
    fn nack_records_stay_bounded_whatever_a_client_repeats() {
        let cache = SnapshotCache::new();
        cache.set_snapshot("n", basic(1).build().unwrap());
        let s1 = cache.register_stream("n", StreamKind::Sotw);
        let huge = "x".repeat(1 << 20);
        for i in 0..1000 {
            cache.record(
                "n",
                s1,
                &StreamEvent::Nack {
                    kind: ResourceType::Listener,
                    version: format!("v{i}"),
                    revision: 1,
                    error: huge.clone(),
                },
            );
        }
        let r = &cache.revisions("n")[0];
        assert_eq!(r.nacks.len(), 1, "one record per stream and type");
        assert_eq!(r.nacks[0].version, "v999", "the latest is kept");
        assert!(r.nacks[0].error.len() <= MAX_NACK_ERROR_BYTES + '…'.len_utf8());
        assert_eq!(
            cache.status().nodes[0].streams[0].nacks,
            1000,
            "all counted"
        );
        // A cut never splits a character.
        assert_eq!(bounded("añb", 2), "a…");
    }
}
