//! The data-path sink: this node's tunnels (with their keys) and endpoints
//! in the gateway eBPF maps and the hello verifier, applied by the hello
//! task that owns both ([`crate::hellos`]). Tunnels go in before the
//! endpoints that use them, endpoints out before their tunnels.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use epic_bpf::agent::{GatewayHelloAgent, HelloStats};
use epic_bpf::{CounterValue, DataPath, Program};
use epic_engine::plan::{EndpointPlan, Plan, TunnelPlan};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_gue::hello::{HelloVerifier, TunnelConfig};
use epic_gue::maps::{Counter, EndpointKey, TunnelValue};
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId};
use epic_model::VerifiedTunnel;

use crate::config::{StandaloneConfig, StandaloneError, file_error};
use crate::hellos::{HelloCounters, HelloTask, Op};
use crate::keys::{node_key_file, tunnel_key};
use crate::round::{ReconcileReport, Round};

/// This node's tunnels and endpoints, as the hello task applied them.
pub struct DataPathSink {
    node: String,
    tunnel_address: IpAddr,
    state_dir: PathBuf,
    /// The data path and the hello verifier, owned by their task.
    hellos: HelloTask,
    tunnels: BTreeMap<u32, TunnelPlan>,
    endpoints: BTreeSet<EndpointPlan>,
    /// Hello counters persisted by the last run, restored into the
    /// verifier as its tunnels are added.
    saved_counters: BTreeMap<u32, u64>,
}

/// Reads `hello-counters.json` (none yet: empty; corrupt: an error, as a
/// restart without them would reopen replays).
fn load_counters(path: &Path) -> Result<BTreeMap<u32, u64>, StandaloneError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<HelloCounters>(&bytes)
            .map(|c| c.tunnels)
            .map_err(|e| StandaloneError::Corrupt {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(file_error("hello counters", path)(e)),
    }
}

impl DataPathSink {
    /// Loads and attaches the gateway programs on the uplink, binds the
    /// hello socket and starts the hello task; the counters persisted by the
    /// last run come back to be restored as tunnels are added.
    pub fn start(config: &StandaloneConfig) -> Result<DataPathSink, StandaloneError> {
        let mut datapath = DataPath::load()?;
        datapath.attach(Program::GatewayEgress, &config.uplink)?;
        datapath.attach(Program::GatewayIngress, &config.uplink)?;
        let address = SocketAddr::new(config.tunnel_address, GUE_PORT);
        let socket_error = |source| StandaloneError::HelloSocket { address, source };
        let socket = UdpSocket::bind(address).map_err(socket_error)?;
        let counters_path = config.state_dir.join("hello-counters.json");
        let saved_counters = load_counters(&counters_path)?;
        let verifier = HelloVerifier::with_capacity(16384, config.hellos);
        let agent = GatewayHelloAgent::new(socket, verifier);
        let hellos = HelloTask::spawn(datapath, agent, counters_path).map_err(socket_error)?;
        Ok(DataPathSink {
            node: config.node_name.clone(),
            tunnel_address: config.tunnel_address,
            state_dir: config.state_dir.clone(),
            hellos,
            tunnels: BTreeMap::new(),
            endpoints: BTreeSet::new(),
            saved_counters,
        })
    }

    /// Hello statistics so far.
    pub fn hello_stats(&self) -> HelloStats {
        self.hellos.stats()
    }

    /// The data path's counters.
    pub fn counters(&self) -> Result<Vec<(Counter, CounterValue)>, StandaloneError> {
        self.hellos.counters()
    }

