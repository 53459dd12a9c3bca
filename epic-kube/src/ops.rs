//! What operators and the kubelet see of a controller: Prometheus metrics
//! on `/metrics`, liveness on `/healthz`, readiness on `/readyz`.
//!
//! A controller is ready when its caches have synced and, if it leads, its
//! first reconcile is done; a replica that does not lead is ready once its
//! caches are warm (it can take over at once). Metrics follow Prometheus
//! naming (`epic_` prefix, `_total` counters, `_seconds` histograms).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-kind object gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind (`Gateway`, `Service`, ...).
    pub kind: String,
}

/// Labels of the gateway condition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// Condition type.
    pub condition: String,
    /// `True` or `False`.
    pub status: String,
}

/// Labels of the reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// The metrics of one controller.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run, by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile duration.
    pub reconcile_seconds: Histogram,
    /// Errors reported by sinks during reconciles (one per failed object).
    pub sink_errors: Counter,
    /// Objects in the stores, by kind.
    pub objects: Family<KindLabels, Gauge>,
    /// Gateways by condition and status.
    pub gateways: Family<ConditionLabels, Gauge>,
    /// Connected xDS streams.
    pub xds_streams: Gauge,
    /// NACKs received on the connected xDS streams.
    pub xds_nacks: Gauge,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

impl Metrics {
    /// The metrics of controller `name` (the `controller` label of every series).
    pub fn new(name: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "epic",
            [("controller".into(), name.to_owned().into())].into_iter(),
        );
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            sink_errors: Counter::default(),
            objects: Family::default(),
            gateways: Family::default(),
            xds_streams: Gauge::default(),
            xds_nacks: Gauge::default(),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconciles run", metrics.reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "sink_errors",
            "Objects a reconcile could not write",
            metrics.sink_errors.clone(),
        );
        registry.register(
            "objects",
            "Objects in the controller's caches",
            metrics.objects.clone(),
        );
        registry.register(
            "gateways",
            "Gateways by condition",
            metrics.gateways.clone(),
        );
        registry.register(
            "xds_streams",
            "Connected xDS streams",
            metrics.xds_streams.clone(),
        );
        registry.register(
            "xds_stream_nacks",
            "NACKs received on the connected xDS streams",
            metrics.xds_nacks.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records one reconcile.
    pub fn reconciled(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    /// Sets the object gauge of `kind`.
    pub fn set_objects(&self, kind: &str, count: usize) {
        self.objects
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Liveness and readiness.
#[derive(Default)]
pub struct Health {
    synced: AtomicBool,
    leading: AtomicBool,
    reconciled: AtomicBool,
}

impl Health {
    /// The caches have their first complete list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Whether this replica leads (a new leader must reconcile once more
    /// before it is ready again).
    pub fn set_leading(&self, leading: bool) {
        if self.leading.swap(leading, Ordering::Relaxed) != leading {
            self.reconciled.store(false, Ordering::Relaxed);
        }
    }

    /// A reconcile finished.
    pub fn set_reconciled(&self) {
        self.reconciled.store(true, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
            && (!self.leading.load(Ordering::Relaxed) || self.reconciled.load(Ordering::Relaxed))
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn route(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" | "/livez" => respond(StatusCode::OK, "text/plain", "ok".into()),
        "/readyz" if health.ready() => respond(StatusCode::OK, "text/plain", "ok".into()),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced or first reconcile not done".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "operations endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::stopped(&mut stop) => return,
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = route(request.uri().path(), &metrics, &health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), conn).await {
                tracing::debug!(%peer, error = %e, "operations endpoint: connection timed out");
            }
        });
    }
}
