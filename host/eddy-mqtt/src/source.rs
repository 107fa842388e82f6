//! Subscribing, and acknowledging only what the engine committed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use eddy_connector::{Error, Message, Position, Result, Source};
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Packet, Publish, QoS, SubAck, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{parse_broker, MqttConfig};

/// How long [`MqttSource::subscribe`] waits for CONNACK and SUBACK together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes received but not yet polled. When it is full the driver stops reading the socket,
/// so a slow engine pushes back on the broker instead of filling memory.
const BUFFERED: usize = 1024;
/// Requests (mostly acks) queued for the event loop. Acks that do not fit wait in the source
/// and go out on a later commit or poll: blocking here could deadlock, as the driver may itself
/// be waiting for the engine to poll.
const REQUESTS: usize = 4096;
/// Short enough that a dead broker is noticed within a minute, long enough not to matter.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The largest packet MQTT can carry: refusing a smaller one would drop the connection and, for
/// QoS 1 and 2, have the broker redeliver the same message for ever.
const MAX_INCOMING_PACKET: usize = 268_435_455 + 5;
/// Reconnect backoff, doubled after each failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// What the driver task hands the source.
enum Item {
    /// A publish, the connection it arrived on, and when it arrived (ms since the epoch).
    Publish(Publish, u64, i64),
    /// The driver stopped for good.
    Failed(Error),
}

/// A QoS 1 or 2 delivery the broker waits for an ack of.
struct Unacked {
    seq: i64,
    /// The connection it arrived on: packet ids mean nothing on another one, and the broker
    /// redelivers what a lost connection left unacknowledged anyway.
    connection: u64,
    /// Holds only what an ack needs (packet id and QoS), not the payload.
    publish: Publish,
}

/// Reads the publishes matching a set of topic filters from one MQTT broker.
///
/// Every message is `partition 0`, offset = its sequence number in this source (from 0); the
/// key is the topic. QoS 1 and 2 publishes are acknowledged only when
/// [`commit`](Source::commit) covers them, so with a persistent session (see [`MqttConfig`])
/// the broker redelivers anything not committed when the source is dropped or the connection
/// breaks: at-least-once delivery. Note the broker sends only a few unacknowledged messages at
/// a time (mosquitto: `max_inflight_messages`, default 20), so a caller that does not commit
/// stops receiving QoS 1 and 2 messages.
pub struct MqttSource {
    url: String,
    client: AsyncClient,
    items: mpsc::Receiver<Item>,
    /// Sequence number of the next message polled.
    next_seq: i64,
    /// Deliveries not yet acknowledged, in sequence order.
    unacked: VecDeque<Unacked>,
    /// Every sequence number below this is committed and may be acknowledged.
    committed: i64,
    /// The connection the driver is on now; bumped whenever one is lost.
    connection: Arc<AtomicU64>,
    /// Set once the driver has stopped; later polls report it.
    ended: bool,
    driver: JoinHandle<()>,
}

impl MqttSource {
    /// Connects to `config.url`, subscribes to `filters` (`+` and `#` wildcards allowed) at
    /// `config.qos`, and waits for the broker to accept all of them.
    ///
    /// Fails with [`Error::Config`] for a bad filter or one the broker refuses, and with
    /// [`Error::Io`] if the broker cannot be reached or does not answer within 5 s.
    pub async fn subscribe(config: &MqttConfig, filters: &[String]) -> Result<MqttSource> {
        let url = config.url.clone();
        let (host, port) = parse_broker(&url)?;
        let qos = match config.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => {
                return Err(Error::Config(format!(
                    "MQTT QoS must be 0, 1 or 2, not {q}"
                )))
            }
        };
        if filters.is_empty() {
            return Err(Error::Config("no MQTT topic filter to subscribe to".into()));
        }
        if let Some(bad) = filters.iter().find(|f| !rumqttc::valid_filter(f)) {
            return Err(Error::Config(format!(
                "invalid MQTT topic filter '{bad}': '+' and '#' must fill a whole level, \
                 and '#' can only be the last one"
            )));
        }
        if config.client_id.is_empty() && !config.clean_session {
            return Err(Error::Config(
                "an MQTT persistent session (clean_session = false) needs a client id".into(),
            ));
        }

