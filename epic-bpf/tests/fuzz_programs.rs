//! The four TC programs fuzzed through `BPF_PROG_TEST_RUN` against a
//! userspace reference model (`fuzz/model.rs`): for every input, the
//! verdict, the one counter bumped (packets and bytes), the exact output
//! bytes of a passed frame, the hello budget's update, and (periodically)
//! the whole reply table must be what the model says.
//!
//! Inputs are well-formed packets built from a world of tunnels and
//! endpoints, and mutations of kept inputs. BPF programs carry no coverage
//! instrumentation, so the guidance is by outcome: an input is kept when it
//! gives a (program, verdict, counter, MSS clamped, size class) not seen
//! before, plus a sample of the rest. The run stops after
//! `EPIC_BPF_FUZZ_SECONDS` (default 30) or `MAX_ITERATIONS`, and fails if a
//! program never reached one of its outcomes (the generator would be
//! blind). `EPIC_BPF_FUZZ_SEED` replays a run; the seed is in every failure.
//!
//! The programs run in a network namespace the test creates, whose loopback
//! device (the one `BPF_PROG_TEST_RUN` uses) has an MTU of 1500, so MSS
//! clamping and the size check are reached.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use epic_bpf::{DataPath, Program};
use epic_gue::TunnelId;
use epic_gue::maps::{Counter, CounterValue, FlowKey, HelloBudgetKey};
use epic_test_support::{Netns, require_root};

mod common;
mod fuzz;

use fuzz::inputs::{Gen, Input};
use fuzz::model::{self, Expect, Prog};
use fuzz::world::World;

const MTU: usize = 1500;
const MAX_ITERATIONS: u64 = 5_000_000;
const CORPUS_CAP: usize = 512;
/// The reply tables are compared in full this often (iterations).
const REPLIES_EVERY: u64 = 4096;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn program(prog: Prog) -> Program {
    match prog {
        Prog::GatewayEgress => Program::GatewayEgress,
        Prog::GatewayIngress => Program::GatewayIngress,
        Prog::ClusterEgress => Program::ClusterEgress,
        Prog::ClusterIngress => Program::ClusterIngress,
    }
}

fn is_gateway(prog: Prog) -> bool {
    matches!(prog, Prog::GatewayEgress | Prog::GatewayIngress)
}

/// What the kernel did with one input.
#[derive(Debug)]
struct Got {
    verdict: u32,
    output: Vec<u8>,
    /// Counters that changed, with their deltas.
    counted: Vec<(Counter, CounterValue)>,
}

/// A hello's budget around the run: its TAT before and after, and the
/// monotonic clock (the programs' `bpf_ktime_get_ns`) before and after.
struct Budget {
    before: u64,
    after: u64,
    t0: u64,
    t1: u64,
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

struct Kernel {
    gw: DataPath,
    cl: DataPath,
    gw_counters: Vec<(Counter, CounterValue)>,
    cl_counters: Vec<(Counter, CounterValue)>,
}

impl Kernel {
    fn new(world: &World) -> Kernel {
        let mut gw = DataPath::load().expect("load the gateway programs");
        let mut cl = DataPath::load().expect("load the cluster programs");
        world.program(&mut gw, &mut cl);
        let gw_counters = gw.counters().expect("counters");
        let cl_counters = cl.counters().expect("counters");
        Kernel {
            gw,
            cl,
            gw_counters,
            cl_counters,
        }
    }

    fn budget(&self, key: &HelloBudgetKey) -> u64 {
        self.gw
            .hello_budget(TunnelId(key.tunnel_id), key.from_remote == 1)
            .expect("read the hello budget")
            .map_or(0, |b| b.tat_ns)
    }

    fn run(&mut self, prog: Prog, input: &Input) -> Got {
        let (dp, last) = if is_gateway(prog) {
            (&self.gw, &mut self.gw_counters)
        } else {
            (&self.cl, &mut self.cl_counters)
        };
        let mut out = vec![0u8; input.frame.len() + 128];
        let r = match prog {
            Prog::GatewayEgress | Prog::ClusterEgress => {
                dp.test_run_marked(program(prog), &input.frame, &mut out, input.mark)
            }
            _ => dp.test_run(program(prog), &input.frame, &mut out),
        }
        .unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN of {prog:?} on {} bytes {}: {e}",
                input.frame.len(),
                hex(&input.frame)
            )
        });
        out.truncate(r.len);
        let now = dp.counters().expect("counters");
        let counted = now
            .iter()
            .zip(last.iter())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((c, a), (_, b))| {
                let delta = CounterValue {
                    packets: a.packets - b.packets,
                    bytes: a.bytes - b.bytes,
                };
                (*c, delta)
            })
            .collect();
        *last = now;
        Got {
            verdict: r.verdict,
            output: out,
            counted,
        }
    }

    fn replies(&self, gateway: bool) -> HashMap<FlowKey, u32> {
        let dp = if gateway { &self.gw } else { &self.cl };
        dp.flows()
            .expect("reply flows")
            .into_iter()
            .map(|(k, v)| (k, v.tunnel_id))
            .collect()
    }
}

