//! Eddy's MQTT endpoint: devices publish to it with any MQTT 3.1.1 or 5 client, and every
//! publish lands in a Kafka topic chosen by `kafka_topic:regex` rules (as the Confluent MQTT
//! Proxy's `topic.regex.list`). No separate MQTT broker is involved.
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

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_kafka::KafkaConfig;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

mod mapping;
mod protocol;

pub use mapping::{parse_rule_list, route, TopicRule};
use protocol::{connect_level, Incoming, Outgoing, Version};

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
#[derive(Debug, Clone)]
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
    /// Largest MQTT packet accepted (default 1 MiB); larger ones close the connection.
    pub max_packet_size: usize,
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
        }
    }
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
    /// Records Kafka acknowledged.
    pub forwarded: u64,
    /// Records (any QoS) handed to Kafka and not yet acknowledged.
    pub inflight: u64,
    /// QoS 0 publishes Kafka refused.
    pub dropped_qos0: u64,
    /// Publishes no topic rule maps (dropped).
    pub unmapped: u64,
    /// QoS 1/2 publishes Kafka refused for good: never acknowledged, their connection closed.
    pub failed: u64,
    /// Connections whose window of unacknowledged publishes is full, so they are not read.
    pub blocked_connections: u64,
    /// Connections closed for a protocol error (bad packet, no CONNECT first, too large).
    pub protocol_errors: u64,
    /// `false` after librdkafka reported all brokers down, until Kafka acknowledges again.
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
    failed: AtomicU64,
    blocked_connections: AtomicU64,
    protocol_errors: AtomicU64,
    kafka_down: AtomicBool,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn drop_one(counter: &AtomicU64) {
    counter.fetch_sub(1, Ordering::Relaxed);
}

struct Shared {
    producer: FutureProducer<EndpointContext>,
    counters: Arc<Counters>,
    rules: Vec<TopicRule>,
    topic_as: TopicAs,
    max_inflight: u16,
    max_packet_size: usize,
    broker: String,
}

