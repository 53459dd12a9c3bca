//! Endpoint admission: which pod and cluster-node addresses a tenant's
//! backends may use.
//!
//! Envoy connects to whatever endpoint address a gateway's configuration
//! holds, and the gateway node's data path tunnels it to the cluster node.
//! An endpoint is tenant input, so the plan renders only the endpoints this
//! module admits:
//!
//! - never a special-purpose address: unspecified, loopback, link-local,
//!   multicast, broadcast and reserved, IPv4-mapped or -translated IPv6
//!   (Envoy would reach the gateway node itself or its link);
//! - never an address of the platform: a gateway node's tunnel address, an
//!   address pool (a gateway's own public address) or a network the
//!   operator declares as the platform's (`DesiredInputs::platform_networks`:
//!   node, service and BGP peer networks, the API server, the ADS server);
//! - when the tenant lists its `clusterNetworks`, only addresses inside
//!   them;
//! - only on a cluster node the backend set lists, whose own address passes
//!   the same rules: an endpoint no tunnel reaches is never rendered.
//!
//! ```
//! use epic_engine::admission::{AddressRefusal, Platform, TenantNetworks};
//! use epic_ipam::PoolSet;
//!
//! let pools = PoolSet::new(vec![epic_ipam::PoolSpec::new("public", ["203.0.113.0/28"])]).unwrap();
//! let networks = ["198.51.100.0/24".parse().unwrap()];
//! let platform = Platform::new(&[], &networks, &pools);
//! let (tenant, problems) = TenantNetworks::parse(Some(&["198.18.0.0/16".to_owned()]));
//! assert!(problems.is_empty());
//! assert_eq!(platform.check("198.18.1.5".parse().unwrap(), &tenant), Ok(()));
//! assert_eq!(platform.check("127.0.0.1".parse().unwrap(), &tenant), Err(AddressRefusal::Loopback));
//! assert_eq!(
//!     platform.check("203.0.113.4".parse().unwrap(), &tenant),
//!     Err(AddressRefusal::Pool("public".into()))
//! );
//! assert_eq!(
//!     platform.check("192.0.2.7".parse().unwrap(), &tenant),
//!     Err(AddressRefusal::OutsideTenantNetworks)
//! );
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use epic_ipam::PoolSet;
pub use ipnet::IpNet;

use crate::plan::GatewayNode;
use epic_model::{BackendPort, BackendSet, Endpoint};

/// Why an address may not be an endpoint or a cluster node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    /// `0.0.0.0` or `::`.
    #[error("the unspecified address")]
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    #[error("a loopback address")]
    Loopback,
    /// `169.254.0.0/16` or `fe80::/10`.
    #[error("a link-local address")]
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    #[error("a multicast address")]
    Multicast,
    /// Another special-purpose range (`0.0.0.0/8`, `240.0.0.0/4` with the
    /// broadcast address, IPv4-compatible IPv6).
    #[error("in the special-purpose range {0}")]
    SpecialPurpose(IpNet),
    /// An IPv6 address that stands for an IPv4 one (`::ffff:0:0/96`,
    /// `64:ff9b::/96`): write the IPv4 address.
    #[error("an IPv6 address that stands for an IPv4 one")]
    Ipv4Translated,
    /// The tunnel address of a gateway node.
    #[error("the address of gateway node {0}")]
    GatewayNode(String),
    /// Inside an address pool: a gateway's public address.
    #[error("inside address pool {0}")]
    Pool(String),
    /// Inside a network the platform reserves.
    #[error("inside the platform network {0}")]
    Platform(IpNet),
    /// Outside every network the tenant lists.
    #[error("outside the tenant's clusterNetworks")]
    OutsideTenantNetworks,
}

/// Why an endpoint is not rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefusal {
    /// Its address is refused.
    #[error("its address is {0}")]
    Address(AddressRefusal),
    /// The backend set does not list its node: no tunnel reaches it.
    #[error("it is on node {0:?}, which spec.nodes does not list: no tunnel reaches it")]
    UnknownNode(String),
    /// The tenant's endpoint limit is reached.
    #[error("the tenant's limit of {0} endpoints is reached")]
    TenantLimit(u32),
    /// Its node's address is refused: no tunnel may reach it.
    #[error("its node {node:?} has address {address}, which is {reason}")]
    NodeAddress {
        /// The node.
        node: String,
        /// The node's address.
        address: IpAddr,
        /// Why that address is refused.
        reason: AddressRefusal,
    },
}

/// A network as operators and tenants write one: a CIDR (host bits
/// cleared) or a single address.
///
/// ```
/// use epic_engine::admission::parse_network;
/// assert_eq!(parse_network("10.96.0.1").unwrap().to_string(), "10.96.0.1/32");
/// assert_eq!(parse_network("10.96.3.4/12").unwrap().to_string(), "10.96.0.0/12");
/// assert!(parse_network("10.96.0.0/33").is_err());
/// ```
pub fn parse_network(text: &str) -> Result<IpNet, InvalidNetwork> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| InvalidNetwork(text.to_owned()))
}

