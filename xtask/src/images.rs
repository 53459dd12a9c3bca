//! `cargo xtask images`: one OCI image per binary, built without a Docker
//! daemon (`podman build`, from `scratch`: no registry is needed), then
//! checked.
//!
//! Each image holds the binary at `/usr/local/bin/<binary>`, the shared
//! libraries `ldd` says it loads (glibc, libgcc_s: Debian's, at the paths
//! the loader looks in), and an `/etc/passwd` naming the unprivileged user
//! 65532 it runs as; its entrypoint is the binary. The images are tagged
//! `ghcr.io/epic-rs/<binary>:<version>` — the names the charts use — and
//! saved as OCI archives in `<target>/images/<binary>.oci.tar`.
//!
//! The check ([`check`]) reads each archive as a registry would (index,
//! manifest, config, layers), verifies the entrypoint and the user,
//! unpacks the layers into a directory and runs the binary's `--version`
//! there under `chroot`: the image is complete on its own. It also checks
//! that every image a chart names is one of these.
//!
//! ```text
//! cargo xtask images            release binaries
//! cargo xtask images --debug    the dev-profile binaries (what the tests build)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::{self, Failure};
use crate::workspace_root;

/// The registry and organisation every image is tagged under.
pub const REPOSITORY: &str = "ghcr.io/epic-rs";

/// The unprivileged user (and group) every image runs as.
pub const USER: &str = "65532:65532";

/// The binaries that get an image: (binary, package).
pub const BINARIES: &[(&str, &str)] = &[
    ("epic", "epic"),
    ("epicctl", "epicctl"),
    ("epic-gateway-controller", "epic-gateway-controller"),
    ("epic-cluster-controller", "epic-cluster-controller"),
];

const STEP: &str = "images";

/// The workspace version (the images' tag).
fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The tag of `binary`'s image.
pub fn tag(binary: &str) -> String {
    format!("{REPOSITORY}/{binary}:{}", version())
}

/// The cargo target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo xtask images [--debug]`: builds the binaries, their images and
/// archives, and checks them.
pub fn run(args: &[String]) -> Result<(), Failure> {
    let debug = args.iter().any(|a| a == "--debug");
    let profile = if debug { "debug" } else { "release" };
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(workspace_root()).arg("build");
    if !debug {
        cargo.arg("--release");
    }
    for (_, package) in BINARIES {
        cargo.args(["-p", package]);
    }
    run::status(STEP, &mut cargo, "fix the build errors above")?;
    let bin_dir = target_dir().join(profile);
    let out = target_dir().join("images");
    build_all(&bin_dir, &out)?;
    check(&out)
}

/// Builds every binary's image from `bin_dir` into `out`.
pub fn build_all(bin_dir: &Path, out: &Path) -> Result<(), Failure> {
    for (binary, _) in BINARIES {
        let archive = build(&bin_dir.join(binary), out)?;
        println!("images: {} -> {}", tag(binary), archive.display());
    }
    // A rebuilt image leaves its predecessor untagged: drop those.
    run::status(
        STEP,
        Command::new("podman").args(["image", "prune", "--force"]),
        "check podman's storage",
    )
}

/// The shared libraries `ldd`'s output names, by absolute path (the
/// loader included; the kernel's vDSO is no file).
pub fn libraries(ldd_output: &str) -> Vec<PathBuf> {
    ldd_output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn io_failure(what: &Path) -> impl FnOnce(std::io::Error) -> Failure + '_ {
    move |e| {
        Failure::new(
            STEP,
            format!("{}: {e}", what.display()),
            "check the target directory",
        )
    }
}

/// Copies `from` (following links) to `to` under `root`, making its parents.
fn copy_into(root: &Path, from: &Path, to: &Path) -> Result<(), Failure> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_failure(parent))?;
    }
    std::fs::copy(from, &dest).map_err(io_failure(from))?;
    Ok(())
}

