//! What callers ask for and what they get back.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;

/// A transport protocol a listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One (protocol, port) an owner listens on; displayed as `TCP/53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// The protocol.
    pub protocol: Protocol,
    /// The port.
    pub port: u16,
}

impl PortSpec {
    /// A TCP port.
    pub fn tcp(port: u16) -> PortSpec {
        PortSpec {
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// A UDP port.
    pub fn udp(port: u16) -> PortSpec {
        PortSpec {
            protocol: Protocol::Udp,
            port,
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// Which families a request wants addresses in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FamilyPolicy {
    /// One IPv4 address.
    #[serde(rename = "IPv4")]
    Ipv4,
    /// One IPv6 address.
    #[serde(rename = "IPv6")]
    Ipv6,
    /// One address per family where available; at least one.
    PreferDualStack,
    /// One address per family, or nothing.
    RequireDualStack,
}

/// A request for addresses.
///
/// ```
/// use epic_ipam::{AllocationRequest, FamilyPolicy, PortSpec};
/// let dns = AllocationRequest::new("uid-1", "acme", FamilyPolicy::Ipv4)
///     .with_sharing_key("dns")
///     .with_ports([PortSpec::udp(53)]);
/// assert_eq!(dns.sharing_key.as_deref(), Some("dns"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocationRequest {
    /// Stable owner id, e.g. the gateway's uid.
    pub owner: String,
    /// The owner's tenant.
    pub tenant: String,
    /// Take addresses from this pool only (it may have `autoAssign: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Specific addresses, at most one per family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// Owners of one tenant with the same non-empty key may share an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_key: Option<String>,
    /// The (protocol, port) pairs the owner listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Which families to allocate.
    pub family: FamilyPolicy,
}

impl AllocationRequest {
    /// A request with no pool, address, key or ports.
    pub fn new(owner: impl Into<String>, tenant: impl Into<String>, family: FamilyPolicy) -> Self {
        AllocationRequest {
            owner: owner.into(),
            tenant: tenant.into(),
            pool: None,
            addresses: Vec::new(),
            sharing_key: None,
            ports: Vec::new(),
            family,
        }
    }

    /// Restricts the request to one pool.
    pub fn in_pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    /// Asks for a specific address (one per family).
    pub fn with_address(mut self, address: IpAddr) -> Self {
        self.addresses.push(address);
        self
    }

    /// Sets the sharing key.
    pub fn with_sharing_key(mut self, key: impl Into<String>) -> Self {
        self.sharing_key = Some(key.into());
        self
    }

    /// Adds listening ports.
    pub fn with_ports(mut self, ports: impl IntoIterator<Item = PortSpec>) -> Self {
        self.ports.extend(ports);
        self
    }
}

/// One address handed to an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedAddress {
    /// The address.
    pub address: IpAddr,
    /// The pool it came from.
    pub pool: String,
    /// The prefix to announce for it (the pool's aggregation).
    pub prefix: IpNet,
    /// Whether other owners hold it too.
    pub shared: bool,
}

/// The addresses an owner holds, IPv4 first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The owner.
    pub owner: String,
    /// Its tenant.
    pub tenant: String,
    /// Its addresses, IPv4 first.
    pub addresses: Vec<AllocatedAddress>,
}

/// An allocation as recorded (e.g. in a resource's status), to rebuild the
/// allocator with [`Allocator::restore`](crate::Allocator::restore).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocationRecord {
    /// The owner.
    pub owner: String,
    /// Its tenant.
    pub tenant: String,
    /// Its addresses, at most one per family.
    pub addresses: Vec<IpAddr>,
    /// Its sharing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_key: Option<String>,
    /// Its ports (they matter, and are recorded, only with a sharing key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
}

/// What [`Allocator::release`](crate::Allocator::release) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "outcome",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ReleaseOutcome {
    /// The owner held addresses; they are released.
    Released {
        /// The owner.
        owner: String,
        /// Every address it held.
        addresses: Vec<IpAddr>,
        /// Those now free (the rest are still held by sharers).
        freed: Vec<IpAddr>,
    },
    /// The owner held nothing; nothing changed.
    NotAllocated {
        /// The owner.
        owner: String,
    },
}

/// One record [`Allocator::restore`](crate::Allocator::restore) refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreConflict {
    /// The record's owner.
    pub owner: String,
    /// The address in conflict, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Why.
    pub error: IpamError,
}

/// What [`Allocator::restore`](crate::Allocator::restore) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// How many records were restored.
    pub restored: usize,
    /// One entry per refused address (or per refused record when no single
    /// address is at fault); a refused record restores nothing.
    pub conflicts: Vec<RestoreConflict>,
}
