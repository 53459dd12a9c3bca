//! The node-key sink of the cluster controller: each node of this user
//! cluster that a planned tunnel ends on gets its hello key — derived from
//! the cluster key the gateway controller keeps on the platform
//! ([`crate::tunnel_keys`]), read with the tenant's credentials — in a
//! Secret of its own, `epic-node-key-<node>`, in the namespace the
//! cluster agents run in. An agent reads only its node's Secret (its node
//! name from the downward API), so it can sign hellos for its own tunnels
//! and no other node's; the cluster key never leaves the platform.
//!
//! Each Secret carries the [`KEY_FINGERPRINT_ANNOTATION`] of the cluster
//! key it was derived from (a SHA-256 prefix, which tells nothing of the
//! key): a changed cluster key rewrites every node's Secret. A node that
//! no tunnel ends on any more loses its Secret. No key is ever put in a
//! status, an event or a log line.

use std::collections::{BTreeMap, BTreeSet};

use epic_gue::hello::HelloKey;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sha2::Digest;

use crate::round::ClusterRound;
use crate::tunnel_keys::TUNNEL_KEYS_SECRET;
use crate::{K8sError, api_error};
use epic_engine::mirror::{MANAGED_BY, MANAGED_BY_LABEL};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_model::Gateway;

/// The prefix of each node's key Secret (`epic-node-key-<node>`).
pub const NODE_KEY_PREFIX: &str = "epic-node-key-";

/// The label naming the node a key Secret is for.
pub const NODE_LABEL: &str = "epic-gateway.org/node";

/// The annotation holding the fingerprint of the cluster key a node key
/// was derived from.
pub const KEY_FINGERPRINT_ANNOTATION: &str = "epic-gateway.org/cluster-key-fingerprint";

/// The data key of the node's hello key (64 hex digits).
pub const NODE_KEY_DATA: &str = "key";

/// The field manager of the node-key Secrets.
const FIELD_MANAGER: &str = "epic-cluster-controller";

/// The Secret name of `node`'s key.
pub fn node_key_secret(node: &str) -> String {
    format!("{NODE_KEY_PREFIX}{node}")
}

