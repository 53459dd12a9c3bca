//! Fuzz entry points for EPIC-RS parsers.
//!
//! Every cargo-fuzz target in `fuzz_targets/` is a one-line call into a
//! function here, so the same code runs under libFuzzer (`cargo fuzz run
//! <target>`) and, through `tests/corpus.rs`, over the committed corpora as an
//! ordinary test on stable Rust.

pub mod core;
pub mod gue;
pub mod ipam;
pub mod templates;

/// A fuzz entry point: takes arbitrary bytes, must never panic.
pub type Target = fn(&[u8]);

/// Every fuzz target by name (the name of its binary and corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("gue_packet", gue::gue_packet),
    ("gue_hello", gue::gue_hello),
    ("ipam_pool_set", ipam::ipam_pool_set),
    ("templates_render", templates::templates_render),
    ("resources_plan", core::resources_plan),
];
