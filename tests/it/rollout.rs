//! Safe rollout: a shadow version beside the serving one, promote and rollback under a running
//! query, and capture files of failing calls replayed on the same and on a fixed version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float64Type;
use eddy_sql::{Output, Session};
use eddy_udf_host::{Capture, CaptureConfig, ShadowReport};

use crate::hot_swap::{batch_version, tag_component, tags};

/// `(property, value)` rows of `DESCRIBE FUNCTION name EXTENDED`.
async fn extended(session: &mut Session, name: &str) -> BTreeMap<String, String> {
    let batches = eddy_tests::rows(session, &format!("DESCRIBE FUNCTION {name} EXTENDED")).await;
    let b = &batches[0];
    let keys = b.column(0).as_string::<i32>();
    let values = b.column(1).as_string::<i32>();
    (0..b.num_rows())
        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
        .collect()
}

/// The shadow's report once it has run every batch offered so far.
fn settled_report(session: &Session, name: &str) -> ShadowReport {
    let shadow = session.functions()[name].shadow().expect("a shadow");
    assert!(
        shadow.wait_idle(Duration::from_secs(30)),
        "the shadow never caught up"
    );
    shadow.report()
}

/// `(shadow, previous)` columns of `SHOW FUNCTIONS` for `name`.
async fn shown_versions(session: &mut Session, name: &str) -> (Option<String>, Option<String>) {
    let batches = eddy_tests::rows(session, "SHOW FUNCTIONS").await;
    let b = &batches[0];
    let names = b.column(0).as_string::<i32>();
    let row = (0..b.num_rows()).find(|&i| names.value(i) == name).unwrap();
    let text = |col: usize| {
        let c = b.column(col).as_string::<i32>();
        c.is_valid(row).then(|| c.value(row).to_string())
    };
    (text(9), text(10))
}

fn short(hash: &str) -> String {
    hash[..12].to_string()
}

fn shadow_sql(path: &std::path::Path, options: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION tag FROM '{}' WITH (shadow = true{options})",
        path.display()
    )
}

