//! The proxy sink: one Envoy child process per proxy of a served gateway,
//! each with its own xDS identity and its upstream sockets marked with its
//! tenant's scope. Proxies no gateway has stop; exited ones restart; the
//! ones serving are left in the round for the route sink.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use epic_engine::runtime::{Sink, SinkFuture};
use epic_xds::identity::XdsAuthority;

use crate::config::{StandaloneError, file_error};
use crate::envoy::{EnvoyConfig, EnvoyError, LocalEnvoy};
use crate::round::Round;

/// The running Envoys, by proxy (Envoy node id).
pub struct ProxySink {
    envoy_binary: PathBuf,
    xds_address: SocketAddr,
    /// Issues each proxy its xDS identity (the ADS server requires one).
    authority: XdsAuthority,
    state_dir: PathBuf,
    envoys: BTreeMap<String, LocalEnvoy>,
}

impl ProxySink {
    /// A sink starting `envoy_binary` against the ADS server at
    /// `xds_address`, with identities from `authority`, each Envoy's files
    /// under `state_dir/envoy/`.
    pub fn new(
        envoy_binary: PathBuf,
        xds_address: SocketAddr,
        authority: XdsAuthority,
        state_dir: PathBuf,
    ) -> Self {
        ProxySink {
            envoy_binary,
            xds_address,
            authority,
            state_dir,
            envoys: BTreeMap::new(),
        }
    }

    /// Stops the proxies no gateway has, starts the new ones, restarts the
    /// exited ones; returns those that are ready.
    async fn apply_proxies(&mut self, round: &mut Round) {
        let (plan, report) = (&round.plan, &mut round.report);
        let proxies = round.published.proxies.clone();
        let gone: Vec<String> = self
            .envoys
            .keys()
            .filter(|p| !proxies.contains(*p))
            .cloned()
            .collect();
        for proxy in gone {
            if let Some(envoy) = self.envoys.remove(&proxy) {
                let _ = envoy.stop().await;
            }
            report.proxies_stopped.push(proxy);
        }
        // Each proxy marks its upstream sockets with its tenant's scope.
        let scopes: BTreeMap<&str, u32> = plan
            .gateways
            .iter()
            .flat_map(|g| g.status.proxies.iter().map(|p| (p.as_str(), g.tenant_id)))
            .collect();
        let new: Vec<&String> = proxies
            .iter()
            .filter(|p| !self.envoys.contains_key(*p))
            .collect();
        for proxy in new {
            let mark = scopes.get(proxy.as_str()).copied();
            // One proxy that does not start is that gateway's problem, not
            // every gateway's: it is reported and tried again next time.
            match self.start_proxy(proxy, mark).await {
                Ok(envoy) => {
                    self.envoys.insert(proxy.clone(), envoy);
                    report.proxies_started.push(proxy.clone());
                }
                Err(e) => report.problems.push(format!("proxy {proxy}: {e}")),
            }
        }
        for (proxy, error) in self.heal().await {
            report
                .problems
                .push(format!("proxy {proxy} restarted: {error}"));
        }
        let mut ready = BTreeSet::new();
        for (proxy, envoy) in &mut self.envoys {
            match envoy.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => {
                    ready.insert(proxy.clone());
                }
                Err(e) => report.problems.push(format!("proxy {proxy}: {e}")),
            }
        }
        report.proxies_ready = ready.len();
        round.ready = ready;
    }

    /// Starts the Envoy of `proxy` (node id), its upstream sockets marked
    /// with `mark`, with its own xDS identity; the error says why not.
    async fn start_proxy(&self, proxy: &str, mark: Option<u32>) -> Result<LocalEnvoy, String> {
        let dir = self.state_dir.join("envoy").join(proxy.replace('/', "-"));
        std::fs::create_dir_all(&dir)
            .map_err(file_error("envoy directory", &dir))
            .map_err(|e| e.to_string())?;
        let cluster = proxy.rsplit_once('/').map_or(proxy, |(g, _)| g);
        let mut config = EnvoyConfig::new(self.envoy_binary.clone(), proxy, self.xds_address, &dir);
        config.node_cluster = cluster.to_owned();
        config.upstream_mark = mark;
        let files = crate::xds_identity::proxy_files(&self.authority, proxy, &dir);
        config.tls = Some(files.map_err(|e| e.to_string())?);
        LocalEnvoy::start(config).await.map_err(|e| e.to_string())
    }

    /// Restarts every proxy whose Envoy has exited; returns each one with
    /// why it had stopped. A proxy that cannot be restarted is dropped from
    /// the running set, so the next call (or reconcile) tries again.
    pub async fn heal(&mut self) -> Vec<(String, EnvoyError)> {
        let mut healed = Vec::new();
        let proxies: Vec<String> = self.envoys.keys().cloned().collect();
        for proxy in proxies {
            let Some(envoy) = self.envoys.get_mut(&proxy) else {
                continue;
            };
            let Err(error) = envoy.check_running() else {
                continue;
            };
            let config = envoy.config().clone();
            self.envoys.remove(&proxy);
            tracing::warn!("proxy {proxy}: {error}; restarting it");
            match LocalEnvoy::start(config).await {
                Ok(envoy) => {
                    self.envoys.insert(proxy.clone(), envoy);
                }
                Err(e) => tracing::error!("proxy {proxy}: restart failed: {e}"),
            }
            healed.push((proxy, error));
        }
        healed
    }

    /// The running proxies (Envoy node id) and their process ids.
    pub fn proxies(&self) -> Vec<(String, Option<u32>)> {
        self.envoys
            .iter()
            .map(|(proxy, envoy)| (proxy.clone(), envoy.pid()))
            .collect()
    }

    /// Stops every Envoy.
    pub async fn stop_all(&mut self) {
        for (_, envoy) in std::mem::take(&mut self.envoys) {
            let _ = envoy.stop().await;
        }
    }
}

impl Sink<Round, StandaloneError> for ProxySink {
    fn name(&self) -> &'static str {
        "proxies"
    }

    fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, StandaloneError> {
        Box::pin(async move {
            self.apply_proxies(round).await;
            Ok(())
        })
    }
}
