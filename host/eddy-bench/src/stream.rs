//! `eddy-bench stream`: events per second through a continuous query with a wasm UDF in it,
//! from the generator and from Kafka to Kafka, and event latency through Kafka at a fixed rate.

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
}

const QUERY: &str = "SELECT car, speed, celsius_to_fahrenheit(coolant_temp) AS coolant_f \
                     FROM car_sensor WHERE speed > 20";

/// Runs the three measurements and prints them.
pub(crate) async fn run(args: &StreamBench, runtime: UdfRuntime) -> Result<()> {
    ensure_component(&args.component, "temperature")?;
    let function = format!(
        "CREATE FUNCTION celsius_to_fahrenheit FROM '{}'",
        args.component.display()
    );

    // 1. Generator → filter + projection + wasm UDF → in-memory stream.
    let mut engine = Engine::new(Session::new(runtime.clone()), EngineConfig::default());
    engine.execute(&function).await?;
    engine
        .execute(&format!(
            "CREATE STREAM car_sensor WITH (generator='car_sensor', seed=1, cars=100, max_events={})",
            args.events
        ))
        .await?;
    let started = Instant::now();
    engine
        .execute(&format!("CREATE STREAM hot AS {QUERY}"))
        .await?;
    let (elapsed, _) = wait_for(&engine, args.events, Duration::from_secs(600)).await?;
    let generator_rate = args.events as f64 / elapsed.as_secs_f64();
    println!(
        "generator -> filter+projection+wasm UDF -> memory: {} events in {:.2} s = {:.0} events/s (query planned at {:?})",
        args.events,
        elapsed.as_secs_f64(),
        generator_rate,
        started.elapsed() - elapsed
    );
    engine.shutdown().await;

    // 2. Kafka → the same → Kafka.
    let (_broker, bootstrap) = broker(args.bootstrap_servers.as_deref());
    let config = |group: &str| bench_config(&bootstrap, group);
    let settings = KafkaSettings {
        bootstrap_servers: bootstrap.clone(),
        extra: config("x").extra,
    };
    let stamp = std::process::id();
    let (input, output) = (format!("bench-in-{stamp}"), format!("bench-out-{stamp}"));
    ensure_topic(&config("admin"), &input, 4).await?;
    ensure_topic(&config("admin"), &output, 4).await?;
    let produce_started = Instant::now();
    let mut sink = KafkaSink::new(&config("admin"), &input)?;
    for first in (0..args.events).step_by(10_000) {
        let records = (first..(first + 10_000).min(args.events))
            .map(|i| event(i, None))
            .collect();
        sink.send(records).await?;
    }
    sink.flush().await?;
    eprintln!(
        "(produced {} events to {input} in {:.2} s)",
        args.events,
        produce_started.elapsed().as_secs_f64()
    );
    let kafka_config = EngineConfig {
        kafka: Some(settings.clone()),
        service_id: format!("bench-{stamp}"),
        ..EngineConfig::default()
    };
    let mut engine = kafka_pipeline(
        Engine::new(Session::new(runtime.clone()), kafka_config.clone()),
        &function,
        &input,
        &output,
    )
    .await?;
    let (elapsed, first_event) = wait_for(&engine, args.events, Duration::from_secs(600)).await?;
    engine.shutdown().await;
    let kafka_rate = args.events as f64 / elapsed.as_secs_f64();
    println!(
        "kafka -> filter+projection+wasm UDF -> kafka: {} events in {:.2} s = {:.0} events/s (after {:.2} s to join the group)",
        args.events,
        elapsed.as_secs_f64(),
        kafka_rate,
        first_event.as_secs_f64()
    );

    // 2b. The limit: a bare rdkafka consume → produce pipe over the same input, same broker
    // and partitions, each record passed on unchanged (no decoding, no query).
    let piped = format!("bench-pipe-{stamp}");
    ensure_topic(&config("admin"), &piped, 4).await?;
    let pipe_rate = {
        let (bootstrap, input, events) = (bootstrap.clone(), input.clone(), args.events);
        tokio::task::spawn_blocking(move || bare_pipe(&bootstrap, &input, &piped, events)).await??
    };
    println!(
        "kafka -> bare rdkafka consumer -> producer -> kafka: {:.0} events/s; eddy's query runs at {:.2}x of it",
        pipe_rate,
        kafka_rate / pipe_rate
    );

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
        &function,
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
    println!(
        "goals: >= 200000 events/s through kafka ({:.2}x), p99 < 50 ms at 50000 events/s",
        kafka_rate / 200_000.0
    );
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
    }])
    .await?;
    sink.flush().await?;
    Ok(())
}

/// The benchmark's query, from Kafka topic `input` to `output`, running in `engine`.
async fn kafka_pipeline(
    mut engine: Engine,
    function: &str,
    input: &str,
    output: &str,
) -> Result<Engine> {
    engine.execute(function).await?;
    engine
        .execute(&format!(
            "CREATE STREAM car_sensor (car VARCHAR, speed DOUBLE, coolant_temp DOUBLE) \
             WITH (kafka_topic='{input}')"
        ))
        .await?;
    engine
        .execute(&format!(
            "CREATE STREAM hot WITH (kafka_topic='{output}') AS {QUERY}"
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
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
