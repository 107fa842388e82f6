//! Eddy's MQTT endpoint: devices publish to it with any MQTT 3.1.1 or 5 client, and every
//! publish lands in a Kafka topic chosen by `kafka_topic:regex` rules (as the Confluent MQTT
//! Proxy's `topic.regex.list`), or, in direct mode, in a target of the host's (Eddy's streams)
//! through the [`Direct`] trait. No separate MQTT broker is involved.
//!
//! **No loss.** A QoS 1 publish is answered with PUBACK, and a QoS 2 publish with PUBREC, only
//! once Kafka acknowledged its record (`acks=all`, idempotent producer, so retries neither
//! duplicate nor reorder). Records wait in librdkafka for as long as Kafka is unreachable
//! (`message.timeout.ms=0` unless overridden), so the endpoint simply stops acknowledging; each
//! connection has a bounded window of unacknowledged publishes, and once it is full the
//! connection is not read any more (TCP back-pressure reaches the device). A record Kafka
//! refuses for good (e.g. too large) is never acknowledged: the connection is closed, counted
//! in [`Stats::failed`], and the device resends once it reconnects with its session.
//!
//! QoS 0 publishes (at most once) never hold a connection up: they are handed to librdkafka
//! without taking a place in the window, and dropped when its queue is full (Kafka away long
//! enough to fill `queue.buffering.max.messages`) or when Kafka refuses them; both are counted in
//! [`Stats::dropped_qos0`]. On a healthy cluster every QoS 0 publish lands. Publishes on MQTT topics no rule maps are dropped, counted in
//! [`Stats::unmapped`] and logged; MQTT 5 clients get a negative ack (reason 0x90, topic name
//! invalid), MQTT 3.1.1 has no negative ack so they get a plain one.
//!
//! The MQTT topic becomes the Kafka record key (so one MQTT topic stays in one partition, in
//! order), or a header ([`TopicAs`]). Subscriptions are refused: this endpoint only receives.
//! Sessions are not kept across connections (CONNACK says `session_present = false`).
//!
//! **Direct mode** ([`EndpointConfig::direct`]): rules read `target:regex` and each publish is
//! handed to [`Direct::write`]; QoS 1/2 acks go out once its future resolved `Ok`, through the
//! same window and back-pressure as Kafka's deliveries. A target that does not exist
//! ([`DirectError::NoTarget`]) is treated as an unmapped topic. A payload the target refuses
//! ([`DirectError::BadPayload`]: not valid JSON for the stream, a wrong field count, …) does
//! not end the connection: it is dropped, counted in [`Stats::rejected`], logged with its
//! reason (tracing target `eddy::mqtt`), and answered on MQTT 5 with a negative PUBACK/PUBREC
//! (reason 0x99, payload format invalid); MQTT 3.1.1 has no negative ack, so a 3.1.1 device
//! gets a plain ack for a publish that was dropped, and only the counter and the log tell.
//!
//! **A hostile client** cannot hold the endpoint: connections are capped
//! ([`EndpointConfig::max_connections`], refused before CONNECT is read), must send CONNECT
//! within [`EndpointConfig::connect_timeout`], get at most [`EndpointConfig::max_keep_alive`]
//! (keep-alive 0 included), and the bytes of packets not yet read whole are charged to one budget
//! shared by all connections ([`EndpointConfig::max_unfinished_bytes`]); control packets and an
//! MQTT 5 PUBLISH's properties are held to 64 KiB, so parsing one packet allocates a bounded
//! amount whatever it declares. A PUBLISH to a wildcard topic ends its connection (MQTT 5:
//! DISCONNECT 0x90). Logins ([`Credentials`]) and TLS ([`TlsConfig`], rustls with `ring`) are
//! optional. Every refusal has its counter in [`Stats`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use eddy_kafka::KafkaConfig;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

mod mapping;
mod protocol;
mod throttle;

/// The payload type [`Direct::write`] takes, re-exported so hosts need not depend on `bytes`.
pub use bytes::Bytes;
pub use mapping::{parse_rule_list, route, TopicRule};
use protocol::{
    connect_level, ConnectCode, DisconnectReason, Incoming, Outgoing, ReadError, Reason, Version,
};

/// What goes wrong starting an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad rule, address or Kafka property.
    #[error("mqtt endpoint: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("mqtt endpoint: {0}")]
    Io(String),
}

/// Why a [`Direct`] destination did not take a publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectError {
    /// The rule's target does not exist or takes no writes: handled like an unmapped topic.
    #[error("{0}")]
    NoTarget(String),
    /// The payload is not a valid event for the target (malformed, wrong fields): the publish
    /// is rejected, counted in [`Stats::rejected`], and the connection goes on.
    #[error("{0}")]
    BadPayload(String),
}

/// A destination other than Kafka: whatever the host writes publishes into (e.g. Eddy's own
/// streams). Defined here so this crate does not depend on its hosts.
pub trait Direct: Send + Sync + 'static {
    /// Writes one publish's `payload` to `target` (a rule's left-hand side); `mqtt_topic` is
    /// where it came from, for errors. The publish is acknowledged once the future is `Ok`, so
    /// `Ok` must mean the target has it.
    ///
    /// Calls come in publish order per connection, but the futures are polled later (QoS 0
    /// ones in any order), so a target that keeps order does its write within this call and
    /// returns a ready future.
    fn write(
        &self,
        target: &str,
        mqtt_topic: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), DirectError>>;
}

/// Where the MQTT topic goes in the Kafka record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TopicAs {
    /// The record key (the default): records of one MQTT topic share a partition, in order.
    #[default]
    Key,
    /// A header of this name; the record has no key.
    Header(String),
}

