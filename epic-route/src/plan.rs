//! The sans-IO core: desired routes from proxy readiness, and the difference
//! between desired and observed owned routes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Where an owned route points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A device route (`dev <ifindex>`, scope link for IPv4).
    Device(u32),
    /// A blackhole route: announce-only, drops if it is ever consulted.
    Blackhole,
    /// Anything else found with our table and protocol (a gateway route, an
    /// unreachable route...): never desired, so always replaced or removed.
    Other(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Device(index) => write!(f, "dev #{index}"),
            Target::Blackhole => f.write_str("blackhole"),
            Target::Other(what) => f.write_str(what),
        }
    }
}

/// One owned route as the planner sees it: prefix, target and metric (the
/// table and protocol are those of the programmer, so they are implied).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteSpec {
    /// The destination prefix (always truncated: host bits zero).
    pub prefix: IpNet,
    /// Where it points.
    pub target: Target,
    /// The route metric (`RTA_PRIORITY`).
    pub metric: u32,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} metric {}", self.prefix, self.target, self.metric)
    }
}

/// The prefix announced for `address` when its pool aggregates to
/// `prefix_len` (32/128 for a single address): `address/prefix_len` with the
/// host bits cleared. `None` if the length is too long for the family.
pub fn aggregate(address: IpAddr, prefix_len: u8) -> Option<IpNet> {
    IpNet::new(address, prefix_len).ok().map(|net| net.trunc())
}

/// One public address and whether the proxy serving it on this node is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The public address Envoy listens on.
    pub address: IpAddr,
    /// The pool's aggregation prefix length (32 or 128: announce the address alone).
    pub aggregation: u8,
    /// Whether the local proxy for this address is ready to take traffic.
    pub proxy_ready: bool,
}

/// The set of prefixes this node should announce.
///
/// Built from [`Announcement`]s: a prefix is desired only while at least one
/// of its addresses has a ready proxy on this node. Dropping an address (or
/// marking its proxy not ready) and calling
/// [`RouteProgrammer::sync`](crate::RouteProgrammer::sync) withdraws the
/// route *before* the caller deletes the proxy: see the crate docs on draining.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRoutes {
    prefixes: BTreeSet<IpNet>,
}

impl DesiredRoutes {
    /// No routes.
    pub fn new() -> DesiredRoutes {
        DesiredRoutes::default()
    }

    /// Desires the aggregate of `announcement` if its proxy is ready; returns
    /// whether it was taken (false when not ready or the length is invalid).
    pub fn announce(&mut self, announcement: Announcement) -> bool {
        if !announcement.proxy_ready {
            return false;
        }
        match aggregate(announcement.address, announcement.aggregation) {
            Some(prefix) => {
                self.prefixes.insert(prefix);
                true
            }
            None => false,
        }
    }

    /// Desires `prefix` directly (host bits are cleared).
    pub fn insert(&mut self, prefix: IpNet) {
        self.prefixes.insert(prefix.trunc());
    }

    /// Stops desiring `prefix`; returns whether it was desired.
    pub fn remove(&mut self, prefix: &IpNet) -> bool {
        self.prefixes.remove(&prefix.trunc())
    }

    /// The desired prefixes, in order.
    pub fn prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.prefixes.iter()
    }

    /// How many prefixes are desired.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether nothing is desired.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }
}

impl FromIterator<Announcement> for DesiredRoutes {
    fn from_iter<I: IntoIterator<Item = Announcement>>(iter: I) -> Self {
        let mut desired = DesiredRoutes::new();
        for announcement in iter {
            desired.announce(announcement);
        }
        desired
    }
}

impl FromIterator<IpNet> for DesiredRoutes {
    fn from_iter<I: IntoIterator<Item = IpNet>>(iter: I) -> Self {
        let mut desired = DesiredRoutes::new();
        for prefix in iter {
            desired.insert(prefix);
        }
        desired
    }
}

/// What to change so the owned routes become the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to add (no owned route at that prefix and metric).
    pub add: Vec<RouteSpec>,
    /// Owned routes to replace in place, atomically (`NLM_F_REPLACE`): same
    /// prefix and metric, wrong target. `(old, new)`.
    pub replace: Vec<(RouteSpec, RouteSpec)>,
    /// Owned routes to delete: not desired (withdrawals), or duplicates.
    pub delete: Vec<RouteSpec>,
}