/// The build context of `binary`'s image in `dir`: `rootfs/` and
/// `Containerfile`.
fn context(binary: &Path, dir: &Path) -> Result<String, Failure> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Failure::new(
                STEP,
                format!("{}: no name", binary.display()),
                "fix the path",
            )
        })?
        .to_owned();
    let _ = std::fs::remove_dir_all(dir);
    let rootfs = dir.join("rootfs");
    let entry = PathBuf::from("/usr/local/bin").join(&name);
    copy_into(&rootfs, binary, &entry)?;
    // Debug information is for debuggers, not images.
    run::status(
        STEP,
        Command::new("strip")
            .arg("--strip-debug")
            .arg(rootfs.join(entry.strip_prefix("/").unwrap_or(&entry))),
        "install binutils",
    )?;
    let ldd = run::output(Command::new("ldd").arg(binary)).ok_or_else(|| {
        Failure::new(
            STEP,
            format!("`ldd {}` failed", binary.display()),
            "install libc-bin",
        )
    })?;
    for library in libraries(&ldd) {
        copy_into(&rootfs, &library, &library)?;
    }
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).map_err(io_failure(&etc))?;
    let write = |path: PathBuf, text: &str| std::fs::write(&path, text).map_err(io_failure(&path));
    write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n",
    )?;
    write(etc.join("group"), "root:x:0:\nnonroot:x:65532:\n")?;
    std::fs::create_dir_all(rootfs.join("tmp")).map_err(io_failure(&rootfs))?;
    let containerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nUSER {USER}\nENTRYPOINT [\"{}\"]\nLABEL org.opencontainers.image.title=\"{name}\" org.opencontainers.image.version=\"{}\" org.opencontainers.image.licenses=\"Apache-2.0\"\n",
        entry.display(),
        version()
    );
    write(dir.join("Containerfile"), &containerfile)?;
    Ok(name)
}

/// Builds the image of `binary` with `podman build` and saves it as an OCI
/// archive in `out`; returns the archive.
pub fn build(binary: &Path, out: &Path) -> Result<PathBuf, Failure> {
    let dir = out
        .join("context")
        .join(binary.file_name().unwrap_or_default());
    let name = context(binary, &dir)?;
    let tag = tag(&name);
    run::status(
        STEP,
        Command::new("podman")
            .args(["build", "--quiet", "--tag", &tag, "--file"])
            .arg(dir.join("Containerfile"))
            .arg(&dir),
        "install podman (`cargo xtask setup`)",
    )?;
    let archive = out.join(format!("{name}.oci.tar"));
    let _ = std::fs::remove_file(&archive);
    run::status(
        STEP,
        Command::new("podman")
            .args(["save", "--quiet", "--format", "oci-archive", "--output"])
            .arg(&archive)
            .arg(&tag),
        "check podman's storage",
    )?;
    Ok(archive)
}

/// A JSON file of an unpacked OCI layout.
fn read_json(path: &Path) -> Result<serde_json::Value, Failure> {
    let text = std::fs::read(path).map_err(io_failure(path))?;
    serde_json::from_slice(&text).map_err(|e| {
        Failure::new(
            STEP,
            format!("{}: {e}", path.display()),
            "rebuild the image",
        )
    })
}

/// The path of blob `digest` (`sha256:<hex>`) in layout `dir`.
fn blob(dir: &Path, digest: &serde_json::Value) -> PathBuf {
    let digest = digest.as_str().unwrap_or_default();
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(algorithm).join(hex)
}

/// Checks every image archive in `out` and the charts' image names.
pub fn check(out: &Path) -> Result<(), Failure> {
    for (binary, _) in BINARIES {
        check_image(&out.join(format!("{binary}.oci.tar")), binary)?;
    }
    check_charts()
}

