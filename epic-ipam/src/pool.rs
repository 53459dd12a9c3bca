//! Address pools: the declared form ([`PoolSpec`]), its parsed and validated
//! form ([`AddressPool`]) and a set of non-overlapping pools ([`PoolSet`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    #[serde(rename = "IPv4")]
    V4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of `address`.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The longest prefix length in this family (32 or 128).
    pub fn max_prefix_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address as a number, the same width for both families.
pub(crate) fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` numbered `value` (IPv4 values are below 2^32).
pub(crate) fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// What is wrong with one pool or exclusion entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    /// Neither a CIDR, an address nor a `start-end` range.
    #[error("not a CIDR, an address or a start-end range")]
    Malformed,
    /// A CIDR with bits set after its prefix.
    #[error("host bits set after the prefix (did you mean {network}?)")]
    HostBitsSet {
        /// The network the entry probably meant.
        network: IpNet,
    },
    /// A range whose end precedes its start.
    #[error("range end precedes its start")]
    RangeReversed,
    /// A range from one family to the other.
    #[error("range mixes IPv4 and IPv6")]
    MixedFamilies,
}

/// One pool entry: a CIDR (a bare address counts as a `/32` or `/128`) or an
/// inclusive range of addresses of one family.
///
/// ```
/// use epic_ipam::PoolEntry;
/// let range: PoolEntry = "203.0.113.10-203.0.113.20".parse().unwrap();
/// assert_eq!(range.len(), 11);
/// let cidr: PoolEntry = "2001:db8:1::/64".parse().unwrap();
/// assert_eq!(cidr.len(), 1 << 64);
/// assert!("198.51.100.7/24".parse::<PoolEntry>().is_err()); // host bits set
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEntry {
    /// A network, e.g. `198.51.100.0/24`.
    Cidr(IpNet),
    /// An inclusive range, e.g. `203.0.113.10-203.0.113.20`.
    Range {
        /// The first address.
        start: IpAddr,
        /// The last address (inclusive, not before `start`).
        end: IpAddr,
    },
}

impl PoolEntry {
    /// The entry's family.
    pub fn family(&self) -> Family {
        match self {
            PoolEntry::Cidr(net) => Family::of(net.addr()),
            PoolEntry::Range { start, .. } => Family::of(*start),
        }
    }

    /// The first and last address.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match self {
            PoolEntry::Cidr(net) => (net.network(), net.broadcast()),
            PoolEntry::Range { start, end } => (*start, *end),
        }
    }

    pub(crate) fn span(&self) -> (u128, u128) {
        let (start, end) = self.bounds();
        (to_u128(start), to_u128(end))
    }

    /// Whether `address` lies inside the entry.
    pub fn contains(&self, address: IpAddr) -> bool {
        let (start, end) = self.bounds();
        Family::of(address) == self.family() && start <= address && address <= end
    }

    /// How many addresses the entry holds (saturating at `u128::MAX` for `::/0`).
    pub fn len(&self) -> u128 {
        let (start, end) = self.span();
        (end - start).saturating_add(1)
    }

    /// Always false: an entry holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The prefix length of the smallest CIDR that covers the entry.
    pub fn covering_prefix_len(&self) -> u8 {
        let (start, end) = self.span();
        let width = u32::from(self.family().max_prefix_len());
        let differing = 128 - (start ^ end).leading_zeros();
        (width - differing.min(width)) as u8
    }
}

impl FromStr for PoolEntry {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((start, end)) = s.split_once('-') {
            let start: IpAddr = start.trim().parse().map_err(|_| EntryError::Malformed)?;
            let end: IpAddr = end.trim().parse().map_err(|_| EntryError::Malformed)?;
            if Family::of(start) != Family::of(end) {
                return Err(EntryError::MixedFamilies);
            }
            if end < start {
                return Err(EntryError::RangeReversed);
            }
            return Ok(PoolEntry::Range { start, end });
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| EntryError::Malformed)?;
            if net.addr() != net.network() {
                return Err(EntryError::HostBitsSet {
                    network: net.trunc(),
                });
            }
            return Ok(PoolEntry::Cidr(net));
        }
        let address: IpAddr = s.parse().map_err(|_| EntryError::Malformed)?;
        Ok(PoolEntry::Cidr(IpNet::from(address)))
    }
}

