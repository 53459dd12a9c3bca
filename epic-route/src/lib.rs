//! Route programmer for EPIC-RS gateway nodes: kernel routes for the public
//! addresses of ready local proxies, and the BIRD 2 configuration that
//! announces exactly those routes over BGP to the upstream router (which
//! spreads traffic across gateway nodes with ECMP).
//!
//! ```no_run
//! use epic_route::{Announcement, DesiredRoutes, RouteConfig, RouteProgrammer, RouteTarget};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let programmer = RouteProgrammer::connect(RouteConfig::new(RouteTarget::Interface("lo".into())))?;
//! let desired: DesiredRoutes = [Announcement {
//!     address: "203.0.113.10".parse()?,
//!     aggregation: 32,
//!     proxy_ready: true,
//! }]
//! .into_iter()
//! .collect();
//! let report = programmer.sync(&desired).await?;
//! println!("added {:?}, removed {:?}", report.added, report.removed);
//! # Ok(()) }
//! ```
//!
//! # Ownership: table and protocol
//!
//! Owned routes live in a dedicated routing table ([`DEFAULT_TABLE`], 4242)
//! and carry a dedicated route protocol number ([`DEFAULT_PROTOCOL`], 242, not
//! in iproute2's `rt_protos`); both are configurable in [`RouteConfig`]. A
//! route is ours only if it has **both**: routes of another protocol in our
//! table, and routes with our protocol in any other table (main included),
//! are never read as ours, replaced or deleted. `ip route show table 4242
//! proto 242` lists exactly what the programmer owns.
//!
//! The table is not consulted for forwarding (no `ip rule` points at it): it
//! is the record of what this node announces. Public addresses are delivered
//! by the node's usual routing (the address on the proxy's interface or on
//! `lo`). Routes are device routes on a configured interface
//! ([`RouteTarget::Interface`]: the bridge/veth toward the proxies, or `lo`
//! in standalone mode), so they stay correct if an integrator does add an
//! `ip rule` for the table, and the kernel removes them — hence BIRD
//! withdraws them — if that interface disappears. [`RouteTarget::Blackhole`]
//! gives announce-only routes instead. The upstream router never sees our
//! target: BGP sends the node's own address as next hop (`next hop self`).
//!
//! # Declarative sync
//!
//! [`RouteProgrammer::sync`] reads the owned routes back (a filtered netlink
//! dump), computes the difference with the pure [`plan`] function, applies
//! only that (a wrong target is replaced in place, without a withdrawal), and
//! returns a [`SyncReport`]. It keeps no state, so it is idempotent, and a
//! restarted programmer adopts what it finds: nothing is flushed on start or
//! on drop. Failures name the route and the netlink error; a missing interface
//! is [`Error::InterfaceNotFound`], a reserved table or protocol is refused up
//! front, and a table that does not exist yet is simply empty.
//!
//! # Readiness and draining
//!
//! A prefix is desired only while the caller marks a local proxy for it ready
//! ([`Announcement::proxy_ready`]; an aggregate stays while one of its
//! addresses is ready). To take a proxy away, the caller:
//! 1. syncs without it (or with `proxy_ready: false`): `sync` returns once the
//!    kernel confirmed the delete, BIRD sees it at once over netlink and sends
//!    the BGP withdrawal;
//! 2. waits for its drain period (connections finish, the upstream converges);
//! 3. only then deletes the proxy.
//!
//! # BIRD 2 configuration
//!
//! [`BirdConfig::render`] generates:
//! - `protocol device`, and a `router id`;
//! - per family a `protocol kernel` (`epic_kernel4`, `epic_kernel6`) with
//!   `kernel table <table>`, `learn`, `export none` (BIRD never writes to the
//!   kernel on a gateway node) and the import filter `epic_learn`, which
//!   accepts only `krt_source = <protocol>`;
//! - per family an export filter (`epic_export4`, `epic_export6`) accepting
//!   only routes learned by that kernel protocol with our protocol number,
//!   and, if [`BirdConfig::allowed_prefixes`] is set, inside those pools;
//! - `protocol bfd` if any peer uses BFD;
//! - one `protocol bgp` per peer (address, ASN, optional password, BFD,
//!   source address, multihop, timers) with the channel of the peer's family
//!   (`ipv4` or `ipv6`): `import none`, the export filter, `next hop self`.
//!
//! [`Bird::apply`] renders, checks with `bird -p -c`, installs the file
//! atomically and reloads the daemon with `birdc configure`, returning BIRD's
//! answer ([`ReloadAnswer`]) or its error ([`BirdError`]).

#![deny(missing_docs)]

mod bird;
mod netlink;
mod plan;

pub use bird::{
    BgpPeer, Bird, BirdConfig, BirdError, ConfigError, ReloadAnswer, kernel_protocol_name,
    parse_reload, parse_replies,
};
pub use netlink::{
    Action, DEFAULT_CONCURRENCY, DEFAULT_METRIC, DEFAULT_PROTOCOL, DEFAULT_TABLE, Error,
    OwnedRoute, RouteConfig, RouteFailure, RouteProgrammer, RouteTarget, SyncReport,
};
pub use plan::{Announcement, DesiredRoutes, Plan, RouteSpec, Target, aggregate, plan};
