//! What one stream's client subscribed to for one resource type, and which
//! versions of those resources it was sent: the model the state-of-the-world
//! ([`crate::sotw`]) and incremental ([`crate::delta`]) streams share, as
//! go-control-plane's `stream/v3/subscription.go` does for its servers.
//!
//! The two protocols differ only in how a request changes a subscription
//! (SotW repeats the whole list, delta sends what to add and remove) and in
//! what they send (SotW: whole types or the changed resources; delta:
//! changed resources and removed names); which resources the client wants
//! and which versions it has are the same question for both.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::resource::{ResourceType, SharedResource};
use crate::snapshot::ResourceSet;

/// One client's subscription to one resource type.
#[derive(Debug, Default)]
pub(crate) struct Subscription {
    /// The client asked for this type at least once.
    pub subscribed: bool,
    /// It wants every resource of the type.
    pub wildcard: bool,
    /// The names it asked for (besides a wildcard).
    pub names: BTreeSet<String>,
    /// The version of each wanted resource it was sent (or, for delta,
    /// said it has), by name.
    pub returned: HashMap<String, String>,
    /// The set `returned` was last brought up to date with: the next set
    /// only needs the (shared) diff from it.
    pub base: Option<Arc<ResourceSet>>,
}

/// How a delta request changed a subscription.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeltaChange {
    /// The client's first request for the type: it needs an answer even if
    /// there is nothing to send.
    pub first: bool,
    /// Compare everything the client wants with the current set (first
    /// request, or a new wildcard).
    pub everything: bool,
    /// Names newly wanted (outside a wildcard).
    pub added: Vec<String>,
}

impl Subscription {
    /// Whether the client wants resource `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Records that the client is sent `r`; `false` if it has this version.
    pub fn record(&mut self, r: &SharedResource) -> bool {
        if self.returned.get(r.name()).map(String::as_str) == Some(r.version()) {
            return false;
        }
        self.returned
            .insert(r.name().to_string(), r.version().to_string());
        true
    }

    /// The resources of `set` the client wants.
    pub fn wanted(&self, set: &ResourceSet) -> Vec<SharedResource> {
        if self.wildcard {
            set.resources().to_vec()
        } else {
            self.names
                .iter()
                .filter_map(|n| set.get(n).cloned())
                .collect()
        }
    }

    /// Compares everything the client wants and has with `set`: the
    /// resources to send, and the names it has that `set` lacks or it no
    /// longer wants (forgotten).
    pub fn reconcile(&mut self, set: &Arc<ResourceSet>) -> (Vec<SharedResource>, Vec<String>) {
        let updates: Vec<SharedResource> = self
            .wanted(set)
            .into_iter()
            .filter(|r| self.record(r))
            .collect();
        let mut removed: Vec<String> = self
            .returned
            .keys()
            .filter(|n| set.get(n).is_none() || !self.wants(n))
            .cloned()
            .collect();
        removed.sort();
        for n in &removed {
            self.returned.remove(n);
        }
        self.base = Some(set.clone());
        (updates, removed)
    }

    /// Brings the client from its base set to `set`, touching only what
    /// changed: the wanted resources to send, and the names it had that
    /// `set` removed (forgotten). Without a base, [`reconcile`](Self::reconcile).
    pub fn advance(&mut self, set: &Arc<ResourceSet>) -> (Vec<SharedResource>, Vec<String>) {
        let Some(base) = self.base.clone() else {
            return self.reconcile(set);
        };
        let diff = ResourceSet::diff(&base, set);
        let mut updates = Vec::new();
        for r in &diff.changed {
            if self.wants(r.name()) && self.record(r) {
                updates.push(r.clone());
            }
        }
        let removed = diff
            .removed
            .iter()
            .filter_map(|r| self.returned.remove_entry(r.name()).map(|(n, _)| n))
            .collect();
        self.base = Some(set.clone());
        (updates, removed)
    }

    /// Applies a delta request: its first one (with the versions the client
    /// already has), names to subscribe and to unsubscribe (`*`: the
    /// wildcard).
    pub fn update_delta(
        &mut self,
        kind: ResourceType,
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
        initial_versions: HashMap<String, String>,
    ) -> DeltaChange {
        let mut change = DeltaChange::default();
        if !self.subscribed {
            self.subscribed = true;
            self.wildcard = subscribe.is_empty() && kind.wildcard_by_default();
            self.returned = initial_versions;
            change.first = true;
            change.everything = true;
        }
        for name in subscribe {
            if name == "*" {
                change.everything |= !self.wildcard;
                self.wildcard = true;
            } else if self.names.insert(name.clone()) && !self.wildcard {
                change.added.push(name);
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
                let names = &self.names;
                self.returned.retain(|n, _| names.contains(n));
            } else {
                self.names.remove(&name);
                if !self.wildcard {
                    self.returned.remove(&name);
                }
            }
        }
        change
    }