impl fmt::Display for PoolEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolEntry::Cidr(net) => write!(f, "{net}"),
            PoolEntry::Range { start, end } => write!(f, "{start}-{end}"),
        }
    }
}

/// The prefix lengths announced for an allocated address, per family.
///
/// `/32` and `/128` (the defaults) announce each address alone; a shorter
/// length announces the covering network instead (e.g. `24` announces
/// `198.51.100.0/24` for `198.51.100.7`). A length may not be shorter than the
/// pool entries of its family (for a range: the smallest CIDR covering it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregation {
    /// Prefix length announced for IPv4 addresses (default 32).
    #[serde(default = "default_v4_aggregation")]
    pub ipv4: u8,
    /// Prefix length announced for IPv6 addresses (default 128).
    #[serde(default = "default_v6_aggregation")]
    pub ipv6: u8,
}

fn default_v4_aggregation() -> u8 {
    32
}

fn default_v6_aggregation() -> u8 {
    128
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation {
            ipv4: 32,
            ipv6: 128,
        }
    }
}

impl Aggregation {
    /// The prefix length for `family`.
    pub fn for_family(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }
}

fn default_true() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

fn is_default_aggregation(value: &Aggregation) -> bool {
    *value == Aggregation::default()
}

/// A pool as declared (in a YAML file, later in an `AddressPool` resource).
///
/// Parse a list of them with [`PoolSet::new`]. In YAML (camelCase keys):
///
/// ```yaml
/// name: public
/// addresses: ["198.51.100.0/24", "203.0.113.10-203.0.113.20", "2001:db8:1::/64"]
/// exclude: ["198.51.100.1"]
/// avoidBuggyIps: true
/// aggregation: { ipv4: 32, ipv6: 128 }
/// autoAssign: true
/// priority: 10
/// tenants: [acme, globex]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// The pool's name, unique in its set.
    pub name: String,
    /// CIDRs, single addresses and `start-end` ranges, IPv4 and IPv6 mixed.
    pub addresses: Vec<String>,
    /// Entries (same syntax) never handed out; each must overlap the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Skip IPv4 addresses ending in `.0` or `.255`, which some clients mishandle.
    #[serde(default, skip_serializing_if = "is_false")]
    pub avoid_buggy_ips: bool,
    /// Prefix lengths announced for allocated addresses.
    #[serde(default, skip_serializing_if = "is_default_aggregation")]
    pub aggregation: Aggregation,
    /// Whether requests that name no pool may get addresses from it (default true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub auto_assign: bool,
    /// Larger is preferred; ties are broken by name (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Tenants allowed to use the pool; absent means every tenant, `[]` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<BTreeSet<String>>,
}

impl PoolSpec {
    /// A pool with these address entries and default settings.
    pub fn new<I, S>(name: impl Into<String>, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PoolSpec {
            name: name.into(),
            addresses: addresses.into_iter().map(Into::into).collect(),
            exclude: Vec::new(),
            avoid_buggy_ips: false,
            aggregation: Aggregation::default(),
            auto_assign: true,
            priority: 0,
            tenants: None,
        }
    }
}