        let mut options = MqttOptions::new(config.client_id.clone(), host, port);
        options
            .set_clean_session(config.clean_session)
            .set_keep_alive(KEEP_ALIVE)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, 64 * 1024);
        let (client, mut events) = AsyncClient::new(options, REQUESTS);
        let mut network = NetworkOptions::new();
        // Acks are tiny and each is its own write; Nagle would hold them back and, with the
        // broker's small in-flight window, stall delivery.
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        events.set_network_options(network);

        let subscription: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), qos))
            .collect();
        // Queued now, sent by the event loop as soon as it is connected.
        client
            .try_subscribe_many(subscription.clone())
            .map_err(|e| Error::Io(format!("subscribing on MQTT broker {url}: {e}")))?;

        let (items, received) = mpsc::channel(BUFFERED);
        let (ready, subscribed) = oneshot::channel();
        let connection = Arc::new(AtomicU64::new(0));
        let driver = tokio::spawn(
            Driver {
                url: url.clone(),
                client: client.clone(),
                subscription,
                items,
                connection: connection.clone(),
            }
            .run(events, ready),
        );
        let failed = match tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e),
            Ok(Err(_)) => Some(Error::Io(format!(
                "the MQTT client for {url} stopped while connecting"
            ))),
            Err(_) => Some(Error::Io(format!(
                "no answer from MQTT broker {url} within {}s (connect and subscribe)",
                CONNECT_TIMEOUT.as_secs()
            ))),
        };
        if let Some(e) = failed {
            driver.abort();
            return Err(e);
        }
        tracing::info!(%url, client_id = %config.client_id, ?filters, "subscribed to MQTT");
        Ok(MqttSource {
            url,
            client,
            items: received,
            next_seq: 0,
            unacked: VecDeque::new(),
            committed: 0,
            connection,
            ended: false,
            driver,
        })
    }

    /// Sends the acks [`commit`](Source::commit) allowed, as far as the request queue has room.
    fn send_acks(&mut self) -> Result<()> {
        let current = self.connection.load(Ordering::Acquire);
        while let Some(first) = self.unacked.front() {
            if first.seq >= self.committed {
                break;
            }
            if first.connection == current {
                match self.client.try_ack(&first.publish) {
                    Ok(()) => {}
                    // Full: the rest goes out on a later commit or poll.
                    Err(ClientError::TryRequest(_)) if !self.driver.is_finished() => break,
                    Err(_) => {
                        return Err(Error::Io(format!(
                            "the MQTT client for {} has stopped",
                            self.url
                        )))
                    }
                }
            }
            self.unacked.pop_front();
        }
        Ok(())
    }
}

impl Drop for MqttSource {
    /// Drops the connection without acknowledging what was not committed, so a persistent
    /// session keeps it for the next source with this client id; stopping the driver also makes
    /// sure it never reconnects and takes the session back from that source.
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[async_trait]
impl Source for MqttSource {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<Message>>> {
        if self.ended {
            return Ok(None);
        }
        self.send_acks()?;
        let mut items = Vec::new();
        if max == 0 {
            return Ok(Some(Vec::new()));
        }
        match tokio::time::timeout(wait, self.items.recv_many(&mut items, max)).await {
            Err(_) => return Ok(Some(Vec::new())),
            Ok(0) => {
                self.ended = true;
                return Err(Error::Io(format!(
                    "the MQTT client for {} stopped unexpectedly",
                    self.url
                )));
            }
            Ok(_) => {}
        }
        let mut messages = Vec::with_capacity(items.len());
        for item in items {
            let (publish, connection, arrived_ms) = match item {
                Item::Publish(publish, connection, arrived_ms) => (publish, connection, arrived_ms),
                Item::Failed(e) => {
                    self.ended = true;
                    if messages.is_empty() {
                        return Err(e);
                    }
                    // Hand over what arrived first; the next poll ends the source.
                    tracing::error!(url = %self.url, error = %e, "MQTT source stopped");
                    break;
                }
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            if publish.qos != QoS::AtMostOnce {
                let mut ack = Publish::new(String::new(), publish.qos, Vec::new());
                ack.pkid = publish.pkid;
                self.unacked.push_back(Unacked {
                    seq,
                    connection,
                    publish: ack,
                });
            }
            messages.push(Message {
                key: Some(publish.topic.as_bytes().to_vec()),
                payload: publish.payload.to_vec(),
                no_value: false,
                timestamp_ms: Some(arrived_ms),
                position: Position {
                    partition: 0,
                    offset: seq,
                },
                origin: format!("mqtt:{}", publish.topic),
                upstream: None,
            });
        }
        Ok(Some(messages))
    }

