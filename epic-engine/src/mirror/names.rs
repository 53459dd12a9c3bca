//! Object identities and platform names: the snapshot read in sorted
//! order, names cleaned to DNS-1123 labels (hashed when that was lossy or
//! contested) and the metadata every mirrored object carries.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::ObjectMeta;

use super::{
    CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MirrorConfig, SHARING_KEY_ANNOTATION,
    SOURCE_ANNOTATION, Skipped,
};

const MAX_NAME: usize = 63;
const HASH_LEN: usize = 8;

/// The object's name (empty when it has none).
pub(super) fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The object's namespace; `default` when it has none.
pub(super) fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// The object's uid (empty when it has none).
pub(super) fn uid_of(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

/// A user object's identity: `(namespace, name)`.
pub(super) type Key = (String, String);

/// The object's [`Key`].
pub(super) fn key_of(meta: &ObjectMeta) -> Key {
    (namespace_of(meta).to_owned(), name_of(meta).to_owned())
}

/// The objects sorted by (namespace, name, uid), one per namespace/name.
pub(super) fn sorted<T>(items: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    v.sort_by(|a, b| {
        let (a, b) = (meta(a), meta(b));
        (namespace_of(a), name_of(a), uid_of(a)).cmp(&(namespace_of(b), name_of(b), uid_of(b)))
    });
    v.dedup_by(|later, earlier| key_of(meta(*later)) == key_of(meta(*earlier)));
    v
}

/// FNV-1a, 64 bits: stable across releases and platforms.
fn fnv1a(data: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// 8 hex digits of the hash of `identity`.
fn short_hash(identity: &str) -> String {
    let h = fnv1a(identity);
    format!("{:08x}", (h ^ (h >> 32)) & 0xffff_ffff)
}

/// `base` made a DNS-1123 label; `None` when that was lossy or too long.
fn clean_label(base: &str) -> Result<String, String> {
    let mapped: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches('-').to_owned();
    if trimmed == base && !trimmed.is_empty() && trimmed.len() <= MAX_NAME {
        Ok(trimmed)
    } else {
        Err(trimmed)
    }
}

/// `cleaned` cut to leave room for `-<hash>`, with the hash of `identity`.
fn hashed_label(cleaned: &str, identity: &str) -> String {
    let hash = short_hash(identity);
    // `cleaned` is ASCII: byte slicing is character slicing.
    let keep = MAX_NAME - HASH_LEN - 1;
    let prefix = cleaned.get(..keep.min(cleaned.len())).unwrap_or("");
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Whether `s` is a DNS-1123 label (lowercase alphanumerics and `-`,
/// alphanumeric at both ends, 1 to 63 characters).
pub fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Whether `s` is a DNS-1123 subdomain (what Kubernetes allows as a node
/// name): dot-separated DNS-1123 labels, 253 characters at most.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A label value for `s`: itself if valid, else a cleaned, hashed form.
/// `value` as a valid label value (what the cluster label holds).
pub fn label_value(s: &str) -> String {
    let valid = s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if valid {
        s.to_owned()
    } else {
        let cleaned = match clean_label(&s.to_ascii_lowercase()) {
            Ok(c) | Err(c) => c,
        };
        hashed_label(&cleaned, s)
    }
}

/// One object that wants a platform name.
#[derive(Clone)]
pub(super) struct NameClaim {
    /// `Kind/namespace/name`.
    pub(super) identity: String,
    /// The wanted name, before cleaning.
    pub(super) base: String,
    /// Creation time (older wins a contested name).
    pub(super) created: Option<Time>,
}

impl NameClaim {
    /// The claim of the user object `kind` `ns/name` created at `created`
    /// for the platform name `<prefix><ns>-<name>`.
    pub(super) fn new(
        kind: &str,
        prefix: &str,
        ns: &str,
        name: &str,
        created: &Option<Time>,
    ) -> Self {
        NameClaim {
            identity: format!("{kind}/{ns}/{name}"),
            base: format!("{prefix}{ns}-{name}"),
            created: created.clone(),
        }
    }
}

/// Names for the claims of one platform kind, by identity.
pub(super) fn assign_names(
    claims: &[NameClaim],
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<String, String> {
    let mut order: Vec<&NameClaim> = claims.iter().collect();
    order.sort_by(|a, b| (&a.created, &a.identity).cmp(&(&b.created, &b.identity)));
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut names = BTreeMap::new();
    // First pass: names that are clean keep them, oldest first; the rest
    // wait for the second pass so a hashed name never takes a clean one.
    let mut later = Vec::new();
    for c in order {
        match clean_label(&c.base) {
            Ok(name) if !used.contains(&name) => {
                used.insert(name.clone());
                names.insert(c.identity.clone(), name);
            }
            Ok(name) | Err(name) => later.push((c, name)),
        }
    }
    for (c, cleaned) in later {
        let name = hashed_label(&cleaned, &c.identity);
        if used.insert(name.clone()) {
            names.insert(c.identity.clone(), name);
        } else {
            skipped.push(Skipped {
                object: c.identity.replacen('/', " ", 1),
                reason: format!("platform name {name} is already taken"),
            });
        }
    }
    names
}

/// The metadata of a platform object: its name in the tenant's namespace,
/// the cluster and managed-by labels, and the source annotation.
pub(super) fn platform_meta(
    name: String,
    config: &MirrorConfig,
    cluster: &str,
    identity: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(config.tenant_namespace.clone()),
        labels: Some(BTreeMap::from([
            (CLUSTER_LABEL.to_owned(), label_value(cluster)),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ])),
        annotations: Some(BTreeMap::from([(
            SOURCE_ANNOTATION.to_owned(),
            identity.to_owned(),
        )])),
        ..Default::default()
    }
}

/// The sharing key the object's annotation asks for, if any.
pub(super) fn sharing_key(meta: &ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(SHARING_KEY_ANNOTATION))
        .filter(|k| !k.is_empty())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn labels_are_cleaned_or_hashed() {
        assert_eq!(clean_label("default-web"), Ok("default-web".into()));
        assert_eq!(clean_label("default-my.gw"), Err("default-my-gw".into()));
        assert_eq!(clean_label("-x-"), Err("x".into()));
        let long = "a".repeat(80);
        let hashed = hashed_label(&long, "Service/a/b");
        assert_eq!(hashed.len(), 63);
        assert!(is_dns1123_label(&hashed));
        assert_eq!(hashed_label("", "x").len(), HASH_LEN);
        assert!(is_dns1123_label(&hashed_label("---", "x")));
        assert_ne!(hashed_label("a", "x"), hashed_label("a", "y"));
    }

    #[test]
    fn label_values_stay_valid() {
        assert_eq!(label_value("c1"), "c1");
        assert_eq!(label_value("prod.eu_1"), "prod.eu_1");
        let odd = label_value("https://Cluster/One");
        assert!(
            odd.len() <= MAX_NAME && odd.starts_with("https---cluster-one-"),
            "{odd}"
        );
        assert!(label_value(&"x".repeat(100)).len() <= MAX_NAME);
    }
}
