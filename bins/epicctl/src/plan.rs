//! `epicctl plan` and `epicctl crds`: the engine as a dry run, and the
//! CustomResourceDefinitions (epic-model).

use std::path::PathBuf;

use epic_engine::plan::{GatewayNode, Recorded, plan};
use epic_model::source::parse_resources;
use serde_json::json;

use crate::input::problem;

/// Plan a resources file without applying anything.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The resources file (YAML, `---` separated EPIC-RS resources).
    #[arg(long)]
    resources: PathBuf,
    /// Recorded state to plan from: a standalone `state.json` (`{recorded: ...}`)
    /// or the recorded object alone.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Gateway nodes, `name=address` (repeatable; default `gateway=198.51.100.1`).
    #[arg(long = "node")]
    nodes: Vec<String>,
}

/// Runs `epicctl plan`: prints the plan as JSON; exits non-zero when the
/// file is invalid or any gateway is not programmed.
pub fn run(args: PlanArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.resources)
        .map_err(|e| problem(&args.resources, format!("cannot read: {e}")))?;
    let mut inputs = parse_resources(&text).map_err(|e| problem(&args.resources, e))?;
    let recorded = match &args.state {
        None => Recorded::default(),
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| problem(path, format!("cannot read: {e}")))?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| problem(path, e))?;
            let recorded = value.get("recorded").cloned().unwrap_or(value);
            serde_json::from_value(recorded).map_err(|e| problem(path, e))?
        }
    };
    let nodes = if args.nodes.is_empty() {
        vec!["gateway=198.51.100.1".to_owned()]
    } else {
        args.nodes.clone()
    };
    for node in &nodes {
        let (name, address) = node
            .split_once('=')
            .ok_or_else(|| format!("--node {node:?}: expected name=address"))?;
        let address = address
            .parse()
            .map_err(|e| format!("--node {node:?}: {address:?}: {e}"))?;
        inputs.gateway_nodes.push(GatewayNode {
            name: name.to_owned(),
            address,
        });
    }
    let plan = plan(&inputs, &recorded);
    let gateways: Vec<_> = plan
        .gateways
        .iter()
        .map(|g| {
            json!({
                "namespace": g.namespace,
                "name": g.name,
                "tenant": g.tenant,
                "snapshotVersion": g.snapshot.as_ref().map(|s| s.version().to_owned()),
                "status": g.status,
            })
        })
        .collect();
    let out = json!({
        "gateways": gateways,
        "tunnels": plan.tunnels,
        "endpoints": plan.endpoints,
        "problems": plan.problems,
        "recorded": plan.recorded,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    let unprogrammed: Vec<String> = plan
        .gateways
        .iter()
        .filter(|g| !g.programmed())
        .map(|g| format!("{}/{}", g.namespace, g.name))
        .collect();
    if !unprogrammed.is_empty() || !plan.problems.is_empty() {
        return Err(format!(
            "not programmed: [{}]; problems: {}",
            unprogrammed.join(", "),
            plan.problems.len()
        )
        .into());
    }
    Ok(())
}

/// Runs `epicctl crds`: every CustomResourceDefinition as YAML documents.
pub fn crds() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", epic_model::crds_yaml());
    Ok(())
}
