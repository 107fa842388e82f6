//! `eddy server` (the ksqlDB-compatible REST server) and `eddy sql` (its command-line client).

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use eddy_kafka::KafkaConfig;
use eddy_mqtt_endpoint::{Direct, DirectError, Endpoint, EndpointConfig, StatsReader, TopicRule};
use eddy_sql::{Session, UdfDir};
use eddy_stream::{Engine, EngineConfig, KafkaSettings, WriteError};
use eddy_udf_host::UdfRuntime;
use futures::future::{BoxFuture, FutureExt};
use serde_json::{json, Value};

/// Options of `eddy server`.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on; loopback unless told otherwise. Port 0 picks a free port (printed).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Kafka brokers, for streams WITH (kafka_topic=…).
    #[arg(long, env = "EDDY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Extra librdkafka property for every Kafka client, KEY=VALUE (repeatable), e.g.
    /// security.protocol=SASL_SSL.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Names this deployment (reported as ksqlServiceId; shared by processes that split work).
    #[arg(long, default_value = "eddy", env = "EDDY_SERVICE_ID")]
    service_id: String,
    /// A file holding the token clients must send (`Authorization: Bearer TOKEN`, or Basic auth
    /// with TOKEN as password). Without it, no authentication.
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Larger request bodies are refused with 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// The directory UDF components may be loaded from over HTTP (`CREATE FUNCTION … FROM`) and
    /// where `POST /functions/NAME` stores uploads. Without it, no UDFs over HTTP. It is also
    /// watched: `NAME.wasm` (or the newest `NAME.*.wasm`) serves function NAME, loaded at start
    /// and replaced whenever the file changes.
    #[arg(long)]
    udf_dir: Option<PathBuf>,
    /// Larger component uploads are refused with 413.
    #[arg(long, default_value_t = 64 << 20)]
    max_udf_bytes: usize,
    /// The one directory whose files SQL from clients may read and write (DataFusion's `CREATE
    /// EXTERNAL TABLE` and `COPY`). Without it, clients reach no host files.
    #[arg(long, value_name = "DIR")]
    allow_files: Option<PathBuf>,
    /// Memory each pull query's operators may hold (sorts, aggregations, joins), e.g. `256MB`.
    #[arg(long, default_value = "256MB", value_parser = parse_size)]
    query_memory: usize,
    /// Wall time a pull query may take from planning to its last row, UDF calls included;
    /// past it the query is cancelled.
    #[arg(long, default_value = "60s", value_parser = crate::run::parse_duration)]
    query_timeout: Duration,
    /// An HTTP connection must send a complete request head within this (from its first byte,
    /// or from connecting for its first request), or it is closed.
    #[arg(long, default_value = "10s", value_parser = crate::run::parse_duration)]
    http_header_timeout: Duration,
    /// A request body must arrive whole within this of its head (408 otherwise); on
    /// /inserts-stream, each line within this of the previous one.
    #[arg(long, default_value = "30s", value_parser = crate::run::parse_duration)]
    http_body_timeout: Duration,
    /// An HTTP connection with no request for this long is closed (a push response being
    /// streamed is a request).
    #[arg(long, default_value = "60s", value_parser = crate::run::parse_duration)]
    http_idle_timeout: Duration,
    /// HTTP connections beyond this many open ones are accepted and closed at once.
    #[arg(long, default_value_t = 1000)]
    http_max_connections: usize,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often queries flush their sinks and commit their sources, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    commit_interval_ms: u64,
    #[command(flatten)]
    state: crate::state::StateArgs,
    /// Also accept MQTT 3.1.1 and 5 clients on this address (off unless given); publishes go
    /// to Eddy streams (or, with --mqtt-kafka, to Kafka topics) by --mqtt-map rules.
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<String>,
    /// A rule `TARGET:REGEX` (repeatable; the regex must match the whole MQTT topic, the first
    /// match wins): TARGET is a stream, e.g. `--mqtt-map 'readings:car/.*'`.
    #[arg(long = "mqtt-map", value_name = "TARGET:REGEX")]
    mqtt_rules: Vec<String>,
    /// Unacknowledged QoS 1/2 publishes per MQTT connection before it is no longer read.
    #[arg(long, default_value_t = 64)]
    mqtt_max_inflight: u16,
    /// MQTT targets are Kafka topics on --bootstrap-servers (as `eddy mqtt-proxy`), not streams.
    #[arg(long)]
    mqtt_kafka: bool,
    /// MQTT connections open at once; further ones are closed before their CONNECT is read.
    #[arg(long, default_value_t = 10_000)]
    mqtt_max_connections: usize,
    /// Seconds a new MQTT connection has to send CONNECT (TLS handshake included).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    mqtt_connect_timeout: u64,
    /// The longest MQTT keep-alive granted, in seconds; a client asking for 0 or more gets this
    /// (0: no maximum).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    mqtt_max_keep_alive: u16,
    /// Bytes of MQTT packets not yet read whole, across all connections; a connection that
    /// would take the total over it is closed.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    mqtt_max_unfinished_bytes: usize,
    /// Largest MQTT packet taken; larger ones close the connection.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    mqtt_max_packet_size: usize,
    /// A file of `user:password` lines; MQTT clients must log in as one of them (or, with
    /// --auth-token-file, with the token as password and any user name).
    #[arg(long, value_name = "FILE")]
    mqtt_password_file: Option<PathBuf>,
    /// TLS on the MQTT listener: the certificate chain (PEM); needs --mqtt-tls-key.
    #[arg(long, value_name = "PEM")]
    mqtt_tls_cert: Option<PathBuf>,
    /// TLS on the MQTT listener: the private key (PEM).
    #[arg(long, value_name = "PEM")]
    mqtt_tls_key: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<usize, String> {
    eddy_sql::parse_size(text).map_err(|e| format!("'{text}' {e}"))
}

