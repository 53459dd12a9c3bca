//! The authenticated NAT hello protocol, sans-IO.
//!
//! [`HelloSender`] (cluster agent) produces one hello per tunnel per interval;
//! [`HelloVerifier`] (gateway agent) checks them and learns the outer source
//! address and port each tunnel's hellos arrive from (the NAT mapping). Both
//! take the time as an [`Instant`] argument and never touch sockets or timers:
//! the caller sends what `poll_transmit` returns, feeds received datagrams to
//! `handle`, and calls `poll` when `next_timeout` passes.
//!
//! No allocation: the verifier's tunnel table lives in storage the caller
//! provides (an array, a slice, or with `std` a `Vec`).

use core::fmt;
use core::net::SocketAddr;
use core::ops::Add;
use core::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::wire::{
    HELLO_LEN, HELLO_MAC_LEN, HelloKind, HelloRepr, NodeId, TenantId, TunnelId, WireError,
    WireProfile, legacy,
};

type HmacSha256 = Hmac<Sha256>;

/// Default interval between hellos.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);

/// Default number of missed intervals after which a learned mapping expires.
pub const DEFAULT_MISSED_INTERVALS: u32 = 3;

/// How long the verifier waits for the answer to a challenge.
pub const DEFAULT_CHALLENGE_TIMEOUT: Duration = Duration::from_secs(2);

/// How far a hello's counter (the sender's wall clock, in nanoseconds since
/// the epoch) may be from the verifier's wall clock, once the verifier
/// knows it ([`HelloVerifier::set_wall_origin`]).
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A point on a monotonic clock, in nanoseconds from an origin the caller picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of time.
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

/// HKDF info prefix of [`HelloKey::node_key`].
const NODE_KEY_INFO: &[u8] = b"epic-rs hello node key v1";

/// A tunnel's 256-bit hello key (HMAC-SHA-256). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct HelloKey([u8; 32]);

impl HelloKey {
    /// A key from its 32 bytes.
    pub const fn new(bytes: [u8; 32]) -> Self {
        HelloKey(bytes)
    }

    /// The key bytes (to store in a Secret; never log them).
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from 64 hexadecimal digits (either case), the form key files
    /// hold; `None` for anything else.
    ///
    /// ```
    /// use epic_gue::hello::HelloKey;
    /// let key = HelloKey::from_hex(&"0f".repeat(32)).unwrap();
    /// assert_eq!(key.as_bytes(), &[0x0f; 32]);
    /// assert!(HelloKey::from_hex("0f").is_none());
    /// ```
    pub fn from_hex(hex: &str) -> Option<Self> {
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let value = |d: u8| char::from(d).to_digit(16);
            *byte = u8::try_from(value(pair[0])? * 16 + value(pair[1])?).ok()?;
        }
        Some(HelloKey(bytes))
    }

    /// The hello key of cluster node `node`, derived from this cluster key
    /// (HKDF-SHA-256, RFC 5869: the cluster key as input keying material,
    /// info `epic-rs hello node key v1` + `\0` + the node name). The
    /// gateway verifies each node's tunnels with that node's key, and each
    /// node holds only its own: a node cannot sign hellos as another node
    /// (and take over its tunnels), and a node key does not give the
    /// cluster key back.
    ///
    /// ```
    /// use epic_gue::hello::HelloKey;
    /// let cluster = HelloKey::new([7; 32]);
    /// assert_eq!(cluster.node_key("node-1"), cluster.node_key("node-1"));
    /// assert_ne!(cluster.node_key("node-1"), cluster.node_key("node-2"));
    /// assert_ne!(cluster.node_key("node-1"), cluster);
    /// ```
    pub fn node_key(&self, node: &str) -> HelloKey {
        let kdf = hkdf::Hkdf::<Sha256>::new(None, &self.0);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA-256's limit of 8160: cannot fail.
        let _ = kdf.expand_multi_info(&[NODE_KEY_INFO, b"\0", node.as_bytes()], &mut out);
        HelloKey(out)
    }

    /// The key as 64 lowercase hexadecimal digits (for a key file; never log it).
    #[cfg(feature = "std")]
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; a 32-byte key cannot fail.
        match <HmacSha256 as KeyInit>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_mac(),
        }
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    <HmacSha256 as KeyInit>::new(&Default::default())
}

impl fmt::Debug for HelloKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HelloKey(<redacted>)")
    }
}

impl NodeId {
    /// A node identity derived from a node name: SHA-256 of the name, left 128 bits.
    pub fn from_name(name: &str) -> NodeId {
        let digest = Sha256::digest(name.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        NodeId(id)
    }
}

/// The MAC of `repr` (its `mac` field ignored) under a prepared keyed state.
fn compute_mac(keyed: &HmacSha256, repr: &HelloRepr) -> [u8; HELLO_MAC_LEN] {
    let mut mac = keyed.clone();
    mac.update(&repr.mac_input());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; HELLO_MAC_LEN];
    out.copy_from_slice(&full[..HELLO_MAC_LEN]);
    out
}

/// Signs `repr` with `key`: sets its MAC (HMAC-SHA-256 over the hello with the
/// MAC field zeroed, left 128 bits).
pub fn sign(key: &HelloKey, repr: &mut HelloRepr) {
    repr.mac = compute_mac(&key.mac(), repr);
}

/// Checks the MAC of `repr` under `key` in constant time.
pub fn verify(key: &HelloKey, repr: &HelloRepr) -> bool {
    verify_prepared(&key.mac(), repr)
}

fn verify_prepared(keyed: &HmacSha256, repr: &HelloRepr) -> bool {
    let mut mac = keyed.clone();
    mac.update(&repr.mac_input());
    mac.verify_truncated_left(&repr.mac).is_ok()
}

/// One encoded hello, ready to send (standard: 56 bytes; legacy: 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloDatagram {
    buf: [u8; HELLO_LEN],
    len: usize,
}

impl HelloDatagram {
    /// The datagram's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }

    /// The datagram as an owned buffer.
    #[cfg(feature = "std")]
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self.as_bytes())
    }
}

/// What a [`HelloSender`] needs for one tunnel.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// The tunnel's key.
    pub key: HelloKey,
    /// This cluster's tenant.
    pub tenant: TenantId,
    /// This node's identity.
    pub node: NodeId,
    /// Time between hellos.
    pub interval: Duration,
    /// Wire profile (legacy only to talk to an old gateway during migration).
    pub profile: WireProfile,
}

impl SenderConfig {
    /// A standard-profile configuration with the default interval.
    pub fn new(tunnel: TunnelId, key: HelloKey, tenant: TenantId, node: NodeId) -> Self {
        SenderConfig {
            tunnel,
            key,
            tenant,
            node,
            interval: DEFAULT_INTERVAL,
            profile: WireProfile::Standard,
        }
    }
}

/// Produces the hellos of one tunnel on a schedule.
///
/// The counter is `wall_clock_nanos` at creation plus the monotonic time
/// elapsed since, and always at least one more than the last one sent, so it
/// keeps increasing across agent restarts as long as the wall clock does.
#[derive(Clone)]
pub struct HelloSender {
    tunnel: TunnelId,
    tenant: TenantId,
    node: NodeId,
    interval: Duration,
    profile: WireProfile,
    keyed: HmacSha256,
    origin: Instant,
    counter_base: u64,
    last_counter: Option<u64>,
    /// The counter sent before `last_counter`: a challenge may still be
    /// on its way for it.
    previous_counter: Option<u64>,
    /// The highest nonce answered: each challenge is answered once.
    answered: Option<u64>,
    next_due: Instant,
}

