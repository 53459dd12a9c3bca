//! Reflectors and the change stream the controllers reconcile on.
//!
//! Each kind a controller reads is kept in a [`Store`] by a kube-runtime
//! reflector (one LIST, then a WATCH that resumes from its resourceVersion
//! and re-lists after a `410 Gone`, with exponential backoff on errors).
//! Every reflector also reports that *something* changed; the plan is
//! global (IPAM and tunnel ids span every gateway), so the controllers do
//! not reconcile objects one by one but merge all reports into one stream
//! and run one global reconcile per debounced burst ([`Debouncer`]).

use std::fmt::Debug;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

/// One reported change: which kind it came from (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The kind whose reflector saw the change (`Gateway`, `Service`, ...).
    pub kind: &'static str,
}

/// The merged change reports of every reflector of a controller.
pub type Changes = SelectAll<BoxStream<'static, Change>>;

/// Starts a reflector for `api` (filtered by `config`, objects stored
/// without `managedFields`): returns its store and a stream that yields a [`Change`] for every applied or deleted
/// object and once when the initial list is complete. Watch errors are
/// logged and retried with backoff; the stream never ends on its own.
pub fn reflect<K>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, BoxStream<'static, Change>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher::watcher(api, config)
        .default_backoff()
        // Nothing reads `managedFields`, and server-side apply makes them a
        // large part of every object: the stores keep objects without them.
        .modify(|object| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .filter_map(move |event| async move {
            match event {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => Some(Change { kind }),
                Ok(Event::Init | Event::InitApply(_)) => None,
                Err(e) => {
                    tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                    None
                }
            }
        })
        .boxed();
    (reader, stream)
}

/// The objects of a store, sorted by namespace and name (stores hold them
/// in hash order; the plan's inputs are ordered as a LIST returns them).
pub fn sorted<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource + Clone,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut objects: Vec<Arc<K>> = store.state();
    objects.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    objects.into_iter().map(|o| (*o).clone()).collect()
}

/// Waits until `store` has seen its first complete list.
pub async fn ready<K>(kind: &str, store: &Store<K>) -> Result<(), String>
where
    K: Resource + Clone,
    K::DynamicType: Eq + Hash + Clone,
{
    store
        .wait_until_ready()
        .await
        .map_err(|e| format!("the {kind} reflector stopped before its first list: {e}"))
}

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Objects changed: how many reports the burst had (at least one).
    Changed(usize),
    /// The periodic resync (a safety net, not the mechanism).
    Resync,
}

/// Turns a change stream into reconcile triggers: after the first report it
/// waits until no report came for `quiet` (at most `max_delay` in all), so a
/// burst of changes (a controller's own writes, a tenant applying fifty
/// objects) costs one reconcile. Without changes, a [`Trigger::Resync`]
/// comes every `resync`.
pub struct Debouncer<S> {
    changes: Pin<Box<S>>,
    quiet: Duration,
    max_delay: Duration,
    resync: tokio::time::Interval,
}

impl<S: Stream<Item = Change>> Debouncer<S> {
    /// A debouncer over `changes`.
    pub fn new(changes: S, quiet: Duration, max_delay: Duration, resync: Duration) -> Self {
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + resync,
            resync.max(Duration::from_secs(1)),
        );
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Debouncer {
            changes: Box::pin(changes),
            quiet,
            max_delay,
            resync,
        }
    }

    /// The next trigger; `None` once the change stream has ended.
    pub async fn next(&mut self) -> Option<Trigger> {
        tokio::select! {
            change = self.changes.next() => {
                change?;
            }
            _ = self.resync.tick() => return Some(Trigger::Resync),
        }
        let mut count = 1;
        let deadline = tokio::time::Instant::now() + self.max_delay;
        loop {
            let wait =
                tokio::time::sleep_until((tokio::time::Instant::now() + self.quiet).min(deadline));
            tokio::select! {
                change = self.changes.next() => {
                    if change.is_none() {
                        break;
                    }
                    count += 1;
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
                _ = wait => break,
            }
        }
        self.resync.reset();
        Some(Trigger::Changed(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_trigger_and_quiet_means_resync() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut debouncer = Debouncer::new(
            stream,
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        for _ in 0..5 {
            tx.send(Change { kind: "Gateway" }).unwrap();
        }
        assert_eq!(debouncer.next().await, Some(Trigger::Changed(5)));
        // A change every 50 ms never goes quiet: the burst is cut at max_delay.
        let sender = tx.clone();
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                if sender.send(Change { kind: "Node" }).is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = tokio::time::Instant::now();
        assert!(matches!(debouncer.next().await, Some(Trigger::Changed(n)) if n > 10));
        assert!(start.elapsed() <= Duration::from_millis(1100));
        feeder.abort();
        let _ = feeder.await;
        // Nothing for a minute: the safety net fires.
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), debouncer.changes.next()).await
        {
        }
        assert_eq!(debouncer.next().await, Some(Trigger::Resync));
        drop(tx);
    }
}