/// Feeds MQTT publishes into the engine's in-memory streams, without taking the engine lock.
struct StreamTarget(eddy_stream::StreamWriters);

impl Direct for StreamTarget {
    fn write(
        &self,
        target: &str,
        mqtt_topic: &str,
        payload: eddy_mqtt_endpoint::Bytes,
    ) -> BoxFuture<'static, Result<(), DirectError>> {
        // Written here, not in the future, so publishes land in the order they came.
        let result = self
            .0
            .write(target, mqtt_topic, &payload)
            .map_err(|e| match e {
                WriteError::BadEvent(reason) => DirectError::BadPayload(reason),
                other => DirectError::NoTarget(other.to_string()),
            });
        futures::future::ready(result).boxed()
    }
}

/// The HTTP and MQTT connection caps, lowered (and said so) if `ulimit -n` cannot hold them.
fn connection_caps(args: &ServerArgs) -> Result<crate::open_files::Caps> {
    let asked = crate::open_files::Caps {
        http: args.http_max_connections,
        mqtt: if args.mqtt_listen.is_some() {
            args.mqtt_max_connections
        } else {
            0
        },
    };
    let (caps, lowered) = crate::open_files::fit(asked)?;
    if let Some(limit) = lowered {
        tracing::warn!(
            "`ulimit -n` allows {limit} open files, {} of them kept for the server itself: connection caps lowered to {} HTTP and {} MQTT (from --http-max-connections {} and --mqtt-max-connections {})",
            crate::open_files::RESERVED,
            caps.http,
            caps.mqtt,
            asked.http,
            asked.mqtt
        );
    }
    Ok(caps)
}

