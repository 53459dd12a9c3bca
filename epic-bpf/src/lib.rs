//! The EPIC-RS eBPF data path: the programs, embedded, and their loader.
//!
//! The programs live in `epic-bpf/ebpf/` (Rust, `aya-ebpf`, built on nightly
//! for `bpfel-unknown-none` by this crate's build script with the toolchain
//! that `cargo xtask setup` installs). The object is embedded in this crate,
//! so a binary that depends on `epic-bpf` carries its programs with it.
//!
//! Today the crate holds the toolchain's proof: [`CounterProgram`], a TC
//! classifier that counts packets and bytes in per-CPU counters. Attaching it
//! uses TCX on kernels that have it (6.6 and later).
//!
//! Loading and attaching need `CAP_BPF` and `CAP_NET_ADMIN` (root).
//!
//! ```no_run
//! use epic_bpf::{CounterProgram, Direction};
//!
//! let mut program = CounterProgram::load()?;
//! program.attach("eth0", Direction::Ingress)?;
//! // ... traffic flows ...
//! let counters = program.counters()?;
//! println!("{} packets, {} bytes", counters.packets, counters.bytes);
//! // Dropping `program` detaches it and unloads it.
//! # Ok::<(), epic_bpf::Error>(())
//! ```

#![deny(missing_docs)]

use std::fmt;

use aya::Ebpf;
use aya::maps::{MapError, PerCpuArray};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions};
/// Packet and byte totals (the map value type shared with the eBPF programs).
pub use epic_gue::maps::CounterValue;

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
    use epic_gue::maps::CounterValue;

    /// A `CounterValue` as an aya map value.
    #[repr(transparent)]
    #[derive(Clone, Copy)]
    pub struct PodCounterValue(pub CounterValue);

    // SAFETY: `CounterValue` is `#[repr(C)]`, `Copy`, made of two u64 fields
    // with no padding (epic-gue asserts its size at compile time), so every
    // bit pattern is a valid value; the wrapper is `repr(transparent)`.
    #[allow(unsafe_code)]
    unsafe impl aya::Pod for PodCounterValue {}
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

/// Errors from loading, attaching and reading the eBPF programs; each names
/// the program, map or interface involved.
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
        let program = classifier(&mut ebpf)?;
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
        let program = classifier(&mut self.ebpf)?;
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
        classifier(&mut self.ebpf)?
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
        let map = self
            .ebpf
            .map(counter::MAP)
            .ok_or(Error::MapMissing { map: counter::MAP })?;
        let array: PerCpuArray<_, pod::PodCounterValue> =
            PerCpuArray::try_from(map).map_err(|source| Error::Map {
                map: counter::MAP,
                source: Box::new(source),
            })?;
        let per_cpu = array.get(&counter::SLOT, 0).map_err(|source| Error::Map {
            map: counter::MAP,
            source: Box::new(source),
        })?;
        Ok(per_cpu
            .iter()
            .fold(CounterValue::default(), |sum, cpu| CounterValue {
                packets: sum.packets.wrapping_add(cpu.0.packets),
                bytes: sum.bytes.wrapping_add(cpu.0.bytes),
            }))
    }

    /// Runs the program once over `frame` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, without any interface, and returns its verdict
    /// (`0` is `TC_ACT_OK`).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        let program: &SchedClassifier = self
            .ebpf
            .program(counter::PROGRAM)
            .ok_or(Error::ProgramMissing {
                program: counter::PROGRAM,
            })?
            .try_into()
            .map_err(|source| Error::Program {
                program: counter::PROGRAM,
                source: Box::new(source),
            })?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let result = program.test_run(opts).map_err(|source| Error::TestRun {
            program: counter::PROGRAM,
            source: Box::new(source),
        })?;
        Ok(result.return_value)
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(counter::PROGRAM)
        .ok_or(Error::ProgramMissing {
            program: counter::PROGRAM,
        })?
        .try_into()
        .map_err(|source| Error::Program {
            program: counter::PROGRAM,
            source: Box::new(source),
        })
}
