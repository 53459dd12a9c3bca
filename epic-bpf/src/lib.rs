//! The EPIC-RS eBPF data path: the GUE tunnel programs, embedded, their
//! loader and map manager, and the hello agent loops that program them.
//!
//! The programs live in `epic-bpf/ebpf/` (Rust, `aya-ebpf`, built on nightly
//! for `bpfel-unknown-none` by this crate's build script with the toolchain
//! that `cargo xtask setup` installs). The object is embedded in this crate,
//! so a binary that depends on `epic-bpf` carries its programs with it.
//!
//! # Programs and attach points
//!
//! All are TC classifiers, attached through TCX (kernel 6.6+) to the node's
//! uplink (the interface toward the other side of the tunnel):
//!
//! | [`Program`] | node | direction | does |
//! | --- | --- | --- | --- |
//! | [`Program::GatewayEgress`] | gateway | egress | a packet to a pod endpoint (key: scope = **skb mark** of the proxy's socket, pod address, port, protocol) → its tunnel → encapsulated toward the verified remote, and its reply flow recorded in the reply table; a tunnel without one (pending, expired) or unknown: dropped and counted, never sent in clear. Other packets pass. |
//! | [`Program::GatewayIngress`] | gateway | ingress | GUE data (UDP 6080) of a known tunnel from exactly its verified remote address and port, to exactly its local end, whose inner packet is TCP/UDP and the reply of a flow the gateway egress sent into that tunnel (the reply table) → decapsulated; other GUE data dropped and counted (`drop_wrong_source`, `drop_wrong_destination`, `drop_tunnel_pending`, `drop_unknown_tunnel`, `drop_malformed`, `drop_inner_unsupported`, `drop_inner_not_allowed`); GUE control messages passed up unchanged to the agent's socket only if each is a standard hello of exactly the hello length, by its UDP length and by the packet's (`drop_hello_malformed`) for a known tunnel (`drop_hello_unknown_tunnel`) within that tunnel's budget (`drop_hello_rate_limited`: 10/s from its verified remote, 4/s from any other source, separately). |
//! | [`Program::ClusterIngress`] | cluster | ingress | as the gateway ingress, but instead of the reply check the inner destination (address, port, protocol) must be a local endpoint of the tunnel it came in ([`DataPath::add_local_endpoint`]; else `drop_inner_not_endpoint`: the cluster node itself and other pods are out of reach); records the reply flow (pod → proxy) with its tunnel id in the LRU reply table. |
//! | [`Program::ClusterEgress`] | cluster | egress | a packet matching the reply table → encapsulated toward the tunnel's remote (the gateway). |
//!
//! The scope of an endpoint is the proxy's socket mark (`SO_MARK`, Envoy's
//! upstream `socket_options`, or an nftables `meta mark set` per cgroup): on
//! the uplink's egress hook the proxy's interface is no longer known, the mark
//! is. The platform marks a tenant's proxies with
//! [`epic_gue::maps::tenant_mark`]; a packet so marked with no endpoint (or
//! that is not TCP/UDP) is dropped (`drop_no_endpoint`), never sent in
//! clear. Mark 0 is an ordinary scope (single-tenant nodes), whose packets
//! without an endpoint pass, as do packets with other programs' marks.
//!
//! Outer headers: the tunnel's family (IPv4 or IPv6, any inner family), UDP
//! source = the tunnel's local port, destination = the verified remote port
//! (so data matches the NAT mapping the hellos opened), GUE data header with
//! the tunnel id: byte for byte what `epic_gue::encap::encapsulate` writes
//! (TTL 64, DF), except the IPv6 outer UDP checksum, which is zero (RFC
//! 6935/6936 tunnels; the receiver is always one of these programs).
//!
//! MTU — the choice is **TCP MSS clamping, no ICMP**: every TCP SYN and
//! SYN-ACK crossing the tunnel has its MSS option clamped at *both* ends, on
//! encapsulation to what fits the sending uplink and on decapsulation to what
//! fits the receiving uplink (its replies leave through it), so neither TCP
//! end sends a segment that would not fit once encapsulated (IPv4 outer:
//! MSS ≤ MTU − 36 − inner IP − 20; IPv6 outer: − 56). Anything that still
//! would not fit the device MTU (non-TCP, or GSO segments) is dropped as
//! `drop_too_big`; oversized UDP datagrams are the sender's business (route
//! MTU). The uplinks' MTU must therefore be the path MTU: a narrower link
//! *between* the two uplinks is not discovered (ICMP errors about outer
//! packets are not translated for the inner senders). Uplinks are assumed to
//! have an MTU of at least 1280; encapsulated packets up to that size skip
//! the MTU check. Outer IPv4 headers with options are not decapsulated (the
//! programs never send them).
//!
//! Reply flows are written to the LRU reply table only when new or moved to
//! another tunnel, not on every packet.
//!
//! # Maps
//!
//! | map | kind | key → value (from [`epic_gue::maps`]) | written by |
//! | --- | --- | --- | --- |
//! | `ENDPOINTS` | hash, 65536 | [`EndpointKey`] → [`EndpointValue`] | gateway: [`DataPath::add_endpoint`] (scope = the proxies' socket mark); cluster: [`DataPath::add_local_endpoint`] (scope = the tunnel id) |
//! | `TUNNELS` | hash, 16384 | [`TunnelKey`] → [`TunnelValue`] | [`DataPath::add_tunnel`], [`DataPath::set_verified_remote`] (only verified hellos) |
//! | `REPLIES` | LRU hash, 262144 | [`FlowKey`] → [`FlowValue`] | the cluster ingress and gateway egress programs; [`DataPath::expire_flows`] |
//! | `GUE_COUNTERS` | per-CPU array | [`Counter`] → [`CounterValue`] | the programs; [`DataPath::counter`] |
//!
//! # Example
//!
//! ```no_run
//! use epic_bpf::{DataPath, Program};
//! use epic_gue::maps::{Counter, EndpointKey, TunnelValue};
//! use epic_gue::{TenantId, TunnelId};
//!
//! let mut gateway = DataPath::load()?;
//! gateway.attach(Program::GatewayEgress, "eth0")?;
//! gateway.attach(Program::GatewayIngress, "eth0")?;
//! let tunnel = TunnelId(7);
//! gateway.add_tunnel(tunnel, TunnelValue::pending(TenantId(1), "198.51.100.1".parse().unwrap(), 6080))?;
//! gateway.add_endpoint(EndpointKey::new(0, "203.0.113.10".parse().unwrap(), 8080, 6), tunnel)?;
//! // after a verified hello (see `agent`):
//! gateway.set_verified_remote(tunnel, "198.51.100.254:40000".parse().unwrap())?;
//! println!("{:?}", gateway.counter(Counter::Encapsulated)?);
//! // Dropping `gateway` detaches the programs and unloads them.
//! # Ok::<(), epic_bpf::Error>(())
//! ```
//!
//! [`CounterProgram`] is the counting baseline program (`epic_count`).
//! Loading and attaching need `CAP_BPF` and `CAP_NET_ADMIN` (root).

