//! The node-key sink of the cluster controller: each node of this user
//! cluster that a planned tunnel ends on gets, in a Secret of its own,
//! `epic-node-key-<node>`, in the namespace the cluster agents run in:
//!
//! - [`NODE_KEY_DATA`]: its hello key, derived from the cluster key the
//!   gateway controller keeps on the platform ([`crate::tunnel_keys`]),
//!   read with the tenant's credentials;
//! - [`NODE_TUNNELS_DATA`]: its tunnels ([`NodeTunnel`], JSON): id, the
//!   gateway node's tunnel address, the tenant id the hellos carry, and the
//!   pod endpoints each may deliver to — from the platform gateways'
//!   status.
//!
//! An agent reads only its node's Secret (its node name from the downward
//! API), so it can sign hellos for its own tunnels and no other node's;
//! the cluster key never leaves the platform. Each Secret carries the
//! [`CONTENT_FINGERPRINT_ANNOTATION`] of what it holds (a SHA-256 prefix,
//! which tells nothing of the key): a changed cluster key or tunnel
//! rewrites it, nothing else does. A node that no tunnel ends on any more
//! loses its Secret. No key is ever put in a status, an event or a log
//! line.

use std::collections::{BTreeMap, BTreeSet};

use epic_gue::hello::HelloKey;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use sha2::Digest;

use crate::cluster::FIELD_MANAGER;
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

/// The annotation holding the fingerprint of what a node's Secret holds.
pub const CONTENT_FINGERPRINT_ANNOTATION: &str = "epic-gateway.org/content-fingerprint";

/// The data key of the node's hello key (64 hex digits).
pub const NODE_KEY_DATA: &str = "key";

/// The data key of the node's tunnels (a JSON array of [`NodeTunnel`]).
pub const NODE_TUNNELS_DATA: &str = "tunnels.json";

/// One tunnel of a node, as its agent needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeTunnel {
    /// Tunnel id.
    pub id: u32,
    /// The gateway node's tunnel address (hellos and packets go there).
    pub gateway: std::net::IpAddr,
    /// The tenant's data-path id, carried by the hellos.
    pub tenant_id: u32,
    /// The pod endpoints the tunnel may deliver to.
    pub endpoints: Vec<epic_model::TunnelEndpoint>,
}

/// The Secret name of `node`'s key.
pub fn node_key_secret(node: &str) -> String {
    format!("{NODE_KEY_PREFIX}{node}")
}

