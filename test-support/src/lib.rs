//! Test support for EPIC-RS network tests (a dev-dependency only).
//!
//! Tests build their hosts as network namespaces joined by veth pairs, made
//! and removed by the test itself: [`Netns`] creates a uniquely named
//! namespace and deletes it on drop (also when the test panics), killing what
//! still runs inside. Addresses given to [`Netns::add_address`] must come from
//! the documentation and benchmarking ranges (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 198.18.0.0/15, 2001:db8::/32); anything else is refused, so
//! a test can never send traffic anywhere real.
//!
//! Network tests need root. [`require_root`] decides what a test does without
//! it: skip with a message, or fail when `EPIC_REQUIRE_ROOT=1` (what `cargo
//! xtask test` sets when it runs as root, so CI cannot skip them silently).
//!
//! ```no_run
//! use epic_test_support::{Netns, require_root};
//!
//! if !require_root("example") { return; }
//! let a = Netns::new("a").unwrap();
//! let b = Netns::new("b").unwrap();
//! a.add_veth("va", &b, "vb").unwrap();
//! a.add_address("va", "198.51.100.1/24").unwrap();
//! b.add_address("vb", "198.51.100.2/24").unwrap();
//! a.ping("198.51.100.2", 3).unwrap();
//! // both namespaces and the veth pair are gone after this scope
//! ```

#![deny(missing_docs)]

#[cfg(feature = "kube")]
pub mod kube;