/// How an endpoint is set up.
#[derive(Clone)]
pub struct EndpointConfig {
    /// `host:port` to listen on, e.g. `0.0.0.0:1883` (port 0 picks a free one).
    pub listen: String,
    /// The Kafka cluster records go to. `group_id` is not used; `extra` passes librdkafka
    /// producer properties through (`linger.ms`, `message.timeout.ms`, `security.protocol`, …),
    /// except `acks`, `enable.idempotence` and `bootstrap.servers`.
    pub kafka: KafkaConfig,
    /// Topic rules, first match wins.
    pub rules: Vec<TopicRule>,
    /// Where the MQTT topic goes in the record.
    pub topic_as: TopicAs,
    /// Unacknowledged publishes per connection before it is no longer read (default 64); also
    /// MQTT 5's receive maximum.
    pub max_inflight: u16,
    /// Largest MQTT packet accepted (default 1 MiB); larger ones close the connection as soon
    /// as their fixed header is in. MQTT 5 clients are told in CONNACK (Maximum Packet Size).
    pub max_packet_size: usize,
    /// Connections open at once (default 10,000); further ones are closed as soon as they are
    /// accepted, before their CONNECT is read, and counted in [`Stats::refused_connections`].
    pub max_connections: usize,
    /// A connection that has not sent its CONNECT by then is closed (default 10 s), counted in
    /// [`Stats::connect_timeouts`].
    pub connect_timeout: Duration,
    /// The longest keep-alive granted, in seconds (default 300; 0: no maximum). A client asking
    /// for 0 (none) or more gets this; MQTT 5 clients are told in CONNACK (Server Keep Alive).
    pub max_keep_alive: u16,
    /// Bytes of packets not yet read whole, across all connections (default 64 MiB). A
    /// connection whose buffered bytes would take the total over it is closed, counted in
    /// [`Stats::over_budget`].
    pub max_unfinished_bytes: usize,
    /// Who may connect; `None`: anyone.
    pub credentials: Option<Arc<Credentials>>,
    /// TLS on the listener; `None`: plain TCP.
    pub tls: Option<TlsConfig>,
    /// Direct mode: when set, publishes go here instead of Kafka (rules then name its targets,
    /// and `kafka` and `topic_as` are not used).
    pub direct: Option<Arc<dyn Direct>>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("listen", &self.listen)
            .field("kafka", &self.kafka)
            .field("rules", &self.rules)
            .field("topic_as", &self.topic_as)
            .field("max_inflight", &self.max_inflight)
            .field("max_packet_size", &self.max_packet_size)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_keep_alive", &self.max_keep_alive)
            .field("max_unfinished_bytes", &self.max_unfinished_bytes)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls.is_some())
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl EndpointConfig {
    /// A config with the defaults.
    pub fn new(listen: impl Into<String>, kafka: KafkaConfig, rules: Vec<TopicRule>) -> Self {
        EndpointConfig {
            listen: listen.into(),
            kafka,
            rules,
            topic_as: TopicAs::Key,
            max_inflight: 64,
            max_packet_size: 1 << 20,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: 300,
            max_unfinished_bytes: 64 << 20,
            credentials: None,
            tls: None,
            direct: None,
        }
    }

    /// A config with the defaults in direct mode: publishes go to `direct`, rules name its
    /// targets (`target:regex`).
    pub fn direct(
        listen: impl Into<String>,
        direct: Arc<dyn Direct>,
        rules: Vec<TopicRule>,
    ) -> Self {
        EndpointConfig {
            direct: Some(direct),
            ..EndpointConfig::new(listen, KafkaConfig::default(), rules)
        }
    }
}

/// TLS for the listener: a certificate chain and its private key (rustls, `ring` provider).
#[derive(Clone)]
pub struct TlsConfig(Arc<rustls::ServerConfig>);

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let tls = |what: &std::path::Path, e: &dyn std::fmt::Display| {
            Error::Config(format!("TLS: {}: {e}", what.display()))
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls(cert, &e))?;
        if certs.is_empty() {
            return Err(tls(cert, &"no certificate in it"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(key, &e))?;
        // The provider named, not the process default, so another crate enabling aws-lc-rs
        // cannot change (or make ambiguous) what this endpoint uses.
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls(key, &e))?;
        Ok(TlsConfig(Arc::new(config)))
    }
}

/// Who may connect: user names with their passwords, and/or one token that any user name may
/// give as its password (the REST server's `--auth-token-file`).
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the passwords.
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Credentials {
    /// Adds a token any user name may give as its password.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Adds (or replaces) a user and its password.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(user.into(), password.into());
        self
    }

    /// Adds the users of a password file: one `user:password` a line (the first `:` splits
    /// them, so passwords may hold `:`); blank lines and lines starting with `#` are skipped.
    pub fn with_password_file(mut self, text: &str) -> Result<Self, Error> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                    self.users.insert(user.to_string(), password.to_string());
                }
                _ => {
                    return Err(Error::Config(format!(
                        "password file line {}: expected user:password",
                        n + 1
                    )))
                }
            }
        }
        Ok(self)
    }

    /// Whether nobody could log in (no users, no token).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.token.is_none()
    }

    /// Whether `login` (user name, password) is let in.
    fn allows(&self, login: Option<&(String, String)>) -> bool {
        let Some((user, password)) = login else {
            return false;
        };
        let token = self
            .token
            .as_deref()
            .is_some_and(|t| same(t.as_bytes(), password.as_bytes()));
        let user = self
            .users
            .get(user)
            .is_some_and(|p| same(p.as_bytes(), password.as_bytes()));
        token | user
    }
}

