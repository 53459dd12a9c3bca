//! The address sink: the served gateways' addresses on the public
//! interface, before the proxies that bind them.
//!
//! Owned addresses are those this node added. What it may add is recorded
//! (`state.json`) before it is added, so a crash part-way cannot leak an
//! address; an address that was on the interface before is never owned,
//! never removed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use epic_engine::runtime::{Sink, SinkFuture};

use crate::addresses::LocalAddresses;
use crate::config::StandaloneError;
use crate::round::Round;
use crate::state::save_state;

/// The public interface's addresses.
#[derive(Debug)]
pub struct AddressSink {
    addresses: LocalAddresses,
    state_dir: PathBuf,
}

impl AddressSink {
    /// A sink for the addresses of `addresses`' interface, recording them in
    /// `state_dir`.
    pub fn new(addresses: LocalAddresses, state_dir: PathBuf) -> Self {
        AddressSink {
            addresses,
            state_dir,
        }
    }

    async fn apply_addresses(&mut self, round: &mut Round) -> Result<(), StandaloneError> {
        let public: BTreeSet<IpAddr> = round
            .served_gateways()
            .flat_map(|g| g.status.addresses.iter().copied())
            .collect();
        let owned = round.state.addresses.clone();
        let present = self.addresses.list().await?;
        round.state.addresses = owned
            .iter()
            .copied()
            .chain(public.difference(&present).copied())
            .collect();
        save_state(&self.state_dir, &round.state)?;
        let changes = self.addresses.sync(&public, &owned).await?;
        round.report.addresses = (changes.added.clone(), changes.removed.clone());
        round.state.addresses = owned
            .intersection(&public)
            .copied()
            .chain(changes.added.iter().copied())
            .collect();
        save_state(&self.state_dir, &round.state)
    }
}

impl Sink<Round, StandaloneError> for AddressSink {
    fn name(&self) -> &'static str {
        "public addresses"
    }

    fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, StandaloneError> {
        Box::pin(self.apply_addresses(round))
    }
}
