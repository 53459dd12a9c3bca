//! Why an allocation (or a restored record) was refused.

use std::net::IpAddr;

use serde::Serialize;
use thiserror::Error;

use crate::pool::Family;
use crate::request::{FamilyPolicy, PortSpec};

/// Why [`Allocator::allocate`](crate::Allocator::allocate) or a restored
/// record was refused. Serializes with a `kind` tag.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
pub enum IpamError {
    /// The request or record has an empty owner id.
    #[error("empty owner id")]
    EmptyOwner,
    /// The request or record has an empty tenant.
    #[error("owner {owner:?}: empty tenant")]
    EmptyTenant {
        /// The owner.
        owner: String,
    },
    /// The owner already holds addresses; release them first.
    #[error("owner {owner:?} already holds {}", list(.addresses))]
    AlreadyAllocated {
        /// The owner.
        owner: String,
        /// What it holds.
        addresses: Vec<IpAddr>,
    },
    /// The request names a pool that does not exist.
    #[error("no pool named {pool:?}")]
    UnknownPool {
        /// The name asked for.
        pool: String,
    },
    /// The tenant may not use the pool.
    #[error("tenant {tenant:?} may not use pool {pool:?}")]
    TenantNotPermitted {
        /// The tenant.
        tenant: String,
        /// The pool.
        pool: String,
    },
    /// The address is in no pool at all.
    #[error("address {address} is not in any pool")]
    NotInAnyPool {
        /// The address.
        address: IpAddr,
    },
    /// The address is not in the pool the request names.
    #[error("address {address} is not in the requested pool {pool:?}")]
    NotInRequestedPool {
        /// The address.
        address: IpAddr,
        /// The requested pool.
        pool: String,
    },
    /// The address is in a pool but excluded (or a skipped `.0`/`.255`).
    #[error("address {address} is excluded from pool {pool:?}")]
    AddressExcluded {
        /// The address.
        address: IpAddr,
        /// The pool covering it.
        pool: String,
    },
    /// The address is held by owners that may not share it with this one
    /// (no sharing key, a different key, or another tenant).
    #[error("address {address} is taken by {}", names(.owners))]
    AddressTaken {
        /// The address.
        address: IpAddr,
        /// Who holds it.
        owners: Vec<String>,
    },
    /// The sharing keys match but some (protocol, port) pairs are used by both.
    #[error("address {address} shared with {} conflicts on ports {}", names(.owners), list(.ports))]
    SharingConflict {
        /// The address.
        address: IpAddr,
        /// The holders whose ports overlap.
        owners: Vec<String>,
        /// The ports in conflict.
        ports: Vec<PortSpec>,
    },
    /// Every candidate pool is full in this family.
    #[error("pool {} exhausted for {family}", names(.pools))]
    PoolExhausted {
        /// The family.
        family: Family,
        /// The pools tried, in order.
        pools: Vec<String>,
    },
    /// No pool this request may use has addresses of the family.
    #[error("no {family} addresses available to tenant {tenant:?}{}", pool.as_ref().map(|p| format!(" in pool {p:?}")).unwrap_or_default())]
    FamilyNotAvailable {
        /// The family.
        family: Family,
        /// The tenant.
        tenant: String,
        /// The requested pool, if any.
        pool: Option<String>,
    },
    /// More than one specific address of one family.
    #[error("more than one {family} address requested")]
    DuplicateFamily {
        /// The family.
        family: Family,
    },
    /// A specific address of a family the policy does not ask for.
    #[error("address {address} is not of a family that {policy:?} asks for")]
    FamilyNotRequested {
        /// The address.
        address: IpAddr,
        /// The request's policy.
        policy: FamilyPolicy,
    },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
