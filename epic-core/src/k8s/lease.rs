//! Leader election with a `coordination.k8s.io/v1` `Lease`, as client-go's
//! `leaderelection` does it: the leader renews the lease every
//! `renew_every`; a candidate takes it over once it has not been renewed
//! for `duration`. Every write carries the `resourceVersion` it read, so of
//! two candidates racing for an expired lease exactly one wins (the other
//! gets `409 Conflict`).
//!
//! Only the leader reconciles; the others keep their reflectors warm, so a
//! hand-over costs one lease duration and no relist. A leader that fails to
//! renew before its lease expires stops leading (and the controllers exit,
//! so a replica never acts on a lease it may have lost).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use super::{K8sError, api_error};

/// One candidate for one lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
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
        if !held_by_me && !expired(&spec) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_me);
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
    /// whether this candidate leads; it turns `false` when a renewal has
    /// not succeeded within the lease duration.
    pub fn campaign(
        self,
        retry: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut last_renewal: Option<tokio::time::Instant> = None;
            loop {
                let leading = match self.try_acquire_or_renew().await {
                    Ok(true) => {
                        last_renewal = Some(tokio::time::Instant::now());
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        tracing::warn!(holder = %self.holder, error = %e, "lease request failed");
                        // Still leading until the lease we hold runs out.
                        last_renewal.is_some_and(|t| t.elapsed() < self.duration)
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
                    _ = super::stopped(&mut stop) => break,
                }
            }
            if *tx.borrow() {
                let _ = self.release().await;
                tx.send_replace(false);
            }
        });
        rx
    }
}

/// Whether a lease has not been renewed for its duration (or has no holder).
fn expired(spec: &LeaseSpec) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let until = renewed.0 + SignedDuration::from_secs(i64::from(seconds));
    until < Timestamp::now()
}
