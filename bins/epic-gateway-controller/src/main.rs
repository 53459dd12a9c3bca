//! `epic-gateway-controller`: the engine on the gateway platform.
//!
//! Every interval (and at start) it reads the EPIC-RS resources and the
//! gateway nodes from the Kubernetes API, plans, publishes the Envoy
//! snapshots to its ADS server, patches each gateway's status, and keeps
//! one Envoy `StatefulSet` per programmed gateway. Recorded state (addresses,
//! tunnel ids) lives in the gateways' status, so a restart loses nothing.
//! It runs with the service account the Helm chart (`charts/epic-gateway`)
//! creates; `SIGTERM` stops it after the current pass.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use epic_core::k8s::{ProxySettings, apply_proxies, load, write_statuses};
use epic_core::plan::plan;
use epic_core::publish::{Published, publish};
use epic_xds::{AdsServer, KnownGateways, SnapshotCache};

#[derive(Parser)]
#[command(
    name = "epic-gateway-controller",
    version,
    about = "EPIC-RS gateway controller"
)]
struct Args {
    /// Where the ADS server listens.
    #[arg(long, default_value = "0.0.0.0:18000")]
    xds_listen: SocketAddr,
    /// The ADS server as proxies reach it (`host:port`, the chart's Service).
    #[arg(long, default_value = "epic-gateway-controller.epic-system.svc:18000")]
    xds_service: String,
    /// Where the xDS admin endpoint (`epicctl xds status`) listens; off if absent.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Envoy image for proxies whose template names none.
    #[arg(long, default_value = "envoyproxy/envoy:v1.40.0")]
    envoy_image: String,
    /// Seconds between reconciles.
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
            eprintln!("epic-gateway-controller: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("epic-gateway-controller: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let cache = SnapshotCache::new();
    let known = KnownGateways::new();
    let listener = tokio::net::TcpListener::bind(args.xds_listen)
        .await
        .map_err(|e| format!("xDS server on {}: {e}", args.xds_listen))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut ads_stopped = stopped.clone();
    let ads = tokio::spawn(AdsServer::new(cache.clone(), known.clone()).serve(
        listener,
        async move {
            let _ = ads_stopped.wait_for(|s| *s).await;
        },
    ));
    let admin = match args.admin_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("admin endpoint on {address}: {e}"))?;
            let mut admin_stopped = stopped.clone();
            Some(tokio::spawn(epic_xds::serve_admin(
                listener,
                cache.clone(),
                async move {
                    let _ = admin_stopped.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    tracing::info!("ADS server on {}", args.xds_listen);
    let settings = ProxySettings {
        image: args.envoy_image,
        xds: args.xds_service,
    };
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval.max(1)));
    let mut published = Published::default();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        let loaded = match load(&client).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("{e}");
                continue;
            }
        };
        let plan = plan(&loaded.inputs, &loaded.recorded);
        published = publish(&plan, &cache, &known, &published);
        for p in &plan.problems {
            tracing::warn!("{}: {}", p.object, p.message);
        }
        let statuses = write_statuses(&client, &plan, loaded.gateways()).await;
        if !statuses.done.is_empty() {
            tracing::info!("status updated: {:?}", statuses.done);
        }
        let proxies = apply_proxies(&client, &plan, &loaded.inputs, &settings).await;
        if !proxies.deleted.is_empty() {
            tracing::info!("proxies removed: {:?}", proxies.deleted);
        }
        for e in statuses.failed.iter().chain(&proxies.failed) {
            tracing::error!("{e}");
        }
    }
    tracing::info!("stopping");
    stop.send_replace(true);
    let _ = ads.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}