    /// The tunnels on this node whose remote end is verified now: those
    /// that carry packets, so their endpoints may reach the proxies.
    pub fn verified(&self) -> BTreeSet<VerifiedTunnel> {
        let ids = self.hellos.verified();
        self.tunnels
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(_, t)| VerifiedTunnel {
                tenant: t.key.tenant.clone(),
                cluster: t.key.cluster.clone(),
                node: t.key.node.clone(),
                gateway_node: t.key.gateway_node.clone(),
            })
            .collect()
    }

    /// Signalled whenever a tunnel is verified or expires: plan again.
    pub fn verification_changes(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.hellos.changes()
    }

    /// Stops the hello task (it also stops when the sink is dropped).
    pub fn stop(&mut self) {
        self.hellos.stop();
    }

    /// This node's part of `plan` in the data path and the verifier,
    /// applied by the hello task. What it applied is recorded op by op, so
    /// a failure part-way leaves `self.tunnels`/`self.endpoints` equal to
    /// the maps and the next reconcile finishes the job.
    fn apply_data_path(
        &mut self,
        plan: &Plan,
        report: &mut ReconcileReport,
    ) -> Result<(), StandaloneError> {
        let node = self.node.clone();
        let wanted: BTreeMap<u32, TunnelPlan> =
            plan.tunnels_on(&node).map(|t| (t.id, t.clone())).collect();
        let wanted_endpoints: BTreeSet<EndpointPlan> = plan
            .endpoints
            .get(&node)
            .map(|e| e.iter().copied().collect())
            .unwrap_or_default();
        let mut changes = self.endpoint_removals(&wanted_endpoints);
        changes.extend(self.tunnel_changes(&wanted, report)?);
        changes.extend(wanted_endpoints.difference(&self.endpoints).map(|e| {
            (
                Op::AddEndpoint(endpoint_key(e), TunnelId(e.tunnel)),
                Done::AddedEndpoint(*e),
            )
        }));
        let (ops, done): (Vec<Op>, Vec<Done>) = changes.into_iter().unzip();
        let applied = self.hellos.apply(ops);
        for change in done.into_iter().take(applied.done) {
            self.record(change, report);
        }
        applied.error.map_or(Ok(()), Err)
    }

    /// The endpoints in the data path that `wanted` no longer has.
    fn endpoint_removals(&self, wanted: &BTreeSet<EndpointPlan>) -> Vec<(Op, Done)> {
        self.endpoints
            .difference(wanted)
            .map(|e| {
                (
                    Op::RemoveEndpoint(endpoint_key(e)),
                    Done::RemovedEndpoint(*e),
                )
            })
            .collect()
    }

    /// Tunnels gone or changed (other ends, other tenant) are removed; a
    /// changed one is added again. Every wanted tunnel gives the verifier
    /// its node's key (a bad node name is that node's problem: its tunnel
    /// verifies nothing), and its counter from before a restart.
    fn tunnel_changes(
        &self,
        wanted: &BTreeMap<u32, TunnelPlan>,
        report: &mut ReconcileReport,
    ) -> Result<Vec<(Op, Done)>, StandaloneError> {
        let mut changes: Vec<(Op, Done)> = self
            .tunnels
            .iter()
            .filter(|(id, old)| {
                wanted
                    .get(*id)
                    .is_none_or(|t| t.key != old.key || t.tenant_id != old.tenant_id)
            })
            .map(|(id, _)| (Op::RemoveTunnel(TunnelId(*id)), Done::RemovedTunnel(*id)))
            .collect();
        let removed: BTreeSet<u32> = changes
            .iter()
            .filter_map(|(_, d)| match d {
                Done::RemovedTunnel(id) => Some(*id),
                _ => None,
            })
            .collect();
        let mut keys = BTreeMap::new();
        for (id, t) in wanted {
            let cluster = (t.key.tenant.clone(), t.key.cluster.clone());
            let cluster_key = match keys.entry(cluster) {
                std::collections::btree_map::Entry::Occupied(k) => k.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let (tenant, cluster) = slot.key();
                    let key = tunnel_key(&self.state_dir, tenant, cluster)?;
                    slot.insert(key)
                }
            };
            if let Err(e) = node_key_file(
                &self.state_dir,
                &t.key.tenant,
                &t.key.cluster,
                &t.key.node,
                cluster_key,
            ) {
                report.problems.push(format!("tunnel {id}: {e}"));
                continue;
            }
            let new = !self.tunnels.contains_key(id) || removed.contains(id);
            let op = Op::SetTunnel {
                config: TunnelConfig::new(
                    TunnelId(*id),
                    cluster_key.node_key(&t.key.node),
                    TenantId(t.tenant_id),
                    NodeId::from_name(&t.key.node),
                ),
                counter: self.saved_counters.get(id).copied(),
                pending: new.then(|| {
                    TunnelValue::pending(TenantId(t.tenant_id), self.tunnel_address, GUE_PORT)
                }),
            };
            changes.push((op, Done::SetTunnel(*id, new.then(|| t.clone()))));
        }
        Ok(changes)
    }

    /// Records one change the hello task applied.
    fn record(&mut self, change: Done, report: &mut ReconcileReport) {
        match change {
            Done::RemovedEndpoint(e) => {
                self.endpoints.remove(&e);
                report.endpoints.1 += 1;
            }
            Done::RemovedTunnel(id) => {
                self.tunnels.remove(&id);
                report.tunnels.1 += 1;
            }
            Done::SetTunnel(id, added) => {
                self.saved_counters.remove(&id);
                if let Some(t) = added {
                    self.tunnels.insert(id, t);
                    report.tunnels.0 += 1;
                }
            }
            Done::AddedEndpoint(e) => {
                self.endpoints.insert(e);
                report.endpoints.0 += 1;
            }
        }
    }
}

impl Sink<Round, StandaloneError> for DataPathSink {
    fn name(&self) -> &'static str {
        "data path"
    }

    fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, StandaloneError> {
        Box::pin(async move { self.apply_data_path(&round.plan, &mut round.report) })
    }
}

/// A data-path change the hello task applied, for the books.
enum Done {
    RemovedEndpoint(EndpointPlan),
    RemovedTunnel(u32),
    /// The verifier has the tunnel; with its plan if it was added to the map.
    SetTunnel(u32, Option<TunnelPlan>),
    AddedEndpoint(EndpointPlan),
}

/// The data-path key of an endpoint.
fn endpoint_key(e: &EndpointPlan) -> EndpointKey {
    EndpointKey::new(e.scope, e.address, e.port, e.protocol)
}
