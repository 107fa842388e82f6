//! Eddy's ksqlDB-compatible REST server.
//!
//! Serves one [`eddy_stream::Engine`] over the endpoints ksqlDB clients use: `POST /ksql`,
//! `POST /query` (HTTP/1.1 chunked), `POST /query-stream` (HTTP/2 or HTTP/1.1), `POST
//! /close-query`, `POST /inserts-stream`, `GET /info`, `GET /healthcheck`, and Prometheus
//! `GET /metrics`. One port speaks HTTP/1.1 and cleartext HTTP/2 (prior knowledge).
//!
//! The engine is `&mut self`, so it sits behind an async mutex; push-query rows are read outside
//! the lock, and a client that goes away drops its push query, which the engine then reaps.

mod auth;
mod conn;
mod error;
mod ksql;
mod metrics;
mod query;
mod rows;
mod tls;
mod topics;
mod udf;
mod variables;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use eddy_stream::Engine;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Mutex};

pub use error::ApiError;
pub use metrics::{HostMetric, MetricKind, MetricsSource};
pub use tls::{TlsConfig, TlsError};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Reported by `/info` as `ksqlServiceId`.
    pub service_id: String,
    /// Reported by `/info` as `kafkaClusterId`.
    pub kafka_cluster_id: String,
    /// The Kafka brokers `SHOW TOPICS` lists the topics of; `None`: no Kafka.
    pub bootstrap_servers: Option<String>,
    /// When set, every endpoint but `/healthcheck` wants `Authorization: Bearer TOKEN` (or Basic
    /// auth whose password is TOKEN).
    pub auth_token: Option<String>,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// The only directory `CREATE FUNCTION … FROM 'path'` may read over HTTP, and where
    /// `POST /functions/{name}` stores uploaded components. `None`: no UDFs over HTTP.
    pub udf_dir: Option<PathBuf>,
    /// Larger component uploads get 413.
    pub max_udf_bytes: usize,
    /// A connection must send a complete request head within this (from its first byte, or from
    /// accept for its first request).
    pub header_timeout: Duration,
    /// A request body must arrive whole within this of its head (408 otherwise); on
    /// `/inserts-stream`, each line within this of the previous one.
    pub body_timeout: Duration,
    /// A connection with no request for this long is closed (push responses being streamed are
    /// requests in flight).
    pub idle_timeout: Duration,
    /// Connections beyond this many open ones are accepted and closed at once.
    pub max_connections: usize,
    /// Serve HTTPS (ALPN h2 and http/1.1) instead of cleartext HTTP.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            service_id: "eddy".into(),
            kafka_cluster_id: "eddy".into(),
            bootstrap_servers: None,
            auth_token: None,
            max_body_bytes: 1 << 20,
            udf_dir: None,
            max_udf_bytes: 64 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1000,
            tls: None,
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Mutex<Engine>>,
    pub(crate) config: ServerConfig,
    /// Push queries served over `/query-stream`, closable with `/close-query`.
    pub(crate) closers: std::sync::Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Turns true when the server stops: streaming responses end.
    pub(crate) stopping: watch::Receiver<bool>,
    pub(crate) http: metrics::HttpStats,
    /// The host's own samples for `GET /metrics`.
    pub(crate) host_metrics: std::sync::Mutex<Vec<MetricsSource>>,
}

/// A server around one engine.
pub struct Server {
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
}

impl Server {
    /// Wraps `engine`.
    pub fn new(engine: Arc<Mutex<Engine>>, config: ServerConfig) -> Server {
        let (stop, stopping) = watch::channel(false);
        Server {
            state: Arc::new(AppState {
                engine,
                config,
                closers: Default::default(),
                stopping,
                http: Default::default(),
                host_metrics: Default::default(),
            }),
            stop,
        }
    }

    /// Adds `source`'s samples to every `GET /metrics` (e.g. an embedded MQTT endpoint's).
    pub fn add_metrics(&self, source: MetricsSource) {
        if let Ok(mut sources) = self.state.host_metrics.lock() {
            sources.push(source);
        }
    }

    /// The routes, for embedding or testing without a socket.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves `listener` until `shutdown` resolves; then stops accepting, ends streaming
    /// responses, and returns once open connections have finished. Connections are capped and
    /// timed out as [`ServerConfig`] says.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        let stop = self.stop;
        let stopping = self.state.stopping.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        conn::serve(listener, self.state, app, stopping).await;
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ksql", post(ksql::ksql))
        .route("/query", post(query::query))
        .route("/query-stream", post(query::query_stream))
        .route("/close-query", post(query::close_query))
        .route("/inserts-stream", post(query::inserts_stream))
        .route("/info", get(ksql::info))
        .route("/healthcheck", get(ksql::healthcheck))
        .route("/metrics", get(metrics::metrics))
        .route("/functions", get(udf::list))
        .route(
            "/functions/{name}",
            axum::routing::post(udf::upload).delete(udf::drop_function),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        // Handlers read bodies themselves, with the configured limit and ksqlDB-shaped errors.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
