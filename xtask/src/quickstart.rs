//! `cargo xtask quickstart`: setup, build the `epic` binary, run its demo.

use std::process::Command;

use crate::run::{self, Failure};
use crate::{setup, target_dir, workspace_root};

/// Runs the quickstart; `args` are passed to `epic quickstart` (e.g. `--keep`).
pub fn run(args: &[String]) -> Result<(), Failure> {
    println!("==> xtask quickstart: setup");
    setup::run()?;
    let envoy = setup::find_envoy().ok_or_else(|| {
        Failure::new(
            "quickstart",
            "no envoy binary after setup",
            "run `cargo xtask setup`",
        )
    })?;
    if !run::is_root() {
        return Err(Failure::new(
            "quickstart",
            "the demo creates network namespaces and loads eBPF programs, which needs root",
            "run it as root (e.g. `sudo -E cargo xtask quickstart`)",
        ));
    }
    println!("==> xtask quickstart: building `epic`");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run::status(
        "quickstart",
        // Setup fetched every crate: a build that still needs the network
        // would fail on a fresh machine, so it fails here too.
        Command::new(cargo)
            .current_dir(workspace_root())
            .env("CARGO_NET_OFFLINE", "true")
            .args(["build", "--release", "-p", "epic"]),
        "fix the build error above",
    )?;
    let epic = target_dir().join("release").join("epic");
    run::status(
        "quickstart",
        Command::new(&epic)
            .arg("quickstart")
            .arg("--envoy")
            .arg(&envoy)
            .args(args),
        "read the error above; `epic quickstart --help` lists the options",
    )
}