/// Each continuous query's rows are compared and counted under its own id; a pull query's
/// rows count in the totals only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_counts_each_continuous_query_apart() {
    let mut engine =
        eddy_stream::Engine::new(eddy_tests::session(), eddy_stream::EngineConfig::default());
    for sql in [
        format!("CREATE FUNCTION tag FROM '{}'", tag_component(1).display()),
        shadow_sql(&tag_component(2), ""),
        "CREATE STREAM ids (id BIGINT)".into(),
        "CREATE STREAM tagged AS SELECT tag(id) AS t FROM ids".into(),
        "CREATE STREAM even AS SELECT tag(id) AS t FROM ids WHERE id % 2 = 0".into(),
        // The NULL row agrees (both versions give NULL); the others differ (v1:n, v2:n).
        "INSERT INTO ids (id) VALUES (1), (2), (3), (4), (NULL)".into(),
    ] {
        engine.execute(&sql).await.unwrap();
    }
    // A pull query waits until the running queries have taken in the inserted rows.
    let eddy_stream::Output::Rows { batches, .. } = engine
        .execute("SELECT tag(id) FROM ids WHERE id = 3")
        .await
        .unwrap()
    else {
        panic!("rows expected")
    };
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let report = settled_report(engine.session(), "tag");
    let per_query: Vec<(&str, u64, u64)> = report
        .per_query
        .iter()
        .map(|(id, c)| (id.as_str(), c.rows, c.differing))
        .collect();
    assert_eq!(per_query, [("CSAS_EVEN_1", 2, 2), ("CSAS_TAGGED_0", 5, 4)]);
    assert_eq!((report.rows_compared, report.rows_differing), (8, 7));
    let described = extended(engine.session(), "tag").await;
    for (key, value) in [
        ("shadow_rows_compared", "8"),
        ("shadow_rows_compared CSAS_TAGGED_0", "5"),
        ("shadow_rows_differing CSAS_TAGGED_0", "4"),
        ("shadow_rows_compared CSAS_EVEN_1", "2"),
        ("shadow_rows_differing CSAS_EVEN_1", "2"),
    ] {
        assert_eq!(described.get(key).map(String::as_str), Some(value), "{key}");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_counts_exactly_the_rows_that_differ_and_never_serves() {
    let mut session = eddy_tests::session_with("tag", "tag_v1", "").await;
    for setting in [
        "SET datafusion.execution.batch_size = 500",
        "SET datafusion.execution.target_partitions = 1",
    ] {
        session.execute(setting).await.unwrap();
    }
    let v1 = session.functions()["tag"].component();
    session
        .execute(&shadow_sql(&tag_component(2), ", shadow_keep = 3"))
        .await
        .unwrap();
    // Every third argument is NULL: both versions give NULL there, so those rows agree; every
    // other row is `v1:<id>` against `v2:<id>`.
    let query = "SELECT tag(CASE WHEN event_id % 3 = 0 THEN NULL ELSE event_id END) FROM car_sensor(3000, 1)";
    let served = tags_with_nulls(&mut session, query).await;
    assert_eq!(served.len(), 3000);
    assert!(
        served.iter().flatten().all(|t| t.starts_with("v1:")),
        "only the serving version's results are used"
    );
    let report = settled_report(&session, "tag");
    assert_eq!(report.rows_compared, 3000);
    assert_eq!(report.rows_differing, 2000);
    assert_eq!(report.rows_skipped + report.rows_not_sampled, 0);
    assert_eq!(report.last_error, None);
    let kept: Vec<String> = report.differences.iter().map(|d| d.display()).collect();
    assert_eq!(
        kept,
        [
            "event_id=1: serving v1:1, shadow v2:1",
            "event_id=2: serving v1:2, shadow v2:2",
            "event_id=4: serving v1:4, shadow v2:4",
        ]
    );

    let described = extended(&mut session, "tag").await;
    let v2 = session.functions()["tag"]
        .shadow()
        .unwrap()
        .component
        .clone();
    for (key, value) in [
        ("version", v1.hash.as_str()),
        ("calls", "6"),
        ("rows", "3000"),
        ("previous_version", "none"),
        ("shadow_version", v2.hash.as_str()),
        ("shadow_sample", "100%"),
        ("shadow_rows_compared", "3000"),
        ("shadow_rows_differing", "2000"),
        ("shadow_calls", "6"),
        ("shadow_rows", "3000"),
        ("shadow_traps", "0"),
        ("shadow_last_error", "none"),
        (
            "shadow_difference_3",
            "event_id=4: serving v1:4, shadow v2:4",
        ),
    ] {
        assert_eq!(described.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(!described.contains_key("shadow_difference_4"));
    assert_eq!(
        shown_versions(&mut session, "tag").await,
        (Some(short(&v2.hash)), None)
    );

    // Half the batches: the sample bounds what the shadow costs. Loading it again starts over.
    session
        .execute(&shadow_sql(&tag_component(2), ", shadow_sample = '0.5'"))
        .await
        .unwrap();
    tags_with_nulls(&mut session, query).await;
    let report = settled_report(&session, "tag");
    assert_eq!(
        (
            report.rows_compared,
            report.rows_not_sampled,
            report.rows_differing
        ),
        (1500, 1500, 1000)
    );
    let err = eddy_tests::error(
        &mut session,
        &format!(
            "CREATE OR REPLACE FUNCTION tag FROM '{}' WITH (shadow = true)",
            tag_component(1).display()
        ),
    )
    .await;
    assert_eq!(
        err,
        format!(
            "{} is version {}, the one serving 'tag': a shadow must be another version",
            tag_component(1).display(),
            short(&v1.hash)
        )
    );
}

async fn tags_with_nulls(session: &mut Session, sql: &str) -> Vec<Option<String>> {
    eddy_tests::rows(session, sql)
        .await
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|t| t.map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_switch_versions_and_keep_the_previous_one_loaded() {
    let mut session = eddy_tests::session_with("tag", "tag_v1", "").await;
    let query = "SELECT tag(event_id) FROM car_sensor(2, 1)";
    let v1 = short(&session.functions()["tag"].component().hash);
    assert_eq!(
        eddy_tests::error(&mut session, "ALTER FUNCTION tag PROMOTE").await,
        "function 'tag' has no shadow to promote; load one with CREATE OR REPLACE FUNCTION tag \
         FROM '…' WITH (shadow = true)"
    );
    assert_eq!(
        eddy_tests::error(&mut session, "ALTER FUNCTION tag ROLLBACK").await,
        "function 'tag' has no previous version to roll back to"
    );
    session
        .execute(&shadow_sql(&tag_component(2), ""))
        .await
        .unwrap();
    let v2 = short(&session.functions()["tag"].shadow().unwrap().component.hash);
    let promoted = session.execute("ALTER FUNCTION tag PROMOTE").await.unwrap();
    assert!(
        matches!(&promoted, Output::Message(m) if m.starts_with(&format!("Promoted tag to version {v2} from "))),
        "{promoted:?}"
    );
    assert_eq!(tags(&mut session, query).await, ["v2:0", "v2:1"]);
    assert_eq!(
        shown_versions(&mut session, "tag").await,
        (None, Some(v1.clone()))
    );

    session
        .execute("ALTER FUNCTION tag ROLLBACK")
        .await
        .unwrap();
    assert_eq!(tags(&mut session, query).await, ["v1:0", "v1:1"]);
    assert_eq!(
        shown_versions(&mut session, "tag").await,
        (None, Some(v2.clone()))
    );
    // Like `kubectl rollout undo`: a second rollback undoes the first.
    session
        .execute("alter function TAG rollback;")
        .await
        .unwrap();
    assert_eq!(tags(&mut session, query).await, ["v2:0", "v2:1"]);
    assert_eq!(
        eddy_tests::error(&mut session, "ALTER FUNCTION tag DROP SHADOW").await,
        "function 'tag' has no shadow"
    );
    // Each version kept its own counters through all of it.
    let calls: Vec<u64> = session.functions()["tag"]
        .version_stats()
        .iter()
        .map(|(_, s)| s.calls.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert_eq!(calls, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_reach_a_continuous_query_without_losing_or_repeating_events() {
    const N: usize = 60_000;
    let mut engine =
        eddy_stream::Engine::new(eddy_tests::session(), eddy_stream::EngineConfig::default());
    engine
        .execute(&format!(
            "CREATE FUNCTION tag FROM '{}'",
            tag_component(1).display()
        ))
        .await
        .unwrap();
    engine
        .execute(&format!(
            "CREATE STREAM g WITH (generator='car_sensor', rate=30000, seed=3, max_events={N})"
        ))
        .await
        .unwrap();
    engine
        .execute("CREATE STREAM tagged AS SELECT event_id, tag(event_id) AS t FROM g")
        .await
        .unwrap();
    // v1 → shadow v2, PROMOTE (v2) → ROLLBACK (v1) → ROLLBACK (v2) → ROLLBACK (v1) → …
    let mut swaps = 0;
    while engine.queries()[0].events_in < N as u64 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        let statement = if swaps % 4 == 0 {
            engine
                .execute(&shadow_sql(&tag_component(2), ""))
                .await
                .unwrap();
            "ALTER FUNCTION tag PROMOTE"
        } else {
            "ALTER FUNCTION tag ROLLBACK"
        };
        engine.execute(statement).await.unwrap();
        swaps += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.queries()[0].rows_out < N as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batches: Vec<RecordBatch> = match engine
        .execute("SELECT event_id, t FROM tagged ORDER BY event_id")
        .await
        .unwrap()
    {
        eddy_stream::Output::Rows { batches, .. } => batches,
        _ => unreachable!(),
    };
    let mut seen = vec![0u32; N];
    let mut versions = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            versions.push(batch_version(&batch.slice(row, 1), &mut seen));
        }
    }
    let missing = seen.iter().filter(|&&n| n == 0).count();
    let repeated = seen.iter().filter(|&&n| n > 1).count();
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "every event exactly once, of {} rows",
        versions.len()
    );
    // Each promote or rollback changes the version at most once, between two events.
    let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(swaps >= 3, "the stream outlived only {swaps} swaps");
    assert!(
        (1..=swaps).contains(&changes),
        "{changes} version changes for {swaps} promotes and rollbacks"
    );
    assert_eq!(versions[0], 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_traps_or_loops_never_disturbs_the_serving_version() {
    let fixed = eddy_tests::component("evil_fixed");
    let evil = eddy_tests::component("evil");
    let mut session = eddy_tests::session();
    session
        .execute(&format!(
            "CREATE FUNCTION panic_if_negative FROM '{}'",
            fixed.display()
        ))
        .await
        .unwrap();
    session
        .execute(&format!(
            "CREATE OR REPLACE FUNCTION panic_if_negative FROM '{}' WITH (shadow = true)",
            evil.display()
        ))
        .await
        .unwrap();
    let out = eddy_tests::rows(
        &mut session,
        "SELECT panic_if_negative(x) FROM (VALUES (1.5), (-2.0), (3.0)) AS t(x)",
    )
    .await;
    let values: Vec<f64> = out[0]
        .column(0)
        .as_primitive::<Float64Type>()
        .values()
        .to_vec();
    assert_eq!(values, [1.5, 0.0, 3.0]);
    let report = settled_report(&session, "panic_if_negative");
    assert_eq!((report.rows_compared, report.batches_run), (0, 1));
    let error = report.last_error.unwrap();
    assert!(
        error.starts_with("UDF 'panic_if_negative' trapped: "),
        "{error}"
    );
    assert!(error.contains("negative input -2"), "{error}");
    let f = &session.functions()["panic_if_negative"];
    assert_eq!(
        f.shadow()
            .unwrap()
            .stats()
            .traps
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        f.stats().traps.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // A shadow that never returns: each sampled batch costs it its time limit, on its own
    // thread; the query neither waits for it nor sees it.
    session
        .execute(&format!(
            "CREATE OR REPLACE FUNCTION spin FROM '{}' WITH (shadow = true, timeout = '300ms')",
            evil.display()
        ))
        .await
        .unwrap();
    session
        .execute("SET datafusion.execution.batch_size = 1000")
        .await
        .unwrap();
    let started = Instant::now();
    let out = eddy_tests::rows(
        &mut session,
        "SELECT sum(spin(speed)) = sum(speed) FROM car_sensor(20000, 1)",
    )
    .await;
    let took = started.elapsed();
    assert!(out[0].column(0).as_boolean().value(0));
    // Run one after another, the 20 batches would take 6 s of shadow time limits.
    assert!(took < Duration::from_secs(5), "the query took {took:?}");
    let report = settled_report(&session, "spin");
    let stats = session.functions()["spin"].shadow().unwrap().stats();
    let hits = stats.limit_hits(eddy_udf_host::LimitKind::Time);
    assert_eq!(report.rows_compared, 0);
    assert_eq!(hits, report.batches_run);
    assert_eq!(report.rows_skipped, 20_000 - 1000 * report.batches_run);
    assert!(report
        .last_error
        .unwrap()
        .starts_with("UDF 'spin' exceeded its time limit of 300ms per batch"),);
}

/// A session whose components capture failing calls into a fresh directory.
fn capturing_session(name: &str, max_files: usize) -> (Session, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(eddy_tests::kafka::unique(name));
    let runtime = eddy_tests::runtime()
        .with_captures(CaptureConfig {
            dir: dir.clone(),
            max_files,
            max_bytes: 1 << 20,
        })
        .unwrap();
    (Session::new(runtime), dir)
}

fn captures_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_captured_and_replays_to_the_same_error_and_clean_on_the_fix() {
    let (mut session, dir) = capturing_session("eddy-capture", 10);
    let evil = eddy_tests::component("evil");
    session
        .execute(&format!(
            "CREATE FUNCTION panic_if_negative FROM '{}' WITH (timeout = '200ms', max_memory = '40MB')",
            evil.display()
        ))
        .await
        .unwrap();
    let err = eddy_tests::error(
        &mut session,
        "SELECT panic_if_negative(x) FROM (VALUES (1.5), (-2.0)) AS t(x)",
    )
    .await;
    let files = captures_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let capture = Capture::read(&files[0]).unwrap();
    assert_eq!(capture.outcome.kind, "trap");
    assert!(err.contains(&capture.outcome.message), "{err}");
    assert_eq!(capture.function, "panic_if_negative");
    assert_eq!(capture.role, "serving");
    assert_eq!(
        capture.version,
        session.functions()["panic_if_negative"].component().hash
    );
    assert_eq!(capture.source, evil.display().to_string());
    assert_eq!(capture.limits.timeout, Duration::from_millis(200));
    assert_eq!(capture.limits.max_memory, 40 << 20);
    assert!(capture.deterministic);
    assert_eq!(
        capture.clock,
        "stopped: wall clock at the Unix epoch, monotonic clock at 0"
    );
    assert_eq!(capture.batch.num_rows(), 2);

    // The same version, under the captured limits: the same error, word for word.
    let runtime = eddy_tests::runtime();
    let same = runtime
        .load_file_with_limits(&capture.source, capture.limits.clone())
        .unwrap();
    let replayed = eddy_udf_host::replay(&capture, &same).unwrap();
    assert_eq!(replayed.outcome, capture.outcome);
    // The fixed version: clean, with its result.
    let fixed = runtime
        .load_file_with_limits(eddy_tests::component("evil_fixed"), capture.limits.clone())
        .unwrap();
    let replayed = eddy_udf_host::replay(&capture, &fixed).unwrap();
    assert_eq!(replayed.outcome.to_string(), "ok: 2 rows, no errors");
    let result = replayed.result.unwrap();
    assert_eq!(result.as_primitive::<Float64Type>().values(), &[1.5, 0.0]);

    // A time limit and a memory limit are captured, and replay, the same way.
    for (sql, kind) in [
        ("SELECT spin(x) FROM (VALUES (1.0)) AS t(x)", "time"),
        ("SELECT hog(x) FROM (VALUES (1.0)) AS t(x)", "memory"),
    ] {
        let err = eddy_tests::error(&mut session, sql).await;
        let newest = captures_in(&dir)
            .into_iter()
            .map(|f| Capture::read(&f).unwrap())
            .max_by_key(|c| c.captured_at_ms)
            .unwrap();
        assert_eq!(newest.outcome.kind, kind, "{err}");
        assert!(err.contains(&newest.outcome.message), "{err}");
        let replayed = eddy_udf_host::replay(&newest, &same).unwrap();
        assert_eq!(replayed.outcome, newest.outcome);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_errors_are_captured_and_captures_stop_at_their_bound() {
    let (mut session, dir) = capturing_session("eddy-capture-bound", 2);
    session
        .execute(&format!(
            "CREATE FUNCTION car_number FROM '{}'",
            eddy_tests::component("text").display()
        ))
        .await
        .unwrap();
    for _ in 0..4 {
        session
            .execute("SELECT car_number(c) FROM (VALUES ('car-7'), ('x')) AS t(c)")
            .await
            .unwrap();
    }
    let files = captures_in(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let capture = Capture::read(&files[0]).unwrap();
    assert_eq!(capture.outcome.kind, "row_errors");
    assert!(
        capture
            .outcome
            .message
            .starts_with("UDF 'car_number': 1 of 2 rows failed; first, row 1: "),
        "{}",
        capture.outcome.message
    );
    let stats = session.runtime().capture_stats().unwrap();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((count(&stats.written), count(&stats.dropped)), (2, 2));
    let component = session.functions()["car_number"].component();
    assert_eq!(
        eddy_udf_host::replay(&capture, &component).unwrap().outcome,
        capture.outcome
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_errors_on_every_batch_leave_room_for_the_trap_that_matters() {
    let (mut session, dir) = capturing_session("eddy-capture-share", 100);
    for (function, guest) in [("car_number", "text"), ("panic_if_negative", "evil")] {
        session
            .execute(&format!(
                "CREATE FUNCTION {function} FROM '{}'",
                eddy_tests::component(guest).display()
            ))
            .await
            .unwrap();
    }
    for _ in 0..12 {
        session
            .execute("SELECT car_number(c) FROM (VALUES ('x')) AS t(c)")
            .await
            .unwrap();
    }
    // Ten captures per version and kind of outcome; the rest are counted.
    assert_eq!(captures_in(&dir).len(), 10);
    eddy_tests::error(
        &mut session,
        "SELECT panic_if_negative(x) FROM (VALUES (-1.0)) AS t(x)",
    )
    .await;
    let kinds: Vec<String> = captures_in(&dir)
        .iter()
        .map(|f| Capture::read(f).unwrap().outcome.kind)
        .collect();
    assert_eq!(kinds.len(), 11);
    assert_eq!(kinds.iter().filter(|k| *k == "trap").count(), 1);
    let stats = session.runtime().capture_stats().unwrap();
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
