//! Resource types served over xDS and their encoded, content-versioned form.

use std::fmt;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sha2::{Digest, Sha256};

/// The xDS resource types this crate serves, in ordered-ADS order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoint,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
    Secret,
}

/// Type URL prefix shared by every resource type.
const PREFIX: &str = "type.googleapis.com/";

impl ResourceType {
    /// All resource types, in the order ordered ADS pushes them (make-before-break).
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The full type URL (`type.googleapis.com/...`).
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The resource type a type URL names, if this crate serves it.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Whether an empty subscription means "everything" (CDS and LDS in Envoy's usage).
    pub fn wildcard_by_default(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Whether a state-of-the-world response must carry every resource the
    /// client wants (CDS, LDS); other types may carry only what changed.
    pub(crate) fn complete_in_sotw(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Index into per-type arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.type_url();
        f.write_str(url.strip_prefix(PREFIX).unwrap_or(url))
    }
}

/// One resource, encoded once and versioned by its content.
///
/// Shared through `Arc` by every snapshot, node and stream that serves it;
/// kept compact (inline version, name and encoded bytes in one allocation)
/// so that a snapshot costs little more than its encoded size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedResource {
    kind: ResourceType,
    version: [u8; 16],
    name_len: u32,
    /// The name's bytes, then the encoded message.
    bytes: Box<[u8]>,
}

impl EncodedResource {
    /// Encodes `message` as a resource of type `kind` named `name`.
    pub(crate) fn encode<M: Message>(kind: ResourceType, name: &str, message: &M) -> Self {
        let mut bytes = Vec::with_capacity(name.len() + message.encoded_len());
        bytes.extend_from_slice(name.as_bytes());
        // Encoding into a Vec sized by encoded_len cannot run out of space.
        let _ = message.encode(&mut bytes);
        EncodedResource {
            kind,
            version: content_version(&bytes[name.len()..]),
            name_len: u32::try_from(name.len()).unwrap_or(u32::MAX),
            bytes: bytes.into_boxed_slice(),
        }
    }

    /// The resource type.
    pub fn kind(&self) -> ResourceType {
        self.kind
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        std::str::from_utf8(self.name_bytes()).unwrap_or_default()
    }

    /// The resource name as bytes (byte order is `str` order).
    pub(crate) fn name_bytes(&self) -> &[u8] {
        &self.bytes[..self.name_len as usize]
    }

    /// The content version: hex of a SHA-256 prefix of the encoded bytes.
    pub fn version(&self) -> &str {
        std::str::from_utf8(&self.version).unwrap_or_default()
    }

    /// Whether `other` has the same name and content.
    pub(crate) fn same_as(&self, other: &EncodedResource) -> bool {
        self.version == other.version && self.name_bytes() == other.name_bytes()
    }

    /// The encoded message.
    pub fn value(&self) -> &[u8] {
        &self.bytes[self.name_len as usize..]
    }

    /// The resource as a protobuf `Any`, ready for a response.
    pub fn to_any(&self) -> Any {
        Any {
            type_url: self.kind.type_url().to_string(),
            value: self.value().to_vec(),
        }
    }

    /// Size of the encoded message in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len() - self.name_len as usize
    }
}

/// A shared, encoded resource.
pub type SharedResource = Arc<EncodedResource>;

/// Hex of the first 8 bytes of SHA-256 over `bytes`.
fn content_version(bytes: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    for (i, b) in digest[..8].iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Hex of the first 8 bytes of a digest.
fn hex8(digest: &[u8]) -> String {
    digest[..8]
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// Incremental SHA-256 over a sequence of strings, for set versions.
#[derive(Default)]
pub(crate) struct SetHasher(Sha256);

impl SetHasher {
    /// Adds one string, length-prefixed so concatenations cannot collide.
    pub(crate) fn add(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    /// The resulting version string.
    pub(crate) fn finish(self) -> String {
        hex8(&self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use prost::Name;

    #[test]
    fn type_urls_round_trip_and_match_prost_names() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::Cluster.type_url(), Cluster::type_url());
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }

    #[test]
    fn version_follows_content() {
        let a = Cluster {
            name: "a".into(),
            ..Default::default()
        };
        let b = Cluster {
            name: "b".into(),
            ..Default::default()
        };
        let enc = |c: &Cluster| EncodedResource::encode(ResourceType::Cluster, &c.name, c);
        let ea = enc(&a);
        assert_eq!(ea.version(), enc(&a).version());
        assert_ne!(ea.version(), enc(&b).version());
        assert_eq!(ea.version().len(), 16);
        assert!(ea.version().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ea.to_any().type_url, ResourceType::Cluster.type_url());
        assert_eq!(ea.to_any().value, a.encode_to_vec());
        assert_eq!(ea.name(), "a");
        assert_eq!(ea.encoded_len(), a.encoded_len());
        assert!(ea.same_as(&enc(&a)) && !ea.same_as(&enc(&b)));
    }
}
