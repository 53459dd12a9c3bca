//! Tunnel ids that cannot be guessed and do not change.
//!
//! A new tunnel's id is derived from its ends ([`TunnelKey`]) with a keyed
//! hash (HMAC-SHA-256) under a [`TunnelIdSecret`]: without the secret the id
//! of a tunnel is as hard to guess as any of 2³² − 1 values, not "the lowest
//! free one from 1". Ids already recorded are kept whatever the secret (the
//! records, not the secret, make them stable across restarts), so the
//! runtimes may use a fresh random secret per process; given the secret and
//! the records, the assignment is deterministic, as the plan must be.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::plan::TunnelKey;

/// How many derived candidates are tried before falling back to the
/// lowest free id (with fewer than 2¹⁶ tunnels the chance of needing even
/// a second candidate is below 2⁻¹⁶).
const CANDIDATES: u32 = 64;

/// The key new tunnel ids are derived under: 32 bytes, written as 64 hex
/// digits. `Debug` does not show it.
///
/// ```
/// use epic_engine::tunnel_ids::TunnelIdSecret;
///
/// let secret = TunnelIdSecret::random().unwrap();
/// assert_ne!(secret, TunnelIdSecret::random().unwrap());
/// assert_eq!(format!("{secret:?}"), "TunnelIdSecret(..)");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TunnelIdSecret([u8; 32]);

impl TunnelIdSecret {
    /// A secret from these bytes (tests; a fixed secret makes ids guessable).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        TunnelIdSecret(bytes)
    }

    /// A secret from the operating system's random source.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(TunnelIdSecret(bytes))
    }

    /// Candidate `attempt` for the tunnel `key`: never 0.
    pub fn candidate(&self, key: &TunnelKey, attempt: u32) -> u32 {
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            // HMAC takes keys of any length: 32 bytes cannot fail.
            Err(_) => return attempt.max(1),
        };
        for part in [&key.tenant, &key.cluster, &key.node, &key.gateway_node] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(&attempt.to_be_bytes());
        let out = mac.finalize().into_bytes();
        u32::from_be_bytes([out[0], out[1], out[2], out[3]]).max(1)
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TunnelIdSecret(bytes))
    }
}

impl fmt::Debug for TunnelIdSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelIdSecret(..)")
    }
}

impl Serialize for TunnelIdSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TunnelIdSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TunnelIdSecret::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits (a 32-byte secret)"))
    }
}

/// Gives every key of `wanted` that `ids` lacks an id no other tunnel has:
/// the first derived candidate that is free, else (never in practice) the
/// lowest free id. Keys are taken in `wanted`'s order.
pub fn assign<'a>(
    ids: &mut BTreeMap<TunnelKey, u32>,
    wanted: impl IntoIterator<Item = &'a TunnelKey>,
    secret: &TunnelIdSecret,
) {
    let mut used: BTreeSet<u32> = ids.values().copied().collect();
    for key in wanted {
        if ids.contains_key(key) {
            continue;
        }
        let id = (0..CANDIDATES)
            .map(|attempt| secret.candidate(key, attempt))
            .find(|id| !used.contains(id))
            .or_else(|| (1..=u32::MAX).find(|id| !used.contains(id)))
            .unwrap_or(0);
        used.insert(id);
        ids.insert(key.clone(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str) -> TunnelKey {
        TunnelKey {
            tenant: "acme".into(),
            cluster: "c1".into(),
            node: node.into(),
            gateway_node: "gw1".into(),
        }
    }

    #[test]
    fn ids_depend_on_the_secret_and_the_ends_and_are_never_zero() {
        let (a, b) = (
            TunnelIdSecret::from_bytes([1; 32]),
            TunnelIdSecret::from_bytes([2; 32]),
        );
        assert_ne!(a.candidate(&key("n1"), 0), b.candidate(&key("n1"), 0));
        assert_ne!(a.candidate(&key("n1"), 0), a.candidate(&key("n2"), 0));
        assert_eq!(a.candidate(&key("n1"), 0), a.candidate(&key("n1"), 0));
        // Length-prefixed parts: moving a character between fields changes the id.
        let shifted = TunnelKey {
            tenant: "acmec".into(),
            cluster: "1".into(),
            ..key("n1")
        };
        assert_ne!(a.candidate(&key("n1"), 0), a.candidate(&shifted, 0));
        assert!((0..1000).all(|i| a.candidate(&key(&format!("n{i}")), 0) != 0));
    }

    #[test]
    fn recorded_ids_are_kept_and_collisions_take_the_next_candidate() {
        let secret = TunnelIdSecret::from_bytes([7; 32]);
        let taken = secret.candidate(&key("n2"), 0);
        let mut ids = BTreeMap::from([(key("n1"), taken)]);
        assign(&mut ids, [&key("n1"), &key("n2")], &secret);
        assert_eq!(ids[&key("n1")], taken, "recorded id kept");
        assert_eq!(ids[&key("n2")], secret.candidate(&key("n2"), 1));
    }

    #[test]
    fn the_secret_round_trips_as_hex_and_bad_text_is_refused() {
        let secret = TunnelIdSecret::from_bytes([0xab; 32]);
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(
            serde_json::from_str::<TunnelIdSecret>(&json).unwrap(),
            secret
        );
        for bad in ["\"ab\"", &format!("\"{}\"", "zz".repeat(32)), "\"é\""] {
            let err = serde_json::from_str::<TunnelIdSecret>(bad).unwrap_err();
            assert!(err.to_string().contains("64 hex digits"), "{bad}: {err}");
        }
    }
}
