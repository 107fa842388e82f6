//! `eddy server` as a ksqlDB client sees it: a real process on a free port, driven over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `eddy server`, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    pub(crate) addr: String,
    pub(crate) http: reqwest::Client,
    /// The rest of its stdout, after the line with the HTTP address.
    stdout: BufReader<ChildStdout>,
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Server {
        Server::spawn(extra, None)
    }

    /// Like [`Server::start`], under `ulimit -n open_files` (soft and hard).
    pub(crate) fn start_limited(extra: &[&str], open_files: u64) -> Server {
        Server::spawn(extra, Some(open_files))
    }

    fn spawn(extra: &[&str], open_files: Option<u64>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and only reads the struct passed in.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env(
                "EDDY_CACHE_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/eddy-test-cache"),
            )
            // Servers of one run share the service id "eddy": each gets its own state.
            .env(
                "EDDY_STATE_DIR",
                std::env::temp_dir().join(eddy_tests::kafka::unique("eddy-state")),
            )
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--commit-interval-ms",
                "100",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting eddy server");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout
            .read_line(&mut line)
            .expect("reading the listen line");
        let base = line
            .trim()
            .strip_prefix("eddy server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let addr = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        Server {
            child,
            base,
            addr,
            http: reqwest::Client::new(),
            stdout,
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the server prints on stdout.
    pub(crate) fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading stdout");
        line
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn ksql_status(&self, ksql: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/ksql"))
            .header(
                "Content-Type",
                "application/vnd.ksql.v1+json; charset=utf-8",
            )
            .body(json!({"ksql": ksql, "streamsProperties": {}}).to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Runs statements that must succeed; returns the entities.
    pub(crate) async fn ksql(&self, ksql: &str) -> Value {
        let (status, body) = self.ksql_status(ksql).await;
        assert_eq!(status, 200, "{ksql}: {body:#}");
        body
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// `GET /metrics`, parsed by a Prometheus text-format parser.
    pub(crate) async fn metrics(&self) -> prometheus_parse::Scrape {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
    }

    pub(crate) async fn healthy(&self) {
        let (status, body) = self.get("/healthcheck").await;
        assert_eq!(status, 200, "{body}");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn terminate(mut self) -> Duration {
        let started = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "eddy server exited with {status}");
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "eddy server did not stop within 20s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces values that change from run to run.
pub(crate) fn mask(mut value: Value, keys: &[&str]) -> Value {
    fn walk(v: &mut Value, keys: &[&str]) {
        match v {
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    if keys.contains(&k.as_str()) && !item.is_null() {
                        *item = json!("<masked>");
                    } else {
                        walk(item, keys);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, keys)),
            _ => {}
        }
    }
    walk(&mut value, keys);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_in_ksqldb_shapes() {
    let server = Server::start(&[]);
    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    assert_eq!(
        mask(serde_json::from_str(&info).unwrap(), &["version"]),
        json!({"KsqlServerInfo": {"version": "<masked>", "kafkaClusterId": "none",
            "ksqlServiceId": "eddy", "serverStatus": "RUNNING"}})
    );
    let (status, health) = server.get("/healthcheck").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health).unwrap(),
        json!({"isHealthy": true, "details": {"metastore": {"isHealthy": true},
            "kafka": {"isHealthy": true}}})
    );

    let created = server
        .ksql("CREATE STREAM readings (car_id VARCHAR KEY, temp DOUBLE); CREATE STREAM hot AS SELECT car_id, temp FROM readings WHERE temp > 90;")
        .await;
    assert_eq!(
        mask(created, &["message", "queryId"]),
        json!([
            {"@type": "currentStatus", "statementText": "CREATE STREAM readings (car_id VARCHAR KEY, temp DOUBLE);",
             "commandId": "stream/`READINGS`/create",
             "commandStatus": {"status": "SUCCESS", "message": "<masked>", "queryId": null},
             "commandSequenceNumber": -1, "warnings": []},
            {"@type": "currentStatus", "statementText": "CREATE STREAM hot AS SELECT car_id, temp FROM readings WHERE temp > 90;",
             "commandId": "stream/`HOT`/create",
             "commandStatus": {"status": "SUCCESS", "message": "<masked>", "queryId": "<masked>"},
             "commandSequenceNumber": -1, "warnings": []},
        ])
    );
    let streams = server.ksql("SHOW STREAMS;").await;
    assert_eq!(
        streams,
        json!([{"@type": "streams", "statementText": "SHOW STREAMS;", "warnings": [], "streams": [
            {"type": "STREAM", "name": "HOT", "topic": "", "keyFormat": "KAFKA", "valueFormat": "JSON", "isWindowed": false},
            {"type": "STREAM", "name": "READINGS", "topic": "", "keyFormat": "KAFKA", "valueFormat": "JSON", "isWindowed": false},
        ]}])
    );
    let queries = server.ksql("SHOW QUERIES;").await;
    let id = queries[0]["queries"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        mask(queries, &["id", "queryString"]),
        json!([{"@type": "queries", "statementText": "SHOW QUERIES;", "warnings": [], "queries": [
            {"queryString": "<masked>", "sinks": ["HOT"], "sinkKafkaTopics": ["HOT"], "id": "<masked>",
             "statusCount": {"RUNNING": 1}, "queryType": "PERSISTENT", "state": "RUNNING"}]}])
    );
    let described = server.ksql("DESCRIBE readings EXTENDED;").await;
    assert_eq!(
        mask(described, &["statement", "queryString", "id"]),
        json!([{"@type": "sourceDescription", "statementText": "DESCRIBE readings EXTENDED;", "warnings": [],
            "sourceDescription": {
                "name": "READINGS", "windowType": null,
                "readQueries": [{"queryString": "<masked>", "sinks": ["HOT"], "sinkKafkaTopics": ["HOT"],
                    "id": "<masked>", "statusCount": {"RUNNING": 1}, "queryType": "PERSISTENT", "state": "RUNNING"}],
                "writeQueries": [],
                "fields": [
                    {"name": "CAR_ID", "schema": {"type": "STRING", "fields": null, "memberSchema": null}, "type": "KEY"},
                    {"name": "TEMP", "schema": {"type": "DOUBLE", "fields": null, "memberSchema": null}},
                ],
                "type": "STREAM", "timestamp": "", "statistics": "", "errorStats": "", "extended": true,
                "keyFormat": "KAFKA", "valueFormat": "JSON", "topic": "", "partitions": 0, "replication": 0,
                "statement": "<masked>", "sourceConstraints": []}}])
    );
    // Nested types: a STRUCT lists its fields, an ARRAY or MAP its member, a DECIMAL its
    // precision and scale, as ksqlDB's DESCRIBE does.
    server
        .ksql("CREATE STREAM nested (pos STRUCT<x INT, tags MAP<VARCHAR, DOUBLE>>, grid ARRAY<ARRAY<BIGINT>>, price DECIMAL(10, 2));")
        .await;
    let described = server.ksql("DESCRIBE nested;").await;
    let plain = |t: &str| json!({"type": t, "fields": null, "memberSchema": null});
    assert_eq!(
        described[0]["sourceDescription"]["fields"],
        json!([
            {"name": "POS", "schema": {"type": "STRUCT", "memberSchema": null, "fields": [
                {"name": "X", "schema": plain("INTEGER")},
                {"name": "TAGS", "schema": {"type": "MAP", "fields": null, "memberSchema": plain("DOUBLE")}},
            ]}},
            {"name": "GRID", "schema": {"type": "ARRAY", "fields": null, "memberSchema":
                {"type": "ARRAY", "fields": null, "memberSchema": plain("BIGINT")}}},
            {"name": "PRICE", "schema": {"type": "DECIMAL", "fields": null, "memberSchema": null,
                "parameters": {"precision": 10, "scale": 2}}},
        ])
    );
    server.ksql("DROP STREAM nested;").await;
    let properties = server.ksql("SHOW PROPERTIES;").await;
    assert_eq!(properties[0]["@type"], "properties");
    assert!(properties[0]["properties"].is_array());
    let functions = server.ksql("SHOW FUNCTIONS;").await;
    assert_eq!(
        functions,
        json!([{"@type": "function_names", "statementText": "SHOW FUNCTIONS;", "functions": [], "warnings": []}])
    );

    // A pull query over /query returns and ends.
    server
        .ksql("INSERT INTO readings (car_id, temp) VALUES ('a', 95.5);")
        .await;
    let response = server
        .http
        .post(server.url("/query"))
        .body(json!({"ksql": "SELECT car_id, temp FROM hot;", "streamsProperties": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        mask(Value::Array(read_query(response).await), &["queryId"]),
        json!([{"header": {"queryId": "<masked>", "schema": "`CAR_ID` STRING, `TEMP` DOUBLE"}},
               {"row": {"columns": ["a", 95.5]}}])
    );

    let terminated = server.ksql(&format!("TERMINATE {id};")).await;
    assert_eq!(terminated[0]["@type"], "currentStatus");
    assert_eq!(terminated[0]["commandStatus"]["status"], "SUCCESS");
    let dropped = server
        .ksql("DROP STREAM hot; DROP STREAM IF EXISTS readings;")
        .await;
    assert_eq!(dropped.as_array().unwrap().len(), 2);
    assert_eq!(dropped[0]["commandId"], "stream/`HOT`/drop");
    assert_eq!(server.ksql("SHOW STREAMS;").await[0]["streams"], json!([]));

    // SIGTERM with a push query open: its response ends, queries stop, the process exits 0.
    server.ksql("CREATE STREAM last (a INT);").await;
    let open = server
        .http
        .post(server.url("/query"))
        .body(json!({"ksql": "SELECT a FROM last EMIT CHANGES;"}).to_string())
        .send()
        .await
        .unwrap();
    let stopped_in = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let tail = open.text().await.unwrap();
    assert!(
        tail.ends_with("{\"finalMessage\":\"Server shutting down\"}]\n"),
        "{tail}"
    );
    eprintln!("SIGTERM to exit: {stopped_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_entities_and_the_server_keeps_serving() {
    let token_file = std::env::temp_dir().join(format!("eddy-server-token-{}", std::process::id()));
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let server = Server::start(&[
        "--max-body-bytes",
        "1024",
        "--auth-token-file",
        token_file.to_str().unwrap(),
    ]);
    let post = |path: &str, body: String, auth: Option<&str>| {
        let mut request = server.http.post(server.url(path)).body(body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let good = Some("Bearer s3cret");
    let ksql = |sql: &str| json!({"ksql": sql, "streamsProperties": {}}).to_string();

    // Health checks need no token.
    server.healthy().await;
    let (status, body) = post("/ksql", ksql("SHOW STREAMS;"), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["@type"], "generic_error");
    assert_eq!(body["error_code"], 40100);
    let (status, body) = post("/ksql", ksql("SHOW STREAMS;"), Some("Bearer wrong")).await;
    assert_eq!((status, body["error_code"].clone()), (401, json!(40100)));
    // Basic auth, as ksql-python-ng sends it (api_key:secret), with the token as the secret.
    let (status, _) = post(
        "/ksql",
        ksql("SHOW STREAMS;"),
        Some("Basic a2V5OnMzY3JldA=="),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = post("/ksql", "{not json".into(), good).await;
    assert_eq!(status, 400);
    assert_eq!(body["@type"], "generic_error");
    assert_eq!(body["error_code"], 40000);
    assert!(
        body["message"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );

    let (status, body) = post("/ksql", ksql("FROBNICATE THE STREAMS;"), good).await;
    assert_eq!(status, 400);
    assert_eq!(body["@type"], "statement_error");
    assert_eq!(body["error_code"], 40001);
    assert_eq!(body["statementText"], "FROBNICATE THE STREAMS;");
    assert_eq!(body["entities"], json!([]));

    // A name that does not exist: 400 / 40001, as ksqlDB answers (ksql-python relies on it).
    let (status, body) = post("/ksql", ksql("DESCRIBE nothing_here;"), good).await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40001)));
    let (status, body) = post("/ksql", ksql("DROP STREAM nothing_here;"), good).await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40001)));
    assert_eq!(
        body["message"],
        "stream 'nothing_here' does not exist (SHOW STREAMS lists them)"
    );
    let (status, body) = post("/ksql", ksql("TERMINATE CSAS_NOTHING_9;"), good).await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40001)));

    let (status, body) = post(
        "/ksql",
        ksql(&format!("SHOW STREAMS; -- {}", "x".repeat(2000))),
        good,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error_code"], 41300);

    let (status, body) = post("/query", ksql("CREATE STREAM x (a INT);"), good).await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40002)));
    let (status, body) = post("/ksql", ksql("SELECT * FROM x EMIT CHANGES;"), good).await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40002)));
    // PRINT streams records: /ksql refuses it as ksqlDB does, instead of answering SUCCESS.
    let (status, body) = post("/ksql", ksql("PRINT 'x' FROM BEGINNING;"), good).await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40002)));
    assert_eq!(
        body["message"],
        "The following statement types should be issued to the websocket endpoint '/query': PRINT (send it to /query or /query-stream)"
    );

    let (status, body) = post("/close-query", json!({"queryId": "nope"}).to_string(), good).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("nope"));

    let (status, body) = post("/ws/query", "{}".into(), good).await;
    assert_eq!((status, body["error_code"].clone()), (404, json!(40400)));

    let response = server
        .http
        .get(server.url("/ksql"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], 40500);

    // Still serving.
    let (status, body) = post("/ksql", ksql("SHOW STREAMS;"), good).await;
    assert_eq!(status, 200, "{body}");
    server.healthy().await;
    let _ = std::fs::remove_file(token_file);
}