#![deny(missing_docs)]

pub mod agent;
mod datapath;

use std::fmt;

use aya::Ebpf;
use aya::maps::{MapError, PerCpuArray};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions};
/// Packet and byte totals (the map value type shared with the eBPF programs).
pub use epic_gue::maps::CounterValue;
#[allow(unused_imports)] // used by the docs above
use epic_gue::maps::{
    Counter, EndpointKey, EndpointValue, FlowKey, FlowValue, TunnelKey, TunnelValue,
};

pub use datapath::{DataPath, Program, TestRunOutput};

/// The eBPF object built from `epic-bpf/ebpf`, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/epic-bpf-ebpf.o"));

/// The embedded eBPF object (an ELF file for `bpfel`), for inspection.
pub fn object() -> &'static [u8] {
    OBJECT
}

/// Names in the counter program (see `ebpf/src/main.rs`).
mod counter {
    pub const MAP: &str = "COUNTERS";
    pub const PROGRAM: &str = "epic_count";
    pub const SLOT: u32 = 0;
}

/// `epic-gue`'s map types as aya map keys and values.
///
/// The orphan rule keeps `aya::Pod` from being implemented on `epic-gue`'s
/// types directly, so each one gets a transparent wrapper here.
mod pod {
    use epic_gue::maps::{
        CounterValue, EndpointKey, EndpointValue, FlowKey, FlowValue, HelloBudget, HelloBudgetKey,
        TunnelKey, TunnelValue,
    };