/// One problem in a pool set; every variant names the pool.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    /// The pool at this position in the list has an empty name.
    #[error("pool #{index}: empty name")]
    EmptyName {
        /// Position in the list, from 0.
        index: usize,
    },
    /// Two pools with one name.
    #[error("pool {pool:?}: name used more than once")]
    DuplicateName {
        /// The name.
        pool: String,
    },
    /// A pool with no address entries.
    #[error("pool {pool:?}: no addresses")]
    NoAddresses {
        /// The pool.
        pool: String,
    },
    /// An address entry that does not parse.
    #[error("pool {pool:?}: address entry {entry:?}: {error}")]
    InvalidEntry {
        /// The pool.
        pool: String,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        error: EntryError,
    },
    /// An exclusion that does not parse.
    #[error("pool {pool:?}: exclusion {entry:?}: {error}")]
    InvalidExclusion {
        /// The pool.
        pool: String,
        /// The exclusion as written.
        entry: String,
        /// What is wrong with it.
        error: EntryError,
    },
    /// An exclusion that shares no address with the pool (probably a typo).
    #[error("pool {pool:?}: exclusion {entry:?} is outside the pool")]
    ExclusionOutsidePool {
        /// The pool.
        pool: String,
        /// The exclusion as written.
        entry: String,
    },
    /// Two entries of one pool overlap.
    #[error("pool {pool:?}: entries {entry:?} and {other:?} overlap")]
    EntriesOverlap {
        /// The pool.
        pool: String,
        /// One entry.
        entry: String,
        /// The entry it overlaps.
        other: String,
    },
    /// Two pools overlap.
    #[error("pool {pool:?}: entry {entry:?} overlaps pool {other_pool:?} entry {other_entry:?}")]
    PoolsOverlap {
        /// One pool.
        pool: String,
        /// Its entry.
        entry: String,
        /// The other pool.
        other_pool: String,
        /// The other pool's entry.
        other_entry: String,
    },
    /// An aggregation length longer than the family allows.
    #[error("pool {pool:?}: aggregation /{length} is too long for {family}")]
    AggregationTooLong {
        /// The pool.
        pool: String,
        /// The family.
        family: Family,
        /// The length given.
        length: u8,
    },
    /// An aggregation length shorter than an entry, so it would announce
    /// addresses outside the pool.
    #[error(
        "pool {pool:?}: aggregation /{length} is shorter than entry {entry:?} (at least /{minimum})"
    )]
    AggregationTooShort {
        /// The pool.
        pool: String,
        /// The entry.
        entry: String,
        /// The length given.
        length: u8,
        /// The shortest length the entry allows.
        minimum: u8,
    },
    /// Exclusions (and `avoidBuggyIps`) leave nothing to allocate.
    #[error("pool {pool:?}: exclusions leave no usable address")]
    NoUsableAddresses {
        /// The pool.
        pool: String,
    },
}

/// Every problem found in a pool set (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", join_errors(.errors))]
pub struct PoolSetError {
    /// The problems, in pool order.
    pub errors: Vec<PoolError>,
}

fn join_errors(errors: &[PoolError]) -> String {
    let mut out = String::new();
    if errors.len() > 1 {
        out.push_str(&format!("{} problems: ", errors.len()));
    }
    for (i, error) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&error.to_string());
    }
    out
}

/// The allocatable addresses of one family in a pool: sorted, disjoint,
/// non-adjacent inclusive intervals, less `.0`/`.255` when asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usable {
    pub(crate) ranges: Vec<(u128, u128)>,
    pub(crate) avoid_buggy: bool,
}

fn is_buggy(value: u128) -> bool {
    matches!(value & 0xff, 0 | 0xff)
}

/// How many values in `[start, end]` are `≡ residue (mod 256)`.
fn count_residue(start: u128, end: u128, residue: u128) -> u128 {
    let below = |x: u128| -> u128 {
        // values ≡ residue in [0, x)
        if x > residue {
            (x - residue - 1) / 256 + 1
        } else {
            0
        }
    };
    below(end.saturating_add(1)) - below(start)
        + u128::from(end == u128::MAX && (end & 0xff) == residue)
}