/// Reads a `/query` response until it ends; returns its items.
pub(crate) async fn read_query(response: reqwest::Response) -> Vec<Value> {
    let text = response.text().await.unwrap();
    serde_json::from_str::<Vec<Value>>(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_query_over_http_receives_exactly_the_rows_inserted() {
    let server = Server::start(&[]);
    server.ksql("CREATE STREAM s (id INT, name VARCHAR);").await;
    let response = server
        .http
        .post(server.url("/query"))
        .body(json!({"ksql": "SELECT id, name FROM s WHERE id % 2 = 0 EMIT CHANGES LIMIT 3;", "streamsProperties": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let values: Vec<String> = (1..=8).map(|i| format!("({i}, 'n{i}')")).collect();
    for chunk in values.chunks(3) {
        server
            .ksql(&format!(
                "INSERT INTO s (id, name) VALUES {};",
                chunk.join(", ")
            ))
            .await;
    }
    let items = tokio::time::timeout(Duration::from_secs(20), read_query(response))
        .await
        .expect("the push query ends at its LIMIT");
    assert_eq!(
        mask(Value::Array(items), &["queryId"]),
        json!([
            {"header": {"queryId": "<masked>", "schema": "`ID` INTEGER, `NAME` STRING"}},
            {"row": {"columns": [2, "n2"]}},
            {"row": {"columns": [4, "n4"]}},
            {"row": {"columns": [6, "n6"]}},
            {"finalMessage": "Limit Reached"},
        ])
    );

    // PRINT over /query: the stream's rows as they would be written to a topic.
    let response = server
        .http
        .post(server.url("/query"))
        .body(
            json!({"ksql": "PRINT s FROM BEGINNING LIMIT 2;", "streamsProperties": {}}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let items = tokio::time::timeout(Duration::from_secs(20), read_query(response))
        .await
        .expect("PRINT ends at its LIMIT");
    assert_eq!(
        Value::Array(items),
        json!([
            {"header": {"queryId": "PRINT_S", "schema": "`PARTITION` INTEGER, `OFFSET` BIGINT, `KEY` STRING, `VALUE` STRING"}},
            {"row": {"columns": [0, 0, null, r#"{"ID":1,"NAME":"n1"}"#]}},
            {"row": {"columns": [0, 1, null, r#"{"ID":2,"NAME":"n2"}"#]}},
            {"finalMessage": "Limit Reached"},
        ])
    );

    // /query-stream, delimited, over HTTP/1.1, from the generator.
    server
        .ksql("CREATE STREAM g WITH (generator='car_sensor', rate=2000, max_events=50);")
        .await;
    let text = tokio::time::timeout(
        Duration::from_secs(20),
        server
            .http
            .post(server.url("/query-stream"))
            .body(
                json!({"sql": "SELECT * FROM g EMIT CHANGES LIMIT 7;", "properties": {}})
                    .to_string(),
            )
            .send(),
    )
    .await
    .unwrap()
    .unwrap()
    .text()
    .await
    .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "{text}");
    let names = lines[0]["columnNames"].as_array().unwrap();
    assert!(lines[0]["queryId"].is_string());
    assert_eq!(
        lines[0]["columnTypes"].as_array().unwrap().len(),
        names.len()
    );
    assert!(lines[1..]
        .iter()
        .all(|row| row.as_array().unwrap().len() == names.len()));

    // /query-stream over cleartext HTTP/2 (prior knowledge) on the same port, as one JSON array.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(server.url("/query-stream"))
        .header("Accept", "application/json")
        .body(json!({"sql": "SELECT id, name FROM s WHERE id < 3;"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let items: Value = response.json().await.unwrap();
    assert_eq!(
        mask(items, &["queryId"]),
        json!([{"queryId": "<masked>", "columnNames": ["ID", "NAME"], "columnTypes": ["INTEGER", "STRING"]},
               [1, "n1"], [2, "n2"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_what_queries_did() {
    let udf = eddy_tests::component("temperature");
    let server = Server::start(&["--udf-dir", udf.parent().unwrap().to_str().unwrap()]);
    server
        .ksql(&format!(
            "CREATE FUNCTION celsius_to_fahrenheit FROM '{}';",
            udf.display()
        ))
        .await;
    server.ksql("CREATE STREAM s (c DOUBLE); CREATE STREAM f AS SELECT celsius_to_fahrenheit(c) AS f FROM s;").await;
    let query = server.ksql("SHOW QUERIES;").await[0]["queries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let scrape = || server.metrics();
    let value = |scrape: &prometheus_parse::Scrape, name: &str, label: (&str, &str)| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or(0.0)
    };
    let before = scrape().await;
    assert_eq!(
        value(&before, "eddy_query_events_in_total", ("query_id", &query)),
        0.0
    );
    server
        .ksql("INSERT INTO s (c) VALUES (0.0), (100.0), (37.0);")
        .await;
    // A pull query settles the engine: the persistent query has read the inserts.
    server
        .http
        .post(server.url("/query"))
        .body(json!({"ksql": "SELECT * FROM f;"}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let after = scrape().await;
    assert_eq!(
        value(&after, "eddy_query_events_in_total", ("query_id", &query)),
        3.0
    );
    assert_eq!(
        value(&after, "eddy_query_rows_out_total", ("query_id", &query)),
        3.0
    );
    assert_eq!(
        value(&after, "eddy_query_bad_events_total", ("query_id", &query)),
        0.0
    );
    assert!(
        value(
            &after,
            "eddy_udf_rows_total",
            ("function", "celsius_to_fahrenheit")
        ) >= 3.0
    );
    assert!(
        value(
            &after,
            "eddy_udf_calls_total",
            ("function", "celsius_to_fahrenheit")
        ) >= 1.0
    );
    assert_eq!(
        value(
            &after,
            "eddy_udf_traps_total",
            ("function", "celsius_to_fahrenheit")
        ),
        0.0
    );
    assert!(value(&after, "eddy_http_requests_total", ("path", "/ksql")) >= 4.0);
    let latency = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "eddy_http_request_duration_seconds"
                && s.labels.get("path") == Some("/ksql")
        })
        .expect("a request-latency histogram");
    assert!(
        matches!(latency.value, prometheus_parse::Value::Histogram(_)),
        "{latency:?}"
    );
    for sample in &after.samples {
        assert!(sample.metric.starts_with("eddy_"), "{}", sample.metric);
    }
    let described = server
        .ksql("DESCRIBE FUNCTION celsius_to_fahrenheit;")
        .await;
    assert_eq!(described[0]["@type"], "describe_function");
    assert_eq!(described[0]["functions"][0]["returnType"], "DOUBLE");
    assert_eq!(
        described[0]["functions"][0]["arguments"][0]["type"],
        "DOUBLE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_time_batches_and_udf_calls_and_count_limit_hits() {
    let udf = eddy_tests::component("temperature");
    let evil = eddy_tests::component("evil");
    let server = Server::start(&["--udf-dir", udf.parent().unwrap().to_str().unwrap()]);
    server
        .ksql(&format!(
            "CREATE FUNCTION celsius_to_fahrenheit FROM '{}';",
            udf.display()
        ))
        .await;
    // `spin` never returns and `hog` allocates without end: both are stopped by a limit.
    server
        .ksql(&format!(
            "CREATE FUNCTION spin FROM '{}' WITH (max_memory = '64MB', timeout = '1s');",
            evil.display()
        ))
        .await;
    server.ksql("CREATE STREAM s (c DOUBLE); CREATE STREAM f AS SELECT celsius_to_fahrenheit(c) AS f FROM s;").await;
    let query = server.ksql("SHOW QUERIES;").await[0]["queries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let scrape = || server.metrics();
    let value = |scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    };
    // A pull query settles the engine: the persistent query has read what was inserted.
    let settle = |relation: &'static str| {
        let request = server
            .http
            .post(server.url("/query"))
            .body(json!({ "ksql": format!("SELECT * FROM {relation};") }).to_string());
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let before = scrape().await;
    let batches = |scrape: &prometheus_parse::Scrape| {
        value(
            scrape,
            "eddy_query_batch_duration_seconds_count",
            &[("query_id", &query)],
        )
    };
    assert_eq!(batches(&before), 0.0);

    server
        .ksql("INSERT INTO s (c) VALUES (0.0), (100.0), (37.0);")
        .await;
    settle("f").await;
    let first = scrape().await;
    // One insert, three rows: one batch (at most one per insert).
    assert_eq!(batches(&first), 1.0);
    server.ksql("INSERT INTO s (c) VALUES (1.0);").await;
    server.ksql("INSERT INTO s (c) VALUES (2.0);").await;
    settle("f").await;
    let after = scrape().await;
    let n = batches(&after);
    assert!((2.0..=3.0).contains(&n), "{n} batches after three inserts");
    let histogram = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "eddy_query_batch_duration_seconds"
                && s.labels.get("query_id") == Some(&query)
        })
        .expect("a batch-duration histogram");
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("{histogram:?}");
    };
    // Cumulative buckets ending in +Inf, which holds every batch.
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    let last = buckets.last().unwrap();
    assert_eq!((last.less_than, last.count), (f64::INFINITY, n));
    assert!(
        value(
            &after,
            "eddy_query_batch_duration_seconds_sum",
            &[("query_id", &query)]
        ) > 0.0
    );

    // One observation per guest call, under the same labels as the call counter.
    let c2f = [("function", "celsius_to_fahrenheit")];
    let calls = value(&after, "eddy_udf_calls_total", &c2f);
    assert!(calls >= 2.0, "{calls}");
    assert_eq!(
        value(&after, "eddy_udf_call_duration_seconds_count", &c2f),
        calls
    );
    let version = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "eddy_udf_calls_total"
                && s.labels.get("function") == Some("celsius_to_fahrenheit")
        })
        .and_then(|s| s.labels.get("version"))
        .unwrap()
        .to_string();
    assert_eq!(
        value(
            &after,
            "eddy_udf_call_duration_seconds_count",
            &[("function", "celsius_to_fahrenheit"), ("version", &version)]
        ),
        calls
    );
    for limit in ["time", "memory", "table", "stack"] {
        assert_eq!(
            value(
                &after,
                "eddy_udf_limit_hits_total",
                &[("function", "celsius_to_fahrenheit"), ("limit", limit)]
            ),
            0.0
        );
    }

    // Hostile guests: each call is stopped by its limit, and counted under it.
    server
        .ksql(
            "CREATE STREAM x (v DOUBLE); \
             CREATE STREAM spun AS SELECT spin(v) AS y FROM x; \
             CREATE STREAM hogged AS SELECT hog(v) AS y FROM x;",
        )
        .await;
    server.ksql("INSERT INTO x (v) VALUES (1.0);").await;
    settle("spun").await;
    settle("hogged").await;
    let hostile = scrape().await;
    let hits = |function: &str, limit: &str| {
        value(
            &hostile,
            "eddy_udf_limit_hits_total",
            &[("function", function), ("limit", limit)],
        )
    };
    assert_eq!(hits("spin", "time"), 1.0);
    assert_eq!(hits("spin", "memory"), 0.0);
    assert_eq!(hits("hog", "memory"), 1.0);
    assert_eq!(hits("hog", "time"), 0.0);
    assert_eq!(hits("hog", "stack"), 0.0);
    for function in ["spin", "hog"] {
        let f = [("function", function)];
        assert_eq!(value(&hostile, "eddy_udf_traps_total", &f), 1.0);
        assert_eq!(value(&hostile, "eddy_udf_calls_total", &f), 1.0);
        assert_eq!(
            value(&hostile, "eddy_udf_call_duration_seconds_count", &f),
            1.0
        );
    }
    // The spinning call ran until its 1 s deadline.
    assert!(
        value(
            &hostile,
            "eddy_udf_call_duration_seconds_sum",
            &[("function", "spin")]
        ) >= 0.9
    );
    for sample in &hostile.samples {
        assert!(sample.metric.starts_with("eddy_"), "{}", sample.metric);
    }
}

/// Starts a push query over a raw HTTP/1.1 connection and reads until its header arrived.
pub(crate) fn raw_push(addr: &str, sql: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = json!({"ksql": sql, "streamsProperties": {}}).to_string();
    write!(
        stream,
        "POST /query HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/vnd.ksql.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"header\"") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "closed before the header: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_push_clients_disconnect_abruptly_and_leave_nothing_behind() {
    let server = Server::start(&[]);
    server
        .ksql("CREATE STREAM s (id INT); CREATE STREAM copy AS SELECT id FROM s;")
        .await;
    let started = Instant::now();
    let addr = server.addr.clone();
    let clients = tokio::task::spawn_blocking(move || {
        (0..100)
            .map(|_| raw_push(&addr, "SELECT id FROM s EMIT CHANGES;"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    eprintln!("100 push queries started in {:?}", started.elapsed());
    let queries = server.ksql("SHOW QUERIES;").await;
    assert_eq!(queries[0]["queries"].as_array().unwrap().len(), 101);
    server
        .ksql("INSERT INTO s (id) VALUES (1), (2), (3);")
        .await;
    // Abrupt: a reset rather than a polite close, for half of them.
    for (i, client) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
        drop(client);
    }
    server.ksql("INSERT INTO s (id) VALUES (4), (5);").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queries = server.ksql("SHOW QUERIES;").await;
        let left = queries[0]["queries"].as_array().unwrap().clone();
        if left.len() == 1 {
            assert_eq!(left[0]["queryType"], "PERSISTENT");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "push queries left 20s after their clients went away: {}",
            left.len() - 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = server.get("/metrics").await;
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("kind").is_none_or(|k| k == "persistent"))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap()
    };
    assert_eq!(sample("eddy_http_push_queries_active"), 0.0);
    assert_eq!(sample("eddy_queries_running"), 1.0);
    assert_eq!(sample("eddy_query_events_in_total"), 5.0);
    assert_eq!(sample("eddy_query_rows_out_total"), 5.0);
    server.healthy().await;
}

#[test]
fn eddy_sql_runs_statements_against_a_server() {
    let server = Server::start(&[]);
    let sql = |statements: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["sql", "--server", &server.base, "-e", statements])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    sql("CREATE STREAM s (id INT, name VARCHAR); INSERT INTO s (id, name) VALUES (1, 'one');");
    let shown = sql("SHOW STREAMS;");
    assert!(shown.contains("S | "), "{shown}");
    let described = sql("DESCRIBE s;");
    assert!(described.contains("NAME STRING"), "{described}");
}

#[test]
fn the_ksql_python_ng_client_works_unmodified() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let python = format!("{root}/.tools/venv/bin/python");
    let has_client = Command::new(&python)
        .args(["-c", "import ksql"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_client,
        "ksql-python-ng is not installed in .tools/venv: run ./setup.sh"
    );
    let server = Server::start(&[]);
    let out = Command::new(&python)
        .arg(format!("{root}/tests/python/ksql_client.py"))
        .arg(&server.base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ksql-python-ng scenario: ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udfs_upload_list_replace_and_drop_over_http_within_the_udf_dir() {
    let dir = std::env::temp_dir().join(format!("eddy-server-udfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::start(&[
        "--udf-dir",
        dir.to_str().unwrap(),
        "--max-udf-bytes",
        "100000000",
    ]);
    let bytes = std::fs::read(eddy_tests::component("temperature")).unwrap();
    let upload = |name: &str, body: Vec<u8>| {
        let request = server
            .http
            .post(server.url(&format!("/functions/{name}")))
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Not a component: refused before anything is stored or registered.
    let (status, body) = upload("celsius_to_fahrenheit", b"\0asm\x01\0\0\0".to_vec()).await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (400, json!(40001)),
        "{body}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    let (status, body) = upload("celsius_to_fahrenheit", bytes.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["@type"], "currentStatus");
    let (_, listed) = server.get("/functions").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let first = listed["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "celsius_to_fahrenheit")
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(first["version"].as_str().unwrap().len(), 64);
    // Replacing it with the same bytes keeps the version; a running query keeps working.
    server.ksql("CREATE STREAM s (c DOUBLE); CREATE STREAM f AS SELECT celsius_to_fahrenheit(c) AS f FROM s;").await;
    let (status, body) = upload("celsius_to_fahrenheit", bytes).await;
    assert_eq!(status, 200, "{body}");

    // Paths outside the UDF directory are refused over HTTP.
    let (status, body) = server
        .ksql_status("CREATE OR REPLACE FUNCTION celsius_to_fahrenheit FROM '/etc/passwd';")
        .await;
    assert_eq!((status, body["error_code"].clone()), (400, json!(40001)));
    assert!(
        body["message"].as_str().unwrap().contains("UDF directory"),
        "{body}"
    );

    server.ksql("TERMINATE ALL;").await;
    let response = server
        .http
        .delete(server.url("/functions/celsius_to_fahrenheit"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, listed) = server.get("/functions").await;
    // The component's other function stays; this one is gone.
    assert!(
        !listed.contains("\"name\":\"celsius_to_fahrenheit\""),
        "{listed}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads from `stream` until `needle` has arrived; returns all that was read.
pub(crate) fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = stream.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "closed before {needle}: {}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
}

/// The body of a complete chunked HTTP/1.1 response.
pub(crate) fn dechunk(response: &str) -> String {
    let (head, mut rest) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_stream_acks_each_row_while_the_request_is_still_open() {
    let server = Server::start(&["--max-body-bytes", "200"]);
    server.ksql("CREATE STREAM s (id INT, name VARCHAR);").await;
    let acks = |body: &str| -> Vec<Value> {
        body.lines()
            .map(|l| mask(serde_json::from_str(l).unwrap(), &["message"]))
            .collect()
    };

    // HTTP/1.1 with a chunked request body, written by hand so nothing buffers it.
    let addr = server.addr.clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "POST /inserts-stream HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let send = |stream: &mut TcpStream, text: &str| {
            write!(stream, "{:x}\r\n{text}\r\n", text.len()).unwrap();
            stream.flush().unwrap();
        };
        send(&mut stream, "{\"target\":\"s\"}\n{\"ID\":1,\"NAME\":\"one\"}\n");
        let mut seen = Vec::new();
        // The first row's ack arrives while the request is still open.
        read_until(&mut stream, &mut seen, "\"seq\":0");
        // A row split across chunks, a bad one, an unknown column, and a last line with no newline.
        send(&mut stream, "{\"ID\":2,");
        send(&mut stream, "\"NAME\":\"two\"}\nnot json\n\n{\"NOPE\":1}\n");
        send(&mut stream, "{\"ID\":3,\"NAME\":\"three\"}");
        send(&mut stream, "");
        stream.read_to_end(&mut seen).unwrap();
        dechunk(&String::from_utf8(seen).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(
        acks(&body),
        vec![
            json!({"status": "ok", "seq": 0}),
            json!({"status": "ok", "seq": 1}),
            json!({"status": "error", "seq": 2, "error_code": 40000, "message": "<masked>"}),
            json!({"status": "error", "seq": 3, "error_code": 40001, "message": "<masked>"}),
            json!({"status": "ok", "seq": 4}),
        ],
        "{body}"
    );

    // HTTP/2 (prior knowledge), the body fed from a channel; a line over the cap ends the stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    tx.send(Ok(
        "{\"target\":\"s\"}\n{\"ID\":4,\"NAME\":\"four\"}\n".into()
    ))
    .await
    .unwrap();
    let mut response = tokio::time::timeout(
        Duration::from_secs(20),
        h2.post(server.url("/inserts-stream"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        acks(std::str::from_utf8(&first).unwrap()),
        vec![json!({"status": "ok", "seq": 0})]
    );
    tx.send(Ok(format!(
        "{{\"ID\":5}}\n{{\"ID\":6,\"NAME\":\"{}\"}}\n",
        "x".repeat(300)
    )))
    .await
    .unwrap();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(tx);
    assert_eq!(
        acks(&rest),
        vec![
            json!({"status": "ok", "seq": 1}),
            json!({"status": "error", "seq": 2, "error_code": 41300, "message": "<masked>"}),
        ],
        "{rest}"
    );

    // Exactly the good rows landed.
    let response = server
        .http
        .post(server.url("/query-stream"))
        .header("Accept", "application/json")
        .body(json!({"sql": "SELECT id, name FROM s;"}).to_string())
        .send()
        .await
        .unwrap();
    let items: Value = response.json().await.unwrap();
    assert_eq!(
        items.as_array().unwrap()[1..],
        [
            json!([1, "one"]),
            json!([2, "two"]),
            json!([3, "three"]),
            json!([4, "four"]),
            json!([5, null])
        ]
    );
    server.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_shows_over_rest_and_metrics_and_promotes_over_ksql() {
    // A UDF directory of its own, so the server does not load (and compile) every guest; names
    // that are not function names keep its watcher from loading them by itself.
    let dir = std::env::temp_dir().join(format!("eddy-server-rollout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = |guest: &str| {
        let path = dir.join(format!("0{guest}.wasm"));
        std::fs::copy(eddy_tests::component(guest), &path).unwrap();
        path
    };
    let (v1, v2, evil) = (copy("tag_v1"), copy("tag_v2"), copy("evil"));
    let captures = dir.join("captures");
    let server = Server::start(&[
        "--udf-dir",
        dir.to_str().unwrap(),
        "--capture-dir",
        captures.to_str().unwrap(),
    ]);
    server
        .ksql(&format!(
            "CREATE FUNCTION tag FROM '{}'; CREATE OR REPLACE FUNCTION tag FROM '{}' WITH (shadow = true, shadow_keep = 1); CREATE FUNCTION panic_if_negative FROM '{}';",
            v1.display(),
            v2.display(),
            evil.display()
        ))
        .await;
    server
        .ksql("CREATE STREAM s (id BIGINT); CREATE STREAM t AS SELECT tag(id) AS t FROM s; CREATE STREAM n (x DOUBLE); CREATE STREAM p AS SELECT panic_if_negative(x) AS p FROM n; INSERT INTO s (id) VALUES (7), (NULL), (9); INSERT INTO n (x) VALUES (-1.0);")
        .await;
    // The shadow runs off the query's path: wait until it has compared the rows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let described = loop {
        let described = server.ksql("DESCRIBE FUNCTION tag EXTENDED;").await;
        let shadow = &described[0]["versions"]["shadow"];
        if shadow["rowsCompared"].as_u64().unwrap_or(0) >= 3 || Instant::now() > deadline {
            break described;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let versions = &described[0]["versions"];
    let shadow = &versions["shadow"];
    // `7` and `9` differ; `NULL` is NULL in both.
    assert_eq!(shadow["rowsCompared"], 3, "{described:#}");
    assert_eq!(shadow["rowsDiffering"], 2, "{described:#}");
    assert_eq!(
        shadow["differences"],
        json!([{"arguments": {"event_id": "7"}, "serving": "v1:7", "shadow": "v2:7"}])
    );
    assert_eq!(versions["previous"], Value::Null);
    let v2_hash = shadow["version"].as_str().unwrap().to_string();
    let (status, body) = server.get("/functions/tag").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["shadow"]["rowsDiffering"], 2, "{body:#}");
    assert_eq!(body["signature"], "tag(event_id BIGINT) -> VARCHAR");

    // The trap in the other query leaves a capture file.
    while std::fs::read_dir(&captures).map_or(0, |d| d.count()) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = server.metrics().await;
    let value = |name: &str| {
        metrics
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            })
    };
    assert_eq!(value("eddy_udf_shadow_rows_compared_total"), Some(3.0));
    assert_eq!(value("eddy_udf_shadow_rows_differing_total"), Some(2.0));
    let compared = metrics
        .samples
        .iter()
        .find(|s| s.metric == "eddy_udf_shadow_rows_compared_total")
        .unwrap();
    assert_eq!(compared.labels.get("version"), Some(&v2_hash[..16]));
    assert!(value("eddy_udf_captures_total").unwrap() >= 1.0);
    assert!(std::fs::read_dir(&captures).unwrap().count() >= 1);

    let promoted = server.ksql("ALTER FUNCTION tag PROMOTE;").await;
    assert_eq!(promoted[0]["@type"], "currentStatus", "{promoted:#}");
    let shown = server.ksql("SHOW FUNCTIONS;").await;
    let tag = shown[0]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "TAG")
        .unwrap_or_else(|| panic!("{shown:#}"))
        .clone();
    assert_eq!(tag["version"], v2_hash);
    assert_eq!(tag["shadowVersion"], Value::Null);
    assert_eq!(
        tag["previousVersion"], versions["serving"]["version"],
        "{shown:#}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