    macro_rules! pod {
        ($($wrapper:ident($inner:ty)),* $(,)?) => {$(
            #[doc = concat!("A `", stringify!($inner), "` as an aya map key or value.")]
            #[repr(transparent)]
            #[derive(Clone, Copy)]
            pub struct $wrapper(pub $inner);

            // SAFETY: the wrapped type is `#[repr(C)]`, `Copy`, built only from
            // integers and byte arrays with no implicit padding (epic-gue
            // asserts each size at compile time), so every bit pattern is a
            // valid value; the wrapper is `repr(transparent)`.
            #[allow(unsafe_code)]
            unsafe impl aya::Pod for $wrapper {}
        )*};
    }

    pod!(
        PodCounterValue(CounterValue),
        PodEndpointKey(EndpointKey),
        PodEndpointValue(EndpointValue),
        PodTunnelKey(TunnelKey),
        PodTunnelValue(TunnelValue),
        PodFlowKey(FlowKey),
        PodFlowValue(FlowValue),
        PodHelloBudgetKey(HelloBudgetKey),
        PodHelloBudget(HelloBudget),
    );
}

/// Which way through an interface a program sees packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Packets the interface receives.
    Ingress,
    /// Packets the interface sends.
    Egress,
}

impl Direction {
    fn attach_type(self) -> TcAttachType {
        match self {
            Direction::Ingress => TcAttachType::Ingress,
            Direction::Egress => TcAttachType::Egress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Errors from loading, attaching and programming the eBPF data path; each
/// names the program, map, interface or tunnel involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded object could not be loaded into the kernel.
    #[error("loading the embedded eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// The object has no program of that name.
    #[error("the eBPF object has no program `{program}`")]
    ProgramMissing {
        /// Program name.
        program: &'static str,
    },
    /// The kernel refused to load the program (e.g. the verifier rejected it).
    #[error("loading program `{program}`: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// What aya or the kernel reported.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching to an interface failed (no such interface, no permission, ...).
    #[error("attaching program `{program}` to {interface} {direction}: {source}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// Ingress or egress.
        direction: Direction,
        /// What aya or the kernel reported.
        #[source]
        source: Box<ProgramError>,
    },
    /// Detaching failed, or the program was not attached there.
    #[error("detaching program `{program}` from {interface} {direction}: {reason}")]
    Detach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// Ingress or egress.
        direction: Direction,
        /// Why.
        reason: String,
    },
    /// The object has no map of that name.
    #[error("the eBPF object has no map `{map}`")]
    MapMissing {
        /// Map name.
        map: &'static str,
    },
    /// Reading or writing a map failed.
    #[error("map `{map}`: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What aya or the kernel reported.
        #[source]
        source: Box<MapError>,
    },
    /// The tunnel is not in the tunnel map.
    #[error("map `TUNNELS`: no tunnel {tunnel}")]
    NoSuchTunnel {
        /// The tunnel id.
        tunnel: u32,
    },
    /// A remote of another family than the tunnel's local address.
    #[error("map `TUNNELS`: tunnel {tunnel} is {family}, remote {remote} is not")]
    FamilyMismatch {
        /// The tunnel id.
        tunnel: u32,
        /// The tunnel's family ("IPv4" or "IPv6").
        family: &'static str,
        /// The refused remote.
        remote: std::net::SocketAddr,
    },
    /// Running the program under `BPF_PROG_TEST_RUN` failed.
    #[error("test run of program `{program}`: {source}")]
    TestRun {
        /// Program name.
        program: &'static str,
        /// What aya or the kernel reported.
        #[source]
        source: Box<ProgramError>,
    },
}

/// The counting TC classifier: loaded into the kernel, attachable to any
/// number of interfaces and directions, detached and unloaded on drop.
pub struct CounterProgram {
    ebpf: Ebpf,
    links: Vec<(String, Direction, SchedClassifierLinkId)>,
}

impl fmt::Debug for CounterProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterProgram")
            .field("attachments", &self.attachments())
            .finish()
    }
}

