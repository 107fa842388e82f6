//! `eddy-bench mqtt`: QoS 1 publishes/s and latency through Eddy's MQTT endpoint into Kafka,
//! against mosquitto with a bridge (a subscriber to `#` that produces to Kafka).
//!
//! Both systems see the same load: in-process rumqttc clients, each keeping up to `--inflight`
//! publishes unacknowledged, for `--seconds` per run. The payload carries the wall-clock time it
//! was sent; a Kafka consumer reads every record back and computes publish → readable in Kafka.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use eddy_kafka::{ensure_topic, KafkaConfig};
use eddy_mqtt::rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use eddy_mqtt_endpoint::{Endpoint, EndpointConfig, TopicRule};
use eddy_tests::mqtt::Mosquitto;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Options of `eddy-bench mqtt`.
#[derive(clap::Args)]
pub(crate) struct MqttBench {
    /// Kafka brokers the records go to.
    #[arg(long, default_value = "localhost:9092")]
    bootstrap_servers: String,
    /// The mosquitto binary for the comparison (default: $EDDY_MOSQUITTO, else on PATH, else
    /// /usr/sbin/mosquitto).
    #[arg(long)]
    mosquitto: Option<PathBuf>,
    /// Skip the mosquitto + bridge comparison.
    #[arg(long)]
    no_mosquitto: bool,
    /// Seconds each run publishes for.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Unacknowledged publishes each client keeps in flight in the throughput runs.
    #[arg(long, default_value_t = 64)]
    inflight: u16,
    /// Payload bytes per publish (at least 24: the send time is in it).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
}

/// One run's load.
#[derive(Clone, Copy)]
struct Load {
    clients: usize,
    inflight: u16,
}

/// One run's figures.
struct Figures {
    acked: u64,
    rate: f64,
    /// publish → PUBACK, milliseconds.
    ack: Percentiles,
    /// publish → record read from Kafka, milliseconds.
    kafka: Percentiles,
    in_kafka: u64,
}

#[derive(Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

