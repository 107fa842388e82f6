//! `eddy-bench stream`: events per second through a continuous query with a wasm UDF in it
//! (the temperature function, then the anomaly model), from the generator and from Kafka to
//! Kafka, against a bare rdkafka pipe, and event latency through Kafka at a fixed rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use eddy_connector::{Record, Sink, Source};
use eddy_kafka::{ensure_topic, KafkaSink, KafkaSource, OffsetReset};
use eddy_sql::Session;
use eddy_stream::{Engine, EngineConfig, KafkaSettings};
use eddy_udf_host::UdfRuntime;

use crate::common::{bench_config, broker, component, ensure_component, wait_for};

/// Options of `eddy-bench stream`.
#[derive(clap::Args)]
pub(crate) struct StreamBench {
    /// Events per throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Kafka brokers; without it, a tansu from ./setup.sh (.tools/bin/tansu, or $EDDY_TANSU) is
    /// started.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Events per second for the latency run.
    #[arg(long, default_value_t = 50_000)]
    latency_rate: u64,
    /// Seconds the latency run lasts.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// The UDF component (built from udfs/temperature when missing).
    #[arg(long, default_value_os_t = component("temperature"))]
    component: PathBuf,
    /// Events per throughput run with the anomaly model (0 skips those runs).
    #[arg(long, default_value_t = 200_000)]
    anomaly_events: u64,
    /// The anomaly component (built from udfs/anomaly when missing).
    #[arg(long, default_value_os_t = component("anomaly"))]
    anomaly_component: PathBuf,
}

/// A query to measure, with its function and the events it reads.
struct Workload {
    /// What the runs are called in the output.
    name: &'static str,
    /// The `CREATE FUNCTION` statement.
    function: String,
    /// The query over `car_sensor`.
    query: String,
    /// The columns `car_sensor` declares when read from Kafka.
    columns: String,
    /// Event `i` as a Kafka record.
    event: fn(u64) -> Record,
    events: u64,
}

const QUERY: &str = "SELECT car, speed, celsius_to_fahrenheit(coolant_temp) AS coolant_f \
                     FROM car_sensor WHERE speed > 20";

/// Runs the measurements and prints them.
pub(crate) async fn run(args: &StreamBench, runtime: UdfRuntime) -> Result<()> {
    ensure_component(&args.component, "temperature")?;
    let function = format!(
        "CREATE FUNCTION celsius_to_fahrenheit FROM '{}'",
        args.component.display()
    );
    let (_broker, bootstrap) = broker(args.bootstrap_servers.as_deref());
    let config = |group: &str| bench_config(&bootstrap, group);
    let settings = KafkaSettings {
        bootstrap_servers: bootstrap.clone(),
        extra: config("x").extra,
    };
    let stamp = std::process::id();
    let kafka_config = EngineConfig {
        kafka: Some(settings.clone()),
        service_id: format!("bench-{stamp}"),
        ..EngineConfig::default()
    };
    let temperature = Workload {
        name: "filter+projection+wasm UDF",
        function,
        query: QUERY.to_string(),
        columns: "car VARCHAR, speed DOUBLE, coolant_temp DOUBLE".to_string(),
        event: |i| event(i, None),
        events: args.events,
    };
    throughput(&temperature, &runtime, &bootstrap, &kafka_config, "bench").await?;
    if args.anomaly_events > 0 {
        ensure_component(&args.anomaly_component, "anomaly")?;
        let features = eddy_generator::FEATURES.join(", ");
        let anomaly = Workload {
            name: "anomaly_score (tract in wasm)",
            function: format!(
                "CREATE FUNCTION anomaly_score FROM '{}'",
                args.anomaly_component.display()
            ),
            query: format!(
                "SELECT car, anomaly_score(make_array({features})) AS score FROM car_sensor"
            ),
            columns: std::iter::once("car VARCHAR".to_string())
                .chain(
                    eddy_generator::FEATURES
                        .iter()
                        .map(|f| format!("{f} DOUBLE")),
                )
                .collect::<Vec<_>>()
                .join(", "),
            event: features_event,
            events: args.anomaly_events,
        };
        throughput(&anomaly, &runtime, &bootstrap, &kafka_config, "anomaly").await?;
    }
    latency(args, runtime, &bootstrap, kafka_config, &temperature).await
}

