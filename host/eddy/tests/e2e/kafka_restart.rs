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
pub(crate) const COMMIT_MS: i64 = 200;

fn start_eddy(sql: &std::path::Path, service: &str) -> Child {
    start_eddy_with(sql, service, &["--no-state"])
}

pub(crate) fn start_eddy_with(sql: &std::path::Path, service: &str, extra: &[&str]) -> Child {
    start_eddy_in(sql, service, extra, &[])
}

/// [`start_eddy_with`], with `env` set for the process.
fn start_eddy_in(
    sql: &std::path::Path,
    service: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> Child {
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
        .args(extra)
        .arg(sql)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let producer = {
        let admin = admin.clone();
        let input = input.clone();
        let produced = produced.clone();
        let go = go.clone();
        tokio::spawn(async move {
            let mut sink = KafkaSink::new(&admin, &input).unwrap();
            let mut started = Instant::now();
            let step = RATE / 20;
            for first in (0..N).step_by(step as usize) {
                if first == step {
                    // The rest waits until eddy is up, however slowly it started.
                    go.notified().await;
                    started = Instant::now() - Duration::from_millis((step * 1000 / RATE) as u64);
                }
                let records = (first..(first + step).min(N))
                    .map(|i| Record {
                        key: Some(i.to_string().into_bytes()),
                        payload: Some(format!(r#"{{"id":{i},"temp":{}.0}}"#, i % 100).into_bytes()),
                        timestamp_ms: None,
                        partition: None,
                        upstream: None,
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
        if !seen.is_empty() {
            go.notify_one();
        }
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

/// Produces `events` (key, JSON value) to `topic` at `rate` per second, publishing how many are
/// out in `produced`. After the first `rate / 20` events it waits for `go`, so a slow start-up
/// cannot let the stream end before the process under test is up.
pub(crate) fn produce_at(
    topic: String,
    events: Vec<(String, String)>,
    rate: usize,
    produced: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    go: std::sync::Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let admin = shared().config("admin");
        let mut sink = KafkaSink::new(&admin, &topic).unwrap();
        let mut started = Instant::now();
        let step = rate / 20;
        for (i, chunk) in events.chunks(step).enumerate() {
            if i == 1 {
                go.notified().await;
                started = Instant::now() - Duration::from_millis((step * 1000 / rate) as u64);
            }
            let records = chunk
                .iter()
                .map(|(k, v)| Record {
                    key: Some(k.clone().into_bytes()),
                    payload: Some(v.clone().into_bytes()),
                    timestamp_ms: None,
                    partition: None,
                    upstream: None,
                })
                .collect();
            sink.send(records).await.unwrap();
            sink.flush().await.unwrap();
            let done = (i * step + chunk.len()).min(events.len());
            produced.store(done, std::sync::atomic::Ordering::SeqCst);
            let due = Duration::from_millis((done * 1000 / rate) as u64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    })
}

/// The latest value of each key of a table's topic (what a compacted topic keeps), read until
/// `done` says the values are complete or 90 s pass.
pub(crate) async fn latest_per_key(
    topic: &str,
    done: impl Fn(&BTreeMap<Vec<u8>, serde_json::Value>) -> bool,
) -> BTreeMap<Vec<u8>, serde_json::Value> {
    latest_per_key_within(topic, done, Duration::from_secs(90)).await
}

/// How long [`latest_per_key_within`] reads before it reads a topic again from the start.
const REREAD: Duration = Duration::from_secs(20);

/// [`latest_per_key`], reading for at most `limit`.
async fn latest_per_key_within(
    topic: &str,
    done: impl Fn(&BTreeMap<Vec<u8>, serde_json::Value>) -> bool,
    limit: Duration,
) -> BTreeMap<Vec<u8>, serde_json::Value> {
    let broker = shared();
    let subscribe = || {
        KafkaSource::subscribe(
            &broker.config(&unique("check")),
            topic,
            OffsetReset::Earliest,
        )
        .unwrap()
    };
    let mut reader = subscribe();
    let mut latest = BTreeMap::new();
    let started = Instant::now();
    let mut since = Instant::now();
    while !done(&latest) && started.elapsed() < limit {
        // Several processes write these topics at once, and tansu can show a batch's offsets
        // before the batch: a reader may pass over one for good. Read again from the start.
        if since.elapsed() > REREAD {
            reader = subscribe();
            latest.clear();
            since = Instant::now();
        }
        for m in reader
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap()
        {
            let value = serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
            latest.insert(m.key.unwrap_or_default(), value);
        }
    }
    latest
}

/// Per key, a count and a sum.
pub(crate) type Counts = BTreeMap<Vec<u8>, (i64, i64)>;

/// Per key, the count and sum of events `0..events` (car `i % cars`, value `i % 7`, 20 ms
/// apart): over all time, and per minute (the key followed by the window start, as a windowed
/// table's record key is).
pub(crate) fn expected_counts(events: usize, cars: usize) -> (Counts, Counts) {
    let (mut totals, mut minutes) = (Counts::new(), Counts::new());
    for i in 0..events {
        let car = format!("car{}", i % cars).into_bytes();
        let t = totals.entry(car.clone()).or_default();
        t.0 += 1;
        t.1 += (i % 7) as i64;
        let mut windowed = car;
        windowed.extend_from_slice(&((i as i64 * 20) / 60_000 * 60_000).to_be_bytes());
        let m = minutes.entry(windowed).or_default();
        m.0 += 1;
        m.1 += (i % 7) as i64;
    }
    (totals, minutes)
}

/// Whether a table's latest values (`latest_per_key`) hold `expected`'s counts: what
/// [`latest_per_key`] waits for.
pub(crate) fn complete(
    expected: &Counts,
) -> impl Fn(&BTreeMap<Vec<u8>, serde_json::Value>) -> bool {
    let expected = expected.clone();
    move |latest| {
        expected
            .iter()
            .all(|(k, (n, _))| latest.get(k).and_then(|v| v["N"].as_i64()) == Some(*n))
    }
}

/// Asserts that the latest `N` and `S` of every key are `expected`'s, and no other key came;
/// the message lists the keys that differ (a windowed key shown as `car@start`).
pub(crate) fn assert_counts(
    what: &str,
    got: &BTreeMap<Vec<u8>, serde_json::Value>,
    expected: &Counts,
    stderr: &str,
) {
    let got: Counts = got
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v["N"].as_i64().unwrap_or(-1), v["S"].as_i64().unwrap_or(-1)),
            )
        })
        .collect();
    // A window start's high bytes are zero; a car's name has none.
    let windowed = expected.keys().any(|k| k.contains(&0));
    let show = |k: &Vec<u8>| match k.len().checked_sub(8) {
        Some(at) if windowed => format!(
            "{}@{}",
            String::from_utf8_lossy(&k[..at]),
            i64::from_be_bytes(k[at..].try_into().unwrap())
        ),
        _ => String::from_utf8_lossy(k).into_owned(),
    };
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("{}: got {:?}, expected {v:?}", show(k), got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !expected.contains_key(*k))
                .map(|k| format!("{}: unexpected", show(k))),
        )
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} keys wrong:\n{}\neddy stderr:\n{stderr}",
        wrong.len(),
        expected.len(),
        wrong.join("\n")
    );
}

/// Where a test's `eddy` keeps its checkpoints.
enum StateAt {
    /// A local directory.
    Dir(std::path::PathBuf),
    /// A bucket of an S3-compatible server, under a prefix.
    S3(crate::s3::Moto),
}

impl StateAt {
    /// `--state-dir`'s value.
    fn arg(&self) -> String {
        match self {
            StateAt::Dir(dir) => dir.display().to_string(),
            StateAt::S3(moto) => format!("s3://{}/checkpoints", moto.bucket),
        }
    }

    /// The environment `eddy` needs to reach it.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            StateAt::Dir(_) => Vec::new(),
            StateAt::S3(moto) => moto.env(),
        }
    }

    /// Per query of `service`, how many partitions have checkpoints.
    async fn checkpointed(&self, service: &str) -> Vec<usize> {
        match self {
            StateAt::Dir(dir) => std::fs::read_dir(dir.join(service))
                .map(|d| {
                    d.map(|q| std::fs::read_dir(q.unwrap().path()).unwrap().count())
                        .collect()
                })
                .unwrap_or_default(),
            StateAt::S3(moto) => {
                use futures::TryStreamExt;
                use object_store::ObjectStore;
                let prefix = object_store::path::Path::from(format!("checkpoints/{service}"));
                let listed: Vec<_> = moto
                    .store()
                    .list(Some(&prefix))
                    .try_collect()
                    .await
                    .unwrap();
                // checkpoints/<service>/<query>/<partition>/<n>.ckpt
                let mut partitions: BTreeMap<String, std::collections::BTreeSet<String>> =
                    BTreeMap::new();
                for object in listed {
                    let parts: Vec<String> = object
                        .location
                        .parts()
                        .map(|p| p.as_ref().to_string())
                        .collect();
                    partitions
                        .entry(parts[2].clone())
                        .or_default()
                        .insert(parts[3].clone());
                }
                partitions.values().map(|p| p.len()).collect()
            }
        }
    }
}

/// Exact state across `kill -9`: two aggregations (one windowed) checkpoint their state with
/// the offsets it reflects; the restarted process restores both and resumes at those offsets,
/// so the final counts and sums equal an uninterrupted run's, key by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_aggregations_restore_their_state_exactly() {
    let dir = std::env::temp_dir().join(unique("eddy-ckpt-state"));
    killed_aggregations_restore_exactly(StateAt::Dir(dir.clone())).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The same with the checkpoints in an S3-compatible store (`--state-dir s3://…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_aggregations_restore_their_state_from_s3_exactly() {
    killed_aggregations_restore_exactly(StateAt::S3(crate::s3::Moto::start("eddy-state"))).await;
}

async fn killed_aggregations_restore_exactly(state: StateAt) {
    const EVENTS: usize = 30_000;
    const CARS: usize = 20;
    let broker = shared();
    let admin = broker.config("admin");
    let (input, totals, minutes) = (unique("ckpt-in"), unique("ckpt-totals"), unique("ckpt-min"));
    ensure_topic(&admin, &input, 3).await.unwrap();
    let dir = std::env::temp_dir().join(unique("eddy-ckpt"));
    std::fs::create_dir_all(&dir).unwrap();
    let sql = dir.join("aggregations.sql");
    std::fs::write(
        &sql,
        format!(
            "CREATE STREAM readings (car VARCHAR, v BIGINT, ts BIGINT) WITH (kafka_topic='{input}', value_format='JSON', timestamp='ts');\n\
             CREATE TABLE totals WITH (kafka_topic='{totals}') AS SELECT car, COUNT(*) AS n, SUM(v) AS s FROM readings GROUP BY car;\n\
             CREATE TABLE minutes WITH (kafka_topic='{minutes}') AS SELECT car, COUNT(*) AS n, SUM(v) AS s FROM readings WINDOW TUMBLING (SIZE 60 SECONDS, GRACE PERIOD 20 MINUTES) GROUP BY car;\n"
        ),
    )
    .unwrap();
    // Event i: car i % CARS, value i % 7, 20 ms of event time apart (so 3,000 per minute).
    // Partitions are read unevenly after the restart (one may be at minute 9 while another is
    // at minute 3): the grace period covers all 10 minutes, so no event is late.
    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            let car = format!("car{}", i % CARS);
            let value = format!(r#"{{"car":"{car}","v":{},"ts":{}}}"#, i % 7, i * 20);
            (car, value)
        })
        .collect();
    let (expected_totals, expected_minutes) = expected_counts(EVENTS, CARS);

    let produced = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let producer = produce_at(input.clone(), events, 5_000, produced.clone(), go.clone());
    let service = unique("svc");
    let state_arg = state.arg();
    let extra = ["--state-dir", state_arg.as_str()];
    let env = state.env();
    let mut eddy = start_eddy_in(&sql, &service, &extra, &env);
    // The stream goes on once both queries have checkpointed; kill eddy once a third of the
    // events are out and it has checkpointed a few more times.
    let started = Instant::now();
    while state
        .checkpointed(&service)
        .await
        .iter()
        .filter(|&&n| n > 0)
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoints within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    go.notify_one();
    while produced.load(std::sync::atomic::Ordering::SeqCst) < EVENTS / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the producer stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(3 * COMMIT_MS as u64)).await;
    eddy.kill().unwrap();
    eddy.wait().unwrap();
    // One directory of checkpoints per query; `car` is not the topic's key, so each query reads
    // a repartition topic of the input's 3 partitions, with a directory per partition.
    let queries = state.checkpointed(&service).await;
    assert_eq!(queries, [3, 3], "checkpoints kept before the kill");

    assert!(
        produced.load(std::sync::atomic::Ordering::SeqCst) < EVENTS,
        "the kill must land mid-stream"
    );

    let mut eddy = start_eddy_in(&sql, &service, &extra, &env);
    producer.await.unwrap();
    let got_totals = latest_per_key(&totals, complete(&expected_totals)).await;
    let got_minutes = latest_per_key(&minutes, complete(&expected_minutes)).await;
    eddy.kill().unwrap();
    let out = eddy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_counts("totals", &got_totals, &expected_totals, &stderr);
    assert_counts("per minute", &got_minutes, &expected_minutes, &stderr);
    // The restart resumed from checkpointed offsets, not from a replay: the query's consumer
    // group committed past what it read (without checkpoints an aggregation's commits stay at
    // the first event its state needs, here the very first).
    let mut group = KafkaSource::subscribe(
        &broker.config(&format!("{service}-CTAS_TOTALS_0")),
        &input,
        OffsetReset::Earliest,
    )
    .unwrap();
    let mut unread = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        unread += group
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap()
            .len();
    }
    assert!(
        unread < EVENTS / 10,
        "{unread} events left uncommitted by the totals query"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A table read from a topic comes back with its rows after a restart, from its checkpoint:
/// its consumer group had committed past them, so without one it would come back empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_read_from_a_topic_survives_a_restart() {
    use crate::server::{read_query, Server};
    use serde_json::{json, Value};
    let broker = shared();
    let admin = broker.config("admin");
    let topic = unique("users");
    ensure_topic(&admin, &topic, 1).await.unwrap();
    let mut sink = KafkaSink::new(&admin, &topic).unwrap();
    let records = [("u1", "Ann"), ("u2", "Bob"), ("u3", "Cy"), ("u1", "Ada")]
        .iter()
        .map(|(key, name)| Record {
            key: Some(key.as_bytes().to_vec()),
            payload: Some(format!(r#"{{"NAME":"{name}"}}"#).into_bytes()),
            timestamp_ms: None,
            partition: None,
            upstream: None,
        })
        .collect();
    sink.send(records).await.unwrap();
    sink.flush().await.unwrap();
    let state = std::env::temp_dir().join(unique("eddy-table-state"));
    let state_arg = state.display().to_string();
    let mut args = vec![
        "--bootstrap-servers".to_string(),
        broker.bootstrap(),
        "--state-dir".to_string(),
        state_arg,
    ];
    // The test broker's timeouts: the restarted member joins the group at once.
    for (k, v) in &admin.extra {
        args.extend(["--kafka-property".to_string(), format!("{k}={v}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let create = format!(
        "CREATE TABLE users (user_id VARCHAR PRIMARY KEY, name VARCHAR) \
         WITH (kafka_topic='{topic}', key_format='KAFKA', value_format='JSON');"
    );
    let rows = |server: &Server| {
        let request = server
            .http
            .post(server.url("/query"))
            .body(
                json!({"ksql": "SELECT user_id, name FROM users;", "streamsProperties": {}})
                    .to_string(),
            )
            .send();
        async move {
            let mut rows: Vec<Value> = read_query(request.await.unwrap())
                .await
                .into_iter()
                .filter_map(|m| m.get("row").map(|r| r["columns"].clone()))
                .collect();
            rows.sort_by_key(|r| r.to_string());
            rows
        }
    };
    let expected = json!([["u1", "Ada"], ["u2", "Bob"], ["u3", "Cy"]]);

    let server = Server::start(&args);
    server.ksql(&create).await;
    let started = Instant::now();
    while Value::Array(rows(&server).await) != expected {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the table never held {expected}: {:?}",
            rows(&server).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A commit interval (100 ms here) later the checkpoint holds all of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.terminate();

    let server = Server::start(&args);
    server.ksql(&create).await;
    assert_eq!(
        Value::Array(rows(&server).await),
        expected,
        "the restored table, before it read anything"
    );
    // And it reads on from where the checkpoint left off.
    let mut sink = KafkaSink::new(&admin, &topic).unwrap();
    sink.send(vec![Record {
        key: Some(b"u4".to_vec()),
        payload: Some(br#"{"NAME":"Dee"}"#.to_vec()),
        timestamp_ms: None,
        partition: None,
        upstream: None,
    }])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    let expected = json!([["u1", "Ada"], ["u2", "Bob"], ["u3", "Cy"], ["u4", "Dee"]]);
    let started = Instant::now();
    while Value::Array(rows(&server).await) != expected {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "after the restart, never {expected}: {:?}",
            rows(&server).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(&state).ok();
}

/// Over MQTT the broker's session is the log: `eddy run` is killed mid-stream and started
/// again; it restores its checkpoint, and the messages it had read after that checkpoint, never
/// acknowledged, come again from its persistent session, as do those published while it was
/// down. The final counts and sums equal an uninterrupted run's, key by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_aggregation_over_mqtt_restores_its_state_exactly() {
    // Few events: QoS 1 deliveries wait for acks, which wait for checkpoints, and mosquitto
    // sends at most 20 unacknowledged messages to a client.
    const EVENTS: usize = 2_000;
    const CARS: usize = 10;
    let mosquitto = eddy_tests::mqtt::shared();
    let (topic, totals) = (unique("ckpt-mqtt"), unique("ckpt-mqtt-totals"));
    let dir = std::env::temp_dir().join(unique("eddy-ckpt-mqtt"));
    std::fs::create_dir_all(&dir).unwrap();
    let state_dir = dir.join("state");
    let sql = dir.join("mqtt.sql");
    std::fs::write(
        &sql,
        format!(
            "CREATE STREAM readings (car VARCHAR, v BIGINT) WITH (mqtt_topic='{topic}/#', mqtt_broker='{}', mqtt_qos=1);\n\
             CREATE TABLE totals WITH (kafka_topic='{totals}') AS SELECT car, COUNT(*) AS n, SUM(v) AS s FROM readings GROUP BY car;\n",
            mosquitto.url()
        ),
    )
    .unwrap();
    let payload = |i: usize| format!(r#"{{"car":"car{}","v":{}}}"#, i % CARS, i % 7).into_bytes();
    let mut expected: BTreeMap<Vec<u8>, (i64, i64)> = BTreeMap::new();
    for i in 0..EVENTS {
        let e = expected
            .entry(format!("car{}", i % CARS).into_bytes())
            .or_default();
        e.0 += 1;
        e.1 += (i % 7) as i64;
    }
    let service = unique("svc");
    let state_arg = state_dir.display().to_string();
    let extra = ["--state-dir", state_arg.as_str()];
    let checkpoints = || {
        std::fs::read_dir(state_dir.join(&service))
            .map(|d| {
                d.map(|q| std::fs::read_dir(q.unwrap().path()).unwrap().count())
                    .sum::<usize>()
            })
            .unwrap_or(0)
    };
    let mut eddy = start_eddy_with(&sql, &service, &extra);
    // Publishes reach the query's session once it has subscribed: wait for its client.
    let client = format!(" as {service}-CTAS_TOTALS_0 ");
    let started = Instant::now();
    while !mosquitto.log().contains(&client) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the query did not connect to mosquitto within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its SUBSCRIBE follows the CONNECT at once; the query starts only once it is acknowledged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first third goes in, and eddy is killed once it has checkpointed, with the rest of
    // the stream still to come.
    let mut published = 0;
    while checkpoints() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint within 60 s"
        );
        if published < EVENTS / 3 {
            let batch: Vec<Vec<u8>> = (published..published + 100).map(payload).collect();
            eddy_tests::mqtt::publish(&mosquitto.url(), &format!("{topic}/a"), &batch, 1).await;
            published += 100;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let batch: Vec<Vec<u8>> = (published..EVENTS / 2).map(payload).collect();
    eddy_tests::mqtt::publish(&mosquitto.url(), &format!("{topic}/b"), &batch, 1).await;
    // Killed halfway between two checkpoints: MQTT has no offsets, so a kill between writing a
    // checkpoint and the broker receiving its acks would count those messages twice (the
    // README says so); this test is about everything else a kill may interrupt.
    let newest = || {
        std::fs::read_dir(state_dir.join(&service))
            .into_iter()
            .flatten()
            .flat_map(|q| std::fs::read_dir(q.unwrap().path()).unwrap())
            .map(|f| f.unwrap().file_name())
            .max()
    };
    let before = newest();
    while newest() == before {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no new checkpoint within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(COMMIT_MS as u64 / 2)).await;
    eddy.kill().unwrap();
    eddy.wait().unwrap();
    // Published while eddy is down: the broker keeps them for the query's session.
    let batch: Vec<Vec<u8>> = (EVENTS / 2..EVENTS).map(payload).collect();
    eddy_tests::mqtt::publish(&mosquitto.url(), &format!("{topic}/c"), &batch, 1).await;

    let mut eddy = start_eddy_with(&sql, &service, &extra);
    latest_per_key(&totals, |latest| {
        expected
            .iter()
            .all(|(k, (n, _))| latest.get(k).and_then(|v| v["N"].as_i64()) == Some(*n))
    })
    .await;
    // Then the whole topic, after ten more commit intervals: a message counted twice would show
    // in a later row.
    tokio::time::sleep(Duration::from_millis(10 * COMMIT_MS as u64)).await;
    let got = latest_per_key_within(&totals, |_| false, Duration::from_secs(3)).await;
    eddy.kill().unwrap();
    let out = eddy.wait_with_output().unwrap();
    let got: BTreeMap<Vec<u8>, (i64, i64)> = got
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v["N"].as_i64().unwrap_or(-1), v["S"].as_i64().unwrap_or(-1)),
            )
        })
        .collect();
    assert_eq!(
        got,
        expected,
        "eddy stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
