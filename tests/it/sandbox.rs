//! What a guest can reach and how much it can say: its output and logs are bounded per call and
//! land in the host log; clocks stand still for immutable functions, and sleeps cannot outlast
//! a call's time limit.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use std::time::{Duration, Instant};

use eddy_sql::{Output, Session};
use sha2::{Digest, Sha256};

async fn session_with_evil(with: &str) -> Session {
    eddy_tests::session_with("noisy", "evil", with).await
}

async fn doubles(session: &mut Session, sql: &str) -> Vec<f64> {
    eddy_tests::rows(session, sql)
        .await
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Float64Type>();
            assert_eq!(c.null_count(), 0);
            c.values().to_vec()
        })
        .collect()
}

/// Log lines containing every one of `parts`.
fn log_lines(logs: &str, parts: &[&str]) -> Vec<String> {
    logs.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

/// How log lines name `function` of `evil.wasm`: `udf="function@<version>"`.
fn evil_udf_field(function: &str) -> String {
    let bytes = std::fs::read(eddy_tests::component("evil")).unwrap();
    let hash = hex::encode(Sha256::digest(bytes));
    format!("udf=\"{function}@{}\"", &hash[..12])
}

/// The message of an `eddy::udf` log line, without timestamp, level, target and fields.
fn message<'a>(line: &'a str, fields: &str) -> &'a str {
    let start = line.find("eddy::udf: ").expect("an eddy::udf line") + "eddy::udf: ".len();
    let end = line
        .rfind(&format!(" {fields}"))
        .expect("the fields follow");
    &line[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_is_cut_at_64_kib_per_call_and_logged() {
    eddy_tests::logs();
    let mut session = session_with_evil("").await;
    // One batch, one call: 2 rows × 10,000 lines.
    let rows = doubles(
        &mut session,
        "SELECT noisy(x) FROM (VALUES (1.25), (2.25)) AS t(x)",
    )
    .await;
    assert_eq!(rows, [1.25, 2.25]);

    let written: String = [1.25, 2.25]
        .iter()
        .flat_map(|x| {
            (0..10_000).map(move |i| {
                format!("noisy line {i} for {x}: the host must bound this, not store it all\n")
            })
        })
        .collect();
    let kept = &written[..64 << 10];
    let udf = evil_udf_field("noisy");
    let logs = eddy_tests::logs();
    let logged: Vec<String> = log_lines(&logs, &["guest output: noisy line", &udf])
        .iter()
        .map(|l| message(l, &udf).to_string())
        .collect();
    let expected: Vec<String> = kept.lines().map(|l| format!("guest output: {l}")).collect();
    assert_eq!(logged, expected, "every line kept is logged, nothing more");
    let dropped = log_lines(&logs, &["guest output over the limit was dropped", &udf]);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].ends_with(&format!("{udf} dropped={}", written.len() - kept.len())),
        "{}",
        dropped[0]
    );

    // The session goes on, and so does the instance, with an empty buffer.
    assert_eq!(
        doubles(&mut session, "SELECT panic_if_negative(0.5)").await,
        [0.5]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_log_lines_caps_host_log_lines_per_call() {
    eddy_tests::logs();
    let mut session = session_with_evil("WITH (max_log_lines = '3')").await;
    // One partition of batches of 10: the calls come in order.
    for set in ["batch_size = 10", "target_partitions = 1"] {
        session
            .execute(&format!("SET datafusion.execution.{set}"))
            .await
            .unwrap();
    }
    // 12 rows: a batch of 10, then one of 2, each call with a fresh budget of 3.
    let rows = doubles(
        &mut session,
        "SELECT chatty(CAST(event_id + 7001 AS DOUBLE)) FROM car_sensor(12, 1)",
    )
    .await;
    assert_eq!(rows, (7001..=7012).map(f64::from).collect::<Vec<_>>());

    let udf = evil_udf_field("chatty");
    let logs = eddy_tests::logs();
    let said: Vec<String> = log_lines(&logs, &["chatty saw 70", &udf])
        .iter()
        .map(|l| message(l, &udf).to_string())
        .collect();
    assert_eq!(
        said,
        [
            "chatty saw 7001",
            "chatty saw 7002",
            "chatty saw 7003",
            "chatty saw 7011",
            "chatty saw 7012"
        ]
    );
    let dropped = log_lines(&logs, &["log lines over the limit were dropped", &udf]);
    assert_eq!(
        dropped.iter().map(|l| message(l, &udf)).collect::<Vec<_>>(),
        ["log lines over the limit were dropped"],
        "only the first call lost lines"
    );
    assert!(
        dropped[0].ends_with(&format!("{udf} dropped=7 max_log_lines=3")),
        "{}",
        dropped[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_guests_see_a_stopped_clock_and_volatile_ones_the_real_clock() {
    // `evil` declares every function immutable: its instances get a clock stopped at the Unix
    // epoch, so a "pure" function cannot return the time.
    let mut session = session_with_evil("").await;
    let guest_ms = |out: Output| {
        let Output::Rows { batches, .. } = out else {
            panic!("expected rows")
        };
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    let out = session
        .execute("SELECT wall_clock_ms(x) FROM (VALUES (1)) AS t(x)")
        .await
        .unwrap();
    assert_eq!(guest_ms(out), 0);

    // `clock` declares its function volatile: the host's real clock.
    let mut session = eddy_tests::session_with("now_ms", "clock", "").await;
    let millis = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = millis();
    let out = session
        .execute("SELECT now_ms(x) FROM (VALUES (1)) AS t(x)")
        .await
        .unwrap();
    let after = millis();
    let guest = guest_ms(out);
    assert!(
        before <= guest && guest <= after,
        "{before} <= {guest} <= {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_asking_to_sleep_past_its_time_limit_fails_at_once() {
    // Epoch interruption stops wasm code, not a host call, so a `std::thread::sleep` past the
    // deadline would hold the thread for all of it; the host refuses such a wait up front.
    let mut session = session_with_evil("WITH (timeout = '100ms')").await;
    let started = Instant::now();
    let err = session
        .execute("SELECT sleepy(x) FROM (VALUES (1500)) AS t(x)")
        .await
        .unwrap_err()
        .to_string();
    let elapsed = started.elapsed();
    assert_eq!(
        err,
        "Execution error: UDF 'sleepy' exceeded its time limit of 100ms per batch: \
         it asked to sleep 1.5s, past its deadline"
    );
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");

    let Output::Rows { batches, .. } = session
        .execute("SELECT sleepy(x) FROM (VALUES (20)) AS t(x)")
        .await
        .unwrap()
    else {
        panic!("expected rows")
    };
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().values(),
        &[20]
    );
}