fn percentiles(mut micros: Vec<u64>) -> Percentiles {
    if micros.is_empty() {
        return Percentiles::default();
    }
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs `eddy-bench mqtt` and prints its table.
pub(crate) async fn run(args: &MqttBench) -> Result<()> {
    if args.payload_bytes < 24 {
        bail!("--payload-bytes must be at least 24");
    }
    let loads = [
        Load {
            clients: 1,
            inflight: args.inflight,
        },
        Load {
            clients: 100,
            inflight: args.inflight,
        },
        // One publish at a time: latency without queueing behind the client's own window.
        Load {
            clients: 1,
            inflight: 1,
        },
    ];
    let mosquitto = if args.no_mosquitto {
        None
    } else {
        let binary = args
            .mosquitto
            .clone()
            .or_else(eddy_tests::mqtt::mosquitto_binary)
            .filter(|b| b.is_file())
            .context(
                "mosquitto not found (run ./setup.sh, set EDDY_MOSQUITTO or --mosquitto, or pass \
                 --no-mosquitto)",
            )?;
        Some(Mosquitto::start_with(&binary))
    };
    let mut rows = Vec::new();
    for load in loads {
        let eddy = run_eddy(args, load).await?;
        print_row("eddy endpoint -> kafka", load, &eddy);
        let bridged = match &mosquitto {
            Some(m) => {
                let f = run_bridge(args, load, m.port()).await?;
                print_row("mosquitto + bridge -> kafka", load, &f);
                Some(f)
            }
            None => None,
        };
        rows.push((load, eddy, bridged));
    }

    println!();
    let build = crate::common::build_kind();
    println!(
        "QoS 1, {} s per run, {}-byte payloads, {build} build; latencies in ms \
         (publish->PUBACK | publish->readable in Kafka)",
        args.seconds, args.payload_bytes
    );
    println!(
        "{:<30} {:>7} {:>8} {:>10} {:>15} {:>15}",
        "system", "clients", "inflight", "acked/s", "ack p50/p99", "kafka p50/p99"
    );
    for (load, eddy, bridged) in &rows {
        table_row("eddy endpoint -> kafka", *load, eddy);
        if let Some(b) = bridged {
            table_row("mosquitto + bridge -> kafka", *load, b);
            println!(
                "  eddy / mosquitto+bridge: acked/s {:.2}x; publish->Kafka p50 {:.2}x, p99 {:.2}x; \
                 eddy's PUBACK p99 (record in Kafka) / bridge's publish->Kafka p99: {:.2}x",
                eddy.rate / b.rate,
                eddy.kafka.p50 / b.kafka.p50,
                eddy.kafka.p99 / b.kafka.p99,
                eddy.ack.p99 / b.kafka.p99
            );
        }
    }
    println!(
        "\nWhat the comparison means: Eddy acknowledges a publish after Kafka acknowledged its record \
         (acks=all), so an acked publish is in Kafka and survives an Eddy crash. mosquitto \
         acknowledges on receipt and the bridge produces afterwards, so its PUBACK says nothing \
         about Kafka: a crash of mosquitto or the bridge loses publishes the devices were told \
         were delivered. Compare Eddy's publish->PUBACK with the bridge's publish->Kafka for the \
         same guarantee. A bridge publish->Kafka far above its PUBACK latency means the bridge \
         fell behind and messages queued in mosquitto. Everything but mosquitto (clients, endpoint \
         or bridge, consumer) runs in this process, on the same cores; mosquitto is an optimized \
         C binary whatever this build is."
    );
    Ok(())
}

fn print_row(system: &str, load: Load, f: &Figures) {
    eprintln!(
        "{system}: {} client(s), inflight {}: {} acked = {:.0}/s; {} of them read from Kafka",
        load.clients, load.inflight, f.acked, f.rate, f.in_kafka
    );
    if f.in_kafka < f.acked {
        eprintln!(
            "  WARNING: {} acknowledged publishes did not reach Kafka within {TAIL_WAIT:?}",
            f.acked - f.in_kafka
        );
    }
}

fn table_row(system: &str, load: Load, f: &Figures) {
    println!(
        "{:<30} {:>7} {:>8} {:>10.0} {:>7.2}/{:<7.2} {:>7.2}/{:<7.2}",
        system, load.clients, load.inflight, f.rate, f.ack.p50, f.ack.p99, f.kafka.p50, f.kafka.p99
    );
}

/// A fresh topic for one run.
async fn topic(args: &MqttBench, name: &str) -> Result<String> {
    let topic = format!("bench-mqtt-{name}-{}-{}", std::process::id(), now_micros());
    ensure_topic(
        &KafkaConfig::new(&args.bootstrap_servers, "bench"),
        &topic,
        4,
    )
    .await
    .with_context(|| format!("creating {topic} on {}", args.bootstrap_servers))?;
    Ok(topic)
}

async fn run_eddy(args: &MqttBench, load: Load) -> Result<Figures> {
    let topic = topic(args, "eddy").await?;
    let mut config = EndpointConfig::new(
        "127.0.0.1:0",
        KafkaConfig::new(&args.bootstrap_servers, "bench"),
        vec![TopicRule::new(&topic, ".*")?],
    );
    config.max_inflight = args.inflight.max(load.inflight);
    let endpoint = Endpoint::start(config).await?;
    let port = endpoint.local_addr().port();
    let figures = measure(args, load, port, &topic).await;
    endpoint.shutdown(Duration::from_secs(5)).await;
    figures
}

async fn run_bridge(args: &MqttBench, load: Load, mosquitto_port: u16) -> Result<Figures> {
    let topic = topic(args, "bridge").await?;
    let bridge = Bridge::start(&args.bootstrap_servers, &topic, mosquitto_port).await?;
    let figures = measure(args, load, mosquitto_port, &topic).await;
    bridge.stop(&topic).await?;
    figures
}

/// Publishes `load` to the MQTT server on `port` and reads `topic` back from Kafka.
async fn measure(args: &MqttBench, load: Load, port: u16, topic: &str) -> Result<Figures> {
    let reader = KafkaReader::start(&args.bootstrap_servers, topic)?;
    // Warm-up until the reader has seen a record: producers have their connections and producer
    // ids and the reader is fetching before the clock starts, so neither is timed as latency.
    let ready = Instant::now();
    while !reader.ready.load(Ordering::Relaxed) {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("no warm-up record reached {topic} in 30 s");
        }
        let warmup = Load {
            clients: 1,
            inflight: 1,
        };
        publish_load(port, warmup, Duration::from_millis(100), 24, "warmup").await?;
    }
    let (acked, elapsed, ack_latencies) = publish_load(
        port,
        load,
        Duration::from_secs(args.seconds),
        args.payload_bytes,
        "dev",
    )
    .await?;
    let kafka_latencies = reader.finish(acked).await?;
    Ok(Figures {
        acked,
        rate: acked as f64 / elapsed.as_secs_f64(),
        ack: percentiles(ack_latencies),
        in_kafka: kafka_latencies.len() as u64,
        kafka: percentiles(kafka_latencies),
    })
}