/// Compares in time independent of where the bytes differ, so timing does not reveal how much
/// of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A snapshot of an endpoint's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// MQTT connections open now.
    pub connections: u64,
    /// MQTT connections accepted since start.
    pub connections_total: u64,
    /// PUBLISH packets received (a QoS 2 resend of one not yet released is not counted again).
    pub published: u64,
    /// Records Kafka acknowledged (direct mode: publishes the target took).
    pub forwarded: u64,
    /// Records (any QoS) handed to Kafka (or the direct target) and not yet acknowledged.
    pub inflight: u64,
    /// QoS 0 publishes Kafka refused.
    pub dropped_qos0: u64,
    /// Publishes no topic rule maps, or whose direct target does not exist (dropped).
    pub unmapped: u64,
    /// Direct mode: publishes whose payload the target refused as invalid (dropped).
    pub rejected: u64,
    /// QoS 1/2 publishes Kafka refused for good: never acknowledged, their connection closed.
    pub failed: u64,
    /// Connections whose window of unacknowledged publishes is full, so they are not read.
    pub blocked_connections: u64,
    /// Connections closed for a protocol error (bad packet, no CONNECT first).
    pub protocol_errors: u64,
    /// Connections closed at once because [`EndpointConfig::max_connections`] were open.
    pub refused_connections: u64,
    /// Connections closed because no CONNECT came within [`EndpointConfig::connect_timeout`].
    pub connect_timeouts: u64,
    /// Connections closed because no packet came within 1.5 keep-alive periods.
    pub keep_alive_timeouts: u64,
    /// CONNECTs refused for a missing or wrong user name or password.
    pub auth_failures: u64,
    /// CONNECTs refused unchecked ("server unavailable"): their address had failed to log in
    /// so often that its next turn was over 30 s away.
    pub throttled_logins: u64,
    /// Connections closed for a PUBLISH whose topic holds a wildcard (`+`, `#`).
    pub invalid_topics: u64,
    /// Connections closed for a packet over [`EndpointConfig::max_packet_size`].
    pub too_large: u64,
    /// Connections closed because their unfinished packets would have taken the bytes held
    /// over [`EndpointConfig::max_unfinished_bytes`].
    pub over_budget: u64,
    /// Bytes of unfinished packets held now, across all connections.
    pub unfinished_bytes: u64,
    /// TLS connections whose handshake failed (or did not finish within the connect timeout).
    pub tls_failures: u64,
    /// `false` after librdkafka reported all brokers down, until Kafka acknowledges again;
    /// always `true` in direct mode.
    pub kafka_reachable: bool,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    connections_total: AtomicU64,
    published: AtomicU64,
    forwarded: AtomicU64,
    inflight: AtomicU64,
    dropped_qos0: AtomicU64,
    unmapped: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    blocked_connections: AtomicU64,
    protocol_errors: AtomicU64,
    refused_connections: AtomicU64,
    connect_timeouts: AtomicU64,
    keep_alive_timeouts: AtomicU64,
    auth_failures: AtomicU64,
    throttled_logins: AtomicU64,
    invalid_topics: AtomicU64,
    too_large: AtomicU64,
    over_budget: AtomicU64,
    unfinished_bytes: AtomicU64,
    tls_failures: AtomicU64,
    kafka_down: AtomicBool,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn drop_one(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

/// Where publishes go.
enum Destination {
    Kafka(FutureProducer<EndpointContext>),
    Direct(Arc<dyn Direct>),
}

struct Shared {
    destination: Destination,
    counters: Arc<Counters>,
    rules: Vec<TopicRule>,
    topic_as: TopicAs,
    max_inflight: u16,
    max_packet_size: usize,
    max_connections: usize,
    connect_timeout: Duration,
    max_keep_alive: u16,
    max_unfinished_bytes: usize,
    credentials: Option<Arc<Credentials>>,
    /// Failed logins by address, which slow that address's next attempts.
    throttle: throttle::LoginThrottle,
    tls: Option<tokio_rustls::TlsAcceptor>,
    broker: String,
}

/// A running MQTT endpoint; stops when [`shutdown`](Endpoint::shutdown) or dropped.
pub struct Endpoint {
    local_addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Reads an endpoint's counters; see [`Endpoint::stats_reader`].
#[derive(Clone)]
pub struct StatsReader {
    counters: Arc<Counters>,
}

impl StatsReader {
    /// The counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            connections_total: get(&c.connections_total),
            published: get(&c.published),
            forwarded: get(&c.forwarded),
            inflight: get(&c.inflight),
            dropped_qos0: get(&c.dropped_qos0),
            unmapped: get(&c.unmapped),
            rejected: get(&c.rejected),
            failed: get(&c.failed),
            blocked_connections: get(&c.blocked_connections),
            protocol_errors: get(&c.protocol_errors),
            refused_connections: get(&c.refused_connections),
            connect_timeouts: get(&c.connect_timeouts),
            keep_alive_timeouts: get(&c.keep_alive_timeouts),
            auth_failures: get(&c.auth_failures),
            throttled_logins: get(&c.throttled_logins),
            invalid_topics: get(&c.invalid_topics),
            too_large: get(&c.too_large),
            over_budget: get(&c.over_budget),
            unfinished_bytes: get(&c.unfinished_bytes),
            tls_failures: get(&c.tls_failures),
            kafka_reachable: !c.kafka_down.load(Ordering::Relaxed),
        }
    }
}

/// librdkafka properties the endpoint's guarantees rest on.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "request.required.acks",
    "enable.idempotence",
];

