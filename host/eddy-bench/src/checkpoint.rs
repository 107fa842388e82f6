//! `eddy-bench checkpoint`: what checkpointing costs a Kafka → GROUP BY query (events/s with a
//! checkpoint every commit interval against none, side by side) and how long a restart takes
//! to restore the state, for growing numbers of keys.

use std::time::{Duration, Instant};

use anyhow::Result;
use eddy_connector::{Record, Sink};
use eddy_kafka::{ensure_topic, KafkaSink};
use eddy_sql::Session;
use eddy_stream::{Engine, EngineConfig, KafkaSettings, StateStore};
use eddy_udf_host::UdfRuntime;

use crate::common::{bench_config, broker, build_kind, wait_for};

/// Options of `eddy-bench checkpoint`.
#[derive(clap::Args)]
pub(crate) struct CheckpointBench {
    /// Numbers of distinct keys (groups) to measure, comma-separated.
    #[arg(long, default_value = "10000,100000,1000000", value_delimiter = ',')]
    keys: Vec<u64>,
    /// Events per key.
    #[arg(long, default_value_t = 2)]
    events_per_key: u64,
    /// Kafka to use instead of a tansu started for the run.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Declare `k` the stream's KEY, so the query keeps its state (and checkpoints) per
    /// partition of its source; otherwise it does so per partition of its repartition topic.
    #[arg(long)]
    keyed: bool,
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: &CheckpointBench, runtime: UdfRuntime) -> Result<()> {
    let (_broker, bootstrap) = broker(args.bootstrap_servers.as_deref());
    let config = |group: &str| bench_config(&bootstrap, group);
    let stamp = std::process::id();
    let state_dir = std::env::temp_dir().join(format!("eddy-bench-state-{stamp}"));
    println!(
        "GROUP BY k with COUNT and SUM over 4 partitions, {} events per key, checkpoint every 1 s, \
         state {} ({} build)",
        args.events_per_key,
        if args.keyed {
            "per partition (k is the KEY)"
        } else {
            "per partition of a repartition topic (k is not the KEY)"
        },
        build_kind()
    );
    println!(
        "| keys | events/s, no state | events/s, checkpoints | ratio | last checkpoint | restore |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for &keys in &args.keys {
        let events = keys * args.events_per_key;
        let topic = format!("bench-ckpt-{stamp}-{keys}");
        ensure_topic(&config("admin"), &topic, 4).await?;
        let mut sink = KafkaSink::new(&config("admin"), &topic)?;
        for first in (0..events).step_by(10_000) {
            let records = (first..(first + 10_000).min(events))
                .map(|i| Record {
                    key: Some(format!("k{}", i % keys).into_bytes()),
                    payload: Some(format!(r#"{{"k":"k{}","v":{}}}"#, i % keys, i % 7).into_bytes()),
                    timestamp_ms: None,
                    partition: None,
                    upstream: None,
                })
                .collect();
            sink.send(records).await?;
        }
        sink.flush().await?;
        let key = if args.keyed {
            " KEY) WITH (key_format='KAFKA', "
        } else {
            ") WITH ("
        };
        let statements = [
            format!(
                "CREATE STREAM s (v BIGINT, k VARCHAR{key}kafka_topic='{topic}', value_format='JSON')"
            ),
            "CREATE TABLE agg AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM s GROUP BY k"
                .to_string(),
        ];
        let engine_config = |service: &str, state: Option<StateStore>| EngineConfig {
            kafka: Some(KafkaSettings {
                bootstrap_servers: bootstrap.clone(),
                extra: config("x").extra,
            }),
            service_id: service.to_string(),
            state,
            ..EngineConfig::default()
        };
        // Side by side: the same events, without and with checkpoints.
        let mut rates = Vec::new();
        for checkpoints in [false, true] {
            let service = format!("bench-{stamp}-{keys}-{checkpoints}");
            let state = checkpoints
                .then(|| StateStore::local(&state_dir, &service))
                .transpose()?;
            let mut engine = Engine::new(
                Session::new(runtime.clone()),
                engine_config(&service, state),
            );
            for s in &statements {
                engine.execute(s).await?;
            }
            let (elapsed, _) = wait_for(&engine, events, Duration::from_secs(3600)).await?;
            engine.shutdown().await;
            rates.push(events as f64 / elapsed.as_secs_f64());
        }
        // The last checkpoint of each partition, and a restart restoring them: from the CREATE until the table holds every key again (a query with
        // state per partition restores each as the consumer group assigns it).
        let service = format!("bench-{stamp}-{keys}-true");
        let dir = state_dir.join(&service);
        let mut sizes: Vec<std::fs::Metadata> = walk(&dir);
        sizes.sort_by_key(|m| m.modified().ok());
        let files = 4;
        let bytes: u64 = sizes.iter().rev().take(files).map(|f| f.len()).sum();
        let state = StateStore::local(&state_dir, &service)?;
        let mut engine = Engine::new(
            Session::new(runtime.clone()),
            engine_config(&service, Some(state)),
        );
        engine.execute(&statements[0]).await?;
        let started = Instant::now();
        engine.execute(&statements[1]).await?;
        while held(&mut engine).await? < keys {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the table was not restored in 600 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let restore = started.elapsed();
        engine.shutdown().await;
        println!(
            "| {keys} | {:.0} | {:.0} | {:.2} | {:.1} MB | {:.2} s |",
            rates[0],
            rates[1],
            rates[1] / rates[0],
            bytes as f64 / 1e6,
            restore.as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&state_dir).ok();
    Ok(())
}

/// How many rows table `agg` holds.
async fn held(engine: &mut Engine) -> Result<u64> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let eddy_stream::Output::Rows { batches, .. } =
        engine.execute("SELECT COUNT(*) AS n FROM agg").await?
    else {
        anyhow::bail!("a pull query returned no rows");
    };
    Ok(batches
        .first()
        .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0)) as u64)
}

/// Metadata of every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::fs::Metadata> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(meta);
        }
    }
    out
}