/// A running MQTT endpoint; stops when [`shutdown`](Endpoint::shutdown) or dropped.
pub struct Endpoint {
    local_addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
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
        let counters = Arc::new(Counters::default());
        let broker = config.kafka.bootstrap_servers.clone();
        let producer: FutureProducer<EndpointContext> = producer_config(&config.kafka)?
            .create_with_context(EndpointContext {
                counters: counters.clone(),
                broker: broker.clone(),
            })
            .map_err(|e| Error::Config(format!("kafka {broker}: creating a producer: {e}")))?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Io(format!("listening on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("listening on {}: {e}", config.listen)))?;
        let shared = Arc::new(Shared {
            producer,
            counters,
            rules: config.rules,
            topic_as: config.topic_as,
            max_inflight: config.max_inflight,
            max_packet_size: config.max_packet_size,
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
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            connections_total: get(&c.connections_total),
            published: get(&c.published),
            forwarded: get(&c.forwarded),
            inflight: get(&c.inflight),
            dropped_qos0: get(&c.dropped_qos0),
            unmapped: get(&c.unmapped),
            failed: get(&c.failed),
            blocked_connections: get(&c.blocked_connections),
            protocol_errors: get(&c.protocol_errors),
            kafka_reachable: !c.kafka_down.load(Ordering::Relaxed),
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
        let _ = tokio::task::spawn_blocking(move || shared.producer.flush(flush)).await;
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
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let stopped = stopped.clone();
                    connections.spawn(async move {
                        let counters = shared.counters.clone();
                        bump(&counters.connections);
                        bump(&counters.connections_total);
                        let mut connection = Connection::new(shared);
                        if let Err(e) = connection.serve(stream, stopped).await {
                            tracing::debug!(%peer, "mqtt endpoint: connection closed: {e}");
                        }
                        connection.release();
                        drop_one(&counters.connections);
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

/// What to send once a publish is settled.
#[derive(Debug, Clone, Copy)]
enum Ack {
    PubAck(u16),
    PubRec(u16),
}

struct Pending {
    ack: Ack,
    /// `None` for an unmapped publish: settled at once, but acked in its turn.
    delivery: Option<DeliveryFuture>,
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
}

struct Connection {
    shared: Arc<Shared>,
    version: Version,
    pending: VecDeque<Pending>,
    /// QoS 2 packet ids received and not yet released (PUBREL).
    qos2: HashSet<u16>,
    /// QoS 0 records handed to Kafka, counted as they finish (in any order).
    qos0: FuturesUnordered<DeliveryFuture>,
    blocked: bool,
    out: BytesMut,
}

impl Connection {
    fn new(shared: Arc<Shared>) -> Self {
        Connection {
            shared,
            version: Version::V311,
            pending: VecDeque::new(),
            qos2: HashSet::new(),
            qos0: FuturesUnordered::new(),
            blocked: false,
            out: BytesMut::new(),
        }
    }

    fn protocol(&self, e: impl std::fmt::Display) -> Closed {
        bump(&self.shared.counters.protocol_errors);
        Closed::Protocol(e.to_string())
    }

    /// Gives back what this connection holds in the shared counters.
    ///
    /// Records already handed to Kafka are still delivered; they are counted (in `forwarded`,
    /// `dropped_qos0` or `failed`) as their deliveries finish, though nobody can be acked.
    fn release(&mut self) {
        self.set_blocked(false);
        let pending = std::mem::take(&mut self.pending);
        let qos0 = std::mem::take(&mut self.qos0);
        if qos0.is_empty() && pending.iter().all(|p| p.delivery.is_none()) {
            return;
        }
        let counters = self.shared.counters.clone();
        tokio::spawn(async move {
            for p in pending {
                let Some(delivery) = p.delivery else {
                    continue;
                };
                let ok = matches!(delivery.await, Ok(Ok(_)));
                drop_one(&counters.inflight);
                bump(if ok {
                    &counters.forwarded
                } else {
                    &counters.failed
                });
            }
            for delivery in qos0 {
                let ok = matches!(delivery.await, Ok(Ok(_)));
                drop_one(&counters.inflight);
                bump(if ok {
                    &counters.forwarded
                } else {
                    &counters.dropped_qos0
                });
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

    async fn serve(
        &mut self,
        stream: TcpStream,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), Closed> {
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = BytesMut::with_capacity(4096);
        let max = self.shared.max_packet_size;

        // CONNECT first, within 10 s.
        let connect_deadline = Instant::now() + Duration::from_secs(10);
        let level = loop {
            if let Some(level) = connect_level(&buf).map_err(|e| self.protocol(e))? {
                break level;
            }
            if buf.len() > max {
                return Err(self.protocol("CONNECT too large"));
            }
            let n = tokio::time::timeout_at(connect_deadline, rd.read_buf(&mut buf))
                .await
                .map_err(|_| self.protocol("no CONNECT within 10 s"))??;
            if n == 0 {
                return Ok(());
            }
        };
        self.version = match level {
            4 => Version::V311,
            5 => Version::V5,
            other => {
                // 3.1 ("MQIsdp", level 3) and unknown levels: refused as the spec says.
                self.write(Outgoing::ConnAck {
                    accepted: false,
                    receive_max: 0,
                })?;
                wr.write_all(&self.out).await?;
                return Err(self.protocol(format!("unsupported protocol level {other}")));
            }
        };
        let keep_alive = loop {
            match self
                .version
                .read(&mut buf, max)
                .map_err(|e| self.protocol(e))?
            {
                Some(Incoming::Connect {
                    client_id,
                    keep_alive,
                    clean,
                }) => {
                    tracing::debug!(client_id, keep_alive, clean, version = ?self.version, "mqtt endpoint: connect");
                    self.write(Outgoing::ConnAck {
                        accepted: true,
                        receive_max: self.shared.max_inflight,
                    })?;
                    wr.write_all(&self.out).await?;
                    self.out.clear();
                    break keep_alive;
                }
                Some(other) => {
                    return Err(self.protocol(format!("expected CONNECT, got {other:?}")))
                }
                None => {
                    let n = tokio::time::timeout_at(connect_deadline, rd.read_buf(&mut buf))
                        .await
                        .map_err(|_| self.protocol("no CONNECT within 10 s"))??;
                    if n == 0 {
                        return Ok(());
                    }
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
                    .map_err(|e| self.protocol(e))?
                {
                    Some(packet) => {
                        deadline = Instant::now() + idle.unwrap_or(far);
                        if !self.handle(packet).await? {
                            wr.write_all(&self.out).await?;
                            return Ok(());
                        }
                    }
                    None => break,
                }
            }
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
                        Ok(Ok(_)) => self.delivered(),
                        Ok(Err((error, _))) => self.drop_qos0(&error.to_string()),
                        Err(_) => self.drop_qos0("the producer was dropped"),
                    }
                }
                read = rd.read_buf(&mut buf), if room && !eof => {
                    // A frame over `max` fails in `read` as soon as its header is in.
                    if read? == 0 {
                        eof = true;
                    }
                }
                _ = tokio::time::sleep_until(deadline), if room && !eof => return Err(Closed::KeepAlive),
            }
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
                            accepted: true,
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

    /// Hands one record to librdkafka; `None` when no rule maps `topic`.
    async fn produce(
        &mut self,
        topic: &str,
        payload: Bytes,
        wait_for_room: bool,
    ) -> Result<Option<DeliveryFuture>, String> {
        let shared = self.shared.clone();
        let Some(kafka_topic) = route(&shared.rules, topic) else {
            let unmapped = shared.counters.unmapped.fetch_add(1, Ordering::Relaxed);
            // Logged for the first and then every 1000th, so a misconfigured fleet cannot flood.
            if unmapped.is_multiple_of(1000) {
                tracing::warn!(
                    mqtt_topic = topic,
                    unmapped = unmapped + 1,
                    "mqtt endpoint: no topic rule matches; publish dropped"
                );
            }
            return Ok(None);
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
            match shared.producer.send_result(record) {
                Ok(delivery) => {
                    bump(&shared.counters.inflight);
                    return Ok(Some(delivery));
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
    fn settle(&mut self, done: Option<Result<(), String>>) -> Result<(), Closed> {
        let Some(head) = self.pending.pop_front() else {
            return Ok(());
        };
        let counters = &self.shared.counters;
        let accepted = match done {
            None => false,
            Some(Ok(())) => {
                drop_one(&counters.inflight);
                self.delivered();
                true
            }
            Some(Err(error)) => {
                drop_one(&counters.inflight);
                bump(&counters.failed);
                tracing::error!(kafka = %self.shared.broker, "mqtt endpoint: Kafka refused a record; not acknowledged, closing the connection: {error}");
                let qos = if let Ack::PubRec(_) = head.ack { 2 } else { 1 };
                return Err(Closed::Refused { qos, error });
            }
        };
        match head.ack {
            Ack::PubAck(pkid) => self.write(Outgoing::PubAck { pkid, accepted })?,
            Ack::PubRec(pkid) => {
                if !accepted && self.version == Version::V5 {
                    // A failing PUBREC ends the exchange on MQTT 5: no PUBREL follows.
                    self.qos2.remove(&pkid);
                }
                self.write(Outgoing::PubRec { pkid, accepted })?
            }
        }
        Ok(())
    }
}

/// Waits for the delivery at the head of the window: `None` for an unmapped publish.
async fn head(pending: &mut VecDeque<Pending>) -> Option<Result<(), String>> {
    let head = pending.front_mut()?;
    let delivery = head.delivery.as_mut()?;
    Some(match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(error.to_string()),
        Err(_) => Err("the producer was dropped".to_string()),
    })
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