/// Unpacks `archive`, checks its configuration, and runs `binary
/// --version` in its root filesystem.
fn check_image(archive: &Path, binary: &str) -> Result<(), Failure> {
    let fail = |message: String| Failure::new(STEP, message, "rebuild with `cargo xtask images`");
    let dir = archive.with_extension("check");
    let _ = std::fs::remove_dir_all(&dir);
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&layout).map_err(io_failure(&layout))?;
    std::fs::create_dir_all(&rootfs).map_err(io_failure(&rootfs))?;
    run::status(
        STEP,
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&layout),
        "install tar",
    )?;
    let index = read_json(&layout.join("index.json"))?;
    let manifest = read_json(&blob(&layout, &index["manifests"][0]["digest"]))?;
    let config = read_json(&blob(&layout, &manifest["config"]["digest"]))?;
    let entrypoint = format!("/usr/local/bin/{binary}");
    if config["config"]["Entrypoint"] != serde_json::json!([entrypoint]) {
        return Err(fail(format!(
            "{}: entrypoint {} instead of [{entrypoint:?}]",
            archive.display(),
            config["config"]["Entrypoint"]
        )));
    }
    if config["config"]["User"] != USER {
        return Err(fail(format!(
            "{}: user {} instead of {USER}",
            archive.display(),
            config["config"]["User"]
        )));
    }
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    for layer in &layers {
        run::status(
            STEP,
            Command::new("tar")
                .arg("-xf")
                .arg(blob(&layout, &layer["digest"]))
                .arg("-C")
                .arg(&rootfs),
            "install tar",
        )?;
    }
    let version = run::output(
        Command::new("chroot")
            .arg(&rootfs)
            .arg(&entrypoint)
            .arg("--version"),
    )
    .ok_or_else(|| fail(format!("{binary} --version does not run in its image")))?;
    let expected = format!("{binary} {}", self::version());
    if version.trim() != expected {
        return Err(fail(format!(
            "{binary} --version in its image says {version:?}, not {expected:?}"
        )));
    }
    println!(
        "images: {} ok: entrypoint {entrypoint}, user {USER}, {} layer(s), `{}`",
        tag(binary),
        layers.len(),
        version.trim()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `repository:tag` of every `image:` block of a chart's values
/// (`repository:` and `tag:` lines under it).
pub fn chart_images(values: &str) -> Vec<String> {
    let mut images = Vec::new();
    let mut repository: Option<String> = None;
    for line in values.lines() {
        let line = line.trim();
        let value = |key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        if let Some(r) = value("repository:") {
            repository = Some(r);
        } else if let (Some(t), Some(r)) = (value("tag:"), repository.take()) {
            images.push(format!("{r}:{t}"));
        }
    }
    images
}

/// Every image of ours a chart names is one this command builds.
fn check_charts() -> Result<(), Failure> {
    let ours: BTreeSet<String> = BINARIES.iter().map(|(b, _)| tag(b)).collect();
    for chart in ["epic-gateway", "epic-cluster"] {
        let path = workspace_root()
            .join("charts")
            .join(chart)
            .join("values.yaml");
        let values = std::fs::read_to_string(&path).map_err(io_failure(&path))?;
        for image in chart_images(&values) {
            if image.starts_with(REPOSITORY) && !ours.contains(&image) {
                return Err(Failure::new(
                    STEP,
                    format!(
                        "{}: names {image}, which no binary's image is",
                        path.display()
                    ),
                    format!("use one of {ours:?}"),
                ));
            }
            println!("images: chart {chart} uses {image}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files_to_copy() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            libraries(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(libraries("\tstatically linked\n").is_empty());
    }

    #[test]
    fn chart_values_name_their_images() {
        let values = "controller:\n  image:\n    repository: ghcr.io/epic-rs/epic-gateway-controller\n    tag: \"0.1.0\"\n    pullPolicy: IfNotPresent\nproxy:\n  envoyImage: envoyproxy/envoy:v1.40.0\n";
        assert_eq!(
            chart_images(values),
            ["ghcr.io/epic-rs/epic-gateway-controller:0.1.0"]
        );
    }

    #[test]
    fn every_chart_names_only_images_we_build() {
        check_charts().unwrap();
    }
}
