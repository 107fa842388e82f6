//! `GET /metrics`: the engine's query counters and the UDFs' call counters in Prometheus text
//! format, encoded by the `prometheus` crate from a registry built at each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::error::{code, ApiError};
use crate::AppState;

/// Whether a host metric only goes up or may go either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A total since start (Prometheus counter; its name ends in `_total`).
    Counter,
    /// A value now (Prometheus gauge).
    Gauge,
}

/// One sample a host adds to `GET /metrics` (e.g. the MQTT endpoint's counters).
#[derive(Debug, Clone, PartialEq)]
pub struct HostMetric {
    /// Its Prometheus name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Its value now.
    pub value: f64,
}

/// Called at each scrape for the host's samples; see [`crate::Server::add_metrics`].
pub type MetricsSource = Arc<dyn Fn() -> Vec<HostMetric> + Send + Sync>;

/// Registers the samples of every host source in `registry`.
fn host_metrics(registry: &Registry, sources: &[MetricsSource]) -> prometheus::Result<()> {
    for source in sources {
        for m in source() {
            match m.kind {
                MetricKind::Counter => {
                    let c = prometheus::Counter::new(m.name, m.help)?;
                    c.inc_by(m.value);
                    registry.register(Box::new(c))?;
                }
                MetricKind::Gauge => {
                    let g = prometheus::Gauge::new(m.name, m.help)?;
                    g.set(m.value);
                    registry.register(Box::new(g))?;
                }
            }
        }
    }
    Ok(())
}

/// The server's own counters.
#[derive(Debug)]
pub(crate) struct HttpStats {
    requests: Mutex<BTreeMap<String, u64>>,
    /// Time to a response's head (a streaming body goes on after it), by endpoint.
    latency: HistogramVec,
    push_active: AtomicI64,
    push_total: AtomicU64,
    pulls: AtomicU64,
    /// Connection counts of the transport (`crate::conn`).
    pub(crate) transport: Transport,
}

/// Why the transport closed a connection or ended a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutKind {
    /// The request head did not arrive in time.
    Header,
    /// The request body (or, on `/inserts-stream`, the next line) did not arrive in time.
    Body,
    /// No request for the idle timeout.
    Idle,
}

impl TimeoutKind {
    const ALL: [TimeoutKind; 3] = [TimeoutKind::Header, TimeoutKind::Body, TimeoutKind::Idle];

    fn label(self) -> &'static str {
        match self {
            TimeoutKind::Header => "header",
            TimeoutKind::Body => "body",
            TimeoutKind::Idle => "idle",
        }
    }
}

/// Connections open, accepted, refused over the cap, and timed out.
#[derive(Debug, Default)]
pub(crate) struct Transport {
    open: AtomicI64,
    accepted: AtomicU64,
    refused: AtomicU64,
    timeouts: [AtomicU64; 3],
}