/// Events/s of `workload` from the generator, from Kafka to Kafka, and through a bare
/// rdkafka pipe over the same input: the limit Eddy's Kafka run is a ratio of.
async fn throughput(
    workload: &Workload,
    runtime: &UdfRuntime,
    bootstrap: &str,
    kafka_config: &EngineConfig,
    prefix: &str,
) -> Result<()> {
    let events = workload.events;
    // 1. Generator → the query → in-memory stream.
    let mut engine = Engine::new(Session::new(runtime.clone()), EngineConfig::default());
    engine.execute(&workload.function).await?;
    engine
        .execute(&format!(
            "CREATE STREAM car_sensor WITH (generator='car_sensor', seed=1, cars=100, max_events={events})"
        ))
        .await?;
    let started = Instant::now();
    engine
        .execute(&format!("CREATE STREAM hot AS {}", workload.query))
        .await?;
    let (elapsed, _) = wait_for(&engine, events, Duration::from_secs(600)).await?;
    let generator_rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "generator -> {} -> memory: {events} events in {:.2} s = {:.0} events/s (query planned at {:?})",
        workload.name,
        elapsed.as_secs_f64(),
        generator_rate,
        started.elapsed() - elapsed
    );
    engine.shutdown().await;

    // 2. Kafka → the same → Kafka.
    let config = |group: &str| bench_config(bootstrap, group);
    let stamp = std::process::id();
    let (input, output) = (
        format!("{prefix}-in-{stamp}"),
        format!("{prefix}-out-{stamp}"),
    );
    ensure_topic(&config("admin"), &input, 4).await?;
    ensure_topic(&config("admin"), &output, 4).await?;
    let produce_started = Instant::now();
    let mut sink = KafkaSink::new(&config("admin"), &input)?;
    for first in (0..events).step_by(10_000) {
        let records = (first..(first + 10_000).min(events))
            .map(workload.event)
            .collect();
        sink.send(records).await?;
    }
    sink.flush().await?;
    eprintln!(
        "(produced {events} events to {input} in {:.2} s)",
        produce_started.elapsed().as_secs_f64()
    );
    let mut engine = kafka_pipeline(
        Engine::new(
            Session::new(runtime.clone()),
            EngineConfig {
                service_id: format!("{prefix}-{stamp}"),
                ..kafka_config.clone()
            },
        ),
        workload,
        &input,
        &output,
    )
    .await?;
    let (elapsed, first_event) = wait_for(&engine, events, Duration::from_secs(600)).await?;
    engine.shutdown().await;
    let kafka_rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "kafka -> {} -> kafka: {events} events in {:.2} s = {:.0} events/s (after {:.2} s to join the group)",
        workload.name,
        elapsed.as_secs_f64(),
        kafka_rate,
        first_event.as_secs_f64()
    );

    // 2b. The limit: a bare rdkafka consume → produce pipe over the same input, same broker
    // and partitions, each record passed on unchanged (no decoding, no query).
    let piped = format!("{prefix}-pipe-{stamp}");
    ensure_topic(&config("admin"), &piped, 4).await?;
    let pipe_rate = {
        let (bootstrap, input) = (bootstrap.to_string(), input.clone());
        tokio::task::spawn_blocking(move || bare_pipe(&bootstrap, &input, &piped, events)).await??
    };
    println!(
        "kafka -> bare rdkafka consumer -> producer -> kafka: {:.0} events/s; eddy's query runs at {:.2}x of it",
        pipe_rate,
        kafka_rate / pipe_rate
    );
    if prefix == "bench" {
        println!(
            "goal: >= 200000 events/s through kafka ({:.2}x)",
            kafka_rate / 200_000.0
        );
    }
    Ok(())
}

