//! `epic run`: standalone mode's loop. Reconciles at start (a bad file is
//! an error), then when the resources file changes, on `SIGHUP`, when a
//! tunnel is verified or expires (endpoints reach the proxies only through
//! verified tunnels), and after a failed reconcile; heals exited proxies;
//! writes `--stats` every second; stops on `SIGTERM`/`SIGINT`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use epic_standalone::standalone::{Standalone, StandaloneConfig};

use crate::RunArgs;

/// What `epic run --stats` holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStats {
    /// Tunnels verified (first answered challenge, or first after expiry).
    pub tunnels_learned: u64,
    /// Tunnels whose hellos stopped for too long.
    pub tunnels_expired: u64,
    /// Packets of the gateway programs, by counter name
    /// (`drop_tunnel_pending`: sent into a tunnel not verified yet).
    pub packets: BTreeMap<String, u64>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Writes the gateway's counters to `path` (atomically; errors logged).
fn write_stats(path: &Path, epic: &Standalone) {
    let hellos = epic.hello_stats();
    let mut stats = GatewayStats {
        tunnels_learned: hellos.learned,
        tunnels_expired: hellos.expired,
        packets: BTreeMap::new(),
    };
    match epic.counters() {
        Ok(counters) => {
            for (counter, value) in counters {
                stats
                    .packets
                    .insert(counter.name().to_owned(), value.packets);
            }
        }
        Err(e) => tracing::warn!("stats: {e}"),
    }
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(&stats)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&tmp, json))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!("stats {}: {e}", path.display());
    }
}

/// The standalone configuration of `args`.
fn config(args: &RunArgs) -> StandaloneConfig {
    let mut config = StandaloneConfig::new(
        &args.resources,
        &args.state_dir,
        &args.node_name,
        args.tunnel_address,
        &args.uplink,
    );
    config.public_interface = args.public_interface.clone();
    config.xds = args.xds;
    config.envoy = args.envoy.clone();
    config.announce = args.announce;
    config.platform_networks = args.platform_networks.clone();
    config.address_grace = Duration::from_secs(args.address_grace_seconds);
    config
}

/// Runs `epic run` until `SIGTERM` or `SIGINT`.
pub(crate) fn run(args: RunArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let mut epic = Standalone::start(config(&args))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!("ADS server on {}", epic.xds_address());
        // The first reconcile must succeed: a bad file at start is an error.
        match epic.reconcile().await {
            Ok(report) => tracing::info!("reconciled: {report}"),
            Err(e) => {
                epic.shutdown().await;
                return Err(e.to_string());
            }
        }
        let result = serve(&args, &mut epic).await;
        tracing::info!("stopping");
        epic.shutdown().await;
        result
    })
}

/// Reconciles on every change until `SIGTERM` or `SIGINT`.
async fn serve(args: &RunArgs, epic: &mut Standalone) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let tunnels = epic.tunnel_changes();
    let mut seen = modified(&args.resources);
    let mut retry = false;
    let mut tick = tokio::time::interval(Duration::from_secs(args.watch_interval.max(1)));
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let reload = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => true,
            _ = tunnels.notified() => true,
            _ = stats_tick.tick() => {
                if let Some(path) = &args.stats {
                    write_stats(path, epic);
                }
                false
            }
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
}
