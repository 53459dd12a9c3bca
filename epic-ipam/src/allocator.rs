//! The allocator: addresses per owner, sharing, release and restore.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::Serialize;

use crate::error::IpamError;
use crate::pool::{Family, PoolSet, from_u128, to_u128};
use crate::request::{
    AllocatedAddress, Allocation, AllocationRecord, AllocationRequest, FamilyPolicy, PortSpec,
    ReleaseOutcome, RestoreConflict, RestoreReport,
};
use crate::space::Space;

/// What one owner holds. Kept small: there is one per owner.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnerEntry {
    tenant: u32,
    /// Only owners with a sharing key can share, so only they keep ports.
    sharing: Option<Box<Sharing>>,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sharing {
    key: Arc<str>,
    ports: Box<[PortSpec]>,
}

impl OwnerEntry {
    fn address(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.v4.map(IpAddr::V4),
            Family::V6 => self.v6.map(IpAddr::V6),
        }
    }

    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        Family::ALL.into_iter().filter_map(|f| self.address(f))
    }

    fn key(&self) -> Option<&Arc<str>> {
        self.sharing.as_ref().map(|s| &s.key)
    }

    fn ports(&self) -> &[PortSpec] {
        self.sharing.as_ref().map_or(&[], |s| &s.ports)
    }
}

/// Who is asking, for sharing checks.
struct Claim<'a> {
    tenant: &'a str,
    key: Option<&'a str>,
    ports: &'a [PortSpec],
}

/// A chosen address, not yet committed.
#[derive(Debug, Clone, Copy)]
struct Choice {
    pool: usize,
    family: Family,
    value: u128,
}

/// Allocated and total addresses of one family of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// The pool.
    pub pool: String,
    /// The family.
    pub family: Family,
    /// Allocatable addresses (saturating at `u128::MAX`).
    pub size: u128,
    /// Addresses held by at least one owner.
    pub allocated: usize,
}

/// Hands out addresses from a [`PoolSet`]; see the [crate docs](crate) for
/// the rules.
#[derive(Debug, Clone)]
pub struct Allocator {
    pools: PoolSet,
    /// Per pool (in `pools` order), per family.
    spaces: Vec<[Space; 2]>,
    owners: BTreeMap<Arc<str>, OwnerEntry>,
    tenant_names: Vec<Arc<str>>,
    tenant_ids: BTreeMap<Arc<str>, u32>,
    /// Owners per (tenant, sharing key).
    groups: Groups,
    /// Distinct addresses held, per tenant id (an address is only ever
    /// shared within one tenant, so it counts for its first holder's).
    tenant_addresses: Vec<u32>,
}

/// Adds `delta` to the address count of `tenant`.
fn count_addresses(counts: &mut Vec<u32>, tenant: u32, delta: i64) {
    let at = tenant as usize;
    if counts.len() <= at {
        counts.resize(at + 1, 0);
    }
    counts[at] = (i64::from(counts[at]) + delta).clamp(0, i64::from(u32::MAX)) as u32;
}

/// The ports and the chosen addresses (indexed by family) of a request.
type Prepared = (Box<[PortSpec]>, [Option<Choice>; 2]);

/// A restored record: its owner, the record, its addresses by family.
type Restored<'r> = (Arc<str>, &'r AllocationRecord, [Option<Choice>; 2]);

/// Addresses claimed by records, with the owner when the record restores.
type Claims = Vec<(u128, Option<Arc<str>>)>;

/// Owners per (tenant, sharing key).
type Groups = BTreeMap<(u32, Arc<str>), BTreeSet<Arc<str>>>;

/// The id of `tenant`, interning it when new.
fn intern(names: &mut Vec<Arc<str>>, ids: &mut BTreeMap<Arc<str>, u32>, tenant: &str) -> u32 {
    if let Some(id) = ids.get(tenant) {
        return *id;
    }
    let id = names.len() as u32;
    let name: Arc<str> = Arc::from(tenant);
    names.push(name.clone());
    ids.insert(name, id);
    id
}