impl fmt::Debug for HelloSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelloSender")
            .field("tunnel", &self.tunnel)
            .field("tenant", &self.tenant)
            .field("node", &self.node)
            .field("interval", &self.interval)
            .field("profile", &self.profile)
            .field("last_counter", &self.last_counter)
            .field("next_due", &self.next_due)
            .finish_non_exhaustive()
    }
}

impl HelloSender {
    /// A sender whose first hello is due at `now`.
    pub fn new(config: &SenderConfig, now: Instant, wall_clock_nanos: u64) -> Self {
        HelloSender {
            tunnel: config.tunnel,
            tenant: config.tenant,
            node: config.node,
            interval: config.interval,
            profile: config.profile,
            keyed: config.key.mac(),
            origin: now,
            counter_base: wall_clock_nanos,
            last_counter: None,
            previous_counter: None,
            answered: None,
            next_due: now,
        }
    }

    /// The tunnel this sender serves.
    pub const fn tunnel(&self) -> TunnelId {
        self.tunnel
    }

    /// When the next hello is due.
    pub const fn next_timeout(&self) -> Instant {
        self.next_due
    }

    /// The hello to send now, if one is due; schedules the next one.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<HelloDatagram> {
        if now < self.next_due {
            return None;
        }
        Some(self.hello_now(now))
    }

    /// A hello right now, whatever the schedule; the next is due one interval later.
    pub fn hello_now(&mut self, now: Instant) -> HelloDatagram {
        self.next_due = now + self.interval;
        let mut buf = [0u8; HELLO_LEN];
        if self.profile == WireProfile::EpicLegacy {
            let mut head = [0u8; legacy::HEADER_LEN];
            legacy::emit(
                &legacy::LegacyMessage {
                    hello: true,
                    tunnel_id: self.tunnel,
                },
                &mut head,
            );
            buf[..legacy::HEADER_LEN].copy_from_slice(&head);
            return HelloDatagram {
                buf,
                len: legacy::HEADER_LEN,
            };
        }
        let elapsed = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let mut counter = self.counter_base.saturating_add(elapsed);
        if let Some(last) = self.last_counter {
            counter = counter.max(last.saturating_add(1));
        }
        self.previous_counter = self.last_counter;
        self.last_counter = Some(counter);
        let mut repr = HelloRepr {
            kind: HelloKind::Hello,
            tunnel_id: self.tunnel,
            counter,
            tenant: self.tenant,
            node: self.node,
            mac: [0; HELLO_MAC_LEN],
        };
        repr.mac = compute_mac(&self.keyed, &repr);
        repr.emit(&mut buf);
        HelloDatagram {
            buf,
            len: HELLO_LEN,
        }
    }

    /// The response to a challenge the gateway sent (`datagram`, received
    /// from the gateway): only a challenge for this tunnel, signed with its
    /// key, naming this tenant and node, whose nonce is one of the last two
    /// hellos sent and not answered yet. Anyone else's "challenge" is
    /// refused, so the agent answers no one but the gateway, once each.
    pub fn answer(&mut self, datagram: &[u8]) -> Result<HelloDatagram, ChallengeRefused> {
        if self.profile == WireProfile::EpicLegacy {
            return Err(ChallengeRefused::Legacy);
        }
        let challenge = HelloRepr::parse(datagram).map_err(ChallengeRefused::Malformed)?;
        if challenge.kind != HelloKind::Challenge {
            return Err(ChallengeRefused::NotAChallenge);
        }
        if challenge.tunnel_id != self.tunnel {
            return Err(ChallengeRefused::WrongTunnel {
                expected: self.tunnel,
                got: challenge.tunnel_id,
            });
        }
        if !verify_prepared(&self.keyed, &challenge) {
            return Err(ChallengeRefused::BadMac);
        }
        if challenge.tenant != self.tenant || challenge.node != self.node {
            return Err(ChallengeRefused::WrongIdentity);
        }
        let nonce = challenge.counter;
        let recent = self.last_counter == Some(nonce) || self.previous_counter == Some(nonce);
        if !recent || self.answered.is_some_and(|a| nonce <= a) {
            return Err(ChallengeRefused::UnknownNonce { nonce });
        }
        self.answered = Some(nonce);
        let mut response = HelloRepr {
            kind: HelloKind::Response,
            mac: [0; HELLO_MAC_LEN],
            ..challenge
        };
        response.mac = compute_mac(&self.keyed, &response);
        let mut buf = [0u8; HELLO_LEN];
        response.emit(&mut buf);
        Ok(HelloDatagram {
            buf,
            len: HELLO_LEN,
        })
    }
}

/// Why a [`HelloSender`] did not answer a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeRefused {
    /// Not a well-formed hello message.
    #[error("malformed challenge: {0}")]
    Malformed(WireError),
    /// A hello or a response, not a challenge.
    #[error("not a challenge")]
    NotAChallenge,
    /// For another tunnel than this sender's.
    #[error("challenge for tunnel {got}, this sender is tunnel {expected}")]
    WrongTunnel {
        /// This sender's tunnel.
        expected: TunnelId,
        /// The tunnel in the challenge.
        got: TunnelId,
    },
    /// The MAC does not verify under the tunnel's key: not the gateway's.
    #[error("challenge with a bad MAC")]
    BadMac,
    /// Signed, but naming another tenant or node.
    #[error("challenge for another tenant or node")]
    WrongIdentity,
    /// The nonce is not one of this sender's last two hellos, or was
    /// answered already (a replayed challenge).
    #[error("challenge nonce {nonce} is not a recent unanswered hello")]
    UnknownNonce {
        /// The nonce received.
        nonce: u64,
    },
    /// A legacy-profile sender has no key to answer with.
    #[error("legacy-profile senders cannot answer challenges")]
    Legacy,
}

/// What the verifier knows about one tunnel.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// Its key.
    pub key: HelloKey,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// The node expected to send its hellos.
    pub node: NodeId,
    /// [`WireProfile::EpicLegacy`] also accepts unauthenticated legacy hellos
    /// (migration only); standard hellos are always accepted.
    pub profile: WireProfile,
}

impl TunnelConfig {
    /// A standard-profile tunnel.
    pub fn new(tunnel: TunnelId, key: HelloKey, tenant: TenantId, node: NodeId) -> Self {
        TunnelConfig {
            tunnel,
            key,
            tenant,
            node,
            profile: WireProfile::Standard,
        }
    }
}

/// Verifier timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The senders' hello interval.
    pub interval: Duration,
    /// Intervals without a valid hello before a mapping expires.
    pub missed_intervals: u32,
    /// How far a counter may be from the verifier's wall clock (checked
    /// only once [`HelloVerifier::set_wall_origin`] gave it one). A counter
    /// far in the future would otherwise make every later hello stale: it
    /// could lock a tunnel for good (`u64::MAX`).
    pub max_clock_skew: Duration,
    /// How long a challenge waits for its response.
    pub challenge_timeout: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            interval: DEFAULT_INTERVAL,
            missed_intervals: DEFAULT_MISSED_INTERVALS,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            challenge_timeout: DEFAULT_CHALLENGE_TIMEOUT,
        }
    }
}

