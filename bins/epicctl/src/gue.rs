//! `epicctl gue`: decode and encode GUE messages (epic-gue).

use std::error::Error;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use epic_gue::encap::decapsulate;
use epic_gue::hello::{HelloKey, sign};
use epic_gue::wire::{HELLO_LEN, HELLO_MAC_LEN, legacy};
use epic_gue::{
    GUE_PORT, GuePacket, GueRepr, HelloRepr, InnerProto, MessageKind, NodeId, TenantId, TunnelId,
    WireProfile,
};
use serde_json::{Value, json};

/// GUE subcommands.
#[derive(Debug, Subcommand)]
pub enum GueCommand {
    /// Decode a GUE message given in hex; prints JSON, fails on bad input.
    Decode {
        /// The bytes in hex (spaces, colons and a 0x prefix are ignored).
        hex: String,
        /// Wire profile to read.
        #[arg(long, value_enum, default_value_t = Profile::Standard)]
        profile: Profile,
        /// The input starts with the outer IPv4/IPv6 and UDP headers.
        #[arg(long)]
        outer: bool,
        /// UDP destination port expected with --outer.
        #[arg(long, default_value_t = GUE_PORT)]
        port: u16,
    },
    /// Encode a GUE message and print it in hex.
    #[command(subcommand)]
    Encode(EncodeCommand),
}

/// What to encode.
#[derive(Debug, Subcommand)]
pub enum EncodeCommand {
    /// A data message header (optionally followed by an inner packet).
    Data {
        /// Tunnel id.
        #[arg(long)]
        tunnel: u32,
        /// Inner protocol (standard profile; legacy is IPv4 only).
        #[arg(long, value_enum, default_value_t = Proto::Ipv4)]
        proto: Proto,
        /// Inner packet in hex, appended after the header.
        #[arg(long)]
        payload: Option<String>,
        /// Wire profile to write.
        #[arg(long, value_enum, default_value_t = Profile::Standard)]
        profile: Profile,
    },
    /// A hello (authenticated in the standard profile).
    Hello {
        /// Tunnel id.
        #[arg(long)]
        tunnel: u32,
        /// File holding the tunnel's 32-byte key in hex (standard profile).
        #[arg(long, conflicts_with = "key_hex")]
        key_file: Option<PathBuf>,
        /// The 32-byte key in hex (visible to other local users; prefer --key-file).
        #[arg(long)]
        key_hex: Option<String>,
        /// Tenant id.
        #[arg(long, default_value_t = 0)]
        tenant: u32,
        /// Node name (identity = SHA-256 of the name, left 128 bits).
        #[arg(long, conflicts_with = "node_id")]
        node: Option<String>,
        /// Node identity as 16 bytes of hex.
        #[arg(long)]
        node_id: Option<String>,
        /// Counter (default: now, in nanoseconds since the epoch).
        #[arg(long)]
        counter: Option<u64>,
        /// Wire profile to write.
        #[arg(long, value_enum, default_value_t = Profile::Standard)]
        profile: Profile,
    },
}

/// Wire profile choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// draft-ietf-intarea-gue-09 variant 0, authenticated hellos.
    Standard,
    /// The original EPIC data plane (migration only, unauthenticated).
    EpicLegacy,
}

impl From<Profile> for WireProfile {
    fn from(p: Profile) -> Self {
        match p {
            Profile::Standard => WireProfile::Standard,
            Profile::EpicLegacy => WireProfile::EpicLegacy,
        }
    }
}

/// Inner protocol choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// IPv4 (4).
    Ipv4,
    /// IPv6 (41).
    Ipv6,
}

