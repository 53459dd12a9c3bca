//! GUE variant 0 on the wire: a zero-copy view ([`GuePacket`]), its parsed
//! meaning ([`GueRepr`]), the hello control message layout ([`HelloRepr`]) and
//! the original EPIC data plane's profile ([`legacy`]).
//!
//! Everything here is `core` only, panic-free on the parse path and free of
//! loops, so the eBPF programs can use it unchanged.

use core::fmt;

/// UDP destination port of GUE tunnels in EPIC.
pub const GUE_PORT: u16 = 6080;

/// Length of the fixed GUE header word.
pub const BASE_HEADER_LEN: usize = 4;

/// Largest GUE header: the base word plus 31 words (`Hlen` is 5 bits).
pub const MAX_HEADER_LEN: usize = BASE_HEADER_LEN + 31 * 4;

/// IP protocol number of an IPv4 payload (data messages).
pub const PROTO_IPV4: u8 = 4;

/// IP protocol number of an IPv6 payload (data messages).
pub const PROTO_IPV6: u8 = 41;

/// Control type of the EPIC hello (first value of the draft's user range).
pub const CTYPE_HELLO: u8 = 0x80;

/// Control type of the gateway's challenge to a hello from a new address.
pub const CTYPE_CHALLENGE: u8 = 0x81;

/// Control type of the cluster agent's response to a challenge.
pub const CTYPE_RESPONSE: u8 = 0x82;

/// Flag bit: a 32-bit virtual network id (our tunnel id) is present.
pub const FLAG_VNID: u16 = 0x8000;

/// Mask of the two-bit security flag (`SEC`).
pub const FLAG_SEC_MASK: u16 = 0x6000;

/// `SEC` = 01: a 64-bit security field is present.
pub const FLAG_SEC_64: u16 = 0x2000;

/// `SEC` = 10: a 128-bit security field is present.
pub const FLAG_SEC_128: u16 = 0x4000;

/// `SEC` = 11: a 256-bit security field is present.
pub const FLAG_SEC_256: u16 = 0x6000;

/// Flags this codec knows how to size; any other flag is rejected.
pub const KNOWN_FLAGS: u16 = FLAG_VNID | FLAG_SEC_MASK;

/// Byte offsets of the GUE header, in one place (read next to the diagram).
mod field {
    use core::ops::Range;

    /// `Ver(2) | C(1) | Hlen(5)`.
    pub(super) const VER_C_HLEN: usize = 0;
    /// `Proto/ctype`.
    pub(super) const PROTO_CTYPE: usize = 1;
    /// `Flags`, big endian.
    pub(super) const FLAGS: Range<usize> = 2..4;
    /// Start of the extension fields.
    pub(super) const FIELDS: usize = 4;
}

/// A tunnel identifier, carried in the VNID extension field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TunnelId(pub u32);

impl fmt::Display for TunnelId {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A tenant of the gateway platform, as numbered by the gateway controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TenantId(pub u32);

impl fmt::Display for TenantId {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node's 16-byte identity, as carried in hellos.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 16]);

impl fmt::Debug for NodeId {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The wire profile to read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WireProfile {
    /// draft-ietf-intarea-gue-09 variant 0, exact `Hlen`, authenticated hellos.
    #[default]
    Standard,
    /// The original EPIC data plane (true-ingress v0.27): fixed first words,
    /// stale `Hlen`, unauthenticated hellos. For migration only.
    EpicLegacy,
}

impl WireProfile {
    /// Stable lowercase name (`standard`, `epic-legacy`).
    #[inline]
    pub const fn name(self) -> &'static str {
        match self {
            WireProfile::Standard => "standard",
            WireProfile::EpicLegacy => "epic-legacy",
        }
    }
}

/// Why a buffer is not a GUE message we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the data the header announces.
    #[error("truncated: need {needed} bytes, have {got}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Leading bits `01`: GUE version 1, direct IP encapsulation (no GUE header).
    #[error("GUE version 1 (direct IPv{ip_version} encapsulation), not a variant-0 header")]
    Version1 {
        /// The IP version nibble of the directly encapsulated packet.
        ip_version: u8,
    },
    /// Leading bits `10` or `11`: no such GUE variant.
    #[error("unknown GUE variant {variant}")]
    BadVariant {
        /// The two leading bits.
        variant: u8,
    },
    /// `Hlen` does not equal the length of the fields the flags announce.
    #[error("Hlen mismatch: header announces {announced} words, flags need {needed}")]
    HlenMismatch {
        /// `Hlen` as found in the header.
        announced: u8,
        /// Words required by the flags (plus private data, if any).
        needed: u8,
    },
    /// A flag this codec cannot size is set.
    #[error("unsupported GUE flags {flags:#06x}")]
    UnsupportedFlags {
        /// The unsupported flag bits.
        flags: u16,
    },
    /// A data message whose payload is neither IPv4 (4) nor IPv6 (41).
    #[error("unsupported inner protocol {proto}")]
    UnsupportedProto {
        /// The `Proto` byte.
        proto: u8,
    },
    /// A message of the wrong kind for the operation (e.g. data where a hello is expected).
    #[error("unexpected message: wanted {wanted}")]
    UnexpectedMessage {
        /// What was expected.
        wanted: &'static str,
    },
    /// A hello control message with the wrong extension fields or body length.
    #[error("malformed hello: {what}")]
    MalformedHello {
        /// What is wrong.
        what: &'static str,
    },
    /// Not one of the two EPIC legacy first words.
    #[error("not an EPIC legacy header (first word {word:#010x})")]
    NotLegacy {
        /// The first 32-bit word, big endian.
        word: u32,
    },
    /// The output buffer is too small for the message.
    #[error("buffer too small: need {needed} bytes, have {got}")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
}

/// Inner protocol of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InnerProto {
    /// IPv4 (protocol 4).
    Ipv4,
    /// IPv6 (protocol 41).
    Ipv6,
}