/// Starts the MQTT endpoint `args` ask for, if any, taking at most `max_connections` at once.
/// With `auth_token` (REST's), MQTT clients need it too, as their password.
async fn start_mqtt(
    args: &ServerArgs,
    max_connections: usize,
    engine: &tokio::sync::Mutex<Engine>,
    auth_token: Option<&str>,
) -> Result<Option<Endpoint>> {
    let Some(listen) = &args.mqtt_listen else {
        if !args.mqtt_rules.is_empty()
            || args.mqtt_kafka
            || args.mqtt_password_file.is_some()
            || args.mqtt_tls_cert.is_some()
            || args.mqtt_tls_key.is_some()
        {
            bail!("--mqtt-map, --mqtt-kafka, --mqtt-password-file and --mqtt-tls-* need --mqtt-listen ADDR");
        }
        return Ok(None);
    };
    if args.mqtt_rules.is_empty() {
        bail!("--mqtt-listen needs at least one --mqtt-map TARGET:REGEX");
    }
    let rules = args
        .mqtt_rules
        .iter()
        .map(|r| r.parse::<TopicRule>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = if args.mqtt_kafka {
        let Some(servers) = &args.bootstrap_servers else {
            bail!("--mqtt-kafka needs --bootstrap-servers");
        };
        EndpointConfig::new(
            listen.clone(),
            KafkaConfig::new(servers.clone(), "eddy-mqtt"),
            rules,
        )
    } else {
        let writers = engine.lock().await.stream_writers();
        EndpointConfig::direct(listen.clone(), Arc::new(StreamTarget(writers)), rules)
    };
    config.max_inflight = args.mqtt_max_inflight;
    crate::mqtt_proxy::Guard {
        max_connections,
        connect_timeout_secs: args.mqtt_connect_timeout,
        max_keep_alive: args.mqtt_max_keep_alive,
        max_unfinished_bytes: args.mqtt_max_unfinished_bytes,
        max_packet_size: args.mqtt_max_packet_size,
        password_file: args.mqtt_password_file.as_deref(),
        token: auth_token.map(str::to_string),
        tls_cert: args.mqtt_tls_cert.as_deref(),
        tls_key: args.mqtt_tls_key.as_deref(),
    }
    .apply(&mut config, "--mqtt-")?;
    Ok(Some(Endpoint::start(config).await?))
}

/// The endpoint's counters as Prometheus samples.
fn mqtt_metrics(stats: StatsReader, kafka: bool) -> eddy_server::MetricsSource {
    use eddy_server::{
        HostMetric,
        MetricKind::{Counter, Gauge},
    };
    Arc::new(move || {
        let s = stats.stats();
        let metric = |name, help, kind, value: u64| HostMetric {
            name,
            help,
            kind,
            value: value as f64,
        };
        let mut out = vec![
            metric("eddy_mqtt_connections", "MQTT connections open now.", Gauge, s.connections),
            metric("eddy_mqtt_connections_total", "MQTT connections accepted.", Counter, s.connections_total),
            metric("eddy_mqtt_published_total", "MQTT PUBLISH packets received.", Counter, s.published),
            metric("eddy_mqtt_forwarded_total", "Publishes the target took (stream, or Kafka acknowledged).", Counter, s.forwarded),
            metric("eddy_mqtt_inflight", "Publishes handed on and not yet settled.", Gauge, s.inflight),
            metric("eddy_mqtt_rejected_total", "Publishes whose payload the stream refused (dropped).", Counter, s.rejected),
            metric("eddy_mqtt_dropped_qos0_total", "QoS 0 publishes Kafka refused (dropped).", Counter, s.dropped_qos0),
            metric("eddy_mqtt_unmapped_total", "Publishes no rule or no target took (dropped).", Counter, s.unmapped),
            metric("eddy_mqtt_failed_total", "QoS 1/2 publishes Kafka refused for good (connection closed).", Counter, s.failed),
            metric("eddy_mqtt_protocol_errors_total", "MQTT connections closed for a protocol error.", Counter, s.protocol_errors),
            metric("eddy_mqtt_blocked_connections", "MQTT connections not read because their window of unacknowledged publishes is full.", Gauge, s.blocked_connections),
            metric("eddy_mqtt_refused_connections_total", "MQTT connections closed at once because --mqtt-max-connections were open.", Counter, s.refused_connections),
            metric("eddy_mqtt_connect_timeouts_total", "MQTT connections closed for no CONNECT within --mqtt-connect-timeout.", Counter, s.connect_timeouts),
            metric("eddy_mqtt_keep_alive_timeouts_total", "MQTT connections closed for no packet within 1.5 keep-alive periods.", Counter, s.keep_alive_timeouts),
            metric("eddy_mqtt_auth_failures_total", "MQTT CONNECTs refused for a missing or wrong user name or password.", Counter, s.auth_failures),
            metric("eddy_mqtt_throttled_logins_total", "MQTT CONNECTs refused unchecked (server unavailable) because their address had failed to log in too often.", Counter, s.throttled_logins),
            metric("eddy_mqtt_invalid_topics_total", "MQTT connections closed for a PUBLISH to a wildcard topic.", Counter, s.invalid_topics),
            metric("eddy_mqtt_too_large_total", "MQTT connections closed for a packet over --mqtt-max-packet-size.", Counter, s.too_large),
            metric("eddy_mqtt_over_budget_total", "MQTT connections closed because unfinished packets would exceed --mqtt-max-unfinished-bytes.", Counter, s.over_budget),
            metric("eddy_mqtt_unfinished_bytes", "Bytes of unfinished MQTT packets held now.", Gauge, s.unfinished_bytes),
            metric("eddy_mqtt_tls_failures_total", "MQTT TLS handshakes that failed or timed out.", Counter, s.tls_failures),
        ];
        if kafka {
            out.push(metric(
                "eddy_mqtt_kafka_reachable",
                "1 unless librdkafka reported all brokers down.",
                Gauge,
                u64::from(s.kafka_reachable),
            ));
        }
        out
    })
}

pub(crate) async fn server(args: &ServerArgs, runtime: UdfRuntime) -> Result<()> {
    let caps = connection_caps(args)?;
    let auth_token = match &args.auth_token_file {
        Some(file) => Some(crate::mqtt_proxy::read_token(file)?),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |file: &PathBuf| {
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))
            };
            let tls = eddy_server::TlsConfig::from_pem(&read(cert)?, &read(key)?)
                .with_context(|| format!("TLS with {} and {}", cert.display(), key.display()))?;
            Some(tls)
        }
        _ => None,
    };
    let config = EngineConfig {
        kafka: args
            .bootstrap_servers
            .as_ref()
            .map(|servers| {
                Ok::<_, anyhow::Error>(KafkaSettings {
                    bootstrap_servers: servers.clone(),
                    extra: crate::run::kafka_properties(&args.kafka_properties)?,
                })
            })
            .transpose()?,
        service_id: args.service_id.clone(),
        commit_interval: Duration::from_millis(args.commit_interval_ms),
        state: args.state.store(&args.service_id)?,
        ..EngineConfig::default()
    };
    // Clients over the network get no host files (unless --allow-files), no settings, no crate
    // builds; each pull query runs under a memory and time budget.
    let mut session = Session::new(runtime);
    session.set_access(eddy_sql::Access::network(args.allow_files.as_deref())?);
    session.set_budget(eddy_sql::Budget {
        memory: Some(args.query_memory),
        timeout: Some(args.query_timeout),
    });
    let engine = Arc::new(tokio::sync::Mutex::new(Engine::new(session, config)));
    if let Some(dir) = &args.udf_dir {
        let mut dir = UdfDir::new(dir);
        crate::run::sync_udf_dir(&mut dir, &mut *engine.lock().await).await?;
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                // Scanned and compiled without the engine: a large component takes seconds to
                // compile, and every client would wait. The statement then finds it compiled.
                let due = match crate::run::due_in_udf_dir(&mut dir) {
                    Ok(due) if due.is_empty() => continue,
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        continue;
                    }
                };
                for load in &due {
                    let warm_up = engine.lock().await.session().warm_up(load.sql());
                    if let Some(job) = warm_up {
                        job.run().await;
                    }
                }
                let mut engine = engine.lock().await;
                crate::run::load_udf_dir(&mut dir, due, &mut engine).await;
            }
        });
    }
    let mqtt = start_mqtt(args, caps.mqtt, &engine, auth_token.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let server = eddy_server::Server::new(
        engine.clone(),
        eddy_server::ServerConfig {
            service_id: args.service_id.clone(),
            kafka_cluster_id: args
                .bootstrap_servers
                .clone()
                .unwrap_or_else(|| "none".into()),
            bootstrap_servers: args.bootstrap_servers.clone(),
            auth_token,
            max_body_bytes: args.max_body_bytes,
            udf_dir: args.udf_dir.clone(),
            max_udf_bytes: args.max_udf_bytes,
            header_timeout: args.http_header_timeout,
            body_timeout: args.http_body_timeout,
            idle_timeout: args.http_idle_timeout,
            max_connections: caps.http,
            tls: tls.clone(),
        },
    );
    // The HTTP line stays first: scripts and tests read the address from it.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "eddy server listening on {scheme}://{}",
        listener.local_addr()?
    );
    if let Some(endpoint) = &mqtt {
        server.add_metrics(mqtt_metrics(endpoint.stats_reader(), !endpoint.is_direct()));
        println!(
            "eddy server: MQTT listening on {} ({}{})",
            endpoint.local_addr(),
            if endpoint.is_direct() {
                "into streams"
            } else {
                "into Kafka topics"
            },
            if args.mqtt_tls_cert.is_some() {
                ", TLS"
            } else {
                ""
            }
        );
    }
    std::io::stdout().flush()?;
    server.serve(listener, stop_signal()).await?;
    if let Some(endpoint) = mqtt {
        // Before the queries stop, so nothing is acknowledged into a stream no one reads.
        eprintln!("eddy server: stopping MQTT");
        endpoint.shutdown(Duration::from_secs(10)).await;
    }
    eprintln!("eddy server: stopping queries");
    let mut engine = engine.lock().await;
    engine.shutdown().await;
    eprintln!("eddy server: stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Options of `eddy sql`.
#[derive(clap::Args)]
pub(crate) struct SqlArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8088", env = "EDDY_SERVER")]
    server: String,
    /// Run these statements and exit (otherwise a prompt reads statements from stdin).
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// A file holding the server's auth token.
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
}