impl Transport {
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timed_out(&self, kind: TimeoutKind) {
        self.timeouts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
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
            transport: Default::default(),
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

/// One series of a histogram aggregated elsewhere (in the engine, per UDF).
struct Series {
    /// Label values, in the order of the family's label names.
    labels: Vec<String>,
    /// `(upper bound in seconds, cumulative count)`, `+Inf` left out.
    buckets: Vec<(f64, u64)>,
    /// Sum of observations, in seconds.
    sum: f64,
    /// All observations.
    count: u64,
}

/// A histogram family built from pre-aggregated buckets, which `prometheus::Histogram` cannot
/// be loaded from; registered like any collector, so names and labels are validated the same.
struct Aggregated {
    desc: Desc,
    family: MetricFamily,
}

impl Collector for Aggregated {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family.clone()]
    }
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    label_names: &[&str],
    series: Vec<Series>,
) -> prometheus::Result<()> {
    let desc = Desc::new(
        name.to_string(),
        help.to_string(),
        label_names.iter().map(|l| l.to_string()).collect(),
        Default::default(),
    )?;
    let metrics = series
        .into_iter()
        .map(|s| {
            let mut h = proto::Histogram::default();
            h.set_sample_count(s.count);
            h.set_sample_sum(s.sum);
            h.set_bucket(
                s.buckets
                    .into_iter()
                    .map(|(le, n)| {
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            let labels = label_names
                .iter()
                .zip(s.labels)
                .map(|(n, v)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(n.to_string());
                    pair.set_value(v);
                    pair
                })
                .collect();
            let mut m = proto::Metric::from_label(labels);
            m.set_histogram(h);
            m
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(metrics);
    registry.register(Box::new(Aggregated { desc, family }))
}

/// Shadows' comparisons and own calls, by function and shadow version, and capture files.
fn rollout_metrics(
    registry: &Registry,
    functions: &[(String, Arc<eddy_udf_host::WasmScalarUdf>)],
    captures: Option<&eddy_udf_host::CaptureStats>,
) -> prometheus::Result<()> {
    let shadow_counters = [
        (
            "eddy_udf_shadow_rows_compared_total",
            "Rows a shadow version ran on and compared with the serving version's results.",
        ),
        (
            "eddy_udf_shadow_rows_differing_total",
            "Compared rows whose shadow result differed (beyond the tolerance).",
        ),
        (
            "eddy_udf_shadow_rows_skipped_total",
            "Sampled rows the shadow skipped because it was still busy with earlier batches.",
        ),
        (
            "eddy_udf_shadow_calls_total",
            "Shadow guest calls (one per batch).",
        ),
        (
            "eddy_udf_shadow_row_errors_total",
            "Rows the shadow reported as failed.",
        ),
        (
            "eddy_udf_shadow_traps_total",
            "Shadow calls that trapped or hit a limit.",
        ),
    ];
    let vecs = shadow_counters
        .iter()
        .map(|(name, help)| counter(registry, name, help, &["function", "version"]))
        .collect::<prometheus::Result<Vec<_>>>()?;
    let per_query = [
        (
            "eddy_udf_shadow_query_rows_compared_total",
            "Rows of one continuous query a shadow version ran on and compared.",
        ),
        (
            "eddy_udf_shadow_query_rows_differing_total",
            "Compared rows of one continuous query whose shadow result differed.",
        ),
    ]
    .iter()
    .map(|(name, help)| counter(registry, name, help, &["function", "version", "query"]))
    .collect::<prometheus::Result<Vec<_>>>()?;
    let mut durations = Vec::new();
    for (name, f) in functions {
        let Some(shadow) = f.shadow() else { continue };
        let version = shadow.component.hash.chars().take(16).collect::<String>();
        let report = shadow.report();
        let stats = shadow.stats();
        let values = [
            report.rows_compared,
            report.rows_differing,
            report.rows_skipped,
            stats.calls.load(Ordering::Relaxed),
            stats.row_errors.load(Ordering::Relaxed),
            stats.traps.load(Ordering::Relaxed),
        ];
        for (vec, value) in vecs.iter().zip(values) {
            vec.with_label_values(&[name.as_str(), version.as_str()])
                .inc_by(value);
        }
        for (query, compared) in &report.per_query {
            for (vec, value) in per_query.iter().zip([compared.rows, compared.differing]) {
                vec.with_label_values(&[name.as_str(), version.as_str(), query.as_str()])
                    .inc_by(value);
            }
        }
        let duration = stats.call_duration.snapshot();
        durations.push(Series {
            labels: vec![name.clone(), version],
            buckets: duration.buckets().collect(),
            sum: duration.sum_seconds(),
            count: duration.count,
        });
    }
    histogram(
        registry,
        "eddy_udf_shadow_call_duration_seconds",
        "Wall time of each shadow guest call, off the query's path.",
        &["function", "version"],
        durations,
    )?;
    if let Some(captures) = captures {
        let written = counter(
            registry,
            "eddy_udf_captures_total",
            "Capture files written for failing UDF calls (--capture-dir).",
            &[],
        )?;
        written
            .with_label_values(&[] as &[&str])
            .inc_by(captures.written.load(Ordering::Relaxed));
        let dropped = counter(
            registry,
            "eddy_udf_captures_dropped_total",
            "Failing UDF calls not captured: the capture directory was at its bound.",
            &[],
        )?;
        dropped
            .with_label_values(&[] as &[&str])
            .inc_by(captures.dropped.load(Ordering::Relaxed));
    }
    Ok(())
}

async fn gather(state: &AppState) -> prometheus::Result<String> {
    let registry = Registry::new();
    let (queries, functions, captures) = {
        let mut engine = state.engine.lock().await;
        crate::ksql::reap(&mut engine).await;
        let captures = engine.session().runtime().capture_stats();
        let functions: Vec<_> = engine
            .session()
            .functions()
            .iter()
            .map(|(name, f)| (name.clone(), f.clone()))
            .collect();
        (engine.queries(), functions, captures)
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
    histogram(
        &registry,
        "eddy_query_batch_duration_seconds",
        "Wall time to run one input batch through a query's plans, decoding and writing output \
         excluded (retries isolating failed rows included).",
        &["query_id"],
        queries
            .iter()
            .map(|q| Series {
                labels: vec![q.id.clone()],
                buckets: q.batch_duration.buckets().collect(),
                sum: q.batch_duration.sum_seconds(),
                count: q.batch_duration.count,
            })
            .collect(),
    )?;
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
    let limit_hits = counter(
        &registry,
        "eddy_udf_limit_hits_total",
        "Guest calls stopped by a limit: time, memory, table or stack.",
        &["function", "version", "limit"],
    )?;
    let mut durations = Vec::with_capacity(functions.len());
    for (name, component, stats) in functions.iter().flat_map(|(name, f)| {
        f.version_stats()
            .into_iter()
            .map(move |(component, stats)| (name, component, stats))
    }) {
        let version = component.hash.chars().take(16).collect::<String>();
        for (kind, n) in stats.limit_hits_by_kind() {
            limit_hits
                .with_label_values(&[name.as_str(), version.as_str(), kind.label()])
                .inc_by(n);
        }
        let duration = stats.call_duration.snapshot();
        durations.push(Series {
            labels: vec![name.clone(), version.clone()],
            buckets: duration.buckets().collect(),
            sum: duration.sum_seconds(),
            count: duration.count,
        });
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
    histogram(
        &registry,
        "eddy_udf_call_duration_seconds",
        "Wall time of each guest call (one per batch), argument and result conversion excluded.",
        &["function", "version"],
        durations,
    )?;
    rollout_metrics(&registry, &functions, captures.as_deref())?;
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
    let transport = &state.http.transport;
    gauge(
        &registry,
        "eddy_http_connections",
        "HTTP connections open now.",
        transport.open.load(Ordering::Relaxed),
    )?;
    for (name, help, value) in [
        (
            "eddy_http_connections_total",
            "HTTP connections accepted under the cap.",
            &transport.accepted,
        ),
        (
            "eddy_http_connections_refused_total",
            "HTTP connections closed at once because --http-max-connections were open.",
            &transport.refused,
        ),
    ] {
        counter(&registry, name, help, &[])?
            .with_label_values(&[] as &[&str])
            .inc_by(value.load(Ordering::Relaxed));
    }
    let timeouts = counter(
        &registry,
        "eddy_http_timeouts_total",
        "HTTP connections closed, or request bodies ended, by a timeout: header, body or idle.",
        &["kind"],
    )?;
    for kind in TimeoutKind::ALL {
        timeouts
            .with_label_values(&[kind.label()])
            .inc_by(transport.timeouts[kind as usize].load(Ordering::Relaxed));
    }
    let sources = state
        .host_metrics
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    host_metrics(&registry, &sources)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_histograms_encode_as_prometheus_histograms() {
        let registry = Registry::new();
        histogram(
            &registry,
            "eddy_test_duration_seconds",
            "A test histogram.",
            &["function", "version"],
            vec![Series {
                labels: vec!["f".into(), "abc".into()],
                buckets: vec![(0.001, 1), (0.01, 3)],
                sum: 0.5,
                count: 4,
            }],
        )
        .unwrap();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = [
            "# TYPE eddy_test_duration_seconds histogram",
            r#"eddy_test_duration_seconds_bucket{function="f",version="abc",le="0.001"} 1"#,
            r#"eddy_test_duration_seconds_bucket{function="f",version="abc",le="0.01"} 3"#,
            r#"eddy_test_duration_seconds_bucket{function="f",version="abc",le="+Inf"} 4"#,
            r#"eddy_test_duration_seconds_sum{function="f",version="abc"} 0.5"#,
            r#"eddy_test_duration_seconds_count{function="f",version="abc"} 4"#,
        ];
        for line in expected {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // A bad name is refused as for any other collector.
        assert!(histogram(&registry, "bad name", "help", &[], Vec::new()).is_err());
    }

    #[test]
    fn host_metrics_encode_as_counters_and_gauges() {
        let registry = Registry::new();
        let source: MetricsSource = Arc::new(|| {
            vec![
                HostMetric {
                    name: "eddy_test_things_total",
                    help: "Things.",
                    kind: MetricKind::Counter,
                    value: 3.0,
                },
                HostMetric {
                    name: "eddy_test_open",
                    help: "Open now.",
                    kind: MetricKind::Gauge,
                    value: 2.0,
                },
            ]
        });
        host_metrics(&registry, &[source]).unwrap();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "# TYPE eddy_test_things_total counter",
            "eddy_test_things_total 3",
            "# TYPE eddy_test_open gauge",
            "eddy_test_open 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
