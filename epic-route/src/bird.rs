//! BIRD 2 configuration: generation (pure), validation and reload.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::IpNet;
use serde::Deserialize;

use crate::netlink::{DEFAULT_PROTOCOL, DEFAULT_TABLE};

/// The BGP announcement of the owned routes: what the generated BIRD 2
/// configuration contains. Deserializes from the `peers.yaml` that
/// `epicctl route bird-config` reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BirdConfig {
    /// BIRD's router id (usually the node's IPv4 address).
    pub router_id: Ipv4Addr,
    /// This node's AS number.
    pub local_asn: u32,
    /// The routing table the programmer writes (default 4242).
    #[serde(default = "default_table")]
    pub table: u32,
    /// The route protocol number that marks our routes (default 242).
    #[serde(default = "default_protocol")]
    pub protocol: u8,
    /// If not empty, only prefixes inside these (the address pools) are
    /// ever exported, whatever appears in the table.
    #[serde(default)]
    pub allowed_prefixes: Vec<IpNet>,
    /// The BGP peers (upstream routers).
    pub peers: Vec<BgpPeer>,
}

fn default_table() -> u32 {
    DEFAULT_TABLE
}

fn default_protocol() -> u8 {
    DEFAULT_PROTOCOL
}

/// One BGP session. It carries the address family of the peer's address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    /// The session's name in BIRD (letters, digits, `_`; unique).
    pub name: String,
    /// The peer's address (directly connected unless `multihop` is set).
    pub address: IpAddr,
    /// The peer's AS number.
    pub asn: u32,
    /// TCP MD5 password, if the peer wants one.
    #[serde(default)]
    pub password: Option<String>,
    /// Whether to run BFD on the session (fast failure detection).
    #[serde(default)]
    pub bfd: bool,
    /// The local source address, if it must be fixed.
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    /// eBGP multihop TTL, for peers that are not directly connected.
    #[serde(default)]
    pub multihop: Option<u8>,
    /// BGP hold time in seconds (BIRD's default 240 if unset).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Seconds between connection attempts (BIRD's default 120 if unset).
    #[serde(default)]
    pub connect_retry_time: Option<u16>,
}

/// Reasons a [`BirdConfig`] cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A peer name BIRD would not accept as a symbol, or a reserved one.
    #[error(
        "peer name {0:?} must be 1-64 ASCII letters, digits or '_', start with a letter, and not start with \"epic_\""
    )]
    BadPeerName(String),
    /// Two peers share a name.
    #[error("two peers are named {0:?}")]
    DuplicatePeer(String),
    /// A password BIRD's quoting cannot carry.
    #[error("password of peer {0:?} must be printable ASCII without '\"' or '\\\\'")]
    BadPassword(String),
    /// An AS number of 0.
    #[error("AS number 0 is invalid (peer {0:?}, or local when empty)")]
    ZeroAsn(String),
    /// A reserved table or protocol.
    #[error("table {table} / protocol {protocol} is reserved")]
    Reserved {
        /// The table.
        table: u32,
        /// The protocol.
        protocol: u8,
    },
    /// A source address of the other family than the peer.
    #[error("peer {0:?}: source address and peer address are of different families")]
    MixedFamilies(String),
}

/// Name of the generated kernel protocol for a family (`epic_kernel4`/`6`).
pub fn kernel_protocol_name(v6: bool) -> &'static str {
    if v6 { "epic_kernel6" } else { "epic_kernel4" }
}

