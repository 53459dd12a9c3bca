//! Standalone-mode sinks: a local Envoy and local public addresses.
