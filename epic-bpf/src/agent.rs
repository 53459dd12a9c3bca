//! The hello agent loops: `epic-gue`'s sans-IO [`HelloSender`] and
//! [`HelloVerifier`] over a UDP socket on port 6080, wired to a [`DataPath`].
//!
//! - [`ClusterHelloAgent`] (cluster node): sends each tunnel's hellos from the
//!   node's port 6080 to the gateway node's port 6080, which opens (and keeps
//!   open) the NAT mapping the gateway's data then uses, and answers the
//!   gateway's challenges from the same socket (so through the same mapping).
//! - [`GatewayHelloAgent`] (gateway node): receives the hellos and responses
//!   the gateway ingress program passed up, feeds them to the verifier, sends
//!   the challenges it asks for, and writes only verified results into the
//!   tunnel map: `Learned`/`Rebound` (after an answered challenge) set the
//!   remote, `Expired` sets the tunnel back to pending (its packets are then
//!   dropped as `drop_tunnel_pending`). Rejected datagrams change nothing;
//!   they are counted by reason in [`HelloStats`].
//!
//! Both loops run for a bounded time per call (`run_for`), so a caller (a
//! binary's main loop, or a test) decides how long and how often.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant as StdInstant};

use epic_gue::HelloEvent;
use epic_gue::HelloRepr;
use epic_gue::hello::clock::{MonotonicClock, wall_clock_nanos};
use epic_gue::hello::{HelloDatagram, HelloSender, HelloVerifier, RejectReason, TunnelSlot};

use crate::{DataPath, Error};

/// Errors of the agent loops.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A socket operation failed.
    #[error("hello socket {local}: {what}: {source}")]
    Socket {
        /// The socket's local address, if known.
        local: String,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Programming the data path failed.
    #[error(transparent)]
    DataPath(#[from] Box<Error>),
}

fn socket_error(socket: &UdpSocket, what: &'static str, source: std::io::Error) -> AgentError {
    AgentError::Socket {
        local: socket
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
        what,
        source,
    }
}

/// Writes a verified hello result into the data path's tunnel map.
pub fn apply_event(datapath: &mut DataPath, event: &HelloEvent) -> Result<(), Error> {
    match *event {
        HelloEvent::Learned { tunnel, addr } | HelloEvent::Refreshed { tunnel, addr } => {
            // Refreshed rewrites the same value: it also repairs a map entry
            // someone reset while the hellos kept coming.
            datapath.set_verified_remote(tunnel, addr)
        }
        HelloEvent::Rebound { tunnel, new, .. } => datapath.set_verified_remote(tunnel, new),
        HelloEvent::Expired { tunnel, .. } => datapath.set_pending(tunnel),
        // A challenge moves nothing: its answer will.
        HelloEvent::Challenge { .. } | HelloEvent::Rejected { .. } => Ok(()),
    }
}

/// How many hellos a [`GatewayHelloAgent`] handled, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HelloStats {
    /// `Challenge` events (a verified hello from a new address), sent.
    pub challenged: u64,
    /// Challenges the socket could not send (the address is the hello's
    /// outer source, which may be anything).
    pub challenges_unsent: u64,
    /// `Learned` events (first answered challenge, or first after expiry).
    pub learned: u64,
    /// `Refreshed` events (same remote).
    pub refreshed: u64,
    /// `Rebound` events (the NAT mapping changed).
    pub rebound: u64,
    /// `Expired` events (hellos stopped).
    pub expired: u64,
    /// Rejected datagrams, all reasons.
    pub rejected: u64,
    /// Of the rejected: replays (a counter already accepted, or older).
    pub replayed: u64,
    /// Of the rejected: MACs that did not verify (forgeries, wrong keys).
    pub bad_mac: u64,
}

