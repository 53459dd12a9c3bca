//! `epic-cluster-controller`: the user-cluster side of EPIC-RS.
//!
//! Every interval it reads the user cluster's `Service`s of type
//! `LoadBalancer` (class `epic-gateway.org/gateway`), Gateway API gateways
//! and routes, `EndpointSlice`s, `Node`s and `Namespace`s, mirrors them as
//! EPIC-RS resources into the tenant's namespace on the gateway platform
//! (with the tenant's credentials: `--platform-kubeconfig`), deletes what it
//! mirrored before and no longer does, and writes the platform's status
//! back: the `Service`'s load balancer ingress, the `Gateway`'s addresses
//! and conditions. `SIGTERM` stops it after the current pass.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use epic_core::k8s::cluster::{apply_mirrored, load_user_cluster, write_back};
use epic_core::mirror::{MirrorConfig, mirror};

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
    /// Seconds between passes.
    #[arg(long, default_value_t = 5)]
    interval: u64,
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
    let config = MirrorConfig::new(&args.tenant_namespace);
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval.max(1)));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        let cluster = match load_user_cluster(&user, &args.cluster_id).await {
            Ok(cluster) => cluster,
            Err(e) => {
                tracing::error!("{e}");
                continue;
            }
        };
        let mirrored = mirror(&cluster, &config);
        for s in &mirrored.skipped {
            tracing::warn!("{}: {}", s.object, s.reason);
        }
        match apply_mirrored(&platform, &mirrored, &config, &args.cluster_id).await {
            Ok(report) if !report.deleted.is_empty() => {
                tracing::info!("removed from the platform: {:?}", report.deleted)
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("{e}");
                continue;
            }
        }
        match write_back(&user, &platform, &cluster, &config, &args.cluster_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} status(es) written back"),
            Err(e) => tracing::error!("{e}"),
        }
    }
    tracing::info!("stopping");
    Ok(())
}
