//! Builds the eBPF programs in `ebpf/` (nightly, bpfel-unknown-none) and
//! places the object in `OUT_DIR`, where `src/lib.rs` embeds it.
//!
//! There is no fallback: without the eBPF toolchain the build fails and says
//! to run `cargo xtask setup`.

use std::path::{Path, PathBuf};

#[path = "ebpf_toolchain.rs"]
mod ebpf_toolchain;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let crate_dir = manifest.join("ebpf");

    for path in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "ebpf/.cargo/config.toml",
        "ebpf_toolchain.rs",
    ] {
        println!("cargo::rerun-if-changed={}", manifest.join(path).display());
    }
    // The programs share epic-gue's wire and map definitions.
    let gue = manifest.join("../epic-gue");
    for path in ["src", "Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", gue.join(path).display());
    }
    for var in ["EPIC_CACHE_DIR", "XDG_CACHE_HOME", "HOME"] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    // Share one eBPF build across profiles and tools (build, clippy, doc):
    // `<target dir>/ebpf`, found as the ancestor of OUT_DIR that cargo tagged.
    let target_dir = out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(|dir| dir.join("ebpf"))
        .unwrap_or_else(|| out_dir.join("ebpf-target"));

    if let Err(message) = ebpf_toolchain::check_toolchain() {
        eprintln!("error: the eBPF toolchain is missing: {message}");
        std::process::exit(1);
    }
    match ebpf_toolchain::build_ebpf(&crate_dir, &target_dir) {
        Ok(object) => copy(&object, &out_dir.join("epic-bpf-ebpf.o")),
        Err(message) => {
            eprintln!("error: cannot build the EPIC-RS eBPF programs: {message}");
            std::process::exit(1);
        }
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        eprintln!(
            "error: cannot copy {} to {}: {e}",
            from.display(),
            to.display()
        );
        std::process::exit(1);
    }
}