impl InnerProto {
    /// The IP protocol number.
    #[inline]
    pub const fn number(self) -> u8 {
        match self {
            InnerProto::Ipv4 => PROTO_IPV4,
            InnerProto::Ipv6 => PROTO_IPV6,
        }
    }

    /// From an IP protocol number.
    #[inline]
    pub const fn from_number(proto: u8) -> Result<Self, WireError> {
        match proto {
            PROTO_IPV4 => Ok(InnerProto::Ipv4),
            PROTO_IPV6 => Ok(InnerProto::Ipv6),
            proto => Err(WireError::UnsupportedProto { proto }),
        }
    }
}

/// What a GUE message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A data message (C = 0) with an inner IP packet.
    Data(InnerProto),
    /// A control message (C = 1) with its `ctype`.
    Control(u8),
}

/// The security extension field, in one of its three sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// 64-bit field (`SEC` = 01).
    Bits64([u8; 8]),
    /// 128-bit field (`SEC` = 10); the hello's truncated HMAC.
    Bits128([u8; 16]),
    /// 256-bit field (`SEC` = 11).
    Bits256([u8; 32]),
}

impl Security {
    /// The field's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Security::Bits64(b) => b,
            Security::Bits128(b) => b,
            Security::Bits256(b) => b,
        }
    }

    #[inline]
    const fn flag(&self) -> u16 {
        match self {
            Security::Bits64(_) => FLAG_SEC_64,
            Security::Bits128(_) => FLAG_SEC_128,
            Security::Bits256(_) => FLAG_SEC_256,
        }
    }
}

/// Length in bytes of the security field announced by `flags` (0 if absent).
#[inline]
const fn security_len(flags: u16) -> usize {
    match flags & FLAG_SEC_MASK {
        FLAG_SEC_64 => 8,
        FLAG_SEC_128 => 16,
        FLAG_SEC_256 => 32,
        _ => 0,
    }
}

/// Length in bytes of the extension fields announced by `flags`.
#[inline]
pub const fn fields_len(flags: u16) -> Result<usize, WireError> {
    let unknown = flags & !KNOWN_FLAGS;
    if unknown != 0 {
        return Err(WireError::UnsupportedFlags { flags: unknown });
    }
    let vnid = if flags & FLAG_VNID != 0 { 4 } else { 0 };
    Ok(vnid + security_len(flags))
}

/// A zero-copy view of a GUE variant-0 header and what follows it.
///
/// After [`GuePacket::new_checked`] no accessor panics; field accessors
/// return `None` when the flags announce fields `Hlen` does not cover.
#[derive(Debug, Clone)]
pub struct GuePacket<T> {
    buffer: T,
}