fn one_count(counter: Counter, len: usize) -> Vec<(Counter, CounterValue)> {
    vec![(
        counter,
        CounterValue {
            packets: 1,
            bytes: len as u64,
        },
    )]
}

/// Whether the kernel did what the model expects; `Err` says how not.
fn check(expect: &Expect, got: &Got, len: usize, budget: Option<&Budget>) -> Result<(), String> {
    let counted = |c: Option<Counter>| c.map_or(Vec::new(), |c| one_count(c, len));
    match expect {
        Expect::Pass {
            counter, output, ..
        } => {
            if got.verdict != TC_ACT_OK {
                return Err(format!("verdict {} instead of TC_ACT_OK", got.verdict));
            }
            if got.counted != counted(*counter) {
                return Err(format!("counted {:?}, expected {counter:?}", got.counted));
            }
            if &got.output != output {
                return Err(format!(
                    "output differs\n   model: {}\n  kernel: {}",
                    hex(output),
                    hex(&got.output)
                ));
            }
        }
        Expect::Drop(reason) => {
            if got.verdict != TC_ACT_SHOT || got.counted != counted(Some(*reason)) {
                return Err(format!(
                    "verdict {} counted {:?}, expected a drop as {}",
                    got.verdict,
                    got.counted,
                    reason.name()
                ));
            }
        }
        Expect::Hello {
            interval_ns, burst, ..
        } => {
            let b = budget.expect("a hello has its budget read");
            let allowance = (burst - 1) * interval_ns;
            let passed = got.verdict == TC_ACT_OK
                && got.counted == counted(Some(Counter::ControlPassed))
                && got.output.len() == len;
            let limited = got.verdict == TC_ACT_SHOT
                && got.counted == counted(Some(Counter::DropHelloRateLimited));
            let tat_ok = if passed {
                b.before <= b.t1 + allowance
                    && (b.before.max(b.t0) + interval_ns..=b.before.max(b.t1) + interval_ns)
                        .contains(&b.after)
            } else {
                limited && b.before > b.t0 + allowance && b.after == b.before
            };
            if !tat_ok {
                return Err(format!(
                    "hello: verdict {} counted {:?}; budget TAT {} → {} with the clock in {}..{} \
                     (interval {interval_ns} ns, burst {burst})",
                    got.verdict, got.counted, b.before, b.after, b.t0, b.t1
                ));
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome an input gave, as the guidance and the coverage report see it.
fn outcome(expect: &Expect, got: &Got) -> (String, bool) {
    let name = got
        .counted
        .first()
        .map_or("passed", |(c, _)| c.name())
        .to_owned();
    let clamped = matches!(expect, Expect::Pass { clamped: true, .. });
    (name, clamped)
}

/// Outcomes each program must reach in a run.
fn required(prog: Prog) -> &'static [&'static str] {
    match prog {
        Prog::GatewayEgress => &[
            "passed",
            "encapsulated",
            "drop_no_endpoint",
            "drop_tunnel_pending",
            "drop_unknown_tunnel",
            "drop_too_big",
            "mss_clamped",
        ],
        Prog::GatewayIngress => &[
            "passed",
            "decapsulated",
            "drop_malformed",
            "drop_unknown_tunnel",
            "drop_tunnel_pending",
            "drop_wrong_source",
            "drop_wrong_destination",
            "drop_inner_unsupported",
            "drop_inner_not_allowed",
            "control_passed",
            "drop_hello_malformed",
            "drop_hello_unknown_tunnel",
            "drop_hello_rate_limited",
            "mss_clamped",
        ],
        Prog::ClusterEgress => &["passed", "encapsulated", "drop_too_big", "mss_clamped"],
        Prog::ClusterIngress => &[
            "passed",
            "decapsulated",
            "control_passed",
            "drop_wrong_source",
            "drop_malformed",
            "drop_inner_unsupported",
            "drop_inner_not_endpoint",
            "mss_clamped",
        ],
    }
}

struct Fuzzer {
    inputs: Gen,
    world: World,
    kernel: Kernel,
    corpus: HashMap<Prog, Vec<Input>>,
    signatures: HashSet<(Prog, String, bool, bool)>,
    reached: HashMap<Prog, HashSet<String>>,
    runs: HashMap<Prog, u64>,
    seed: u64,
}

impl Fuzzer {
    fn next_input(&mut self, prog: Prog) -> Input {
        let corpus = self.corpus.entry(prog).or_default();
        if corpus.is_empty() || self.inputs.rng.u8(..10) < 3 {
            return self.inputs.seed(prog, &self.world);
        }
        let mut input = corpus[self.inputs.rng.usize(..corpus.len())].clone();
        let other = corpus[self.inputs.rng.usize(..corpus.len())].clone();
        self.inputs.mutate(&mut input, &other);
        input
    }

    fn fail(&self, prog: Prog, input: &Input, why: &str) -> ! {
        panic!(
            "{prog:?} disagrees with the model (EPIC_BPF_FUZZ_SEED={}): {why}\n  mark {:#x}\n  frame {}",
            self.seed,
            input.mark,
            hex(&input.frame)
        );
    }

    fn step(&mut self, prog: Prog) {
        let input = self.next_input(prog);
        let w = &mut self.world;
        let expect = model::expect(prog, &input.frame, input.mark, &mut w.gw, &mut w.cl, MTU);
        let (got, budget) = if let Expect::Hello { key, .. } = &expect {
            let before = self.kernel.budget(key);
            let t0 = monotonic_ns();
            let got = self.kernel.run(prog, &input);
            let t1 = monotonic_ns();
            let after = self.kernel.budget(key);
            let budget = Budget {
                before,
                after,
                t0,
                t1,
            };
            (got, Some(budget))
        } else {
            (self.kernel.run(prog, &input), None)
        };
        if let Err(why) = check(&expect, &got, input.frame.len(), budget.as_ref()) {
            self.fail(prog, &input, &why);
        }
        let (name, clamped) = outcome(&expect, &got);
        let reached = self.reached.entry(prog).or_default();
        reached.insert(name.clone());
        if clamped {
            reached.insert("mss_clamped".to_owned());
        }
        let big = input.frame.len() > 1280;
        let runs = self.runs.entry(prog).or_default();
        *runs += 1;
        let new = self.signatures.insert((prog, name, clamped, big));
        let corpus = self.corpus.entry(prog).or_default();
        if new || runs.is_multiple_of(64) {
            if corpus.len() < CORPUS_CAP {
                corpus.push(input);
            } else {
                let at = self.inputs.rng.usize(..CORPUS_CAP);
                corpus[at] = input;
            }
        }
    }

    fn check_replies(&self) {
        for (gateway, maps) in [(true, &self.world.gw), (false, &self.world.cl)] {
            let kernel = self.kernel.replies(gateway);
            assert!(
                kernel == maps.replies,
                "the {} reply table differs from the model's (EPIC_BPF_FUZZ_SEED={}): \
                 {} entries in the kernel, {} in the model",
                if gateway { "gateway" } else { "cluster" },
                self.seed,
                kernel.len(),
                maps.replies.len()
            );
        }
    }
}

fn fuzz(seed: u64, budget: Duration) -> String {
    let world = World::new();
    let kernel = Kernel::new(&world);
    let mut f = Fuzzer {
        inputs: Gen {
            rng: fastrand::Rng::with_seed(seed),
        },
        world,
        kernel,
        corpus: HashMap::new(),
        signatures: HashSet::new(),
        reached: HashMap::new(),
        runs: HashMap::new(),
        seed,
    };
    let start = Instant::now();
    let mut iterations = 0u64;
    while iterations < MAX_ITERATIONS && start.elapsed() < budget {
        for prog in Prog::ALL {
            f.step(prog);
        }
        iterations += 4;
        if iterations.is_multiple_of(REPLIES_EVERY) {
            f.check_replies();
        }
    }
    f.check_replies();
    let elapsed = start.elapsed().as_secs_f64();
    let mut report = format!(
        "seed {seed}: {iterations} runs in {elapsed:.1} s ({:.0}/s), {} outcome signatures, \
         reply tables {} (gateway) and {} (cluster) entries\n",
        iterations as f64 / elapsed,
        f.signatures.len(),
        f.world.gw.replies.len(),
        f.world.cl.replies.len()
    );
    for prog in Prog::ALL {
        let reached = f.reached.get(&prog).cloned().unwrap_or_default();
        let missing: Vec<_> = required(prog)
            .iter()
            .filter(|r| !reached.contains(**r))
            .collect();
        assert!(
            missing.is_empty(),
            "{prog:?} never reached {missing:?} in {iterations} runs (EPIC_BPF_FUZZ_SEED={seed})"
        );
        let mut names: Vec<_> = reached.into_iter().collect();
        names.sort();
        report += &format!("  {prog:?}: {} runs, {}\n", f.runs[&prog], names.join(" "));
    }
    report
}

#[test]
fn the_four_programs_agree_with_the_reference_model() {
    if !require_root("the_four_programs_agree_with_the_reference_model") {
        return;
    }
    let seconds: u64 = std::env::var("EPIC_BPF_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("EPIC_BPF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let ns = Netns::new("fuzz").expect("create the namespace");
    ns.ip(["link", "set", "lo", "mtu", &MTU.to_string()])
        .expect("set the loopback MTU");
    let report = ns
        .run_in(move || fuzz(seed, Duration::from_secs(seconds)))
        .expect("enter the namespace");
    eprintln!("{report}");
}