impl HelloStats {
    /// Counts one event.
    pub fn record(&mut self, event: &HelloEvent) {
        match event {
            HelloEvent::Challenge { .. } => self.challenged += 1,
            HelloEvent::Learned { .. } => self.learned += 1,
            HelloEvent::Refreshed { .. } => self.refreshed += 1,
            HelloEvent::Rebound { .. } => self.rebound += 1,
            HelloEvent::Expired { .. } => self.expired += 1,
            HelloEvent::Rejected { reason } => {
                self.rejected += 1;
                match reason {
                    RejectReason::Replayed { .. } | RejectReason::Stale { .. } => {
                        self.replayed += 1;
                    }
                    RejectReason::BadMac { .. } => self.bad_mac += 1,
                    _ => {}
                }
            }
        }
    }
}

/// Bounds how many rejected hellos are logged: at most `per_window` in each
/// `window`, then one summary of how many were left out. Rejections are
/// attacker-controlled; every one is still counted in [`HelloStats`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use epic_bpf::agent::RejectionLog;
///
/// let start = Instant::now();
/// let mut log = RejectionLog::new(2, Duration::from_secs(10), start);
/// assert!(log.admit(start));
/// assert!(log.admit(start));
/// assert!(!log.admit(start)); // the third in the window is left out
/// assert_eq!(log.roll(start + Duration::from_secs(10)), Some(1));
/// assert!(log.admit(start + Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone)]
pub struct RejectionLog {
    per_window: u32,
    window: Duration,
    started: StdInstant,
    logged: u32,
    suppressed: u64,
}