    async fn commit(&mut self, next: &BTreeMap<i32, i64>) -> Result<()> {
        if let Some(&next) = next.get(&0) {
            self.committed = self.committed.max(next);
        }
        self.send_acks()
    }
}

/// Drives the rumqttc event loop: connects, reconnects, and forwards publishes to the source.
struct Driver {
    url: String,
    client: AsyncClient,
    subscription: Vec<SubscribeFilter>,
    items: mpsc::Sender<Item>,
    connection: Arc<AtomicU64>,
}

impl Driver {
    async fn run(self, mut events: EventLoop, ready: oneshot::Sender<Result<()>>) {
        // A resumed session may deliver before the SUBACK; nobody polls yet, so hold them here
        // rather than in the bounded channel, which could fill and stall the handshake.
        let mut early = Vec::new();
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let _ = ready.send(self.check(&ack));
                    break;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => early.push(self.item(publish)),
                Ok(_) => {}
                Err(e) => {
                    let _ = ready.send(Err(Error::Io(format!(
                        "cannot connect to MQTT broker {}: {}",
                        self.url,
                        describe(&e)
                    ))));
                    return;
                }
            }
        }
        for item in early {
            if self.items.send(item).await.is_err() {
                return;
            }
        }

        let mut retry = FIRST_RETRY;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let item = self.item(publish);
                    if self.items.send(item).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    retry = FIRST_RETRY;
                    if ack.session_present {
                        tracing::warn!(url = %self.url, "reconnected to MQTT broker; session resumed");
                    } else {
                        tracing::warn!(
                            url = %self.url,
                            "reconnected to MQTT broker without a session: resubscribing; \
                             messages published while disconnected are lost"
                        );
                        let client = self.client.clone();
                        let subscription = self.subscription.clone();
                        // Not awaited here: the queue it waits on is drained by this loop.
                        tokio::spawn(async move { client.subscribe_many(subscription).await });
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Err(e) = self.check(&ack) {
                        let _ = self.items.send(Item::Failed(e)).await;
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Acks for what arrived on the lost connection must not reach the next one.
                    self.connection.fetch_add(1, Ordering::AcqRel);
                    tracing::warn!(
                        url = %self.url,
                        error = %describe(&e),
                        "MQTT connection lost; reconnecting in {retry:?}"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = self.items.closed() => return,
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
    }

    fn item(&self, publish: Publish) -> Item {
        let arrived_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Item::Publish(publish, self.connection.load(Ordering::Acquire), arrived_ms)
    }

    /// Whether the broker granted every filter; granting a lower QoS than asked only warrants a
    /// warning, as messages still flow (with weaker guarantees).
    fn check(&self, ack: &SubAck) -> Result<()> {
        for (filter, code) in self.subscription.iter().zip(&ack.return_codes) {
            match code {
                SubscribeReasonCode::Failure => {
                    return Err(Error::Config(format!(
                        "MQTT broker {} refused the subscription to '{}'",
                        self.url, filter.path
                    )))
                }
                SubscribeReasonCode::Success(granted) if *granted < filter.qos => {
                    tracing::warn!(
                        url = %self.url,
                        filter = %filter.path,
                        "MQTT broker granted {granted:?} instead of {:?}",
                        filter.qos
                    );
                }
                SubscribeReasonCode::Success(_) => {}
            }
        }
        Ok(())
    }
}

/// rumqttc's error, with the I/O cause spelled out (its `Display` drops the OS error text).
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => io.to_string(),
        ConnectionError::NetworkTimeout => format!("no answer within {CONNECT_TIMEOUT:?}"),
        other => other.to_string(),
    }
}
