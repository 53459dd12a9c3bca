//! Standalone-mode sinks (feature `local`, on by default): a real Envoy
//! child process per proxy, the public addresses on a local interface, and
//! [`standalone`], which wires them with the xDS server, the gateway eBPF
//! data path and hello verifier, and the route programmer.

pub mod addresses;
pub mod envoy;
mod files;
mod hellos;
pub mod standalone;
mod xds_identity;