impl RejectionLog {
    /// At most `per_window` logged rejections per `window`, from `now`.
    pub fn new(per_window: u32, window: Duration, now: StdInstant) -> Self {
        RejectionLog {
            per_window,
            window,
            started: now,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether the rejection seen at `now` may be logged (else it is
    /// counted as left out).
    pub fn admit(&mut self, now: StdInstant) -> bool {
        let _ = self.roll(now);
        if self.logged < self.per_window {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Starts a new window if the current one ended by `now`; returns how
    /// many rejections the ended window left out, if any (log that once).
    pub fn roll(&mut self, now: StdInstant) -> Option<u64> {
        if now.saturating_duration_since(self.started) < self.window {
            return None;
        }
        self.started = now;
        self.logged = 0;
        let left_out = std::mem::take(&mut self.suppressed);
        (left_out > 0).then_some(left_out)
    }
}

/// Gateway side: verifies received hellos and programs the tunnel map.
pub struct GatewayHelloAgent {
    socket: UdpSocket,
    verifier: HelloVerifier<Vec<TunnelSlot>>,
    clock: MonotonicClock,
    stats: HelloStats,
}

impl std::fmt::Debug for GatewayHelloAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHelloAgent")
            .field("socket", &self.socket.local_addr().ok())
            .field("tunnels", &self.verifier.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl GatewayHelloAgent {
    /// An agent reading hellos from `socket` (bound to port 6080) and
    /// checking them with `verifier` (whose tunnels it knows).
    /// The verifier gets the wall clock of the agent's monotonic clock, so
    /// hellos whose counter is far from it are refused.
    pub fn new(socket: UdpSocket, mut verifier: HelloVerifier<Vec<TunnelSlot>>) -> Self {
        let clock = MonotonicClock::new();
        verifier.set_wall_origin(wall_clock_nanos().saturating_sub(clock.now().as_nanos()));
        GatewayHelloAgent {
            socket,
            verifier,
            clock,
            stats: HelloStats::default(),
        }
    }

    /// What the agent has handled so far.
    pub fn stats(&self) -> HelloStats {
        self.stats
    }

    /// The verifier, to add or remove tunnels.
    pub fn verifier_mut(&mut self) -> &mut HelloVerifier<Vec<TunnelSlot>> {
        &mut self.verifier
    }

    /// Receives and handles hellos for `budget`, applying every verified
    /// result (and expiries) to `datapath`; returns the events in order.
    pub fn run_for(
        &mut self,
        datapath: &mut DataPath,
        budget: Duration,
    ) -> Result<Vec<HelloEvent>, AgentError> {
        let deadline = StdInstant::now() + budget;
        let mut events = Vec::new();
        let mut buf = [0u8; 1500];
        loop {
            events.extend(self.expire(datapath)?);
            let left = deadline.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                return Ok(events);
            }
            let wait = left.min(Duration::from_millis(100));
            if let Some((len, source)) = receive_within(&self.socket, wait, &mut buf)? {
                let datagram = buf.get(..len).unwrap_or(&[]);
                events.push(self.handle(datapath, source, datagram)?);
            }
        }
    }

    /// Handles every datagram already waiting on the socket, without
    /// blocking; returns the events in order.
    pub fn drain(&mut self, datapath: &mut DataPath) -> Result<Vec<HelloEvent>, AgentError> {
        self.socket
            .set_nonblocking(true)
            .map_err(|e| socket_error(&self.socket, "set non-blocking", e))?;
        let mut events = Vec::new();
        let mut buf = [0u8; 1500];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((len, source)) => {
                    let datagram = buf.get(..len).unwrap_or(&[]);
                    events.push(self.handle(datapath, source, datagram)?);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(events),
                Err(e) => return Err(socket_error(&self.socket, "receive", e)),
            }
        }
    }

    /// Forgets the mappings whose hellos stopped, setting their tunnels
    /// back to pending; returns the `Expired` events.
    pub fn expire(&mut self, datapath: &mut DataPath) -> Result<Vec<HelloEvent>, AgentError> {
        let mut events = Vec::new();
        while let Some(event) = self.verifier.poll(self.clock.now()) {
            apply_event(datapath, &event).map_err(Box::new)?;
            self.stats.record(&event);
            events.push(event);
        }
        Ok(events)
    }

    /// How long until [`expire`](Self::expire) has something to do, if it
    /// will.
    pub fn next_expiry(&self) -> Option<Duration> {
        let next = self.verifier.next_timeout()?;
        Some(Duration::from_nanos(
            next.as_nanos().saturating_sub(self.clock.now().as_nanos()),
        ))
    }

    /// Waits until a datagram waits on the hello socket, `wake` is readable,
    /// or `timeout` passes, whichever comes first (a signal ends the wait
    /// early too). Says which were ready.
    pub fn wait(&self, wake: BorrowedFd<'_>, timeout: Duration) -> Result<Ready, AgentError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [
            PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Ready::default()),
            Err(e) => return Err(socket_error(&self.socket, "poll", e.into())),
        }
        let readable = |fd: &PollFd<'_>| {
            fd.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
        };
        Ok(Ready {
            datagrams: readable(&fds[0]),
            wake: readable(&fds[1]),
        })
    }

    /// Verifies one datagram from `source`, sends the challenge it asks
    /// for, applies the result to `datapath` and counts it.
    fn handle(
        &mut self,
        datapath: &mut DataPath,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Result<HelloEvent, AgentError> {
        let event = self.verifier.handle(self.clock.now(), source, datagram);
        if let HelloEvent::Challenge { addr, datagram, .. } = &event
            && send_once(&self.socket, datagram, *addr).is_err()
        {
            self.stats.challenges_unsent += 1;
        }
        apply_event(datapath, &event).map_err(Box::new)?;
        self.stats.record(&event);
        Ok(event)
    }
}

/// What [`GatewayHelloAgent::wait`] found ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// Datagrams wait on the hello socket.
    pub datagrams: bool,
    /// The wake-up descriptor is readable.
    pub wake: bool,
}

/// One datagram received on `socket` within `wait` (at least 1 ms), if any:
/// a timeout, or a signal delivered to this thread (EINTR), is none.
fn receive_within(
    socket: &UdpSocket,
    wait: Duration,
    buf: &mut [u8],
) -> Result<Option<(usize, SocketAddr)>, AgentError> {
    socket
        .set_nonblocking(false)
        .map_err(|e| socket_error(socket, "set blocking", e))?;
    socket
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .map_err(|e| socket_error(socket, "set timeout", e))?;
    match socket.recv_from(buf) {
        Ok(received) => Ok(Some(received)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(socket_error(socket, "receive", e)),
    }
}

/// Sends one datagram, again after a signal (EINTR) interrupted it.
fn send_once(socket: &UdpSocket, datagram: &HelloDatagram, to: SocketAddr) -> std::io::Result<()> {
    loop {
        match socket.send_to(datagram.as_bytes(), to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What a [`ClusterHelloAgent`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterHelloStats {
    /// Hellos sent.
    pub sent: u64,
    /// Challenges answered.
    pub answered: u64,
    /// Datagrams received that were not a genuine, recent challenge from
    /// the tunnel's gateway (refused, not answered).
    pub refused: u64,
}

/// Cluster side: sends each tunnel's hellos to its gateway node and
/// answers that gateway's challenges.
pub struct ClusterHelloAgent {
    socket: UdpSocket,
    senders: Vec<(SocketAddr, HelloSender)>,
    clock: MonotonicClock,
    stats: ClusterHelloStats,
}

impl std::fmt::Debug for ClusterHelloAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHelloAgent")
            .field("socket", &self.socket.local_addr().ok())
            .field("tunnels", &self.senders.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl ClusterHelloAgent {
    /// An agent sending from and answering on `socket` (bound to the node's
    /// port 6080); its senders are created with `clock.now()` as their start.
    pub fn new(socket: UdpSocket, clock: MonotonicClock) -> Self {
        ClusterHelloAgent {
            socket,
            senders: Vec::new(),
            clock,
            stats: ClusterHelloStats::default(),
        }
    }

    /// Adds a tunnel: `sender`'s hellos go to `gateway`, and only `gateway`'s
    /// challenges for that tunnel are answered.
    pub fn add_sender(&mut self, gateway: SocketAddr, sender: HelloSender) {
        self.senders.push((gateway, sender));
    }

    /// What the agent did so far.
    pub fn stats(&self) -> ClusterHelloStats {
        self.stats
    }

    /// Sends the hellos that are due now; returns how many were sent.
    pub fn send_due(&mut self) -> Result<usize, AgentError> {
        let now = self.clock.now();
        let mut sent = 0;
        for (gateway, sender) in &mut self.senders {
            while let Some(hello) = sender.poll_transmit(now) {
                send_once(&self.socket, &hello, *gateway)
                    .map_err(|e| socket_error(&self.socket, "send", e))?;
                sent += 1;
            }
        }
        self.stats.sent += sent as u64;
        Ok(sent)
    }

    /// Waits up to `wait` for one datagram and answers it if it is a
    /// genuine challenge from the tunnel's gateway; returns whether one
    /// was answered.
    pub fn answer_one(&mut self, wait: Duration) -> Result<bool, AgentError> {
        let mut buf = [0u8; 1500];
        let Some((len, source)) = receive_within(&self.socket, wait, &mut buf)? else {
            return Ok(false);
        };
        let datagram = buf.get(..len).unwrap_or(&[]);
        let tunnel = HelloRepr::parse(datagram).map(|m| m.tunnel_id).ok();
        let response = self
            .senders
            .iter_mut()
            .find(|(gateway, sender)| *gateway == source && Some(sender.tunnel()) == tunnel)
            .and_then(|(_, sender)| sender.answer(datagram).ok());
        let Some(response) = response else {
            self.stats.refused += 1;
            return Ok(false);
        };
        send_once(&self.socket, &response, source)
            .map_err(|e| socket_error(&self.socket, "send", e))?;
        self.stats.answered += 1;
        Ok(true)
    }

    /// Sends due hellos and answers challenges for `budget`; returns how
    /// many hellos were sent.
    pub fn run_for(&mut self, budget: Duration) -> Result<usize, AgentError> {
        let deadline = StdInstant::now() + budget;
        let mut sent = 0;
        loop {
            sent += self.send_due()?;
            let now = self.clock.now();
            let next = self
                .senders
                .iter()
                .map(|(_, s)| s.next_timeout().saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(100));
            let left = deadline.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                return Ok(sent);
            }
            self.answer_one(next.min(left).min(Duration::from_millis(100)))?;
        }
    }
}