/// Makes `owner` a holder of each chosen address and a member of its sharing
/// group; returns its entry (for the caller to insert into the owners) and
/// how many of the addresses were free before.
fn hold_all<'a>(
    spaces: &mut [[Space; 2]],
    groups: &mut Groups,
    owner: &Arc<str>,
    tenant: u32,
    key: Option<Arc<str>>,
    ports: Box<[PortSpec]>,
    choices: impl IntoIterator<Item = &'a Choice>,
) -> (OwnerEntry, i64) {
    let mut entry = OwnerEntry {
        tenant,
        sharing: key.map(|key| Box::new(Sharing { key, ports })),
        v4: None,
        v6: None,
    };
    let mut fresh = 0;
    for choice in choices {
        if let Some(spaces) = spaces.get_mut(choice.pool)
            && spaces[choice.family.index()].hold(choice.value, owner.clone())
        {
            fresh += 1;
        }
        match from_u128(choice.family, choice.value) {
            IpAddr::V4(a) => entry.v4 = Some(a),
            IpAddr::V6(a) => entry.v6 = Some(a),
        }
    }
    if let Some(key) = entry.key() {
        groups
            .entry((tenant, key.clone()))
            .or_default()
            .insert(owner.clone());
    }
    (entry, fresh)
}

impl PartialEq for Allocator {
    /// Same pools and same records: the rest of the state follows from them.
    fn eq(&self, other: &Self) -> bool {
        self.pools == other.pools && self.records() == other.records()
    }
}

/// The sorted, deduplicated ports; only owners with a sharing key keep (and
/// are checked against) ports, so without one this is empty and allocates
/// nothing.
fn normalize_ports(ports: &[PortSpec], key: Option<&str>) -> Box<[PortSpec]> {
    if key.is_none() || ports.is_empty() {
        return Box::default();
    }
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    ports.into_boxed_slice()
}

/// What is wrong with a record's identity (empty owner or tenant), checked
/// before anything else in both restore paths.
fn identity_error(record: &AllocationRecord) -> Option<IpamError> {
    if record.owner.is_empty() {
        Some(IpamError::EmptyOwner)
    } else if record.tenant.is_empty() {
        Some(IpamError::EmptyTenant {
            owner: record.owner.clone(),
        })
    } else {
        None
    }
}

fn normalize_key(key: Option<&String>) -> Option<&str> {
    key.map(String::as_str).filter(|k| !k.is_empty())
}

/// Pairs in both sorted slices.
fn common_ports(a: &[PortSpec], b: &[PortSpec]) -> Vec<PortSpec> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

impl Allocator {
    /// An allocator with nothing allocated.
    pub fn new(pools: PoolSet) -> Allocator {
        let spaces = pools
            .pools()
            .iter()
            .map(|p| Family::ALL.map(|f| Space::new(p.usable(f).clone())))
            .collect();
        Allocator {
            pools,
            spaces,
            owners: BTreeMap::new(),
            tenant_names: Vec::new(),
            tenant_ids: BTreeMap::new(),
            groups: BTreeMap::new(),
            tenant_addresses: Vec::new(),
        }
    }

    /// An allocator rebuilt from `records` (see [`Allocator::restore`]).
    pub fn with_records<R: Borrow<AllocationRecord>>(
        pools: PoolSet,
        records: impl IntoIterator<Item = R>,
    ) -> (Allocator, RestoreReport) {
        let mut allocator = Allocator::new(pools);
        let report = allocator.restore(records);
        (allocator, report)
    }

    /// The pools.
    pub fn pools(&self) -> &PoolSet {
        &self.pools
    }

    /// How many owners hold addresses.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether no owner holds anything.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// How many distinct addresses the owners of `tenant` hold (an address
    /// its owners share counts once).
    pub fn tenant_address_count(&self, tenant: &str) -> usize {
        self.tenant_ids
            .get(tenant)
            .and_then(|id| self.tenant_addresses.get(*id as usize))
            .map_or(0, |n| *n as usize)
    }

    /// Counts every tenant's addresses again from the owners (after a bulk
    /// rebuild).
    fn recount_tenant_addresses(&mut self) {
        self.tenant_addresses = self.count_tenant_addresses();
    }

