//! At-least-once across a crash: `eddy run` is killed (SIGKILL) mid-stream and started again;
//! every event reaches the output topic, and duplicates stay within one commit interval.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy_connector::{Record, Sink, Source};
use eddy_kafka::{ensure_topic, KafkaSink, KafkaSource, OffsetReset};
use eddy_tests::kafka::{shared, unique};

const N: i64 = 40_000;
/// Events produced per second while the query runs.
const RATE: i64 = 10_000;
const COMMIT_MS: i64 = 200;

fn start_eddy(sql: &std::path::Path, service: &str) -> Child {
    let broker = shared();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env(
            "EDDY_CACHE_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/eddy-test-cache"),
        )
        .args([
            "run",
            "--quiet",
            "--bootstrap-servers",
            &broker.bootstrap(),
            "--service-id",
            service,
        ])
        .args(["--commit-interval", &format!("{COMMIT_MS}ms")])
        .arg(sql)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &broker.config("x").extra {
        cmd.args(["--kafka-property", &format!("{k}={v}")]);
    }
    cmd.spawn().expect("starting eddy")
}

/// Output ids read so far from `source`, counted.
async fn drain(source: &mut KafkaSource, seen: &mut BTreeMap<i64, u32>, wait: Duration) {
    let messages = source.poll(10_000, wait).await.unwrap().unwrap();
    for m in messages {
        let row: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *seen.entry(row["ID"].as_i64().unwrap()).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_eddy_loses_no_event() {
    let broker = shared();
    let admin = broker.config("admin");
    let (input, output) = (unique("restart-in"), unique("restart-out"));
    ensure_topic(&admin, &input, 3).await.unwrap();
    ensure_topic(&admin, &output, 1).await.unwrap();
    let udfs = eddy_tests::components().display().to_string();
    let dir = std::env::temp_dir().join(unique("eddy-restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let sql = dir.join("pipeline.sql");
    std::fs::write(
        &sql,
        format!(
            "CREATE STREAM car_sensor (id BIGINT, temp DOUBLE) WITH (kafka_topic='{input}', value_format='JSON');\n\
             CREATE FUNCTION celsius_to_fahrenheit FROM '{udfs}/temperature.wasm';\n\
             CREATE STREAM hot WITH (kafka_topic='{output}') AS SELECT id, celsius_to_fahrenheit(temp) AS f FROM car_sensor;\n"
        ),
    )
    .unwrap();

    // Events trickle in at RATE per second for the whole test, so the kill lands mid-stream.
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let producer = {
        let admin = admin.clone();
        let input = input.clone();
        let produced = produced.clone();
        tokio::spawn(async move {
            let mut sink = KafkaSink::new(&admin, &input).unwrap();
            let started = Instant::now();
            let step = RATE / 20;
            for first in (0..N).step_by(step as usize) {
                let records = (first..(first + step).min(N))
                    .map(|i| Record {
                        key: Some(i.to_string().into_bytes()),
                        payload: Some(format!(r#"{{"id":{i},"temp":{}.0}}"#, i % 100).into_bytes()),
                        timestamp_ms: None,
                    })
                    .collect();
                sink.send(records).await.unwrap();
                sink.flush().await.unwrap();
                produced.store((first + step).min(N), std::sync::atomic::Ordering::SeqCst);
                let due = Duration::from_millis((first + step) as u64 * 1000 / RATE as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        })
    };

    let service = unique("svc");
    let mut reader = KafkaSource::subscribe(
        &broker.config(&unique("check")),
        &output,
        OffsetReset::Earliest,
    )
    .unwrap();
    let mut seen = BTreeMap::new();
    let mut eddy = start_eddy(&sql, &service);
    // Let it catch up with the producer (past the backlog of its start-up), then kill it
    // without warning.
    let started = Instant::now();
    let caught_up = |seen: &BTreeMap<i64, u32>| {
        seen.len() as i64 >= produced.load(std::sync::atomic::Ordering::SeqCst) - RATE / 10
    };
    // Caught up for a second: several commits have happened at the steady rate.
    let mut steady_since: Option<Instant> = None;
    while steady_since.is_none_or(|t| t.elapsed() < Duration::from_secs(1)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "first eddy wrote only {} rows",
            seen.len()
        );
        drain(&mut reader, &mut seen, Duration::from_millis(50)).await;
        if seen.len() < 8_000 || !caught_up(&seen) {
            steady_since = None;
        } else if steady_since.is_none() {
            steady_since = Some(Instant::now());
        }
    }
    eddy.kill().unwrap();
    let first = eddy.wait_with_output().unwrap();
    let status = first.status;
    if std::env::var_os("EDDY_TEST_VERBOSE").is_some() {
        eprintln!("first eddy:\n{}", String::from_utf8_lossy(&first.stderr));
    }
    let before_kill = seen.len();
    assert!((before_kill as i64) < N, "the kill must land mid-stream");

    let mut eddy = start_eddy(&sql, &service);
    producer.await.unwrap();
    let started = Instant::now();
    while seen.len() < N as usize {
        if started.elapsed() > Duration::from_secs(90) {
            eddy.kill().ok();
            let out = eddy.wait_with_output().unwrap();
            panic!(
                "after restart: {} of {N} ids; eddy stderr:\n{}",
                seen.len(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drain(&mut reader, &mut seen, Duration::from_millis(200)).await;
    }
    // Anything still in flight arrives within a few commit intervals.
    drain(&mut reader, &mut seen, Duration::from_millis(1000)).await;
    eddy.kill().unwrap();
    eddy.wait().unwrap();

    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>(),
        "no event is missing"
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    // Duplicates are the events read after the last commit before the kill: at most one
    // commit interval of input, plus one poll's worth that was in flight.
    let bound = (RATE * COMMIT_MS / 1000) as u32 + RATE as u32 / 20 * 2;
    println!("killed {status} after {before_kill} rows; {duplicates} duplicates (bound {bound})");
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, more than one commit interval ({bound})"
    );
    std::fs::remove_dir_all(&dir).ok();
}
