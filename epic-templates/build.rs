//! Locates the protobuf descriptor set that `envoy-types` ships
//! (`src/generated/types.bin`, the `FileDescriptorSet` its Rust types were
//! generated from) and copies it into `OUT_DIR` for `include_bytes!`.
//!
//! `envoy-types` does not export the bytes, so the build script asks cargo
//! where the resolved `envoy-types` package lives (`cargo metadata`). Set
//! `EPIC_ENVOY_DESCRIPTORS=/path/to/types.bin` to bypass the lookup (for
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
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
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
        .arg(manifest_dir.join("Cargo.toml"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("epic-templates: running `cargo metadata` to locate envoy-types");
    assert!(
        output.status.success(),
        "epic-templates: `cargo metadata` failed (set EPIC_ENVOY_DESCRIPTORS to the envoy-types types.bin): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    metadata["packages"]
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
        .next()
        .unwrap_or_else(|| {
            panic!("epic-templates: envoy-types 0.7 not found in `cargo metadata` output")
        })
}