impl VerifierConfig {
    fn lifetime(&self) -> Duration {
        self.interval.saturating_mul(self.missed_intervals)
    }
}

/// Why a hello was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// Not a well-formed hello.
    #[error("malformed hello: {0}")]
    Malformed(WireError),
    /// The tunnel id is not in the table.
    #[error("unknown tunnel {tunnel}")]
    UnknownTunnel {
        /// The tunnel id claimed.
        tunnel: TunnelId,
    },
    /// The MAC does not verify under the tunnel's key.
    #[error("bad MAC for tunnel {tunnel}")]
    BadMac {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// The counter equals the last accepted one (a replay).
    #[error("replayed hello for tunnel {tunnel} (counter {counter})")]
    Replayed {
        /// The tunnel.
        tunnel: TunnelId,
        /// The counter.
        counter: u64,
    },
    /// The counter is further from the verifier's wall clock than
    /// [`VerifierConfig::max_clock_skew`] (a sender clock far off, or a
    /// counter meant to lock the tunnel).
    #[error(
        "hello for tunnel {tunnel}: counter {counter} is outside the clock window around {wall}"
    )]
    OutsideClockWindow {
        /// The tunnel.
        tunnel: TunnelId,
        /// The counter received.
        counter: u64,
        /// The verifier's wall clock (nanoseconds since the epoch).
        wall: u64,
    },
    /// The counter is below the last accepted one (old or reordered).
    #[error("stale hello for tunnel {tunnel}: counter {counter} < last {last}")]
    Stale {
        /// The tunnel.
        tunnel: TunnelId,
        /// The counter received.
        counter: u64,
        /// The last accepted counter.
        last: u64,
    },
    /// The hello names another tenant than the tunnel's.
    #[error("tunnel {tunnel} belongs to tenant {expected}, hello says {got}")]
    WrongTenant {
        /// The tunnel.
        tunnel: TunnelId,
        /// The tunnel's tenant.
        expected: TenantId,
        /// The tenant in the hello.
        got: TenantId,
    },
    /// The hello comes from another node than the tunnel's.
    #[error("tunnel {tunnel} expects node {expected}, hello says {got}")]
    WrongNode {
        /// The tunnel.
        tunnel: TunnelId,
        /// The expected node.
        expected: NodeId,
        /// The node in the hello.
        got: NodeId,
    },
    /// An unauthenticated legacy hello for a tunnel not in legacy mode.
    #[error("legacy (unauthenticated) hello refused for tunnel {tunnel}")]
    LegacyNotAllowed {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// A signed response that answers no pending challenge: none was sent
    /// to this source, the nonce differs, or it came too late.
    #[error("tunnel {tunnel}: response from {from} answers no pending challenge")]
    UnexpectedResponse {
        /// The tunnel.
        tunnel: TunnelId,
        /// Where the response came from.
        from: SocketAddr,
    },
    /// A challenge sent to the verifier (challenges go the other way).
    #[error("tunnel {tunnel}: a challenge is not for the gateway")]
    UnexpectedChallenge {
        /// The tunnel.
        tunnel: TunnelId,
    },
}

/// What the verifier concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloEvent {
    /// A verified hello from an address that is not the tunnel's remote
    /// (the first one, or a new NAT mapping): send `datagram` to `addr`.
    /// The tunnel is learned or moves only when `addr` answers with the
    /// tunnel's key, so a hello replayed from elsewhere moves nothing.
    Challenge {
        /// The tunnel.
        tunnel: TunnelId,
        /// Where the hello came from, and the challenge goes.
        addr: SocketAddr,
        /// The signed challenge.
        datagram: HelloDatagram,
    },
    /// The first verified response from a challenged address (first time,
    /// or after expiry): program this remote.
    Learned {
        /// The tunnel.
        tunnel: TunnelId,
        /// Outer source address and port of the hello.
        addr: SocketAddr,
    },
    /// The NAT mapping changed, and the new address answered its
    /// challenge: reprogram the remote.
    Rebound {
        /// The tunnel.
        tunnel: TunnelId,
        /// Previous remote.
        old: SocketAddr,
        /// New remote.
        new: SocketAddr,
    },
    /// Same remote, still alive.
    Refreshed {
        /// The tunnel.
        tunnel: TunnelId,
        /// The remote.
        addr: SocketAddr,
    },
    /// No valid hello for too long: remove the remote.
    Expired {
        /// The tunnel.
        tunnel: TunnelId,
        /// The remote that was forgotten.
        addr: SocketAddr,
    },
    /// The datagram was refused; nothing changed.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
}

/// The verifier table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hello verifier table full ({capacity} tunnels)")]
pub struct TableFull {
    /// The table's capacity.
    pub capacity: usize,
}

#[derive(Clone)]
struct TunnelState {
    tunnel: TunnelId,
    keyed: HmacSha256,
    tenant: TenantId,
    node: NodeId,
    profile: WireProfile,
    last_counter: Option<u64>,
    remote: Option<SocketAddr>,
    last_seen: Instant,
    challenge: Option<PendingChallenge>,
}

/// A challenge sent, waiting for its response.
#[derive(Debug, Clone, Copy)]
struct PendingChallenge {
    addr: SocketAddr,
    nonce: u64,
    deadline: Instant,
}

/// One entry of a verifier's table storage.
#[derive(Clone, Default)]
pub struct TunnelSlot(Option<TunnelState>);

impl TunnelSlot {
    /// An empty slot (for `[TunnelSlot::EMPTY; N]`).
    pub const EMPTY: TunnelSlot = TunnelSlot(None);
}

impl fmt::Debug for TunnelSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("TunnelSlot(empty)"),
            Some(t) => f
                .debug_struct("TunnelSlot")
                .field("tunnel", &t.tunnel)
                .field("tenant", &t.tenant)
                .field("node", &t.node)
                .field("remote", &t.remote)
                .field("last_counter", &t.last_counter)
                .finish_non_exhaustive(),
        }
    }
}

/// Verifies hellos and tracks each tunnel's learned remote end.
///
/// `S` is the table storage: `[TunnelSlot; N]`, `&mut [TunnelSlot]`, or with
/// `std` a `Vec<TunnelSlot>` (`HelloVerifier::with_capacity`). Lookups are
/// binary searches over the tunnels kept sorted by id.
#[derive(Debug, Clone)]
pub struct HelloVerifier<S> {
    slots: S,
    len: usize,
    config: VerifierConfig,
    /// The wall clock (nanoseconds since the epoch) at `Instant::ZERO`, if known.
    wall_origin: Option<u64>,
}

#[cfg(feature = "std")]
impl HelloVerifier<Vec<TunnelSlot>> {
    /// A verifier with room for `capacity` tunnels on the heap.
    pub fn with_capacity(capacity: usize, config: VerifierConfig) -> Self {
        HelloVerifier::new(vec![TunnelSlot::EMPTY; capacity], config)
    }
}

impl<S: AsRef<[TunnelSlot]> + AsMut<[TunnelSlot]>> HelloVerifier<S> {
    /// A verifier over `storage` (cleared).
    pub fn new(mut storage: S, config: VerifierConfig) -> Self {
        for slot in storage.as_mut() {
            *slot = TunnelSlot::EMPTY;
        }
        HelloVerifier {
            slots: storage,
            len: 0,
            config,
            wall_origin: None,
        }
    }

