//! The status sinks: each gateway's planned status, stamped
//! ([`epic_model::conditions::stamp`]) and written only where it differs from
//! the status the gateway has.
//!
//! Every patch carries the `resourceVersion` the controller read, so a
//! controller acting on a stale view (its store behind the API server, e.g.
//! another writer changed the gateway since) gets `409 Conflict` instead of
//! flipping addresses; the watch event that made the view stale triggers
//! the next reconcile, which writes from the fresh view. (Two writers with
//! equally fresh views are prevented by leader election, not by this.)

use k8s_openapi::jiff::{Timestamp, Unit};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use std::convert::Infallible;

use crate::index::ByKey;
use crate::round::PlatformRound;
use crate::{SinkReport, api_error, is_not_found};
use epic_engine::plan::{GatewayPlan, Plan};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_model::conditions::stamp;
use epic_model::{AddressPool, AddressPoolStatus, Gateway, GatewayStatus, ReleasedAddress};

/// Now as Kubernetes writes times: RFC 3339, whole seconds, UTC.
pub fn now_rfc3339() -> String {
    Timestamp::now()
        .round(Unit::Second)
        .unwrap_or_else(|_| Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The status `planned` would write over `current`'s: conditions (the
/// gateway's and each route's) stamped with the gateway's generation and
/// transition times kept where the status did not change.
pub fn stamped_status(
    planned: &GatewayPlan,
    current: Option<&Gateway>,
    now: &str,
) -> GatewayStatus {
    let generation = current.and_then(|g| g.metadata.generation);
    let previous = current.and_then(|g| g.status.as_ref());
    let mut status = planned.status.clone();
    status.conditions = stamp(
        status.conditions,
        previous.map_or(&[][..], |p| &p.conditions),
        generation,
        now,
    );
    for route in &mut status.routes {
        let before = previous
            .and_then(|p| p.routes.iter().find(|r| r.name == route.name))
            .map_or(&[][..], |r| &r.conditions);
        route.conditions = stamp(
            std::mem::take(&mut route.conditions),
            before,
            generation,
            now,
        );
    }
    status
}

/// Records the held-back addresses ([`epic_engine::grace`]) in their pools'
/// status, patching only pools whose list changed (`current`: the pools as
/// read). A pool deleted meanwhile is skipped.
pub async fn write_pool_statuses(
    client: &Client,
    plan: &Plan,
    current: &[AddressPool],
) -> SinkReport {
    let mut report = SinkReport::default();
    let api: Api<AddressPool> = Api::all(client.clone());
    for pool in current {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        let wanted: Vec<ReleasedAddress> = plan
            .recorded
            .released
            .iter()
            .filter(|r| r.pool == name)
            .cloned()
            .collect();
        let now: &[ReleasedAddress] = pool.status.as_ref().map_or(&[], |s| &s.released);
        if now == wanted.as_slice() {
            continue;
        }
        let patch = json!({ "status": AddressPoolStatus { released: wanted } });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => report.done.push(name.to_owned()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => report
                .failed
                .push(api_error(format!("patch status of AddressPool {name}"))(e)),
        }
    }
    report
}

/// Patches the status of every gateway whose stamped status differs from
/// its current one (`current`: the gateways as read, with their
/// `resourceVersion`). A gateway deleted meanwhile (404) is skipped; a
/// stale view (409) is reported as failed.
pub async fn write_statuses(client: &Client, plan: &Plan, current: &[Gateway]) -> SinkReport {
    let now = now_rfc3339();
    let mut report = SinkReport::default();
    let current = ByKey::new(current);
    for g in &plan.gateways {
        let now_gw = current.get(&g.namespace, &g.name);
        let status = stamped_status(g, now_gw, &now);
        if now_gw.and_then(|c| c.status.as_ref()) == Some(&status) {
            continue;
        }
        let api: Api<Gateway> = Api::namespaced(client.clone(), &g.namespace);
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        // A merge patch keeps what it does not mention: clear a DNS name
        // that is gone explicitly.
        if status.dns_name.is_none() {
            body["dnsName"] = serde_json::Value::Null;
        }
        let mut patch = json!({ "status": body });
        if let Some(version) = now_gw.and_then(|c| c.metadata.resource_version.clone()) {
            patch["metadata"] = json!({ "resourceVersion": version });
        }
        let what = format!("{}/{}", g.namespace, g.name);
        match api
            .patch_status(&g.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => report.done.push(what),
            Err(e) if is_not_found(&e) => {}
            Err(e) => report
                .failed
                .push(api_error(format!("patch status of Gateway {what}"))(e)),
        }
    }
    report
}

/// The gateway status sink of the gateway controller: [`write_statuses`].
#[derive(Clone)]
pub struct GatewayStatusSink {
    client: Client,
}

impl GatewayStatusSink {
    /// A sink writing through `client`.
    pub fn new(client: Client) -> Self {
        GatewayStatusSink { client }
    }
}

impl Sink<PlatformRound, Infallible> for GatewayStatusSink {
    fn name(&self) -> &'static str {
        "gateway status"
    }

    fn apply<'a>(&'a mut self, round: &'a mut PlatformRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            let report = write_statuses(&self.client, &round.plan, round.loaded.gateways()).await;
            round.done.statuses = report.done;
            round.done.record_failures(&report.failed);
            Ok(())
        })
    }
}

/// The pool status sink of the gateway controller: the released addresses
/// held back ([`write_pool_statuses`]).
#[derive(Clone)]
pub struct PoolStatusSink {
    client: Client,
}

impl PoolStatusSink {
    /// A sink writing through `client`.
    pub fn new(client: Client) -> Self {
        PoolStatusSink { client }
    }
}

impl Sink<PlatformRound, Infallible> for PoolStatusSink {
    fn name(&self) -> &'static str {
        "pool status"
    }

    fn apply<'a>(&'a mut self, round: &'a mut PlatformRound) -> SinkFuture<'a, Infallible> {
        Box::pin(async move {
            let pools = &round.loaded.inputs.pools;
            let report = write_pool_statuses(&self.client, &round.plan, pools).await;
            round.done.record_failures(&report.failed);
            Ok(())
        })
    }
}
