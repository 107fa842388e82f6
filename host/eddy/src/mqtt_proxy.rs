//! `eddy mqtt-proxy`: an MQTT endpoint that lands device publishes in Kafka topics.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use eddy_kafka::KafkaConfig;
use eddy_mqtt_endpoint::{Endpoint, EndpointConfig, TopicAs, TopicRule};

/// Arguments of `eddy mqtt-proxy`.
#[derive(Args, Debug)]
pub(crate) struct MqttProxyArgs {
    /// Address to accept MQTT 3.1.1 and 5 clients on.
    #[arg(long, default_value = "127.0.0.1:1883", env = "EDDY_MQTT_LISTEN")]
    listen: String,
    /// Kafka brokers (`host:port[,host:port…]`).
    #[arg(long, env = "EDDY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,
    /// A topic rule `kafka_topic:regex` (the regex must match the whole MQTT topic); repeat for
    /// more, the first match wins. E.g. `--map 'temperature:.*temperature'`.
    #[arg(long = "map", value_name = "KAFKA_TOPIC:REGEX", required = true)]
    rules: Vec<String>,
    /// Put the MQTT topic in this record header instead of the record key.
    #[arg(long, value_name = "NAME")]
    topic_header: Option<String>,
    /// Unacknowledged QoS 1/2 publishes per connection before it is no longer read.
    #[arg(long, default_value_t = 64)]
    max_inflight: u16,
    /// A librdkafka producer property (repeatable), e.g. `linger.ms=1`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Seconds between counter lines on stderr (0: none).
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
}

pub(crate) async fn run(args: &MqttProxyArgs) -> Result<()> {
    let mut kafka = KafkaConfig::new(args.bootstrap_servers.clone(), "eddy-mqtt-proxy");
    for property in &args.kafka_properties {
        let (k, v) = property
            .split_once('=')
            .with_context(|| format!("--kafka-property {property}: expected KEY=VALUE"))?;
        kafka = kafka.with(k, v);
    }
    let rules = args
        .rules
        .iter()
        .map(|r| r.parse::<TopicRule>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = EndpointConfig::new(args.listen.clone(), kafka, rules);
    config.max_inflight = args.max_inflight;
    if let Some(name) = &args.topic_header {
        config.topic_as = TopicAs::Header(name.clone());
    }
    let endpoint = Endpoint::start(config).await?;
    println!("eddy mqtt-proxy: listening on {}", endpoint.local_addr());
    let mut ticker = tokio::time::interval(Duration::from_secs(args.stats_interval.max(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick(), if args.stats_interval > 0 => {
                eprintln!("eddy mqtt-proxy: {:?}", endpoint.stats());
            }
        }
    }
    let stats = endpoint.stats();
    endpoint.shutdown(Duration::from_secs(10)).await;
    eprintln!("eddy mqtt-proxy: stopped; {stats:?}");
    Ok(())
}