/// Checks that `data` starts a variant-0 header and returns its first byte;
/// reports an empty buffer, version 1 (direct IP encapsulation) and unknown
/// variants.
#[inline(always)]
fn check_variant(data: &[u8]) -> Result<u8, WireError> {
    let Some(&first) = data.first() else {
        return Err(WireError::Truncated {
            needed: BASE_HEADER_LEN,
            got: 0,
        });
    };
    match first >> 6 {
        0 => Ok(first),
        1 => Err(WireError::Version1 {
            ip_version: first >> 4,
        }),
        variant => Err(WireError::BadVariant { variant }),
    }
}

impl<T: AsRef<[u8]>> GuePacket<T> {
    /// Wraps a buffer without checks (for emitting into a buffer sized with
    /// [`GueRepr::buffer_len`]). Accessors panic if it is shorter than the header.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        GuePacket { buffer }
    }

    /// Wraps a buffer after checking the variant and that the header `Hlen`
    /// announces fits in it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = GuePacket { buffer };
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the variant and the header length against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        let first = check_variant(data)?;
        if data.len() < BASE_HEADER_LEN {
            return Err(WireError::Truncated {
                needed: BASE_HEADER_LEN,
                got: data.len(),
            });
        }
        let needed = BASE_HEADER_LEN + usize::from(first & 0x1f) * 4;
        if data.len() < needed {
            return Err(WireError::Truncated {
                needed,
                got: data.len(),
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The two variant bits (0 after `new_checked`).
    #[inline]
    pub fn variant(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] >> 6
    }

    /// The C bit: a control message.
    #[inline]
    pub fn is_control(&self) -> bool {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x20 != 0
    }

    /// `Hlen`: 32-bit words after the first.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x1f
    }

    /// `Proto` (data) or `ctype` (control).
    #[inline]
    pub fn proto_ctype(&self) -> u8 {
        self.buffer.as_ref()[field::PROTO_CTYPE]
    }

    /// The 16 flag bits.
    #[inline]
    pub fn flags(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header length in bytes, `4 + 4 * Hlen`.
    #[inline]
    pub fn header_len(&self) -> usize {
        BASE_HEADER_LEN + usize::from(self.hlen()) * 4
    }

    /// The bytes covered by `Hlen` (extension fields then private data).
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::FIELDS..self.header_len())
            .unwrap_or(&[])
    }

    /// The VNID field (tunnel id), if flagged and covered by `Hlen`.
    #[inline]
    pub fn tunnel_id(&self) -> Option<TunnelId> {
        if self.flags() & FLAG_VNID == 0 {
            return None;
        }
        let b = self.options().get(0..4)?;
        Some(TunnelId(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    }

    /// The security field's bytes, if flagged and covered by `Hlen`.
    #[inline]
    pub fn security(&self) -> Option<&[u8]> {
        let flags = self.flags();
        let len = security_len(flags);
        if len == 0 {
            return None;
        }
        let start = if flags & FLAG_VNID != 0 { 4 } else { 0 };
        self.options().get(start..start + len)
    }

    /// What follows the header (inner packet or control body).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GuePacket<T> {
    /// Writes the first word (variant 0).
    #[inline]
    pub fn set_header(&mut self, control: bool, hlen: u8, proto_ctype: u8, flags: u16) {
        let b = self.buffer.as_mut();
        b[field::VER_C_HLEN] = (u8::from(control) << 5) | (hlen & 0x1f);
        b[field::PROTO_CTYPE] = proto_ctype;
        b[field::FLAGS].copy_from_slice(&flags.to_be_bytes());
    }

    /// The bytes covered by `Hlen`, mutable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(field::FIELDS..end)
            .unwrap_or(&mut [])
    }

    /// What follows the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

/// The parsed, validated meaning of a GUE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GueRepr {
    /// Data or control, with `Proto`/`ctype`.
    pub kind: MessageKind,
    /// The VNID extension field.
    pub tunnel_id: Option<TunnelId>,
    /// The security extension field.
    pub security: Option<Security>,
    /// Words of private data after the extension fields (zeroed on emit).
    pub private_words: u8,
}

impl GueRepr {
    /// A data message for `tunnel` carrying `proto`.
    #[inline]
    pub const fn data(tunnel: TunnelId, proto: InnerProto) -> Self {
        GueRepr {
            kind: MessageKind::Data(proto),
            tunnel_id: Some(tunnel),
            security: None,
            private_words: 0,
        }
    }

    /// The flags this repr announces.
    #[inline]
    pub const fn flags(&self) -> u16 {
        let mut flags = 0;
        if self.tunnel_id.is_some() {
            flags |= FLAG_VNID;
        }
        if let Some(sec) = &self.security {
            flags |= sec.flag();
        }
        flags
    }