    /// Gives the verifier its wall clock: `wall_nanos` is the time since the
    /// epoch at `Instant::ZERO` of the instants passed to
    /// [`handle`](Self::handle). From then on a counter further than
    /// [`VerifierConfig::max_clock_skew`] from it is rejected
    /// ([`RejectReason::OutsideClockWindow`]).
    pub fn set_wall_origin(&mut self, wall_nanos: u64) {
        self.wall_origin = Some(wall_nanos);
    }

    /// Tunnels in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No tunnels in the table.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of tunnels.
    pub fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    fn find(&self, tunnel: TunnelId) -> Result<usize, usize> {
        let used = self.slots.as_ref().get(..self.len).unwrap_or(&[]);
        used.binary_search_by_key(&tunnel, |s| {
            s.0.as_ref().map_or(TunnelId(u32::MAX), |t| t.tunnel)
        })
    }

    fn state_mut(&mut self, tunnel: TunnelId) -> Option<&mut TunnelState> {
        let i = self.find(tunnel).ok()?;
        self.slots.as_mut().get_mut(i)?.0.as_mut()
    }

    /// Adds a tunnel, or updates its key, tenant, node and profile (keeping
    /// the learned remote and last counter, so replays stay refused).
    pub fn add_tunnel(&mut self, config: &TunnelConfig) -> Result<(), TableFull> {
        match self.find(config.tunnel) {
            Ok(i) => {
                if let Some(t) = self.slots.as_mut().get_mut(i).and_then(|s| s.0.as_mut()) {
                    t.keyed = config.key.mac();
                    t.tenant = config.tenant;
                    t.node = config.node;
                    t.profile = config.profile;
                }
                Ok(())
            }
            Err(i) => {
                let capacity = self.capacity();
                if self.len >= capacity {
                    return Err(TableFull { capacity });
                }
                let len = self.len;
                let slots = self.slots.as_mut();
                if let Some(window) = slots.get_mut(i..=len) {
                    window.rotate_right(1);
                }
                if let Some(slot) = slots.get_mut(i) {
                    *slot = TunnelSlot(Some(TunnelState {
                        tunnel: config.tunnel,
                        keyed: config.key.mac(),
                        tenant: config.tenant,
                        node: config.node,
                        profile: config.profile,
                        last_counter: None,
                        remote: None,
                        last_seen: Instant::ZERO,
                        challenge: None,
                    }));
                }
                self.len += 1;
                Ok(())
            }
        }
    }

    /// Removes a tunnel; returns whether it was present.
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) -> bool {
        let Ok(i) = self.find(tunnel) else {
            return false;
        };
        let len = self.len;
        let slots = self.slots.as_mut();
        if let Some(window) = slots.get_mut(i..len) {
            window.rotate_left(1);
        }
        if let Some(slot) = slots.get_mut(len - 1) {
            *slot = TunnelSlot::EMPTY;
        }
        self.len -= 1;
        true
    }

    /// The counter of the last hello accepted for `tunnel`, if any.
    pub fn last_counter(&self, tunnel: TunnelId) -> Option<u64> {
        let i = self.find(tunnel).ok()?;
        self.slots.as_ref().get(i)?.0.as_ref()?.last_counter
    }

    /// Every tunnel whose remote end is verified (a challenge answered and
    /// not expired since), with that remote, in tunnel order: the tunnels
    /// that carry packets now.
    pub fn remotes(&self) -> impl Iterator<Item = (TunnelId, SocketAddr)> + '_ {
        let used = self.slots.as_ref().get(..self.len).unwrap_or(&[]);
        used.iter()
            .filter_map(|s| s.0.as_ref())
            .filter_map(|t| Some((t.tunnel, t.remote?)))
    }

    /// Every tunnel's last accepted counter, in tunnel order: what to
    /// persist so a restart does not reopen replays.
    pub fn counters(&self) -> impl Iterator<Item = (TunnelId, u64)> + '_ {
        let used = self.slots.as_ref().get(..self.len).unwrap_or(&[]);
        used.iter()
            .filter_map(|s| s.0.as_ref())
            .filter_map(|t| Some((t.tunnel, t.last_counter?)))
    }

    /// Raises `tunnel`'s last accepted counter to at least `counter` (one
    /// persisted before a restart): a hello at or below it is then a replay.
    /// Returns whether the tunnel is known.
    pub fn restore_counter(&mut self, tunnel: TunnelId, counter: u64) -> bool {
        let Some(state) = self.state_mut(tunnel) else {
            return false;
        };
        state.last_counter = Some(state.last_counter.map_or(counter, |c| c.max(counter)));
        true
    }

    /// The verified remote end of `tunnel`, if learned and not expired.
    pub fn remote(&self, tunnel: TunnelId) -> Option<SocketAddr> {
        let i = self.find(tunnel).ok()?;
        self.slots.as_ref().get(i)?.0.as_ref()?.remote
    }

    /// Handles one received datagram from outer `source`, at `now`.
    pub fn handle(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> HelloEvent {
        match self.check(now, source, datagram) {
            Ok(event) => event,
            Err(reason) => HelloEvent::Rejected { reason },
        }
    }

    fn check(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Result<HelloEvent, RejectReason> {
        if datagram.get(..4) == Some(&legacy::HELLO_WORD[..]) {
            return self.accept_legacy(now, source, datagram);
        }
        let message = HelloRepr::parse(datagram).map_err(RejectReason::Malformed)?;
        let tunnel = message.tunnel_id;
        let state = self
            .state_mut(tunnel)
            .ok_or(RejectReason::UnknownTunnel { tunnel })?;
        authenticate(state, &message)?;
        match message.kind {
            HelloKind::Hello => {
                self.check_counter(now, &message)?;
                let timeout = self.config.challenge_timeout;
                let state = self
                    .state_mut(tunnel)
                    .ok_or(RejectReason::UnknownTunnel { tunnel })?;
                Ok(accept_hello(state, now, source, &message, timeout))
            }
            HelloKind::Response => accept_response(state, now, source, &message),
            HelloKind::Challenge => Err(RejectReason::UnexpectedChallenge { tunnel }),
        }
    }

    /// An unauthenticated legacy hello, for a tunnel in legacy mode: taken
    /// at its word (that profile has nothing to check).
    fn accept_legacy(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Result<HelloEvent, RejectReason> {
        let tunnel = legacy::parse(datagram)
            .map_err(RejectReason::Malformed)?
            .tunnel_id;
        let state = self
            .state_mut(tunnel)
            .ok_or(RejectReason::UnknownTunnel { tunnel })?;
        if state.profile != WireProfile::EpicLegacy {
            return Err(RejectReason::LegacyNotAllowed { tunnel });
        }
        Ok(move_remote(state, now, source))
    }

    /// A hello's counter: inside the clock window (once the wall clock is
    /// known) and above the last accepted one.
    fn check_counter(&mut self, now: Instant, hello: &HelloRepr) -> Result<(), RejectReason> {
        let (tunnel, counter) = (hello.tunnel_id, hello.counter);
        if let Some(origin) = self.wall_origin {
            let wall = origin.saturating_add(now.as_nanos());
            let skew = u64::try_from(self.config.max_clock_skew.as_nanos()).unwrap_or(u64::MAX);
            if counter.abs_diff(wall) > skew {
                return Err(RejectReason::OutsideClockWindow {
                    tunnel,
                    counter,
                    wall,
                });
            }
        }
        let state = self
            .state_mut(tunnel)
            .ok_or(RejectReason::UnknownTunnel { tunnel })?;
        match state.last_counter {
            Some(last) if counter == last => Err(RejectReason::Replayed { tunnel, counter }),
            Some(last) if counter < last => Err(RejectReason::Stale {
                tunnel,
                counter,
                last,
            }),
            _ => Ok(()),
        }
    }

    /// Expires one mapping whose hellos stopped; call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<HelloEvent> {
        let lifetime = self.config.lifetime();
        let len = self.len;
        let slots = self.slots.as_mut().get_mut(..len)?;
        for slot in slots {
            if let Some(t) = slot.0.as_mut()
                && let Some(addr) = t.remote
                && t.last_seen + lifetime <= now
            {
                t.remote = None;
                return Some(HelloEvent::Expired {
                    tunnel: t.tunnel,
                    addr,
                });
            }
        }
        None
    }

    /// When `poll` next has something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let lifetime = self.config.lifetime();
        let used = self.slots.as_ref().get(..self.len)?;
        used.iter()
            .filter_map(|s| s.0.as_ref())
            .filter(|t| t.remote.is_some())
            .map(|t| t.last_seen + lifetime)
            .min()
    }
}

