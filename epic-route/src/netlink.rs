//! The thin netlink shell: read owned routes, apply a [`Plan`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, info};

use crate::plan::{DesiredRoutes, Plan, RouteSpec, Target, plan};

/// Default routing table for owned routes: 4242 (not consulted for forwarding
/// unless an `ip rule` selects it; it is the record BIRD announces from).
pub const DEFAULT_TABLE: u32 = 4242;
/// Default route protocol number: 242 (free in iproute2's `rt_protos`).
pub const DEFAULT_PROTOCOL: u8 = 242;
/// Default metric of owned routes (IPv6's default for user routes; set
/// explicitly on both families so what is read back matches what was asked).
pub const DEFAULT_METRIC: u32 = 1024;
/// Default number of netlink requests in flight during a sync.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Where the programmer points its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A device route on this interface: the one toward the local proxies (a
    /// bridge or veth), or `lo` when Envoy listens on the node itself. The
    /// kernel drops the route if the interface goes away, which withdraws it.
    Interface(String),
    /// A blackhole route: announce-only, for setups where the address is
    /// delivered by other means and the table is never consulted.
    Blackhole,
}

/// How the programmer marks and places its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The routing table owned routes live in (not 0, 253, 254 or 255).
    pub table: u32,
    /// The route protocol number that marks a route as ours (not 0–4, the
    /// kernel's own, nor 12, BIRD's).
    pub protocol: u8,
    /// The metric of owned routes (not 0: IPv6 would turn it into 1024).
    pub metric: u32,
    /// Where routes point.
    pub target: RouteTarget,
    /// Netlink requests in flight at once while applying a plan.
    pub concurrency: usize,
}

impl RouteConfig {
    /// The defaults ([`DEFAULT_TABLE`], [`DEFAULT_PROTOCOL`],
    /// [`DEFAULT_METRIC`]) with routes on `target`.
    pub fn new(target: RouteTarget) -> RouteConfig {
        RouteConfig {
            table: DEFAULT_TABLE,
            protocol: DEFAULT_PROTOCOL,
            metric: DEFAULT_METRIC,
            target,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if matches!(self.table, 0 | 253..=255) {
            return Err(Error::ReservedTable(self.table));
        }
        if matches!(self.protocol, 0..=4 | 12) {
            return Err(Error::ReservedProtocol(self.protocol));
        }
        if self.metric == 0 {
            return Err(Error::ZeroMetric);
        }
        Ok(())
    }
}

/// What a route operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Adding a route.
    Add,
    /// Replacing a route in place.
    Replace,
    /// Deleting a route.
    Delete,
    /// Reading the owned routes.
    Dump,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Add => "add",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Dump => "dump",
        })
    }
}

/// One failed route operation.
#[derive(Debug, Clone)]
pub struct RouteFailure {
    /// What was attempted.
    pub action: Action,
    /// On which route.
    pub route: RouteSpec,
    /// The netlink error.
    pub error: rtnetlink::Error,
}

impl fmt::Display for RouteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.action,
            self.route,
            netlink_reason(&self.error)
        )
    }
}

fn first_failure(failures: &[RouteFailure]) -> String {
    failures
        .first()
        .map(|f| format!(", first: {f}"))
        .unwrap_or_default()
}

fn netlink_reason(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_string(),
        other => other.to_string(),
    }
}

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Route programmer errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The configured interface does not exist.
    #[error("interface {0:?} does not exist")]
    InterfaceNotFound(String),
    /// Looking the interface up failed.
    #[error("cannot look up interface {name:?}: {reason}")]
    InterfaceLookup {
        /// The interface.
        name: String,
        /// The netlink error.
        reason: String,
    },
    /// The table is one the kernel reserves.
    #[error(
        "table {0} is reserved (0 unspec, 253 default, 254 main, 255 local); choose a dedicated table"
    )]
    ReservedTable(u32),
    /// The protocol number is one the kernel or BIRD uses.
    #[error(
        "route protocol {0} is reserved (0-4 are the kernel's, 12 is BIRD's); choose a dedicated number"
    )]
    ReservedProtocol(u8),
    /// A zero metric was configured.
    #[error("metric 0 is not allowed (IPv6 turns it into 1024, so routes would never match)")]
    ZeroMetric,
    /// Reading the owned routes back failed.
    #[error("cannot read routes of table {table}: {reason}")]
    Dump {
        /// The table.
        table: u32,
        /// The netlink error.
        reason: String,
    },
    /// Some route operations of a sync failed; the others were applied.
    #[error("{} route change(s) failed{}", failures.len(), first_failure(failures))]
    Apply {
        /// What did succeed.
        applied: SyncReport,
        /// What failed, each naming the route and the netlink error.
        failures: Vec<RouteFailure>,
    },
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Prefixes added (now announced).
    pub added: Vec<IpNet>,
    /// Prefixes whose route was replaced in place (announcement kept).
    pub replaced: Vec<IpNet>,
    /// Prefixes deleted (withdrawn).
    pub removed: Vec<IpNet>,
    /// Desired routes that were already right.
    pub unchanged: usize,
}

