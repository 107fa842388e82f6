//! Writing a topic with acknowledged delivery.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_connector::{Error, Record, Result, Sink};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use crate::{config_error, forward_log, io_error, is_config, KafkaConfig};

/// How long `send` sleeps before retrying when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// One topic written with `acks=all`; see [`Sink`].
///
/// Records are batched by librdkafka (`linger.ms=5` unless `extra` says otherwise).
/// Deliveries are counted rather than tracked one future per record, which keeps `send` cheap.
/// Once a record fails, every later `send` and `flush` fails too: the records after it may be
/// in the topic, but the failed one is not, and the engine must not commit past it.
/// Records not yet flushed when the sink is dropped are abandoned.
pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    deliveries: Arc<Deliveries>,
    topic: String,
    broker: String,
}

impl KafkaSink {
    /// A producer for `topic`; connects lazily, so an unreachable broker shows up at `flush`.
    pub fn new(config: &KafkaConfig, topic: &str) -> Result<Self> {
        let broker = config.bootstrap_servers.clone();
        if topic.is_empty() {
            return Err(config_error(&broker, "no topic given to write"));
        }
        let client = config.producer_config(
            &[
                ("linger.ms", "5"),
                // Retries must not reorder or duplicate records.
                ("enable.idempotence", "true"),
            ],
            &[("acks", "all")],
        )?;
        let deliveries = Arc::new(Deliveries::default());
        let context = SinkContext {
            topic: topic.to_string(),
            broker: broker.clone(),
            deliveries: deliveries.clone(),
        };
        let producer: ThreadedProducer<SinkContext> =
            client.create_with_context(context).map_err(|e| {
                let what = format!("creating a producer for topic {topic}: {e}");
                if is_config(&e) {
                    config_error(&broker, &what)
                } else {
                    io_error(&broker, &what)
                }
            })?;
        Ok(KafkaSink {
            producer,
            deliveries,
            topic: topic.to_string(),
            broker,
        })
    }

    /// The topic this sink writes.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn failed(&self) -> Result<()> {
        match &*self
            .deliveries
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Some(failure) => Err(Error::Io(failure.clone())),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn send(&mut self, records: Vec<Record>) -> Result<()> {
        self.failed()?;
        for record in &records {
            loop {
                let mut base = BaseRecord::<[u8], [u8]>::to(&self.topic);
                if let Some(payload) = &record.payload {
                    base = base.payload(payload);
                }
                if let Some(key) = &record.key {
                    base = base.key(key);
                }
                if let Some(timestamp) = record.timestamp_ms {
                    base = base.timestamp(timestamp);
                }
                if let Some(partition) = record.partition {
                    base = base.partition(partition);
                }
                if let Some(upstream) = &record.upstream {
                    base = base.headers(OwnedHeaders::new().insert(Header {
                        key: crate::UPSTREAM_HEADER,
                        value: Some(&crate::encode_upstream(upstream)[..]),
                    }));
                }
                // Counted before the send: the delivery report may run before `send` returns.
                self.deliveries.outstanding.fetch_add(1, Ordering::SeqCst);
                match self.producer.send(base) {
                    Ok(()) => break,
                    Err((e, _)) => {
                        self.deliveries.done();
                        if let KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) = e {
                            // The queue drains as deliveries succeed or time out; once one
                            // failed, waiting for room is pointless.
                            self.failed()?;
                            tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                            continue;
                        }
                        return Err(io_error(
                            &self.broker,
                            &format!("writing to topic {}: {e}", self.topic),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        loop {
            let mut idle = pin!(self.deliveries.idle.notified());
            // Registered before checking, so a last delivery in between still wakes us.
            idle.as_mut().enable();
            if self.deliveries.outstanding.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
        self.failed()
    }
}

/// What the delivery reports say, shared with librdkafka's polling thread.
#[derive(Default)]
struct Deliveries {
    /// Records handed to librdkafka and not yet reported.
    outstanding: AtomicU64,
    /// The first failed delivery, as the error `flush` returns.
    failure: Mutex<Option<String>>,
    /// Woken when `outstanding` drops to zero.
    idle: Notify,
}

impl Deliveries {
    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

struct SinkContext {
    topic: String,
    broker: String,
    deliveries: Arc<Deliveries>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.topic, broker = %self.broker, "kafka: {error}: {reason}");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut failure = self
                .deliveries
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if failure.is_none() {
                *failure = Some(format!(
                    "kafka {}: delivering to topic {} (partition {}) failed: {error}",
                    self.broker,
                    self.topic,
                    message.partition()
                ));
            }
        }
        self.deliveries.done();
    }
}
