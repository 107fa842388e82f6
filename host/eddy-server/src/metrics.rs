//! `GET /metrics`: the engine's query counters and the UDFs' call counters in Prometheus text
//! format, encoded by the `prometheus` crate from a registry built at each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::error::{code, ApiError};
use crate::AppState;

/// The server's own counters.
#[derive(Debug)]
pub(crate) struct HttpStats {
    requests: Mutex<BTreeMap<String, u64>>,
    /// Time to a response's head (a streaming body goes on after it), by endpoint.
    latency: HistogramVec,
    push_active: AtomicI64,
    push_total: AtomicU64,
    pulls: AtomicU64,
}

impl Default for HttpStats {
    fn default() -> Self {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "eddy_http_request_duration_seconds",
                "Time from a request to its response head, by endpoint.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 4.0, 9).expect("valid buckets")),
            &["path"],
        )
        .expect("a valid histogram");
        HttpStats {
            requests: Default::default(),
            latency,
            push_active: Default::default(),
            push_total: Default::default(),
            pulls: Default::default(),
        }
    }
}

fn known(path: &str) -> &str {
    let known = [
        "/ksql",
        "/query",
        "/query-stream",
        "/close-query",
        "/inserts-stream",
        "/info",
        "/healthcheck",
        "/metrics",
        "/functions",
    ];
    // Unknown paths share one label, so a scanner cannot grow the label set.
    if known.contains(&path) {
        path
    } else if path.starts_with("/functions/") {
        "/functions/{name}"
    } else {
        "other"
    }
}

impl HttpStats {
    pub(crate) fn observe(&self, path: &str, seconds: f64) {
        self.latency
            .with_label_values(&[known(path)])
            .observe(seconds);
    }

    pub(crate) fn request(&self, path: &str) {
        let path = known(path);
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry(path.to_string()).or_default() += 1;
        }
    }

    pub(crate) fn push_started(&self) {
        self.push_active.fetch_add(1, Ordering::Relaxed);
        self.push_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn push_ended(&self) {
        self.push_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn next_pull(&self) -> u64 {
        self.pulls.fetch_add(1, Ordering::Relaxed)
    }
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) -> prometheus::Result<()> {
    let gauge = IntGauge::new(name, help)?;
    gauge.set(value);
    registry.register(Box::new(gauge))
}

async fn gather(state: &AppState) -> prometheus::Result<String> {
    let registry = Registry::new();
    let (queries, functions) = {
        let mut engine = state.engine.lock().await;
        crate::ksql::reap(&mut engine).await;
        let functions: Vec<_> = engine
            .session()
            .functions()
            .iter()
            .map(|(name, f)| (name.clone(), f.clone()))
            .collect();
        (engine.queries(), functions)
    };
    let query_counters = [
        ("eddy_query_events_in_total", "Events a query read."),
        ("eddy_query_rows_out_total", "Rows a query wrote."),
        (
            "eddy_query_bad_events_total",
            "Events a query could not decode.",
        ),
        (
            "eddy_query_late_events_total",
            "Events dropped because their window had closed.",
        ),
        (
            "eddy_query_failed_events_total",
            "Events in batches that failed (a UDF trapped, a cast failed).",
        ),
    ];
    let vecs = query_counters
        .iter()
        .map(|(name, help)| counter(&registry, name, help, &["query_id", "kind"]))
        .collect::<prometheus::Result<Vec<_>>>()?;
    for q in &queries {
        let kind = if q.sink.is_some() {
            "persistent"
        } else {
            "push"
        };
        let values = [
            q.events_in,
            q.rows_out,
            q.bad_events,
            q.late_events,
            q.failed_events,
        ];
        for (vec, value) in vecs.iter().zip(values) {
            vec.with_label_values(&[q.id.as_str(), kind]).inc_by(value);
        }
    }
    let lag = IntGaugeVec::new(
        Opts::new(
            "eddy_query_source_lag",
            "Messages waiting in a query's source beyond what it read (Kafka consumer lag).",
        ),
        &["query_id"],
    )?;
    registry.register(Box::new(lag.clone()))?;
    for q in &queries {
        if let Some(l) = q.lag {
            lag.with_label_values(&[q.id.as_str()])
                .set(i64::try_from(l).unwrap_or(i64::MAX));
        }
    }
    gauge(
        &registry,
        "eddy_queries_running",
        "Queries running now, persistent and push.",
        queries.len() as i64,
    )?;
    let udf_counters = [
        ("eddy_udf_calls_total", "Guest calls (one per batch)."),
        ("eddy_udf_rows_total", "Rows passed to the function."),
        (
            "eddy_udf_row_errors_total",
            "Rows the guest reported as failed.",
        ),
        ("eddy_udf_traps_total", "Calls that trapped or hit a limit."),
    ];
    let vecs = udf_counters
        .iter()
        .map(|(name, help)| counter(&registry, name, help, &["function", "version"]))
        .collect::<prometheus::Result<Vec<_>>>()?;
    for (name, f) in &functions {
        let version = f.component().hash.chars().take(16).collect::<String>();
        let stats = f.stats();
        let values = [
            stats.calls.load(Ordering::Relaxed),
            stats.rows.load(Ordering::Relaxed),
            stats.row_errors.load(Ordering::Relaxed),
            stats.traps.load(Ordering::Relaxed),
        ];
        for (vec, value) in vecs.iter().zip(values) {
            vec.with_label_values(&[name.as_str(), version.as_str()])
                .inc_by(value);
        }
    }
    let requests = counter(
        &registry,
        "eddy_http_requests_total",
        "HTTP requests, by endpoint.",
        &["path"],
    )?;
    let snapshot = state
        .http
        .requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    for (path, n) in snapshot {
        requests.with_label_values(&[path.as_str()]).inc_by(n);
    }
    gauge(
        &registry,
        "eddy_http_push_queries_active",
        "Push queries streaming to HTTP clients now.",
        state.http.push_active.load(Ordering::Relaxed),
    )?;
    let total = counter(
        &registry,
        "eddy_http_push_queries_total",
        "Push queries started over HTTP.",
        &[],
    )?;
    total
        .with_label_values(&[] as &[&str])
        .inc_by(state.http.push_total.load(Ordering::Relaxed));
    registry.register(Box::new(state.http.latency.clone()))?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match gather(&state).await {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => ApiError::generic(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::SERVER_ERROR,
            format!("could not encode metrics: {e}"),
        )
        .into_response(),
    }
}
