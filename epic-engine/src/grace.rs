//! Released addresses are held back for a grace period before anyone else
//! gets them: clients, DNS caches and BGP peers still send traffic to an
//! address for a while after its gateway is gone, and that traffic must not
//! reach another tenant's gateway.
//!
//! When a plan releases the last holder of an address (its gateway is
//! gone), the address is recorded as a [`ReleasedAddress`]
//! ([`crate::plan::Recorded::released`]; in Kubernetes mode the pool's
//! status) and held in the allocator by a placeholder owner until
//! `released_at + grace`. Only the same tenant may take it back within the
//! grace period, by asking for it (`spec.addresses`). The placeholders never
//! leave the plan and do not count against the tenant's address limit.

use std::collections::BTreeSet;
use std::net::IpAddr;

use epic_ipam::{AllocationRecord, Allocator};

use epic_model::ReleasedAddress;

/// The owner prefix of the placeholders that hold addresses back.
const OWNER_PREFIX: &str = "held-back/";

/// The placeholder owner of `address`.
fn owner(address: IpAddr) -> String {
    format!("{OWNER_PREFIX}{address}")
}

/// Whether `owner` is a placeholder (not a gateway).
pub(crate) fn is_placeholder(owner: &str) -> bool {
    owner.starts_with(OWNER_PREFIX)
}

/// The addresses held back after this plan's releases: the recorded ones
/// still within `grace` seconds of `now` and not held by a gateway again,
/// plus those `before` held and `ipam` holds no more (released at `now`);
/// each is held in `ipam` by its placeholder. `grace == 0` holds nothing.
pub(crate) fn hold_back(
    ipam: &mut Allocator,
    before: &[AllocationRecord],
    recorded: &[ReleasedAddress],
    now: u64,
    grace: u64,
) -> Vec<ReleasedAddress> {
    if grace == 0 {
        return Vec::new();
    }
    let held: BTreeSet<IpAddr> = ipam
        .records()
        .iter()
        .flat_map(|r| r.addresses.iter().copied())
        .collect();
    let mut out: Vec<ReleasedAddress> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in recorded {
        let within = now < r.released_at.saturating_add(grace);
        if within && !held.contains(&r.address) && seen.insert(r.address) {
            out.push(r.clone());
        }
    }
    for record in before.iter().filter(|r| !is_placeholder(&r.owner)) {
        for address in &record.addresses {
            let Some(pool) = ipam.pools().pool_of(*address) else {
                continue;
            };
            if !held.contains(address) && seen.insert(*address) {
                out.push(ReleasedAddress {
                    address: *address,
                    tenant: record.tenant.clone(),
                    pool: pool.name().to_owned(),
                    released_at: now,
                });
            }
        }
    }
    // A placeholder that cannot be restored (its pool changed) holds
    // nothing and is forgotten.
    out.retain(|r| ipam.restore([placeholder(r)]).conflicts.is_empty());
    out.sort_by_key(|r| r.address);
    out
}

fn placeholder(r: &ReleasedAddress) -> AllocationRecord {
    AllocationRecord {
        owner: owner(r.address),
        tenant: r.tenant.clone(),
        addresses: vec![r.address],
        sharing_key: None,
        ports: Vec::new(),
    }
}

/// Lets `tenant` take back the held-back addresses it asks for: their
/// placeholders are released (and the addresses no longer held back).
pub(crate) fn reclaim(
    ipam: &mut Allocator,
    held: &mut Vec<ReleasedAddress>,
    tenant: &str,
    asked: &[IpAddr],
) {
    held.retain(|r| {
        let mine = r.tenant == tenant && asked.contains(&r.address);
        if mine {
            ipam.release(&owner(r.address));
        }
        !mine
    });
}

/// How many of `held` belong to `tenant` (placeholders the allocator
/// counts as the tenant's addresses).
pub(crate) fn held_for(held: &[ReleasedAddress], tenant: &str) -> usize {
    held.iter().filter(|r| r.tenant == tenant).count()
}
