//! The `epicctl ipam` file formats: a pool file and a plan of steps (see the
//! [crate docs](crate#file-formats) for examples).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::allocator::Allocator;
use crate::error::IpamError;
use crate::pool::{PoolSet, PoolSetError, PoolSpec};
use crate::request::{
    Allocation, AllocationRecord, AllocationRequest, ReleaseOutcome, RestoreReport,
};

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FileError {
    /// Not valid YAML, or not the expected shape.
    #[error("{message}")]
    Syntax {
        /// What the parser said, with the line and column.
        message: String,
    },
    /// Well-formed, but the pools are invalid.
    #[error("{0}")]
    Pools(PoolSetError),
}

/// A pool file: `pools:` followed by a list of [`PoolSpec`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// The pools.
    pub pools: Vec<PoolSpec>,
}

impl PoolFile {
    /// Parses and validates a YAML pool file.
    #[cfg(feature = "yaml")]
    pub fn from_yaml(text: &str) -> Result<PoolSet, FileError> {
        let file: PoolFile = serde_yaml_ng::from_str(text).map_err(|e| FileError::Syntax {
            message: e.to_string(),
        })?;
        file.into_pool_set()
    }

    /// Validates the pools.
    pub fn into_pool_set(self) -> Result<PoolSet, FileError> {
        PoolSet::new(self.pools).map_err(FileError::Pools)
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// [`Allocator::allocate`].
    Allocate(AllocationRequest),
    /// [`Allocator::release`] of this owner.
    Release(String),
    /// [`Allocator::restore`] of these records.
    Restore(Vec<AllocationRecord>),
    /// [`Allocator::records`]: print the current state.
    Records,
}

/// A plan file: `steps:` followed by a list of [`Step`]s, run in order on an
/// empty allocator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The steps.
    pub steps: Vec<Step>,
}

/// The result of one step, printed as one JSON object per line by `epicctl ipam plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// Position in the plan, from 1.
    pub step: usize,
    /// `allocate`, `release`, `restore` or `records`.
    pub op: &'static str,
    /// The owner the step is about, for allocate and release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// False when the step was refused (or a restore had conflicts).
    pub ok: bool,
    /// What an allocate step got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
    /// What a release step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseOutcome>,
    /// What a restore step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreReport>,
    /// The state after a records step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<AllocationRecord>>,
    /// Why an allocate step was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<IpamError>,
    /// The error as a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StepReport {
    fn new(step: usize, op: &'static str, owner: Option<String>) -> StepReport {
        StepReport {
            step,
            op,
            owner,
            ok: true,
            allocation: None,
            release: None,
            restore: None,
            records: None,
            error: None,
            message: None,
        }
    }
}

impl PlanFile {
    /// Parses a YAML plan file (a step is a one-key map, or the bare word
    /// `records`).
    #[cfg(feature = "yaml")]
    pub fn from_yaml(text: &str) -> Result<PlanFile, FileError> {
        serde_yaml_ng::with::singleton_map_recursive::deserialize(
            serde_yaml_ng::Deserializer::from_str(text),
        )
        .map_err(|e| FileError::Syntax {
            message: e.to_string(),
        })
    }

    /// Runs the steps in order on `allocator`, one report per step.
    pub fn run(&self, allocator: &mut Allocator) -> Vec<StepReport> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, step)| run_step(allocator, i + 1, step))
            .collect()
    }
}

fn run_step(allocator: &mut Allocator, n: usize, step: &Step) -> StepReport {
    match step {
        Step::Allocate(request) => {
            let mut report = StepReport::new(n, "allocate", Some(request.owner.clone()));
            match allocator.allocate(request) {
                Ok(allocation) => report.allocation = Some(allocation),
                Err(error) => {
                    report.ok = false;
                    report.message = Some(error.to_string());
                    report.error = Some(error);
                }
            }
            report
        }
        Step::Release(owner) => {
            let mut report = StepReport::new(n, "release", Some(owner.clone()));
            report.release = Some(allocator.release(owner));
            report
        }
        Step::Restore(records) => {
            let mut report = StepReport::new(n, "restore", None);
            let restore = allocator.restore(records);
            report.ok = restore.conflicts.is_empty();
            report.restore = Some(restore);
            report
        }
        Step::Records => {
            let mut report = StepReport::new(n, "records", None);
            report.records = Some(allocator.records());
            report
        }
    }
}
