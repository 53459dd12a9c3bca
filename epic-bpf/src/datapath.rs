//! [`DataPath`]: the GUE programs loaded, attached, and their maps programmed.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::HashMap;
use aya::programs::tc::SchedClassifierLinkId;
use epic_gue::TunnelId;
use epic_gue::maps::{
    Counter, CounterValue, EndpointKey, EndpointValue, FAMILY_IPV4, FlowKey, FlowValue,
    HelloBudget, HelloBudgetKey, TUNNEL_PENDING, TunnelKey, TunnelValue,
};

use crate::pod::{
    PodEndpointKey, PodEndpointValue, PodFlowKey, PodFlowValue, PodHelloBudget, PodHelloBudgetKey,
    PodTunnelKey, PodTunnelValue,
};
use crate::{Direction, Error, OBJECT, classifier, read_counter, test_run};

const ENDPOINTS: &str = "ENDPOINTS";
const TUNNELS: &str = "TUNNELS";
const REPLIES: &str = "REPLIES";
const COUNTERS: &str = "GUE_COUNTERS";
const HELLO_BUDGETS: &str = "HELLO_BUDGETS";
const ROUNDTRIP: &str = "epic_bench_roundtrip";

/// One of the GUE programs, with its attach direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// Gateway node, uplink egress: endpoint lookup and encapsulation.
    GatewayEgress,
    /// Gateway node, uplink ingress: checked decapsulation; hellos passed up.
    GatewayIngress,
    /// Cluster node, uplink ingress: decapsulation and reply-flow recording.
    ClusterIngress,
    /// Cluster node, uplink egress: reply-flow lookup and encapsulation.
    ClusterEgress,
}

impl Program {
    /// All programs.
    pub const ALL: [Program; 4] = [
        Program::GatewayEgress,
        Program::GatewayIngress,
        Program::ClusterIngress,
        Program::ClusterEgress,
    ];

    /// The program's name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Program::GatewayEgress => "epic_gw_egress",
            Program::GatewayIngress => "epic_gw_ingress",
            Program::ClusterIngress => "epic_cl_ingress",
            Program::ClusterEgress => "epic_cl_egress",
        }
    }

    /// The hook it is made for.
    pub const fn direction(self) -> Direction {
        match self {
            Program::GatewayEgress | Program::ClusterEgress => Direction::Egress,
            Program::GatewayIngress | Program::ClusterIngress => Direction::Ingress,
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's verdict (`0` = `TC_ACT_OK`, `2` = `TC_ACT_SHOT`).
    pub verdict: u32,
    /// Length of the packet the program left.
    pub len: usize,
    /// The kernel's mean time per run.
    pub duration: Duration,
}

/// The GUE programs and maps, loaded: attach the programs of a node's role,
/// program the maps, read the counters. Detached and unloaded on drop.
pub struct DataPath {
    ebpf: Ebpf,
    links: Vec<(String, Program, SchedClassifierLinkId)>,
}

impl fmt::Debug for DataPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPath")
            .field("attachments", &self.attachments())
            .finish()
    }
}

macro_rules! map {
    ($self:ident, $name:expr, $k:ty, $v:ty) => {{
        let data = $self
            .ebpf
            .map_mut($name)
            .ok_or(Error::MapMissing { map: $name })?;
        HashMap::<_, $k, $v>::try_from(data).map_err(|e| map_error($name, e))?
    }};
    (ref $self:ident, $name:expr, $k:ty, $v:ty) => {{
        let data = $self
            .ebpf
            .map($name)
            .ok_or(Error::MapMissing { map: $name })?;
        HashMap::<_, $k, $v>::try_from(data).map_err(|e| map_error($name, e))?
    }};
}

fn map_error(map: &'static str, source: aya::maps::MapError) -> Error {
    Error::Map {
        map,
        source: Box::new(source),
    }
}

fn is_not_found(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::KeyNotFound)
        || matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(2))
}

