//! `epic-cluster-controller`: the user-cluster side of EPIC-RS.
//!
//! It watches the user cluster's `Service`s of type `LoadBalancer` (class
//! `epic-gateway.org/gateway`), Gateway API gateways and routes,
//! `EndpointSlice`s, `Node`s and `Namespace`s, and what it mirrored to the
//! tenant's namespace on the gateway platform (with the tenant's
//! credentials: `--platform-kubeconfig`). On every debounced burst of
//! changes from either cluster it mirrors them as EPIC-RS resources
//! (applying only what differs, deleting what it no longer mirrors), holds
//! deleted Services with the `service.kubernetes.io/load-balancer-cleanup`
//! finalizer until their platform gateway is gone, and writes the
//! platform's status back: the `Service`'s load balancer ingress, the
//! `Gateway`'s addresses and conditions
//! ([`epic_kube::cluster_controller`]). `/metrics`, `/healthz` and
//! `/readyz` are served on `--ops-listen`. Replicas elect a leader with a
//! `Lease` in the user cluster; only the leader writes. `SIGTERM` stops it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use epic_kube::cluster_controller::{ClusterController, ClusterOptions, LeaseOptions};
use epic_kube::ops;

#[derive(Parser)]
#[command(
    name = "epic-cluster-controller",
    version,
    about = "EPIC-RS cluster controller"
)]
struct Args {
    /// This cluster's id on the platform (unique per tenant).
    #[arg(long)]
    cluster_id: String,
    /// The tenant's namespace on the gateway platform.
    #[arg(long)]
    tenant_namespace: String,
    /// Kubeconfig of the tenant's service account on the platform; the
    /// user cluster itself if absent (single-cluster setups and tests).
    #[arg(long)]
    platform_kubeconfig: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    ops_listen: std::net::SocketAddr,
    /// Elect a leader with a Lease in the user cluster (off: this replica
    /// always leads).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: `$POD_NAMESPACE`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "epic-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "epic-cluster-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: `$POD_NAME`).
    #[arg(long, env = "POD_NAME")]
    holder_id: Option<String>,
    /// Seconds a lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Seconds between safety-net resyncs when nothing changes.
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Milliseconds of quiet that end a burst of changes.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// The namespace the cluster agents run in: each node a tunnel ends on
    /// gets its hello key there, in Secret `epic-node-key-<node>`
    /// (default: `$POD_NAMESPACE`, the chart's release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "epic-system")]
    agent_namespace: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("epic-cluster-controller: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epic-cluster-controller: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn platform_client(path: &Option<PathBuf>) -> Result<kube::Client, String> {
    let Some(path) = path else {
        return kube::Client::try_default()
            .await
            .map_err(|e| format!("Kubernetes client: {e}"));
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("platform client: {e}"))
}

async fn run(args: Args) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let user = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let platform = platform_client(&args.platform_kubeconfig).await?;
    let mut options = ClusterOptions::new(&args.cluster_id, &args.tenant_namespace);
    options.resync = Duration::from_secs(args.resync_seconds.max(1));
    options.debounce = Duration::from_millis(args.debounce_ms);
    options.agent_namespace = Some(args.agent_namespace.clone());
    options.lease = args.leader_elect.then(|| LeaseOptions {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        holder: args.holder_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| format!("pid-{}", std::process::id()))
        }),
        duration: Duration::from_secs(args.lease_seconds.max(1)),
        retry: Duration::from_secs((args.lease_seconds / 5).max(1)),
    });
    let controller = ClusterController::new(user, platform, options);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ops_listener = tokio::net::TcpListener::bind(args.ops_listen)
        .await
        .map_err(|e| format!("operations endpoint on {}: {e}", args.ops_listen))?;
    let ops_task = tokio::spawn(ops::serve(
        ops_listener,
        controller.metrics(),
        controller.health(),
        stopped.clone(),
    ));
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let running = tokio::spawn(controller.run(stopped));
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result.map_err(|e| e.to_string()).and_then(|r| r),
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    };
    tracing::info!("stopping");
    stop.send_replace(true);
    // The controller releases its lease on the way out.
    if !running.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut running).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ops_task).await;
    result
}
