//! The gateway's data-plane task: one thread owns the eBPF data path and
//! the hello agent (socket and verifier). Reconciles send it the data-path
//! changes as a batch of [`Op`]s over a channel and wait for what was
//! applied; it answers at once, since a byte on a wake-up socket ends its
//! wait. Otherwise it sleeps in `poll(2)` until a datagram arrives, a
//! mapping is due to expire, or the counters are due to be saved. Nothing
//! is shared: no lock, no time slices. When a tunnel is verified (its
//! first challenge answered) or expires, the task signals
//! [`HelloTask::changes`], so the runtime plans again: endpoints reach the
//! proxies only through verified tunnels ([`epic_model::VerifiedTunnel`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use epic_bpf::agent::{GatewayHelloAgent, HelloStats, RejectionLog};
use epic_bpf::{CounterValue, DataPath};
use epic_gue::HelloEvent;
use epic_gue::hello::TunnelConfig;
use epic_gue::maps::{Counter, EndpointKey, TunnelValue};
use epic_gue::wire::TunnelId;

use crate::config::StandaloneError;
use crate::files::write_atomically;

/// How often changed hello counters are persisted.
pub(crate) const COUNTER_SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a caller waits for the task's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `hello-counters.json`: each tunnel's last accepted hello counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HelloCounters {
    /// Counter by tunnel id.
    pub tunnels: BTreeMap<u32, u64>,
}

/// One change to the data path or the verifier.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Remove a data-path endpoint.
    RemoveEndpoint(EndpointKey),
    /// Remove a tunnel from the map and the verifier.
    RemoveTunnel(TunnelId),
    /// Give the verifier a tunnel (or its new key) and its restored
    /// counter; with `pending`, also add it to the map, unverified.
    SetTunnel {
        /// The verifier's configuration.
        config: TunnelConfig,
        /// The counter persisted before a restart.
        counter: Option<u64>,
        /// The map entry of a new tunnel.
        pending: Option<TunnelValue>,
    },
    /// Add a data-path endpoint reached through a tunnel.
    AddEndpoint(EndpointKey, TunnelId),
}

/// What a batch did: the first `done` ops were applied; `error` stopped
/// the next one.
#[derive(Debug)]
pub(crate) struct Applied {
    /// Ops applied, from the first.
    pub done: usize,
    /// Why the op after them failed.
    pub error: Option<StandaloneError>,
}

enum Command {
    Apply(Vec<Op>, mpsc::Sender<Applied>),
    Stats(mpsc::Sender<HelloStats>),
    Counters(mpsc::Sender<Result<Vec<(Counter, CounterValue)>, epic_bpf::Error>>),
    Verified(mpsc::Sender<BTreeSet<u32>>),
    Stop,
}

/// The handle of the data-plane task.
pub(crate) struct HelloTask {
    commands: mpsc::Sender<Command>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    changes: Arc<tokio::sync::Notify>,
}

impl HelloTask {
    /// Starts the task on its own thread; `counters_path` is where it
    /// persists the hello counters.
    pub fn spawn(
        datapath: DataPath,
        agent: GatewayHelloAgent,
        counters_path: PathBuf,
    ) -> std::io::Result<HelloTask> {
        let (wake, wake_reader) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_reader.set_nonblocking(true)?;
        let (commands, receiver) = mpsc::channel();
        let changes = Arc::new(tokio::sync::Notify::new());
        let worker = Worker {
            changes: changes.clone(),
            datapath,
            agent,
            commands: receiver,
            wake: wake_reader,
            counters_path,
            saved: HelloCounters::default(),
            last_save: Instant::now(),
            rejections: RejectionLog::new(10, Duration::from_secs(60), Instant::now()),
        };
        let thread = std::thread::Builder::new()
            .name("epic-hellos".into())
            .spawn(move || worker.run())?;
        Ok(HelloTask {
            commands,
            wake,
            thread: Some(thread),
            changes,
        })
    }

    /// Sends `command` and wakes the task.
    fn send(&self, command: Command) -> bool {
        let sent = self.commands.send(command).is_ok();
        // A full wake-up buffer already wakes it.
        let _ = (&self.wake).write(&[1]);
        sent
    }

