//! One round of standalone mode: the plan, the node's recorded state while
//! the sinks run, and what each sink did.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use epic_engine::plan::{GatewayPlan, Plan, Problem};
use epic_engine::publish::Published;

use crate::state::NodeState;

/// What the sinks of one reconcile read and add to, in order.
#[derive(Debug)]
pub struct Round {
    /// What the engine planned.
    pub plan: Plan,
    /// The node's recorded state, held by the round while the sinks run
    /// (the address and status sinks update and save it).
    pub state: NodeState,
    /// What the round did.
    pub report: ReconcileReport,
    /// What the xDS sink left served: only those gateways get addresses,
    /// proxies and routes.
    pub published: Published,
    /// The proxies serving after the proxy sink ran: only gateways whose
    /// proxies all serve are announced.
    pub ready: BTreeSet<String>,
}

impl Round {
    /// A round of `plan` from `state`, nothing done yet.
    pub fn new(plan: Plan, state: NodeState) -> Round {
        let report = ReconcileReport {
            gateways: plan.gateways.len(),
            programmed: plan.gateways.iter().filter(|g| g.programmed()).count(),
            problems: plan
                .problems
                .iter()
                .map(|Problem { object, message }| format!("{object}: {message}"))
                .collect(),
            ..Default::default()
        };
        Round {
            plan,
            state,
            report,
            published: Published::default(),
            ready: BTreeSet::new(),
        }
    }

    /// Whether gateway `g` is served (published to the ADS server).
    pub fn served(&self, g: &GatewayPlan) -> bool {
        self.published
            .gateways
            .contains(&(g.tenant.clone(), g.name.clone()))
    }

    /// The gateways served, in plan order.
    pub fn served_gateways(&self) -> impl Iterator<Item = &GatewayPlan> {
        self.plan.gateways.iter().filter(|g| self.served(g))
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Gateways programmed / in total.
    pub programmed: usize,
    /// Gateways in total.
    pub gateways: usize,
    /// Proxies started.
    pub proxies_started: Vec<String>,
    /// Proxies stopped.
    pub proxies_stopped: Vec<String>,
    /// Proxies ready (serving) after the reconcile.
    pub proxies_ready: usize,
    /// Tunnels added / removed.
    pub tunnels: (usize, usize),
    /// Endpoints added / removed.
    pub endpoints: (usize, usize),
    /// Public addresses added / removed.
    pub addresses: (Vec<IpAddr>, Vec<IpAddr>),
    /// Problems.
    pub problems: Vec<String>,
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} gateways programmed; proxies +{:?} -{:?}, {} ready; tunnels +{} -{}; endpoints +{} -{}; addresses +{:?} -{:?}",
            self.programmed,
            self.gateways,
            self.proxies_started,
            self.proxies_stopped,
            self.proxies_ready,
            self.tunnels.0,
            self.tunnels.1,
            self.endpoints.0,
            self.endpoints.1,
            self.addresses.0,
            self.addresses.1
        )?;
        for p in &self.problems {
            write!(f, "; problem: {p}")?;
        }
        Ok(())
    }
}
