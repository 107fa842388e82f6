//! Kafka source and sink for Eddy.
//!
//! [`KafkaSource`] reads one topic as a member of a consumer group and commits only the offsets
//! the engine hands back, so a restarted query resumes after the last output that was made
//! durable. [`KafkaSink`] writes one topic with `acks=all` and reports, on
//! [`flush`](eddy_connector::Sink::flush), whether everything sent so far was acknowledged.
//! Both sit on librdkafka (bundled by the `rdkafka` crate).

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_connector::{Error, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

mod sink;
mod source;

pub use sink::KafkaSink;
pub use source::{KafkaSource, OffsetReset};

/// Where to find the brokers and how to talk to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` of one or more brokers (librdkafka's `bootstrap.servers`).
    pub bootstrap_servers: String,
    /// The consumer group sources join; sources in one group split the topic's partitions.
    pub group_id: String,
    /// Further librdkafka properties passed through as they are (`security.protocol`,
    /// `session.timeout.ms`, `linger.ms`, `message.timeout.ms`, …); they override this crate's
    /// defaults. Properties the connector's guarantees rest on are refused with
    /// [`Error::Config`]: `bootstrap.servers`, `group.id`, `enable.auto.commit`,
    /// `enable.auto.offset.store`, `auto.offset.reset` and `acks`.
    pub extra: BTreeMap<String, String>,
}

/// Properties only this crate sets: the fields of [`KafkaConfig`] and what commits and acks rely
/// on. Letting `extra` change them would silently break at-least-once delivery.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "acks",
    "request.required.acks",
];

/// Consumer properties a shared `extra` may carry that producers and admin clients ignore.
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.error.backoff.ms",
    "max.poll.interval.ms",
    "auto.commit.interval.ms",
    "partition.assignment.strategy",
    "group.instance.id",
    "isolation.level",
];

impl KafkaConfig {
    /// A config with no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>, group_id: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: group_id.into(),
            extra: BTreeMap::new(),
        }
    }

    /// Adds one librdkafka property to [`extra`](Self::extra).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// librdkafka properties: `defaults`, then `extra` over them, then `fixed` (never overridden).
    fn client_config(
        &self,
        defaults: &[(&str, &str)],
        fixed: &[(&str, &str)],
    ) -> Result<ClientConfig> {
        self.client_config_for(defaults, fixed, true)
    }

    /// Like [`client_config`](Self::client_config) for a producer or admin client, which leaves
    /// out consumer-only properties in `extra` (librdkafka would warn about each).
    fn producer_config(
        &self,
        defaults: &[(&str, &str)],
        fixed: &[(&str, &str)],
    ) -> Result<ClientConfig> {
        self.client_config_for(defaults, fixed, false)
    }

    fn client_config_for(
        &self,
        defaults: &[(&str, &str)],
        fixed: &[(&str, &str)],
        consumer: bool,
    ) -> Result<ClientConfig> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::Config(
                "kafka: no bootstrap servers given (host:port of a broker)".into(),
            ));
        }
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.extra {
            if !consumer && CONSUMER_ONLY.contains(&key.as_str()) {
                continue;
            }
            if RESERVED.contains(&key.as_str()) {
                return Err(Error::Config(format!(
                    "kafka {}: property {key} is set by Eddy and cannot be overridden",
                    self.bootstrap_servers
                )));
            }
            config.set(key, value);
        }
        for (key, value) in fixed {
            config.set(*key, *value);
        }
        Ok(config)
    }
}

/// Creates `topic` with `partitions` partitions unless it already exists.
///
/// The replication factor is the broker's default, so this works on a one-broker test setup and
/// a replicated cluster alike.
pub async fn ensure_topic(config: &KafkaConfig, topic: &str, partitions: i32) -> Result<()> {
    let broker = &config.bootstrap_servers;
    let admin: AdminClient<LogContext> = config
        .producer_config(&[], &[])?
        .create_with_context(LogContext)
        .map_err(|e| config_error(broker, &format!("creating an admin client: {e}")))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| io_error(broker, &format!("creating topic {topic}: {e}")))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, broker, partitions, "kafka: created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(io_error(broker, &format!("creating topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

