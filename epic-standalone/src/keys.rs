//! The tunnel keys of standalone mode: one per tenant's cluster, generated
//! here and never sent anywhere, and each cluster node's hello key derived
//! from it (the only key that node's `epic agent` gets).

use std::path::{Path, PathBuf};

use epic_gue::hello::HelloKey;

use crate::config::{StandaloneError, file_error};
use crate::files::{check_private, read_private, write_private};

/// The tunnel key of a tenant's cluster, stored in the state directory.
///
/// Created on first use from the kernel's random source (mode 0600);
/// afterwards read back, refused if others may read or write it. The
/// cluster agent of that cluster needs the same key. `tenant` and
/// `cluster` become path components: both must be DNS-1123 labels.
pub fn tunnel_key(
    state_dir: &Path,
    tenant: &str,
    cluster: &str,
) -> Result<HelloKey, StandaloneError> {
    for (what, name) in [("tenant", tenant), ("cluster", cluster)] {
        if !epic_engine::mirror::is_dns1123_label(name) {
            return Err(StandaloneError::InvalidName {
                what,
                name: name.to_owned(),
            });
        }
    }
    let dir = state_dir.join("keys").join(tenant);
    let path = dir.join(format!("{cluster}.key"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            check_private("tunnel key", &path)?;
            HelloKey::from_hex(text.trim()).ok_or_else(|| StandaloneError::Corrupt {
                path: path.clone(),
                message: "expected 64 hex digits (a 32-byte key)".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            let mut random = std::fs::File::open("/dev/urandom")
                .map_err(file_error("random source", Path::new("/dev/urandom")))?;
            std::io::Read::read_exact(&mut random, &mut bytes)
                .map_err(file_error("random source", Path::new("/dev/urandom")))?;
            let key = HelloKey::new(bytes);
            write_private(
                "tunnel key",
                &path,
                format!("{}\n", key.to_hex()).as_bytes(),
            )?;
            Ok(key)
        }
        Err(e) => Err(StandaloneError::File {
            what: "tunnel key",
            path,
            source: e,
        }),
    }
}

/// Writes the hello key of cluster node `node` — derived from the cluster
/// key ([`HelloKey::node_key`]), the only key that node's agent needs — to
/// `keys/<tenant>/<cluster>/<node>.key` (0600) unless it holds it already;
/// returns its path. `node` becomes a path component: it must be a
/// DNS-1123 subdomain, as Kubernetes node names are.
pub fn node_key_file(
    state_dir: &Path,
    tenant: &str,
    cluster: &str,
    node: &str,
    cluster_key: &HelloKey,
) -> Result<PathBuf, StandaloneError> {
    if !epic_engine::mirror::is_dns1123_subdomain(node) {
        return Err(StandaloneError::InvalidName {
            what: "node",
            name: node.to_owned(),
        });
    }
    let path = state_dir
        .join("keys")
        .join(tenant)
        .join(cluster)
        .join(format!("{node}.key"));
    let hex = format!("{}\n", cluster_key.node_key(node).to_hex());
    if read_private("node key", &path)?.as_deref() != Some(hex.as_str()) {
        write_private("node key", &path, hex.as_bytes())?;
    }
    Ok(path)
}