/// A signed message's MAC, tenant and node, checked against its tunnel.
fn authenticate(state: &TunnelState, message: &HelloRepr) -> Result<(), RejectReason> {
    let tunnel = state.tunnel;
    if !verify_prepared(&state.keyed, message) {
        return Err(RejectReason::BadMac { tunnel });
    }
    if message.tenant != state.tenant {
        return Err(RejectReason::WrongTenant {
            tunnel,
            expected: state.tenant,
            got: message.tenant,
        });
    }
    if message.node != state.node {
        return Err(RejectReason::WrongNode {
            tunnel,
            expected: state.node,
            got: message.node,
        });
    }
    Ok(())
}

/// A verified, fresh hello: a refresh from the remote, else a challenge to
/// its source (replacing any earlier one).
fn accept_hello(
    state: &mut TunnelState,
    now: Instant,
    source: SocketAddr,
    hello: &HelloRepr,
    timeout: Duration,
) -> HelloEvent {
    state.last_counter = Some(hello.counter);
    if state.remote == Some(source) {
        state.last_seen = now;
        return HelloEvent::Refreshed {
            tunnel: state.tunnel,
            addr: source,
        };
    }
    state.challenge = Some(PendingChallenge {
        addr: source,
        nonce: hello.counter,
        deadline: now + timeout,
    });
    let mut challenge = HelloRepr {
        kind: HelloKind::Challenge,
        mac: [0; HELLO_MAC_LEN],
        ..*hello
    };
    challenge.mac = compute_mac(&state.keyed, &challenge);
    let mut buf = [0u8; HELLO_LEN];
    challenge.emit(&mut buf);
    HelloEvent::Challenge {
        tunnel: state.tunnel,
        addr: source,
        datagram: HelloDatagram {
            buf,
            len: HELLO_LEN,
        },
    }
}

/// A verified response: moves the tunnel to its source if it answers the
/// pending challenge (same source, same nonce, in time).
fn accept_response(
    state: &mut TunnelState,
    now: Instant,
    source: SocketAddr,
    response: &HelloRepr,
) -> Result<HelloEvent, RejectReason> {
    let answers = state
        .challenge
        .is_some_and(|c| c.addr == source && c.nonce == response.counter && now <= c.deadline);
    if !answers {
        return Err(RejectReason::UnexpectedResponse {
            tunnel: state.tunnel,
            from: source,
        });
    }
    state.challenge = None;
    Ok(move_remote(state, now, source))
}

/// Makes `source` the tunnel's remote, seen at `now`.
fn move_remote(state: &mut TunnelState, now: Instant, source: SocketAddr) -> HelloEvent {
    let tunnel = state.tunnel;
    state.last_seen = now;
    let event = match state.remote {
        None => HelloEvent::Learned {
            tunnel,
            addr: source,
        },
        Some(old) if old != source => HelloEvent::Rebound {
            tunnel,
            old,
            new: source,
        },
        Some(addr) => HelloEvent::Refreshed { tunnel, addr },
    };
    state.remote = Some(source);
    event
}

/// Userspace clocks for driving the sans-IO types.
#[cfg(feature = "std")]
pub mod clock {
    use super::Instant;

    /// A monotonic clock whose origin is its creation.
    #[derive(Debug, Clone, Copy)]
    pub struct MonotonicClock {
        origin: std::time::Instant,
    }

    impl Default for MonotonicClock {
        fn default() -> Self {
            MonotonicClock::new()
        }
    }

    impl MonotonicClock {
        /// A clock starting now.
        pub fn new() -> Self {
            MonotonicClock {
                origin: std::time::Instant::now(),
            }
        }

        /// The current instant.
        pub fn now(&self) -> Instant {
            Instant::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
        }
    }

    /// Nanoseconds since the Unix epoch (the hello counter base); 0 if the clock is before it.
    pub fn wall_clock_nanos() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: HelloKey = HelloKey::new([7; 32]);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `hello` from `from` is challenged there; the sender's answer, from
    /// `from` too, gives the returned event.
    fn answered<S: AsRef<[TunnelSlot]> + AsMut<[TunnelSlot]>>(
        s: &mut HelloSender,
        v: &mut HelloVerifier<S>,
        now: Instant,
        from: SocketAddr,
        hello: &HelloDatagram,
    ) -> HelloEvent {
        let (to, challenge) = match v.handle(now, from, hello.as_bytes()) {
            HelloEvent::Challenge { addr, datagram, .. } => (addr, datagram),
            other => panic!("expected a challenge, got {other:?}"),
        };
        assert_eq!(to, from, "the challenge goes where the hello came from");
        let response = s.answer(challenge.as_bytes()).unwrap();
        v.handle(now, from, response.as_bytes())
    }

    #[test]
    fn node_keys_are_rfc5869_hkdf_sha256_of_the_cluster_key() {
        // Computed independently: PRK = HMAC(0^32, cluster key), T(1) =
        // HMAC(PRK, "epic-rs hello node key v1\0node-1" || 0x01).
        let expected =
            HelloKey::from_hex("36086b740e20075e520a4875fcffd2a2eea1284415835e7a327fc1d9b372cf90")
                .unwrap();
        assert_eq!(KEY.node_key("node-1"), expected);
    }

