//! State that moves with its partitions: processes of one `--service-id` split a topic, a third
//! joins, one is killed; every partition's state goes where the group sends it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_kafka::ensure_topic;
use eddy_tests::kafka::{shared, unique};

use crate::kafka_restart::{
    assert_counts, complete, expected_counts, latest_per_key, produce_at, start_eddy_with,
    COMMIT_MS,
};
use crate::reaped::Reaped;

/// Two `eddy run` processes share a 4-partition topic under one service id; a third joins a
/// third of the way through the stream and the first is killed (`kill -9`) two thirds of the way.
/// Two aggregations are keyed as the topic is, so each partition's groups and windows live in
/// its own checkpoints and move with it; the third groups by a value column, so its rows go
/// through a repartition topic first, whose partitions move the same way. The final counts and
/// sums of every key, windowed and not, repartitioned and not, equal the events produced,
/// exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_moves_with_partitions_between_processes() {
    const EVENTS: usize = 30_000;
    const CARS: usize = 40;
    let broker = shared();
    let admin = broker.config("admin");
    let (input, totals, minutes) = (unique("move-in"), unique("move-totals"), unique("move-min"));
    let kinds = unique("move-kinds");
    ensure_topic(&admin, &input, 4).await.unwrap();
    let dir = std::env::temp_dir().join(unique("eddy-move"));
    std::fs::create_dir_all(&dir).unwrap();
    let state_dir = dir.join("state");
    let sql = dir.join("aggregations.sql");
    std::fs::write(
        &sql,
        format!(
            "CREATE STREAM readings (car VARCHAR KEY, v BIGINT, ts BIGINT, kind VARCHAR) WITH (kafka_topic='{input}', key_format='KAFKA', value_format='JSON', timestamp='ts');\n\
             CREATE TABLE totals WITH (kafka_topic='{totals}') AS SELECT car, COUNT(*) AS n, SUM(v) AS s FROM readings GROUP BY car;\n\
             CREATE TABLE minutes WITH (kafka_topic='{minutes}') AS SELECT car, COUNT(*) AS n, SUM(v) AS s FROM readings WINDOW TUMBLING (SIZE 60 SECONDS, GRACE PERIOD 20 MINUTES) GROUP BY car;\n\
             CREATE TABLE kinds WITH (kafka_topic='{kinds}') AS SELECT kind, COUNT(*) AS n, SUM(v) AS s FROM readings GROUP BY kind;\n"
        ),
    )
    .unwrap();
    // Event i: car i % CARS, value i % 7, kind i % 11, 20 ms of event time apart.
    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            let value = format!(r#"{{"v":{},"ts":{},"kind":"k{}"}}"#, i % 7, i * 20, i % 11);
            (format!("car{}", i % CARS), value)
        })
        .collect();
    let (expected_totals, expected_minutes) = expected_counts(EVENTS, CARS);
    let mut expected_kinds = crate::kafka_restart::Counts::new();
    for i in 0..EVENTS {
        let kind = expected_kinds
            .entry(format!("k{}", i % 11).into_bytes())
            .or_default();
        kind.0 += 1;
        kind.1 += (i % 7) as i64;
    }

    let produced = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(tokio::sync::Notify::new());
    let producer = produce_at(input.clone(), events, 3_000, produced.clone(), go.clone());
    let service = unique("svc");
    let state_arg = state_dir.display().to_string();
    let extra = ["--state-dir", state_arg.as_str()];
    let mut a = Reaped::new(start_eddy_with(&sql, &service, &extra));
    let mut b = Reaped::new(start_eddy_with(&sql, &service, &extra));
    // Each query checkpoints each partition it holds under its own directory.
    let partitions_checkpointed = || -> usize {
        std::fs::read_dir(state_dir.join(&service))
            .map(|queries| {
                queries
                    .map(|q| {
                        std::fs::read_dir(q.unwrap().path())
                            .unwrap()
                            .filter(|p| {
                                let p = p.as_ref().unwrap().path();
                                p.is_dir() && std::fs::read_dir(p).unwrap().count() > 0
                            })
                            .count()
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    let started = Instant::now();
    while partitions_checkpointed() < 12 {
        if started.elapsed() > Duration::from_secs(60) {
            let out = a.output();
            panic!(
                "{} of 12 partitions checkpointed within 60 s; eddy stderr:\n{}",
                partitions_checkpointed(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    go.notify_one();
    let wait_for = |n: usize| {
        let produced = produced.clone();
        async move {
            while produced.load(Ordering::SeqCst) < n {
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "the producer stalled"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(EVENTS / 3).await;
    let mut c = Reaped::new(start_eddy_with(&sql, &service, &extra));
    wait_for(2 * EVENTS / 3).await;
    tokio::time::sleep(Duration::from_millis(3 * COMMIT_MS as u64)).await;
    a.output();
    assert!(
        produced.load(Ordering::SeqCst) < EVENTS,
        "the kill must land mid-stream"
    );
    producer.await.unwrap();

    let got_totals = latest_per_key(&totals, complete(&expected_totals)).await;
    let got_minutes = latest_per_key(&minutes, complete(&expected_minutes)).await;
    let got_kinds = latest_per_key(&kinds, complete(&expected_kinds)).await;
    let mut stderr = String::new();
    for p in [&mut b, &mut c] {
        let out = p.output();
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert_counts("totals", &got_totals, &expected_totals, &stderr);
    assert_counts("per minute", &got_minutes, &expected_minutes, &stderr);
    assert_counts(
        "per kind, repartitioned",
        &got_kinds,
        &expected_kinds,
        &stderr,
    );
    std::fs::remove_dir_all(&dir).ok();
}
