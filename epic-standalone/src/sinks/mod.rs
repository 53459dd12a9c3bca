//! The sinks of standalone mode, in the order a round applies them; each
//! file is one sink:
//!
//! 1. `data_path.rs` ([`DataPathSink`]): tunnels (with their keys) and
//!    endpoints in the eBPF maps and the hello verifier.
//! 2. `xds.rs` ([`XdsSink`]): snapshots to the ADS server's cache.
//! 3. `addresses.rs` ([`AddressSink`]): public addresses, before the
//!    proxies that bind them.
//! 4. `proxies.rs` ([`ProxySink`]): the Envoy child processes.
//! 5. `routes.rs` ([`RouteSink`], with `--announce`): routes for BGP, once
//!    the proxies serve.
//! 6. `status.rs` ([`StatusSink`]): `status.json` and the records.

mod addresses;
mod data_path;
mod proxies;
mod routes;
mod status;
mod xds;

pub use addresses::AddressSink;
pub use data_path::DataPathSink;
pub use proxies::ProxySink;
pub use routes::RouteSink;
pub use status::{GatewayStatusEntry, StatusFile, StatusSink};
pub use xds::XdsSink;