impl BirdConfig {
    /// Checks the configuration without rendering it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(self.table, 0 | 253..=255) || matches!(self.protocol, 0..=4 | 12) {
            return Err(ConfigError::Reserved {
                table: self.table,
                protocol: self.protocol,
            });
        }
        if self.local_asn == 0 {
            return Err(ConfigError::ZeroAsn(String::new()));
        }
        let mut names = std::collections::BTreeSet::new();
        for peer in &self.peers {
            let name = &peer.name;
            let ok = !name.is_empty()
                && name.len() <= 64
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("epic_");
            if !ok {
                return Err(ConfigError::BadPeerName(name.clone()));
            }
            if !names.insert(name.as_str()) {
                return Err(ConfigError::DuplicatePeer(name.clone()));
            }
            if peer.asn == 0 {
                return Err(ConfigError::ZeroAsn(name.clone()));
            }
            if let Some(password) = &peer.password {
                let ok = !password.is_empty()
                    && password
                        .chars()
                        .all(|c| (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ');
                if !ok {
                    return Err(ConfigError::BadPassword(name.clone()));
                }
            }
            if let Some(source) = peer.source_address
                && source.is_ipv4() != peer.address.is_ipv4()
            {
                return Err(ConfigError::MixedFamilies(name.clone()));
            }
        }
        Ok(())
    }

    /// Renders the BIRD 2 configuration (see the crate docs for its parts).
    pub fn render(&self) -> Result<String, ConfigError> {
        self.validate()?;
        let mut out = String::new();
        let w = &mut out;
        let (table, protocol) = (self.table, self.protocol);
        // Writing to a String cannot fail.
        let _ = writeln!(
            w,
            "# Generated by epic-route: announces the routes of kernel table {table}\n\
             # with route protocol {protocol}, and nothing else. Rewritten on every change.\n"
        );
        let _ = writeln!(w, "router id {};\n", self.router_id);
        let _ = writeln!(w, "protocol device epic_device {{\n  scan time 10;\n}}\n");
        let _ = writeln!(
            w,
            "# Learn only the routes our programmer owns: table {table}, protocol {protocol}.\n\
             filter epic_learn {{\n  if krt_source = {protocol} then accept;\n  reject;\n}}\n"
        );
        for v6 in [false, true] {
            let family = if v6 { "ipv6" } else { "ipv4" };
            let kernel = kernel_protocol_name(v6);
            let suffix = if v6 { "6" } else { "4" };
            let _ = writeln!(
                w,
                "protocol kernel {kernel} {{\n  kernel table {table};\n  learn;\n  scan time 10;\n  \
                 {family} {{\n    import filter epic_learn;\n    export none;\n  }};\n}}\n"
            );
            let allowed: Vec<String> = self
                .allowed_prefixes
                .iter()
                .filter(|p| p.addr().is_ipv6() == v6)
                .map(|p| format!("{}+", p.trunc()))
                .collect();
            let _ = writeln!(
                w,
                "# Export exactly the prefixes our programmer owns.\n\
                 filter epic_export{suffix} {{\n  if proto != \"{kernel}\" then reject;\n  \
                 if krt_source != {protocol} then reject;"
            );
            if !self.allowed_prefixes.is_empty() {
                if allowed.is_empty() {
                    let _ = writeln!(w, "  reject;");
                } else {
                    let _ = writeln!(w, "  if net !~ [ {} ] then reject;", allowed.join(", "));
                }
            }
            let _ = writeln!(w, "  accept;\n}}\n");
        }
        if self.peers.iter().any(|p| p.bfd) {
            let _ = writeln!(w, "protocol bfd epic_bfd {{\n}}\n");
        }
        for peer in &self.peers {
            let v6 = peer.address.is_ipv6();
            let _ = writeln!(w, "protocol bgp {} {{", peer.name);
            let _ = writeln!(w, "  local as {};", self.local_asn);
            let _ = writeln!(w, "  neighbor {} as {};", peer.address, peer.asn);
            if let Some(source) = peer.source_address {
                let _ = writeln!(w, "  source address {source};");
            }
            if let Some(ttl) = peer.multihop {
                let _ = writeln!(w, "  multihop {ttl};");
            }
            if let Some(password) = &peer.password {
                let _ = writeln!(w, "  password \"{password}\";");
            }
            if peer.bfd {
                let _ = writeln!(w, "  bfd on;");
            }
            if let Some(hold) = peer.hold_time {
                let _ = writeln!(w, "  hold time {hold};");
            }
            if let Some(retry) = peer.connect_retry_time {
                let _ = writeln!(w, "  connect retry time {retry};");
            }
            let (family, suffix) = if v6 { ("ipv6", "6") } else { ("ipv4", "4") };
            let _ = writeln!(
                w,
                "  {family} {{\n    import none;\n    export filter epic_export{suffix};\n    \
                 next hop self;\n  }};\n}}\n"
            );
        }
        Ok(out)
    }
}

/// Errors from validating or reloading BIRD.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    /// The configuration could not be rendered.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `bird` or `birdc` could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the configuration file failed.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `bird -p` rejected the configuration.
    #[error("BIRD rejects the configuration: {0}")]
    Invalid(String),
    /// `birdc` could not talk to the daemon.
    #[error("cannot reach BIRD on {socket}: {message}", socket = socket.display())]
    Unreachable {
        /// The control socket.
        socket: PathBuf,
        /// What birdc said.
        message: String,
    },
    /// BIRD answered the reload with an error.
    #[error("BIRD refused to reconfigure: {0}")]
    Refused(String),
}

/// BIRD's answer to `configure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAnswer {
    /// Reconfigured (reply 0003).
    Reconfigured,
    /// Reconfiguration in progress (0004): protocols are restarting.
    InProgress,
    /// A reconfiguration is running; this one is queued (0005).
    Queued,
    /// Nothing changed (0019 / 0006).
    Unchanged,
}