    #[test]
    fn a_hello_signed_with_another_nodes_key_or_the_cluster_key_is_rejected() {
        let cluster = KEY;
        let tunnel = TunnelConfig::new(
            TunnelId(9),
            cluster.node_key("node-a"),
            TenantId(1),
            NodeId::from_name("node-a"),
        );
        let mut verifier = HelloVerifier::new([TunnelSlot::EMPTY; 4], VerifierConfig::default());
        verifier.add_tunnel(&tunnel).unwrap();
        for key in [cluster.node_key("node-b"), cluster.clone()] {
            let config =
                SenderConfig::new(TunnelId(9), key, TenantId(1), NodeId::from_name("node-a"));
            let mut sender = HelloSender::new(&config, Instant::ZERO, 1_000);
            let hello = sender.hello_now(Instant::ZERO);
            let event = verifier.handle(Instant::ZERO, addr("192.0.2.7:6080"), hello.as_bytes());
            assert!(!matches!(event, HelloEvent::Learned { .. }), "{event:?}");
        }
        let config = SenderConfig::new(
            TunnelId(9),
            cluster.node_key("node-a"),
            TenantId(1),
            NodeId::from_name("node-a"),
        );
        let mut sender = HelloSender::new(&config, Instant::ZERO, 1_000);
        let hello = sender.hello_now(Instant::ZERO);
        let a = addr("192.0.2.7:6080");
        let event = answered(&mut sender, &mut verifier, Instant::ZERO, a, &hello);
        assert!(matches!(event, HelloEvent::Learned { .. }), "{event:?}");
    }

    fn setup() -> (HelloSender, HelloVerifier<[TunnelSlot; 4]>) {
        let node = NodeId::from_name("node-a");
        let sender = HelloSender::new(
            &SenderConfig::new(TunnelId(9), KEY, TenantId(1), node),
            Instant::ZERO,
            1_000,
        );
        let mut verifier = HelloVerifier::new([TunnelSlot::EMPTY; 4], VerifierConfig::default());
        verifier
            .add_tunnel(&TunnelConfig::new(TunnelId(9), KEY, TenantId(1), node))
            .unwrap();
        (sender, verifier)
    }

    /// With a wall clock, a validly signed hello whose counter is far in the
    /// future (`u64::MAX`) or past is refused, and does not lock the tunnel:
    /// the sender with the right clock still gets in.
    #[test]
    fn a_counter_outside_the_clock_window_is_refused_and_locks_nothing() {
        let (mut good, mut v) = setup();
        // The verifier's wall clock matches the good sender's (1,000 ns at ZERO).
        v.set_wall_origin(1_000);
        let node = NodeId::from_name("node-a");
        let config = SenderConfig::new(TunnelId(9), KEY, TenantId(1), node);
        let a = addr("203.0.113.5:40000");
        let skew = DEFAULT_MAX_CLOCK_SKEW.as_nanos() as u64;
        for sender_wall in [u64::MAX - 5, 1_000 + skew + 1] {
            let mut far = HelloSender::new(&config, Instant::ZERO, sender_wall);
            let hello = far.poll_transmit(Instant::ZERO).unwrap();
            match v.handle(Instant::ZERO, a, hello.as_bytes()) {
                HelloEvent::Rejected {
                    reason: RejectReason::OutsideClockWindow { counter, wall, .. },
                } => assert_eq!((counter, wall), (sender_wall, 1_000)),
                other => panic!("{other:?}"),
            }
        }
        // Old counters are refused the same way once time has passed.
        let later = Instant::ZERO + DEFAULT_MAX_CLOCK_SKEW + Duration::from_secs(1);
        let mut old = HelloSender::new(&config, Instant::ZERO, 1_000);
        let stale = old.poll_transmit(Instant::ZERO).unwrap();
        assert!(matches!(
            v.handle(later, a, stale.as_bytes()),
            HelloEvent::Rejected {
                reason: RejectReason::OutsideClockWindow { .. }
            }
        ));
        // The genuine sender, inside the window, is learned: nothing locked.
        let hello = good.poll_transmit(later).unwrap();
        assert_eq!(
            answered(&mut good, &mut v, later, a, &hello),
            HelloEvent::Learned {
                tunnel: TunnelId(9),
                addr: a
            }
        );
    }

    /// A restarted verifier given the persisted counters refuses what the
    /// old one had accepted: a captured hello cannot be replayed.
    #[test]
    fn restored_counters_refuse_replays_after_a_restart() {
        let (mut s, mut before) = setup();
        let a = addr("203.0.113.5:40000");
        let captured = s.poll_transmit(Instant::ZERO).unwrap();
        assert!(matches!(
            answered(&mut s, &mut before, Instant::ZERO, a, &captured),
            HelloEvent::Learned { .. }
        ));
        let persisted: Vec<(TunnelId, u64)> = before.counters().collect();
        assert_eq!(
            persisted,
            [(TunnelId(9), before.last_counter(TunnelId(9)).unwrap())]
        );

        // Without the counters a fresh verifier takes the replay as fresh
        // (it challenges its source)...
        let (_, mut amnesiac) = setup();
        assert!(matches!(
            amnesiac.handle(Instant::ZERO, addr("198.51.100.66:1"), captured.as_bytes()),
            HelloEvent::Challenge { .. }
        ));
        // ...with them it does not, and the sender's next hello still passes.
        let (_, mut after) = setup();
        for (tunnel, counter) in &persisted {
            assert!(after.restore_counter(*tunnel, *counter));
        }
        assert!(!after.restore_counter(TunnelId(77), 1), "unknown tunnel");
        assert!(matches!(
            after.handle(Instant::ZERO, addr("198.51.100.66:1"), captured.as_bytes()),
            HelloEvent::Rejected {
                reason: RejectReason::Replayed { .. }
            }
        ));
        let next = s.poll_transmit(Instant::from_millis(3000)).unwrap();
        assert!(matches!(
            answered(&mut s, &mut after, Instant::from_millis(3000), a, &next),
            HelloEvent::Learned { .. }
        ));
        // Restoring never lowers a counter.
        let last = after.last_counter(TunnelId(9)).unwrap();
        after.restore_counter(TunnelId(9), 1);
        assert_eq!(after.last_counter(TunnelId(9)), Some(last));
    }

    #[test]
    fn learn_refresh_rebind_expire() {
        let (mut s, mut v) = setup();
        let a = addr("203.0.113.5:40000");
        let b = addr("203.0.113.5:40001");
        let t = TunnelId(9);
        let h1 = s.poll_transmit(Instant::ZERO).unwrap();
        assert_eq!(s.poll_transmit(Instant::from_millis(10)), None);
        assert_eq!(
            answered(&mut s, &mut v, Instant::ZERO, a, &h1),
            HelloEvent::Learned { tunnel: t, addr: a }
        );
        assert_eq!(v.remote(t), Some(a));
        let h2 = s.poll_transmit(Instant::from_millis(3000)).unwrap();
        assert_eq!(
            v.handle(Instant::from_millis(3000), a, h2.as_bytes()),
            HelloEvent::Refreshed { tunnel: t, addr: a }
        );
        let h3 = s.poll_transmit(Instant::from_millis(6000)).unwrap();
        assert_eq!(
            answered(&mut s, &mut v, Instant::from_millis(6000), b, &h3),
            HelloEvent::Rebound {
                tunnel: t,
                old: a,
                new: b
            }
        );
        assert_eq!(v.next_timeout(), Some(Instant::from_millis(15000)));
        assert_eq!(v.poll(Instant::from_millis(14999)), None);
        assert_eq!(
            v.poll(Instant::from_millis(15000)),
            Some(HelloEvent::Expired { tunnel: t, addr: b })
        );
        assert_eq!(v.poll(Instant::from_millis(15000)), None);
        assert_eq!(v.remote(t), None);
        // Old hellos stay refused after expiry.
        assert!(matches!(
            v.handle(Instant::from_millis(16000), a, h2.as_bytes()),
            HelloEvent::Rejected {
                reason: RejectReason::Stale { .. }
            }
        ));
        let h4 = s.poll_transmit(Instant::from_millis(16000)).unwrap();
        assert_eq!(
            answered(&mut s, &mut v, Instant::from_millis(16000), a, &h4),
            HelloEvent::Learned { tunnel: t, addr: a }
        );
    }