use std::ffi::OsStr;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors from building test topologies; each names the command and its output.
#[derive(Debug)]
pub enum Error {
    /// A command could not be started.
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// An address outside the ranges tests may use.
    ForbiddenAddress(String),
    /// Entering a namespace failed.
    Setns {
        /// The namespace.
        netns: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn { command, source } => write!(f, "cannot run `{command}`: {source}"),
            Error::Failed {
                command,
                status,
                stderr,
            } => {
                write!(f, "`{command}` failed ({status}): {}", stderr.trim())
            }
            Error::ForbiddenAddress(addr) => write!(
                f,
                "{addr} is outside the test ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/15, 2001:db8::/32)"
            ),
            Error::Setns { netns, reason } => {
                write!(f, "cannot enter network namespace {netns}: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Whether this process runs with effective uid 0.
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

/// For a test that needs root: returns `true` to go on. Without root it
/// returns `false` after saying the test is skipped, or panics if
/// `EPIC_REQUIRE_ROOT=1` says root tests must run.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("EPIC_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test} needs root, and EPIC_REQUIRE_ROOT=1 forbids skipping it");
    }
    eprintln!("skipping {test}: needs root (CAP_NET_ADMIN, CAP_BPF)");
    false
}

/// Whether `addr` lies in a range tests may use.
pub fn is_test_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            ) || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

fn check_cidr(cidr: &str) -> Result<(), Error> {
    let addr = cidr.split('/').next().unwrap_or(cidr);
    match addr.parse::<IpAddr>() {
        Ok(ip) if is_test_address(ip) => Ok(()),
        _ => Err(Error::ForbiddenAddress(cidr.to_owned())),
    }
}

/// Runs a command to completion, turning failure into [`Error`].
pub fn run<I, S>(program: &str, args: I) -> Result<Output, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(&mut cmd)
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a prepared command to completion, turning failure into [`Error`].
pub fn run_command(cmd: &mut Command) -> Result<Output, Error> {
    let command = show(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace made for one test, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `epic-<role>-<pid>-<n>` with loopback up.
    pub fn new(role: &str) -> Result<Netns, Error> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("epic-{role}-{}-{n}", std::process::id());
        run("ip", ["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip<I, S>(&self, args: I) -> Result<Output, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        run_command(&mut cmd)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args` inside the namespace to completion.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_command(&mut cmd)
    }

    /// Starts `program args` inside the namespace; the child is killed when
    /// the returned guard drops.
    pub fn spawn<I, S>(&self, program: &str, args: I) -> Result<ChildGuard, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        let command = show(&cmd);
        let child = cmd
            .spawn()
            .map_err(|source| Error::Spawn { command, source })?;
        Ok(ChildGuard { child })
    }

    /// Creates a veth pair: `name` here, `peer_name` in `peer`, both up.
    pub fn add_veth(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<(), Error> {
        self.ip([
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ])?;
        self.ip(["link", "set", name, "up"])?;
        peer.ip(["link", "set", peer_name, "up"])?;
        Ok(())
    }

    /// Adds `cidr` (e.g. `198.51.100.1/24`) to `interface`; only test ranges
    /// are allowed. IPv6 addresses skip duplicate address detection.
    pub fn add_address(&self, interface: &str, cidr: &str) -> Result<(), Error> {
        check_cidr(cidr)?;
        if cidr.contains(':') {
            self.ip(["-6", "addr", "add", cidr, "dev", interface, "nodad"])?;
        } else {
            self.ip(["addr", "add", cidr, "dev", interface])?;
        }
        Ok(())
    }

    /// Sends `count` pings to `addr` from inside the namespace (0.2 s apart,
    /// 1 s deadline per reply); fails unless every one is answered.
    pub fn ping(&self, addr: &str, count: u32) -> Result<Output, Error> {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| Error::ForbiddenAddress(addr.to_owned()))?;
        if !is_test_address(ip) {
            return Err(Error::ForbiddenAddress(addr.to_owned()));
        }
        let count = count.to_string();
        self.exec(
            "ping",
            ["-c", &count, "-i", "0.2", "-W", "1", "-n", "-q", addr],
        )
    }

    /// Runs `f` on a thread that has entered this namespace and returns its
    /// result. Sockets, interface lookups and eBPF attachments made in `f`
    /// belong to the namespace; the calling thread is not affected.
    pub fn run_in<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let netns = self.name.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = std::fs::File::open(&path).map_err(|e| Error::Setns {
                        netns: netns.clone(),
                        reason: e.to_string(),
                    })?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |e| Error::Setns {
                            netns,
                            reason: e.to_string(),
                        },
                    )?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, so the namespace can really go away.
        if let Ok(out) = run("ip", ["netns", "pids", &self.name]) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill")
                    .args(["-9", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Err(e) = run("ip", ["netns", "del", &self.name]) {
            eprintln!(
                "warning: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// The child process.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Netns {
    /// Starts a thread that enters this namespace and then runs `f`: the
    /// long-lived counterpart of [`Netns::run_in`], for servers and relays.
    /// Sockets made in `f` (and threads it starts) belong to the namespace.
    pub fn spawn_thread<T, F>(&self, f: F) -> std::thread::JoinHandle<Result<T, Error>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path();
        let netns = self.name.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| Error::Setns {
                netns: netns.clone(),
                reason: e.to_string(),
            })?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::Setns {
                    netns,
                    reason: e.to_string(),
                }
            })?;
            Ok(f())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documentation_ranges_are_test_addresses() {
        for ok in [
            "192.0.2.1",
            "198.51.100.255",
            "203.0.113.7",
            "198.18.0.1",
            "198.19.255.254",
            "2001:db8::1",
        ] {
            assert!(is_test_address(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "198.20.0.1",
            "2001:db9::1",
            "fe80::1",
            "127.0.0.1",
        ] {
            assert!(!is_test_address(bad.parse().unwrap()), "{bad}");
        }
        assert!(matches!(
            check_cidr("10.1.0.0/16"),
            Err(Error::ForbiddenAddress(_))
        ));
        assert!(check_cidr("2001:db8:1::1/64").is_ok());
    }

    #[test]
    fn namespaces_are_created_joined_and_removed() {
        if !require_root("namespaces_are_created_joined_and_removed") {
            return;
        }
        let a = Netns::new("ts-a").unwrap();
        let b = Netns::new("ts-b").unwrap();
        a.add_veth("va", &b, "vb").unwrap();
        a.add_address("va", "198.51.100.1/24").unwrap();
        b.add_address("vb", "198.51.100.2/24").unwrap();
        a.ping("198.51.100.2", 2).unwrap();
        // The thread that runs the closure sees the namespace's interfaces.
        let seen = b
            .run_in(|| nix::net::if_::if_nametoindex("vb").is_ok())
            .unwrap_or(false);
        assert!(seen, "vb must be visible from inside namespace b");
        let name = a.name().to_owned();
        drop(a);
        let list = run("ip", ["netns", "list"]).unwrap();
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&name),
            "{name} must be gone"
        );
        assert!(a_forbidden_address_is_refused(&b));
    }

    fn a_forbidden_address_is_refused(ns: &Netns) -> bool {
        matches!(
            ns.add_address("vb", "10.0.0.1/24"),
            Err(Error::ForbiddenAddress(_))
        )
    }
}
