//! The operator's HTTP endpoint: Prometheus `/metrics`, liveness `/healthz`
//! (the process answers) and readiness `/readyz` (it holds the Lease and its
//! controllers run).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Error;

/// The labels of the reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The resource kind reconciled.
    pub kind: String,
}

/// The operator's counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Reconciles run, per kind.
    pub reconciles: Family<KindLabel, Counter>,
    /// Reconciles that failed, per kind.
    pub failures: Family<KindLabel, Counter>,
    /// Kubernetes Events published (scaling decisions and phase changes).
    pub events: Counter,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("muster_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<KindLabel, Counter>::default();
        let events = Counter::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed",
            failures.clone(),
        );
        registry.register("events", "Kubernetes Events published", events.clone());
        registry.register(
            "leader",
            "1 while this replica holds the Lease",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            failures,
            events,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconcile of `kind`, failed or not.
    pub fn reconciled(&self, kind: &str, ok: bool) {
        let l = KindLabel { kind: kind.into() };
        self.reconciles.get_or_create(&l).inc();
        if !ok {
            self.failures.get_or_create(&l).inc();
        }
    }

    pub(crate) fn set_leader(&self, on: bool) {
        self.leader.set(i64::from(on));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Readiness, flipped once the controllers run.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// Starts serving in the background.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> Result<Health, Error> {
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State((m, _)): State<(Metrics, Health)>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((_, h)): State<(Metrics, Health)>| async move {
                if h.0.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the leader Lease",
                    )
                }
            }),
        )
        .with_state((metrics, health.clone()));
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP endpoint stopped: {e}");
        }
    });
    Ok(health)
}