    /// Applies `ops` in order, up to the first that fails.
    pub fn apply(&self, ops: Vec<Op>) -> Applied {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::Apply(ops, reply)) {
            return Applied {
                done: 0,
                error: Some(StandaloneError::HelloTask("has stopped")),
            };
        }
        answer
            .recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|_| Applied {
                done: 0,
                error: Some(StandaloneError::HelloTask("did not answer")),
            })
    }

    /// The hello statistics so far (default if the task is gone).
    pub fn stats(&self) -> HelloStats {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::Stats(reply)) {
            return HelloStats::default();
        }
        answer.recv_timeout(ANSWER_TIMEOUT).unwrap_or_default()
    }

    /// The data path's counters.
    pub fn counters(&self) -> Result<Vec<(Counter, CounterValue)>, StandaloneError> {
        let (reply, answer) = mpsc::channel();
        let gone = || StandaloneError::HelloTask("did not answer");
        if !self.send(Command::Counters(reply)) {
            return Err(gone());
        }
        Ok(answer.recv_timeout(ANSWER_TIMEOUT).map_err(|_| gone())??)
    }

    /// The tunnels whose remote end is verified now, by id (none if the
    /// task is gone).
    pub fn verified(&self) -> BTreeSet<u32> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::Verified(reply)) {
            return BTreeSet::new();
        }
        answer.recv_timeout(ANSWER_TIMEOUT).unwrap_or_default()
    }

    /// Signalled (a stored permit if no one waits) whenever a tunnel is
    /// verified or expires.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    /// Stops the task and waits for it; the data path (and its programs)
    /// is dropped with it.
    pub fn stop(&mut self) {
        self.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HelloTask {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The task's state, owned by its thread.
struct Worker {
    /// Signalled when a tunnel is verified or expires.
    changes: Arc<tokio::sync::Notify>,
    datapath: DataPath,
    agent: GatewayHelloAgent,
    commands: mpsc::Receiver<Command>,
    wake: UnixStream,
    counters_path: PathBuf,
    saved: HelloCounters,
    last_save: Instant,
    /// Rejections are attacker-controlled: at most 10 logged per minute.
    rejections: RejectionLog,
}

impl Worker {
    fn run(mut self) {
        loop {
            let save_in = COUNTER_SAVE_INTERVAL.saturating_sub(self.last_save.elapsed());
            let timeout = self
                .agent
                .next_expiry()
                .unwrap_or(Duration::from_secs(1))
                .min(save_in)
                .min(Duration::from_secs(1));
            if let Err(e) = self.agent.wait(self.wake.as_fd(), timeout) {
                tracing::warn!("hellos: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            // Drain the wake-up bytes; commands are in the channel.
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            while let Ok(command) = self.commands.try_recv() {
                if !self.command(command) {
                    return;
                }
            }
            let events = self.agent.drain(&mut self.datapath).and_then(|mut events| {
                events.extend(self.agent.expire(&mut self.datapath)?);
                Ok(events)
            });
            match events {
                Ok(events) => {
                    if events.iter().any(|e| {
                        matches!(e, HelloEvent::Learned { .. } | HelloEvent::Expired { .. })
                    }) {
                        self.changes.notify_one();
                    }
                    self.log(&events);
                }
                Err(e) => tracing::warn!("hellos: {e}"),
            }
            self.save_counters();
        }
    }

    /// Handles one command; `false` to stop.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Apply(ops, reply) => {
                let _ = reply.send(self.apply(ops));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.agent.stats());
            }
            Command::Counters(reply) => {
                let _ = reply.send(self.datapath.counters());
            }
            Command::Verified(reply) => {
                let verifier = self.agent.verifier_mut();
                let _ = reply.send(verifier.remotes().map(|(t, _)| t.0).collect());
            }
            Command::Stop => return false,
        }
        true
    }

    fn apply(&mut self, ops: Vec<Op>) -> Applied {
        let all = ops.len();
        for (done, op) in ops.into_iter().enumerate() {
            if let Err(error) = self.apply_one(op) {
                return Applied {
                    done,
                    error: Some(error),
                };
            }
        }
        Applied {
            done: all,
            error: None,
        }
    }

    fn apply_one(&mut self, op: Op) -> Result<(), StandaloneError> {
        match op {
            Op::RemoveEndpoint(key) => {
                self.datapath.remove_endpoint(key)?;
            }
            Op::RemoveTunnel(id) => {
                self.datapath.remove_tunnel(id)?;
                self.agent.verifier_mut().remove_tunnel(id);
            }
            Op::SetTunnel {
                config,
                counter,
                pending,
            } => {
                let id = config.tunnel;
                let verifier = self.agent.verifier_mut();
                verifier
                    .add_tunnel(&config)
                    .map_err(|e| StandaloneError::Verifier(format!("tunnel {id}: {e}")))?;
                if let Some(counter) = counter {
                    verifier.restore_counter(id, counter);
                }
                if let Some(value) = pending {
                    self.datapath.add_tunnel(id, value)?;
                }
            }
            Op::AddEndpoint(key, tunnel) => self.datapath.add_endpoint(key, tunnel)?,
        }
        Ok(())
    }

    fn log(&mut self, events: &[HelloEvent]) {
        let now = Instant::now();
        for event in events {
            if !matches!(event, HelloEvent::Rejected { .. }) || self.rejections.admit(now) {
                match event {
                    HelloEvent::Refreshed { .. } => tracing::debug!("hello: {event:?}"),
                    HelloEvent::Rejected { .. } => tracing::warn!("hello: {event:?}"),
                    _ => tracing::info!("hello: {event:?}"),
                }
            }
        }
        if let Some(left_out) = self.rejections.roll(now) {
            tracing::warn!(
                "hello: {left_out} more rejected hellos in the last minute (not logged; counted)"
            );
        }
    }

    /// Persists the counters if the interval passed and they changed.
    fn save_counters(&mut self) {
        if self.last_save.elapsed() < COUNTER_SAVE_INTERVAL {
            return;
        }
        self.last_save = Instant::now();
        let counters = HelloCounters {
            tunnels: self
                .agent
                .verifier_mut()
                .counters()
                .map(|(t, c)| (t.0, c))
                .collect(),
        };
        if counters == self.saved {
            return;
        }
        let bytes = serde_json::to_vec(&counters).unwrap_or_default();
        match write_atomically("hello counters", &self.counters_path, &bytes) {
            Ok(()) => self.saved = counters,
            Err(e) => tracing::warn!("{e}"),
        }
    }
}
