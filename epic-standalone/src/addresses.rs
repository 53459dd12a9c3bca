//! The public addresses a gateway serves, kept on a local interface.
//!
//! In standalone mode there is no load balancer in front of Envoy: the
//! gateway's public addresses go onto a local interface (usually `lo`) so
//! Envoy can bind its listeners to them. [`LocalAddresses`] keeps that
//! interface in step with the desired set over rtnetlink: it adds each missing
//! address as a host address (`/32` or `/128`; IPv6 without duplicate address
//! detection, so it is usable at once) and removes the addresses it owns that
//! are no longer wanted. Addresses it does not own are never touched.
//!
//! It holds no state besides its netlink socket: every call reads the
//! interface back, so a restarted process adopts what it finds, given the
//! same `owned` set.
//!
//! ```no_run
//! use std::collections::BTreeSet;
//! use std::net::IpAddr;
//! use epic_standalone::addresses::LocalAddresses;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let lo = LocalAddresses::connect("lo")?;
//! let desired: BTreeSet<IpAddr> = ["192.0.2.10".parse()?, "2001:db8::10".parse()?].into();
//! // First run: nothing owned yet; later runs pass what earlier runs added.
//! let report = lo.sync(&desired, &BTreeSet::new()).await?;
//! println!("added {:?}, removed {:?}", report.added, report.removed);
//! assert!(lo.list().await?.is_superset(&desired));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

/// Errors of [`LocalAddresses`]; each names the interface, and the address
/// where there is one, with the netlink error.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket for interface {interface:?}: {source}")]
    Socket {
        /// The interface it was meant for.
        interface: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interface does not exist (in this network namespace).
    #[error("interface {name:?} does not exist")]
    InterfaceNotFound {
        /// The interface.
        name: String,
    },
    /// Looking the interface up failed.
    #[error("cannot look up interface {name:?}: {}", reason(error))]
    InterfaceLookup {
        /// The interface.
        name: String,
        /// The netlink error.
        error: rtnetlink::Error,
    },
    /// Reading the interface's addresses failed.
    #[error(
        "cannot read the addresses of interface {interface:?}: {}",
        reason(error)
    )]
    List {
        /// The interface.
        interface: String,
        /// The netlink error.
        error: rtnetlink::Error,
    },
    /// Adding an address failed.
    #[error("cannot add {address} to interface {interface:?}: {}", reason(error))]
    Add {
        /// The address.
        address: IpAddr,
        /// The interface.
        interface: String,
        /// The netlink error.
        error: rtnetlink::Error,
    },
    /// Removing an address failed.
    #[error(
        "cannot remove {address} from interface {interface:?}: {}",
        reason(error)
    )]
    Remove {
        /// The address.
        address: IpAddr,
        /// The interface.
        interface: String,
        /// The netlink error.
        error: rtnetlink::Error,
    },
}

/// The netlink error as the OS describes it ("File exists (os error 17)").
fn reason(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_string(),
        other => other.to_string(),
    }
}

/// The positive errno of a netlink error, if it is one.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

/// What a [`LocalAddresses::sync`] changed, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressReport {
    /// Addresses added to the interface.
    pub added: Vec<IpAddr>,
    /// Addresses removed from the interface.
    pub removed: Vec<IpAddr>,
}