impl Plan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// Computes the difference between `desired` and `observed` owned routes.
///
/// Routes present in both are left alone; a desired route whose prefix and
/// metric are owned but with another target is replaced in place (no
/// withdrawal in between); the rest of `observed` is deleted and the rest of
/// `desired` added. Applying the plan to `observed` yields `desired`.
pub fn plan(desired: &BTreeSet<RouteSpec>, observed: &BTreeSet<RouteSpec>) -> Plan {
    let mut missing: Vec<RouteSpec> = desired.difference(observed).cloned().collect();
    let mut extra: BTreeMap<(IpNet, u32), Vec<RouteSpec>> = BTreeMap::new();
    for route in observed.difference(desired) {
        extra
            .entry((route.prefix, route.metric))
            .or_default()
            .push(route.clone());
    }
    let mut result = Plan::default();
    missing.retain(|new| {
        match extra
            .get_mut(&(new.prefix, new.metric))
            .and_then(|olds| olds.pop())
        {
            Some(old) => {
                result.replace.push((old, new.clone()));
                false
            }
            None => true,
        }
    });
    result.add = missing;
    result.delete = extra.into_values().flatten().collect();
    result.delete.sort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(prefix: &str, target: Target) -> RouteSpec {
        RouteSpec {
            prefix: prefix.parse().unwrap(),
            target,
            metric: 1024,
        }
    }

    fn apply(observed: &BTreeSet<RouteSpec>, plan: &Plan) -> BTreeSet<RouteSpec> {
        let mut now = observed.clone();
        for route in &plan.delete {
            assert!(now.remove(route), "deleting {route} which is not there");
        }
        for (old, new) in &plan.replace {
            assert!(now.remove(old), "replacing {old} which is not there");
            assert_eq!((old.prefix, old.metric), (new.prefix, new.metric));
            now.insert(new.clone());
        }
        for route in &plan.add {
            assert!(now.insert(route.clone()), "adding {route} twice");
        }
        now
    }

    #[test]
    fn aggregation_clears_host_bits() {
        let a: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(aggregate(a, 24), Some("203.0.113.0/24".parse().unwrap()));
        assert_eq!(aggregate(a, 32), Some("203.0.113.77/32".parse().unwrap()));
        assert_eq!(aggregate(a, 33), None);
        let b: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        assert_eq!(aggregate(b, 64), Some("2001:db8:1:2::/64".parse().unwrap()));
    }

    #[test]
    fn only_ready_proxies_are_desired_and_aggregates_stay_while_one_is_ready() {
        let at = |addr: &str, ready| Announcement {
            address: addr.parse().unwrap(),
            aggregation: 24,
            proxy_ready: ready,
        };
        let desired: DesiredRoutes = [
            at("203.0.113.1", false),
            at("203.0.113.2", true),
            at("198.51.100.1", false),
        ]
        .into_iter()
        .collect();
        let prefixes: Vec<_> = desired.prefixes().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["203.0.113.0/24"]);
        let none: DesiredRoutes = [at("203.0.113.1", false)].into_iter().collect();
        assert!(none.is_empty());
    }

    #[test]
    fn a_wrong_target_is_replaced_in_place_and_extras_deleted() {
        let desired: BTreeSet<_> = [
            spec("203.0.113.1/32", Target::Device(3)),
            spec("203.0.113.2/32", Target::Device(3)),
        ]
        .into();
        let observed: BTreeSet<_> = [
            spec("203.0.113.1/32", Target::Device(3)),
            spec("203.0.113.2/32", Target::Blackhole),
            spec("203.0.113.3/32", Target::Device(3)),
        ]
        .into();
        let p = plan(&desired, &observed);
        assert!(p.add.is_empty());
        assert_eq!(
            p.replace,
            [(
                spec("203.0.113.2/32", Target::Blackhole),
                spec("203.0.113.2/32", Target::Device(3))
            )]
        );
        assert_eq!(p.delete, [spec("203.0.113.3/32", Target::Device(3))]);
        assert_eq!(apply(&observed, &p), desired);
        assert!(plan(&desired, &desired).is_empty());
    }

    fn arb_spec() -> impl Strategy<Value = RouteSpec> {
        (
            0u8..8,
            prop::bool::ANY,
            prop_oneof![
                (1u32..4).prop_map(Target::Device),
                Just(Target::Blackhole),
                Just(Target::Other("unreachable".into())),
            ],
            prop_oneof![Just(1024u32), Just(100u32)],
        )
            .prop_map(|(host, v6, target, metric)| {
                let prefix: IpNet = if v6 {
                    format!("2001:db8::{host}/128").parse().unwrap()
                } else {
                    format!("203.0.113.{host}/32").parse().unwrap()
                };
                RouteSpec {
                    prefix,
                    target,
                    metric,
                }
            })
    }

    proptest! {
        #[test]
        fn applying_the_plan_reaches_desired_and_is_then_a_no_op(
            desired in prop::collection::btree_set(arb_spec(), 0..12),
            observed in prop::collection::btree_set(arb_spec(), 0..12),
        ) {
            let p = plan(&desired, &observed);
            let reached = apply(&observed, &p);
            prop_assert_eq!(&reached, &desired);
            prop_assert!(plan(&desired, &reached).is_empty());
            // Nothing desired and already there is ever touched.
            for kept in desired.intersection(&observed) {
                prop_assert!(!p.delete.contains(kept));
                prop_assert!(p.replace.iter().all(|(old, _)| old != kept));
            }
        }
    }
}
