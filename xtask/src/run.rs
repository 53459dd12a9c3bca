//! Running commands and reporting failures that name the step and the fix.

use std::fmt;
use std::process::{Command, Stdio};

/// A failed step: which one, what happened, and what to do about it.
#[derive(Debug)]
pub struct Failure {
    step: String,
    what: String,
    fix: String,
}

impl Failure {
    /// A failure of `step`, with what went wrong and how to fix it.
    pub fn new(step: impl Into<String>, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Failure {
            step: step.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xtask: step `{}` failed: {}\n  fix: {}",
            self.step, self.what, self.fix
        )
    }
}

/// Shows a command line the way a user would type it.
pub fn show(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with inherited output; a non-zero exit is a failure of `step`.
pub fn status(step: &str, cmd: &mut Command, fix: &str) -> Result<(), Failure> {
    let line = show(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| Failure::new(step, format!("cannot start `{line}`: {e}"), fix))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::new(
            step,
            format!("`{line}` exited with {status}"),
            fix,
        ))
    }
}

/// Runs `cmd` quietly and returns its stdout, or `None` if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