fn producer_config(kafka: &KafkaConfig) -> Result<ClientConfig, Error> {
    if kafka.bootstrap_servers.trim().is_empty() {
        return Err(Error::Config("no Kafka bootstrap servers given".into()));
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        // One device waits for its acks: a short linger keeps its rate up (measured: 1 client
        // at QoS 1, 7,500/s with 1 ms against 2,900/s with 5 ms; 100 clients, same either way).
        .set("linger.ms", "1")
        // Wait for Kafka however long it is away: the device is simply not acknowledged.
        .set("message.timeout.ms", "0");
    for (key, value) in &kafka.extra {
        if RESERVED.contains(&key.as_str()) {
            return Err(Error::Config(format!(
                "kafka property {key} is set by the endpoint and cannot be overridden"
            )));
        }
        // Consumer-side settings (the shared test and CLI configs carry some) mean nothing here.
        if matches!(
            key.as_str(),
            "session.timeout.ms" | "heartbeat.interval.ms" | "fetch.wait.max.ms"
        ) {
            continue;
        }
        config.set(key, value);
    }
    config.set("acks", "all").set("enable.idempotence", "true");
    Ok(config)
}

impl Endpoint {
    /// Binds the listener and starts accepting clients. Kafka is connected lazily: an
    /// unreachable cluster shows up as publishes left unacknowledged, not as an error here.
    pub async fn start(config: EndpointConfig) -> Result<Endpoint, Error> {
        if config.rules.is_empty() {
            return Err(Error::Config(
                "no topic rules: give at least one kafka_topic:regex".into(),
            ));
        }
        if config.max_inflight == 0 {
            return Err(Error::Config("max_inflight must be at least 1".into()));
        }
        if config.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        if config.max_unfinished_bytes < config.max_packet_size {
            // Otherwise a packet of the largest size allowed could never be read.
            return Err(Error::Config(format!(
                "max_unfinished_bytes ({}) must be at least max_packet_size ({})",
                config.max_unfinished_bytes, config.max_packet_size
            )));
        }
        if config.credentials.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(Error::Config(
                "credentials given but empty: nobody could connect".into(),
            ));
        }
        let counters = Arc::new(Counters::default());
        let (destination, broker) = match config.direct {
            Some(direct) => (
                Destination::Direct(direct),
                "none (direct mode)".to_string(),
            ),
            None => {
                let broker = config.kafka.bootstrap_servers.clone();
                let producer: FutureProducer<EndpointContext> = producer_config(&config.kafka)?
                    .create_with_context(EndpointContext {
                        counters: counters.clone(),
                        broker: broker.clone(),
                    })
                    .map_err(|e| {
                        Error::Config(format!("kafka {broker}: creating a producer: {e}"))
                    })?;
                (Destination::Kafka(producer), broker)
            }
        };
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Io(format!("listening on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("listening on {}: {e}", config.listen)))?;
        let shared = Arc::new(Shared {
            destination,
            counters,
            rules: config.rules,
            topic_as: config.topic_as,
            max_inflight: config.max_inflight,
            max_packet_size: config.max_packet_size,
            max_connections: config.max_connections,
            connect_timeout: config.connect_timeout,
            max_keep_alive: config.max_keep_alive,
            max_unfinished_bytes: config.max_unfinished_bytes,
            credentials: config.credentials,
            throttle: throttle::LoginThrottle::default(),
            tls: config.tls.map(|tls| tokio_rustls::TlsAcceptor::from(tls.0)),
            broker,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, shared.clone(), stopped));
        tracing::info!(%local_addr, kafka = %shared.broker, "mqtt endpoint: listening");
        Ok(Endpoint {
            local_addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.stats_reader().stats()
    }

    /// A handle reading the counters, usable after the endpoint is gone (e.g. by a metrics
    /// scrape that may outlive it).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader {
            counters: self.shared.counters.clone(),
        }
    }

    /// Stops accepting, closes every connection (unacknowledged publishes are the clients' to
    /// resend) and waits up to `flush` for records already handed to Kafka.
    pub async fn shutdown(mut self, flush: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Destination::Kafka(producer) = &shared.destination {
                let _ = producer.flush(flush);
            }
        })
        .await;
    }

    /// Whether publishes go to a [`Direct`] destination rather than Kafka.
    pub fn is_direct(&self) -> bool {
        matches!(self.shared.destination, Destination::Direct(_))
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let counters = shared.counters.clone();
                    // Counted here, where connections are accepted one at a time, so the cap
                    // holds exactly. Refused before CONNECT is read: waiting for it would hold
                    // the descriptor and a task for up to the connect timeout, which is what the
                    // cap protects.
                    if counters.connections.load(Ordering::Relaxed) >= shared.max_connections as u64 {
                        let refused = counters.refused_connections.fetch_add(1, Ordering::Relaxed);
                        if refused.is_multiple_of(1000) {
                            tracing::warn!(%peer, refused = refused + 1, max = shared.max_connections, "mqtt endpoint: connection refused, too many open");
                        }
                        drop(stream);
                        continue;
                    }
                    bump(&counters.connections);
                    bump(&counters.connections_total);
                    let slot = Slot(counters.clone());
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let stopped = stopped.clone();
                    connections.spawn(async move {
                        // The TLS handshake counts against the time CONNECT must come in.
                        let deadline = Instant::now() + shared.connect_timeout;
                        let mut connection = Connection::new(shared.clone(), peer.ip());
                        let served = match &shared.tls {
                            None => connection.serve(stream, deadline, stopped).await,
                            Some(acceptor) => {
                                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => connection.serve(stream, deadline, stopped).await,
                                    Ok(Err(e)) => {
                                        bump(&counters.tls_failures);
                                        Err(Closed::Tls(e.to_string()))
                                    }
                                    Err(_) => {
                                        bump(&counters.tls_failures);
                                        Err(Closed::Tls("no handshake within the connect timeout".into()))
                                    }
                                }
                            }
                        };
                        if let Err(e) = served {
                            tracing::debug!(%peer, "mqtt endpoint: connection closed: {e}");
                        }
                        connection.release();
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("mqtt endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Every connection sees `stopped` too; give them a moment to close cleanly.
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        connections.shutdown().await;
    }
}

/// A place under the connection cap, given back when its task ends, however it ends.
struct Slot(Arc<Counters>);

impl Drop for Slot {
    fn drop(&mut self) {
        drop_one(&self.0.connections);
    }
}

/// What to send once a publish is settled.
#[derive(Debug, Clone, Copy)]
enum Ack {
    PubAck(u16),
    PubRec(u16),
}

/// How a record handed to the destination ended.
enum Outcome {
    /// Kafka acknowledged it, or the direct target took it.
    Delivered,
    /// Kafka refused it for good (or the producer went away).
    Refused(String),
    /// Direct mode: the rule's target does not exist or takes no writes.
    NoTarget { topic: String, reason: String },
    /// Direct mode: the target refused the payload.
    Rejected { topic: String, reason: String },
}

/// A record on its way: Kafka's delivery report or the direct write, as one future.
type Delivery = BoxFuture<'static, Outcome>;

fn kafka_outcome(
    delivery: <rdkafka::producer::DeliveryFuture as std::future::Future>::Output,
) -> Outcome {
    match delivery {
        Ok(Ok(_)) => Outcome::Delivered,
        Ok(Err((error, _))) => Outcome::Refused(error.to_string()),
        Err(_) => Outcome::Refused("the producer was dropped".to_string()),
    }
}

/// Counts (and logs, sparingly) a publish dropped as unmapped: no rule matches its topic, or
/// its direct target is missing.
fn count_unmapped(counters: &Counters, topic: &str, reason: &str) {
    let unmapped = counters.unmapped.fetch_add(1, Ordering::Relaxed);
    // Logged for the first and then every 1000th, so a misconfigured fleet cannot flood.
    if unmapped.is_multiple_of(1000) {
        tracing::warn!(
            target: "eddy::mqtt",
            mqtt_topic = topic,
            unmapped = unmapped + 1,
            "mqtt endpoint: publish dropped: {reason}"
        );
    }
}

/// Counts and logs a publish whose payload the direct target refused.
fn count_rejected(counters: &Counters, topic: &str, reason: &str) {
    let rejected = counters.rejected.fetch_add(1, Ordering::Relaxed);
    // Every one at debug; the first and then every 1000th at warn, so a broken fleet cannot flood.
    if rejected.is_multiple_of(1000) {
        tracing::warn!(
            target: "eddy::mqtt",
            mqtt_topic = topic,
            rejected = rejected + 1,
            "mqtt endpoint: payload rejected: {reason}"
        );
    } else {
        tracing::debug!(
            target: "eddy::mqtt",
            mqtt_topic = topic,
            "mqtt endpoint: payload rejected: {reason}"
        );
    }
}

/// Counts a delivery that finished after its connection closed; `refused` counts Kafka's
/// refusals (failed for QoS 1/2, dropped for QoS 0).
fn count_detached(counters: &Counters, outcome: Outcome, refused: &AtomicU64) {
    drop_one(&counters.inflight);
    match outcome {
        Outcome::Delivered => bump(&counters.forwarded),
        Outcome::Refused(_) => bump(refused),
        Outcome::NoTarget { topic, reason } => count_unmapped(counters, &topic, &reason),
        Outcome::Rejected { topic, reason } => count_rejected(counters, &topic, &reason),
    }
}

struct Pending {
    ack: Ack,
    /// `None` for an unmapped publish: settled at once, but acked in its turn.
    delivery: Option<Delivery>,
}

/// Why a connection ended, for the debug log.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("kafka refused a QoS {qos} record: {error}")]
    Refused { qos: u8, error: String },
    #[error("keep-alive expired")]
    KeepAlive,
    #[error("no CONNECT in time")]
    ConnectTimeout,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("bad user name or password (client id {0:?})")]
    BadLogin(String),
    #[error("login refused unchecked after repeated failures from this address (client id {0:?})")]
    Throttled(String),
    #[error("PUBLISH to a wildcard topic {0:?}")]
    InvalidTopic(String),
    #[error("packet of {0} bytes over the limit")]
    TooLarge(usize),
    #[error("{0} bytes of unfinished packets would exceed the shared budget")]
    OverBudget(usize),
}

struct Connection {
    shared: Arc<Shared>,
    /// The client's address, whose failed logins are throttled.
    peer: std::net::IpAddr,
    version: Version,
    pending: VecDeque<Pending>,
    /// QoS 2 packet ids received and not yet released (PUBREL).
    qos2: HashSet<u16>,
    /// QoS 0 records handed to the destination, counted as they finish (in any order).
    qos0: FuturesUnordered<Delivery>,
    blocked: bool,
    out: BytesMut,
    /// Bytes of the shared budget for unfinished packets this connection holds.
    held: usize,
}