impl AddressReport {
    /// Whether the sync changed nothing.
    pub fn is_noop(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// One address on the interface, as dumped.
struct Assigned {
    address: IpAddr,
    host: bool,
    message: AddressMessage,
}

/// Keeps a set of host addresses on one local interface, over rtnetlink.
///
/// The interface is looked up by name on every call, so it may be created
/// after [`connect`](LocalAddresses::connect) or recreated meanwhile.
#[derive(Debug)]
pub struct LocalAddresses {
    interface: String,
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for LocalAddresses {
    fn drop(&mut self) {
        // Addresses stay: dropping must not take the gateway off the air.
        self.connection.abort();
    }
}

impl LocalAddresses {
    /// Opens a netlink socket in the calling thread's network namespace for
    /// `interface`, and spawns its connection task on the current tokio
    /// runtime (so it must be called inside one). The interface is resolved
    /// by the calls that need it; a missing one is
    /// [`AddressError::InterfaceNotFound`] there.
    pub fn connect(interface: &str) -> Result<Self, AddressError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| AddressError::Socket {
                interface: interface.to_owned(),
                source,
            })?;
        let connection = tokio::spawn(connection);
        Ok(LocalAddresses {
            interface: interface.to_owned(),
            handle,
            connection,
        })
    }

    /// The interface this keeps addresses on.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    async fn index(&self) -> Result<u32, AddressError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(self.not_found()),
            Err(e) if errno(&e) == Some(ENODEV) => Err(self.not_found()),
            Err(error) => Err(AddressError::InterfaceLookup {
                name: self.interface.clone(),
                error,
            }),
        }
    }

    fn not_found(&self) -> AddressError {
        AddressError::InterfaceNotFound {
            name: self.interface.clone(),
        }
    }

    /// Every address on the interface, with its prefix length.
    async fn assigned(&self, index: u32) -> Result<Vec<Assigned>, AddressError> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        request.message_mut().header.index = index;
        let mut stream = request.execute();
        let mut found = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(message)) => {
                    if message.header.index != index {
                        continue;
                    }
                    if let Some(address) = local_address(&message) {
                        let full = if address.is_ipv4() { 32 } else { 128 };
                        found.push(Assigned {
                            address,
                            host: message.header.prefix_len == full,
                            message,
                        });
                    }
                }
                Ok(None) => return Ok(found),
                Err(error) => {
                    return Err(AddressError::List {
                        interface: self.interface.clone(),
                        error,
                    });
                }
            }
        }
    }

    /// The host addresses (`/32` or `/128`) on the interface.
    pub async fn list(&self) -> Result<BTreeSet<IpAddr>, AddressError> {
        let index = self.index().await?;
        Ok(self
            .assigned(index)
            .await?
            .into_iter()
            .filter(|a| a.host)
            .map(|a| a.address)
            .collect())
    }

    /// Makes the interface carry every `desired` address, and none of the
    /// `owned` addresses that are not desired; reports what it changed.
    ///
    /// A desired address already on the interface (with any prefix length)
    /// is left as it is; a missing one is added as `/32` or `/128`. An owned,
    /// undesired address is removed only in its host form (`/32`, `/128`),
    /// the form this adds. Addresses neither desired nor owned are never
    /// touched. Idempotent; stops at the first failure, and a retry picks up
    /// where it stopped.
    pub async fn sync(
        &self,
        desired: &BTreeSet<IpAddr>,
        owned: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, AddressError> {
        let index = self.index().await?;
        let assigned = self.assigned(index).await?;
        let present: BTreeSet<IpAddr> = assigned.iter().map(|a| a.address).collect();
        let mut report = AddressReport::default();
        for stale in assigned
            .into_iter()
            .filter(|a| a.host && owned.contains(&a.address) && !desired.contains(&a.address))
        {
            match self.handle.address().del(stale.message).execute().await {
                Ok(()) => report.removed.push(stale.address),
                // Gone meanwhile: what we wanted.
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                Err(error) => {
                    return Err(AddressError::Remove {
                        address: stale.address,
                        interface: self.interface.clone(),
                        error,
                    });
                }
            }
        }
        for &address in desired.difference(&present) {
            match self.add(index, address).await {
                Ok(()) => report.added.push(address),
                // Added by someone else meanwhile: present, which is the goal.
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(error) => {
                    return Err(AddressError::Add {
                        address,
                        interface: self.interface.clone(),
                        error,
                    });
                }
            }
        }
        report.added.sort();
        report.removed.sort();
        Ok(report)
    }

    async fn add(&self, index: u32, address: IpAddr) -> Result<(), rtnetlink::Error> {
        let full = if address.is_ipv4() { 32 } else { 128 };
        let mut request = self.handle.address().add(index, address, full);
        if address.is_ipv6() {
            // Usable at once: no duplicate address detection.
            let message = request.message_mut();
            message.header.flags = AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await
    }
}

/// The interface's own address in a dumped message: `IFA_LOCAL` if present
/// (on point-to-point links `IFA_ADDRESS` is the peer), else `IFA_ADDRESS`.
fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_attribute_wins_over_the_peer_address() {
        let mut message = AddressMessage::default();
        message
            .attributes
            .push(AddressAttribute::Address("192.0.2.1".parse().unwrap()));
        assert_eq!(local_address(&message), Some("192.0.2.1".parse().unwrap()));
        message
            .attributes
            .push(AddressAttribute::Local("192.0.2.2".parse().unwrap()));
        assert_eq!(local_address(&message), Some("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn errors_name_address_interface_and_reason() {
        let error = AddressError::Add {
            address: "192.0.2.10".parse().unwrap(),
            interface: "lo".into(),
            error: rtnetlink::Error::RequestFailed,
        };
        assert_eq!(
            error.to_string(),
            "cannot add 192.0.2.10 to interface \"lo\": A netlink request failed"
        );
    }
}
