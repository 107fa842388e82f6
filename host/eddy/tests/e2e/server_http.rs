//! `eddy server`'s transport and client compatibility, against a real process: connection
//! timeouts and cap, authentication headers, UDF files over HTTP, the npm `ksqldb-client`,
//! `SHOW TOPICS` and session variables.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{mask, raw_push, read_until, Server};

/// A client that opens a connection per request: a pooled idle one would be closed by the
/// server's idle timeout and counted, and the tests count exactly.
fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// One sample of `/metrics`, with `kind` as its label when given.
async fn sample(server: &Server, name: &str, kind: Option<&str>) -> f64 {
    let scrape = server.metrics().await;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && kind.is_none_or(|k| s.labels.get("kind") == Some(k)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {kind:?}"))
}

/// Whether the server closed `stream` within `within` (reading and discarding what it sends).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns head and body.
fn read_response(stream: &mut TcpStream) -> (String, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut seen = Vec::new();
    read_until(stream, &mut seen, "\r\n\r\n");
    let text = String::from_utf8_lossy(&seen).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = body.as_bytes().to_vec();
    while body.len() < length {
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "closed in the body");
        body.extend_from_slice(&buffer[..n]);
    }
    (head.to_string(), String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_slow_bodies_and_idle_connections_are_cut_off_but_streams_are_not() {
    let mut server = Server::start(&[
        "--http-header-timeout",
        "1s",
        "--http-body-timeout",
        "2s",
        "--http-idle-timeout",
        "3s",
    ]);
    server.http = unpooled();
    server.ksql("CREATE STREAM s (id INT);").await;
    let addr = server.addr.clone();

    // A push query streams for longer than every timeout, and its rows still arrive.
    let push_addr = addr.clone();
    let mut push =
        tokio::task::spawn_blocking(move || raw_push(&push_addr, "SELECT id FROM s EMIT CHANGES;"))
            .await
            .unwrap();

    let checks = tokio::task::spawn_blocking(move || {
        // Slowloris: a request head trickling in, one byte every 100 ms, never complete.
        let mut slow = TcpStream::connect(&addr).unwrap();
        let started = Instant::now();
        let head = b"GET /healthcheck HTTP/1.1\r\nHost: eddy\r\nX-Slow: ";
        let mut cut = false;
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if slow.write_all(&[*byte]).is_err() {
                cut = true;
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(cut, "a slow request head was still open after 20s");

        // An idle keep-alive connection is closed after its response, by the idle timeout.
        let mut idle = TcpStream::connect(&addr).unwrap();
        write!(idle, "GET /healthcheck HTTP/1.1\r\nHost: eddy\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut idle);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let answered = Instant::now();
        assert!(closed_within(&mut idle, Duration::from_secs(20)));
        // The 3 s idle timeout, not the 1 s header timeout: the connection had finished its
        // request (the idle time counts from the response, a moment before it was read here).
        assert!(answered.elapsed() >= Duration::from_secs(2));

        // A body that stops halfway: 408 with ksqlDB's error entity.
        let mut body = TcpStream::connect(&addr).unwrap();
        write!(
            body,
            "POST /ksql HTTP/1.1\r\nHost: eddy\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"ksql\""
        )
        .unwrap();
        let (head, text) = read_response(&mut body);
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        let entity: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (entity["@type"].clone(), entity["error_code"].clone()),
            (json!("generic_error"), json!(40800)),
            "{entity}"
        );

        // /inserts-stream: lines 400 ms apart keep it open past the 2 s body timeout; a gap of
        // more than 2 s ends it with a 408 ack.
        let mut inserts = TcpStream::connect(&addr).unwrap();
        inserts
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            inserts,
            "POST /inserts-stream HTTP/1.1\r\nHost: eddy\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let send = |stream: &mut TcpStream, text: &str| {
            write!(stream, "{:x}\r\n{text}\r\n", text.len()).unwrap();
            stream.flush().unwrap();
        };
        send(&mut inserts, "{\"target\":\"s\"}\n");
        for id in 1..=8 {
            send(&mut inserts, &format!("{{\"ID\":{id}}}\n"));
            std::thread::sleep(Duration::from_millis(400));
        }
        let mut seen = Vec::new();
        inserts.read_to_end(&mut seen).unwrap();
        crate::server::dechunk(&String::from_utf8(seen).unwrap())
    });
    let body = checks.await.unwrap();
    let acks: Vec<Value> = body
        .lines()
        .map(|l| mask(serde_json::from_str(l).unwrap(), &["message"]))
        .collect();
    let mut expected: Vec<Value> = (0..8)
        .map(|seq| json!({"status": "ok", "seq": seq}))
        .collect();
    expected.push(json!({"status": "error", "seq": 8, "error_code": 40800, "message": "<masked>"}));
    assert_eq!(acks, expected, "{body}");

    // The push query outlived all of that, and still delivers.
    server.ksql("INSERT INTO s (id) VALUES (42);").await;
    tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        read_until(&mut push, &mut seen, "[42]");
    })
    .await
    .unwrap();

    assert_eq!(
        sample(&server, "eddy_http_timeouts_total", Some("header")).await,
        1.0
    );
    assert_eq!(
        sample(&server, "eddy_http_timeouts_total", Some("idle")).await,
        1.0
    );
    assert_eq!(
        sample(&server, "eddy_http_timeouts_total", Some("body")).await,
        2.0
    );
    assert_eq!(
        sample(&server, "eddy_http_connections_refused_total", None).await,
        0.0
    );
    server.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let mut server = Server::start(&[
        "--http-max-connections",
        "4",
        "--http-header-timeout",
        "60s",
    ]);
    server.http = unpooled();
    let addr = server.addr.clone();
    let retries = tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..7).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        // The server takes four and closes the other three at once.
        let mut closed = 0;
        for stream in &mut held {
            if closed_within(stream, Duration::from_millis(1500)) {
                closed += 1;
            }
        }
        assert_eq!(closed, 3);
        drop(held);
        // Once those are gone, the server answers again. A request that still finds the
        // slots taken (their closing not yet seen) is refused too, and counted.
        let mut retries = 0.0;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut stream = TcpStream::connect(&addr).unwrap();
            let _ = write!(
                stream,
                "GET /healthcheck HTTP/1.1\r\nHost: eddy\r\nConnection: close\r\n\r\n"
            );
            let mut seen = Vec::new();
            let _ = stream.read_to_end(&mut seen);
            if seen.starts_with(b"HTTP/1.1 200") {
                return retries;
            }
            assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
            assert!(
                Instant::now() < deadline,
                "no answer 20s after the connections closed"
            );
            retries += 1.0;
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    server.healthy().await;
    assert_eq!(
        sample(&server, "eddy_http_connections_refused_total", None).await,
        3.0 + retries
    );
    // Only the scrape's own connection is open (the closed ones are let go).
    let deadline = Instant::now() + Duration::from_secs(20);
    while sample(&server, "eddy_http_connections", None).await != 1.0 {
        assert!(Instant::now() < deadline, "connections left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_names_its_schemes_and_a_lower_case_bearer_is_accepted() {
    let dir = std::env::temp_dir().join(format!("eddy-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let server = Server::start(&["--auth-token-file", token_file.to_str().unwrap()]);
    let info = |authorization: Option<&'static str>| {
        let mut request = server.http.get(server.url("/info"));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        request.send()
    };
    let refused = info(None).await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenges: Vec<&str> = refused
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        challenges,
        ["Bearer realm=\"eddy\"", "Basic realm=\"eddy\""]
    );
    assert_eq!(refused.json::<Value>().await.unwrap()["error_code"], 40100);
    assert_eq!(info(Some("bearer wrong")).await.unwrap().status(), 401);
    for good in ["bearer s3cret", "Bearer s3cret", "BEARER s3cret"] {
        assert_eq!(info(Some(good)).await.unwrap().status(), 200, "{good}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The files in `dir`, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_keep_one_file_and_a_deleted_function_stays_deleted_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("eddy-udf-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let args = [
        "--udf-dir",
        dir.to_str().unwrap(),
        "--max-udf-bytes",
        "100000000",
    ];
    let bytes = std::fs::read(eddy_tests::component("temperature")).unwrap();
    let listed = |server: &Server| {
        let request = server.http.get(server.url("/functions"));
        async move {
            let listed: Value = request.send().await.unwrap().json().await.unwrap();
            listed["functions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == "celsius_to_fahrenheit")
        }
    };
    let server = Server::start(&args);
    for _ in 0..3 {
        let response = server
            .http
            .post(server.url("/functions/celsius_to_fahrenheit"))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Three uploads, one file: the one serving.
    let kept = files(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("celsius_to_fahrenheit."), "{kept:?}");
    assert!(listed(&server).await);

    let response = server
        .http
        .delete(server.url("/functions/celsius_to_fahrenheit"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(files(&dir), Vec::<String>::new());
    // The directory watcher (once a second, a file loads after two equal looks) does not bring it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!listed(&server).await);
    server.terminate();

    // Nor does the next start.
    let server = Server::start(&args);
    assert!(!listed(&server).await);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_npm_ksqldb_client_works_unmodified() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let client = format!("{root}/tests/node/ksqldb_client");
    assert!(
        std::path::Path::new(&format!("{client}/node_modules/ksqldb-client")).exists(),
        "ksqldb-client is not installed in tests/node/ksqldb_client: run ./setup.sh"
    );
    let server = Server::start(&[]);
    let out = Command::new("node")
        .arg(format!("{client}/scenario.js"))
        .arg(&server.base)
        .current_dir(&client)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ksqldb-client scenario: ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_stream_answers_one_json_array_to_accept_application_json() {
    let server = Server::start(&[]);
    server.ksql("CREATE STREAM s (id INT);").await;
    let post = |body: &'static str| {
        server
            .http
            .post(server.url("/inserts-stream"))
            .header("Accept", "application/json")
            .body(body)
            .send()
    };
    let response = post("{\"target\":\"s\"}\n{\"ID\":1}\nnot json\n{\"ID\":2}")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let acks: Value = response.json().await.unwrap();
    assert_eq!(
        mask(acks, &["message"]),
        json!([
            {"status": "ok", "seq": 0},
            {"status": "error", "seq": 1, "error_code": 40000, "message": "<masked>"},
            {"status": "ok", "seq": 2},
        ])
    );
    // No rows: still one (empty) array.
    let acks: Value = post("{\"target\":\"s\"}\n")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(acks, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_topics_lists_the_brokers_topics() {
    use eddy_tests::kafka::{shared, test_config, unique};
    let broker = shared();
    let topic = unique("show_topics");
    eddy_kafka::ensure_topic(&test_config(&broker.bootstrap(), "show-topics"), &topic, 2)
        .await
        .unwrap();
    let server = Server::start(&["--bootstrap-servers", &broker.bootstrap()]);
    for statement in [
        "SHOW TOPICS;",
        "LIST TOPICS;",
        "SHOW TOPICS EXTENDED;",
        "SHOW ALL TOPICS;",
    ] {
        let entities = server.ksql(statement).await;
        let entity = &entities[0];
        assert_eq!(entity["@type"], "kafka_topics", "{entity}");
        assert_eq!(entity["statementText"], statement);
        let topics = entity["topics"].as_array().unwrap();
        let ours: Vec<&Value> = topics
            .iter()
            .filter(|t| t["name"] == topic.as_str())
            .collect();
        assert_eq!(
            ours,
            [&json!({"name": topic, "replicaInfo": [1, 1]})],
            "{entity}"
        );
        if !statement.contains("ALL") {
            assert!(
                topics
                    .iter()
                    .all(|t| !t["name"].as_str().unwrap().starts_with('_')),
                "{entity}"
            );
        }
    }
    drop(server);

    // Without a broker: a clear statement error.
    let server = Server::start(&[]);
    let (status, body) = server.ksql_status("SHOW TOPICS;").await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (400, json!(40001)),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--bootstrap-servers"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_variables_substitute_within_one_request_only() {
    let server = Server::start(&[]);
    let entities = server
        .ksql("DEFINE name = 'vars'; DEFINE cols = 'id INT, label VARCHAR'; CREATE STREAM ${name} (${cols}); SHOW VARIABLES; UNDEFINE cols; UNDEFINE nope; SHOW VARIABLES;")
        .await;
    let entities = entities.as_array().unwrap();
    assert_eq!(entities.len(), 4, "{entities:?}");
    assert_eq!(entities[0]["@type"], "currentStatus");
    assert_eq!(entities[0]["commandId"], "stream/`VARS`/create");
    assert_eq!(
        entities[1],
        json!({"@type": "variables", "statementText": "SHOW VARIABLES;", "warnings": [],
            "variables": [{"name": "name", "value": "vars"}, {"name": "cols", "value": "id INT, label VARCHAR"}]})
    );
    assert_eq!(entities[2]["@type"], "warning_entity");
    assert_eq!(
        entities[3]["variables"],
        json!([{"name": "name", "value": "vars"}])
    );
    // Another request does not see them.
    let (status, body) = server
        .ksql_status("SHOW VARIABLES; DESCRIBE ${name};")
        .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (400, json!(40001)),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");

    // sessionVariables in the request, on /ksql and /query-stream.
    let response = server
        .http
        .post(server.url("/ksql"))
        .body(
            json!({"ksql": "INSERT INTO ${s} (id, label) VALUES (${n}, '${l}');",
            "sessionVariables": {"s": "vars", "n": 7, "l": "seven"}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rows: Value = server
        .http
        .post(server.url("/query-stream"))
        .header("Accept", "application/json")
        .body(
            json!({"sql": "SELECT id, label FROM ${s};", "sessionVariables": {"s": "vars"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows.as_array().unwrap()[1..], [json!([7, "seven"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_http1_by_alpn() {
    let dir = std::env::temp_dir().join(format!("eddy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let client = |alpn: &[&[u8]]| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{port}/info");
    for (alpn, version) in [
        (
            &[b"h2".as_slice(), b"http/1.1"][..],
            reqwest::Version::HTTP_2,
        ),
        (&[b"http/1.1".as_slice()][..], reqwest::Version::HTTP_11),
    ] {
        let response = client(alpn).get(&url).send().await.unwrap();
        assert_eq!(
            (response.status().as_u16(), response.version()),
            (200, version)
        );
        let info: Value = response.json().await.unwrap();
        assert_eq!(info["KsqlServerInfo"]["serverStatus"], "RUNNING");
    }
    // Cleartext HTTP on the TLS port gets no HTTP answer.
    let plain = unpooled()
        .get(format!("http://localhost:{port}/info"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
