//! Locates the protobuf descriptor set that `envoy-types` ships
//! (`src/generated/types.bin`, the `FileDescriptorSet` its Rust types were
//! generated from) and copies it into `OUT_DIR` for `include_bytes!`.
//!
//! `envoy-types` does not export the bytes, so the build script asks cargo
//! where the resolved `envoy-types` package lives (`cargo metadata`). It asks
//! about the workspace that is being built — found as the nearest ancestor
//! of `OUT_DIR` with a `Cargo.lock`, e.g. `fuzz/` (its own lock file) when
//! building the fuzz targets — so the descriptors match the `envoy-types`
//! that build compiles; failing that, about this package's own workspace.
//! Set `EPIC_ENVOY_DESCRIPTORS=/path/to/types.bin` to bypass the lookup (for
//! example in an offline vendored build).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EPIC_ENVOY_DESCRIPTORS");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    let source = match env::var_os("EPIC_ENVOY_DESCRIPTORS") {
        Some(path) => PathBuf::from(path),
        None => locate_envoy_types().join("src/generated/types.bin"),
    };
    println!("cargo:rerun-if-changed={}", source.display());
    fs::copy(&source, out.join("envoy_descriptors.bin")).unwrap_or_else(|err| {
        panic!(
            "epic-templates: cannot copy the envoy-types descriptor set from {}: {err}",
            source.display()
        )
    });
}

/// Finds the manifest directory of the `envoy-types` 0.7 package this build resolved.
fn locate_envoy_types() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let own = manifest_dir.join("Cargo.toml");
    let mut errors = Vec::new();
    let building = building_workspace();
    for manifest in building.iter().chain(Some(&own)) {
        match envoy_types_in(manifest) {
            Ok(dir) => return dir,
            Err(err) => errors.push(format!("{}: {err}", manifest.display())),
        }
    }
    panic!(
        "epic-templates: cannot locate envoy-types 0.7 (set EPIC_ENVOY_DESCRIPTORS to its src/generated/types.bin): {}",
        errors.join("; ")
    )
}

/// The manifest of the workspace being built: the nearest ancestor of
/// `OUT_DIR` (which lives in its target directory) holding a `Cargo.lock`
/// next to a `Cargo.toml`. `None` with a target directory elsewhere.
fn building_workspace() -> Option<PathBuf> {
    let out = PathBuf::from(env::var_os("OUT_DIR")?);
    let root = out
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.lock").is_file() && dir.join("Cargo.toml").is_file())?;
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    Some(root.join("Cargo.toml"))
}

/// `envoy-types` 0.7 as resolved by the workspace of `manifest`.
fn envoy_types_in(manifest: &Path) -> Result<PathBuf, String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(env::var("TARGET").expect("TARGET set by cargo"))
        .arg("--manifest-path")
        .arg(manifest)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|err| format!("running `cargo metadata`: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|err| format!("`cargo metadata` output: {err}"))?;
    let found: Vec<PathBuf> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| package["name"] == "envoy-types")
        .filter(|package| {
            package["version"]
                .as_str()
                .is_some_and(|version| version.starts_with("0.7."))
        })
        .filter_map(|package| package["manifest_path"].as_str())
        .map(|manifest| {
            Path::new(manifest)
                .parent()
                .expect("a manifest path has a parent")
                .to_path_buf()
        })
        .collect();
    match found.as_slice() {
        [dir] => Ok(dir.clone()),
        [] => Err("envoy-types 0.7 is not in this workspace".into()),
        _ => Err(format!("several envoy-types 0.7 packages: {found:?}")),
    }
}
