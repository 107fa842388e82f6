//! The one place that knows which connector serves which `WITH (…)` option.

use eddy_connector::{Options, Sink, Source};
use eddy_kafka::{KafkaConfig, KafkaSink, KafkaSource, OffsetReset};
use eddy_mqtt::{MqttConfig, MqttSource};

use crate::{KafkaSettings, Result};

fn config(settings: &KafkaSettings, group: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: settings.bootstrap_servers.clone(),
        group_id: group.to_string(),
        extra: settings.extra.clone(),
    }
}

/// A consumer of `topic` in consumer group `group`.
pub(crate) async fn kafka_source(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    earliest: bool,
) -> Result<Box<dyn Source>> {
    let reset = if earliest {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    Ok(Box::new(KafkaSource::subscribe(
        &config(settings, group),
        topic,
        reset,
    )?))
}

/// A producer to `topic`.
pub(crate) async fn kafka_sink(settings: &KafkaSettings, topic: &str) -> Result<Box<dyn Sink>> {
    Ok(Box::new(KafkaSink::new(
        &config(settings, "eddy-producer"),
        topic,
    )?))
}

/// Creates `topic` if it is missing.
pub(crate) async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> Result<()> {
    Ok(eddy_kafka::ensure_topic(&config(settings, "eddy-admin"), topic, partitions).await?)
}

/// How many partitions `topic` has.
pub(crate) async fn partition_count(settings: &KafkaSettings, topic: &str) -> Result<i32> {
    Ok(eddy_kafka::partition_count(&config(settings, "eddy-admin"), topic).await?)
}

/// A subscriber to MQTT topic filters, with a client id stable across restarts.
pub(crate) async fn mqtt_source(
    options: &Options,
    filters: &[String],
    client_id: &str,
) -> Result<Box<dyn Source>> {
    let config = MqttConfig::from_options_or_client_id(options, client_id)?;
    Ok(Box::new(MqttSource::subscribe(&config, filters).await?))
}