impl Connection {
    fn new(shared: Arc<Shared>, peer: std::net::IpAddr) -> Self {
        Connection {
            shared,
            peer,
            version: Version::V311,
            pending: VecDeque::new(),
            qos2: HashSet::new(),
            qos0: FuturesUnordered::new(),
            blocked: false,
            out: BytesMut::new(),
            held: 0,
        }
    }

    fn protocol(&self, e: impl std::fmt::Display) -> Closed {
        bump(&self.shared.counters.protocol_errors);
        Closed::Protocol(e.to_string())
    }

    /// Counts a packet that could not be read.
    fn unreadable(&self, e: ReadError) -> Closed {
        match e {
            ReadError::TooLarge(len) => {
                bump(&self.shared.counters.too_large);
                Closed::TooLarge(len)
            }
            ReadError::Malformed(e) => self.protocol(e),
        }
    }

    /// Holds `len` bytes (what `buf` holds now) of the budget shared by all connections for
    /// unfinished packets; fails, counted, when the total would go over it.
    fn hold(&mut self, len: usize) -> Result<(), Closed> {
        let counters = &self.shared.counters;
        if len > self.held {
            let more = (len - self.held) as u64;
            let limit = self.shared.max_unfinished_bytes as u64;
            let taken = counters.unfinished_bytes.fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |used| used.checked_add(more).filter(|total| *total <= limit),
            );
            if taken.is_err() {
                let over = counters.over_budget.fetch_add(1, Ordering::Relaxed);
                if over.is_multiple_of(1000) {
                    tracing::warn!(over_budget = over + 1, limit, "mqtt endpoint: connection closed, unfinished packets over the shared budget");
                }
                return Err(Closed::OverBudget(len));
            }
        } else if len < self.held {
            counters
                .unfinished_bytes
                .fetch_sub((self.held - len) as u64, Ordering::Relaxed);
        }
        self.held = len;
        Ok(())
    }

    /// Gives back what this connection holds in the shared counters.
    ///
    /// Records already handed to Kafka are still delivered; they are counted (in `forwarded`,
    /// `dropped_qos0` or `failed`) as their deliveries finish, though nobody can be acked.
    fn release(&mut self) {
        self.set_blocked(false);
        let _ = self.hold(0);
        let pending = std::mem::take(&mut self.pending);
        let qos0 = std::mem::take(&mut self.qos0);
        if qos0.is_empty() && pending.iter().all(|p| p.delivery.is_none()) {
            return;
        }
        let counters = self.shared.counters.clone();
        tokio::spawn(async move {
            for delivery in pending.into_iter().filter_map(|p| p.delivery) {
                count_detached(&counters, delivery.await, &counters.failed);
            }
            for delivery in qos0 {
                count_detached(&counters, delivery.await, &counters.dropped_qos0);
            }
        });
    }

    fn set_blocked(&mut self, blocked: bool) {
        if blocked != self.blocked {
            self.blocked = blocked;
            let counter = &self.shared.counters.blocked_connections;
            if blocked {
                bump(counter);
            } else {
                drop_one(counter);
            }
        }
    }

    /// Serves one client; CONNECT must be in by `connect_deadline`.
    async fn serve<S>(
        &mut self,
        stream: S,
        connect_deadline: Instant,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), Closed>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(4096);
        let max = self.shared.max_packet_size;
        let counters = self.shared.counters.clone();
        let connect_timeout = || {
            bump(&counters.connect_timeouts);
            Closed::ConnectTimeout
        };

        // CONNECT first, within the connect timeout.
        let level = loop {
            if let Some(level) = connect_level(&buf).map_err(|e| self.protocol(e))? {
                break level;
            }
            if buf.len() > max.min(protocol::MAX_CONTROL_PACKET) {
                return Err(self.unreadable(ReadError::TooLarge(buf.len())));
            }
            let n = tokio::time::timeout_at(connect_deadline, rd.read_buf(&mut buf))
                .await
                .map_err(|_| connect_timeout())??;
            if n == 0 {
                return Ok(());
            }
            self.hold(buf.len())?;
        };
        self.version = match level {
            4 => Version::V311,
            5 => Version::V5,
            other => {
                // 3.1 ("MQIsdp", level 3) and unknown levels: refused as the spec says.
                self.write(self.connack(ConnectCode::UnsupportedVersion, None))?;
                wr.write_all(&self.out).await?;
                return Err(self.protocol(format!("unsupported protocol level {other}")));
            }
        };
        let keep_alive = loop {
            match self
                .version
                .read(&mut buf, max)
                .map_err(|e| self.unreadable(e))?
            {
                Some(Incoming::Connect {
                    client_id,
                    keep_alive,
                    clean,
                    login,
                }) => {
                    self.hold(buf.len())?;
                    tracing::debug!(client_id, keep_alive, clean, version = ?self.version, "mqtt endpoint: connect");
                    if let Some(credentials) = &self.shared.credentials {
                        match self
                            .shared
                            .throttle
                            .turn(self.peer, std::time::Instant::now())
                        {
                            throttle::Turn::At(at) => {
                                tokio::time::sleep_until(at.into()).await;
                            }
                            throttle::Turn::Refused => {
                                bump(&counters.throttled_logins);
                                self.write(self.connack(ConnectCode::Unavailable, None))?;
                                wr.write_all(&self.out).await?;
                                return Err(Closed::Throttled(client_id));
                            }
                        }
                        if credentials.allows(login.as_ref()) {
                            self.shared.throttle.succeeded(self.peer);
                        } else {
                            self.shared
                                .throttle
                                .failed(self.peer, std::time::Instant::now());
                            let failures = counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                            // The first and every 1000th: a password-guessing fleet cannot flood.
                            if failures.is_multiple_of(1000) {
                                tracing::warn!(
                                    client_id,
                                    user = login.as_ref().map(|l| l.0.as_str()),
                                    failures = failures + 1,
                                    "mqtt endpoint: bad user name or password"
                                );
                            }
                            self.write(self.connack(ConnectCode::BadLogin, None))?;
                            wr.write_all(&self.out).await?;
                            return Err(Closed::BadLogin(client_id));
                        }
                    }
                    // 0 asks for no keep-alive at all: an idle connection would be held forever.
                    let limit = self.shared.max_keep_alive;
                    let granted = if limit > 0 && (keep_alive == 0 || keep_alive > limit) {
                        limit
                    } else {
                        keep_alive
                    };
                    self.write(self.connack(
                        ConnectCode::Accepted,
                        (granted != keep_alive).then_some(granted),
                    ))?;
                    wr.write_all(&self.out).await?;
                    self.out.clear();
                    break granted;
                }
                Some(other) => {
                    return Err(self.protocol(format!("expected CONNECT, got {other:?}")))
                }
                None => {
                    let n = tokio::time::timeout_at(connect_deadline, rd.read_buf(&mut buf))
                        .await
                        .map_err(|_| connect_timeout())??;
                    if n == 0 {
                        return Ok(());
                    }
                    self.hold(buf.len())?;
                }
            }
        };
        // The spec's grace: one and a half keep-alive periods without a packet.
        let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let far = Duration::from_secs(86_400 * 365);
        let mut deadline = Instant::now() + idle.unwrap_or(far);
        // The client closed its side; what is buffered is still handled.
        let mut eof = false;

        loop {
            // Handle what is already buffered while the window has room.
            // Settled first, so that afterwards the window is full or `buf` holds no whole
            // packet, which is what `room` and `eof` below rely on.
            self.settle_ready()?;
            while self.pending.len() < usize::from(self.shared.max_inflight) {
                match self
                    .version
                    .read(&mut buf, max)
                    .map_err(|e| self.unreadable(e))?
                {
                    Some(packet) => {
                        deadline = Instant::now() + idle.unwrap_or(far);
                        match self.handle(packet).await {
                            Ok(true) => {}
                            Ok(false) => {
                                wr.write_all(&self.out).await?;
                                return Ok(());
                            }
                            Err(e @ Closed::InvalidTopic(_)) => {
                                // The acks due and, on MQTT 5, a DISCONNECT saying why.
                                let _ = wr.write_all(&self.out).await;
                                let _ = wr.shutdown().await;
                                return Err(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    None => break,
                }
            }
            self.hold(buf.len())?;
            if !self.out.is_empty() {
                wr.write_all(&self.out).await?;
                self.out.clear();
            }
            let room = self.pending.len() < usize::from(self.shared.max_inflight);
            if eof && room {
                // Nothing complete is left in `buf`: the client is gone without DISCONNECT.
                return Ok(());
            }
            self.set_blocked(!room);
            tokio::select! {
                _ = stopped.changed() => return Ok(()),
                done = head(&mut self.pending), if !self.pending.is_empty() => {
                    // Activity: a device waiting for acks is not idle.
                    deadline = Instant::now() + idle.unwrap_or(far);
                    self.settle(done)?;
                }
                Some(done) = self.qos0.next(), if !self.qos0.is_empty() => {
                    drop_one(&self.shared.counters.inflight);
                    match done {
                        Outcome::Delivered => self.delivered(),
                        Outcome::Refused(error) => self.drop_qos0(&error),
                        Outcome::NoTarget { topic, reason } => {
                            count_unmapped(&self.shared.counters, &topic, &reason)
                        }
                        Outcome::Rejected { topic, reason } => {
                            count_rejected(&self.shared.counters, &topic, &reason)
                        }
                    }
                }
                read = rd.read_buf(&mut buf), if room && !eof => {
                    // A frame over `max` fails in `read` as soon as its header is in.
                    if read? == 0 {
                        eof = true;
                    }
                    self.hold(buf.len())?;
                }
                _ = tokio::time::sleep_until(deadline), if room && !eof => {
                    bump(&self.shared.counters.keep_alive_timeouts);
                    return Err(Closed::KeepAlive);
                }
            }
        }
    }

    /// A CONNACK with `code`, saying what this endpoint takes.
    fn connack(&self, code: ConnectCode, server_keep_alive: Option<u16>) -> Outgoing {
        Outgoing::ConnAck {
            code,
            receive_max: self.shared.max_inflight,
            server_keep_alive,
            max_packet_size: u32::try_from(self.shared.max_packet_size).unwrap_or(u32::MAX),
        }
    }

    fn write(&mut self, packet: Outgoing) -> Result<(), Closed> {
        self.version
            .write(packet, &mut self.out)
            .map_err(Closed::Protocol)
    }

    /// Acts on one packet; `false` when the client disconnected.
    async fn handle(&mut self, packet: Incoming) -> Result<bool, Closed> {
        match packet {
            Incoming::Publish {
                topic,
                qos,
                pkid,
                payload,
            } => {
                // Wildcards are for filters; a topic name holding one is malformed (MQTT 5
                // 4.7.1, 3.1.1 4.7.1): the connection ends.
                if topic.contains(['+', '#']) {
                    bump(&self.shared.counters.invalid_topics);
                    self.write(Outgoing::Disconnect(DisconnectReason::TopicNameInvalid))?;
                    return Err(Closed::InvalidTopic(topic));
                }
                if qos == 2 && !self.qos2.insert(pkid) {
                    // A resend of a QoS 2 publish already taken: not forwarded again. Its PUBREC
                    // goes out in turn if still pending, or again now.
                    let pending = self
                        .pending
                        .iter()
                        .any(|p| matches!(p.ack, Ack::PubRec(id) if id == pkid));
                    if !pending {
                        self.write(Outgoing::PubRec {
                            pkid,
                            reason: Reason::Success,
                        })?;
                    }
                    return Ok(true);
                }
                bump(&self.shared.counters.published);
                let ack = match qos {
                    0 => {
                        // At most once: never waits for room, never holds up the connection.
                        match self.produce(&topic, payload, false).await {
                            Ok(Some(delivery)) => self.qos0.push(delivery),
                            Ok(None) => {}
                            Err(error) => self.drop_qos0(&error),
                        }
                        return Ok(true);
                    }
                    1 => Ack::PubAck(pkid),
                    _ => Ack::PubRec(pkid),
                };
                match self.produce(&topic, payload, true).await {
                    Ok(delivery) => self.pending.push_back(Pending { ack, delivery }),
                    Err(error) => {
                        bump(&self.shared.counters.failed);
                        tracing::error!(kafka = %self.shared.broker, "mqtt endpoint: Kafka refused a record; not acknowledged, closing the connection: {error}");
                        return Err(Closed::Refused { qos, error });
                    }
                }
            }
            Incoming::PubRel(pkid) => {
                self.qos2.remove(&pkid);
                self.write(Outgoing::PubComp(pkid))?;
            }
            Incoming::Subscribe { pkid, filters } => {
                self.write(Outgoing::SubAck { pkid, filters })?
            }
            Incoming::Unsubscribe { pkid, filters } => {
                self.write(Outgoing::UnsubAck { pkid, filters })?
            }
            Incoming::PingReq => self.write(Outgoing::PingResp)?,
            Incoming::Disconnect => return Ok(false),
            Incoming::Connect { .. } => return Err(self.protocol("a second CONNECT")),
            Incoming::Other => {}
        }
        Ok(true)
    }

    /// Hands one record to librdkafka (or the direct target); `None` when no rule maps `topic`.
    async fn produce(
        &mut self,
        topic: &str,
        payload: Bytes,
        wait_for_room: bool,
    ) -> Result<Option<Delivery>, String> {
        let shared = self.shared.clone();
        let Some(kafka_topic) = route(&shared.rules, topic) else {
            count_unmapped(&shared.counters, topic, "no topic rule matches");
            return Ok(None);
        };
        let producer = match &shared.destination {
            Destination::Kafka(producer) => producer,
            Destination::Direct(direct) => {
                bump(&shared.counters.inflight);
                let write = direct.write(kafka_topic, topic, payload);
                let topic = topic.to_string();
                return Ok(Some(
                    async move {
                        match write.await {
                            Ok(()) => Outcome::Delivered,
                            Err(DirectError::NoTarget(reason)) => {
                                Outcome::NoTarget { topic, reason }
                            }
                            Err(DirectError::BadPayload(reason)) => {
                                Outcome::Rejected { topic, reason }
                            }
                        }
                    }
                    .boxed(),
                ));
            }
        };
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(kafka_topic).payload(&payload[..]);
            match &shared.topic_as {
                TopicAs::Key => record = record.key(topic),
                TopicAs::Header(name) => {
                    record = record.headers(OwnedHeaders::new().insert(Header {
                        key: name,
                        value: Some(topic),
                    }))
                }
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    bump(&shared.counters.inflight);
                    return Ok(Some(delivery.map(kafka_outcome).boxed()));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if wait_for_room =>
                {
                    // librdkafka's queue is shared by all connections; wait for it to drain.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((error, _)) => return Err(error.to_string()),
            }
        }
    }

    fn delivered(&self) {
        bump(&self.shared.counters.forwarded);
        self.shared
            .counters
            .kafka_down
            .store(false, Ordering::Relaxed);
    }

    fn drop_qos0(&self, error: &str) {
        let dropped = self
            .shared
            .counters
            .dropped_qos0
            .fetch_add(1, Ordering::Relaxed);
        if dropped.is_multiple_of(1000) {
            tracing::warn!(kafka = %self.shared.broker, dropped = dropped + 1, "mqtt endpoint: QoS 0 publish dropped: {error}");
        }
    }

    /// Settles every publish at the head of the window whose delivery is already known.
    fn settle_ready(&mut self) -> Result<(), Closed> {
        while !self.pending.is_empty() {
            match head(&mut self.pending).now_or_never() {
                Some(done) => self.settle(done)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Pops the head of the window, whose delivery finished with `done`, and queues its ack.
    fn settle(&mut self, done: Option<Outcome>) -> Result<(), Closed> {
        let Some(head) = self.pending.pop_front() else {
            return Ok(());
        };
        let counters = self.shared.counters.clone();
        let reason = match done {
            None => Reason::TopicNameInvalid,
            Some(Outcome::Delivered) => {
                drop_one(&counters.inflight);
                self.delivered();
                Reason::Success
            }
            Some(Outcome::NoTarget { topic, reason }) => {
                drop_one(&counters.inflight);
                count_unmapped(&counters, &topic, &reason);
                Reason::TopicNameInvalid
            }
            Some(Outcome::Rejected { topic, reason }) => {
                // Not fatal: the device gets a negative ack (MQTT 5) and carries on.
                drop_one(&counters.inflight);
                count_rejected(&counters, &topic, &reason);
                Reason::PayloadFormatInvalid
            }
            Some(Outcome::Refused(error)) => {
                drop_one(&counters.inflight);
                bump(&counters.failed);
                tracing::error!(kafka = %self.shared.broker, "mqtt endpoint: Kafka refused a record; not acknowledged, closing the connection: {error}");
                let qos = if let Ack::PubRec(_) = head.ack { 2 } else { 1 };
                return Err(Closed::Refused { qos, error });
            }
        };
        match head.ack {
            Ack::PubAck(pkid) => self.write(Outgoing::PubAck { pkid, reason })?,
            Ack::PubRec(pkid) => {
                if reason != Reason::Success && self.version == Version::V5 {
                    // A failing PUBREC ends the exchange on MQTT 5: no PUBREL follows.
                    self.qos2.remove(&pkid);
                }
                self.write(Outgoing::PubRec { pkid, reason })?
            }
        }
        Ok(())
    }
}

/// Waits for the delivery at the head of the window: `None` for an unmapped publish.
async fn head(pending: &mut VecDeque<Pending>) -> Option<Outcome> {
    let head = pending.front_mut()?;
    let delivery = head.delivery.as_mut()?;
    Some(delivery.await)
}

struct EndpointContext {
    counters: Arc<Counters>,
    broker: String,
}

impl ClientContext for EndpointContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        eddy_kafka::forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) = error {
            self.counters.kafka_down.store(true, Ordering::Relaxed);
            tracing::warn!(broker = %self.broker, "mqtt endpoint: Kafka unreachable; publishes wait unacknowledged: {reason}");
        } else {
            tracing::warn!(broker = %self.broker, "mqtt endpoint: kafka: {error}: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rumqttc::mqttbytes::{v4, QoS};
    use rumqttc::v5::mqttbytes::{v5, QoS as QoS5};
    use tokio::net::TcpStream;

    use super::*;

    /// Takes payloads for `readings` unless they start with `bad`; knows no other target.
    #[derive(Default)]
    struct Recorder {
        taken: Mutex<Vec<(String, String, Bytes)>>,
    }

    impl Direct for Recorder {
        fn write(
            &self,
            target: &str,
            mqtt_topic: &str,
            payload: Bytes,
        ) -> BoxFuture<'static, Result<(), DirectError>> {
            let result = if target != "readings" {
                Err(DirectError::NoTarget(format!("no stream named '{target}'")))
            } else if payload.starts_with(b"bad") {
                Err(DirectError::BadPayload("malformed JSON".into()))
            } else {
                self.taken.lock().unwrap().push((
                    target.to_string(),
                    mqtt_topic.to_string(),
                    payload,
                ));
                Ok(())
            };
            futures::future::ready(result).boxed()
        }
    }

    async fn endpoint(recorder: Arc<Recorder>) -> Endpoint {
        let rules = parse_rule_list("readings:car/.*,missing:gone/.*").unwrap();
        Endpoint::start(EndpointConfig::direct("127.0.0.1:0", recorder, rules))
            .await
            .unwrap()
    }

    /// Reads until one whole packet is in `buf` and returns it.
    async fn read_v5(stream: &mut TcpStream, buf: &mut BytesMut) -> v5::Packet {
        loop {
            match v5::Packet::read(buf, None) {
                Ok(p) => return p,
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(buf))
                        .await
                        .expect("an answer in time")
                        .unwrap();
                    assert!(n > 0, "connection closed");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    async fn read_v4(stream: &mut TcpStream, buf: &mut BytesMut) -> v4::Packet {
        loop {
            match v4::Packet::read(buf, 1 << 20) {
                Ok(p) => return p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(buf))
                        .await
                        .expect("an answer in time")
                        .unwrap();
                    assert!(n > 0, "connection closed");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn password_files_and_tokens_let_in_exactly_their_logins() {
        let login = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        let c = Credentials::default()
            .with_password_file("# users\r\nalice:wonder:land\r\n\n  \nbob:builder\n")
            .unwrap();
        assert!(c.allows(login("alice", "wonder:land").as_ref()));
        assert!(c.allows(login("bob", "builder").as_ref()));
        assert!(!c.allows(login("alice", "wonder").as_ref()));
        assert!(!c.allows(login("alice", "builder").as_ref()));
        assert!(!c.allows(login("carol", "builder").as_ref()));
        assert!(!c.allows(None));
        let c = c.with_token("t0ken");
        assert!(c.allows(login("anyone", "t0ken").as_ref()));
        assert!(!c.allows(login("t0ken", "x").as_ref()));
        for bad in ["alice", ":pw", "alice:"] {
            let e = Credentials::default().with_password_file(bad).unwrap_err();
            assert!(e.to_string().contains("line 1"), "{bad}: {e}");
        }
        assert!(Credentials::default()
            .with_password_file("# none\n")
            .unwrap()
            .is_empty());
        // Debug never shows a password.
        assert!(!format!("{c:?}").contains("wonder"));
    }

    #[tokio::test]
    async fn direct_mode_acks_after_the_write_and_rejects_bad_payloads_without_closing() {
        let recorder = Arc::new(Recorder::default());
        let endpoint = endpoint(recorder.clone()).await;
        assert!(endpoint.is_direct());
        let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
        let mut out = BytesMut::new();
        let mut buf = BytesMut::new();
        v5::Packet::Connect(
            v5::Connect {
                keep_alive: 30,
                client_id: "car-1".into(),
                clean_start: true,
                properties: None,
            },
            None,
            None,
        )
        .write(&mut out, None)
        .unwrap();
        let publishes = [
            ("car/1", QoS5::AtLeastOnce, "{\"speed\":1}", 1),
            ("car/1", QoS5::AtLeastOnce, "bad json", 2),
            ("gone/1", QoS5::AtLeastOnce, "{}", 3),
            ("nowhere", QoS5::AtLeastOnce, "{}", 4),
            ("car/2", QoS5::ExactlyOnce, "bad again", 5),
            ("car/2", QoS5::ExactlyOnce, "{\"speed\":2}", 6),
            ("car/3", QoS5::AtMostOnce, "{\"speed\":3}", 0),
            ("car/3", QoS5::AtMostOnce, "bad qos 0", 0),
        ];
        for (topic, qos, payload, pkid) in publishes {
            let mut publish = v5::Publish::new(topic, qos, payload, None);
            publish.pkid = pkid;
            v5::Packet::Publish(publish).write(&mut out, None).unwrap();
        }
        stream.write_all(&out).await.unwrap();
        assert!(matches!(
            read_v5(&mut stream, &mut buf).await,
            v5::Packet::ConnAck(_)
        ));
        let mut acks = Vec::new();
        for _ in 0..6 {
            acks.push(match read_v5(&mut stream, &mut buf).await {
                v5::Packet::PubAck(a) => (a.pkid, format!("{:?}", a.reason)),
                v5::Packet::PubRec(r) => (r.pkid, format!("{:?}", r.reason)),
                other => panic!("{other:?}"),
            });
        }
        let expected = [
            (1, "Success"),
            (2, "PayloadFormatInvalid"),
            (3, "TopicNameInvalid"),
            (4, "TopicNameInvalid"),
            (5, "PayloadFormatInvalid"),
            (6, "Success"),
        ];
        let expected: Vec<(u16, String)> =
            expected.iter().map(|(p, r)| (*p, r.to_string())).collect();
        assert_eq!(acks, expected);
        // The connection still works: the QoS 2 exchange completes.
        out.clear();
        v5::Packet::PubRel(v5::PubRel::new(6, None))
            .write(&mut out, None)
            .unwrap();
        stream.write_all(&out).await.unwrap();
        assert!(matches!(
            read_v5(&mut stream, &mut buf).await,
            v5::Packet::PubComp(c) if c.pkid == 6
        ));
        let taken: Vec<String> = recorder
            .taken
            .lock()
            .unwrap()
            .iter()
            .map(|(t, m, p)| format!("{t} {m} {}", String::from_utf8_lossy(p)))
            .collect();
        assert_eq!(
            taken,
            [
                "readings car/1 {\"speed\":1}",
                "readings car/2 {\"speed\":2}",
                "readings car/3 {\"speed\":3}"
            ]
        );
        let stats = endpoint.stats();
        assert_eq!(
            (
                stats.published,
                stats.forwarded,
                stats.rejected,
                stats.unmapped,
                stats.inflight,
                stats.failed
            ),
            (8, 3, 3, 2, 0, 0),
            "{stats:?}"
        );
        assert!(stats.kafka_reachable);

        // MQTT 3.1.1 has no negative ack: a rejected publish gets a plain PUBACK.
        let mut stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
        let mut buf = BytesMut::new();
        out.clear();
        v4::Packet::Connect(v4::Connect::new("car-2"))
            .write(&mut out, usize::MAX)
            .unwrap();
        let mut publish = v4::Publish::new("car/4", QoS::AtLeastOnce, "bad");
        publish.pkid = 9;
        v4::Packet::Publish(publish)
            .write(&mut out, usize::MAX)
            .unwrap();
        let mut publish = v4::Publish::new("car/4", QoS::AtLeastOnce, "{}");
        publish.pkid = 10;
        v4::Packet::Publish(publish)
            .write(&mut out, usize::MAX)
            .unwrap();
        stream.write_all(&out).await.unwrap();
        assert!(matches!(
            read_v4(&mut stream, &mut buf).await,
            v4::Packet::ConnAck(_)
        ));
        for pkid in [9, 10] {
            assert!(matches!(
                read_v4(&mut stream, &mut buf).await,
                v4::Packet::PubAck(a) if a.pkid == pkid
            ));
        }
        assert_eq!(endpoint.stats().rejected, 4);
        assert_eq!(endpoint.stats().forwarded, 4);
        endpoint.shutdown(Duration::from_secs(1)).await;
    }
}

/// Counts this thread's heap allocations, so the parser's property test can bound what one
/// packet costs to read (other tests run on other threads and are not counted).
#[cfg(test)]
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        // Const-initialised `Cell`s: no allocation and no destructor, so usable from inside
        // the allocator.
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    struct Counting;

    #[global_allocator]
    static COUNTING: Counting = Counting;

    fn note(delta: isize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get().wrapping_add(delta);
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    // SAFETY: every call goes straight to `System`; only the bookkeeping is added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                note(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            unsafe { System.dealloc(p, layout) };
            note(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, layout, new_size) };
            if !q.is_null() {
                note(new_size as isize - layout.size() as isize);
            }
            q
        }
    }

    /// Runs `f` and returns the most bytes it had allocated at once on this thread.
    pub(crate) fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(start));
        let out = f();
        let peak = PEAK.with(Cell::get);
        (out, usize::try_from(peak - start).unwrap_or(0))
    }
}