/// How many partitions `topic` has, from the broker.
pub async fn partition_count(config: &KafkaConfig, topic: &str) -> Result<i32> {
    let broker = &config.bootstrap_servers;
    let admin: AdminClient<LogContext> = config
        .producer_config(&[], &[])?
        .create_with_context(LogContext)
        .map_err(|e| config_error(broker, &format!("creating an admin client: {e}")))?;
    let (topic, broker) = (topic.to_string(), broker.clone());
    // librdkafka's metadata call blocks.
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| io_error(&broker, &format!("reading the metadata of {topic}: {e}")))?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
            _ => Err(Error::Config(format!(
                "kafka {broker}: topic {topic} does not exist"
            ))),
        }
    })
    .await
    .map_err(|e| Error::Io(format!("reading a topic's partition count: {e}")))?
}

/// The record header that carries [`eddy_connector::Message::upstream`].
pub(crate) const UPSTREAM_HEADER: &str = "eddy-upstream";

/// An upstream position as its header holds it: partition then offset, big-endian.
pub(crate) fn encode_upstream(p: &eddy_connector::Position) -> [u8; 12] {
    let mut bytes = [0; 12];
    bytes[..4].copy_from_slice(&p.partition.to_be_bytes());
    bytes[4..].copy_from_slice(&p.offset.to_be_bytes());
    bytes
}

/// The position [`encode_upstream`] wrote; `None` for anything else.
pub(crate) fn decode_upstream(bytes: &[u8]) -> Option<eddy_connector::Position> {
    let bytes: &[u8; 12] = bytes.try_into().ok()?;
    Some(eddy_connector::Position {
        partition: i32::from_be_bytes(bytes[..4].try_into().ok()?),
        offset: i64::from_be_bytes(bytes[4..].try_into().ok()?),
    })
}

fn io_error(broker: &str, what: &str) -> Error {
    Error::Io(format!("kafka {broker}: {what}"))
}

fn config_error(broker: &str, what: &str) -> Error {
    Error::Config(format!("kafka {broker}: {what}"))
}

/// Whether an error is a bad setting rather than a failure of the broker or network.
fn is_config(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
    )
}

/// Sends librdkafka's own log lines to `tracing`, where the rest of Eddy logs; for any client
/// context that talks to Kafka.
pub fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// A client context that only forwards logs.
struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka retries after these (a broker down, a connection reset); the operation that
        // finally fails reports its own error.
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_overrides_defaults_but_not_what_guarantees_rest_on() {
        let config = KafkaConfig::new("127.0.0.1:9092", "g").with("linger.ms", "50");
        let client = config
            .client_config(&[("linger.ms", "5")], &[("acks", "all")])
            .unwrap();
        assert_eq!(client.get("linger.ms"), Some("50"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));

        for key in ["enable.auto.commit", "group.id", "acks"] {
            let config = KafkaConfig::new("127.0.0.1:9092", "g").with(key, "x");
            let error = config.client_config(&[], &[]).unwrap_err();
            assert!(matches!(error, Error::Config(_)), "{error:?}");
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn a_missing_broker_address_is_a_config_error() {
        let error = KafkaSink::new(&KafkaConfig::new(" ", "g"), "t")
            .err()
            .unwrap();
        assert!(matches!(error, Error::Config(_)), "{error:?}");
    }

    #[test]
    fn unknown_properties_are_config_errors_naming_the_broker() {
        let config = KafkaConfig::new("127.0.0.1:9092", "g").with("no.such.property", "1");
        let error = KafkaSource::subscribe(&config, "t", OffsetReset::Earliest)
            .err()
            .unwrap();
        assert!(matches!(error, Error::Config(_)), "{error:?}");
        assert!(error.to_string().contains("127.0.0.1:9092"), "{error}");
        assert!(error.to_string().contains("no.such.property"), "{error}");
    }
}