impl Usable {
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty() || self.size() == 0
    }

    /// Number of usable addresses (saturating).
    pub(crate) fn size(&self) -> u128 {
        let mut total: u128 = 0;
        for &(start, end) in &self.ranges {
            let mut n = (end - start).saturating_add(1);
            if self.avoid_buggy {
                n = n
                    .saturating_sub(count_residue(start, end, 0) + count_residue(start, end, 0xff));
            }
            total = total.saturating_add(n);
        }
        total
    }

    pub(crate) fn contains(&self, value: u128) -> bool {
        if self.avoid_buggy && is_buggy(value) {
            return false;
        }
        let i = self.ranges.partition_point(|&(_, end)| end < value);
        self.ranges.get(i).is_some_and(|&(start, _)| start <= value)
    }

    /// The smallest usable value `>= value`.
    pub(crate) fn next_at_or_after(&self, value: u128) -> Option<u128> {
        let mut i = self.ranges.partition_point(|&(_, end)| end < value);
        let mut candidate = value;
        while let Some(&(start, end)) = self.ranges.get(i) {
            candidate = candidate.max(start);
            if self.avoid_buggy {
                match candidate & 0xff {
                    0 => candidate = candidate.checked_add(1)?,
                    0xff => candidate = candidate.checked_add(2)?,
                    _ => {}
                }
            }
            if candidate <= end {
                return Some(candidate);
            }
            i += 1;
        }
        None
    }

    /// The largest usable value `<= value`.
    pub(crate) fn prev_at_or_before(&self, value: u128) -> Option<u128> {
        let mut i = self.ranges.partition_point(|&(start, _)| start <= value);
        let mut candidate = value;
        while i > 0 {
            let (start, end) = self.ranges[i - 1];
            candidate = candidate.min(end);
            if self.avoid_buggy {
                match candidate & 0xff {
                    0 => candidate = candidate.checked_sub(2)?,
                    0xff => candidate = candidate.checked_sub(1)?,
                    _ => {}
                }
            }
            if candidate >= start {
                return Some(candidate);
            }
            i -= 1;
        }
        None
    }

    /// The smallest usable value.
    pub(crate) fn first(&self) -> Option<u128> {
        self.next_at_or_after(0)
    }
}

/// Subtracts `cut` from sorted disjoint `ranges`.
fn subtract(ranges: &[(u128, u128)], cut: (u128, u128)) -> Vec<(u128, u128)> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(start, end) in ranges {
        if end < cut.0 || start > cut.1 {
            out.push((start, end));
            continue;
        }
        if start < cut.0 {
            out.push((start, cut.0 - 1));
        }
        if end > cut.1 {
            out.push((cut.1 + 1, end));
        }
    }
    out
}

/// A parsed, validated pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    spec: PoolSpec,
    entries: Vec<PoolEntry>,
    exclusions: Vec<PoolEntry>,
    usable: [Usable; 2],
}

impl AddressPool {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The declaration it was parsed from.
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    /// The parsed address entries, in declaration order.
    pub fn entries(&self) -> &[PoolEntry] {
        &self.entries
    }

    /// The parsed exclusions, in declaration order.
    pub fn exclusions(&self) -> &[PoolEntry] {
        &self.exclusions
    }

