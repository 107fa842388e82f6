//! `eddy server` against a hostile client: SQL that reaches for host files or the server's
//! settings is refused, pull queries are bounded in time and memory, and one slow client holds
//! up nobody else. Each attack runs against a real server process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::Server;

/// A fresh directory under the target dir, removed first if a previous run left it.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/e2e-security")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// `POST /query-stream` in the delimited format: every line of the answer, parsed.
async fn query_stream(server: &Server, sql: &str, properties: Value) -> (u16, Vec<Value>) {
    let response = server
        .http
        .post(server.url("/query-stream"))
        .body(json!({"sql": sql, "properties": properties}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (status, lines)
}

fn refused(body: &Value, message: &str) {
    assert_eq!(body["@type"], "statement_error", "{body:#}");
    assert_eq!(body["error_code"], 40300, "{body:#}");
    assert_eq!(body["message"], message, "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_rest_reaches_no_host_files_settings_or_crate_builds() {
    let udf_dir = scratch("udf-dir");
    // A crate inside the UDF directory: building it would run its build.rs outside the sandbox.
    let krate = udf_dir.join("evilcrate");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"evilcrate\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(krate.join("build.rs"), "fn main() {}\n").unwrap();
    std::fs::write(krate.join("src/lib.rs"), "").unwrap();
    let server = Server::start(&["--udf-dir", udf_dir.to_str().unwrap()]);

    let (status, body) = server
        .ksql_status(
            "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd';",
        )
        .await;
    assert_eq!(status, 403);
    refused(
        &body,
        "CREATE EXTERNAL TABLE reads or writes host files and is not allowed over the network \
         (the server's operator can allow one directory with --allow-files DIR)",
    );
    // Nothing was registered: the name is unknown.
    let (status, lines) = query_stream(&server, "SELECT * FROM pw;", json!({})).await;
    assert_eq!(status, 400, "{lines:?}");

    let target = udf_dir.join("written.csv");
    let (status, body) = server
        .ksql_status(&format!(
            "COPY (SELECT 'x' AS a) TO '{}' STORED AS CSV;",
            target.display()
        ))
        .await;
    assert_eq!(status, 403);
    refused(
        &body,
        "COPY reads or writes host files and is not allowed over the network \
         (the server's operator can allow one directory with --allow-files DIR)",
    );
    assert!(!target.exists());

    let (status, body) = server
        .ksql_status("SET datafusion.execution.batch_size = 1;")
        .await;
    assert_eq!(status, 403);
    refused(
        &body,
        "SET changes DataFusion settings for every client of this server and is not allowed \
         over the network; send per-request properties (\"streamsProperties\") instead",
    );

    let (status, body) = server
        .ksql_status(&format!("CREATE FUNCTION evil FROM '{}';", krate.display()))
        .await;
    assert_eq!(status, 403);
    refused(
        &body,
        &format!(
            "'{}' is a crate directory: building one runs its build scripts outside the \
             sandbox and is not allowed over the network; build it with `eddy udf build` and \
             load the .wasm component",
            krate.display()
        ),
    );
    assert!(!krate.join("target").exists(), "no build ran");

    // The server still serves, and plain queries still work.
    server.healthy().await;
    let (status, lines) = query_stream(&server, "SELECT 1 + 1 AS two;", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(lines[1], json!([2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_files_confines_file_access_to_one_directory() {
    let dir = scratch("allowed");
    std::fs::write(dir.join("cars.csv"), "id,name\n1,alpha\n2,beta\n").unwrap();
    let server = Server::start(&["--allow-files", dir.to_str().unwrap()]);

    server
        .ksql(&format!(
            "CREATE EXTERNAL TABLE cars (id INT, name VARCHAR) STORED AS CSV LOCATION '{}' \
             OPTIONS ('format.has_header' 'true');",
            dir.join("cars.csv").display()
        ))
        .await;
    let (status, lines) =
        query_stream(&server, "SELECT id, name FROM cars ORDER BY id;", json!({})).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines[1..], [json!([1, "alpha"]), json!([2, "beta"])]);

    server
        .ksql(&format!(
            "COPY (SELECT 7 AS n) TO '{}' STORED AS CSV;",
            dir.join("out.csv").display()
        ))
        .await;
    assert_eq!(
        std::fs::read_to_string(dir.join("out.csv")).unwrap(),
        "n\n7\n"
    );

    for (sql, location) in [
        (
            "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd';",
            "/etc/passwd".to_string(),
        ),
        (
            &*format!(
                "CREATE EXTERNAL TABLE up (line VARCHAR) STORED AS CSV LOCATION '{}/../x.csv';",
                dir.display()
            ),
            format!("{}/../x.csv", dir.display()),
        ),
    ] {
        let (status, body) = server.ksql_status(sql).await;
        assert_eq!(status, 403, "{sql}");
        let what = "CREATE EXTERNAL TABLE";
        refused(
            &body,
            &format!(
                "{what}: '{location}' is outside the directory this server allows files in ({})",
                dir.display()
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_pull_query_streams_and_is_cancelled_at_its_time_limit() {
    let server = Server::start(&["--query-timeout", "3s"]);
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss(server.pid());
    let started = Instant::now();
    let mut response = server
        .http
        .post(server.url("/query-stream"))
        .body(json!({"sql": "SELECT * FROM car_sensor(100000000);"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Rows arrive while the query runs: the first chunk comes long before the limit.
    let mut text = String::new();
    let mut first_row_after = None;
    let mut peak = before;
    let mut served_meanwhile = false;
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if first_row_after.is_none() && text.matches('\n').count() >= 2 {
            first_row_after = Some(started.elapsed());
            // Another client is served while the query streams.
            let shown = server.ksql("SHOW STREAMS;").await;
            served_meanwhile = shown[0]["@type"] == "streams";
        }
        peak = peak.max(rss(server.pid()));
    }
    let lines: Vec<&str> = text.lines().collect();
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        last,
        json!({
            "@type": "generic_error",
            "error_code": 50000,
            "message": "Resources exhausted: the query ran past its time limit of 3s (--query-timeout) and was cancelled",
        })
    );
    assert!(lines.len() > 100, "rows streamed before the limit");
    assert!(first_row_after.unwrap() < Duration::from_secs(3));
    assert!(served_meanwhile);
    // Collected whole, three seconds of rows took ~300 MiB; streamed, they pass through.
    assert!(
        peak - before < 100 << 20,
        "RSS grew by {} MiB",
        (peak - before) >> 20
    );
    server.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_query_over_its_memory_budget_fails_and_spills_nothing() {
    let server = Server::start(&["--query-memory", "8MB"]);
    let (status, lines) = query_stream(
        &server,
        "SELECT * FROM car_sensor(200000) ORDER BY speed;",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let last = lines.last().unwrap();
    assert_eq!(last["@type"], "generic_error", "{last}");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Resources exhausted: the query needs more than its memory budget of 8 MiB \
             (--query-memory): "
        ),
        "{message}"
    );
    // Small queries still run.
    let (_, lines) = query_stream(
        &server,
        "SELECT COUNT(*) AS n FROM car_sensor(1000);",
        json!({}),
    )
    .await;
    assert_eq!(lines[1], json!([1000]));
}

/// `eddy_udf_calls_total` of `function`, over every version.
async fn udf_calls(server: &Server, function: &str) -> f64 {
    server
        .metrics()
        .await
        .samples
        .iter()
        .filter(|s| {
            s.metric == "eddy_udf_calls_total" && s.labels.get("function") == Some(function)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A UDF directory holding only the `evil` component: a server loads its whole `--udf-dir` at
/// start, and the others (the anomaly model above all) take minutes to compile in a debug build.
fn evil_only(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let evil = dir.join("evil.wasm");
    std::fs::copy(eddy_tests::component("evil"), &evil).unwrap();
    (dir, evil)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_query_holds_up_no_other_client() {
    let (dir, evil) = evil_only("slow-udf");
    let server = Arc::new(Server::start(&["--udf-dir", dir.to_str().unwrap()]));
    server
        .ksql(&format!(
            "CREATE FUNCTION sleepy FROM '{}' WITH (timeout = '10s');\
             CREATE STREAM s (id INT); INSERT INTO s (id) VALUES (1), (2);",
            evil.display()
        ))
        .await;
    let order = Arc::new(AtomicUsize::new(0));
    let slow = {
        let (server, order) = (server.clone(), order.clone());
        tokio::spawn(async move {
            let (status, lines) =
                query_stream(&server, "SELECT sleepy(4000) AS slept;", json!({})).await;
            (order.fetch_add(1, Ordering::SeqCst), status, lines)
        })
    };
    // The slow query is inside its UDF call once the call is counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while udf_calls(&server, "sleepy").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the slow query never called sleepy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown = server.ksql("SHOW STREAMS;").await;
    let show_done = order.fetch_add(1, Ordering::SeqCst);
    let (_, pulled) = query_stream(&server, "SELECT id FROM s ORDER BY id;", json!({})).await;
    let pull_done = order.fetch_add(1, Ordering::SeqCst);
    let (slow_done, status, lines) = slow.await.unwrap();

    assert_eq!(shown[0]["streams"][0]["name"], "S");
    assert_eq!(pulled[1..], [json!([1]), json!([2])]);
    assert_eq!(status, 200);
    assert_eq!(lines[1], json!([4000]));
    assert_eq!((show_done, pull_done, slow_done), (0, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_udf_call_runs_once_while_planning() {
    let (dir, evil) = evil_only("constant-udf");
    let server = Server::start(&["--udf-dir", dir.to_str().unwrap()]);
    server
        .ksql(&format!(
            "CREATE FUNCTION spin FROM '{}' WITH (timeout = '1s');",
            evil.display()
        ))
        .await;
    // Planning leaves the failing call unfolded; running it ends the stream with the error.
    let (status, lines) = query_stream(&server, "SELECT spin(1.0);", json!({})).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(
        lines.last().unwrap()["message"],
        "Execution error: UDF 'spin' exceeded its time limit of 1s per batch"
    );
    // DataFusion folds a constant call once per optimizer pass, and execution calls it again:
    // the guest ran once for all of them.
    assert_eq!(udf_calls(&server, "spin").await, 1.0);
}

/// `--query-timeout` bounds a UDF call already running: the call stops at the query's deadline,
/// not at its own (much longer) `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udf_call_stops_at_its_querys_time_limit() {
    let (dir, evil) = evil_only("query-deadline");
    let server = Server::start(&["--udf-dir", dir.to_str().unwrap(), "--query-timeout", "2s"]);
    server
        .ksql(&format!(
            "CREATE FUNCTION spin FROM '{}' WITH (timeout = '600s');\
             CREATE STREAM s (x DOUBLE); INSERT INTO s (x) VALUES (1.0);",
            evil.display()
        ))
        .await;
    let (status, lines) = query_stream(&server, "SELECT spin(x) FROM s;", json!({})).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(
        lines.last().unwrap()["message"],
        "Resources exhausted: the query ran past its time limit of 2s (--query-timeout) and was cancelled"
    );
    assert_eq!(udf_calls(&server, "spin").await, 1.0);
    // The server goes on serving.
    let shown = server.ksql("SHOW STREAMS;").await;
    assert_eq!(shown[0]["streams"][0]["name"], "S");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_query_whose_client_left_is_gone_from_show_queries() {
    let server = Server::start(&[]);
    server.ksql("CREATE STREAM idle (id INT);").await;
    let transient = |body: &Value| {
        body[0]["queries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["queryType"] == "PUSH")
            .count()
    };
    let mut response = server
        .http
        .post(server.url("/query-stream"))
        .body(json!({"sql": "SELECT * FROM idle EMIT CHANGES;"}).to_string())
        .send()
        .await
        .unwrap();
    let header = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&header).contains("queryId"));
    assert_eq!(transient(&server.ksql("SHOW QUERIES;").await), 1);
    // The client leaves; the stream never gets a row.
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = transient(&server.ksql("SHOW QUERIES;").await);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the push query stayed RUNNING after its client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_apply_to_their_own_request_only() {
    let server = Server::start(&[]);
    server
        .ksql("CREATE STREAM p (id INT); INSERT INTO p (id) VALUES (1), (2);")
        .await;
    // Per request: this push query reads from the beginning.
    let (_, lines) = query_stream(
        &server,
        "SELECT id FROM p EMIT CHANGES LIMIT 2;",
        json!({"auto.offset.reset": "earliest"}),
    )
    .await;
    assert_eq!(lines[1..], [json!([1]), json!([2])]);
    // A SET in one request does not reach the next one, from this client or another.
    let set = server.ksql("SET 'auto.offset.reset' = 'earliest';").await;
    assert_eq!(set[0]["commandStatus"]["status"], "SUCCESS");
    let latest = {
        let server = &server;
        async move { query_stream(server, "SELECT id FROM p EMIT CHANGES LIMIT 1;", json!({})).await }
    };
    let insert = async {
        // Once the push query is running, a new row arrives.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let queries = server.ksql("SHOW QUERIES;").await;
            if !queries[0]["queries"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the push query never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.ksql("INSERT INTO p (id) VALUES (3);").await;
    };
    let ((_, lines), ()) = tokio::join!(latest, insert);
    assert_eq!(lines[1..], [json!([3])]);
}