impl CounterProgram {
    /// Loads the embedded object and the `epic_count` program into the kernel.
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| Error::Load(Box::new(e)))?;
        let program = classifier(&mut ebpf, counter::PROGRAM)?;
        program.load().map_err(|source| Error::Program {
            program: counter::PROGRAM,
            source: Box::new(source),
        })?;
        Ok(CounterProgram {
            ebpf,
            links: Vec::new(),
        })
    }

    /// Attaches the program to `interface` (in the caller's network namespace) in `direction`.
    pub fn attach(&mut self, interface: &str, direction: Direction) -> Result<(), Error> {
        let program = classifier(&mut self.ebpf, counter::PROGRAM)?;
        let link = program
            .attach(interface, direction.attach_type())
            .map_err(|source| Error::Attach {
                program: counter::PROGRAM,
                interface: interface.to_owned(),
                direction,
                source: Box::new(source),
            })?;
        self.links.push((interface.to_owned(), direction, link));
        Ok(())
    }

    /// Detaches the program from `interface` in `direction`.
    pub fn detach(&mut self, interface: &str, direction: Direction) -> Result<(), Error> {
        let detach_error = |reason: String| Error::Detach {
            program: counter::PROGRAM,
            interface: interface.to_owned(),
            direction,
            reason,
        };
        let index = self
            .links
            .iter()
            .position(|(name, dir, _)| name == interface && *dir == direction)
            .ok_or_else(|| detach_error("not attached there".to_owned()))?;
        let (_, _, link) = self.links.remove(index);
        classifier(&mut self.ebpf, counter::PROGRAM)?
            .detach(link)
            .map_err(|e| detach_error(e.to_string()))
    }

    /// Where the program is attached, as (interface, direction).
    pub fn attachments(&self) -> Vec<(&str, Direction)> {
        self.links
            .iter()
            .map(|(name, dir, _)| (name.as_str(), *dir))
            .collect()
    }

    /// The counters, summed over all CPUs.
    pub fn counters(&self) -> Result<CounterValue, Error> {
        read_counter(&self.ebpf, counter::MAP, counter::SLOT)
    }

    /// Runs the program once over `frame` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, without any interface, and returns its verdict
    /// (`0` is `TC_ACT_OK`).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        Ok(test_run(&self.ebpf, counter::PROGRAM, frame, None, 1)?.verdict)
    }

    /// Runs the program `repeat` times over `frame` in one `BPF_PROG_TEST_RUN`
    /// and returns the kernel's mean time per run.
    pub fn bench_run(&self, frame: &[u8], repeat: u32) -> Result<std::time::Duration, Error> {
        Ok(test_run(&self.ebpf, counter::PROGRAM, frame, None, repeat)?.duration)
    }
}

fn read_counter(ebpf: &Ebpf, map: &'static str, slot: u32) -> Result<CounterValue, Error> {
    let data = ebpf.map(map).ok_or(Error::MapMissing { map })?;
    let array: PerCpuArray<_, pod::PodCounterValue> =
        PerCpuArray::try_from(data).map_err(|source| Error::Map {
            map,
            source: Box::new(source),
        })?;
    let per_cpu = array.get(&slot, 0).map_err(|source| Error::Map {
        map,
        source: Box::new(source),
    })?;
    Ok(per_cpu
        .iter()
        .fold(CounterValue::default(), |sum, cpu| CounterValue {
            packets: sum.packets.wrapping_add(cpu.0.packets),
            bytes: sum.bytes.wrapping_add(cpu.0.bytes),
        }))
}

fn test_run(
    ebpf: &Ebpf,
    name: &'static str,
    frame: &[u8],
    out: Option<&mut [u8]>,
    repeat: u32,
) -> Result<TestRunOutput, Error> {
    test_run_with(ebpf, name, frame, out, repeat, 0)
}

/// [`test_run`] with the skb's `mark` set to `mark`.
fn test_run_with(
    ebpf: &Ebpf,
    name: &'static str,
    frame: &[u8],
    out: Option<&mut [u8]>,
    repeat: u32,
    mark: u32,
) -> Result<TestRunOutput, Error> {
    // `struct __sk_buff` up to `mark` (offset 8): the kernel takes `mark`
    // from the context and requires the fields before it to be zero.
    let mut ctx = [0u8; 12];
    ctx[8..].copy_from_slice(&mark.to_ne_bytes());
    let program: &SchedClassifier = ebpf
        .program(name)
        .ok_or(Error::ProgramMissing { program: name })?
        .try_into()
        .map_err(|source| Error::Program {
            program: name,
            source: Box::new(source),
        })?;
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = out;
    opts.repeat = repeat.max(1);
    if mark != 0 {
        opts.ctx_in = Some(&ctx);
    }
    let result = program.test_run(opts).map_err(|source| Error::TestRun {
        program: name,
        source: Box::new(source),
    })?;
    Ok(TestRunOutput {
        verdict: result.return_value,
        len: result.data_size_out as usize,
        duration: result.duration,
    })
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::ProgramMissing { program: name })?
        .try_into()
        .map_err(|source| Error::Program {
            program: name,
            source: Box::new(source),
        })
}