    /// The families the pool has usable addresses in, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|f| self.has_family(*f))
            .collect()
    }

    /// Whether the pool has usable addresses of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        !self.usable[family.index()].is_empty()
    }

    /// How many addresses of `family` can be allocated (saturating at `u128::MAX`).
    pub fn size(&self, family: Family) -> u128 {
        self.usable[family.index()].size()
    }

    /// Whether `address` can be allocated from this pool (inside an entry,
    /// not excluded, not a skipped `.0`/`.255`).
    pub fn contains(&self, address: IpAddr) -> bool {
        self.usable[Family::of(address).index()].contains(to_u128(address))
    }

    /// Whether `address` lies inside one of the pool's entries (excluded or not).
    pub fn covers(&self, address: IpAddr) -> bool {
        self.entries.iter().any(|e| e.contains(address))
    }

    /// Whether `tenant` may use the pool.
    pub fn permits(&self, tenant: &str) -> bool {
        self.spec
            .tenants
            .as_ref()
            .is_none_or(|t| t.contains(tenant))
    }

    /// Larger is preferred.
    pub fn priority(&self) -> i32 {
        self.spec.priority
    }

    /// Whether requests that name no pool may use it.
    pub fn auto_assign(&self) -> bool {
        self.spec.auto_assign
    }

    /// Whether `.0` and `.255` IPv4 addresses are skipped.
    pub fn avoid_buggy_ips(&self) -> bool {
        self.spec.avoid_buggy_ips
    }

    /// The announced prefix lengths.
    pub fn aggregation(&self) -> Aggregation {
        self.spec.aggregation
    }

    /// The prefix announced for `address` (the address itself at `/32`/`/128`).
    pub fn announced_prefix(&self, address: IpAddr) -> IpNet {
        let len = self.spec.aggregation.for_family(Family::of(address));
        IpNet::new(address, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(address))
    }

    pub(crate) fn usable(&self, family: Family) -> &Usable {
        &self.usable[family.index()]
    }

    /// Parses one pool, pushing every problem into `errors`.
    fn parse(spec: &PoolSpec, index: usize, errors: &mut Vec<PoolError>) -> Option<AddressPool> {
        let before = errors.len();
        let pool = spec.name.clone();
        if spec.name.trim().is_empty() {
            errors.push(PoolError::EmptyName { index });
        }
        if spec.addresses.is_empty() {
            errors.push(PoolError::NoAddresses { pool: pool.clone() });
        }
        let mut entries = Vec::with_capacity(spec.addresses.len());
        for raw in &spec.addresses {
            match raw.parse::<PoolEntry>() {
                Ok(entry) => entries.push(entry),
                Err(error) => errors.push(PoolError::InvalidEntry {
                    pool: pool.clone(),
                    entry: raw.clone(),
                    error,
                }),
            }
        }
        let mut exclusions = Vec::with_capacity(spec.exclude.len());
        for raw in &spec.exclude {
            match raw.parse::<PoolEntry>() {
                Ok(entry) => {
                    let (start, end) = entry.span();
                    let touches = entries.iter().any(|e| {
                        let (s, t) = e.span();
                        e.family() == entry.family() && s <= end && start <= t
                    });
                    if touches {
                        exclusions.push(entry);
                    } else {
                        errors.push(PoolError::ExclusionOutsidePool {
                            pool: pool.clone(),
                            entry: raw.clone(),
                        });
                    }
                }
                Err(error) => errors.push(PoolError::InvalidExclusion {
                    pool: pool.clone(),
                    entry: raw.clone(),
                    error,
                }),
            }
        }
        for family in Family::ALL {
            let length = spec.aggregation.for_family(family);
            if length > family.max_prefix_len() {
                errors.push(PoolError::AggregationTooLong {
                    pool: pool.clone(),
                    family,
                    length,
                });
                continue;
            }
            for (raw, entry) in spec
                .addresses
                .iter()
                .filter_map(|r| Some((r, r.parse::<PoolEntry>().ok()?)))
            {
                let minimum = entry.covering_prefix_len();
                if entry.family() == family && length < minimum {
                    errors.push(PoolError::AggregationTooShort {
                        pool: pool.clone(),
                        entry: raw.clone(),
                        length,
                        minimum,
                    });
                }
            }
        }
        if errors.len() > before {
            return None;
        }
        let mut usable: [Usable; 2] = Default::default();
        for family in Family::ALL {
            let mut spans: Vec<(u128, u128)> = entries
                .iter()
                .filter(|e| e.family() == family)
                .map(PoolEntry::span)
                .collect();
            spans.sort_unstable();
            // Merge adjacent spans (overlaps are reported by the set).
            let mut merged: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
            for (start, end) in spans {
                match merged.last_mut() {
                    Some(last) if last.1.checked_add(1).is_none_or(|n| n >= start) => {
                        last.1 = last.1.max(end)
                    }
                    _ => merged.push((start, end)),
                }
            }
            for exclusion in exclusions.iter().filter(|e| e.family() == family) {
                merged = subtract(&merged, exclusion.span());
            }
            usable[family.index()] = Usable {
                ranges: merged,
                avoid_buggy: spec.avoid_buggy_ips && family == Family::V4,
            };
        }
        if usable.iter().all(Usable::is_empty) {
            errors.push(PoolError::NoUsableAddresses { pool });
            return None;
        }
        Some(AddressPool {
            spec: spec.clone(),
            entries,
            exclusions,
            usable,
        })
    }
}

/// A validated set of pools that do not overlap, in priority order.
///
/// ```
/// use epic_ipam::{Family, PoolSet, PoolSpec};
/// let pools = PoolSet::new([
///     PoolSpec::new("public", ["198.51.100.0/24", "2001:db8:1::/64"]),
///     PoolSpec::new("overlapping", ["198.51.100.128/25"]),
/// ]);
/// let err = pools.unwrap_err();
/// assert!(err.to_string().contains("overlaps pool \"public\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<PoolSpec>", into = "Vec<PoolSpec>")]
pub struct PoolSet {
    /// Highest priority first, then by name.
    pools: Vec<AddressPool>,
    /// Every entry as (family, start, end, pool index), sorted.
    index: Vec<(Family, u128, u128, usize)>,
}

