//! `cargo xtask descriptors [--check]`: the Envoy descriptor set that
//! `epic-templates` embeds.
//!
//! `epic-templates` maps JSON onto Envoy messages with the
//! `FileDescriptorSet` that `envoy-types` generated its Rust types from. It
//! embeds a committed copy (`epic-templates/envoy-descriptors.binpb`) rather
//! than finding the package at build time, so no build script shells out to
//! cargo. This command keeps the copy honest: it asks `cargo metadata` where
//! the resolved `envoy-types` package of each lock file (the workspace's and
//! `fuzz/`'s) lives, and either writes its `src/generated/types.bin` over the
//! copy or, with `--check`, fails when they differ.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::{self, Failure};
use crate::workspace_root;

const STEP: &str = "descriptors";
/// The committed copy, relative to the workspace root.
pub const COPY: &str = "epic-templates/envoy-descriptors.binpb";
/// The descriptor set inside the `envoy-types` package.
const IN_PACKAGE: &str = "src/generated/types.bin";

/// Runs the command: `check` compares, otherwise the copy is rewritten.
pub fn run(check: bool) -> Result<(), Failure> {
    let root = workspace_root();
    let copy = root.join(COPY);
    let mut sources = Vec::new();
    for manifest in [root.join("Cargo.toml"), root.join("fuzz/Cargo.toml")] {
        sources.push(envoy_types_dir(&manifest)?.join(IN_PACKAGE));
    }
    let expected = read(&sources[0])?;
    for other in &sources[1..] {
        if read(other)? != expected {
            return Err(Failure::new(
                STEP,
                format!(
                    "the lock files resolve different envoy-types descriptor sets: {} and {}",
                    sources[0].display(),
                    other.display()
                ),
                "pin envoy-types to one exact version in the workspace Cargo.toml and `cargo update -p envoy-types` in fuzz/",
            ));
        }
    }
    if check {
        let current = read(&copy)?;
        if current != expected {
            return Err(Failure::new(
                STEP,
                format!(
                    "{COPY} ({} bytes) differs from {} ({} bytes)",
                    current.len(),
                    sources[0].display(),
                    expected.len()
                ),
                "run `cargo xtask descriptors` and commit the result",
            ));
        }
        println!(
            "descriptors: {COPY} matches {} ({} bytes)",
            sources[0].display(),
            expected.len()
        );
        return Ok(());
    }
    std::fs::write(&copy, &expected).map_err(|e| {
        Failure::new(
            STEP,
            format!("writing {}: {e}", copy.display()),
            "check the file's permissions",
        )
    })?;
    println!(
        "descriptors: wrote {COPY} from {} ({} bytes)",
        sources[0].display(),
        expected.len()
    );
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::new(
            STEP,
            format!("reading {}: {e}", path.display()),
            "run `cargo xtask setup` (it fetches every lock file's crates)",
        )
    })
}

/// The directory of the one `envoy-types` package that `manifest`'s lock file resolves.
fn envoy_types_dir(manifest: &Path) -> Result<PathBuf, Failure> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.env("CARGO_NET_OFFLINE", "true")
        .args(["metadata", "--format-version", "1", "--locked"])
        .arg("--manifest-path")
        .arg(manifest);
    let line = run::show(&cmd);
    let out = cmd
        .output()
        .map_err(|e| Failure::new(STEP, format!("cannot run `{line}`: {e}"), "install cargo"))?;
    if !out.status.success() {
        return Err(Failure::new(
            STEP,
            format!(
                "`{line}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "run `cargo xtask setup`, which fetches every lock file's crates",
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        Failure::new(
            STEP,
            format!("`{line}` printed no metadata: {e}"),
            "update cargo",
        )
    })?;
    let dirs: Vec<PathBuf> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| package["name"] == "envoy-types")
        .filter_map(|package| package["manifest_path"].as_str())
        .filter_map(|path| Path::new(path).parent().map(Path::to_path_buf))
        .collect();
    match dirs.as_slice() {
        [dir] => Ok(dir.clone()),
        [] => Err(Failure::new(
            STEP,
            format!("{} resolves no envoy-types package", manifest.display()),
            "epic-templates depends on envoy-types; check the manifest",
        )),
        _ => Err(Failure::new(
            STEP,
            format!(
                "{} resolves several envoy-types packages: {dirs:?}",
                manifest.display()
            ),
            "keep one envoy-types version in the lock file",
        )),
    }
}