/// Runs `load.clients` clients against `port` for `duration`; returns the publishes
/// acknowledged, the time until the last PUBACK, and publish → PUBACK latencies in microseconds.
async fn publish_load(
    port: u16,
    load: Load,
    duration: Duration,
    payload_bytes: usize,
    prefix: &str,
) -> Result<(u64, Duration, Vec<u64>)> {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..load.clients)
        .map(|c| {
            let prefix = prefix.to_string();
            tokio::spawn(client(
                port,
                c,
                load.inflight,
                deadline,
                payload_bytes,
                prefix,
            ))
        })
        .collect();
    let (mut acked, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (n, l) = task.await??;
        acked += n;
        latencies.extend(l);
    }
    Ok((acked, start.elapsed(), latencies))
}

/// One MQTT client: keeps `inflight` QoS 1 publishes to `<prefix>/<c>` unacknowledged until
/// `deadline`, then waits for the rest of the PUBACKs and disconnects.
async fn client(
    port: u16,
    c: usize,
    inflight: u16,
    deadline: Instant,
    payload_bytes: usize,
    prefix: String,
) -> Result<(u64, Vec<u64>)> {
    let id = format!("bench-{prefix}-{}-{c}-{}", std::process::id(), now_micros());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(inflight);
    let (client, mut events) = AsyncClient::new(options, inflight as usize + 1);
    let topic = format!("{prefix}/{c}");
    let payload = |seq: u64| {
        // `<send time µs> <seq>` padded: the Kafka reader parses the time.
        let mut p = format!("{} {seq} ", now_micros()).into_bytes();
        p.resize(payload_bytes, b'.');
        p
    };
    let (mut sent, mut acked) = (0u64, 0u64);
    // Written but not yet acknowledged, by packet id.
    let mut written: HashMap<u16, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut connected = false;
    loop {
        match events.poll().await.context("mqtt client")? {
            Event::Incoming(Packet::ConnAck(_)) => {
                if connected {
                    bail!("client {c} reconnected; the figures would be wrong");
                }
                connected = true;
                while sent < inflight as u64 {
                    client.try_publish(&topic, QoS::AtLeastOnce, false, payload(sent))?;
                    sent += 1;
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                written.insert(pkid, Instant::now());
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                acked += 1;
                if let Some(t) = written.remove(&ack.pkid) {
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                if Instant::now() < deadline {
                    client.try_publish(&topic, QoS::AtLeastOnce, false, payload(sent))?;
                    sent += 1;
                } else if acked == sent {
                    client.try_disconnect()?;
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok((acked, latencies)),
            _ => {}
        }
    }
}

/// Reads a topic's records as they arrive and times each from the send time in its payload.
struct KafkaReader {
    /// Set once a warm-up record was read.
    ready: Arc<AtomicBool>,
    want: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<Vec<u64>>>,
}

impl KafkaReader {
    fn start(bootstrap: &str, topic: &str) -> Result<KafkaReader> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("bench-mqtt-reader-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        // Assigned, not subscribed: no group to form. From the beginning, because `End` is only
        // resolved at the first fetch and would skip records produced before it.
        let mut partitions = rdkafka::TopicPartitionList::new();
        for p in 0..4 {
            partitions.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&partitions)?;
        let want = Arc::new(AtomicU64::new(u64::MAX));
        let ready = Arc::new(AtomicBool::new(false));
        let task = tokio::task::spawn_blocking({
            let (want, ready) = (want.clone(), ready.clone());
            move || {
                let mut latencies = Vec::new();
                let mut give_up: Option<Instant> = None;
                loop {
                    let target = want.load(Ordering::Relaxed);
                    if latencies.len() as u64 >= target {
                        return Ok(latencies);
                    }
                    if target != u64::MAX {
                        let at = *give_up.get_or_insert_with(|| Instant::now() + TAIL_WAIT);
                        if Instant::now() > at {
                            return Ok(latencies);
                        }
                    }
                    let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                        continue;
                    };
                    let now = now_micros();
                    let message = message?;
                    let sent = message
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(|p| p.split(' ').next()?.parse::<u64>().ok());
                    if message.key() == Some(b"warmup/0") {
                        ready.store(true, Ordering::Relaxed);
                    } else if let Some(sent) = sent {
                        latencies.push(now.saturating_sub(sent));
                    }
                }
            }
        });
        Ok(KafkaReader { ready, want, task })
    }

    /// Waits (at most [`TAIL_WAIT`]) for `count` records; returns their latencies in
    /// microseconds.
    async fn finish(self, count: u64) -> Result<Vec<u64>> {
        self.want.store(count, Ordering::Relaxed);
        self.task.await?
    }
}

/// How long the reader waits for the last records after the publishers are done.
const TAIL_WAIT: Duration = Duration::from_secs(30);

/// A mosquitto → Kafka bridge: subscribes to `#` at QoS 1 and produces each message to one
/// Kafka topic (key: the MQTT topic) with `acks=all`, like Eddy's producer. It acknowledges
/// mosquitto's deliveries on receipt, as bridges built on an MQTT client library do.
struct Bridge {
    task: tokio::task::JoinHandle<Result<std::convert::Infallible>>,
    failed: Arc<AtomicU64>,
    producer: FutureProducer,
}

impl Bridge {
    async fn start(bootstrap: &str, topic: &str, mosquitto_port: u16) -> Result<Bridge> {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // Eddy's endpoint sets the same.
            .set("linger.ms", "1")
            .create()?;
        let id = format!("bench-bridge-{}-{}", std::process::id(), now_micros());
        let mut options = MqttOptions::new(id, "127.0.0.1", mosquitto_port);
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 16);
        client.subscribe("#", QoS::AtLeastOnce).await?;
        let failed = Arc::new(AtomicU64::new(0));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let (producer, topic, failed) = (producer.clone(), topic.to_string(), failed.clone());
            async move {
                let mut subscribed_tx = Some(subscribed_tx);
                let _client = client;
                loop {
                    match events.poll().await.context("bridge subscriber")? {
                        Event::Incoming(Packet::SubAck(_)) => {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Event::Incoming(Packet::Publish(p)) => {
                            let record = FutureRecord::to(&topic)
                                .key(p.topic.as_bytes())
                                .payload(&p.payload[..]);
                            match producer.send_result(record) {
                                Ok(delivery) => {
                                    let failed = failed.clone();
                                    tokio::spawn(async move {
                                        if !matches!(delivery.await, Ok(Ok(_))) {
                                            failed.fetch_add(1, Ordering::Relaxed);
                                        }
                                    });
                                }
                                Err(_) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .context("bridge: no SUBACK from mosquitto")??;
        Ok(Bridge {
            task,
            failed,
            producer,
        })
    }

    /// Stops the subscriber (an error it ended with is returned) and flushes the producer.
    async fn stop(self, topic: &str) -> Result<()> {
        if self.task.is_finished() {
            self.task.await??;
        } else {
            self.task.abort();
        }
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10))
        })
        .await??;
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            eprintln!("bridge: {failed} records failed to reach {topic}");
        }
        Ok(())
    }
}