impl TryFrom<Vec<PoolSpec>> for PoolSet {
    type Error = PoolSetError;

    fn try_from(specs: Vec<PoolSpec>) -> Result<Self, Self::Error> {
        PoolSet::new(specs)
    }
}

impl From<PoolSet> for Vec<PoolSpec> {
    fn from(set: PoolSet) -> Self {
        set.specs()
    }
}

impl PoolSet {
    /// Parses and validates pools; reports every problem found, naming the
    /// pool and the offending entry.
    pub fn new(specs: impl IntoIterator<Item = PoolSpec>) -> Result<PoolSet, PoolSetError> {
        let specs: Vec<PoolSpec> = specs.into_iter().collect();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        let mut pools = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if !spec.name.is_empty() && !seen.insert(spec.name.as_str()) {
                errors.push(PoolError::DuplicateName {
                    pool: spec.name.clone(),
                });
            }
            if let Some(pool) = AddressPool::parse(spec, index, &mut errors) {
                pools.push(pool);
            }
        }
        // Overlaps, within and across pools: sweep entries sorted by start.
        // Every entry that parses counts, even in a pool with other problems,
        // so that one run reports everything.
        let mut spans: Vec<(Family, u128, u128, &str, String)> = Vec::new();
        for spec in &specs {
            for raw in &spec.addresses {
                if let Ok(entry) = raw.parse::<PoolEntry>() {
                    let (start, end) = entry.span();
                    spans.push((entry.family(), start, end, spec.name.as_str(), raw.clone()));
                }
            }
        }
        spans.sort_by_key(|a| (a.0, a.1, a.2));
        let mut widest: Option<usize> = None;
        for i in 0..spans.len() {
            if let Some(w) = widest {
                let (family, start, _, pool, ref entry) = spans[i];
                let (other_family, _, other_end, other_pool, ref other_entry) = spans[w];
                if family == other_family && start <= other_end {
                    errors.push(if pool == other_pool {
                        PoolError::EntriesOverlap {
                            pool: pool.to_owned(),
                            entry: entry.clone(),
                            other: other_entry.clone(),
                        }
                    } else {
                        PoolError::PoolsOverlap {
                            pool: pool.to_owned(),
                            entry: entry.clone(),
                            other_pool: other_pool.to_owned(),
                            other_entry: other_entry.clone(),
                        }
                    });
                }
                if family != other_family || spans[i].2 > other_end {
                    widest = Some(i);
                }
            } else {
                widest = Some(i);
            }
        }
        if !errors.is_empty() {
            return Err(PoolSetError { errors });
        }
        pools.sort_by(|a, b| {
            b.priority()
                .cmp(&a.priority())
                .then_with(|| a.name().cmp(b.name()))
        });
        let mut index: Vec<(Family, u128, u128, usize)> = pools
            .iter()
            .enumerate()
            .flat_map(|(i, pool)| {
                pool.entries.iter().map(move |e| {
                    let (start, end) = e.span();
                    (e.family(), start, end, i)
                })
            })
            .collect();
        index.sort_unstable();
        Ok(PoolSet { pools, index })
    }

    /// The pools, highest priority first (ties by name).
    pub fn pools(&self) -> &[AddressPool] {
        &self.pools
    }

    /// The pool called `name`.
    pub fn get(&self, name: &str) -> Option<&AddressPool> {
        self.pools.iter().find(|p| p.name() == name)
    }

    /// The pool one of whose entries covers `address` (excluded or not).
    pub fn pool_of(&self, address: IpAddr) -> Option<&AddressPool> {
        self.index_of(address).map(|i| &self.pools[i])
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name() == name)
    }

    pub(crate) fn index_of(&self, address: IpAddr) -> Option<usize> {
        let family = Family::of(address);
        let value = to_u128(address);
        let i = self
            .index
            .partition_point(|&(f, start, _, _)| (f, start) <= (family, value));
        let &(f, _, end, pool) = self.index.get(i.checked_sub(1)?)?;
        (f == family && value <= end).then_some(pool)
    }

    /// The declarations, in priority order.
    pub fn specs(&self) -> Vec<PoolSpec> {
        self.pools.iter().map(|p| p.spec.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> Result<PoolEntry, EntryError> {
        s.parse()
    }

    #[test]
    fn entries_parse() {
        assert_eq!(entry("198.51.100.0/24").unwrap().len(), 256);
        assert_eq!(entry(" 203.0.113.10 - 203.0.113.20 ").unwrap().len(), 11);
        assert_eq!(entry("192.0.2.7").unwrap().len(), 1);
        assert_eq!(entry("2001:db8::/64").unwrap().len(), 1 << 64);
        assert_eq!(entry("::/0").unwrap().len(), u128::MAX);
        assert_eq!(entry("nope"), Err(EntryError::Malformed));
        assert_eq!(entry("198.51.100.0/33"), Err(EntryError::Malformed));
        assert_eq!(
            entry("203.0.113.20-203.0.113.10"),
            Err(EntryError::RangeReversed)
        );
        assert_eq!(
            entry("203.0.113.20-2001:db8::1"),
            Err(EntryError::MixedFamilies)
        );
        assert!(matches!(
            entry("198.51.100.7/24"),
            Err(EntryError::HostBitsSet { .. })
        ));
        assert_eq!(
            entry("203.0.113.10-203.0.113.20")
                .unwrap()
                .covering_prefix_len(),
            27
        );
        assert_eq!(entry("192.0.2.0/24").unwrap().covering_prefix_len(), 24);
        assert_eq!(entry("::/0").unwrap().covering_prefix_len(), 0);
    }

    #[test]
    fn set_rejects_naming_offenders() {
        let mut bad = PoolSpec::new(
            "bad",
            [
                "198.51.100.0/24",
                "203.0.113.20-203.0.113.10",
                "x",
                "198.51.100.128/25",
            ],
        );
        bad.exclude = vec!["192.0.2.1".into()];
        let other = PoolSpec::new("other", ["198.51.100.5", "2001:db8::/64"]);
        let err = PoolSet::new([bad, other]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "pool \"bad\": address entry \"203.0.113.20-203.0.113.10\": range end precedes"
            ),
            "{text}"
        );
        assert!(text.contains("address entry \"x\""), "{text}");
        assert!(
            text.contains("exclusion \"192.0.2.1\" is outside the pool"),
            "{text}"
        );
        // the whole set is rejected because "bad" is invalid; fix it and see overlaps
        let bad = PoolSpec::new("bad", ["198.51.100.0/24", "198.51.100.128/25"]);
        let other = PoolSpec::new("other", ["198.51.100.5", "2001:db8::/64"]);
        let err = PoolSet::new([bad, other]).unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
        assert!(err.errors.contains(&PoolError::EntriesOverlap {
            pool: "bad".into(),
            entry: "198.51.100.128/25".into(),
            other: "198.51.100.0/24".into()
        }));
        assert!(err.errors.contains(&PoolError::PoolsOverlap {
            pool: "other".into(),
            entry: "198.51.100.5".into(),
            other_pool: "bad".into(),
            other_entry: "198.51.100.0/24".into()
        }));
    }

    #[test]
    fn duplicate_and_empty() {
        let err = PoolSet::new([
            PoolSpec::new("a", ["192.0.2.0/25"]),
            PoolSpec::new("a", ["192.0.2.128/25"]),
            PoolSpec::new("", Vec::<String>::new()),
        ])
        .unwrap_err();
        assert!(
            err.errors
                .contains(&PoolError::DuplicateName { pool: "a".into() })
        );
        assert!(err.errors.contains(&PoolError::EmptyName { index: 2 }));
        assert!(
            err.errors
                .contains(&PoolError::NoAddresses { pool: "".into() })
        );
    }

    #[test]
    fn exclusions_and_buggy_sizes() {
        let mut spec = PoolSpec::new("p", ["192.0.2.0/24", "198.51.100.0-198.51.101.255"]);
        spec.exclude = vec!["192.0.2.0/26".into(), "198.51.101.0-198.51.101.9".into()];
        spec.avoid_buggy_ips = true;
        let set = PoolSet::new([spec]).unwrap();
        let pool = &set.pools()[0];
        // 192.0.2.64-255 = 192 minus .255; 198.51.100.0-255 minus .0/.255 = 254; 198.51.101.10-255 = 246 minus .255
        assert_eq!(pool.size(Family::V4), 191 + 254 + 245);
        assert!(!pool.contains("192.0.2.10".parse().unwrap()));
        assert!(pool.covers("192.0.2.10".parse().unwrap()));
        assert!(!pool.contains("198.51.100.255".parse().unwrap()));
        assert!(!pool.contains("198.51.101.0".parse().unwrap()));
        assert!(pool.contains("198.51.101.10".parse().unwrap()));
        let usable = pool.usable(Family::V4);
        assert_eq!(usable.first(), Some(to_u128("192.0.2.64".parse().unwrap())));
        assert_eq!(
            usable.next_at_or_after(to_u128("192.0.2.255".parse().unwrap())),
            Some(to_u128("198.51.100.1".parse().unwrap()))
        );
        assert_eq!(
            usable.prev_at_or_before(to_u128("198.51.100.0".parse().unwrap())),
            Some(to_u128("192.0.2.254".parse().unwrap()))
        );
        assert_eq!(
            usable.prev_at_or_before(to_u128("192.0.2.63".parse().unwrap())),
            None
        );
    }

    #[test]
    fn all_excluded_is_an_error() {
        let mut spec = PoolSpec::new("p", ["192.0.2.0/31"]);
        spec.exclude = vec!["192.0.2.0/31".into()];
        assert_eq!(
            PoolSet::new([spec]).unwrap_err().errors,
            vec![PoolError::NoUsableAddresses { pool: "p".into() }]
        );
    }

    #[test]
    fn aggregation_rules() {
        let mut spec = PoolSpec::new("p", ["198.51.100.0/24", "2001:db8::/64"]);
        spec.aggregation = Aggregation { ipv4: 24, ipv6: 64 };
        let set = PoolSet::new([spec.clone()]).unwrap();
        assert_eq!(
            set.pools()[0].announced_prefix("198.51.100.77".parse().unwrap()),
            "198.51.100.0/24".parse::<IpNet>().unwrap()
        );
        spec.aggregation.ipv4 = 23;
        spec.aggregation.ipv6 = 129;
        let errors = PoolSet::new([spec]).unwrap_err().errors;
        assert!(errors.contains(&PoolError::AggregationTooShort {
            pool: "p".into(),
            entry: "198.51.100.0/24".into(),
            length: 23,
            minimum: 24
        }));
        assert!(errors.contains(&PoolError::AggregationTooLong {
            pool: "p".into(),
            family: Family::V6,
            length: 129
        }));
    }

    #[test]
    fn priority_order_and_lookup() {
        let mut low = PoolSpec::new("low", ["192.0.2.0/24"]);
        low.priority = -1;
        let mut high = PoolSpec::new("high", ["198.51.100.0/24"]);
        high.priority = 5;
        let b = PoolSpec::new("b", ["203.0.113.0/24"]);
        let a = PoolSpec::new("a", ["2001:db8::/48"]);
        let set = PoolSet::new([low, high, b, a]).unwrap();
        let names: Vec<&str> = set.pools().iter().map(AddressPool::name).collect();
        assert_eq!(names, ["high", "a", "b", "low"]);
        assert_eq!(
            set.pool_of("203.0.113.9".parse().unwrap()).unwrap().name(),
            "b"
        );
        assert_eq!(
            set.pool_of("2001:db8:0:ffff::1".parse().unwrap())
                .unwrap()
                .name(),
            "a"
        );
        assert!(set.pool_of("2001:db9::1".parse().unwrap()).is_none());
        assert!(set.pool_of("192.0.1.255".parse().unwrap()).is_none());
    }

    #[test]
    fn count_residue_edges() {
        assert_eq!(count_residue(0, 255, 0), 1);
        assert_eq!(count_residue(0, 255, 255), 1);
        assert_eq!(count_residue(1, 254, 0), 0);
        assert_eq!(count_residue(0, 1023, 255), 4);
        assert_eq!(count_residue(256, 256, 0), 1);
    }
}