/// Text that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a CIDR nor an IP address")]
pub struct InvalidNetwork(pub String);

/// The networks a tenant's clusters may use, parsed from `clusterNetworks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantNetworks {
    /// `None`: the tenant lists none, every address the platform does not
    /// reserve is admitted.
    networks: Option<Vec<IpNet>>,
}

impl TenantNetworks {
    /// A tenant that lists no networks: every address the platform does
    /// not reserve.
    pub const UNLISTED: TenantNetworks = TenantNetworks { networks: None };

    /// Parses `clusterNetworks` (CIDRs or single addresses). An entry that
    /// does not parse is left out and reported: the tenant admits less,
    /// never more.
    pub fn parse(entries: Option<&[String]>) -> (TenantNetworks, Vec<String>) {
        let Some(entries) = entries else {
            return (TenantNetworks::default(), Vec::new());
        };
        let mut networks = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_network(entry) {
                Ok(net) => networks.push(net),
                Err(e) => problems.push(format!("clusterNetworks[{i}]: {e}: left out")),
            }
        }
        (
            TenantNetworks {
                networks: Some(networks),
            },
            problems,
        )
    }

    fn admits(&self, address: IpAddr) -> bool {
        self.networks
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&address)))
    }
}

/// What the platform reserves for itself, for one plan.
#[derive(Debug, Clone, Copy)]
pub struct Platform<'a> {
    nodes: &'a [GatewayNode],
    networks: &'a [IpNet],
    pools: &'a PoolSet,
}

impl<'a> Platform<'a> {
    /// The platform of `nodes`, the declared `networks` and `pools`.
    pub fn new(nodes: &'a [GatewayNode], networks: &'a [IpNet], pools: &'a PoolSet) -> Self {
        Platform {
            nodes,
            networks,
            pools,
        }
    }

    /// Whether `address` may be an endpoint or cluster node of a tenant with
    /// `tenant` networks.
    pub fn check(&self, address: IpAddr, tenant: &TenantNetworks) -> Result<(), AddressRefusal> {
        special_purpose(address)?;
        if let Some(node) = self.nodes.iter().find(|n| n.address == address) {
            return Err(AddressRefusal::GatewayNode(node.name.clone()));
        }
        if let Some(pool) = self.pools.pool_of(address) {
            return Err(AddressRefusal::Pool(pool.name().to_owned()));
        }
        if let Some(net) = self.networks.iter().find(|n| n.contains(&address)) {
            return Err(AddressRefusal::Platform(*net));
        }
        if !tenant.admits(address) {
            return Err(AddressRefusal::OutsideTenantNetworks);
        }
        Ok(())
    }
}

/// One port of a backend set, its endpoints split into the admitted ones
/// (each with its node's address, where its tunnel ends) and the refused.
#[derive(Debug, Clone)]
pub struct AdmittedPort<'s> {
    /// The backend set.
    pub set: &'s BackendSet,
    /// The port.
    pub port: &'s BackendPort,
    /// Admitted endpoints with their node's address.
    pub endpoints: Vec<(&'s Endpoint, IpAddr)>,
    /// Refused endpoints and why.
    pub refused: Vec<(&'s Endpoint, EndpointRefusal)>,
}

impl Platform<'_> {
    /// Every port of `set` with its endpoints admitted or refused for a
    /// tenant with `tenant` networks.
    pub fn admit<'s>(&self, set: &'s BackendSet, tenant: &TenantNetworks) -> Vec<AdmittedPort<'s>> {
        let nodes: Vec<(&str, IpAddr, Result<(), AddressRefusal>)> = set
            .spec
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.address, self.check(n.address, tenant)))
            .collect();
        let endpoint = |e: &Endpoint| -> Result<IpAddr, EndpointRefusal> {
            self.check(e.address, tenant)
                .map_err(EndpointRefusal::Address)?;
            let Some((_, address, node)) = nodes.iter().find(|(name, ..)| *name == e.node) else {
                return Err(EndpointRefusal::UnknownNode(e.node.clone()));
            };
            node.clone()
                .map_err(|reason| EndpointRefusal::NodeAddress {
                    node: e.node.clone(),
                    address: *address,
                    reason,
                })?;
            Ok(*address)
        };
        set.spec
            .ports
            .iter()
            .map(|port| {
                let mut admitted = AdmittedPort {
                    set,
                    port,
                    endpoints: Vec::new(),
                    refused: Vec::new(),
                };
                for e in &port.endpoints {
                    match endpoint(e) {
                        Ok(node) => admitted.endpoints.push((e, node)),
                        Err(reason) => admitted.refused.push((e, reason)),
                    }
                }
                admitted
            })
            .collect()
    }
}

/// Special-purpose ranges the standard library has no predicate for.
const THIS_NETWORK: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8);
const RESERVED_V4: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(240, 0, 0, 0)), 4);
const IPV4_COMPATIBLE: IpNet = IpNet::new_assert(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 96);
/// IPv6 ranges that stand for IPv4 addresses: mapped, and NAT64.
const IPV4_TRANSLATED: [IpNet; 2] = [
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)), 96),
    IpNet::new_assert(
        IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)),
        96,
    ),
];