impl DataPath {
    /// Loads the embedded object: all four GUE programs and their maps.
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| Error::Load(Box::new(e)))?;
        for name in Program::ALL
            .map(Program::name)
            .into_iter()
            .chain([ROUNDTRIP])
        {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program {
                    program: name,
                    source: Box::new(source),
                })?;
        }
        Ok(DataPath {
            ebpf,
            links: Vec::new(),
        })
    }

    /// Attaches `program` to `interface` (in the caller's network namespace)
    /// in its direction.
    pub fn attach(&mut self, program: Program, interface: &str) -> Result<(), Error> {
        let link = classifier(&mut self.ebpf, program.name())?
            .attach(interface, program.direction().attach_type())
            .map_err(|source| Error::Attach {
                program: program.name(),
                interface: interface.to_owned(),
                direction: program.direction(),
                source: Box::new(source),
            })?;
        self.links.push((interface.to_owned(), program, link));
        Ok(())
    }

    /// Detaches `program` from `interface`.
    pub fn detach(&mut self, program: Program, interface: &str) -> Result<(), Error> {
        let detach_error = |reason: String| Error::Detach {
            program: program.name(),
            interface: interface.to_owned(),
            direction: program.direction(),
            reason,
        };
        let index = self
            .links
            .iter()
            .position(|(name, p, _)| name == interface && *p == program)
            .ok_or_else(|| detach_error("not attached there".to_owned()))?;
        let (_, _, link) = self.links.remove(index);
        classifier(&mut self.ebpf, program.name())?
            .detach(link)
            .map_err(|e| detach_error(e.to_string()))
    }

    /// Where programs are attached, as (interface, program).
    pub fn attachments(&self) -> Vec<(&str, Program)> {
        self.links
            .iter()
            .map(|(name, p, _)| (name.as_str(), *p))
            .collect()
    }

    /// Adds or replaces a tunnel.
    pub fn add_tunnel(&mut self, tunnel: TunnelId, value: TunnelValue) -> Result<(), Error> {
        let mut m = map!(self, TUNNELS, PodTunnelKey, PodTunnelValue);
        m.insert(
            PodTunnelKey(TunnelKey::new(tunnel)),
            PodTunnelValue(value),
            0,
        )
        .map_err(|e| map_error(TUNNELS, e))
    }

    /// Removes a tunnel and the reply flows that use it; `false` if it was not there.
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) -> Result<bool, Error> {
        let removed = {
            let mut m = map!(self, TUNNELS, PodTunnelKey, PodTunnelValue);
            match m.remove(&PodTunnelKey(TunnelKey::new(tunnel))) {
                Ok(()) => true,
                Err(e) if is_not_found(&e) => false,
                Err(e) => return Err(map_error(TUNNELS, e)),
            }
        };
        self.expire_flows(tunnel)?;
        Ok(removed)
    }

    /// The tunnel's entry, if any.
    pub fn tunnel(&self, tunnel: TunnelId) -> Result<Option<TunnelValue>, Error> {
        let m = map!(ref self, TUNNELS, PodTunnelKey, PodTunnelValue);
        match m.get(&PodTunnelKey(TunnelKey::new(tunnel)), 0) {
            Ok(v) => Ok(Some(v.0)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_error(TUNNELS, e)),
        }
    }

    /// Every tunnel.
    pub fn tunnels(&self) -> Result<Vec<(TunnelId, TunnelValue)>, Error> {
        let m = map!(ref self, TUNNELS, PodTunnelKey, PodTunnelValue);
        m.iter()
            .map(|r| {
                r.map(|(k, v)| (TunnelId(k.0.tunnel_id), v.0))
                    .map_err(|e| map_error(TUNNELS, e))
            })
            .collect()
    }

    /// Sets the tunnel's verified remote end (call only with a verified hello's source).
    pub fn set_verified_remote(
        &mut self,
        tunnel: TunnelId,
        remote: SocketAddr,
    ) -> Result<(), Error> {
        let current = self
            .tunnel(tunnel)?
            .ok_or(Error::NoSuchTunnel { tunnel: tunnel.0 })?;
        let value = current
            .verified(remote.ip(), remote.port())
            .ok_or(Error::FamilyMismatch {
                tunnel: tunnel.0,
                family: if current.family == FAMILY_IPV4 {
                    "IPv4"
                } else {
                    "IPv6"
                },
                remote,
            })?;
        self.add_tunnel(tunnel, value)
    }

    /// Forgets the tunnel's remote end (hellos stopped): its packets are
    /// dropped as `drop_tunnel_pending` from now on.
    pub fn set_pending(&mut self, tunnel: TunnelId) -> Result<(), Error> {
        let current = self
            .tunnel(tunnel)?
            .ok_or(Error::NoSuchTunnel { tunnel: tunnel.0 })?;
        self.add_tunnel(
            tunnel,
            TunnelValue {
                remote_addr: [0; 16],
                remote_port: [0; 2],
                state: TUNNEL_PENDING,
                ..current
            },
        )
    }

    /// Adds or replaces an endpoint → tunnel entry.
    pub fn add_endpoint(&mut self, key: EndpointKey, tunnel: TunnelId) -> Result<(), Error> {
        let mut m = map!(self, ENDPOINTS, PodEndpointKey, PodEndpointValue);
        m.insert(
            PodEndpointKey(key),
            PodEndpointValue(EndpointValue::new(tunnel)),
            0,
        )
        .map_err(|e| map_error(ENDPOINTS, e))
    }

    /// Cluster side: lets `tunnel` deliver to the local endpoint
    /// (`address`, `port`, IP `protocol`); the cluster ingress program drops
    /// (`drop_inner_not_endpoint`) whatever a tunnel carries to anything
    /// else. The entry is the endpoint key with the tunnel id as scope.
    pub fn add_local_endpoint(
        &mut self,
        tunnel: TunnelId,
        address: std::net::IpAddr,
        port: u16,
        protocol: u8,
    ) -> Result<(), Error> {
        self.add_endpoint(EndpointKey::new(tunnel.0, address, port, protocol), tunnel)
    }

    /// Removes an endpoint; `false` if it was not there.
    pub fn remove_endpoint(&mut self, key: EndpointKey) -> Result<bool, Error> {
        let mut m = map!(self, ENDPOINTS, PodEndpointKey, PodEndpointValue);
        match m.remove(&PodEndpointKey(key)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(ENDPOINTS, e)),
        }
    }

    /// Every endpoint and its tunnel.
    pub fn endpoints(&self) -> Result<Vec<(EndpointKey, TunnelId)>, Error> {
        let m = map!(ref self, ENDPOINTS, PodEndpointKey, PodEndpointValue);
        m.iter()
            .map(|r| {
                r.map(|(k, v)| (k.0, TunnelId(v.0.tunnel_id)))
                    .map_err(|e| map_error(ENDPOINTS, e))
            })
            .collect()
    }

    /// Every recorded reply flow.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
        let m = map!(ref self, REPLIES, PodFlowKey, PodFlowValue);
        m.iter()
            .map(|r| {
                r.map(|(k, v)| (k.0, v.0))
                    .map_err(|e| map_error(REPLIES, e))
            })
            .collect()
    }

    /// Removes the reply flows of `tunnel` (the LRU evicts the rest by age);
    /// returns how many were removed.
    pub fn expire_flows(&mut self, tunnel: TunnelId) -> Result<usize, Error> {
        let doomed: Vec<FlowKey> = self
            .flows()?
            .into_iter()
            .filter(|(_, v)| v.tunnel_id == tunnel.0)
            .map(|(k, _)| k)
            .collect();
        let mut m = map!(self, REPLIES, PodFlowKey, PodFlowValue);
        let mut removed = 0;
        for key in doomed {
            match m.remove(&PodFlowKey(key)) {
                Ok(()) => removed += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_error(REPLIES, e)),
            }
        }
        Ok(removed)
    }

    /// The gateway ingress's hello budget for `tunnel` and one kind of
    /// source (its verified remote, or any other), if a hello used it.
    pub fn hello_budget(
        &self,
        tunnel: TunnelId,
        from_remote: bool,
    ) -> Result<Option<HelloBudget>, Error> {
        let m = map!(ref self, HELLO_BUDGETS, PodHelloBudgetKey, PodHelloBudget);
        let key = HelloBudgetKey {
            tunnel_id: tunnel.0,
            from_remote: u32::from(from_remote),
        };
        match m.get(&PodHelloBudgetKey(key), 0) {
            Ok(v) => Ok(Some(v.0)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_error(HELLO_BUDGETS, e)),
        }
    }

    /// One counter, summed over all CPUs.
    pub fn counter(&self, counter: Counter) -> Result<CounterValue, Error> {
        read_counter(&self.ebpf, COUNTERS, counter.index())
    }

    /// Every counter, in index order.
    pub fn counters(&self) -> Result<Vec<(Counter, CounterValue)>, Error> {
        Counter::ALL
            .iter()
            .map(|c| Ok((*c, self.counter(*c)?)))
            .collect()
    }

    /// Runs `program` once over `frame` (an Ethernet frame, skb mark 0) with
    /// `BPF_PROG_TEST_RUN`; the resulting packet is written to `out`.
    pub fn test_run(
        &self,
        program: Program,
        frame: &[u8],
        out: &mut [u8],
    ) -> Result<TestRunOutput, Error> {
        test_run(&self.ebpf, program.name(), frame, Some(out), 1)
    }

    /// [`DataPath::test_run`] for a packet whose skb carries `mark`, as a
    /// proxy's marked socket sends it (the endpoint key's scope).
    pub fn test_run_marked(
        &self,
        program: Program,
        frame: &[u8],
        out: &mut [u8],
        mark: u32,
    ) -> Result<TestRunOutput, Error> {
        crate::test_run_with(&self.ebpf, program.name(), frame, Some(out), 1, mark)
    }

    /// Runs `program` `repeat` times over the same skb (the kernel reuses
    /// it: use programs whose output equals their input, e.g. after an
    /// encapsulation, the decapsulation) and returns the mean time per run.
    pub fn bench_run(
        &self,
        program: Program,
        frame: &[u8],
        repeat: u32,
    ) -> Result<Duration, Error> {
        Ok(test_run(&self.ebpf, program.name(), frame, None, repeat)?.duration)
    }

    /// Runs the benchmark program (gateway egress then cluster ingress on
    /// one packet) once over `frame`; the packet it leaves is written to `out`.
    /// It needs an endpoint for the frame whose tunnel's remote is its own
    /// local end, so the decapsulation accepts what the encapsulation wrote.
    pub fn test_run_roundtrip(&self, frame: &[u8], out: &mut [u8]) -> Result<TestRunOutput, Error> {
        test_run(&self.ebpf, ROUNDTRIP, frame, Some(out), 1)
    }

    /// [`DataPath::test_run_roundtrip`] `repeat` times; the mean time per run.
    pub fn bench_roundtrip(&self, frame: &[u8], repeat: u32) -> Result<Duration, Error> {
        Ok(test_run(&self.ebpf, ROUNDTRIP, frame, None, repeat)?.duration)
    }
}