    #[test]
    fn every_rejection() {
        let (mut s, mut v) = setup();
        let a = addr("198.51.100.7:5000");
        let now = Instant::ZERO;
        let h = s.hello_now(now);
        let t = TunnelId(9);
        let rej = |v: &mut HelloVerifier<[TunnelSlot; 4]>, b: &[u8]| match v.handle(now, a, b) {
            HelloEvent::Rejected { reason } => reason,
            other => panic!("expected rejection, got {other:?}"),
        };
        assert_eq!(
            rej(&mut v, &h.as_bytes()[..10]),
            RejectReason::Malformed(WireError::Truncated {
                needed: 24,
                got: 10
            })
        );
        let mut bad = *h.as_bytes().first_chunk::<HELLO_LEN>().unwrap();
        bad[9] ^= 1;
        assert_eq!(rej(&mut v, &bad), RejectReason::BadMac { tunnel: t });
        let mut other = HelloRepr::parse(h.as_bytes()).unwrap();
        other.tunnel_id = TunnelId(10);
        let mut buf = [0u8; HELLO_LEN];
        sign(&KEY, &mut other);
        other.emit(&mut buf);
        assert_eq!(
            rej(&mut v, &buf),
            RejectReason::UnknownTunnel {
                tunnel: TunnelId(10)
            }
        );
        let mut wrong = HelloRepr::parse(h.as_bytes()).unwrap();
        wrong.tenant = TenantId(2);
        sign(&KEY, &mut wrong);
        wrong.emit(&mut buf);
        assert_eq!(
            rej(&mut v, &buf),
            RejectReason::WrongTenant {
                tunnel: t,
                expected: TenantId(1),
                got: TenantId(2)
            }
        );
        let mut wrong = HelloRepr::parse(h.as_bytes()).unwrap();
        wrong.node = NodeId::from_name("node-b");
        sign(&KEY, &mut wrong);
        wrong.emit(&mut buf);
        assert!(matches!(rej(&mut v, &buf), RejectReason::WrongNode { .. }));
        assert!(matches!(
            answered(&mut s, &mut v, now, a, &h),
            HelloEvent::Learned { .. }
        ));
        let counter = HelloRepr::parse(h.as_bytes()).unwrap().counter;
        assert_eq!(
            rej(&mut v, h.as_bytes()),
            RejectReason::Replayed { tunnel: t, counter }
        );
        let mut old = HelloRepr::parse(h.as_bytes()).unwrap();
        old.counter -= 1;
        sign(&KEY, &mut old);
        old.emit(&mut buf);
        assert_eq!(
            rej(&mut v, &buf),
            RejectReason::Stale {
                tunnel: t,
                counter: counter - 1,
                last: counter
            }
        );
        let legacy_hello = [0x26, 0x01, 0xA0, 0x00, 0, 0, 0, 9];
        assert_eq!(
            rej(&mut v, &legacy_hello),
            RejectReason::LegacyNotAllowed { tunnel: t }
        );
        assert_eq!(
            rej(&mut v, &legacy_hello[..6]),
            RejectReason::Malformed(WireError::Truncated { needed: 8, got: 6 })
        );
        assert!(verify(&KEY, &old));
        assert!(!verify(&HelloKey::new([8; 32]), &old));
    }

    /// A fresh hello captured on path and sent from another address first
    /// gets a challenge there, which only the tunnel's key can answer: the
    /// tunnel stays where it is and the genuine sender keeps it.
    #[test]
    fn a_hello_replayed_from_elsewhere_moves_nothing() {
        let (mut s, mut v) = setup();
        let (a, x) = (addr("203.0.113.5:40000"), addr("198.51.100.66:5555"));
        let t = TunnelId(9);
        let h1 = s.hello_now(Instant::ZERO);
        assert!(matches!(
            answered(&mut s, &mut v, Instant::ZERO, a, &h1),
            HelloEvent::Learned { .. }
        ));
        let now = Instant::from_millis(3000);
        let captured = s.hello_now(now);
        let challenge = match v.handle(now, x, captured.as_bytes()) {
            HelloEvent::Challenge { addr, datagram, .. } if addr == x => datagram,
            other => panic!("expected a challenge to {x}, got {other:?}"),
        };
        let reject = |v: &mut HelloVerifier<_>, from, bytes: &[u8]| match v.handle(now, from, bytes)
        {
            HelloEvent::Rejected { reason } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        };
        // What the attacker at x can send: the challenge itself, the
        // challenge relabelled as a response, a response under another key.
        assert_eq!(
            reject(&mut v, x, challenge.as_bytes()),
            RejectReason::UnexpectedChallenge { tunnel: t }
        );
        let mut relabelled = *challenge.as_bytes().first_chunk::<HELLO_LEN>().unwrap();
        relabelled[1] = crate::wire::CTYPE_RESPONSE;
        assert_eq!(
            reject(&mut v, x, &relabelled),
            RejectReason::BadMac { tunnel: t }
        );
        let mut forged = HelloRepr::parse(challenge.as_bytes()).unwrap();
        forged.kind = HelloKind::Response;
        sign(&HelloKey::new([8; 32]), &mut forged);
        let mut buf = [0u8; HELLO_LEN];
        forged.emit(&mut buf);
        assert_eq!(reject(&mut v, x, &buf), RejectReason::BadMac { tunnel: t });
        // The genuine node, sent the challenge, answers from its own address:
        // that answers nothing (the challenge went to x).
        let response = s.answer(challenge.as_bytes()).unwrap();
        assert_eq!(
            reject(&mut v, a, response.as_bytes()),
            RejectReason::UnexpectedResponse { tunnel: t, from: a }
        );
        assert_eq!(v.remote(t), Some(a));
        // The original copy is now a replay; the next hello refreshes.
        assert!(matches!(
            reject(&mut v, a, captured.as_bytes()),
            RejectReason::Replayed { .. }
        ));
        let next = s.hello_now(Instant::from_millis(6000));
        assert_eq!(
            v.handle(Instant::from_millis(6000), a, next.as_bytes()),
            HelloEvent::Refreshed { tunnel: t, addr: a }
        );
    }

    /// A response counts only from the challenged address, with the
    /// challenge's nonce, within the timeout, and once.
    #[test]
    fn a_response_must_answer_the_pending_challenge() {
        let (mut s, mut v) = setup();
        let a = addr("203.0.113.5:40000");
        let t = TunnelId(9);
        let challenge_for = |s: &mut HelloSender, v: &mut HelloVerifier<_>, now| match v.handle(
            now,
            a,
            s.hello_now(now).as_bytes(),
        ) {
            HelloEvent::Challenge { datagram, .. } => datagram,
            other => panic!("{other:?}"),
        };
        let unexpected = HelloEvent::Rejected {
            reason: RejectReason::UnexpectedResponse { tunnel: t, from: a },
        };
        // Too late.
        let c1 = challenge_for(&mut s, &mut v, Instant::ZERO);
        let r1 = s.answer(c1.as_bytes()).unwrap();
        let late = Instant::ZERO + DEFAULT_CHALLENGE_TIMEOUT + Duration::from_nanos(1);
        assert_eq!(v.handle(late, a, r1.as_bytes()), unexpected);
        assert_eq!(v.remote(t), None);
        // An answer to an older challenge than the pending one.
        let now = Instant::from_millis(3000);
        let c2 = challenge_for(&mut s, &mut v, now);
        let c3 = challenge_for(&mut s, &mut v, now);
        let r2 = s.answer(c2.as_bytes()).unwrap();
        assert_eq!(v.handle(now, a, r2.as_bytes()), unexpected);
        // The pending one, once.
        let r3 = s.answer(c3.as_bytes()).unwrap();
        assert_eq!(
            v.handle(now, a, r3.as_bytes()),
            HelloEvent::Learned { tunnel: t, addr: a }
        );
        assert_eq!(v.handle(now, a, r3.as_bytes()), unexpected);
        assert_eq!(v.remote(t), Some(a));
    }

