//! `epic-gateway-controller`: the engine on the gateway platform.
//!
//! It watches the EPIC-RS resources and the gateway nodes (reflectors, no
//! polling), and on every debounced burst of changes plans, publishes the
//! Envoy snapshots to its ADS server, patches each gateway's status and
//! keeps one Envoy `StatefulSet` per programmed gateway
//! ([`epic_kube::controller`]). Recorded state (addresses, tunnel ids)
//! lives in the gateways' status, so a restart loses nothing. Replicas elect
//! a leader with a `Lease`; only the leader writes (standbys plan and serve
//! the same xDS snapshots), and a replica that loses the lease exits so it
//! restarts as a candidate. `/metrics`,
//! `/healthz` and `/readyz` are served on `--ops-listen`. It runs with the
//! service account the Helm chart (`charts/epic-gateway`) creates; `SIGTERM`
//! stops it (releasing the lease).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use epic_engine::tunnel_ids::TunnelIdSecret;
use epic_kube::ProxySettings;
use epic_kube::controller::{GatewayController, LeaseOptions, Options};
use epic_kube::ops;
use epic_xds::AdsServer;

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
    /// Serve ADS over mutual TLS (default): every proxy gets its own
    /// certificate, named by its node id, from the authority in the Secret
    /// `epic-xds-ca` of `--lease-namespace` (created if missing), and only
    /// that identity is served. `false`: plaintext (tests and debugging).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    xds_tls: bool,
    /// Where the xDS admin endpoint (`epicctl xds status`) listens, on
    /// loopback only (it has no authentication; reach it with `kubectl
    /// port-forward`); off if absent.
    #[arg(long, value_parser = loopback_address)]
    admin_listen: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    ops_listen: SocketAddr,
    /// Envoy image for proxies whose template names none.
    #[arg(long, default_value = "envoyproxy/envoy:v1.40.0")]
    envoy_image: String,
    /// Another Envoy image a GatewayTemplate may name (repeatable); a
    /// template naming an image not allowed is not accepted.
    #[arg(long = "allowed-envoy-image")]
    allowed_envoy_images: Vec<String>,
    /// Elect a leader with a Lease (off: this replica always leads).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: `$POD_NAMESPACE`, else `epic-system`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "epic-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "epic-gateway-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: `$POD_NAME`).
    #[arg(long, env = "POD_NAME")]
    holder_id: Option<String>,
    /// Seconds a lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Seconds between lease renewals and candidate retries.
    #[arg(long, default_value_t = 2)]
    lease_retry_seconds: u64,
    /// Seconds between safety-net resyncs when nothing changes.
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Milliseconds of quiet that end a burst of changes.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// A network of the platform no tenant endpoint may use (CIDR or
    /// address; repeatable): node, pod and service networks, BGP peers.
    /// The API server's address is always added.
    #[arg(long = "platform-network", value_parser = epic_engine::admission::parse_network)]
    platform_networks: Vec<epic_engine::admission::IpNet>,
    /// Seconds a released address is held back before another tenant may
    /// get it (recorded in the pool's status); 0: reused at once.
    #[arg(long, default_value_t = 300)]
    address_grace_seconds: u64,
}

/// A socket address on loopback, for endpoints that have no authentication.
fn loopback_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text.parse().map_err(|e| format!("{text}: {e}"))?;
    if address.ip().is_loopback() {
        Ok(address)
    } else {
        Err(format!(
            "{address} is not on loopback: the xDS admin endpoint has no authentication (use 127.0.0.1 and kubectl port-forward)"
        ))
    }
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

fn options(args: &Args) -> Result<Options, String> {
    let holder = args.holder_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| format!("pid-{}", std::process::id()))
    });
    Ok(Options {
        proxies: ProxySettings {
            image: args.envoy_image.clone(),
            xds: args.xds_service.clone(),
            other_images: args.allowed_envoy_images.clone(),
        },
        debounce: Duration::from_millis(args.debounce_ms),
        max_delay: Duration::from_secs(1),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        lease: args.leader_elect.then(|| LeaseOptions {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            holder,
            duration: Duration::from_secs(args.lease_seconds.max(1)),
            retry: Duration::from_secs(args.lease_retry_seconds.max(1)),
        }),
        tunnel_ids: TunnelIdSecret::random()
            .map_err(|e| format!("the tunnel id secret: random source: {e}"))?,
        platform_networks: args.platform_networks.clone(),
        xds_authority: None,
        address_grace: Duration::from_secs(args.address_grace_seconds),
    })
}

async fn listen(address: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("{what} on {address}: {e}"))
}

async fn run(args: Args) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("Kubernetes client configuration: {e}"))?;
    let mut options = options(&args)?;
    // The API server is the platform's: no endpoint may point at it.
    if let Some(host) = config.cluster_url.host()
        && let Ok(address) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
    {
        options.platform_networks.push(address.into());
    }
    let client = kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    let mut server_tls = None;
    if args.xds_tls {
        let authority = epic_kube::xds_identity::authority(&client, &args.lease_namespace)
            .await
            .map_err(|e| e.to_string())?;
        server_tls = Some(epic_xds::ServerTls {
            ca_pem: authority.cert_pem(),
            server: authority.issue_server().map_err(|e| e.to_string())?,
        });
        options.xds_authority = Some(std::sync::Arc::new(authority));
    }
    let controller = GatewayController::new(client, options);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let xds = listen(args.xds_listen, "xDS server").await?;
    let mut ads = AdsServer::new(controller.cache().clone(), controller.known().clone());
    if let Some(tls) = server_tls {
        ads = ads.with_tls(tls);
    }
    let mut ads_stopped = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let _ = ads
            .serve(xds, async move {
                let _ = ads_stopped.wait_for(|s| *s).await;
            })
            .await;
    }));
    if let Some(address) = args.admin_listen {
        let listener = listen(address, "admin endpoint").await?;
        let (cache, mut admin_stopped) = (controller.cache().clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            let _ = epic_xds::serve_admin(listener, cache, async move {
                let _ = admin_stopped.wait_for(|s| *s).await;
            })
            .await;
        }));
    }
    let ops_listener = listen(args.ops_listen, "operations endpoint").await?;
    tasks.push(tokio::spawn(ops::serve(
        ops_listener,
        controller.metrics(),
        controller.health(),
        stopped.clone(),
    )));
    tracing::info!(xds = %args.xds_listen, ops = %args.ops_listen, "serving");
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
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::loopback_address;

    #[test]
    fn the_admin_endpoint_listens_on_loopback_only() {
        for ok in ["127.0.0.1:18001", "[::1]:18001"] {
            assert_eq!(loopback_address(ok).unwrap().to_string(), ok);
        }
        for refused in ["0.0.0.0:18001", "[::]:18001", "198.51.100.1:18001"] {
            let err = loopback_address(refused).unwrap_err();
            assert!(err.contains("not on loopback"), "{refused}: {err}");
        }
        assert!(loopback_address("localhost").is_err());
    }
}