/// The fingerprint of a node Secret's content: the first 16 hex digits
/// of the SHA-256 of its key and its tunnels' JSON.
pub fn fingerprint(node_key: &HelloKey, tunnels_json: &[u8]) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(node_key.as_bytes());
    hash.update(tunnels_json);
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tunnels of each node of `cluster` that `gateways` (their platform
/// status) name, by node, each node's in id order. A tunnel whose status
/// lacks its gateway address or tenant id (written by an older
/// controller) is left out until the gateway controller writes them.
pub fn node_tunnels<'a>(
    gateways: impl IntoIterator<Item = &'a Gateway>,
    cluster: &str,
) -> BTreeMap<String, Vec<NodeTunnel>> {
    let mut nodes: BTreeMap<String, BTreeSet<NodeTunnel>> = BTreeMap::new();
    for t in gateways
        .into_iter()
        .filter_map(|g| g.status.as_ref())
        .flat_map(|s| &s.tunnels)
        .filter(|t| t.cluster == cluster)
    {
        let (Some(gateway), Some(tenant_id)) = (t.gateway_address, t.tenant_id) else {
            continue;
        };
        nodes.entry(t.node.clone()).or_default().insert(NodeTunnel {
            id: t.id,
            gateway,
            tenant_id,
            endpoints: t.endpoints.clone(),
        });
    }
    nodes
        .into_iter()
        .map(|(node, tunnels)| (node, tunnels.into_iter().collect()))
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
/// its content (`None` until listed, and again every
/// [`crate::tunnel_keys::REVALIDATE`], so a Secret deleted by hand comes
/// back).
pub struct NodeKeySink {
    user: Client,
    platform: Client,
    target: NodeKeyTarget,
    written: Option<BTreeMap<String, String>>,
    /// The cluster key, read once per revalidation period.
    cluster_key: Option<HelloKey>,
    listed_at: std::time::Instant,
    revalidate: std::time::Duration,
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
            cluster_key: None,
            listed_at: std::time::Instant::now(),
            revalidate: crate::tunnel_keys::REVALIDATE,
        }
    }

    /// The same sink, listing the Secrets again every `revalidate`.
    pub fn with_revalidation(mut self, revalidate: std::time::Duration) -> Self {
        self.revalidate = revalidate;
        self
    }

    /// Gives each of `nodes` its key and tunnels and takes them from the
    /// others; one error per object that could not be read or written.
    pub async fn sync(&mut self, nodes: &BTreeMap<String, Vec<NodeTunnel>>) -> Vec<K8sError> {
        let secrets: Api<Secret> = Api::namespaced(self.user.clone(), &self.target.namespace);
        if self.listed_at.elapsed() >= self.revalidate {
            self.written = None;
            self.cluster_key = None;
        }
        let mut written = match self.written.take() {
            Some(w) => w,
            None => match list_written(&secrets).await {
                Ok(w) => {
                    self.listed_at = std::time::Instant::now();
                    w
                }
                Err(e) => return vec![e],
            },
        };
        let mut failed = Vec::new();
        if !nodes.is_empty() {
            match self.cluster_key().await {
                Ok(key) => {
                    for (node, tunnels) in nodes {
                        let content = NodeSecret::new(node, &key, tunnels);
                        if written.get(node) == Some(&content.fingerprint) {
                            continue;
                        }
                        match content.write(&secrets).await {
                            Ok(()) => {
                                written.insert(node.clone(), content.fingerprint);
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
            .filter(|n| !nodes.contains_key(*n))
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

    /// This cluster's key, from the tenant's platform namespace (read
    /// again once per revalidation period).
    async fn cluster_key(&mut self) -> Result<HelloKey, K8sError> {
        if let Some(key) = &self.cluster_key {
            return Ok(key.clone());
        }
        let key = self.read_cluster_key().await?;
        self.cluster_key = Some(key.clone());
        Ok(key)
    }

    /// Reads this cluster's key from the platform.
    async fn read_cluster_key(&self) -> Result<HelloKey, K8sError> {
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
                .and_then(|a| a.get(CONTENT_FINGERPRINT_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            Some((node, print))
        })
        .collect())
}

/// What one node's Secret holds.
struct NodeSecret {
    node: String,
    key: HelloKey,
    tunnels: Vec<u8>,
    fingerprint: String,
}

impl NodeSecret {
    /// `node`'s Secret: its key, derived from `cluster_key`, and `tunnels`.
    fn new(node: &str, cluster_key: &HelloKey, tunnels: &[NodeTunnel]) -> Self {
        let key = cluster_key.node_key(node);
        let tunnels = serde_json::to_vec(tunnels).unwrap_or_default();
        NodeSecret {
            node: node.to_owned(),
            fingerprint: fingerprint(&key, &tunnels),
            key,
            tunnels,
        }
    }

    /// Writes it (server-side apply: only when it changed is it called).
    async fn write(&self, secrets: &Api<Secret>) -> Result<(), K8sError> {
        let name = node_key_secret(&self.node);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                    (NODE_LABEL.to_owned(), self.node.clone()),
                ])),
                annotations: Some(BTreeMap::from([(
                    CONTENT_FINGERPRINT_ANNOTATION.to_owned(),
                    self.fingerprint.clone(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (
                    NODE_KEY_DATA.to_owned(),
                    ByteString(self.key.to_hex().into_bytes()),
                ),
                (
                    NODE_TUNNELS_DATA.to_owned(),
                    ByteString(self.tunnels.clone()),
                ),
            ])),
            ..Default::default()
        };
        let what = format!("write node key Secret {name}");
        crate::apply_secret(secrets, &name, &secret, FIELD_MANAGER, &what).await
    }
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
            let nodes = node_tunnels(state.iter().map(|g| g.as_ref()), &self.target.cluster);
            let failed = self.sync(&nodes).await;
            round
                .done
                .errors
                .extend(failed.iter().map(ToString::to_string));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(tunnels: serde_json::Value) -> Gateway {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "epic-gateway.org/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "g", "namespace": "acme"},
            "spec": {"template": "tcp", "listeners": []},
            "status": {"tunnels": tunnels},
        }))
        .unwrap()
    }

    #[test]
    fn each_node_gets_its_own_clusters_complete_tunnels_in_id_order() {
        let a = gateway(serde_json::json!([
            {"id": 9, "cluster": "c1", "node": "n1", "gatewayNode": "gw1", "gatewayAddress": "198.51.100.1", "tenantId": 3,
             "endpoints": [{"address": "198.18.0.1", "port": 80, "protocol": "TCP"}]},
            {"id": 4, "cluster": "c1", "node": "n1", "gatewayNode": "gw2", "gatewayAddress": "198.51.100.2", "tenantId": 3},
            {"id": 5, "cluster": "c2", "node": "n1", "gatewayNode": "gw1", "gatewayAddress": "198.51.100.1", "tenantId": 3},
            // Written by an older controller: no address yet, left out.
            {"id": 6, "cluster": "c1", "node": "n2", "gatewayNode": "gw1"},
        ]));
        let nodes = node_tunnels([&a], "c1");
        assert_eq!(nodes.keys().collect::<Vec<_>>(), ["n1"]);
        let ids: Vec<u32> = nodes["n1"].iter().map(|t| t.id).collect();
        assert_eq!(ids, [4, 9]);
        assert_eq!(nodes["n1"][1].endpoints.len(), 1);
    }

    #[test]
    fn the_fingerprint_follows_the_key_and_the_tunnels_and_is_no_key() {
        let cluster = HelloKey::new([7; 32]);
        let tunnel = NodeTunnel {
            id: 1,
            gateway: "198.51.100.1".parse().unwrap(),
            tenant_id: 3,
            endpoints: Vec::new(),
        };
        let one = NodeSecret::new("n1", &cluster, std::slice::from_ref(&tunnel));
        assert_eq!(
            one.fingerprint,
            NodeSecret::new("n1", &cluster, std::slice::from_ref(&tunnel)).fingerprint
        );
        let moved = NodeTunnel {
            gateway: "198.51.100.2".parse().unwrap(),
            ..tunnel.clone()
        };
        assert_ne!(
            one.fingerprint,
            NodeSecret::new("n1", &cluster, &[moved]).fingerprint
        );
        let rekeyed = NodeSecret::new("n1", &HelloKey::new([8; 32]), &[tunnel]);
        assert_ne!(one.fingerprint, rekeyed.fingerprint);
        assert_eq!(one.fingerprint.len(), 16);
        assert!(!one.key.to_hex().contains(&one.fingerprint));
    }
}
