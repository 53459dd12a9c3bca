//! `epic-gue`: the GUE tunnel wire format of EPIC-RS, its authenticated NAT
//! hello protocol, and the eBPF map types shared by the data path and its loader.
//!
//! Gateways forward traffic to pods in clusters behind NAT over GUE (Generic
//! UDP Encapsulation, draft-ietf-intarea-gue-09, variant 0) on UDP port
//! [`GUE_PORT`] (6080). This crate is the one source of truth for those bytes:
//!
//! - [`wire`]: a zero-copy view [`GuePacket`] and its parsed meaning
//!   [`GueRepr`] (`parse` / `emit` / `buffer_len`), the hello layout
//!   [`HelloRepr`], and the original EPIC profile ([`wire::legacy`]);
//! - [`encap`]: outer IPv4/IPv6 + UDP + GUE around an inner packet and back;
//! - [`maps`]: `#[repr(C)]` keys and values of the eBPF maps;
//! - [`hello`] (feature `hello`): [`HelloSender`] and [`HelloVerifier`], sans-IO.
//!
//! # Features
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `hello` | yes | HMAC-SHA-256 hello sender and verifier; `no_std`, no alloc |
//! | `std` | no | implies `hello`; `bytes` buffers, `Vec` verifier storage, clocks, `std::error::Error` |
//!
//! With `default-features = false` only `core` is used (wire views and reprs,
//! encapsulation, map types, constants): that is how the eBPF programs
//! (`bpfel-unknown-none`) depend on it. The parse path never panics and has
//! no recursion and no loops other than over the bytes of a slice.
//!
//! # Data message
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0 0|0| Hlen=1  | Proto 4 or 41 |V|SEC|     0 (other flags)     |  01 04 80 00
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Tunnel id (VNID field)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  inner IPv4 or IPv6 packet ...                |
//! ```
//!
//! `Ver` is 0; `C` is 0 for data. `Hlen` counts the 32-bit words after the
//! first and must cover exactly the fields the flags announce (words beyond
//! them are private data); a shorter `Hlen` is [`WireError::HlenMismatch`]
//! with both values. Leading bits `01` are GUE version 1 (direct IP
//! encapsulation), reported as [`WireError::Version1`]. Flags supported:
//! `V` (0x8000, 32-bit VNID = tunnel id) and `SEC` (0x6000 mask: 01/10/11 =
//! 64/128/256-bit security field), fields in that order; any other flag is
//! [`WireError::UnsupportedFlags`], since its length would be unknown.
//!
//! # Hello, challenge and response (control messages, `ctype` 0x80, 0x81, 0x82)
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0 0|1| Hlen=5  |  ctype 0x80   |1|1 0|           0             |  25 80 C0 00
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Tunnel id (VNID field)                    |  bytes 4..8
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +     Security field: HMAC-SHA-256(key, hello with this        +  bytes 8..24
//! |     field zeroed), left 128 bits                              |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Counter (64 bits, big endian)                |  bytes 24..32
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Tenant id (32 bits)                    |  bytes 32..36
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Reserved (zero)                        |  bytes 36..40
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                 Node identity (128 bits)                      +  bytes 40..56
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The header word, tunnel id and 128-bit security field are GUE; the 32-byte
//! body (counter, tenant, reserved, node) is the control payload. The MAC
//! covers all 56 bytes (with the MAC field zeroed), so `ctype`, flags, tunnel,
//! counter, tenant and node are all authenticated. The challenge (`ctype`
//! 0x81) and the response (0x82) have the same layout ([`wire::HelloKind`]);
//! their counter is the nonce, and since the MAC covers `ctype`, none of the
//! three can be turned into another.
//!
//! # The hello protocol
//!
//! The cluster agent runs one [`HelloSender`] per tunnel and sends its hellos
//! (every 3 s by default) from its node to the gateway node's port 6080. The
//! counter starts at the wall clock in nanoseconds since the epoch and grows
//! with the monotonic clock, so it keeps increasing across agent restarts.
//!
//! The gateway agent feeds each received datagram and its outer source
//! address to a [`HelloVerifier`], which accepts a hello only if it parses,
//! the tunnel is known, the MAC verifies (constant-time comparison), the
//! tenant and node are the tunnel's, and the counter is inside the clock
//! window and above the last accepted one. A hello from the tunnel's remote
//! is [`HelloEvent::Refreshed`]. A hello from any other address (the first
//! one, a new NAT mapping, or a fresh hello an on-path attacker replays from
//! elsewhere) moves nothing yet: it is [`HelloEvent::Challenge`], a signed
//! challenge for the agent to send to that address, whose nonce is the
//! hello's counter. Only a response from that same address, signed with the
//! tunnel's key and echoing the nonce within the challenge timeout, gives
//! [`HelloEvent::Learned`] (first time, or after expiry) or
//! [`HelloEvent::Rebound`] (the NAT mapping changed). The sender answers
//! ([`HelloSender::answer`]) only challenges signed with its key whose nonce
//! is one of its last two hellos, each once. Anything else is
//! [`HelloEvent::Rejected`] with a [`RejectReason`] and changes nothing. [`HelloVerifier::poll`] reports
//! [`HelloEvent::Expired`] once hellos have been missing for a configurable
//! number of intervals. The agent writes only these verified results into
//! the eBPF tunnel map; the programs pass control messages up unchanged.
//!
//! # The EPIC legacy profile
//!
//! The original EPIC data plane (true-ingress v0.27) sends data as
//! `05 04 A0 00` + tunnel id + inner IPv4 packet and hellos as `26 01 A0 00` +
//! tunnel id. [`WireProfile::EpicLegacy`] reads and writes exactly that, for
//! migration, only when asked. It is weaker in every respect: `Hlen` (5, 6) and
//! the flags (VNID + 64-bit security) describe fields that are not there, so a
//! standard parser cannot tell where the payload starts; only IPv4 inner
//! packets exist; and hellos carry no MAC, counter or identity, so anyone who
//! can guess a tunnel id can redirect that tunnel's traffic to themselves and
//! old hellos can be replayed. A [`HelloVerifier`] accepts legacy hellos only
//! for tunnels configured with `WireProfile::EpicLegacy`.
//!
//! # Example
//!
//! ```
//! use epic_gue::{GuePacket, GueRepr, InnerProto, TunnelId, WireProfile, GUE_PORT};
//! use epic_gue::encap::{decapsulate, encapsulate, outer_for};
//! # #[cfg(feature = "hello")] {
//! use epic_gue::hello::{HelloKey, HelloSender, HelloVerifier, HelloEvent, Instant,
//!     SenderConfig, TunnelConfig, TunnelSlot, VerifierConfig};
//! use epic_gue::{NodeId, TenantId};
//!
//! // Data: a GUE header for tunnel 7 around an inner IPv4 packet.
//! let repr = GueRepr::data(TunnelId(7), InnerProto::Ipv4);
//! let mut header = [0u8; 8];
//! repr.emit(&mut GuePacket::new_unchecked(&mut header[..]))?;
//! assert_eq!(header, [0x01, 0x04, 0x80, 0x00, 0, 0, 0, 7]);
//! let packet = GuePacket::new_checked(&header[..])?;
//! assert_eq!(GueRepr::parse(&packet)?, repr);
//!
//! // Full encapsulation toward the gateway node, and back.
//! let inner = [0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 1, 5, 10, 244, 2, 7];
//! let outer = outer_for("198.51.100.1".parse()?, "203.0.113.2".parse()?, &inner);
//! let mut buf = [0u8; 128];
//! let len = encapsulate(&outer, &repr, &inner, &mut buf)?;
//! let d = decapsulate(&buf[..len], GUE_PORT, WireProfile::Standard)?;
//! assert_eq!((d.gue.tunnel_id, d.payload), (Some(TunnelId(7)), &inner[..]));
//!
//! // Hellos: the cluster agent sends, the gateway challenges the address the
//! // hello came from, and learns it (the NAT mapping) once it answers.
//! let key = HelloKey::new([42; 32]);
//! let node = NodeId::from_name("worker-1");
//! let mut sender = HelloSender::new(
//!     &SenderConfig::new(TunnelId(7), key.clone(), TenantId(1), node),
//!     Instant::ZERO,
//!     1_700_000_000_000_000_000, // wall clock, ns since the epoch
//! );
//! let mut verifier = HelloVerifier::new([TunnelSlot::EMPTY; 8], VerifierConfig::default());
//! verifier.add_tunnel(&TunnelConfig::new(TunnelId(7), key, TenantId(1), node))?;
//! let hello = sender.poll_transmit(Instant::ZERO).expect("first hello is due at once");
//! let nat = "203.0.113.9:40000".parse()?;
//! let HelloEvent::Challenge { addr, datagram, .. } =
//!     verifier.handle(Instant::ZERO, nat, hello.as_bytes())
//! else {
//!     panic!("a hello from a new address is challenged");
//! };
//! assert_eq!(addr, nat); // the gateway agent sends `datagram` there
//! let response = sender.answer(datagram.as_bytes())?;
//! assert_eq!(
//!     verifier.handle(Instant::ZERO, nat, response.as_bytes()),
//!     HelloEvent::Learned { tunnel: TunnelId(7), addr: nat },
//! );
//! // The same datagram again is a replay.
//! assert!(matches!(verifier.handle(Instant::ZERO, nat, hello.as_bytes()), HelloEvent::Rejected { .. }));
//! # }
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(missing_docs)]

pub mod encap;
#[cfg(feature = "hello")]
pub mod hello;
pub mod maps;
pub mod wire;

pub use wire::{
    GUE_PORT, GuePacket, GueRepr, HelloRepr, InnerProto, MessageKind, NodeId, Security, TenantId,
    TunnelId, WireError, WireProfile,
};

#[cfg(feature = "hello")]
pub use hello::{HelloEvent, HelloSender, HelloVerifier, RejectReason};
