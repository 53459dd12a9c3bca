//! Leader election with a `coordination.k8s.io/v1` `Lease`, in the manner
//! of client-go's `leaderelection`: the leader renews the lease every
//! `retry`; a candidate takes it over once the lease record has not changed
//! for `duration` **as measured on the candidate's own monotonic clock**
//! (from when it first saw that record), so clock skew between nodes cannot
//! make a live lease look expired. Every write carries the
//! `resourceVersion` it read, so of two candidates racing for an expired
//! lease exactly one wins (the other gets `409 Conflict`).
//!
//! The leader stops leading when no renewal succeeded within the renew
//! deadline (two thirds of `duration`, counted from the start of the last
//! successful request; each request is cut off after `retry`), which is
//! before any candidate may take over. The controllers exit then, so a
//! replica never acts on a lease it may have lost. Only the leader
//! reconciles; the others keep their reflectors warm.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::{K8sError, api_error};

/// One candidate for one lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
    /// The lease record last seen (its resourceVersion) and when, on the
    /// local monotonic clock.
    observed: std::sync::Arc<std::sync::Mutex<Option<(String, Instant)>>>,
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl LeaseLock {
    /// Candidate `holder` (unique per replica, e.g. the pod name) for the
    /// lease `namespace/name`, held for `duration` after each renewal.
    pub fn new(
        client: &Client,
        namespace: &str,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client.clone(), namespace),
            name: name.to_owned(),
            holder: holder.to_owned(),
            duration,
            observed: Default::default(),
        }
    }

    /// Whether the lease record `version` has stood unchanged for the lease
    /// duration since this candidate first saw it.
    fn unchanged_for_duration(&self, version: &str) -> bool {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.as_ref() {
            Some((seen, since)) if seen == version => since.elapsed() >= self.duration,
            _ => {
                *observed = Some((version.to_owned(), Instant::now()));
                false
            }
        }
    }

    /// The identity this candidate holds the lease as.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn spec(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(micro_now)),
            renew_time: Some(micro_now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Acquires the lease if it is free or expired, renews it if this
    /// candidate holds it; returns whether this candidate leads now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, K8sError> {
        let what = || format!("lease {}", self.name);
        let Some(current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(api_error(what()))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(api_error(what())(e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !held_by_me && !free && !self.unchanged_for_duration(&version) {
            return Ok(false);
        }
        let transitions = spec
            .lease_transitions
            .unwrap_or(0)
            .saturating_add(i32::from(!held_by_me));
        let acquired = held_by_me.then(|| spec.acquire_time.clone()).flatten();
        let mut next = current;
        next.spec = Some(self.spec(acquired, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else renewed or took it since we read it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(api_error(what())(e)),
        }
    }

    /// Gives the lease up (if held), so another candidate takes over at once.
    pub async fn release(&self) -> Result<(), K8sError> {
        let what = || format!("lease {}", self.name);
        let Some(mut current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(api_error(what()))?
        else {
            return Ok(());
        };
        let Some(spec) = current.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(api_error(what())(e)),
        }
    }

    /// Runs the election until `stop` is set: tries every `retry` while not
    /// leading and renews every `retry` while leading. The receiver says
    /// whether this candidate leads; it turns `false` when no renewal
    /// succeeded within the renew deadline. The task releases the lease
    /// when `stop` is set; await its handle to know it did.
    pub fn campaign(
        self,
        retry: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let renew_deadline = self.duration * 2 / 3;
        let task = tokio::spawn(async move {
            let mut last_renewal: Option<tokio::time::Instant> = None;
            loop {
                let started = tokio::time::Instant::now();
                let attempt = tokio::time::timeout(retry, self.try_acquire_or_renew()).await;
                let leading = match attempt {
                    Ok(Ok(true)) => {
                        last_renewal = Some(started);
                        true
                    }
                    Ok(Ok(false)) => false,
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {retry:?}"),
                        };
                        tracing::warn!(holder = %self.holder, %error, "lease request failed");
                        // Still leading until the renew deadline passes.
                        last_renewal.is_some_and(|t| t.elapsed() < renew_deadline)
                    }
                };
                if !leading {
                    last_renewal = None;
                }
                if *tx.borrow() != leading {
                    tracing::info!(holder = %self.holder, leading, "leadership changed");
                    tx.send_replace(leading);
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = crate::stopped(&mut stop) => break,
                }
            }
            if *tx.borrow() {
                tx.send_replace(false);
                let _ = tokio::time::timeout(retry, self.release()).await;
            }
        });
        (rx, task)
    }
}