    /// `Hlen` of this repr, or `None` if it exceeds 31 words.
    #[inline]
    pub const fn hlen(&self) -> Option<u8> {
        let words = (self.tunnel_id.is_some() as usize)
            + match &self.security {
                None => 0,
                Some(Security::Bits64(_)) => 2,
                Some(Security::Bits128(_)) => 4,
                Some(Security::Bits256(_)) => 8,
            }
            + self.private_words as usize;
        if words > 31 { None } else { Some(words as u8) }
    }

    /// Header length in bytes (payload not included); 0 if `hlen` overflows.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        match self.hlen() {
            Some(h) => BASE_HEADER_LEN + h as usize * 4,
            None => 0,
        }
    }

    /// Parses and validates a checked packet (standard profile).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &GuePacket<T>) -> Result<Self, WireError> {
        Self::parse_slice(packet.buffer.as_ref()).map(|(repr, _)| repr)
    }

    /// Parses the standard header at the start of `data`; returns it and its length.
    /// One pass over the first word, one bounds check per field.
    #[inline(always)]
    fn parse_slice(data: &[u8]) -> Result<(Self, usize), WireError> {
        let first = check_variant(data)?;
        let Some(&[_, proto_ctype, f0, f1]) = data.first_chunk::<BASE_HEADER_LEN>() else {
            return Err(WireError::Truncated {
                needed: BASE_HEADER_LEN,
                got: data.len(),
            });
        };
        let announced = first & 0x1f;
        let header_len = BASE_HEADER_LEN + usize::from(announced) * 4;
        let Some(opts) = data.get(BASE_HEADER_LEN..header_len) else {
            return Err(WireError::Truncated {
                needed: header_len,
                got: data.len(),
            });
        };
        let flags = u16::from_be_bytes([f0, f1]);
        // At most 36 bytes: 9 words, fits u8.
        let needed = (fields_len(flags)? / 4) as u8;
        if announced < needed {
            return Err(WireError::HlenMismatch { announced, needed });
        }
        let kind = if first & 0x20 != 0 {
            MessageKind::Control(proto_ctype)
        } else {
            MessageKind::Data(InnerProto::from_number(proto_ctype)?)
        };
        let (tunnel_id, rest) = match (flags & FLAG_VNID != 0, opts.split_first_chunk::<4>()) {
            (true, Some((id, rest))) => (Some(TunnelId(u32::from_be_bytes(*id))), rest),
            (true, None) => return Err(WireError::HlenMismatch { announced, needed }),
            (false, _) => (None, opts),
        };
        let security = match flags & FLAG_SEC_MASK {
            FLAG_SEC_64 => rest.first_chunk::<8>().map(|b| Security::Bits64(*b)),
            FLAG_SEC_128 => rest.first_chunk::<16>().map(|b| Security::Bits128(*b)),
            FLAG_SEC_256 => rest.first_chunk::<32>().map(|b| Security::Bits256(*b)),
            _ => None,
        };
        if security.is_none() && flags & FLAG_SEC_MASK != 0 {
            return Err(WireError::HlenMismatch { announced, needed });
        }
        let repr = GueRepr {
            kind,
            tunnel_id,
            security,
            private_words: announced - needed,
        };
        Ok((repr, header_len))
    }

    /// Writes this header into `packet` (whose buffer must hold `buffer_len()` bytes).
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut GuePacket<T>,
    ) -> Result<(), WireError> {
        let hlen = self.hlen().ok_or(WireError::HlenMismatch {
            announced: 31,
            needed: 32,
        })?;
        let needed = self.buffer_len();
        let got = packet.buffer.as_ref().len();
        if got < needed {
            return Err(WireError::BufferTooSmall { needed, got });
        }
        let (control, proto_ctype) = match self.kind {
            MessageKind::Data(p) => (false, p.number()),
            MessageKind::Control(c) => (true, c),
        };
        packet.set_header(control, hlen, proto_ctype, self.flags());
        let opts = packet.options_mut();
        opts.fill(0);
        let mut at = 0;
        if let Some(id) = self.tunnel_id {
            opts[0..4].copy_from_slice(&id.0.to_be_bytes());
            at = 4;
        }
        if let Some(sec) = &self.security {
            let b = sec.as_bytes();
            opts[at..at + b.len()].copy_from_slice(b);
        }
        Ok(())
    }

    /// Parses the header at the start of `bytes` with `profile`; returns the
    /// repr and the header length (the payload starts there).
    #[inline]
    pub fn parse_bytes(bytes: &[u8], profile: WireProfile) -> Result<(Self, usize), WireError> {
        match profile {
            WireProfile::Standard => Self::parse_slice(bytes),
            WireProfile::EpicLegacy => {
                let m = legacy::parse(bytes)?;
                let kind = if m.hello {
                    MessageKind::Control(legacy::HELLO_CTYPE)
                } else {
                    MessageKind::Data(InnerProto::Ipv4)
                };
                let repr = GueRepr {
                    kind,
                    tunnel_id: Some(m.tunnel_id),
                    security: None,
                    private_words: 0,
                };
                Ok((repr, legacy::HEADER_LEN))
            }
        }
    }
}

