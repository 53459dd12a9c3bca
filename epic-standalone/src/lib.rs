//! `epic-standalone`: the standalone runtime of the engine, one machine
//! configured by a resources file. [`standalone::Standalone`] is a source
//! ([`resources`]: the file) and a list of sinks ([`sinks`]: the gateway
//! eBPF data path and hello verifier, the xDS cache, public addresses, a
//! real Envoy child process per proxy, routes, the status file), applied
//! to one [`round::Round`] per reconcile.
#![deny(missing_docs)]

pub mod addresses;
pub mod config;
pub mod envoy;
mod files;
mod hellos;
mod keys;
pub mod resources;
pub mod round;
pub mod sinks;
pub mod standalone;
mod state;
mod xds_identity;
