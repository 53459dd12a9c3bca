//! The `Service`s mirrored gateways and routes use as platform backend
//! sets: their ports, with the endpoints of their EndpointSlices and the
//! nodes that host them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use epic_model as model;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::Skipped;
use super::names::{NameClaim, key_of, name_of};
use super::services::{port_protocol, port_u16};

/// The address of `node` tunnels use: an `InternalIP`, else an
/// `ExternalIP`, of a family in `families` first (IPv4 before IPv6).
fn node_address(node: &Node, families: &BTreeSet<bool>) -> Option<IpAddr> {
    let addresses: Vec<(&str, IpAddr)> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| a.address.parse().ok().map(|ip| (a.type_.as_str(), ip)))
        .collect();
    for kind in ["InternalIP", "ExternalIP"] {
        let of_kind = || addresses.iter().filter(move |(t, _)| *t == kind);
        // `families` holds `is_ipv6()`: false (IPv4) sorts first.
        for v6 in families {
            if let Some((_, ip)) = of_kind().find(|(_, ip)| ip.is_ipv6() == *v6) {
                return Some(*ip);
            }
        }
        if let Some((_, ip)) = of_kind().next() {
            return Some(*ip);
        }
    }
    None
}

/// The backend set of `svc`, whose EndpointSlices are `slices`; `None`
/// when it has no TCP or UDP port.
pub(super) fn backend_set(
    svc: &Service,
    slices: &[&EndpointSlice],
    nodes: &BTreeMap<&str, &Node>,
    cluster: &str,
    skipped: &mut Vec<Skipped>,
) -> Option<(NameClaim, model::BackendSetSpec)> {
    let (ns, name) = key_of(&svc.metadata);
    let object = format!("Service {ns}/{name}");
    let mut reader = SliceReader {
        ns: &ns,
        nodes,
        skipped,
        hosts: BTreeMap::new(),
    };
    let ports: Vec<model::BackendPort> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|sp| reader.backend_port(sp, slices))
        .collect();
    let hosts = reader.hosts;
    if ports.is_empty() {
        skipped.push(Skipped {
            object,
            reason: "no TCP or UDP port to serve".into(),
        });
        return None;
    }
    let nodes = hosts
        .iter()
        .filter_map(|(name, families)| {
            let node = nodes.get(name.as_str())?;
            Some(model::ClusterNode {
                name: name.clone(),
                address: node_address(node, families)?,
            })
        })
        .collect();
    Some((
        NameClaim {
            identity: format!("Service/{ns}/{name}"),
            base: format!("{ns}-{name}"),
            created: svc.metadata.creation_timestamp.clone(),
        },
        model::BackendSetSpec {
            cluster: cluster.to_owned(),
            namespace: ns,
            service: name,
            ports,
            nodes,
        },
    ))
}

/// The endpoints of one service port: (address, port) → (ready, node).
type PortEndpoints = BTreeMap<(IpAddr, u16), (bool, String)>;

/// Reads one Service's EndpointSlices into its backend ports, noting the
/// nodes that host the endpoints.
struct SliceReader<'a> {
    /// The Service's namespace.
    ns: &'a str,
    /// The cluster's nodes, by name.
    nodes: &'a BTreeMap<&'a str, &'a Node>,
    /// What could not be mirrored.
    skipped: &'a mut Vec<Skipped>,
    /// node name → families of its endpoints.
    hosts: BTreeMap<String, BTreeSet<bool>>,
}

impl SliceReader<'_> {
    /// The backend port for service port `sp`, with its endpoints in
    /// `slices`; `None` for a port nothing can use.
    fn backend_port(
        &mut self,
        sp: &ServicePort,
        slices: &[&EndpointSlice],
    ) -> Option<model::BackendPort> {
        let (Ok(protocol), Some(port)) = (port_protocol(sp.protocol.as_deref()), port_u16(sp.port))
        else {
            return None; // SCTP or out of range: nothing can use it.
        };
        let port_name = sp.name.as_deref().unwrap_or("");
        let protocol_name = match protocol {
            model::PortProtocol::Tcp => "TCP",
            model::PortProtocol::Udp => "UDP",
        };
        // Slices in name order.
        let mut endpoints = PortEndpoints::new();
        for slice in slices {
            self.read_slice(slice, port_name, protocol_name, &mut endpoints);
        }
        Some(model::BackendPort {
            port,
            protocol,
            endpoints: endpoints
                .into_iter()
                .map(|((address, port), (ready, node))| model::Endpoint {
                    address,
                    port,
                    ready,
                    node,
                })
                .collect(),
        })
    }

    /// Adds the endpoints of `slice` at its ports named `port_name` with
    /// `protocol_name` (the resolved target ports).
    fn read_slice(
        &mut self,
        slice: &EndpointSlice,
        port_name: &str,
        protocol_name: &str,
        endpoints: &mut PortEndpoints,
    ) {
        let slice_object = format!("EndpointSlice {}/{}", self.ns, name_of(&slice.metadata));
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            self.skipped.push(Skipped {
                object: slice_object,
                reason: format!("address type {} is not supported", slice.address_type),
            });
            return;
        }
        let targets: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol_name
            })
            .filter_map(|p| p.port.and_then(port_u16))
            .collect();
        for e in slice.endpoints.iter().flatten() {
            self.read_endpoint(e, &slice_object, &targets, endpoints);
        }
    }

    /// Adds endpoint `e` of `slice_object` at each of `targets`, unless the
    /// gateway could not reach it.
    fn read_endpoint(
        &mut self,
        e: &Endpoint,
        slice_object: &str,
        targets: &[u16],
        endpoints: &mut PortEndpoints,
    ) {
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        let addresses = e.addresses.join(",");
        let Some(node) = e.node_name.as_deref().filter(|n| !n.is_empty()) else {
            self.skipped.push(Skipped {
                object: format!("{slice_object} endpoint {addresses}"),
                reason: "no nodeName: the gateway cannot reach it".into(),
            });
            return;
        };
        let Some(host) = self.nodes.get(node) else {
            self.skipped.push(Skipped {
                object: format!("{slice_object} endpoint {addresses}"),
                reason: format!("node {node} is not in the cluster"),
            });
            return;
        };
        let mut parsed = Vec::new();
        for a in &e.addresses {
            match a.parse::<IpAddr>() {
                Ok(ip) => parsed.push(ip),
                Err(_) => self.skipped.push(Skipped {
                    object: format!("{slice_object} endpoint {a}"),
                    reason: "not an IP address".into(),
                }),
            }
        }
        let families: BTreeSet<bool> = parsed.iter().map(IpAddr::is_ipv6).collect();
        if node_address(host, &families).is_none() {
            self.skipped.push(Skipped {
                object: format!("{slice_object} endpoint {addresses}"),
                reason: format!("node {node} has no InternalIP or ExternalIP"),
            });
            return;
        }
        for ip in parsed {
            for target in targets {
                let entry = endpoints
                    .entry((ip, *target))
                    .or_insert_with(|| (ready, node.to_owned()));
                entry.0 |= ready;
                if node < entry.1.as_str() {
                    node.clone_into(&mut entry.1);
                }
            }
            if !targets.is_empty() {
                self.hosts
                    .entry(node.to_owned())
                    .or_default()
                    .insert(ip.is_ipv6());
            }
        }
    }
}