pub(crate) async fn sql(args: &SqlArgs) -> Result<()> {
    let token = match &args.auth_token_file {
        Some(f) => Some(std::fs::read_to_string(f)?.trim().to_string()),
        None => None,
    };
    let client = Client {
        http: reqwest::Client::new(),
        base: args.server.trim_end_matches('/').to_string(),
        token,
        properties: Default::default(),
    };
    if let Some(text) = &args.execute {
        let mut failed = false;
        for (_, statement) in eddy_sql::split_statements(text) {
            if let Err(e) = client.run(&statement).await {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
        if failed {
            bail!("a statement failed");
        }
        return Ok(());
    }
    // A prompt: statements end with ';'. On a terminal, with line editing and history.
    if std::io::stdin().is_terminal() {
        return crate::repl::prompt(async |input: String| {
            for (_, statement) in eddy_sql::split_statements(&input) {
                if let Err(e) = client.run(&statement).await {
                    eprintln!("error: {e:#}");
                }
            }
        })
        .await;
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut buffer = String::new();
    loop {
        if interactive {
            print!(
                "{}",
                if buffer.is_empty() {
                    "eddy> "
                } else {
                    "   -> "
                }
            );
            std::io::stdout().flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        buffer.push_str(&line);
        if !buffer.trim_end().ends_with(';') {
            continue;
        }
        for (_, statement) in eddy_sql::split_statements(&buffer) {
            if let Err(e) = client.run(&statement).await {
                eprintln!("error: {e:#}");
            }
        }
        buffer.clear();
    }
    Ok(())
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Set with `SET 'key' = 'value'` and sent with every later request, as ksqlDB's CLI does:
    /// the server applies properties per request only.
    properties: std::sync::Mutex<serde_json::Map<String, Value>>,
}

impl Client {
    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                "Content-Type",
                "application/vnd.ksql.v1+json; charset=utf-8",
            )
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    fn properties(&self) -> Value {
        Value::Object(self.properties.lock().expect("properties lock").clone())
    }

    async fn run(&self, statement: &str) -> Result<()> {
        use eddy_stream::Statement;
        match eddy_stream::parse(statement) {
            Ok(Statement::Set { key, value }) => {
                println!("'{key}' is '{value}' for this session's statements");
                self.properties
                    .lock()
                    .expect("properties lock")
                    .insert(key, Value::String(value));
                return Ok(());
            }
            // Rows as they come, from /query; the server reports a statement that does not
            // parse, with its position, whichever endpoint it reaches.
            Ok(Statement::Query(_) | Statement::Push { .. } | Statement::Print { .. }) => {
                return self.query(statement).await;
            }
            _ => {}
        }
        let response = self
            .post(
                "/ksql",
                json!({"ksql": statement, "streamsProperties": self.properties()}),
            )
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{} ({status})", body["message"].as_str().unwrap_or("error"));
        }
        for entity in body.as_array().into_iter().flatten() {
            print_entity(entity);
        }
        Ok(())
    }

    /// Streams a query's rows as they arrive (until LIMIT, the end, or Ctrl-C).
    async fn query(&self, statement: &str) -> Result<()> {
        let mut response = self
            .post(
                "/query-stream",
                json!({"sql": statement, "properties": self.properties()}),
            )
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            bail!("{} ({status})", body["message"].as_str().unwrap_or("error"));
        }
        let mut pending = String::new();
        let mut rows = 0;
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk?,
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(chunk) = chunk else { break };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                let Ok(value) = serde_json::from_str::<Value>(line.trim()) else {
                    continue;
                };
                if let Some(names) = value.get("columnNames").and_then(Value::as_array) {
                    let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                    println!("{}", names.join(" | "));
                } else if let Some(row) = value.as_array() {
                    rows += 1;
                    let cells: Vec<String> = row.iter().map(cell).collect();
                    println!("{}", cells.join(" | "));
                } else if let Some(message) = value.get("message").and_then(Value::as_str) {
                    // The query failed after its first rows (a time or memory limit, say).
                    println!("({rows} row{})", if rows == 1 { "" } else { "s" });
                    bail!("{message}");
                }
            }
        }
        println!("({rows} row{})", if rows == 1 { "" } else { "s" });
        Ok(())
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn print_entity(entity: &Value) {
    let kind = entity["@type"].as_str().unwrap_or_default();
    match kind {
        "currentStatus" => println!(
            "{}",
            entity["commandStatus"]["message"]
                .as_str()
                .unwrap_or("done")
        ),
        "streams" | "tables" | "queries" | "function_names" => {
            let key = if kind == "function_names" {
                "functions"
            } else {
                kind
            };
            let list = entity[key].as_array().cloned().unwrap_or_default();
            for item in &list {
                let line = match kind {
                    "queries" => format!(
                        "{} | {} | {}",
                        cell(&item["id"]),
                        cell(&item["queryType"]),
                        cell(&item["queryString"])
                    ),
                    "function_names" => {
                        format!("{} | {}", cell(&item["name"]), cell(&item["version"]))
                    }
                    _ => format!(
                        "{} | {} | {}",
                        cell(&item["name"]),
                        cell(&item["topic"]),
                        cell(&item["valueFormat"])
                    ),
                };
                println!("{line}");
            }
            println!("({} {kind})", list.len());
        }
        "sourceDescription" => {
            let d = &entity["sourceDescription"];
            println!("{} {}", cell(&d["type"]), cell(&d["name"]));
            for field in d["fields"].as_array().into_iter().flatten() {
                println!(
                    "  {} {}{}",
                    cell(&field["name"]),
                    cell(&field["schema"]["type"]),
                    field
                        .get("type")
                        .map(|t| format!(" ({})", cell(t)))
                        .unwrap_or_default()
                );
            }
        }
        _ => println!(
            "{}",
            serde_json::to_string_pretty(entity).unwrap_or_default()
        ),
    }
}
