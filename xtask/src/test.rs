//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::run::{self, Failure};
use crate::{setup, workspace_root};

/// Seconds each fuzz target runs under libFuzzer in the smoke run.
const FUZZ_SECONDS: u32 = 15;

/// Totals parsed from cargo test's `test result:` lines.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        // "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

fn step(name: &str) {
    println!("\n==> xtask test: {name}");
}

/// A cargo command in the workspace that may not touch the network: setup
/// fetched every lock file's crates, so a step that still needs a download
/// (a build script or nested build asking for more than the lock files
/// name) fails here as it would on a fresh machine.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("CARGO_NET_OFFLINE", "true");
    cmd
}

/// Runs a cargo test command, streaming its output and adding up its results.
fn cargo_test(name: &str, cmd: &mut Command, totals: &mut Totals) -> Result<(), Failure> {
    let line = run::show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(name, format!("cannot start `{line}`: {e}"), "install cargo"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    for out in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{out}");
        totals.add_line(&out);
    }
    let status = child
        .wait()
        .map_err(|e| Failure::new(name, e.to_string(), "rerun"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::new(
            name,
            format!("`{line}` exited with {status}"),
            "fix the failing tests above",
        ))
    }
}

/// The fuzz targets, by name, from `cargo fuzz list`.
fn fuzz_targets() -> Result<Vec<String>, Failure> {
    let out = run::output(
        Command::new("cargo")
            .current_dir(workspace_root())
            .env("CARGO_NET_OFFLINE", "true")
            .args(["fuzz", "list"]),
    )
    .ok_or_else(|| {
        Failure::new(
            "fuzz",
            "`cargo fuzz list` failed",
            "run `cargo fuzz list` to see why",
        )
    })?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// What no build script may contain: running cargo (`cargo metadata`, a
/// nested cargo found through `$CARGO`) needs crates that building one
/// package does not download, so it fails on a fresh machine or offline.
const FORBIDDEN_IN_BUILD_SCRIPTS: &[&str] = &[
    "cargo metadata",
    "\"metadata\"",
    "Command::new(cargo",
    "Command::new(\"cargo\")",
    "env::var_os(\"CARGO\")",
    "env::var(\"CARGO\")",
];

/// The forbidden patterns found in one build script's text, as `line: pattern`.
fn build_script_problems(text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .flat_map(|(n, line)| {
            FORBIDDEN_IN_BUILD_SCRIPTS
                .iter()
                .filter(move |pattern| line.contains(*pattern))
                .map(move |pattern| format!("line {}: `{pattern}`", n + 1))
        })
        .collect()
}

/// Fails if any tracked `build.rs` runs cargo.
fn check_build_scripts(root: &std::path::Path) -> Result<(), Failure> {
    let listed =
        run::output(
            Command::new("git")
                .current_dir(root)
                .args(["ls-files", "--", "*build.rs"]),
        )
        .ok_or_else(|| {
            Failure::new(
                "build scripts",
                "`git ls-files` failed",
                "run inside the git checkout",
            )
        })?;
    let mut problems = Vec::new();
    for file in listed.lines().filter(|l| l.ends_with("build.rs")) {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        problems.extend(
            build_script_problems(&text)
                .into_iter()
                .map(|p| format!("{file} {p}")),
        );
    }
    if problems.is_empty() {
        println!("build scripts: none runs cargo");
        return Ok(());
    }
    Err(Failure::new(
        "build scripts",
        format!("build scripts run cargo: {}", problems.join("; ")),
        "a build script gets what it needs from its own package or a committed file, never from cargo",
    ))
}

/// Runs the whole suite.
pub fn run() -> Result<(), Failure> {
    let root = workspace_root();
    let mut totals = Totals::default();

    step("setup");
    setup::run()?;
    let envoy = setup::find_envoy().ok_or_else(|| {
        Failure::new(
            "setup",
            "no envoy binary after setup",
            "run `cargo xtask setup`",
        )
    })?;

    step("build scripts and the Envoy descriptor set");
    check_build_scripts(&root)?;
    crate::descriptors::run(true)?;

    step("cargo fmt --check");
    run::status(
        "fmt",
        cargo().args(["fmt", "--all", "--check"]),
        "run `cargo fmt --all`",
    )?;
    run::status(
        "fmt",
        cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(root.join("epic-bpf/ebpf/Cargo.toml")),
        "run `cargo fmt --manifest-path epic-bpf/ebpf/Cargo.toml`",
    )?;

    step("eBPF build");
    crate::build_ebpf()?;

    step("cargo clippy");
    run::status(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "fix the lints above",
    )?;

    step("cargo test --workspace");
    let mut test = cargo();
    test.args(["test", "--workspace"]).env("EPIC_ENVOY", &envoy);
    if run::is_root() {
        // As root, network tests must run; they fail rather than skip.
        test.env("EPIC_REQUIRE_ROOT", "1");
    } else {
        println!("xtask test: not root, network and eBPF tests will be skipped");
    }
    cargo_test("test", &mut test, &mut totals)?;

    if root.join("fuzz/Cargo.toml").is_file() {
        step("fuzz corpora");
        cargo_test(
            "fuzz corpora",
            cargo()
                .args(["test", "--manifest-path"])
                .arg(root.join("fuzz/Cargo.toml")),
            &mut totals,
        )?;
        if setup::cargo_fuzz_present() {
            for target in fuzz_targets()? {
                step(&format!("fuzz {target} ({FUZZ_SECONDS} s)"));
                let corpus = root.join("fuzz/corpus").join(&target);
                // Fuzz into a scratch copy so the committed corpus only grows by hand.
                let scratch =
                    std::env::temp_dir().join(format!("epic-fuzz-{target}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&scratch);
                std::fs::create_dir_all(&scratch).map_err(|e| {
                    Failure::new("fuzz", format!("{}: {e}", scratch.display()), "check /tmp")
                })?;
                let result = run::status(
                    "fuzz",
                    Command::new("cargo")
                        .current_dir(&root)
                        .env("CARGO_NET_OFFLINE", "true")
                        .arg(format!("+{}", crate::ebpf_toolchain::NIGHTLY))
                        .args(["fuzz", "run", &target])
                        .arg(&scratch)
                        .arg(&corpus)
                        .args([
                            "--",
                            &format!("-max_total_time={FUZZ_SECONDS}"),
                            "-print_final_stats=1",
                        ]),
                    "reproduce with `cargo +<the pinned nightly> fuzz run <target> fuzz/artifacts/<target>/<crash>`",
                );
                let _ = std::fs::remove_dir_all(&scratch);
                result?;
            }
        } else {
            println!(
                "xtask test: cargo-fuzz not available, fuzz targets ran over their corpora only"
            );
        }
    }

    if run::is_root() {
        step("images (podman build from scratch, dev-profile binaries)");
        crate::images::run(&["--debug".to_owned()])?;
    } else {
        println!("xtask test: not root, images are not built");
    }

    step("cargo doc");
    run::status(
        "doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
        "fix the rustdoc warnings above",
    )?;

    println!("\nxtask test: all steps passed");
    println!(
        "{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn build_script_check_finds_cargo_invocations() {
        let bad = "let cargo = env::var_os(\"CARGO\").unwrap();\nCommand::new(cargo).args([\"metadata\"]);";
        assert_eq!(super::build_script_problems(bad).len(), 3);
        let good =
            "println!(\"cargo::rerun-if-changed=src\");\nlet _ = std::env::var_os(\"OUT_DIR\");";
        assert!(super::build_script_problems(good).is_empty());
    }

    #[test]
    fn totals_add_up_cargo_test_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line("running 3 tests");
        t.add_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s");
        assert_eq!((t.passed, t.failed, t.ignored), (14, 1, 1));
    }
}
