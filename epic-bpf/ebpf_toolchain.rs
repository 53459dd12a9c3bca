// The eBPF toolchain, in one place.
//
// This file is compiled twice: as a module of `epic-bpf`'s build script (which
// builds and embeds the eBPF object) and as a module of `xtask` (whose `setup`
// installs the toolchain and whose `build-ebpf` runs the same build). Keeping
// it in one file means the cache location, the bpf-linker version and the
// build command cannot drift apart. It uses only `std`.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bpf-linker release we build.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The cargo feature of bpf-linker that matches the nightly toolchain's LLVM.
pub const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// The one dated nightly toolchain the project uses: the eBPF crate's build
/// and fuzzing. `cargo xtask setup` installs it (with `rust-src`) when absent;
/// bpf-linker's cache is keyed on its libLLVM. Change it here and nowhere else.
pub const NIGHTLY: &str = "nightly-2026-05-19";
/// The eBPF target triple.
pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// The eBPF program crate's binary name (the object file cargo writes).
pub const EBPF_BINARY: &str = "epic-bpf-ebpf";

/// What to tell a user whose eBPF toolchain is missing or broken.
pub const RUN_SETUP: &str = "run `cargo xtask setup` (as root on a fresh machine) to install it";

/// Where EPIC-RS caches tools outside the repository:
/// `$EPIC_CACHE_DIR`, else `$XDG_CACHE_HOME/epic`, else `$HOME/.cache/epic`.
pub fn cache_root() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("EPIC_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("epic"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("epic")),
        None => Err("cannot locate a cache directory: set EPIC_CACHE_DIR or HOME".into()),
    }
}

/// A `rustup` command for the nightly toolchain, with the variables that an
/// outer cargo (build script, clippy, xtask) sets removed, so they cannot leak
/// into the nested build.
pub fn nightly(program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY, program]);
    for key in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

/// The nightly toolchain's libLLVM: its directory and file name
/// (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`). bpf-linker must link exactly
/// this library, and is rebuilt when its name changes.
pub fn nightly_libllvm() -> Result<(PathBuf, String), String> {
    let out = nightly("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run `rustup run {NIGHTLY} rustc`: {e}; install rustup"))?;
    if !out.status.success() {
        return Err(format!(
            "the `{NIGHTLY}` toolchain is not installed ({}); {RUN_SETUP}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = sysroot.join("lib");
    let entries =
        std::fs::read_dir(&lib).map_err(|e| format!("cannot list {}: {e}", lib.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .collect();
    names.sort();
    match names.pop() {
        Some(name) => Ok((lib, name)),
        None => Err(format!(
            "no libLLVM.so.*-rust-* in {}: the `{NIGHTLY}` toolchain has no shared LLVM",
            lib.display()
        )),
    }
}

/// The cache directory of the bpf-linker built for one libLLVM.
pub fn bpf_linker_home(libllvm_name: &str) -> Result<PathBuf, String> {
    Ok(cache_root()?
        .join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
        .join(NIGHTLY)
        .join(libllvm_name))
}

/// The installed bpf-linker binary for the current nightly, if it exists.
pub fn bpf_linker() -> Result<PathBuf, String> {
    let (_, name) = nightly_libllvm()?;
    let path = bpf_linker_home(&name)?.join("bin").join("bpf-linker");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "bpf-linker {BPF_LINKER_VERSION} for {name} is not installed (looked for {}): {RUN_SETUP}",
            path.display()
        ))
    }
}

/// The directory holding the nightly's `rust-src`, needed for `-Z build-std`.
pub fn rust_src_present() -> Result<bool, String> {
    let out = nightly("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run `rustup run {NIGHTLY} rustc`: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file())
}

/// Checks that everything the eBPF build needs is installed.
pub fn check_toolchain() -> Result<PathBuf, String> {
    let linker = bpf_linker()?;
    if !rust_src_present()? {
        return Err(format!(
            "rust-src for the `{NIGHTLY}` toolchain is missing: {RUN_SETUP}"
        ));
    }
    Ok(linker)
}

/// Builds the eBPF program crate at `crate_dir` into `target_dir` (release
/// profile) and returns the path of the object file.
///
/// The crate's `.cargo/config.toml` sets the target, `build-std` and the BTF
/// link argument; this function supplies the bpf-linker from the cache.
pub fn build_ebpf(crate_dir: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let linker = check_toolchain()?;
    let mut path: OsString = linker
        .parent()
        .map(|p| p.as_os_str().to_owned())
        .unwrap_or_default();
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let status = nightly("cargo")
        .current_dir(crate_dir)
        .env("PATH", path)
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            BPF_TARGET,
            "--target-dir",
        ])
        .arg(target_dir)
        .status()
        .map_err(|e| format!("cannot run the eBPF build: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the eBPF build of {} failed ({status}); see the compiler output above",
            crate_dir.display()
        ));
    }
    let object = target_dir
        .join(BPF_TARGET)
        .join("release")
        .join(EBPF_BINARY);
    if object.is_file() {
        Ok(object)
    } else {
        Err(format!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        ))
    }
}