    /// Every tenant's addresses, counted from the owners: each held address
    /// for the tenant of its first holder.
    fn count_tenant_addresses(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.tenant_names.len()];
        for (owner, entry) in &self.owners {
            for address in entry.addresses() {
                let first = self
                    .pools
                    .index_of(address)
                    .and_then(|p| self.space(p, Family::of(address)))
                    .and_then(|s| s.first_holder(to_u128(address)));
                if first.is_some_and(|f| f == owner)
                    && let Some(n) = counts.get_mut(entry.tenant as usize)
                {
                    *n += 1;
                }
            }
        }
        counts
    }

    fn tenant(&self, id: u32) -> &str {
        self.tenant_names.get(id as usize).map_or("", |t| t)
    }

    fn intern_tenant(&mut self, tenant: &str) -> u32 {
        intern(&mut self.tenant_names, &mut self.tenant_ids, tenant)
    }

    fn space(&self, pool: usize, family: Family) -> Option<&Space> {
        self.spaces.get(pool).map(|s| &s[family.index()])
    }

    /// The owners holding `address`, sorted.
    pub fn holders(&self, address: IpAddr) -> Vec<&str> {
        self.pools
            .index_of(address)
            .and_then(|p| self.space(p, Family::of(address)))
            .map(|s| {
                s.holders(to_u128(address))
                    .into_iter()
                    .map(|o| &**o)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `owner` holds.
    pub fn allocation(&self, owner: &str) -> Option<Allocation> {
        let entry = self.owners.get(owner)?;
        let addresses = entry
            .addresses()
            .map(|address| {
                let pool = self.pools.pool_of(address);
                AllocatedAddress {
                    address,
                    pool: pool.map(|p| p.name().to_owned()).unwrap_or_default(),
                    prefix: pool.map_or_else(|| address.into(), |p| p.announced_prefix(address)),
                    shared: self.holders(address).len() > 1,
                }
            })
            .collect();
        Some(Allocation {
            owner: owner.to_owned(),
            tenant: self.tenant(entry.tenant).to_owned(),
            addresses,
        })
    }

    /// Every allocation as a record, sorted by owner: what
    /// [`Allocator::restore`] needs to rebuild this state.
    pub fn records(&self) -> Vec<AllocationRecord> {
        self.owners
            .iter()
            .map(|(owner, entry)| AllocationRecord {
                owner: owner.to_string(),
                tenant: self.tenant(entry.tenant).to_owned(),
                addresses: entry.addresses().collect(),
                sharing_key: entry.key().map(|k| k.to_string()),
                ports: entry.ports().to_vec(),
            })
            .collect()
    }

    /// Size and allocated count per pool and family, in pool order.
    pub fn usage(&self) -> Vec<PoolUsage> {
        let mut out = Vec::new();
        for (pool, spaces) in self.pools.pools().iter().zip(&self.spaces) {
            for family in pool.families() {
                out.push(PoolUsage {
                    pool: pool.name().to_owned(),
                    family,
                    size: pool.size(family),
                    allocated: spaces[family.index()].allocated(),
                });
            }
        }
        out
    }

    /// Whether `claim` may join the holders of `value` (Ok(()) also when free).
    fn check_shareable(
        &self,
        space: &Space,
        address: IpAddr,
        claim: &Claim<'_>,
    ) -> Result<(), IpamError> {
        // One look-up: free addresses have no holders.
        let holders = space.holders(to_u128(address));
        if holders.is_empty() {
            return Ok(());
        }
        let mut taken = false;
        let mut conflicting = Vec::new();
        let mut ports = Vec::new();
        for &holder in &holders {
            let Some(entry) = self.owners.get(holder) else {
                continue;
            };
            if self.tenant(entry.tenant) != claim.tenant
                || claim.key.is_none()
                || entry.key().map(|k| &**k) != claim.key
            {
                taken = true;
                continue;
            }
            let common = common_ports(entry.ports(), claim.ports);
            if !common.is_empty() {
                conflicting.push(holder.to_string());
                ports.extend(common);
            }
        }
        if taken {
            return Err(IpamError::AddressTaken {
                address,
                owners: holders.iter().map(|o| o.to_string()).collect(),
            });
        }
        if !ports.is_empty() {
            ports.sort_unstable();
            ports.dedup();
            return Err(IpamError::SharingConflict {
                address,
                owners: conflicting,
                ports,
            });
        }
        Ok(())
    }

    /// Checks a specific address for `claim`.
    fn choose_specific(
        &self,
        address: IpAddr,
        claim: &Claim<'_>,
        named: Option<usize>,
    ) -> Result<Choice, IpamError> {
        let choice = self.locate(address, claim.tenant, named)?;
        if let Some(space) = self.space(choice.pool, choice.family) {
            self.check_shareable(space, address, claim)?;
        }
        Ok(choice)
    }

    /// Checks that `address` may be allocated to `tenant` (from pool
    /// `named`, if given), whoever holds it.
    fn locate(
        &self,
        address: IpAddr,
        tenant: &str,
        named: Option<usize>,
    ) -> Result<Choice, IpamError> {
        let pool = self
            .pools
            .index_of(address)
            .ok_or(IpamError::NotInAnyPool { address })?;
        let spec = &self.pools.pools()[pool];
        if let Some(named) = named
            && named != pool
        {
            return Err(IpamError::NotInRequestedPool {
                address,
                pool: self.pools.pools()[named].name().to_owned(),
            });
        }
        if !spec.permits(tenant) {
            return Err(IpamError::TenantNotPermitted {
                tenant: tenant.to_owned(),
                pool: spec.name().to_owned(),
            });
        }
        if !spec.contains(address) {
            return Err(IpamError::AddressExcluded {
                address,
                pool: spec.name().to_owned(),
            });
        }
        let family = Family::of(address);
        if self.space(pool, family).is_none() {
            return Err(IpamError::NotInAnyPool { address });
        }
        Ok(Choice {
            pool,
            family,
            value: to_u128(address),
        })
    }

    /// Picks an address of `family`: a compatible address of the sharing
    /// group first, else the lowest free address, pool by pool.
    fn choose_auto(
        &self,
        family: Family,
        claim: &Claim<'_>,
        named: Option<usize>,
    ) -> Result<Choice, IpamError> {
        let pools = self.pools.pools();
        // Candidate pools in pool (priority) order; no allocation on the hot path.
        let is_candidate = |p: usize| {
            (match named {
                Some(n) => p == n,
                None => pools[p].auto_assign() && pools[p].permits(claim.tenant),
            }) && pools[p].has_family(family)
        };
        let candidates = || (0..pools.len()).filter(move |&p| is_candidate(p));
        if candidates().next().is_none() {
            return Err(IpamError::FamilyNotAvailable {
                family,
                tenant: claim.tenant.to_owned(),
                pool: named.map(|p| pools[p].name().to_owned()),
            });
        }
        if let Some(key) = claim.key
            && let Some(tenant) = self.tenant_ids.get(claim.tenant)
            && let Some(group) = self.groups.get(&(*tenant, Arc::from(key)))
        {
            let mut addresses: Vec<(usize, IpAddr)> = group
                .iter()
                .filter_map(|o| self.owners.get(o)?.address(family))
                .filter_map(|a| Some((self.pools.index_of(a)?, a)))
                .filter(|&(p, _)| is_candidate(p))
                .collect();
            // Candidates are in pool order, so this is candidate order.
            addresses.sort_unstable();
            addresses.dedup();
            for (pool, address) in addresses {
                if let Some(space) = self.space(pool, family)
                    && self.check_shareable(space, address, claim).is_ok()
                {
                    return Ok(Choice {
                        pool,
                        family,
                        value: to_u128(address),
                    });
                }
            }
        }
        for pool in candidates() {
            if let Some(value) = self.space(pool, family).and_then(Space::lowest_free) {
                return Ok(Choice {
                    pool,
                    family,
                    value,
                });
            }
        }
        Err(IpamError::PoolExhausted {
            family,
            pools: candidates().map(|p| pools[p].name().to_owned()).collect(),
        })
    }

    /// Allocates addresses for a new owner.
    ///
    /// Without specific addresses, each family gets a compatible address of
    /// the request's sharing group if there is one, else the lowest free
    /// address of the highest-priority pool the tenant may use. Nothing is
    /// allocated when an error is returned.
    pub fn allocate(&mut self, request: &AllocationRequest) -> Result<Allocation, IpamError> {
        if request.owner.is_empty() {
            return Err(IpamError::EmptyOwner);
        }
        if request.tenant.is_empty() {
            return Err(IpamError::EmptyTenant {
                owner: request.owner.clone(),
            });
        }
        // An owner that already holds addresses is reported before any other
        // problem. Checking for it on the error path and when inserting (one
        // owner look-up on success instead of two) keeps that order.
        let (ports, choices) = match self.prepare(request) {
            Ok(prepared) => prepared,
            Err(error) => return Err(self.already_allocated(&request.owner).unwrap_or(error)),
        };
        let key = normalize_key(request.sharing_key.as_ref()).map(Arc::from);
        let Allocator {
            owners,
            spaces,
            groups,
            tenant_names,
            tenant_ids,
            tenant_addresses,
            ..
        } = self;
        let slot = match owners.entry(Arc::from(request.owner.as_str())) {
            btree_map::Entry::Occupied(held) => {
                return Err(IpamError::AlreadyAllocated {
                    owner: request.owner.clone(),
                    addresses: held.get().addresses().collect(),
                });
            }
            btree_map::Entry::Vacant(slot) => slot,
        };
        let tenant = intern(tenant_names, tenant_ids, &request.tenant);
        let (entry, fresh) = hold_all(
            spaces,
            groups,
            slot.key(),
            tenant,
            key,
            ports,
            choices.iter().flatten(),
        );
        count_addresses(tenant_addresses, tenant, fresh);
        slot.insert(entry);
        let addresses = choices
            .iter()
            .flatten()
            .map(|c| {
                let address = from_u128(c.family, c.value);
                let pool = &self.pools.pools()[c.pool];
                AllocatedAddress {
                    address,
                    pool: pool.name().to_owned(),
                    prefix: pool.announced_prefix(address),
                    shared: self
                        .space(c.pool, c.family)
                        .is_some_and(|s| s.is_shared(c.value)),
                }
            })
            .collect();
        Ok(Allocation {
            owner: request.owner.clone(),
            tenant: request.tenant.clone(),
            addresses,
        })
    }

    /// The error for an owner that already holds addresses, if it does.
    fn already_allocated(&self, owner: &str) -> Option<IpamError> {
        self.owners
            .get(owner)
            .map(|entry| IpamError::AlreadyAllocated {
                owner: owner.to_owned(),
                addresses: entry.addresses().collect(),
            })
    }

    /// Checks `request` (but not whether its owner exists) and chooses its
    /// addresses, indexed by family; changes nothing.
    fn prepare(&self, request: &AllocationRequest) -> Result<Prepared, IpamError> {
        let named = match &request.pool {
            None => None,
            Some(name) => {
                let p = self
                    .pools
                    .position(name)
                    .ok_or_else(|| IpamError::UnknownPool { pool: name.clone() })?;
                if !self.pools.pools()[p].permits(&request.tenant) {
                    return Err(IpamError::TenantNotPermitted {
                        tenant: request.tenant.clone(),
                        pool: name.clone(),
                    });
                }
                Some(p)
            }
        };
        let wanted = match request.family {
            FamilyPolicy::Ipv4 => [true, false],
            FamilyPolicy::Ipv6 => [false, true],
            FamilyPolicy::PreferDualStack | FamilyPolicy::RequireDualStack => [true, true],
        };
        let mut specific: [Option<IpAddr>; 2] = [None, None];
        for &address in &request.addresses {
            let family = Family::of(address);
            if !wanted[family.index()] {
                return Err(IpamError::FamilyNotRequested {
                    address,
                    policy: request.family,
                });
            }
            if specific[family.index()].replace(address).is_some() {
                return Err(IpamError::DuplicateFamily { family });
            }
        }
        let key = normalize_key(request.sharing_key.as_ref());
        let ports = normalize_ports(&request.ports, key);
        let claim = Claim {
            tenant: &request.tenant,
            key,
            ports: &ports,
        };
        let mut choices = [None, None];
        let mut first_error = None;
        for family in Family::ALL.into_iter().filter(|f| wanted[f.index()]) {
            let result = match specific[family.index()] {
                Some(address) => self.choose_specific(address, &claim, named),
                None => self.choose_auto(family, &claim, named),
            };
            match result {
                Ok(choice) => choices[family.index()] = Some(choice),
                Err(e)
                    if request.family == FamilyPolicy::PreferDualStack
                        && specific[family.index()].is_none() =>
                {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if choices.iter().all(Option::is_none) {
            return Err(first_error.unwrap_or(IpamError::FamilyNotAvailable {
                family: Family::V4,
                tenant: request.tenant.clone(),
                pool: request.pool.clone(),
            }));
        }
        Ok((ports, choices))
    }

    fn commit(
        &mut self,
        owner: &str,
        tenant: &str,
        key: Option<Arc<str>>,
        ports: Box<[PortSpec]>,
        choices: &[Choice],
    ) {
        let tenant = self.intern_tenant(tenant);
        let owner: Arc<str> = Arc::from(owner);
        let (entry, fresh) = hold_all(
            &mut self.spaces,
            &mut self.groups,
            &owner,
            tenant,
            key,
            ports,
            choices,
        );
        count_addresses(&mut self.tenant_addresses, tenant, fresh);
        self.owners.insert(owner, entry);
    }

    /// Releases everything `owner` holds, in every family. An address is
    /// freed when its last holder releases it.
    pub fn release(&mut self, owner: &str) -> ReleaseOutcome {
        let Some(entry) = self.owners.remove(owner) else {
            return ReleaseOutcome::NotAllocated {
                owner: owner.to_owned(),
            };
        };
        let mut addresses = Vec::new();
        let mut freed = Vec::new();
        for address in entry.addresses() {
            addresses.push(address);
            let family = Family::of(address);
            if let Some(pool) = self.pools.index_of(address)
                && let Some(spaces) = self.spaces.get_mut(pool)
                && spaces[family.index()].unhold(to_u128(address), owner)
            {
                freed.push(address);
            }
        }
        count_addresses(
            &mut self.tenant_addresses,
            entry.tenant,
            -(freed.len() as i64),
        );
        if let Some(sharing) = entry.sharing {
            let group_key = (entry.tenant, sharing.key);
            if let Some(group) = self.groups.get_mut(&group_key) {
                group.remove(owner);
                if group.is_empty() {
                    self.groups.remove(&group_key);
                }
            }
        }
        ReleaseOutcome::Released {
            owner: owner.to_owned(),
            addresses,
            freed,
        }
    }

    /// Rebuilds state from recorded allocations, applied in order (an
    /// earlier record wins). A record that conflicts — an address outside
    /// every pool or excluded, a pool the tenant may not use, an address held
    /// by owners it may not share with, an owner already present — restores
    /// nothing and is reported, once per conflicting address.
    pub fn restore<R: Borrow<AllocationRecord>>(
        &mut self,
        records: impl IntoIterator<Item = R>,
    ) -> RestoreReport {
        let records: Vec<R> = records.into_iter().collect();
        let records: Vec<&AllocationRecord> = records.iter().map(Borrow::borrow).collect();
        if let Some(report) = self.restore_in_bulk(&records) {
            return report;
        }
        self.restore_one_by_one(&records)
    }

    /// The general restore: records applied one at a time.
    fn restore_one_by_one(&mut self, records: &[&AllocationRecord]) -> RestoreReport {
        let mut report = RestoreReport::default();
        for &record in records {
            let before = report.conflicts.len();
            let conflict = |address: Option<IpAddr>, error: IpamError| RestoreConflict {
                owner: record.owner.clone(),
                address,
                error,
            };
            if let Some(error) = identity_error(record) {
                report.conflicts.push(conflict(None, error));
                continue;
            }
            if let Some(entry) = self.owners.get(record.owner.as_str()) {
                report.conflicts.push(conflict(
                    None,
                    IpamError::AlreadyAllocated {
                        owner: record.owner.clone(),
                        addresses: entry.addresses().collect(),
                    },
                ));
                continue;
            }
            let key = normalize_key(record.sharing_key.as_ref());
            let ports = normalize_ports(&record.ports, key);
            let claim = Claim {
                tenant: &record.tenant,
                key,
                ports: &ports,
            };
            let mut seen = [false; 2];
            let mut choices: Vec<Choice> = Vec::new();
            for &address in &record.addresses {
                let family = Family::of(address);
                if std::mem::replace(&mut seen[family.index()], true) {
                    report.conflicts.push(conflict(
                        Some(address),
                        IpamError::DuplicateFamily { family },
                    ));
                    continue;
                }
                match self.choose_specific(address, &claim, None) {
                    Ok(choice) => choices.push(choice),
                    Err(error) => report.conflicts.push(conflict(Some(address), error)),
                }
            }
            if report.conflicts.len() > before {
                continue;
            }
            if !choices.is_empty() {
                let key = claim.key.map(Arc::from);
                self.commit(&record.owner, &record.tenant, key, ports, &choices);
            }
            report.restored += 1;
        }
        if report.restored > 0 && report.restored >= self.owners.len() / 2 {
            self.compact();
        }
        report
    }

    /// The usual restore — every record into an empty allocator, as at
    /// start — done in bulk: the trees are built from sorted data instead of
    /// by one insert per record, in random address order.
    ///
    /// Records interact only through owners (a duplicate owner) and addresses
    /// (an address claimed twice); the result differs from
    /// [`Allocator::restore_one_by_one`] only when they do. So this first
    /// checks each record on its own, and gives up — returning `None`, having
    /// changed nothing — when the allocator is not empty, when two records
    /// that reach the owner check name the same owner, or when two records
    /// that reach the sharing check claim the same address. Otherwise every
    /// record's outcome is the one it gets on its own, in record order, as
    /// one by one.
    fn restore_in_bulk(&mut self, records: &[&AllocationRecord]) -> Option<RestoreReport> {
        if !self.owners.is_empty()
            || !self.groups.is_empty()
            || self.spaces.iter().flatten().any(|s| s.allocated() > 0)
        {
            return None;
        }
        // Owners that reach the duplicate-owner check must be distinct
        // (records usually come sorted by owner, which shows it at once).
        let mut checked: Vec<&str> = records
            .iter()
            .filter(|r| !r.owner.is_empty() && !r.tenant.is_empty())
            .map(|r| r.owner.as_str())
            .collect();
        if !checked.is_sorted_by(|a, b| a < b) {
            checked.sort_unstable();
            if checked.windows(2).any(|w| w[0] == w[1]) {
                return None;
            }
        }
        drop(checked);

        let mut report = RestoreReport::default();
        // Every address that reaches the sharing check, per pool and family,
        // with its owner when the record is restored.
        let mut claims: Vec<[Claims; 2]> = self.spaces.iter().map(|_| Default::default()).collect();
        let mut restored: Vec<Restored<'_>> = Vec::with_capacity(records.len());
        for &record in records {
            let conflict = |address: Option<IpAddr>, error: IpamError| RestoreConflict {
                owner: record.owner.clone(),
                address,
                error,
            };
            if let Some(error) = identity_error(record) {
                report.conflicts.push(conflict(None, error));
                continue;
            }
            let before = report.conflicts.len();
            let mut choices: [Option<Choice>; 2] = [None, None];
            let mut seen = [false; 2];
            for &address in &record.addresses {
                let family = Family::of(address);
                if std::mem::replace(&mut seen[family.index()], true) {
                    report.conflicts.push(conflict(
                        Some(address),
                        IpamError::DuplicateFamily { family },
                    ));
                    continue;
                }
                match self.locate(address, &record.tenant, None) {
                    Ok(choice) => choices[family.index()] = Some(choice),
                    Err(error) => report.conflicts.push(conflict(Some(address), error)),
                }
            }
            let ok = report.conflicts.len() == before;
            let owner = (ok && choices.iter().any(Option::is_some))
                .then(|| Arc::<str>::from(record.owner.as_str()));
            for choice in choices.iter().flatten() {
                claims[choice.pool][choice.family.index()].push((choice.value, owner.clone()));
            }
            if ok {
                report.restored += 1;
                if let Some(owner) = owner {
                    restored.push((owner, record, choices));
                }
            }
        }
        for claims in claims.iter_mut().flatten() {
            claims.sort_unstable_by_key(|c| c.0);
            if claims.windows(2).any(|w| w[0].0 == w[1].0) {
                return None;
            }
        }

        // No interactions: build the state.
        for (spaces, claims) in self.spaces.iter_mut().zip(claims) {
            for (space, claims) in spaces.iter_mut().zip(claims) {
                space.fill_sorted(claims.into_iter().filter_map(|(v, o)| Some((v, o?))));
            }
        }
        let mut last_tenant: Option<(&str, u32)> = None;
        // (tenant, key) -> the key (one copy for the group) and the owners
        type Members = (Arc<str>, Vec<Arc<str>>);
        let mut groups: BTreeMap<(u32, &str), Members> = BTreeMap::new();
        let mut owners = Vec::with_capacity(restored.len());
        for (owner, record, choices) in restored {
            let tenant = match last_tenant {
                Some((name, id)) if name == record.tenant => id,
                _ => {
                    let id = self.intern_tenant(&record.tenant);
                    last_tenant = Some((&record.tenant, id));
                    id
                }
            };
            let key = normalize_key(record.sharing_key.as_ref());
            let ports = normalize_ports(&record.ports, key);
            let sharing = key.map(|key| {
                let (key, members) = groups
                    .entry((tenant, key))
                    .or_insert_with(|| (Arc::from(key), Vec::new()));
                members.push(owner.clone());
                Box::new(Sharing {
                    key: key.clone(),
                    ports,
                })
            });
            let mut entry = OwnerEntry {
                tenant,
                sharing,
                v4: None,
                v6: None,
            };
            for choice in choices.iter().flatten() {
                match from_u128(choice.family, choice.value) {
                    IpAddr::V4(a) => entry.v4 = Some(a),
                    IpAddr::V6(a) => entry.v6 = Some(a),
                }
            }
            owners.push((owner, entry));
        }
        // Sorted input (checked above to be duplicate-free): a bulk build.
        self.owners = owners.into_iter().collect();
        self.recount_tenant_addresses();
        self.groups = groups
            .into_iter()
            .map(|((tenant, _), (key, members))| ((tenant, key), members.into_iter().collect()))
            .collect();
        Some(report)
    }

    /// Rebuilds the B-trees with full nodes (records arrive in key order,
    /// which leaves incrementally built nodes half empty).
    fn compact(&mut self) {
        self.owners = std::mem::take(&mut self.owners).into_iter().collect();
        for spaces in &mut self.spaces {
            for space in spaces {
                space.compact();
            }
        }
    }

    /// Checks the internal indexes against each other (for tests).
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut expected: BTreeMap<(usize, Family, u128), Vec<&str>> = BTreeMap::new();
        for (owner, entry) in &self.owners {
            for address in entry.addresses() {
                let pool = self
                    .pools
                    .index_of(address)
                    .ok_or(format!("{owner}: {address} in no pool"))?;
                if !self.pools.pools()[pool].contains(address) {
                    return Err(format!("{owner}: {address} not usable"));
                }
                expected
                    .entry((pool, Family::of(address), to_u128(address)))
                    .or_default()
                    .push(owner);
            }
        }
        let (mut counted, mut want) =
            (self.tenant_addresses.clone(), self.count_tenant_addresses());
        counted.resize(self.tenant_names.len(), 0);
        want.resize(self.tenant_names.len(), 0);
        if counted != want {
            return Err(format!(
                "per-tenant address counts {counted:?}, the owners hold {want:?}"
            ));
        }
        let mut actual: BTreeMap<(usize, Family, u128), Vec<&str>> = BTreeMap::new();
        for (pool, spaces) in self.spaces.iter().enumerate() {
            for family in Family::ALL {
                let space = &spaces[family.index()];
                for (value, holders) in space.held() {
                    actual.insert(
                        (pool, family, value),
                        holders.into_iter().map(|o| &**o).collect(),
                    );
                }
                // lowest_free must agree with a naive scan of the first usable addresses
                let naive = std::iter::successors(space.usable.first(), |v| {
                    v.checked_add(1)
                        .and_then(|n| space.usable.next_at_or_after(n))
                })
                .find(|v| space.holders(*v).is_empty());
                if space.lowest_free() != naive || space.allocated() != space.held().count() {
                    return Err(format!(
                        "pool {pool} {family}: lowest free {:?} != {naive:?}",
                        space.lowest_free()
                    ));
                }
            }
        }
        if expected != actual {
            return Err(format!(
                "holders differ: owners say {expected:?}, pools say {actual:?}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