    /// The sender answers only a challenge signed with its key, for its
    /// tunnel, tenant and node, whose nonce is one of its last two hellos,
    /// once.
    #[test]
    fn the_sender_answers_only_genuine_recent_challenges_once() {
        let (mut s, mut v) = setup();
        let a = addr("203.0.113.5:40000");
        let h = s.hello_now(Instant::ZERO);
        let HelloEvent::Challenge { datagram, .. } = v.handle(Instant::ZERO, a, h.as_bytes())
        else {
            panic!("no challenge");
        };
        let genuine = HelloRepr::parse(datagram.as_bytes()).unwrap();
        let emit = |repr: &HelloRepr, key: &HelloKey| {
            let mut repr = *repr;
            sign(key, &mut repr);
            let mut buf = [0u8; HELLO_LEN];
            repr.emit(&mut buf);
            buf
        };
        let refused = |s: &mut HelloSender, repr: HelloRepr, key: &HelloKey| {
            s.answer(&emit(&repr, key)).unwrap_err()
        };
        let other_key = HelloKey::new([8; 32]);
        assert_eq!(
            refused(&mut s, genuine, &other_key),
            ChallengeRefused::BadMac
        );
        assert_eq!(
            refused(
                &mut s,
                HelloRepr {
                    kind: HelloKind::Hello,
                    ..genuine
                },
                &KEY
            ),
            ChallengeRefused::NotAChallenge
        );
        assert_eq!(
            refused(
                &mut s,
                HelloRepr {
                    tunnel_id: TunnelId(10),
                    ..genuine
                },
                &KEY
            ),
            ChallengeRefused::WrongTunnel {
                expected: TunnelId(9),
                got: TunnelId(10)
            }
        );
        assert_eq!(
            refused(
                &mut s,
                HelloRepr {
                    tenant: TenantId(2),
                    ..genuine
                },
                &KEY
            ),
            ChallengeRefused::WrongIdentity
        );
        let nonce = genuine.counter + 1;
        assert_eq!(
            refused(
                &mut s,
                HelloRepr {
                    counter: nonce,
                    ..genuine
                },
                &KEY
            ),
            ChallengeRefused::UnknownNonce { nonce }
        );
        assert!(matches!(
            s.answer(&datagram.as_bytes()[..20]),
            Err(ChallengeRefused::Malformed(_))
        ));
        // The genuine one, still answerable after one more hello, once.
        let _ = s.hello_now(Instant::from_millis(3000));
        let response = s.answer(datagram.as_bytes()).unwrap();
        let parsed = HelloRepr::parse(response.as_bytes()).unwrap();
        assert_eq!(
            (parsed.kind, parsed.counter),
            (HelloKind::Response, genuine.counter)
        );
        assert!(verify(&KEY, &parsed));
        assert_eq!(
            s.answer(datagram.as_bytes()),
            Err(ChallengeRefused::UnknownNonce {
                nonce: genuine.counter
            })
        );
        let mut legacy = HelloSender::new(
            &SenderConfig {
                profile: WireProfile::EpicLegacy,
                ..SenderConfig::new(TunnelId(9), KEY, TenantId(1), genuine.node)
            },
            Instant::ZERO,
            0,
        );
        assert_eq!(
            legacy.answer(datagram.as_bytes()),
            Err(ChallengeRefused::Legacy)
        );
    }

    #[test]
    fn legacy_tunnel_accepts_legacy_hellos() {
        let (_, mut v) = setup();
        let mut cfg = TunnelConfig::new(TunnelId(9), KEY, TenantId(1), NodeId::from_name("node-a"));
        cfg.profile = WireProfile::EpicLegacy;
        v.add_tunnel(&cfg).unwrap();
        let mut s = HelloSender::new(
            &SenderConfig {
                profile: WireProfile::EpicLegacy,
                ..SenderConfig::new(TunnelId(9), KEY, TenantId(1), cfg.node)
            },
            Instant::ZERO,
            0,
        );
        let h = s.hello_now(Instant::ZERO);
        assert_eq!(h.as_bytes(), &[0x26, 0x01, 0xA0, 0x00, 0, 0, 0, 9]);
        let a = addr("192.0.2.1:1");
        assert_eq!(
            v.handle(Instant::ZERO, a, h.as_bytes()),
            HelloEvent::Learned {
                tunnel: TunnelId(9),
                addr: a
            }
        );
    }

    #[test]
    fn table_management() {
        let mut v = HelloVerifier::new([TunnelSlot::EMPTY; 2], VerifierConfig::default());
        let n = NodeId::default();
        for id in [5, 3] {
            v.add_tunnel(&TunnelConfig::new(TunnelId(id), KEY, TenantId(1), n))
                .unwrap();
        }
        assert_eq!(
            v.add_tunnel(&TunnelConfig::new(TunnelId(4), KEY, TenantId(1), n)),
            Err(TableFull { capacity: 2 })
        );
        assert_eq!(
            v.add_tunnel(&TunnelConfig::new(TunnelId(5), KEY, TenantId(2), n)),
            Ok(())
        );
        assert_eq!((v.len(), v.capacity(), v.is_empty()), (2, 2, false));
        assert!(v.remove_tunnel(TunnelId(3)));
        assert!(!v.remove_tunnel(TunnelId(3)));
        v.add_tunnel(&TunnelConfig::new(TunnelId(4), KEY, TenantId(1), n))
            .unwrap();
        assert_eq!(v.find(TunnelId(4)), Ok(0));
        assert_eq!(v.find(TunnelId(5)), Ok(1));
        assert_eq!(format!("{KEY:?}"), "HelloKey(<redacted>)");
    }

    #[test]
    fn counter_is_wall_clock_based_and_monotonic() {
        let cfg = SenderConfig::new(TunnelId(1), KEY, TenantId(1), NodeId::default());
        let mut s = HelloSender::new(&cfg, Instant::from_nanos(500), 1_000_000);
        let c = |d: HelloDatagram| HelloRepr::parse(d.as_bytes()).unwrap().counter;
        assert_eq!(c(s.hello_now(Instant::from_nanos(500))), 1_000_000);
        assert_eq!(c(s.hello_now(Instant::from_nanos(600))), 1_000_100);
        assert_eq!(c(s.hello_now(Instant::from_nanos(600))), 1_000_101);
        assert_eq!(
            s.next_timeout(),
            Instant::from_nanos(600) + DEFAULT_INTERVAL
        );
    }
}
