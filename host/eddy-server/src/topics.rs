//! `LIST TOPICS` / `SHOW [ALL] TOPICS [EXTENDED]`: ksqlDB's `kafka_topics` entity, from the
//! broker's metadata.

use std::time::Duration;

use axum::http::StatusCode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};

use crate::error::{code, ApiError};
use crate::ServerConfig;

/// How long the broker may take to answer a metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to `SHOW [ALL] TOPICS`: the broker's topics (`all`: internal ones too).
pub(crate) async fn list(config: &ServerConfig, all: bool, shown: &str) -> Result<Value, ApiError> {
    let Some(servers) = config.bootstrap_servers.clone() else {
        return Err(ApiError::statement(
            code::BAD_STATEMENT,
            "this server has no Kafka cluster to list topics of: start it with --bootstrap-servers",
            shown,
        ));
    };
    let broker_error = |message: String| {
        ApiError::generic(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::SERVER_ERROR,
            format!("listing the topics of {servers}: {message}"),
        )
    };
    // librdkafka blocks while it waits for the broker: not on a runtime thread.
    let metadata = tokio::task::spawn_blocking({
        let servers = servers.clone();
        move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("log_level", "3")
                .create()
                .map_err(|e| e.to_string())?;
            let metadata = consumer
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(|e| e.to_string())?;
            let topics: Vec<(String, Vec<usize>)> = metadata
                .topics()
                .iter()
                .map(|t| {
                    let replicas = t.partitions().iter().map(|p| p.replicas().len()).collect();
                    (t.name().to_string(), replicas)
                })
                .collect();
            Ok::<_, String>(topics)
        }
    })
    .await
    .map_err(|e| broker_error(e.to_string()))?
    .map_err(broker_error)?;
    let mut topics: Vec<(String, Vec<usize>)> = metadata
        .into_iter()
        // Internal topics (`__consumer_offsets`, `_schemas`) only with SHOW ALL TOPICS.
        .filter(|(name, _)| all || !name.starts_with('_'))
        .collect();
    topics.sort();
    let topics: Vec<Value> = topics
        .into_iter()
        .map(|(name, replicas)| json!({"name": name, "replicaInfo": replicas}))
        .collect();
    Ok(json!({
        "@type": "kafka_topics",
        "statementText": shown,
        "topics": topics,
        "warnings": [],
    }))
}