/// Writes `bytes` to `staged`, private from its first byte: the mode and
/// owner of the installed file `current` (without any rights for others:
/// it may hold BGP passwords), else `0600` and the caller's owner. BIRD may
/// run as its own user (Debian's `bird`), which keeps reading a file whose
/// group or owner it had. Synced before it is renamed into place.
fn stage_private(staged: &Path, current: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let existing = std::fs::metadata(current).ok();
    let mode = existing.as_ref().map_or(0o600, |m| m.mode() & 0o770);
    let _ = std::fs::remove_file(staged);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(staged)?;
    if let Some(m) = &existing {
        std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()))?;
    }
    // The umask may have cleared bits of `mode`; set it exactly.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Renames `staged` over `path` and syncs the directory, so the new file
/// survives a crash right after.
fn install(staged: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(staged, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// A running BIRD 2 daemon: where its configuration lives and its control socket.
#[derive(Debug, Clone)]
pub struct Bird {
    /// The configuration file BIRD reads (`bird -c`).
    pub config_path: PathBuf,
    /// The control socket (`bird -s`, `birdc -s`).
    pub socket: PathBuf,
    /// The `bird` binary (validation).
    pub bird: PathBuf,
    /// The `birdc` binary (reload, show).
    pub birdc: PathBuf,
}

impl Bird {
    /// A daemon with this config file and socket, using `bird` and `birdc` from `PATH`.
    pub fn new(config_path: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Bird {
        Bird {
            config_path: config_path.into(),
            socket: socket.into(),
            bird: PathBuf::from("bird"),
            birdc: PathBuf::from("birdc"),
        }
    }

    /// Checks a configuration file with `bird -p -c FILE`.
    pub fn check_file(&self, path: &Path) -> Result<(), BirdError> {
        let output = Command::new(&self.bird)
            .arg("-p")
            .arg("-c")
            .arg(path)
            .output()
            .map_err(|source| BirdError::Spawn {
                program: self.bird.display().to_string(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if text.is_empty() {
                text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            }
            Err(BirdError::Invalid(text))
        }
    }

    /// Renders `config`, validates it, installs it as the daemon's file
    /// (atomically, only if valid) and asks the daemon to reload it.
    pub fn apply(&self, config: &BirdConfig) -> Result<ReloadAnswer, BirdError> {
        let text = config.render()?;
        let mut staged = self.config_path.clone().into_os_string();
        staged.push(".new");
        let staged = PathBuf::from(staged);
        stage_private(&staged, &self.config_path, text.as_bytes()).map_err(|source| {
            BirdError::Write {
                path: staged.clone(),
                source,
            }
        })?;
        if let Err(e) = self.check_file(&staged) {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        install(&staged, &self.config_path).map_err(|source| BirdError::Write {
            path: self.config_path.clone(),
            source,
        })?;
        self.reload()
    }

    /// Runs `birdc configure "<config_path>"` and interprets the answer.
    pub fn reload(&self) -> Result<ReloadAnswer, BirdError> {
        let path = self.config_path.display().to_string();
        let lines = self.birdc(&["configure", &format!("\"{path}\"")])?;
        parse_reload(&lines)
    }

    /// Runs a birdc command; returns the reply lines as `(code, text)`.
    pub fn birdc(&self, args: &[&str]) -> Result<Vec<(u16, String)>, BirdError> {
        let output = Command::new(&self.birdc)
            .arg("-v")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|source| BirdError::Spawn {
                program: self.birdc.display().to_string(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines = parse_replies(&stdout);
        if !output.status.success() || lines.is_empty() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(BirdError::Unreachable {
                socket: self.socket.clone(),
                message: format!("{} {}", stdout.trim(), stderr.trim())
                    .trim()
                    .to_owned(),
            });
        }
        Ok(lines)
    }

    /// `birdc show protocols all <name>` as text (for diagnostics).
    pub fn show(&self, what: &[&str]) -> Result<String, BirdError> {
        let mut args = vec!["show"];
        args.extend_from_slice(what);
        Ok(self
            .birdc(&args)?
            .into_iter()
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Parses `birdc -v` output: lines `NNNN-text`/`NNNN text`, continuation
/// lines starting with a space. The `0001` greeting is dropped.
pub fn parse_replies(text: &str) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = Vec::new();
    for line in text.lines() {
        let code = line.get(..4).and_then(|c| c.parse::<u16>().ok());
        match (code, line.as_bytes().get(4)) {
            (Some(code), Some(b' ' | b'-')) => out.push((code, line[5..].to_owned())),
            (Some(code), None) => out.push((code, String::new())),
            _ => {
                if let Some(text) = line.strip_prefix(' ') {
                    let code = out.last().map(|(c, _)| *c).unwrap_or(0);
                    out.push((code, text.to_owned()));
                }
            }
        }
    }
    out.retain(|(code, _)| *code != 1);
    out
}

/// Interprets the replies to `configure`.
pub fn parse_reload(lines: &[(u16, String)]) -> Result<ReloadAnswer, BirdError> {
    let mut answer = None;
    for (code, _) in lines {
        match code {
            3 | 18 => answer = Some(ReloadAnswer::Reconfigured),
            4 => answer = Some(ReloadAnswer::InProgress),
            5 => answer = Some(ReloadAnswer::Queued),
            6 | 19 => answer = Some(ReloadAnswer::Unchanged),
            _ => {}
        }
    }
    let errors: Vec<&str> = lines
        .iter()
        .filter(|(code, _)| *code >= 8000)
        .map(|(_, text)| text.as_str())
        .collect();
    match answer {
        Some(answer) if errors.is_empty() => Ok(answer),
        _ => Err(BirdError::Refused(if errors.is_empty() {
            lines
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            errors.join("; ")
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BirdConfig {
        serde_yaml_ng::from_str(
            r#"
router_id: 198.51.100.2
local_asn: 65001
allowed_prefixes: [203.0.113.0/24, "2001:db8:ff::/48"]
peers:
  - name: upstream4
    address: 198.51.100.1
    asn: 65000
    password: s3cret
    bfd: true
    hold_time: 9
  - name: upstream6
    address: "2001:db8:a::1"
    asn: 65000
"#,
        )
        .unwrap()
    }

    #[test]
    fn renders_kernel_filters_and_sessions() {
        let text = sample().render().unwrap();
        for needle in [
            "router id 198.51.100.2;",
            "kernel table 4242;",
            "if krt_source = 242 then accept;",
            "protocol kernel epic_kernel4 {",
            "protocol kernel epic_kernel6 {",
            "if proto != \"epic_kernel4\" then reject;",
            "if net !~ [ 203.0.113.0/24+ ] then reject;",
            "if net !~ [ 2001:db8:ff::/48+ ] then reject;",
            "protocol bfd epic_bfd {",
            "neighbor 198.51.100.1 as 65000;",
            "password \"s3cret\";",
            "bfd on;",
            "hold time 9;",
            "neighbor 2001:db8:a::1 as 65000;",
            "export filter epic_export6;",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert_eq!(text.matches("next hop self;").count(), 2);
        assert_eq!(text.matches("export none;").count(), 2);
    }

    #[test]
    fn unsafe_names_and_passwords_are_refused() {
        let mut c = sample();
        c.peers[0].name = "up; protocol".into();
        assert!(matches!(c.render(), Err(ConfigError::BadPeerName(_))));
        let mut c = sample();
        c.peers[0].password = Some("a\"b".into());
        assert!(matches!(c.render(), Err(ConfigError::BadPassword(_))));
        let mut c = sample();
        c.peers[1].name = "upstream4".into();
        assert!(matches!(c.render(), Err(ConfigError::DuplicatePeer(_))));
        let mut c = sample();
        c.table = 254;
        assert!(matches!(c.render(), Err(ConfigError::Reserved { .. })));
    }

    #[test]
    fn the_generated_config_is_accepted_by_bird() {
        if Command::new("bird").arg("--version").output().is_err() {
            eprintln!("skipping: bird is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("epic-route-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bird.conf");
        std::fs::write(&path, sample().render().unwrap()).unwrap();
        let bird = Bird::new(&path, dir.join("bird.ctl"));
        let checked = bird.check_file(&path);
        std::fs::write(&path, "protocol nonsense {").unwrap();
        let broken = bird.check_file(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        checked.unwrap();
        assert!(matches!(broken, Err(BirdError::Invalid(m)) if !m.is_empty()));
    }

    #[test]
    fn birdc_replies_are_interpreted() {
        let ok = parse_replies(
            "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x/bird.conf\n0003 Reconfigured\n",
        );
        assert_eq!(parse_reload(&ok).unwrap(), ReloadAnswer::Reconfigured);
        let bad = parse_replies(
            "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /x\n8002 /x:3:1 syntax error\n",
        );
        assert!(
            matches!(parse_reload(&bad), Err(BirdError::Refused(m)) if m.contains("syntax error"))
        );
    }

    #[test]
    fn the_config_file_is_private_and_keeps_the_daemons_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("epic-bird-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, staged) = (dir.join("bird.conf"), dir.join("bird.conf.new"));
        // No file yet: 0600.
        stage_private(&staged, &path, b"first").unwrap();
        install(&staged, &path).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        // An installed 0644 file (group-readable for a `bird` user): its
        // group rights are kept, others' are dropped.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        stage_private(&staged, &path, b"second").unwrap();
        install(&staged, &path).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!staged.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