/// A key's fingerprint: the first 16 hex digits of its SHA-256.
pub fn fingerprint(key: &HelloKey) -> String {
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The nodes of `cluster` that a tunnel of `gateways` (their platform
/// status) ends on.
pub fn nodes_with_tunnels<'a>(
    gateways: impl IntoIterator<Item = &'a Gateway>,
    cluster: &str,
) -> BTreeSet<String> {
    gateways
        .into_iter()
        .filter_map(|g| g.status.as_ref())
        .flat_map(|s| &s.tunnels)
        .filter(|t| t.cluster == cluster)
        .map(|t| t.node.clone())
        .collect()
}

/// Where the node keys come from and go.
#[derive(Debug, Clone)]
pub struct NodeKeyTarget {
    /// The tenant's namespace on the platform (where the cluster keys are).
    pub tenant_namespace: String,
    /// This user cluster's id.
    pub cluster: String,
    /// The user-cluster namespace the cluster agents run in.
    pub namespace: String,
}

/// The sink, with what it wrote: each node's Secret and the fingerprint of
/// its cluster key (`None` until listed).
pub struct NodeKeySink {
    user: Client,
    platform: Client,
    target: NodeKeyTarget,
    written: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for NodeKeySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeySink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl NodeKeySink {
    /// A sink reading cluster keys through `platform` (the tenant's
    /// credentials) and writing node keys through `user`.
    pub fn new(user: Client, platform: Client, target: NodeKeyTarget) -> Self {
        NodeKeySink {
            user,
            platform,
            target,
            written: None,
        }
    }

    /// Gives each of `nodes` its key and takes it from the others; one
    /// error per object that could not be read or written.
    pub async fn sync(&mut self, nodes: &BTreeSet<String>) -> Vec<K8sError> {
        let secrets: Api<Secret> = Api::namespaced(self.user.clone(), &self.target.namespace);
        let mut written = match self.written.take() {
            Some(w) => w,
            None => match list_written(&secrets).await {
                Ok(w) => w,
                Err(e) => return vec![e],
            },
        };
        let mut failed = Vec::new();
        if !nodes.is_empty() {
            match self.cluster_key().await {
                Ok(key) => {
                    let print = fingerprint(&key);
                    for node in nodes {
                        if written.get(node) == Some(&print) {
                            continue;
                        }
                        match write_node_key(&secrets, node, &key, &print).await {
                            Ok(()) => {
                                written.insert(node.clone(), print.clone());
                            }
                            Err(e) => failed.push(e),
                        }
                    }
                }
                Err(e) => failed.push(e),
            }
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|n| !nodes.contains(*n))
            .cloned()
            .collect();
        for node in gone {
            let name = node_key_secret(&node);
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    written.remove(&node);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    written.remove(&node);
                }
                Err(e) => failed.push(api_error(format!("delete node key Secret {name}"))(e)),
            }
        }
        // After a failure, list again next time: the truth is in the API.
        self.written = failed.is_empty().then_some(written);
        failed
    }

    /// This cluster's key, from the tenant's platform namespace.
    async fn cluster_key(&self) -> Result<HelloKey, K8sError> {
        let (ns, cluster) = (&self.target.tenant_namespace, &self.target.cluster);
        let what = format!("tunnel keys Secret {ns}/{TUNNEL_KEYS_SECRET} on the platform");
        let secrets: Api<Secret> = Api::namespaced(self.platform.clone(), ns);
        let secret = secrets
            .get_opt(TUNNEL_KEYS_SECRET)
            .await
            .map_err(api_error(&what))?;
        let missing = |message: String| K8sError::Key {
            what: what.clone(),
            message,
        };
        let value = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(cluster))
            .ok_or_else(|| missing(format!("no key for cluster {cluster} yet")))?;
        std::str::from_utf8(&value.0)
            .ok()
            .and_then(|hex| HelloKey::from_hex(hex.trim()))
            .ok_or_else(|| missing(format!("the key of cluster {cluster} is not 64 hex digits")))
    }
}

/// The node-key Secrets that exist: node → fingerprint.
async fn list_written(secrets: &Api<Secret>) -> Result<BTreeMap<String, String>, K8sError> {
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{NODE_LABEL}");
    let list = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error("list node key Secrets"))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|s| {
            let node = s.metadata.labels.as_ref()?.get(NODE_LABEL)?.clone();
            let print = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(KEY_FINGERPRINT_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            Some((node, print))
        })
        .collect())
}

/// Writes `node`'s key, derived from `cluster_key`, into its Secret.
async fn write_node_key(
    secrets: &Api<Secret>,
    node: &str,
    cluster_key: &HelloKey,
    print: &str,
) -> Result<(), K8sError> {
    let name = node_key_secret(node);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                (NODE_LABEL.to_owned(), node.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                KEY_FINGERPRINT_ANNOTATION.to_owned(),
                print.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            NODE_KEY_DATA.to_owned(),
            ByteString(cluster_key.node_key(node).to_hex().into_bytes()),
        )])),
        ..Default::default()
    };
    secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(api_error(format!("write node key Secret {name}")))?;
    Ok(())
}

impl Sink<ClusterRound, std::convert::Infallible> for NodeKeySink {
    fn name(&self) -> &'static str {
        "node keys"
    }

    fn apply<'a>(
        &'a mut self,
        round: &'a mut ClusterRound,
    ) -> SinkFuture<'a, std::convert::Infallible> {
        Box::pin(async move {
            let state = round.mirrored.gateways.state();
            let nodes = nodes_with_tunnels(state.iter().map(|g| g.as_ref()), &self.target.cluster);
            let failed = self.sync(&nodes).await;
            round
                .done
                .errors
                .extend(failed.iter().map(ToString::to_string));
            Ok(())
        })
    }
}