    /// Applies a SotW request's whole list: `names` (`wildcard` when it
    /// holds `*`, or is empty for a type that defaults to it). Returns the
    /// names newly wanted, or `None` if the subscription did not change.
    /// For a type sent by resource, what the client no longer wants, and
    /// what it asks for again, are forgotten: it gets them anew.
    pub fn update_sotw(
        &mut self,
        kind: ResourceType,
        names: BTreeSet<String>,
        wildcard: bool,
    ) -> Option<Vec<String>> {
        if self.subscribed && names == self.names && wildcard == self.wildcard {
            return None;
        }
        let mut added = Vec::new();
        if !self.subscribed || (wildcard && !self.wildcard) {
            // Compare everything against the current set.
            self.base = None;
        } else if !kind.complete_in_sotw() {
            added = names.difference(&self.names).cloned().collect();
            self.returned.retain(|n, _| wildcard || names.contains(n));
            for n in &added {
                self.returned.remove(n);
            }
        }
        self.subscribed = true;
        self.names = names;
        self.wildcard = wildcard;
        Some(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::snapshot::Snapshot;

    fn endpoints(ports: &[(&str, u32)]) -> Arc<ResourceSet> {
        let mut b = Snapshot::builder();
        for (name, port) in ports {
            b = b.cluster(&eds_cluster(name)).endpoints(&cla(name, *port));
        }
        b.build()
            .unwrap()
            .shared_set(ResourceType::Endpoint)
            .clone()
    }

    fn names(resources: &[SharedResource]) -> Vec<&str> {
        resources.iter().map(|r| r.name()).collect()
    }

    #[test]
    fn advance_sends_only_what_changed_and_reports_removals() {
        let mut sub = Subscription::default();
        let change = sub.update_delta(
            ResourceType::Endpoint,
            vec!["a".into(), "b".into()],
            vec![],
            HashMap::new(),
        );
        assert_eq!(
            change,
            DeltaChange {
                first: true,
                everything: true,
                added: vec!["a".into(), "b".into()]
            }
        );
        let v1 = endpoints(&[("a", 1), ("b", 1), ("c", 1)]);
        let (sent, removed) = sub.reconcile(&v1);
        assert_eq!((names(&sent), removed.len()), (vec!["a", "b"], 0));
        // b changes, c (not wanted) changes, a is removed.
        let v2 = endpoints(&[("b", 2), ("c", 2)]);
        let (sent, removed) = sub.advance(&v2);
        assert_eq!((names(&sent), removed), (vec!["b"], vec!["a".to_string()]));
        // Nothing new: nothing to send.
        assert_eq!(sub.advance(&v2).0.len(), 0);
        // Unsubscribing forgets what the client had; a wildcard wants all.
        let change = sub.update_delta(
            ResourceType::Endpoint,
            vec!["*".into()],
            vec!["b".into()],
            HashMap::new(),
        );
        assert!(change.everything && !change.first);
        let (sent, _) = sub.reconcile(&v2);
        assert_eq!(
            names(&sent),
            vec!["c"],
            "b was sent in this version already"
        );
    }

    #[test]
    fn a_repeated_sotw_list_changes_nothing_and_re_requested_names_are_sent_again() {
        let mut sub = Subscription::default();
        let set: BTreeSet<String> = ["a".to_string()].into();
        assert_eq!(
            sub.update_sotw(ResourceType::Endpoint, set.clone(), false),
            Some(vec![])
        );
        let v1 = endpoints(&[("a", 1), ("b", 1)]);
        assert_eq!(names(&sub.reconcile(&v1).0), vec!["a"]);
        assert_eq!(sub.update_sotw(ResourceType::Endpoint, set, false), None);
        let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(
            sub.update_sotw(ResourceType::Endpoint, both, false),
            Some(vec!["b".to_string()])
        );
        assert!(sub.wants("b") && !sub.wants("c"));
        assert_eq!(sub.returned.len(), 1, "a is still known, b is not yet");
    }
}