/// Event latency through Kafka at a fixed rate, the temperature query in between.
async fn latency(
    args: &StreamBench,
    runtime: UdfRuntime,
    bootstrap: &str,
    kafka_config: EngineConfig,
    workload: &Workload,
) -> Result<()> {
    let config = |group: &str| bench_config(bootstrap, group);
    let stamp = std::process::id();

    // 3. Latency through Kafka at a fixed rate: producer timestamp to the output's arrival.
    let (input, output) = (format!("lat-in-{stamp}"), format!("lat-out-{stamp}"));
    ensure_topic(&config("admin"), &input, 4).await?;
    ensure_topic(&config("admin"), &output, 4).await?;
    let mut engine = kafka_pipeline(
        Engine::new(
            Session::new(runtime),
            EngineConfig {
                service_id: format!("lat-{stamp}"),
                commit_interval: Duration::from_secs(1),
                ..kafka_config
            },
        ),
        workload,
        &input,
        &output,
    )
    .await?;
    let mut reader = KafkaSource::subscribe(
        &config(&format!("lat-reader-{stamp}")),
        &output,
        OffsetReset::Earliest,
    )?;
    // Both consumer groups must have joined before the clock starts.
    let joined = Instant::now();
    let mut warm = KafkaSink::new(&config("admin"), &input)?;
    while reader.assignment().is_empty() || engine.queries()[0].events_in == 0 {
        if joined.elapsed() > Duration::from_secs(30) {
            bail!("consumer groups did not form in 30 s");
        }
        let _ = reader.poll(100, Duration::from_millis(50)).await?;
        sink_one(&mut warm).await?;
    }
    let total = args.latency_rate * args.latency_seconds;
    let producer = {
        let rate = args.latency_rate;
        // The warmed-up producer: a new idempotent producer spends its first ~second getting
        // a producer id, which would be timed as latency.
        let mut sink = warm;
        tokio::spawn(async move {
            let started = Instant::now();
            let step = (rate / 100).max(1);
            let mut sent = 0;
            while sent < total {
                let records = (sent..(sent + step).min(total))
                    .map(|i| event(i, Some(now_ms())))
                    .collect();
                sink.send(records).await?;
                sent = (sent + step).min(total);
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            sink.flush().await?;
            anyhow::Ok(())
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(args.latency_seconds + 60);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        let messages = reader.poll(10_000, Duration::from_millis(100)).await?;
        let now = now_ms();
        for m in messages.unwrap_or_default() {
            // Warm-up events carry no timestamp worth timing.
            if let Some(t) = m.timestamp_ms.filter(|t| *t > 0) {
                // Field names come out upper-cased (`{"CAR":"lat-…`), as ksqlDB writes them.
                let mark = b"{\"car\":\"lat";
                if m.payload
                    .get(..mark.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(mark))
                {
                    latencies.push(now - t);
                }
            }
        }
    }
    producer.await??;
    engine.shutdown().await;
    latencies.sort_unstable();
    if latencies.is_empty() {
        bail!("no events came through for the latency run");
    }
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "latency through kafka at {} events/s for {} s: p50 {} ms, p99 {} ms, max {} ms ({} of {} events timed)",
        args.latency_rate,
        args.latency_seconds,
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1],
        latencies.len(),
        total
    );
    println!("goal: p99 < 50 ms at 50000 events/s");
    Ok(())
}

/// Copies `events` records from `input` to `output` with one plain consumer and one producer,
/// the producer set up as Eddy's sink is (idempotent, `acks=all`, `linger.ms=5`); returns
/// events/s from the first record read to the last.
fn bare_pipe(bootstrap: &str, input: &str, output: &str, events: u64) -> Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-pipe-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        // As Eddy's source sets it: librdkafka's default stops fetching for a second whenever
        // its local queue is full.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        partitions.add_partition_offset(input, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&partitions)?;
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut started = None;
    let mut copied = 0;
    while copied < events {
        if Instant::now() > deadline {
            bail!("the bare pipe copied {copied} of {events} events in 600 s");
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        started.get_or_insert_with(Instant::now);
        let mut record = BaseRecord::to(output).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(ts) = message.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        // A full queue waits for deliveries to make room, as a sink's backpressure would.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        bail!("bare pipe: {e}");
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        copied += 1;
    }
    // Timed like Eddy's run (`wait_for`): from the first record read to the last; the flush
    // after it only proves the copies landed.
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    producer.flush(Duration::from_secs(60))?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

async fn sink_one(sink: &mut KafkaSink) -> Result<()> {
    sink.send(vec![Record {
        key: None,
        payload: Some(br#"{"car":"warmup","speed":50.0,"coolant_temp":90.0}"#.to_vec()),
        timestamp_ms: None,
        partition: None,
        upstream: None,
    }])
    .await?;
    sink.flush().await?;
    Ok(())
}

/// `workload`'s query, from Kafka topic `input` to `output`, running in `engine`.
async fn kafka_pipeline(
    mut engine: Engine,
    workload: &Workload,
    input: &str,
    output: &str,
) -> Result<Engine> {
    engine.execute(&workload.function).await?;
    engine
        .execute(&format!(
            "CREATE STREAM car_sensor ({}) WITH (kafka_topic='{input}')",
            workload.columns
        ))
        .await?;
    engine
        .execute(&format!(
            "CREATE STREAM hot WITH (kafka_topic='{output}') AS {}",
            workload.query
        ))
        .await?;
    Ok(engine)
}

/// One JSON event; `timestamp` marks it for the latency run.
fn event(i: u64, timestamp: Option<i64>) -> Record {
    let car = if timestamp.is_some() { "lat" } else { "car" };
    Record {
        key: Some(format!("{}", i % 100).into_bytes()),
        payload: Some(
            format!(
                r#"{{"car":"{car}-{}","speed":{}.5,"coolant_temp":{}.25}}"#,
                i % 100,
                21 + i % 100,
                80 + i % 30
            )
            .into_bytes(),
        ),
        timestamp_ms: timestamp,
        partition: None,
        upstream: None,
    }
}

/// One JSON event with every feature the anomaly model reads, in plausible ranges.
fn features_event(i: u64) -> Record {
    let mut fields = vec![format!(r#""car":"car-{}""#, i % 100)];
    for (k, name) in eddy_generator::FEATURES.iter().enumerate() {
        let value = 10.0 + ((i + k as u64 * 7) % 50) as f64 * 1.5;
        fields.push(format!(r#""{name}":{value}"#));
    }
    Record {
        key: Some(format!("{}", i % 100).into_bytes()),
        payload: Some(format!("{{{}}}", fields.join(",")).into_bytes()),
        timestamp_ms: None,
        partition: None,
        upstream: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
