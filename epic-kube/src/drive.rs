//! The loop both controllers run: wait for the caches, then reconcile once
//! per debounced trigger while this replica leads (always, without a
//! lease). A replica that loses its lease stops with an error, so its
//! process restarts as a candidate with fresh state.

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use kube::Client;
use tokio::sync::watch;

use crate::lease::LeaseLock;
use crate::ops::{Health, Metrics};
use crate::reflect::{Change, Debouncer, Trigger};

/// The lease of leader election.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Namespace of the `Lease`.
    pub namespace: String,
    /// Name of the `Lease`.
    pub name: String,
    /// This replica's identity (the pod name).
    pub holder: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the leader renews and candidates retry.
    pub retry: Duration,
}

/// Polls `triggers` (so the reflectors fill their stores) until `ready`
/// resolves; `Ok(false)` if `stop` came first.
pub async fn wait_ready<S: Stream<Item = Change>>(
    ready: impl Future<Output = Result<(), String>>,
    triggers: &mut Debouncer<S>,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, String> {
    tokio::pin!(ready);
    loop {
        tokio::select! {
            result = &mut ready => return result.map(|()| true),
            _ = triggers.next() => {}
            _ = crate::stopped(stop) => return Ok(false),
        }
    }
}

/// When to reconcile: on taking the lead, then once per trigger while
/// leading. The controllers loop on [`Leadership::next`]:
///
/// ```text
/// let mut lead = Leadership::start(&client, lease.as_ref(), &health, &metrics, &stop);
/// loop {
///     match lead.next(&mut triggers, &mut stop).await? {
///         Step::Lead => { reconcile().await; lead.reconciled(); }
///         Step::Standby => observe(),
///         Step::Stop => break,
///     }
/// }
/// lead.finish().await;
/// ```
pub struct Leadership<'a> {
    health: &'a Health,
    metrics: &'a Metrics,
    leading: watch::Receiver<bool>,
    campaign: Option<tokio::task::JoinHandle<()>>,
    // Without election: the sender of an always-true `leading`, kept so that
    // `changed` never resolves.
    _always: watch::Sender<bool>,
    led: bool,
    pending: bool,
}

impl<'a> Leadership<'a> {
    /// Marks the caches synced and starts the campaign for `lease` (none:
    /// this replica leads at once).
    pub fn start(
        client: &Client,
        lease: Option<&LeaseOptions>,
        health: &'a Health,
        metrics: &'a Metrics,
        stop: &watch::Receiver<bool>,
    ) -> Self {
        health.set_synced();
        tracing::info!("caches synced");
        let (always_tx, always) = watch::channel(true);
        let (leading, campaign) = match lease {
            Some(lease) => {
                let (leading, task) = LeaseLock::new(
                    client,
                    &lease.namespace,
                    &lease.name,
                    &lease.holder,
                    lease.duration,
                )
                .campaign(lease.retry, stop.clone());
                (leading, Some(task))
            }
            None => (always, None),
        };
        Leadership {
            health,
            metrics,
            leading,
            campaign,
            _always: always_tx,
            led: false,
            pending: true,
        }
    }

    /// Waits until something is due: [`Step::Lead`] to reconcile now,
    /// [`Step::Standby`] when the stores changed while another replica
    /// leads (to keep derived, unwritten state such as xDS snapshots warm),
    /// [`Step::Stop`] once `stop` is set; an error if the lease was lost or
    /// the reflectors stopped.
    pub async fn next<S: Stream<Item = Change>>(
        &mut self,
        triggers: &mut Debouncer<S>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, String> {
        loop {
            let is_leader = *self.leading.borrow();
            if self.led && !is_leader {
                self.health.set_leading(false);
                self.metrics.leader.set(0);
                return Err("lost the leader lease".into());
            }
            if is_leader && !self.led {
                tracing::info!("leading: reconciling");
                (self.led, self.pending) = (true, true);
                self.health.set_leading(true);
                self.metrics.leader.set(1);
            }
            if self.pending {
                self.pending = false;
                return Ok(if self.led { Step::Lead } else { Step::Standby });
            }
            tokio::select! {
                trigger = triggers.next() => match trigger {
                    Some(Trigger::Changed(n)) => {
                        tracing::debug!(changes = n, "changes");
                        self.pending = true;
                    }
                    Some(Trigger::Resync) => self.pending = true,
                    None => return Err("the reflectors stopped".into()),
                },
                // `triggers.next()` is not cancel-safe to drop for nothing:
                // this arm resolves only on a real leadership change.
                changed = self.leading.changed() => {
                    if changed.is_err() {
                        return Err("the lease campaign stopped".into());
                    }
                }
                _ = crate::stopped(stop) => return Ok(Step::Stop),
            }
        }
    }

    /// A reconcile finished (readiness).
    pub fn reconciled(&self) {
        self.health.set_reconciled();
    }

    /// After a stop: waits (at most 5 s) until the campaign has released
    /// the lease, so the next leader takes over at once.
    pub async fn finish(self) {
        if let Some(task) = self.campaign {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// What [`Leadership::next`] says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reconcile (this replica leads).
    Lead,
    /// The stores changed while another replica leads.
    Standby,
    /// Stop.
    Stop,
}
