//! `epic-standalone`: the standalone runtime of the engine, one machine
//! configured by a resources file: a real Envoy child process per proxy,
//! the public addresses on a local interface, and [`standalone`], which
//! wires them with the xDS server, the gateway eBPF data path and hello
//! verifier, and the route programmer.
#![deny(missing_docs)]

pub mod addresses;
pub mod envoy;
mod files;
mod hellos;
pub mod standalone;
mod xds_identity;