/// Runs a `gue` subcommand.
pub fn run(cmd: GueCommand) -> Result<(), Box<dyn Error>> {
    match cmd {
        GueCommand::Decode {
            hex,
            profile,
            outer,
            port,
        } => {
            let bytes = parse_hex(&hex)?;
            let value = decode(&bytes, profile.into(), outer.then_some(port))?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        GueCommand::Encode(e) => println!("{}", to_hex(&encode(e)?)),
    }
    Ok(())
}

/// Decodes `bytes` into the JSON description printed by `epicctl gue decode`.
fn decode(
    bytes: &[u8],
    profile: WireProfile,
    outer_port: Option<u16>,
) -> Result<Value, Box<dyn Error>> {
    let (outer, gue_bytes) = match outer_port {
        Some(port) => {
            let (outer, gue_bytes) = strip_outer(bytes, port, profile)?;
            (Some(outer), gue_bytes)
        }
        None => (None, bytes),
    };
    let (repr, header_len) = GueRepr::parse_bytes(gue_bytes, profile).map_err(|e| {
        let hint = if profile == WireProfile::Standard && legacy::parse(gue_bytes).is_ok() {
            " (this looks like the EPIC legacy profile: try --profile epic-legacy)"
        } else {
            ""
        };
        format!("{e}{hint}")
    })?;
    let payload = &gue_bytes[header_len..];
    let (variant, control, hlen, flags) = first_word(gue_bytes);
    let mut v = json!({
        "profile": profile.name(),
        "variant": variant,
        "c": control,
        "hlen": hlen,
        "flags": format!("{flags:#06x}"),
        "tunnel_id": repr.tunnel_id.map(|t| t.0),
        "fields": {
            "vnid": repr.tunnel_id.map(|t| t.0),
            "security": repr.security.map(|s| to_hex(s.as_bytes())),
        },
        "private_data_len": usize::from(repr.private_words) * 4,
        "header_len": header_len,
        "payload_len": payload.len(),
    });
    describe_message(&mut v, repr.kind, profile, gue_bytes)?;
    if let Some(o) = outer {
        v["outer"] = o;
    }
    Ok(v)
}

/// Removes the outer IP and UDP headers (UDP destination `port`): their
/// addresses as JSON, and the GUE message they carry.
fn strip_outer(
    bytes: &[u8],
    port: u16,
    profile: WireProfile,
) -> Result<(Value, &[u8]), Box<dyn Error>> {
    let d = decapsulate(bytes, port, profile)?;
    let gue_len = match profile {
        WireProfile::Standard => d.gue.buffer_len(),
        WireProfile::EpicLegacy => legacy::HEADER_LEN,
    };
    let gue_start = d.header_len - gue_len;
    let outer = json!({ "src": d.src.to_string(), "dst": d.dst.to_string() });
    Ok((outer, &bytes[gue_start..]))
}

/// The fields of a GUE header's first word: variant, C bit, Hlen and flags
/// (zeros when there are fewer than 4 bytes).
fn first_word(gue_bytes: &[u8]) -> (u8, bool, u8, u16) {
    match gue_bytes.get(..4).unwrap_or(&[]) {
        [a, _, f0, f1] => (
            a >> 6,
            a & 0x20 != 0,
            a & 0x1f,
            u16::from_be_bytes([*f0, *f1]),
        ),
        _ => (0, false, 0, 0),
    }
}

/// Adds to `v` what the message is: a data message's inner protocol, or a
/// control message's type and, for a hello, its fields.
fn describe_message(
    v: &mut Value,
    kind: MessageKind,
    profile: WireProfile,
    gue_bytes: &[u8],
) -> Result<(), Box<dyn Error>> {
    match kind {
        MessageKind::Data(p) => {
            v["message"] = json!("data");
            v["proto"] = json!(p.number());
            v["proto_name"] = json!(match p {
                InnerProto::Ipv4 => "ipv4",
                InnerProto::Ipv6 => "ipv6",
            });
        }
        MessageKind::Control(ctype) => {
            v["message"] = json!("control");
            v["ctype"] = json!(ctype);
            let hello_kind = epic_gue::wire::HelloKind::from_ctype(ctype);
            if profile == WireProfile::Standard && hello_kind.is_some() {
                let h = HelloRepr::parse(gue_bytes)?;
                v["hello"] = json!({
                    "kind": format!("{:?}", h.kind).to_lowercase(),
                    "counter": h.counter,
                    "tenant": h.tenant.0,
                    "node": h.node.to_string(),
                    "mac": to_hex(&h.mac),
                    "authenticated": "not checked (needs the tunnel key)",
                });
            } else if profile == WireProfile::EpicLegacy {
                v["hello"] = json!({ "authenticated": false });
            }
        }
    }
    Ok(())
}

fn encode(cmd: EncodeCommand) -> Result<Vec<u8>, Box<dyn Error>> {
    match cmd {
        EncodeCommand::Data {
            tunnel,
            proto,
            payload,
            profile,
        } => {
            let payload = payload
                .as_deref()
                .map(parse_hex)
                .transpose()?
                .unwrap_or_default();
            let mut out = data_header(TunnelId(tunnel), proto, profile.into())?;
            out.extend_from_slice(&payload);
            Ok(out)
        }
        EncodeCommand::Hello {
            tunnel,
            key_file,
            key_hex,
            tenant,
            node,
            node_id,
            counter,
            profile,
        } => {
            if WireProfile::from(profile) == WireProfile::EpicLegacy {
                return Ok(legacy_header(true, TunnelId(tunnel)));
            }
            let key = hello_key(key_file, key_hex)?;
            let node = hello_node(node, node_id)?;
            let counter = counter.unwrap_or_else(epic_gue::hello::clock::wall_clock_nanos);
            let mut repr = HelloRepr {
                kind: epic_gue::wire::HelloKind::Hello,
                tunnel_id: TunnelId(tunnel),
                counter,
                tenant: TenantId(tenant),
                node,
                mac: [0; HELLO_MAC_LEN],
            };
            sign(&HelloKey::new(key), &mut repr);
            let mut out = [0u8; HELLO_LEN];
            repr.emit(&mut out);
            Ok(out.to_vec())
        }
    }
}

/// A data message header for `tunnel` carrying `proto`.
fn data_header(
    tunnel: TunnelId,
    proto: Proto,
    profile: WireProfile,
) -> Result<Vec<u8>, Box<dyn Error>> {
    match profile {
        WireProfile::Standard => {
            let proto = match proto {
                Proto::Ipv4 => InnerProto::Ipv4,
                Proto::Ipv6 => InnerProto::Ipv6,
            };
            let repr = GueRepr::data(tunnel, proto);
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut GuePacket::new_unchecked(&mut out[..]))?;
            Ok(out)
        }
        WireProfile::EpicLegacy => {
            if proto != Proto::Ipv4 {
                return Err("the EPIC legacy profile only carries IPv4".into());
            }
            Ok(legacy_header(false, tunnel))
        }
    }
}