/// Copies a slice of exactly `N` bytes (callers pass slices of length `N`).
#[inline]
fn copy_array<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if src.len() == N {
        out.copy_from_slice(src);
    }
    out
}

/// Words of extension fields in a hello: tunnel id (1) + 128-bit MAC (4).
pub const HELLO_HLEN: u8 = 5;

/// Flags of a hello: VNID and a 128-bit security field.
pub const HELLO_FLAGS: u16 = FLAG_VNID | FLAG_SEC_128;

/// Length of the hello body (after the header).
pub const HELLO_BODY_LEN: usize = 32;

/// Length of a whole hello message.
pub const HELLO_LEN: usize = BASE_HEADER_LEN + HELLO_HLEN as usize * 4 + HELLO_BODY_LEN;

/// Length of the hello MAC (HMAC-SHA-256 truncated to 128 bits).
pub const HELLO_MAC_LEN: usize = 16;

/// Byte offsets of the hello message.
mod hello_field {
    use core::ops::Range;
    pub(super) const HEADER: Range<usize> = 0..4;
    pub(super) const TUNNEL: Range<usize> = 4..8;
    pub(super) const MAC: Range<usize> = 8..24;
    pub(super) const COUNTER: Range<usize> = 24..32;
    pub(super) const TENANT: Range<usize> = 32..36;
    pub(super) const RESERVED: Range<usize> = 36..40;
    pub(super) const NODE: Range<usize> = 40..56;
}

/// The three messages of the hello exchange. They share one layout and
/// differ in their control type, which the MAC covers: none can be turned
/// into another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloKind {
    /// Cluster agent → gateway, every interval: "this tunnel is mine, reach
    /// me where this came from" (`ctype` [`CTYPE_HELLO`]).
    Hello,
    /// Gateway → the outer source of a verified hello that is not the
    /// tunnel's remote (`ctype` [`CTYPE_CHALLENGE`]); its counter is the
    /// hello's, the nonce to echo.
    Challenge,
    /// Cluster agent → gateway, answering a challenge with its nonce as the
    /// counter (`ctype` [`CTYPE_RESPONSE`]).
    Response,
}

impl HelloKind {
    /// The control type on the wire.
    pub const fn ctype(self) -> u8 {
        match self {
            HelloKind::Hello => CTYPE_HELLO,
            HelloKind::Challenge => CTYPE_CHALLENGE,
            HelloKind::Response => CTYPE_RESPONSE,
        }
    }

    /// The kind of a control type, if it is one of the three.
    pub const fn from_ctype(ctype: u8) -> Option<Self> {
        match ctype {
            CTYPE_HELLO => Some(HelloKind::Hello),
            CTYPE_CHALLENGE => Some(HelloKind::Challenge),
            CTYPE_RESPONSE => Some(HelloKind::Response),
            _ => None,
        }
    }
}

/// A hello, challenge or response control message, structurally validated
/// (MAC not checked here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HelloRepr {
    /// Which of the three messages.
    pub kind: HelloKind,
    /// The tunnel this message is for.
    pub tunnel_id: TunnelId,
    /// A hello's increasing counter (the sender's wall clock in nanoseconds
    /// since the epoch); in a challenge and its response, the nonce: the
    /// counter of the hello being challenged.
    pub counter: u64,
    /// The sender's tenant.
    pub tenant: TenantId,
    /// The sender's node identity.
    pub node: NodeId,
    /// The MAC as carried (HMAC-SHA-256, left 128 bits).
    pub mac: [u8; HELLO_MAC_LEN],
}

