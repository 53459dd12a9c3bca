//! What this node keeps between runs (`state.json`) and the lock that
//! keeps a second process off the state directory.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use epic_engine::plan::Recorded;
use epic_engine::tunnel_ids::TunnelIdSecret;
use serde::{Deserialize, Serialize};

use crate::config::{StandaloneError, file_error};
use crate::files::write_atomically;

/// What this node keeps between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeState {
    /// The engine's recorded state.
    #[serde(default)]
    pub recorded: Recorded,
    /// Addresses this node put on the public interface.
    #[serde(default)]
    pub addresses: BTreeSet<IpAddr>,
}

/// Locks `state_dir` for this process (an exclusive lock on its `lock`
/// file, released when the returned file is dropped or the process ends):
/// two `epic run` on one state directory would undo each other's work.
pub fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, StandaloneError> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(file_error("state directory lock", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StandaloneError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(file_error("state directory lock", &path)(e)),
    }
}

/// The node's state file (none yet: empty), with a tunnel-id secret: new
/// tunnel ids are derived under one kept with the records (a state file
/// from before it gets one now).
pub(crate) fn load_state(state_dir: &Path) -> Result<NodeState, StandaloneError> {
    let state_path = state_dir.join("state.json");
    let mut state: NodeState = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StandaloneError::Corrupt {
            path: state_path.clone(),
            message: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeState::default(),
        Err(e) => return Err(file_error("state file", &state_path)(e)),
    };
    if state.recorded.tunnel_id_secret.is_none() {
        let secret = TunnelIdSecret::random().map_err(StandaloneError::Random)?;
        state.recorded.tunnel_id_secret = Some(secret);
    }
    Ok(state)
}

/// Writes `state.json` (atomically: a crash leaves the old or the new file).
pub(crate) fn save_state(state_dir: &Path, state: &NodeState) -> Result<(), StandaloneError> {
    let path = state_dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).unwrap_or_default();
    write_atomically("state file", &path, &json)
}
