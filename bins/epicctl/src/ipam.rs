//! `epicctl ipam`: check pool files and dry-run allocation plans (epic-ipam).
//!
//! The file formats are documented in the `epic_ipam` crate docs.

use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use epic_ipam::{Allocator, Family, PlanFile, PoolFile, PoolSet};

use crate::input::problem;

/// IPAM subcommands.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Validate a pool file and print each pool's families and sizes.
    Check {
        /// The pool file (YAML, `pools:` list).
        pools: PathBuf,
    },
    /// Run allocate/release/restore steps on the pools; print one JSON result per step.
    Plan {
        /// The pool file (YAML, `pools:` list).
        pools: PathBuf,
        /// The plan file (YAML, `steps:` list).
        requests: PathBuf,
    },
}

fn read(path: &Path) -> Result<String, Box<dyn Error>> {
    std::fs::read_to_string(path).map_err(|e| problem(path, format!("cannot read: {e}")))
}

fn load_pools(path: &Path) -> Result<PoolSet, Box<dyn Error>> {
    PoolFile::from_yaml(&read(path)?).map_err(|e| problem(path, e))
}

/// Runs one `epicctl ipam` subcommand.
pub fn run(cmd: IpamCommand) -> Result<(), Box<dyn Error>> {
    match cmd {
        IpamCommand::Check { pools } => {
            let set = load_pools(&pools)?;
            println!(
                "{}: {} pool(s), highest priority first",
                pools.display(),
                set.pools().len()
            );
            for pool in set.pools() {
                let sizes: Vec<String> = pool
                    .families()
                    .into_iter()
                    .map(|f: Family| format!("{f} {} addresses", pool.size(f)))
                    .collect();
                let tenants = match &pool.spec().tenants {
                    None => "any tenant".to_owned(),
                    Some(t) if t.is_empty() => "no tenant".to_owned(),
                    Some(t) => format!(
                        "tenants {}",
                        t.iter().cloned().collect::<Vec<_>>().join(",")
                    ),
                };
                println!(
                    "pool {}: {}; priority {}, {}, {}",
                    pool.name(),
                    sizes.join(", "),
                    pool.priority(),
                    if pool.auto_assign() {
                        "auto-assign"
                    } else {
                        "on request only"
                    },
                    tenants,
                );
            }
            Ok(())
        }
        IpamCommand::Plan { pools, requests } => {
            let set = load_pools(&pools)?;
            let plan = PlanFile::from_yaml(&read(&requests)?).map_err(|e| problem(&requests, e))?;
            let mut allocator = Allocator::new(set);
            for report in plan.run(&mut allocator) {
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
    }
}