impl HelloRepr {
    /// Parses a standard-profile hello, challenge or response (exact
    /// length, flags and `Hlen`).
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let packet = GuePacket::new_checked(bytes)?;
        let repr = GueRepr::parse(&packet)?;
        let MessageKind::Control(ctype) = repr.kind else {
            return Err(WireError::UnexpectedMessage {
                wanted: "hello control message",
            });
        };
        let Some(kind) = HelloKind::from_ctype(ctype) else {
            return Err(WireError::UnexpectedMessage {
                wanted: "hello control message",
            });
        };
        let (Some(tunnel_id), Some(Security::Bits128(mac))) = (repr.tunnel_id, repr.security)
        else {
            return Err(WireError::MalformedHello {
                what: "needs a tunnel id and a 128-bit security field",
            });
        };
        if repr.private_words != 0 {
            return Err(WireError::HlenMismatch {
                announced: packet.hlen(),
                needed: HELLO_HLEN,
            });
        }
        if bytes.len() != HELLO_LEN {
            return Err(WireError::MalformedHello {
                what: "body is not 32 bytes",
            });
        }
        // The MAC covers them as zeros: anything else would pass unchecked.
        if bytes[hello_field::RESERVED] != [0; 4] {
            return Err(WireError::MalformedHello {
                what: "reserved bytes are not zero",
            });
        }
        Ok(HelloRepr {
            kind,
            tunnel_id,
            counter: u64::from_be_bytes(copy_array(&bytes[hello_field::COUNTER])),
            tenant: TenantId(u32::from_be_bytes(copy_array(&bytes[hello_field::TENANT]))),
            node: NodeId(copy_array(&bytes[hello_field::NODE])),
            mac,
        })
    }

    /// Writes the message into a fixed buffer, with the MAC as set in `self`.
    #[inline]
    pub fn emit(&self, out: &mut [u8; HELLO_LEN]) {
        let mut first = [0u8; 4];
        first[0] = 0x20 | HELLO_HLEN;
        first[1] = self.kind.ctype();
        first[2..4].copy_from_slice(&HELLO_FLAGS.to_be_bytes());
        out[hello_field::HEADER].copy_from_slice(&first);
        out[hello_field::TUNNEL].copy_from_slice(&self.tunnel_id.0.to_be_bytes());
        out[hello_field::MAC].copy_from_slice(&self.mac);
        out[hello_field::COUNTER].copy_from_slice(&self.counter.to_be_bytes());
        out[hello_field::TENANT].copy_from_slice(&self.tenant.0.to_be_bytes());
        out[hello_field::RESERVED].fill(0);
        out[hello_field::NODE].copy_from_slice(&self.node.0);
    }

    /// The bytes the MAC covers: the whole message (its control type
    /// included) with the MAC field zeroed.
    #[inline]
    pub fn mac_input(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        let unsigned = HelloRepr {
            mac: [0; HELLO_MAC_LEN],
            ..*self
        };
        unsigned.emit(&mut out);
        out
    }
}

/// The original EPIC data plane's wire profile (true-ingress v0.27).
///
/// Data: `05 04 A0 00` + tunnel id (4 bytes, big endian) + inner IPv4 packet.
/// Hello: `26 01 A0 00` + tunnel id (+ whatever the old agent appended, ignored).
/// The flags (`A0 00`: VNID + 64-bit security) and `Hlen` (5, 6) do not match
/// the 8 bytes that are actually sent, and nothing is authenticated.
pub mod legacy {
    use super::{TunnelId, WireError};

    /// First word of a legacy data message.
    pub const DATA_WORD: [u8; 4] = [0x05, 0x04, 0xA0, 0x00];
    /// First word of a legacy hello.
    pub const HELLO_WORD: [u8; 4] = [0x26, 0x01, 0xA0, 0x00];
    /// `ctype` of the legacy hello.
    pub const HELLO_CTYPE: u8 = 0x01;
    /// Bytes before the payload in both legacy messages.
    pub const HEADER_LEN: usize = 8;

