//! `epic agent`: the cluster-node side of standalone mode — the cluster
//! eBPF programs on the node's uplink and an authenticated hello sender per
//! tunnel — configured from a YAML file (in Kubernetes,
//! `epic-cluster-agent` gets the same facts from the cluster controller).
//!
//! ```yaml
//! node: node-1            # this node's name: its hello identity
//! uplink: eth0            # the interface toward the gateways
//! address: 192.0.2.1      # this node's tunnel address (hellos leave from it)
//! tenantId: 7             # the tenant's data-path id
//! helloIntervalSeconds: 3 # default 3
//! tunnels:                # from the gateway's status (`status.json` in standalone mode)
//! - id: 1
//!   gateway: 198.51.100.1
//!   keyFile: /etc/epic/keys/demo/quickstart/node-1.key  # this node's own key
//!   endpoints:            # the pods this tunnel may deliver to (the status lists them)
//!   - {address: 203.0.113.10, port: 8080, protocol: TCP}
//! ```
//!
//! A tunnel delivers only to its listed endpoints: the cluster ingress
//! program drops anything else it carries (`drop_inner_not_endpoint`), so
//! a gateway node, or whoever took over a tunnel, cannot reach the node
//! itself or other pods.
//!
//! The agent stops on `SIGTERM`/`SIGINT`; the programs are detached then.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use epic_bpf::agent::{ClusterHelloAgent, ClusterHelloStats};
use epic_bpf::{DataPath, Program};
use epic_gue::hello::clock::{MonotonicClock, wall_clock_nanos};
use epic_gue::hello::{HelloKey, HelloSender, SenderConfig};
use epic_gue::maps::{Counter, TunnelValue};
use epic_gue::{GUE_PORT, NodeId, TenantId, TunnelId};
use epic_model::TunnelEndpoint;
use serde::Deserialize;

/// Options of `epic agent`.
#[derive(clap::Parser)]
pub struct Args {
    /// The agent's configuration file (YAML).
    #[arg(long)]
    config: PathBuf,
    /// Write the data-path counters and hello totals here (JSON), every second.
    #[arg(long)]
    stats: Option<PathBuf>,
}

/// What `--stats` holds.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStats {
    /// Hellos sent.
    pub hellos_sent: u64,
    /// Gateway challenges answered.
    #[serde(default)]
    pub challenges_answered: u64,
    /// Received datagrams that were not a genuine, recent challenge.
    #[serde(default)]
    pub challenges_refused: u64,
    /// Packets decapsulated from the tunnels.
    pub decapsulated: u64,
    /// Reply packets encapsulated into the tunnels.
    pub encapsulated: u64,
    /// Packets dropped, by counter name.
    pub dropped: std::collections::BTreeMap<String, u64>,
}

fn write_stats(path: &Path, datapath: &DataPath, hellos: &ClusterHelloStats) {
    let mut stats = AgentStats {
        hellos_sent: hellos.sent,
        challenges_answered: hellos.answered,
        challenges_refused: hellos.refused,
        ..Default::default()
    };
    if let Ok(counters) = datapath.counters() {
        for (counter, value) in counters {
            match counter {
                Counter::Decapsulated => stats.decapsulated = value.packets,
                Counter::Encapsulated => stats.encapsulated = value.packets,
                Counter::ControlPassed => {}
                other => {
                    stats.dropped.insert(format!("{other:?}"), value.packets);
                }
            }
        }
    }
    let tmp = path.with_extension("tmp");
    if let Ok(json) = serde_json::to_vec_pretty(&stats)
        && std::fs::write(&tmp, json).is_ok()
    {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name (its hello identity is derived from it).
    pub node: String,
    /// The uplink interface.
    pub uplink: String,
    /// This node's tunnel address on the uplink.
    pub address: IpAddr,
    /// The tenant's data-path id.
    pub tenant_id: u32,
    /// Seconds between hellos.
    #[serde(default = "default_interval")]
    pub hello_interval_seconds: u64,
    /// Tunnels to gateway nodes.
    pub tunnels: Vec<TunnelEntry>,
}

fn default_interval() -> u64 {
    3
}

/// One tunnel to a gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelEntry {
    /// Tunnel id.
    pub id: u32,
    /// The gateway node's tunnel address.
    pub gateway: IpAddr,
    /// The tunnel key file (64 hex digits).
    pub key_file: PathBuf,
    /// The local pod endpoints the tunnel delivers to (required: a tunnel
    /// with none delivers nothing).
    pub endpoints: Vec<TunnelEndpoint>,
}

