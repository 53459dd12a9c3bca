//! Public address pools and allocation for EPIC-RS gateways.
//!
//! `epic-ipam` decides which public address each gateway gets. It is pure,
//! synchronous and deterministic: no I/O, no clocks, no hash-order
//! dependence. The controllers keep the result in resource status and rebuild
//! the allocator from it at start ([`Allocator::restore`]).
//!
//! ```
//! use epic_ipam::{Allocator, AllocationRequest, FamilyPolicy, PoolSet, PoolSpec, PortSpec};
//!
//! let pools = PoolSet::new([PoolSpec::new("public", ["198.51.100.0/24", "2001:db8:1::/64"])])?;
//! let mut ipam = Allocator::new(pools);
//!
//! // Dual stack: one address per family, lowest free first.
//! let web = ipam.allocate(&AllocationRequest::new("uid-web", "acme", FamilyPolicy::RequireDualStack))?;
//! let got: Vec<String> = web.addresses.iter().map(|a| a.address.to_string()).collect();
//! assert_eq!(got, ["198.51.100.0", "2001:db8:1::"]);
//!
//! // Sharing: same tenant, same key, disjoint ports -> same address.
//! let dns_tcp = AllocationRequest::new("uid-dns-tcp", "acme", FamilyPolicy::Ipv4)
//!     .with_sharing_key("dns")
//!     .with_ports([PortSpec::tcp(53)]);
//! let dns_udp = AllocationRequest::new("uid-dns-udp", "acme", FamilyPolicy::Ipv4)
//!     .with_sharing_key("dns")
//!     .with_ports([PortSpec::udp(53)]);
//! let a = ipam.allocate(&dns_tcp)?;
//! let b = ipam.allocate(&dns_udp)?;
//! assert_eq!(a.addresses[0].address, b.addresses[0].address);
//! assert!(b.addresses[0].shared);
//!
//! // The address is freed when its last owner releases it.
//! ipam.release("uid-dns-tcp");
//! assert_eq!(ipam.holders(b.addresses[0].address), ["uid-dns-udp"]);
//!
//! // Rebuilding from the records gives the same state.
//! let (rebuilt, report) = Allocator::with_records(ipam.pools().clone(), ipam.records());
//! assert!(report.conflicts.is_empty());
//! assert_eq!(rebuilt, ipam);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Pools
//!
//! A pool ([`PoolSpec`], validated into an [`AddressPool`]) is a name and any
//! mix of CIDRs (`198.51.100.0/24`, `2001:db8:1::/64`), single addresses and
//! inclusive ranges (`203.0.113.10-203.0.113.20`), IPv4 and IPv6, with:
//!
//! - `exclude`: entries (same syntax) never handed out;
//! - `avoidBuggyIps`: skip IPv4 addresses ending in `.0` or `.255`;
//! - `aggregation`: the prefix length announced for an address (`/32` and
//!   `/128` by default; a shorter one announces the covering network, and may
//!   not be shorter than any entry of its family);
//! - `autoAssign` (default true): whether requests that name no pool may use it;
//! - `priority` (default 0): larger is preferred, ties broken by name;
//! - `tenants`: who may use it (absent: every tenant; `[]`: nobody).
//!
//! [`PoolSet::new`] rejects, naming the pool and the offending entry, every
//! malformed entry (including a CIDR with host bits set), a range whose end
//! precedes its start or that mixes families, overlapping entries within a
//! pool and pools that overlap each other. All problems are reported at once
//! ([`PoolSetError`]).
//!
//! A pool costs memory in proportion to what is allocated from it, never to
//! its size: a `/64` (or `::/0`) is as cheap as a `/30`. Finding the lowest
//! free address takes two B-tree look-ups however full the pool is.
//!
//! # Allocation
//!
//! [`Allocator::allocate`] takes an [`AllocationRequest`]: an owner id (stable,
//! e.g. the gateway's uid), a tenant, an optional pool name, optional
//! specific addresses (at most one per family), an optional sharing key, the
//! (protocol, port) pairs the owner listens on, and a [`FamilyPolicy`].
//!
//! - Without a specific address, each family gets the lowest free address of
//!   the highest-priority pool the tenant may use that has that family; when
//!   a pool is full the next one is tried. A request that names a pool uses
//!   only that pool (which may have `autoAssign: false`).
//! - A specific address is granted if it lies in a pool the tenant may use
//!   (the named one, if any), is not excluded, and is free or shareable.
//! - Ports matter only for sharing, so they are kept (and recorded) only for
//!   owners with a sharing key.
//! - An owner holds at most one address per family; allocating again for an
//!   owner that holds addresses is refused ([`IpamError::AlreadyAllocated`]).
//! - Errors ([`IpamError`]) say what was wrong: the exhausted pools, who holds
//!   a taken address, the conflicting ports, the tenant refused, and so on.
//!   A refused request allocates nothing.
//!
//! ## Sharing
//!
//! Two owners get the same address only if they belong to the same tenant,
//! both give the same non-empty sharing key, and their (protocol, port) sets
//! do not overlap, e.g. DNS over TCP 53 and UDP 53 on one address. A request
//! with a sharing key first looks for an address already held by its group
//! that it can join, and only then takes a free one. The address is freed
//! when its last owner releases it.
//!
//! ## Dual stack
//!
//! - [`FamilyPolicy::Ipv4`] / [`FamilyPolicy::Ipv6`]: one address of that family.
//! - [`FamilyPolicy::RequireDualStack`]: one address per family, or an error
//!   and nothing allocated.
//! - [`FamilyPolicy::PreferDualStack`]: one address per family where a pool
//!   the tenant may use has one free; an error only when neither family can
//!   be served. The two families may come from different pools.
//!
//! A specific address fixes its family's address; the policy's other family,
//! if any, is chosen as usual.
//!
//! ## Release and restore
//!
//! [`Allocator::release`] frees everything an owner holds, in every family;
//! releasing an unknown owner changes nothing and says so
//! ([`ReleaseOutcome::NotAllocated`]). [`Allocator::records`] lists the state
//! as [`AllocationRecord`]s, and [`Allocator::restore`] rebuilds it from them,
//! applying records in order. A conflicting record (an address outside every
//! pool or excluded, a pool its tenant may no longer use, an address held by
//! an owner it may not share with, a duplicate owner) restores nothing and is
//! reported in the [`RestoreReport`], one [`RestoreConflict`] per conflicting
//! address; nothing is dropped or overwritten silently.
//!
//! # File formats
//!
//! `epicctl ipam check <pools.yaml>` reads a pool file ([`PoolFile`]) and
//! prints each pool's families and sizes:
//!
//! ```yaml
//! pools:
//!   - name: public
//!     addresses: ["198.51.100.0/24", "2001:db8:1::/64"]
//!     exclude: ["198.51.100.0/30"]
//!     avoidBuggyIps: true
//!     priority: 10
//!   - name: reserved
//!     addresses: ["203.0.113.10-203.0.113.20"]
//!     autoAssign: false
//!     aggregation: { ipv4: 32 }
//!     tenants: [acme]
//! ```
//!
//! `epicctl ipam plan <pools.yaml> <requests.yaml>` runs a [`PlanFile`] of
//! steps on an empty allocator and prints one JSON [`StepReport`] per step
//! and line. A step is `allocate` (an [`AllocationRequest`]), `release` (an
//! owner id), `restore` (a list of [`AllocationRecord`]s) or `records`:
//!
//! ```yaml
//! steps:
//!   - allocate:
//!       owner: uid-1
//!       tenant: acme
//!       family: RequireDualStack        # IPv4 | IPv6 | PreferDualStack | RequireDualStack
//!       sharingKey: dns                 # optional
//!       ports: [{ protocol: UDP, port: 53 }]
//!   - allocate:
//!       owner: uid-2
//!       tenant: acme
//!       family: IPv4
//!       pool: reserved                  # optional
//!       addresses: ["203.0.113.15"]     # optional, one per family
//!   - release: uid-1
//!   - restore:
//!       - owner: uid-3
//!         tenant: acme
//!         addresses: ["198.51.100.9"]
//!   - records
//! ```
//!
//! Both parse with the `yaml` feature (on by default):
//!
//! ```
//! use epic_ipam::{Allocator, PlanFile, PoolFile};
//! let pools = PoolFile::from_yaml("pools: [{name: p, addresses: [192.0.2.0/30]}]")?;
//! let plan = PlanFile::from_yaml(
//!     "steps: [{allocate: {owner: a, tenant: t, family: IPv4}}, {release: a}, records]",
//! )?;
//! let reports = PlanFile::run(&plan, &mut Allocator::new(pools));
//! assert_eq!(reports[0].allocation.as_ref().unwrap().addresses[0].address.to_string(), "192.0.2.0");
//! assert_eq!(reports[2].records.as_deref(), Some(&[][..]));
//! # Ok::<(), epic_ipam::FileError>(())
//! ```

#![deny(missing_docs)]

mod allocator;
mod error;
mod plan;
mod pool;
mod request;
mod space;

pub use allocator::{Allocator, PoolUsage};
pub use error::IpamError;
pub use plan::{FileError, PlanFile, PoolFile, Step, StepReport};
pub use pool::{
    AddressPool, Aggregation, EntryError, Family, PoolEntry, PoolError, PoolSet, PoolSetError,
    PoolSpec,
};
pub use request::{
    AllocatedAddress, Allocation, AllocationRecord, AllocationRequest, FamilyPolicy, PortSpec,
    Protocol, ReleaseOutcome, RestoreConflict, RestoreReport,
};
