//! The status sink: every gateway's status and the round's problems in
//! `status.json`, and the plan's records in `state.json`, last, so a
//! record names only what the other sinks did.

use std::path::PathBuf;

use epic_engine::runtime::{Sink, SinkFuture};
use serde::{Deserialize, Serialize};

use crate::config::StandaloneError;
use crate::files::write_atomically;
use crate::round::Round;
use crate::state::save_state;

/// One gateway in `status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatusEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: epic_model::GatewayStatus,
}

/// The content of `status.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    /// Every gateway.
    pub gateways: Vec<GatewayStatusEntry>,
    /// Problems not tied to a gateway.
    pub problems: Vec<String>,
}

/// `status.json` and the records in `state.json`.
#[derive(Debug)]
pub struct StatusSink {
    state_dir: PathBuf,
}

impl StatusSink {
    /// A sink writing into `state_dir`.
    pub fn new(state_dir: PathBuf) -> Self {
        StatusSink { state_dir }
    }

    fn write_status(&self, round: &mut Round) -> Result<(), StandaloneError> {
        let status = StatusFile {
            gateways: round
                .plan
                .gateways
                .iter()
                .map(|g| GatewayStatusEntry {
                    namespace: g.namespace.clone(),
                    name: g.name.clone(),
                    status: g.status.clone(),
                })
                .collect(),
            problems: round.report.problems.clone(),
        };
        let status_path = self.state_dir.join("status.json");
        let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
        write_atomically("status file", &status_path, &json)?;
        round.state.recorded = round.plan.recorded.clone();
        save_state(&self.state_dir, &round.state)
    }
}

impl Sink<Round, StandaloneError> for StatusSink {
    fn name(&self) -> &'static str {
        "status"
    }

    fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, StandaloneError> {
        let result = self.write_status(round);
        Box::pin(async { result })
    }
}