/// Refuses the special-purpose addresses no pod may have.
fn special_purpose(address: IpAddr) -> Result<(), AddressRefusal> {
    if address.is_unspecified() {
        return Err(AddressRefusal::Unspecified);
    }
    if address.is_loopback() {
        return Err(AddressRefusal::Loopback);
    }
    if address.is_multicast() {
        return Err(AddressRefusal::Multicast);
    }
    let link_local = match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if link_local {
        return Err(AddressRefusal::LinkLocal);
    }
    if IPV4_TRANSLATED.iter().any(|n| n.contains(&address)) {
        return Err(AddressRefusal::Ipv4Translated);
    }
    match [THIS_NETWORK, RESERVED_V4, IPV4_COMPATIBLE]
        .into_iter()
        .find(|n| n.contains(&address))
    {
        Some(net) => Err(AddressRefusal::SpecialPurpose(net)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(address: &str) -> Option<AddressRefusal> {
        special_purpose(address.parse().unwrap()).err()
    }

    #[test]
    fn special_purpose_addresses_are_refused_with_their_reason() {
        assert_eq!(refusal("0.0.0.0"), Some(AddressRefusal::Unspecified));
        assert_eq!(refusal("::"), Some(AddressRefusal::Unspecified));
        assert_eq!(refusal("127.8.9.10"), Some(AddressRefusal::Loopback));
        assert_eq!(refusal("::1"), Some(AddressRefusal::Loopback));
        assert_eq!(refusal("169.254.169.254"), Some(AddressRefusal::LinkLocal));
        assert_eq!(refusal("fe80::1"), Some(AddressRefusal::LinkLocal));
        assert_eq!(refusal("224.0.0.5"), Some(AddressRefusal::Multicast));
        assert_eq!(refusal("ff02::1"), Some(AddressRefusal::Multicast));
        assert_eq!(
            refusal("255.255.255.255"),
            Some(AddressRefusal::SpecialPurpose(
                "240.0.0.0/4".parse().unwrap()
            ))
        );
        assert_eq!(
            refusal("0.1.2.3"),
            Some(AddressRefusal::SpecialPurpose("0.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            refusal("::ffff:127.0.0.1"),
            Some(AddressRefusal::Ipv4Translated)
        );
        assert_eq!(
            refusal("64:ff9b::c000:201"),
            Some(AddressRefusal::Ipv4Translated)
        );
        assert_eq!(
            refusal("::7f00:1"),
            Some(AddressRefusal::SpecialPurpose("::/96".parse().unwrap()))
        );
        for pod in [
            "10.244.1.5",
            "198.18.0.9",
            "fd00::5",
            "2001:db8::5",
            "100.64.0.1",
        ] {
            assert_eq!(refusal(pod), None, "{pod}");
        }
    }

    #[test]
    fn the_platform_comes_before_the_tenant() {
        let pools =
            PoolSet::new(vec![epic_ipam::PoolSpec::new("public", ["203.0.113.0/28"])]).unwrap();
        let nodes = [GatewayNode {
            name: "gw-1".into(),
            address: "192.0.2.1".parse().unwrap(),
        }];
        let networks = ["198.51.100.0/24".parse().unwrap()];
        let platform = Platform::new(&nodes, &networks, &pools);
        let (everything, _) = TenantNetworks::parse(Some(&["0.0.0.0/0".to_owned()]));
        let check = |a: &str| platform.check(a.parse().unwrap(), &everything);
        assert_eq!(
            check("192.0.2.1"),
            Err(AddressRefusal::GatewayNode("gw-1".into()))
        );
        assert_eq!(
            check("203.0.113.15"),
            Err(AddressRefusal::Pool("public".into()))
        );
        assert_eq!(
            check("198.51.100.9"),
            Err(AddressRefusal::Platform(networks[0]))
        );
        assert_eq!(check("192.0.2.2"), Ok(()));
    }

    #[test]
    fn a_bad_network_entry_admits_less_never_more() {
        let (tenant, problems) = TenantNetworks::parse(Some(&[
            "10.244.0.0/16".to_owned(),
            "10.0.0.0/300".to_owned(),
            "fd00::7".to_owned(),
        ]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("clusterNetworks[1]"), "{problems:?}");
        assert!(tenant.admits("10.244.3.4".parse().unwrap()));
        assert!(tenant.admits("fd00::7".parse().unwrap()));
        assert!(!tenant.admits("fd00::8".parse().unwrap()));
        assert!(!tenant.admits("10.0.0.1".parse().unwrap()));
        // An empty list admits nothing; no list admits everything.
        let (none, _) = TenantNetworks::parse(Some(&[]));
        assert!(!none.admits("10.244.3.4".parse().unwrap()));
        assert!(TenantNetworks::default().admits("10.244.3.4".parse().unwrap()));
    }
}