/// An EPIC legacy header: a hello or a data message for `tunnel`.
fn legacy_header(hello: bool, tunnel: TunnelId) -> Vec<u8> {
    let mut out = [0u8; legacy::HEADER_LEN];
    legacy::emit(
        &legacy::LegacyMessage {
            hello,
            tunnel_id: tunnel,
        },
        &mut out,
    );
    out.to_vec()
}

/// The 32-byte hello key, from `--key-file` or `--key-hex`.
fn hello_key(
    key_file: Option<PathBuf>,
    key_hex: Option<String>,
) -> Result<[u8; 32], Box<dyn Error>> {
    let key_text = match (key_file, key_hex) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .map_err(|e| format!("reading key file {}: {e}", path.display()))?,
        (None, Some(hex)) => hex,
        (None, None) => return Err("a standard hello needs --key-file or --key-hex".into()),
    };
    let key: [u8; 32] = parse_hex(key_text.trim())?
        .try_into()
        .map_err(|v: Vec<u8>| format!("the key must be 32 bytes, got {}", v.len()))?;
    Ok(key)
}

/// The hello's node identity, from `--node` or `--node-id`.
fn hello_node(node: Option<String>, node_id: Option<String>) -> Result<NodeId, Box<dyn Error>> {
    let node = match (node, node_id) {
        (Some(name), _) => NodeId::from_name(&name),
        (None, Some(hex)) => NodeId(
            parse_hex(&hex)?
                .try_into()
                .map_err(|v: Vec<u8>| format!("--node-id must be 16 bytes, got {}", v.len()))?,
        ),
        (None, None) => return Err("a standard hello needs --node or --node-id".into()),
    };
    Ok(node)
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    let digits: Vec<u8> = text.bytes().filter(|b| !b" \t\n:_-".contains(b)).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "hex input has an odd number of digits ({})",
            digits.len()
        ));
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("invalid hex at byte {i}"))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("invalid hex {s:?} at byte {i}"))
        })
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(parse_hex("0x01 04:80_00").unwrap(), vec![1, 4, 0x80, 0]);
        assert!(parse_hex("123").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(to_hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn decode_data() {
        let v = decode(
            &parse_hex("01048000 0000002a 4500").unwrap(),
            WireProfile::Standard,
            None,
        )
        .unwrap();
        assert_eq!(v["tunnel_id"], 42);
        assert_eq!(v["proto"], 4);
        assert_eq!(v["payload_len"], 2);
        assert_eq!(v["profile"], "standard");
    }

    #[test]
    fn legacy_hint() {
        let bytes = parse_hex("2601a000 00000009").unwrap();
        let err = decode(&bytes, WireProfile::Standard, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--profile epic-legacy"), "{err}");
        let v = decode(&bytes, WireProfile::EpicLegacy, None).unwrap();
        assert_eq!(
            (v["tunnel_id"].as_u64(), v["message"].as_str()),
            (Some(9), Some("control"))
        );
    }
}