    /// A parsed legacy message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct LegacyMessage {
        /// A hello (else a data message with an inner IPv4 packet).
        pub hello: bool,
        /// The tunnel id.
        pub tunnel_id: TunnelId,
    }

    /// Parses the 8-byte legacy header at the start of `bytes`.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<LegacyMessage, WireError> {
        let Some(h) = bytes.get(0..HEADER_LEN) else {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        };
        let word = [h[0], h[1], h[2], h[3]];
        let hello = if word == DATA_WORD {
            false
        } else if word == HELLO_WORD {
            true
        } else {
            return Err(WireError::NotLegacy {
                word: u32::from_be_bytes(word),
            });
        };
        Ok(LegacyMessage {
            hello,
            tunnel_id: TunnelId(u32::from_be_bytes([h[4], h[5], h[6], h[7]])),
        })
    }

    /// Writes the 8-byte legacy header into `out`.
    #[inline]
    pub fn emit(message: &LegacyMessage, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(if message.hello {
            &HELLO_WORD
        } else {
            &DATA_WORD
        });
        out[4..8].copy_from_slice(&message.tunnel_id.0.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data message, IPv4, tunnel 0x01020304, written from the draft diagram:
    /// `00|0|00001` `00000100` `1000 0000 0000 0000` then the VNID word.
    const DATA_V4: [u8; 8] = [0x01, 0x04, 0x80, 0x00, 0x01, 0x02, 0x03, 0x04];

    #[test]
    fn parses_hand_written_data_header() {
        let p = GuePacket::new_checked(&DATA_V4[..]).unwrap();
        assert_eq!(
            (
                p.variant(),
                p.is_control(),
                p.hlen(),
                p.proto_ctype(),
                p.flags()
            ),
            (0, false, 1, 4, 0x8000)
        );
        let r = GueRepr::parse(&p).unwrap();
        assert_eq!(r, GueRepr::data(TunnelId(0x0102_0304), InnerProto::Ipv4));
        let mut out = [0u8; 8];
        r.emit(&mut GuePacket::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, DATA_V4);
    }

    #[test]
    fn parses_ipv6_data_and_private_data() {
        // Hlen 2: VNID + one word of private data; proto 41.
        let b = [
            0x02, 41, 0x80, 0x00, 0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 0x60,
        ];
        let p = GuePacket::new_checked(&b[..]).unwrap();
        let r = GueRepr::parse(&p).unwrap();
        assert_eq!(r.kind, MessageKind::Data(InnerProto::Ipv6));
        assert_eq!(r.private_words, 1);
        assert_eq!(p.payload(), &[0x60]);
        assert_eq!(&p.options()[4..], &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn every_error() {
        let e = |b: &[u8]| {
            GuePacket::new_checked(b)
                .and_then(|p| GueRepr::parse(&p))
                .unwrap_err()
        };
        assert_eq!(e(&[]), WireError::Truncated { needed: 4, got: 0 });
        assert_eq!(e(&[0x00, 4]), WireError::Truncated { needed: 4, got: 2 });
        assert_eq!(
            e(&[0x01, 4, 0x80, 0]),
            WireError::Truncated { needed: 8, got: 4 }
        );
        assert_eq!(e(&[0x45, 0, 0, 20]), WireError::Version1 { ip_version: 4 });
        assert_eq!(e(&[0x60, 0, 0, 0]), WireError::Version1 { ip_version: 6 });
        assert_eq!(e(&[0x80, 0, 0, 0]), WireError::BadVariant { variant: 2 });
        assert_eq!(e(&[0xc0, 0, 0, 0]), WireError::BadVariant { variant: 3 });
        assert_eq!(
            e(&[0x00, 4, 0x80, 0]),
            WireError::HlenMismatch {
                announced: 0,
                needed: 1
            }
        );
        assert_eq!(
            e(&[0x00, 4, 0x01, 0]),
            WireError::UnsupportedFlags { flags: 0x0100 }
        );
        assert_eq!(
            e(&[0x00, 17, 0, 0]),
            WireError::UnsupportedProto { proto: 17 }
        );
        let mut small = [0u8; 4];
        let err = GueRepr::data(TunnelId(1), InnerProto::Ipv4)
            .emit(&mut GuePacket::new_unchecked(&mut small[..]));
        assert_eq!(err, Err(WireError::BufferTooSmall { needed: 8, got: 4 }));
        let too_long = GueRepr {
            kind: MessageKind::Control(0),
            tunnel_id: None,
            security: None,
            private_words: 32,
        };
        assert_eq!(too_long.hlen(), None);
        assert_eq!(too_long.buffer_len(), 0);
        let mut big = [0u8; 256];
        assert!(matches!(
            too_long.emit(&mut GuePacket::new_unchecked(&mut big[..])),
            Err(WireError::HlenMismatch { .. })
        ));
    }

    #[test]
    fn legacy_vectors() {
        let data = [0x05, 0x04, 0xA0, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x45];
        let m = legacy::parse(&data).unwrap();
        assert_eq!(
            m,
            legacy::LegacyMessage {
                hello: false,
                tunnel_id: TunnelId(42)
            }
        );
        let hello = [0x26, 0x01, 0xA0, 0x00, 0x00, 0x00, 0x01, 0x00];
        let m = legacy::parse(&hello).unwrap();
        assert_eq!(
            m,
            legacy::LegacyMessage {
                hello: true,
                tunnel_id: TunnelId(256)
            }
        );
        let mut out = [0u8; 8];
        legacy::emit(&m, &mut out);
        assert_eq!(out, hello);
        // The standard profile refuses legacy bytes, stating both lengths.
        let p = GuePacket::new_checked(&data[..]).unwrap_err();
        assert_eq!(p, WireError::Truncated { needed: 24, got: 9 });
        let mut padded = [0u8; 24];
        padded[..9].copy_from_slice(&data);
        let p = GuePacket::new_checked(&padded[..]).unwrap();
        assert_eq!(
            GueRepr::parse(&p).unwrap().private_words,
            2,
            "stale Hlen reads as private data"
        );
        assert_eq!(
            legacy::parse(&data[..7]),
            Err(WireError::Truncated { needed: 8, got: 7 })
        );
        assert_eq!(
            legacy::parse(&DATA_V4),
            Err(WireError::NotLegacy { word: 0x0104_8000 })
        );
        let (repr, len) = GueRepr::parse_bytes(&data, WireProfile::EpicLegacy).unwrap();
        assert_eq!(
            (repr.kind, repr.tunnel_id, len),
            (MessageKind::Data(InnerProto::Ipv4), Some(TunnelId(42)), 8)
        );
    }

    #[test]
    fn hello_layout() {
        let h = HelloRepr {
            kind: HelloKind::Hello,
            tunnel_id: TunnelId(7),
            counter: 0x0102_0304_0506_0708,
            tenant: TenantId(3),
            node: NodeId([0xaa; 16]),
            mac: [0x11; 16],
        };
        let mut out = [0u8; HELLO_LEN];
        h.emit(&mut out);
        assert_eq!(&out[0..8], &[0x25, 0x80, 0xC0, 0x00, 0, 0, 0, 7]);
        assert_eq!(&out[8..24], &[0x11; 16]);
        assert_eq!(
            &out[24..40],
            &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 3, 0, 0, 0, 0]
        );
        assert_eq!(&out[40..], &[0xaa; 16]);
        assert_eq!(HelloRepr::parse(&out), Ok(h));
        for at in 36..40 {
            let mut reserved = out;
            reserved[at] = 1;
            assert_eq!(
                HelloRepr::parse(&reserved),
                Err(WireError::MalformedHello {
                    what: "reserved bytes are not zero"
                }),
                "byte {at}"
            );
        }
        assert_eq!(
            HelloRepr::parse(&out[..55]),
            Err(WireError::MalformedHello {
                what: "body is not 32 bytes"
            })
        );
        assert_eq!(
            HelloRepr::parse(&DATA_V4),
            Err(WireError::UnexpectedMessage {
                wanted: "hello control message"
            })
        );
        let mut no_mac = out;
        no_mac[0] = 0x21;
        no_mac[2] = 0x80;
        assert!(matches!(
            HelloRepr::parse(&no_mac),
            Err(WireError::MalformedHello { .. })
        ));
        let mut private = [0u8; HELLO_LEN + 4];
        private[..HELLO_LEN].copy_from_slice(&out);
        private[0] = 0x26;
        assert_eq!(
            HelloRepr::parse(&private),
            Err(WireError::HlenMismatch {
                announced: 6,
                needed: 5
            })
        );
        assert_eq!(h.mac_input()[8..24], [0; 16]);
        for (kind, ctype) in [(HelloKind::Challenge, 0x81), (HelloKind::Response, 0x82)] {
            let other = HelloRepr { kind, ..h };
            let mut bytes = [0u8; HELLO_LEN];
            other.emit(&mut bytes);
            assert_eq!(bytes[1], ctype);
            assert_eq!(HelloRepr::parse(&bytes), Ok(other));
            assert_eq!(other.mac_input()[1], ctype, "the MAC covers the kind");
        }
        let mut unknown = out;
        unknown[1] = 0x83;
        assert_eq!(
            HelloRepr::parse(&unknown),
            Err(WireError::UnexpectedMessage {
                wanted: "hello control message"
            })
        );
    }
}