/// Reads and checks the configuration; errors name the file and the field.
pub fn load(path: &Path) -> Result<(AgentConfig, Vec<HelloKey>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let config: AgentConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        format!("{}: {field}: {}", path.display(), e.into_inner())
    })?;
    if config.tunnels.is_empty() {
        return Err(format!(
            "{}: tunnels: at least one tunnel is needed",
            path.display()
        ));
    }
    if config.hello_interval_seconds == 0 {
        return Err(format!(
            "{}: helloIntervalSeconds: must be at least 1",
            path.display()
        ));
    }
    let mut keys = Vec::new();
    for (i, t) in config.tunnels.iter().enumerate() {
        if t.gateway.is_ipv4() != config.address.is_ipv4() {
            return Err(format!(
                "{}: tunnels[{i}].gateway: {} is not in the family of address {}",
                path.display(),
                t.gateway,
                config.address
            ));
        }
        if config.tunnels[..i].iter().any(|o| o.id == t.id) {
            return Err(format!(
                "{}: tunnels[{i}].id: tunnel {} is listed twice",
                path.display(),
                t.id
            ));
        }
        // A relative key file is relative to the configuration file.
        let key_path = path.parent().unwrap_or(Path::new(".")).join(&t.key_file);
        let hex = std::fs::read_to_string(&key_path).map_err(|e| {
            format!(
                "{}: tunnels[{i}].keyFile: {}: {e}",
                path.display(),
                key_path.display()
            )
        })?;
        let key = HelloKey::from_hex(hex.trim()).ok_or_else(|| {
            format!(
                "{}: tunnels[{i}].keyFile: {}: expected 64 hex digits",
                path.display(),
                key_path.display()
            )
        })?;
        keys.push(key);
    }
    Ok((config, keys))
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: Args) -> Result<(), String> {
    let (config, keys) = load(&args.config)?;
    let mut datapath = DataPath::load().map_err(|e| e.to_string())?;
    datapath
        .attach(Program::ClusterIngress, &config.uplink)
        .map_err(|e| e.to_string())?;
    datapath
        .attach(Program::ClusterEgress, &config.uplink)
        .map_err(|e| e.to_string())?;
    let local = SocketAddr::new(config.address, GUE_PORT);
    let socket = UdpSocket::bind(local).map_err(|e| format!("hello socket {local}: {e}"))?;
    let clock = MonotonicClock::new();
    // One hello agent: every tunnel's hellos go from the node's socket to
    // its gateway, whose challenges come back to the same socket.
    let mut agent = ClusterHelloAgent::new(socket, clock);
    add_tunnels(&config, &keys, clock, &mut datapath, &mut agent)?;
    tracing::info!(
        "cluster agent on {} ({}): {} tunnel(s), hellos every {} s",
        config.uplink,
        config.address,
        config.tunnels.len(),
        config.hello_interval_seconds
    );
    let (stop, waiter) = stop_on_signal()?;
    let mut rounds = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Sends what is due and answers challenges for 100 ms.
        if let Err(e) = agent.run_for(Duration::from_millis(100)) {
            tracing::warn!("hellos: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(path) = &args.stats
            && rounds.is_multiple_of(10)
        {
            write_stats(path, &datapath, &agent.stats());
        }
        rounds += 1;
    }
    if let Some(path) = &args.stats {
        write_stats(path, &datapath, &agent.stats());
    }
    let _ = waiter.join();
    tracing::info!("stopping; detaching the programs");
    drop(datapath);
    Ok(())
}

/// Sets up every configured tunnel: in the data path with the endpoints it
/// may deliver to, and as a hello sender of `agent` (`keys` in tunnel
/// order).
fn add_tunnels(
    config: &AgentConfig,
    keys: &[HelloKey],
    clock: MonotonicClock,
    datapath: &mut DataPath,
    agent: &mut ClusterHelloAgent,
) -> Result<(), String> {
    let tenant = TenantId(config.tenant_id);
    let node = NodeId::from_name(&config.node);
    let interval = Duration::from_secs(config.hello_interval_seconds);
    for (t, key) in config.tunnels.iter().zip(keys) {
        let value = TunnelValue::pending(tenant, config.address, GUE_PORT)
            .verified(t.gateway, GUE_PORT)
            .ok_or_else(|| format!("tunnel {}: address families differ", t.id))?;
        datapath
            .add_tunnel(TunnelId(t.id), value)
            .map_err(|e| e.to_string())?;
        for e in &t.endpoints {
            datapath
                .add_local_endpoint(TunnelId(t.id), e.address, e.port, e.protocol.number())
                .map_err(|e| e.to_string())?;
        }
        let mut sender = SenderConfig::new(TunnelId(t.id), key.clone(), tenant, node);
        sender.interval = interval;
        agent.add_sender(
            SocketAddr::new(t.gateway, GUE_PORT),
            HelloSender::new(&sender, clock.now(), wall_clock_nanos()),
        );
    }
    Ok(())
}

/// A flag set on the first SIGTERM or SIGINT, and the thread that waits
/// for it.
fn stop_on_signal() -> Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let waiter = std::thread::spawn(move || {
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        flag.store(true, Ordering::Relaxed);
    });
    Ok((stop, waiter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: &str, key: Option<&str>) -> Result<AgentConfig, String> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("epic-agent-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(key) = key {
            std::fs::write(dir.join("t.key"), key).unwrap();
        }
        let path = dir.join("agent.yaml");
        std::fs::write(&path, config).unwrap();
        let result = load(&path).map(|(c, _)| c);
        let _ = std::fs::remove_dir_all(&dir);
        result.map_err(|e| e.rsplit(".yaml: ").next().unwrap_or_default().to_owned())
    }

    const GOOD_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    #[test]
    fn a_good_configuration_loads_with_its_key_next_to_it() {
        let c = check(
            "node: n1\nuplink: eth0\naddress: 192.0.2.1\ntenantId: 7\ntunnels: [{id: 1, gateway: 198.51.100.1, keyFile: t.key, endpoints: [{address: 203.0.113.10, port: 8080}, {address: '2001:db8::10', port: 53, protocol: UDP}]}]\n",
            Some(GOOD_KEY),
        )
        .unwrap();
        assert_eq!(c.hello_interval_seconds, 3);
        assert_eq!(c.tunnels[0].id, 1);
        let endpoints: Vec<_> = c.tunnels[0]
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.port, e.protocol.number()))
            .collect();
        assert_eq!(
            endpoints,
            [
                ("203.0.113.10".to_owned(), 8080, 6),
                ("2001:db8::10".to_owned(), 53, 17)
            ]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let base = "node: n1\nuplink: eth0\naddress: 192.0.2.1\ntenantId: 7\n";
        let cases = [
            (
                format!(
                    "{base}tunnels: [{{id: 1, gateway: 2001:db8::1, keyFile: t.key, endpoints: []}}]\n"
                ),
                Some(GOOD_KEY),
                "tunnels[0].gateway: 2001:db8::1 is not in the family of address 192.0.2.1",
            ),
            (
                format!(
                    "{base}tunnels: [{{id: 1, gateway: 198.51.100.1, keyFile: t.key, endpoints: []}}, {{id: 1, gateway: 198.51.100.2, keyFile: t.key, endpoints: []}}]\n"
                ),
                Some(GOOD_KEY),
                "tunnels[1].id: tunnel 1 is listed twice",
            ),
            (
                format!(
                    "{base}tunnels: [{{id: 1, gateway: 198.51.100.1, keyFile: t.key, endpoints: []}}]\n"
                ),
                Some("abc"),
                "expected 64 hex digits",
            ),
            (
                format!(
                    "{base}tunnels: [{{id: 1, gateway: 198.51.100.1, keyFile: t.key, endpoints: []}}]\n"
                ),
                None,
                "No such file or directory",
            ),
            (
                format!("{base}tunnels: [{{id: 1, gateway: 198.51.100.1, keyFile: t.key}}]\n"),
                Some(GOOD_KEY),
                "tunnels[0]: missing field `endpoints`",
            ),
            (
                format!(
                    "{base}tunnels: [{{id: 1, gateway: 198.51.100.1, keyFile: t.key, endpoints: [{{address: 203.0.113.10, port: 80, protocol: SCTP}}]}}]\n"
                ),
                Some(GOOD_KEY),
                "tunnels[0].endpoints[0].protocol: unknown variant `SCTP`",
            ),
            (
                format!("{base}tunnels: []\n"),
                None,
                "tunnels: at least one tunnel is needed",
            ),
            (
                format!("{base}tunels: []\n"),
                None,
                "tunels: unknown field `tunels`",
            ),
            (
                "node: n1\nuplink: eth0\naddress: 192.0.2.300\ntenantId: 7\ntunnels: []\n".into(),
                None,
                "address: invalid IP address syntax",
            ),
        ];
        for (config, key, want) in cases {
            let got = check(&config, key).unwrap_err();
            assert!(got.contains(want), "{config}: got {got:?}, want {want:?}");
        }
    }
}