impl SyncReport {
    /// Whether the sync changed nothing.
    pub fn is_noop(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }
}

/// One owned route read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRoute {
    /// The prefix, target and metric.
    pub spec: RouteSpec,
    /// The table (always the programmer's).
    pub table: u32,
    /// The protocol number (always the programmer's).
    pub protocol: u8,
}

/// Programs owned routes over rtnetlink.
///
/// Owns exactly the routes whose table **and** protocol are the configured
/// ones; reads, adds, replaces and deletes no others. Holds no state besides
/// its socket: every [`sync`](RouteProgrammer::sync) reads the kernel back,
/// so a restarted programmer adopts the routes it finds.
#[derive(Debug)]
pub struct RouteProgrammer {
    handle: Handle,
    config: RouteConfig,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for RouteProgrammer {
    fn drop(&mut self) {
        // Routes stay: dropping the programmer must not withdraw anything.
        self.connection.abort();
    }
}

impl RouteProgrammer {
    /// Opens a netlink socket in the current network namespace and spawns its
    /// connection task on the current tokio runtime.
    pub fn connect(config: RouteConfig) -> Result<RouteProgrammer, Error> {
        config.validate()?;
        let (connection, handle, _) =
            rtnetlink::new_connection_with_strict_check().map_err(Error::Socket)?;
        let connection = tokio::spawn(connection);
        Ok(RouteProgrammer {
            handle,
            config,
            connection,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    async fn resolve_target(&self) -> Result<Target, Error> {
        match &self.config.target {
            RouteTarget::Blackhole => Ok(Target::Blackhole),
            RouteTarget::Interface(name) => {
                let mut links = self.handle.link().get().match_name(name.clone()).execute();
                match links.try_next().await {
                    Ok(Some(link)) => Ok(Target::Device(link.header.index)),
                    Ok(None) => Err(Error::InterfaceNotFound(name.clone())),
                    Err(e) if errno(&e) == Some(libc_enodev()) => {
                        Err(Error::InterfaceNotFound(name.clone()))
                    }
                    Err(e) => Err(Error::InterfaceLookup {
                        name: name.clone(),
                        reason: netlink_reason(&e),
                    }),
                }
            }
        }
    }

    /// Reads back the owned routes (our table and our protocol), IPv4 and IPv6.
    pub async fn owned_routes(&self) -> Result<Vec<OwnedRoute>, Error> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessageBuilder::<Ipv4Addr>::new()
                .table_id(self.config.table)
                .protocol(RouteProtocol::from(self.config.protocol))
                .kind(RouteType::Unspec)
                .build();
            query.header.address_family = family;
            if self.config.table <= 255 {
                // Strict dumps filter on RTA_TABLE or the header's table.
                query.header.table = self.config.table as u8;
            }
            let mut stream = self.handle.route().get(query).execute();
            loop {
                match stream.try_next().await {
                    Ok(Some(message)) => {
                        if let Some(route) = self.parse_owned(&message) {
                            routes.push(route);
                        }
                    }
                    Ok(None) => break,
                    // A table the kernel has not created yet (no route in it
                    // ever) is empty, not an error.
                    Err(e) if errno(&e) == Some(2) => break,
                    Err(e) => {
                        return Err(Error::Dump {
                            table: self.config.table,
                            reason: netlink_reason(&e),
                        });
                    }
                }
            }
        }
        Ok(routes)
    }

    /// Parses a dumped route; `None` unless it is in our table with our protocol.
    fn parse_owned(&self, message: &RouteMessage) -> Option<OwnedRoute> {
        let header = &message.header;
        let mut table = u32::from(header.table);
        let mut destination = None;
        let mut oif = None;
        let mut metric = 0;
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(d) => destination = Some(d.clone()),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => metric = *p,
                _ => {}
            }
        }
        let protocol = u8::from(header.protocol);
        if table != self.config.table || protocol != self.config.protocol {
            return None;
        }
        let len = header.destination_prefix_length;
        let prefix = match (header.address_family, destination) {
            (AddressFamily::Inet, Some(RouteAddress::Inet(a))) => {
                IpNet::V4(Ipv4Net::new(a, len).ok()?)
            }
            (AddressFamily::Inet, None) => IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).ok()?),
            (AddressFamily::Inet6, Some(RouteAddress::Inet6(a))) => {
                IpNet::V6(Ipv6Net::new(a, len).ok()?)
            }
            (AddressFamily::Inet6, None) => IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).ok()?),
            _ => return None,
        };
        let has_gateway = message
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::MultiPath(_)));
        let target = match (header.kind, oif) {
            (RouteType::BlackHole, _) => Target::Blackhole,
            (RouteType::Unicast, Some(index)) if !has_gateway => Target::Device(index),
            (kind, _) => Target::Other(format!("{kind:?}").to_lowercase()),
        };
        Some(OwnedRoute {
            spec: RouteSpec {
                prefix,
                target,
                metric,
            },
            table,
            protocol,
        })
    }

    fn message(&self, route: &RouteSpec) -> RouteMessage {
        let (mut message, v4) = match route.prefix {
            IpNet::V4(net) => (
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(net.addr(), net.prefix_len())
                    .build(),
                true,
            ),
            IpNet::V6(net) => (
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(net.addr(), net.prefix_len())
                    .build(),
                false,
            ),
        };
        if self.config.table > 255 {
            message.header.table = RouteHeader::RT_TABLE_UNSPEC;
            message
                .attributes
                .push(RouteAttribute::Table(self.config.table));
        } else {
            message.header.table = self.config.table as u8;
        }
        message.header.protocol = RouteProtocol::from(self.config.protocol);
        message
            .attributes
            .push(RouteAttribute::Priority(route.metric));
        match &route.target {
            Target::Device(index) => {
                message.header.kind = RouteType::Unicast;
                message.header.scope = if v4 {
                    RouteScope::Link
                } else {
                    RouteScope::Universe
                };
                message.attributes.push(RouteAttribute::Oif(*index));
            }
            Target::Blackhole => {
                message.header.kind = RouteType::BlackHole;
                message.header.scope = RouteScope::Universe;
            }
            Target::Other(_) => {
                // Only ever deleted: match by prefix, table, protocol, metric.
                message.header.kind = RouteType::Unspec;
                message.header.scope = RouteScope::NoWhere;
            }
        }
        message
    }

    /// Computes what [`sync`](RouteProgrammer::sync) would change, without
    /// changing it.
    pub async fn plan(&self, desired: &DesiredRoutes) -> Result<Plan, Error> {
        let target = self.resolve_target().await?;
        let wanted: BTreeSet<RouteSpec> = desired
            .prefixes()
            .map(|prefix| RouteSpec {
                prefix: *prefix,
                target: target.clone(),
                metric: self.config.metric,
            })
            .collect();
        let observed: BTreeSet<RouteSpec> = self
            .owned_routes()
            .await?
            .into_iter()
            .map(|route| route.spec)
            .collect();
        Ok(plan(&wanted, &observed))
    }

    /// Makes the owned routes exactly `desired`: reads them back, applies the
    /// difference only, and reports it. Idempotent. Deletions (withdrawals)
    /// are confirmed by the kernel when this returns.
    pub async fn sync(&self, desired: &DesiredRoutes) -> Result<SyncReport, Error> {
        let plan = self.plan(desired).await?;
        let unchanged = desired.len() - plan.add.len() - plan.replace.len();
        let mut report = SyncReport {
            unchanged,
            ..SyncReport::default()
        };
        if plan.is_empty() {
            debug!(
                table = self.config.table,
                routes = unchanged,
                "routes in sync"
            );
            return Ok(report);
        }
        let mut failures = Vec::new();
        let ops = plan
            .delete
            .into_iter()
            .map(|r| (Action::Delete, r))
            .chain(plan.replace.into_iter().map(|(_, r)| (Action::Replace, r)))
            .chain(plan.add.into_iter().map(|r| (Action::Add, r)));
        let mut results = futures::stream::iter(ops.map(|(action, route)| {
            let mut message = self.message(&route);
            if action == Action::Delete {
                // Match whatever scope the owned route has.
                message.header.scope = RouteScope::NoWhere;
            }
            let route_handle = self.handle.route();
            async move {
                let result = match action {
                    Action::Delete => route_handle.del(message).execute().await,
                    Action::Replace => route_handle.add(message).replace().execute().await,
                    _ => route_handle.add(message).execute().await,
                };
                (action, route, result)
            }
        }))
        .buffer_unordered(self.config.concurrency.max(1));
        while let Some((action, route, result)) = results.next().await {
            match result {
                Ok(()) => {
                    info!(%action, prefix = %route.prefix, table = self.config.table, "route changed");
                    match action {
                        Action::Add => report.added.push(route.prefix),
                        Action::Replace => report.replaced.push(route.prefix),
                        _ => report.removed.push(route.prefix),
                    }
                }
                Err(error) => failures.push(RouteFailure {
                    action,
                    route,
                    error,
                }),
            }
        }
        report.added.sort();
        report.replaced.sort();
        report.removed.sort();
        if failures.is_empty() {
            Ok(report)
        } else {
            failures.sort_by(|a, b| a.route.cmp(&b.route));
            Err(Error::Apply {
                applied: report,
                failures,
            })
        }
    }
}

const fn libc_enodev() -> i32 {
    19
}
