//! `eddy server --mqtt-listen` in direct mode: a real server process, a real MQTT client
//! (Debian's `mosquitto_pub`), publishes landing in Eddy streams without Kafka and read back by a
//! push query over HTTP.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `eddy server` with an MQTT endpoint, killed on drop.
struct Server {
    http: crate::server::Server,
    mqtt_port: u16,
}

impl Server {
    fn start(rules: &[&str]) -> Server {
        Server::start_with(rules, &[])
    }

    fn start_with(rules: &[&str], extra: &[&str]) -> Server {
        let mut args = vec!["--mqtt-listen", "127.0.0.1:0"];
        for rule in rules {
            args.extend(["--mqtt-map", rule]);
        }
        args.extend(extra);
        let mut http = crate::server::Server::start(&args);
        // "eddy server: MQTT listening on 127.0.0.1:PORT (into streams)"
        let line = http.read_line();
        let mqtt_port = line
            .strip_prefix("eddy server: MQTT listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected second line: {line:?}"));
        Server { http, mqtt_port }
    }

    async fn ksql(&self, ksql: &str) {
        self.http.ksql(ksql).await;
    }

    /// Starts a push query; the response head means the query runs and sees what comes next.
    async fn push(&self, sql: &str) -> reqwest::Response {
        let response = self
            .http
            .http
            .post(self.http.url("/query"))
            .body(json!({"ksql": sql, "streamsProperties": {}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{sql}");
        response
    }

    /// One sample of `GET /metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.http.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    /// Publishes `lines` (one message each) to `topic` and waits for `mosquitto_pub` to exit.
    fn publish(&self, topic: &str, qos: u8, version: &str, lines: &[String]) -> String {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.mqtt_port.to_string()])
            .args(["-t", topic, "-q", &qos.to_string(), "-V", version, "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub not found: run ./setup.sh (package mosquitto-clients)");
        let mut stdin = child.stdin.take().unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        stdin.write_all(text.as_bytes()).unwrap();
        drop(stdin);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                assert!(
                    status.success(),
                    "{topic}: mosquitto_pub {status}: {stderr}"
                );
                return stderr;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{topic}: mosquitto_pub still running after 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(self) {
        self.http.terminate();
    }
}

/// The rows of a `/query` response that ended at its LIMIT, as `[columns…]` values.
async fn rows(response: reqwest::Response) -> Vec<Value> {
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the push query ends at its LIMIT")
        .unwrap();
    let items: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        items.last(),
        Some(&json!({"finalMessage": "Limit Reached"})),
        "{text}"
    );
    items
        .iter()
        .filter_map(|item| item.get("row").map(|r| r["columns"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_feeds_a_stream_without_kafka_and_bad_payloads_are_counted() {
    let server = Server::start(&["readings:car/.*", "lines:csv/.*"]);
    server
        .ksql("CREATE STREAM readings (car_id INT, speed DOUBLE) WITH (value_format='JSON');")
        .await;
    server
        .ksql("CREATE STREAM lines (car_id INT, speed DOUBLE) WITH (value_format='DELIMITED');")
        .await;

    // Each client runs to the end before the next starts, so the stream's order is known.
    let cases = [
        (1, "mqttv311", 20),
        (2, "mqttv5", 10),
        (2, "mqttv311", 10),
        (1, "mqttv5", 10),
        (0, "mqttv311", 10),
    ];
    let total: usize = cases.iter().map(|(_, _, n)| n).sum();
    let query = server
        .push(&format!(
            "SELECT car_id, speed FROM readings EMIT CHANGES LIMIT {total};"
        ))
        .await;
    let mut expected = Vec::new();
    let mut next = 0;
    for (qos, version, n) in cases {
        let lines: Vec<String> = (next..next + n)
            .map(|i| json!({"car_id": i, "speed": i as f64 * 1.5}).to_string())
            .collect();
        expected.extend((next..next + n).map(|i| json!([i, i as f64 * 1.5])));
        next += n;
        server.publish(&format!("car/q{qos}-{version}"), qos, version, &lines);
    }
    assert_eq!(rows(query).await, expected);
    assert_eq!(
        server.metric("eddy_mqtt_forwarded_total").await,
        total as f64
    );

    // A malformed payload is rejected and counted; an MQTT 5 client hears why (0x99), and the
    // server goes on taking publishes.
    let later = server
        .push("SELECT car_id, speed FROM readings EMIT CHANGES LIMIT 1;")
        .await;
    let stderr = server.publish("car/bad", 1, "mqttv5", &["{\"car_id\": 1,".to_string()]);
    assert!(stderr.contains("Payload format invalid"), "{stderr:?}");
    assert_eq!(server.metric("eddy_mqtt_rejected_total").await, 1.0);
    server.publish(
        "car/after",
        1,
        "mqttv311",
        &[json!({"car_id": 999, "speed": 0.5}).to_string()],
    );
    assert_eq!(rows(later).await, vec![json!([999, 0.5])]);

    // DELIMITED: fields in column order, empty is NULL; a wrong field count is rejected.
    let csv = server
        .push("SELECT car_id, speed FROM lines EMIT CHANGES LIMIT 3;")
        .await;
    let lines: Vec<String> = ["1,1.5", "2,", "1,2,3", "3,4.5"]
        .iter()
        .map(|l| l.to_string())
        .collect();
    server.publish("csv/1", 1, "mqttv311", &lines);
    assert_eq!(
        rows(csv).await,
        vec![json!([1, 1.5]), json!([2, null]), json!([3, 4.5])]
    );
    assert_eq!(server.metric("eddy_mqtt_rejected_total").await, 2.0);

    // A topic no rule maps, and a rule whose stream does not exist, are both unmapped.
    server.publish("elsewhere/1", 1, "mqttv311", &["{}".to_string()]);
    server.ksql("DROP STREAM lines;").await;
    server.publish("csv/2", 1, "mqttv311", &["5,5".to_string()]);
    assert_eq!(server.metric("eddy_mqtt_unmapped_total").await, 2.0);
    assert_eq!(
        server.metric("eddy_mqtt_forwarded_total").await,
        (total + 1 + 3) as f64
    );
    server.terminate();
}

/// `--mqtt-kafka`: the same endpoint inside `eddy server`, writing to Kafka topics instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mqtt_kafka_the_server_lands_publishes_in_a_topic() {
    use eddy_connector::Source;
    use eddy_kafka::{ensure_topic, KafkaSource, OffsetReset};
    use eddy_tests::kafka::{shared, test_config, unique};

    let broker = shared();
    let topic = unique("mqtt-server");
    ensure_topic(&broker.config("admin"), &topic, 1)
        .await
        .unwrap();
    let rule = format!("{topic}:car/.*");
    let server = Server::start_with(
        &[rule.as_str()],
        &["--mqtt-kafka", "--bootstrap-servers", &broker.bootstrap()],
    );
    let lines: Vec<String> = (0..20).map(|i| format!("m-{i}")).collect();
    server.publish("car/1", 1, "mqttv5", &lines);
    // Acknowledged means Kafka has them all.
    assert_eq!(server.metric("eddy_mqtt_forwarded_total").await, 20.0);
    assert_eq!(server.metric("eddy_mqtt_kafka_reachable").await, 1.0);
    let mut source = KafkaSource::subscribe(
        &test_config(&broker.bootstrap(), &unique("mqtt-server-check")),
        &topic,
        OffsetReset::Earliest,
    )
    .unwrap();
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < lines.len() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {got:?} reached {topic}"
        );
        for m in source
            .poll(1000, Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap_or_default()
        {
            assert_eq!(m.key.as_deref(), Some(&b"car/1"[..]));
            got.push(String::from_utf8(m.payload).unwrap());
        }
    }
    assert_eq!(got, lines);
    server.terminate();
}
