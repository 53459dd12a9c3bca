//! The tunnel-key sink of the gateway controller: each user cluster with a
//! planned tunnel gets a cluster key, generated here from the kernel's
//! random source and kept in the Secret [`TUNNEL_KEYS_SECRET`] of its
//! tenant's platform namespace (one data entry per cluster, 64 hex
//! digits). A key, once written, is never changed by the controller: a
//! restart or another leader keeps every tunnel's key. The Secret is owned
//! by the `Tenant`, so it goes with it.
//!
//! Hellos are verified with each node's key, derived from its cluster's
//! ([`epic_gue::hello::HelloKey::node_key`]); the tenant's cluster
//! controller reads this Secret with the tenant's credentials and gives
//! each node only its own key ([`crate::node_keys`]). No key is ever put in
//! a status, an event or a log line.

use std::collections::{BTreeMap, BTreeSet};

use epic_gue::hello::HelloKey;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::round::PlatformRound;
use crate::{K8sError, MANAGED_BY, api_error};
use epic_engine::plan::Plan;
use epic_engine::runtime::{Sink, SinkFuture};
use epic_model::Tenant;

/// The Secret, in each tenant's platform namespace, holding the cluster
/// key of each of the tenant's clusters (data key: the cluster id).
pub const TUNNEL_KEYS_SECRET: &str = "epic-tunnel-keys";

/// The clusters with a planned tunnel, by platform namespace.
pub fn clusters_with_tunnels(plan: &Plan) -> BTreeMap<String, BTreeSet<String>> {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &plan.gateways {
        for t in &g.status.tunnels {
            wanted
                .entry(g.namespace.clone())
                .or_default()
                .insert(t.cluster.clone());
        }
    }
    wanted
}

/// A new cluster key from the kernel's random source.
fn new_key() -> Result<HelloKey, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the kernel's random source: {e}"))?;
    Ok(HelloKey::new(bytes))
}

/// Whether `value` is a cluster key (64 hex digits).
fn is_key(value: &ByteString) -> bool {
    std::str::from_utf8(&value.0).is_ok_and(|hex| HelloKey::from_hex(hex.trim()).is_some())
}

/// How long the sink trusts what it wrote before reading the Secrets
/// again (so one deleted by hand comes back).
pub const REVALIDATE: std::time::Duration = std::time::Duration::from_secs(300);

/// The sink: what it knows to be written, so a reconcile costs a request
/// only when a cluster is new (or every [`REVALIDATE`]).
pub struct TunnelKeySink {
    client: Client,
    /// Clusters known to have a key, by namespace.
    written: BTreeMap<String, BTreeSet<String>>,
    /// When `written` was last emptied, and how often it is.
    read_at: std::time::Instant,
    revalidate: std::time::Duration,
}

impl std::fmt::Debug for TunnelKeySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clusters only: never a key.
        f.debug_struct("TunnelKeySink")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl TunnelKeySink {
    /// A sink writing through `client`.
    pub fn new(client: Client) -> Self {
        TunnelKeySink {
            client,
            written: BTreeMap::new(),
            read_at: std::time::Instant::now(),
            revalidate: REVALIDATE,
        }
    }

    /// The same sink, reading the Secrets again every `revalidate`.
    pub fn with_revalidation(mut self, revalidate: std::time::Duration) -> Self {
        self.revalidate = revalidate;
        self
    }

    /// Gives every cluster of `plan` with a tunnel a key; one error per
    /// namespace that could not be written (the others go on).
    pub async fn ensure(&mut self, plan: &Plan, tenants: &[Tenant]) -> Vec<K8sError> {
        if self.read_at.elapsed() >= self.revalidate {
            self.written.clear();
            self.read_at = std::time::Instant::now();
        }
        let mut failed = Vec::new();
        for (ns, clusters) in clusters_with_tunnels(plan) {
            if self
                .written
                .get(&ns)
                .is_some_and(|w| w.is_superset(&clusters))
            {
                continue;
            }
            let owner = tenants.iter().find(|t| t.spec.namespace == ns);
            match ensure_keys(&self.client, &ns, &clusters, owner).await {
                Ok(written) => {
                    self.written.insert(ns, written);
                }
                Err(e) => failed.push(e),
            }
        }
        failed
    }
}

/// The tenant as the owner of its keys (so they go with it).
fn owner_of(tenant: &Tenant) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "epic-gateway.org/v1alpha1".into(),
        kind: "Tenant".into(),
        name: tenant.metadata.name.clone()?,
        uid: tenant.metadata.uid.clone()?,
        ..Default::default()
    })
}

/// Adds a key for each of `clusters` that `ns`'s Secret lacks (or holds
/// something else than a key for); returns the clusters it then has.
async fn ensure_keys(
    client: &Client,
    ns: &str,
    clusters: &BTreeSet<String>,
    owner: Option<&Tenant>,
) -> Result<BTreeSet<String>, K8sError> {
    let what = format!("tunnel keys Secret {ns}/{TUNNEL_KEYS_SECRET}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let current = secrets
        .get_opt(TUNNEL_KEYS_SECRET)
        .await
        .map_err(api_error(&what))?;
    let data = current
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    let mut added = BTreeMap::new();
    for cluster in clusters {
        if !data.get(cluster).is_some_and(is_key) {
            let key = new_key().map_err(|message| K8sError::Key {
                what: what.clone(),
                message,
            })?;
            added.insert(cluster.clone(), ByteString(key.to_hex().into_bytes()));
        }
    }
    let mut have: BTreeSet<String> = data.keys().cloned().collect();
    have.extend(added.keys().cloned());
    if added.is_empty() {
        return Ok(have);
    }
    match current {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(TUNNEL_KEYS_SECRET.into()),
                    namespace: Some(ns.into()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        MANAGED_BY.to_owned(),
                    )])),
                    owner_references: owner.and_then(owner_of).map(|o| vec![o]),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(added),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(api_error(format!("create {what}")))?;
        }
        Some(existing) => {
            // Only the new entries, on the version read: a concurrent
            // writer makes this fail (and the next reconcile read again)
            // instead of replacing a key a node may already use.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "data": added,
            });
            secrets
                .patch(
                    TUNNEL_KEYS_SECRET,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(api_error(format!("add keys to {what}")))?;
        }
    }
    Ok(have)
}

impl Sink<PlatformRound, std::convert::Infallible> for TunnelKeySink {
    fn name(&self) -> &'static str {
        "tunnel keys"
    }

    fn apply<'a>(
        &'a mut self,
        round: &'a mut PlatformRound,
    ) -> SinkFuture<'a, std::convert::Infallible> {
        Box::pin(async move {
            let failed = self.ensure(&round.plan, &round.loaded.inputs.tenants).await;
            round.done.record_failures(&failed);
            Ok(())
        })
    }
}
