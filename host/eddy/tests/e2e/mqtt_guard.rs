//! What a careless or hostile MQTT client meets on `eddy server --mqtt-listen` (direct mode, no
//! Kafka): connections without CONNECT time out, the connection cap refuses the next one,
//! keep-alive is capped, logins are checked, wildcard, oversized and over-budget publishes
//! close their connection, and TLS works with a real client. Each refusal is read back from
//! `GET /metrics`, exactly, and the server still takes a well-behaved client's rows afterwards.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::{v4, QoS};
use rumqttc::v5::mqttbytes::v5;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `eddy server` with `--mqtt-map readings:car/.*`, killed on drop.
struct Mqtt {
    http: crate::server::Server,
    port: u16,
    /// The REST token, when the server was started with one.
    token: Option<String>,
}

impl Mqtt {
    fn start(extra: &[&str], token: Option<&str>) -> Mqtt {
        Mqtt::spawn(extra, token, None)
    }

    fn spawn(extra: &[&str], token: Option<&str>, open_files: Option<u64>) -> Mqtt {
        let token_file = token.map(|t| temp_file("token", t));
        let mut args = vec![
            "--mqtt-listen",
            "127.0.0.1:0",
            "--mqtt-map",
            "readings:car/.*",
        ];
        if let Some(file) = &token_file {
            args.extend(["--auth-token-file", file.as_str()]);
        }
        args.extend(extra);
        let mut http = match open_files {
            Some(n) => crate::server::Server::start_limited(&args, n),
            None => crate::server::Server::start(&args),
        };
        let line = http.read_line();
        let port = line
            .strip_prefix("eddy server: MQTT listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected second line: {line:?}"));
        Mqtt {
            http,
            port,
            token: token.map(str::to_string),
        }
    }

    fn request(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn ksql(&self, ksql: &str) {
        let response = self
            .request(self.http.http.post(self.http.url("/ksql")))
            .body(json!({"ksql": ksql, "streamsProperties": {}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{ksql}");
    }

    /// Starts a push query; the response head means it runs and sees what comes next.
    async fn push(&self, sql: &str) -> reqwest::Response {
        let response = self
            .request(self.http.http.post(self.http.url("/query")))
            .body(json!({"ksql": sql, "streamsProperties": {}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{sql}");
        response
    }

    async fn metric(&self, name: &str) -> f64 {
        let response = self
            .request(self.http.http.get(self.http.url("/metrics")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
    }

    /// Waits (up to 30 s) for `name` to read `value`: the counters are bumped by the server's
    /// tasks, which may run just after the client saw the effect.
    async fn expect_metric(&self, name: &str, value: f64) {
        let started = Instant::now();
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} is {now}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }

    /// Runs `mosquitto_pub` with `args` against the server; (success, stderr).
    fn pub_(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("mosquitto_pub")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("mosquitto_pub not found: run ./setup.sh (package mosquitto-clients)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A file holding `text` in the temp dir, unique to this process and call.
fn temp_file(what: &str, text: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "eddy-mqtt-guard-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The rows of a `/query` response that ended at its LIMIT.
async fn rows(response: reqwest::Response) -> Vec<Value> {
    let text = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the push query ends at its LIMIT")
        .unwrap();
    let items: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    items
        .iter()
        .filter_map(|item| item.get("row").map(|r| r["columns"].clone()))
        .collect()
}

fn connect_v4(keep_alive: u16, login: Option<(&str, &str)>) -> BytesMut {
    let mut connect = v4::Connect::new("guard-v4");
    connect.keep_alive = keep_alive;
    connect.login = login.map(|(u, p)| v4::Login::new(u, p));
    let mut out = BytesMut::new();
    v4::Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .unwrap();
    out
}

fn connect_v5(keep_alive: u16, login: Option<(&str, &str)>) -> BytesMut {
    let mut out = BytesMut::new();
    v5::Packet::Connect(
        v5::Connect {
            keep_alive,
            client_id: "guard-v5".into(),
            clean_start: true,
            properties: None,
        },
        None,
        login.map(|(u, p)| v5::Login::new(u, p)),
    )
    .write(&mut out, None)
    .unwrap();
    out
}

/// Reads until `parse` finds a whole packet in what came; panics on EOF or after 30 s.
async fn read_packet<T>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&mut BytesMut) -> Option<T>,
) -> T {
    loop {
        if let Some(packet) = parse(buf) {
            return packet;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read_buf(buf))
            .await
            .expect("a packet within 30 s")
            .unwrap();
        assert!(n > 0, "closed before a whole packet came: {buf:02x?}");
    }
}

async fn read_v4(stream: &mut TcpStream, buf: &mut BytesMut) -> v4::Packet {
    read_packet(stream, buf, |b| match v4::Packet::read(b, 1 << 20) {
        Ok(p) => Some(p),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
        Err(e) => panic!("{e}"),
    })
    .await
}

async fn read_v5(stream: &mut TcpStream, buf: &mut BytesMut) -> v5::Packet {
    read_packet(stream, buf, |b| match v5::Packet::read(b, None) {
        Ok(p) => Some(p),
        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
        Err(e) => panic!("{e}"),
    })
    .await
}

/// Waits (up to 30 s) for the server to close `stream`; returns the bytes it sent first.
async fn closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => panic!("still open after 30 s; got {got:02x?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn create_readings(server: &Mqtt) {
    server
        .ksql("CREATE STREAM readings (car_id INT, speed DOUBLE) WITH (value_format='JSON');")
        .await;
}

fn reading(car_id: u32) -> String {
    json!({"car_id": car_id, "speed": 1.5}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_excess_connections_are_closed_and_counted() {
    let server = Mqtt::start(
        &["--mqtt-connect-timeout", "1", "--mqtt-max-connections", "2"],
        None,
    );
    create_readings(&server).await;

    // A TCP connection that never sends CONNECT is closed, without a byte.
    let mut silent = server.tcp().await;
    assert_eq!(closed(&mut silent).await, Vec::<u8>::new());
    server
        .expect_metric("eddy_mqtt_connect_timeouts_total", 1.0)
        .await;
    server.expect_metric("eddy_mqtt_connections", 0.0).await;

    // Two sessions fill the cap (keep-alive 0: held, up to the maximum keep-alive).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = server.tcp().await;
        stream.write_all(&connect_v4(0, None)).await.unwrap();
        let mut buf = BytesMut::new();
        match read_v4(&mut stream, &mut buf).await {
            v4::Packet::ConnAck(ack) => assert_eq!(ack.code, v4::ConnectReturnCode::Success),
            other => panic!("{other:?}"),
        }
        held.push(stream);
    }
    assert_eq!(server.metric("eddy_mqtt_connections").await, 2.0);

    // The third is closed before its CONNECT is read: no CONNACK, just the end.
    let mut third = server.tcp().await;
    let _ = third.write_all(&connect_v4(30, None)).await;
    assert_eq!(closed(&mut third).await, Vec::<u8>::new());
    server
        .expect_metric("eddy_mqtt_refused_connections_total", 1.0)
        .await;
    // A real client is refused the same way.
    let (ok, stderr) = server.pub_(&["-h", "127.0.0.1", "-t", "car/1", "-m", &reading(1)]);
    assert!(!ok, "mosquitto_pub got in over the cap: {stderr}");
    server
        .expect_metric("eddy_mqtt_refused_connections_total", 2.0)
        .await;

    // Once a session ends there is room again, and a publish lands.
    drop(held.pop());
    server.expect_metric("eddy_mqtt_connections", 1.0).await;
    let query = server
        .push("SELECT car_id FROM readings EMIT CHANGES LIMIT 1;")
        .await;
    let (ok, stderr) = server.pub_(&[
        "-h",
        "127.0.0.1",
        "-q",
        "1",
        "-t",
        "car/1",
        "-m",
        &reading(7),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(rows(query).await, vec![json!([7])]);
    assert_eq!(
        server.metric("eddy_mqtt_refused_connections_total").await,
        2.0
    );
    assert_eq!(server.metric("eddy_mqtt_connect_timeouts_total").await, 1.0);
    server.http.terminate();
}

/// Under `ulimit -n 256`, the default caps (1,000 HTTP and 10,000 MQTT connections) would let
/// idle clients take every descriptor, and then REST answers nobody. The server lowers the caps
/// to fit: of the 128 descriptors left after the 128 it keeps for itself, 11 HTTP and 117 MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_fit_under_the_open_file_limit() {
    let server = Mqtt::spawn(&[], None, Some(256));
    create_readings(&server).await;
    // 300 sessions with keep-alive 0, as an attacker would hold them.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = server.tcp().await;
        let _ = stream.write_all(&connect_v4(0, None)).await;
        held.push(stream);
    }
    server
        .expect_metric("eddy_mqtt_refused_connections_total", 183.0)
        .await;
    server.expect_metric("eddy_mqtt_connections", 117.0).await;
    // REST still answers, and once one session ends a publish lands.
    let query = server
        .push("SELECT car_id FROM readings EMIT CHANGES LIMIT 1;")
        .await;
    // Each held session got its CONNACK (accepted, no session present); each refused one, the end.
    let mut accepted = 0;
    for stream in &mut held {
        let mut first = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first));
        match read.await.expect("CONNACK or the end within 5 s") {
            Ok(4) => {
                assert_eq!(first, [0x20, 2, 0, 0]);
                accepted += 1;
            }
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("{:02x?}", &first[..n]),
        }
    }
    assert_eq!(accepted, 117);
    held.clear();
    server.expect_metric("eddy_mqtt_connections", 0.0).await;
    let (ok, stderr) = server.pub_(&[
        "-h",
        "127.0.0.1",
        "-q",
        "1",
        "-t",
        "car/1",
        "-m",
        &reading(3),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(rows(query).await, vec![json!([3])]);
    server.http.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_capped_and_idle_sessions_are_closed() {
    let server = Mqtt::start(&["--mqtt-max-keep-alive", "1"], None);

    // MQTT 5, keep-alive 0 (none) and 60: both get the maximum, and are told.
    let mut told = Vec::new();
    for asked in [0, 60] {
        let mut stream = server.tcp().await;
        stream.write_all(&connect_v5(asked, None)).await.unwrap();
        let mut buf = BytesMut::new();
        match read_v5(&mut stream, &mut buf).await {
            v5::Packet::ConnAck(ack) => {
                assert_eq!(ack.code, v5::ConnectReturnCode::Success);
                let props = ack.properties.expect("CONNACK properties");
                assert_eq!(props.server_keep_alive, Some(1), "asked {asked}");
                assert_eq!(props.max_packet_size, Some(1 << 20));
            }
            other => panic!("{other:?}"),
        }
        told.push(stream);
    }
    // Asking for what is allowed: not told otherwise.
    let mut within = server.tcp().await;
    within.write_all(&connect_v5(1, None)).await.unwrap();
    let mut buf = BytesMut::new();
    match read_v5(&mut within, &mut buf).await {
        v5::Packet::ConnAck(ack) => {
            assert_eq!(ack.properties.unwrap().server_keep_alive, None)
        }
        other => panic!("{other:?}"),
    }
    // MQTT 3.1.1 cannot be told: it is simply held to it.
    let mut v311 = server.tcp().await;
    v311.write_all(&connect_v4(0, None)).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_v4(&mut v311, &mut buf).await,
        v4::Packet::ConnAck(_)
    ));

    // None of them sends a packet again: all four are closed after 1.5 s of silence.
    for stream in told.iter_mut().chain([&mut within, &mut v311]) {
        assert_eq!(closed(stream).await, Vec::<u8>::new());
    }
    server
        .expect_metric("eddy_mqtt_keep_alive_timeouts_total", 4.0)
        .await;
    server.expect_metric("eddy_mqtt_connections", 0.0).await;
    server.http.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_with_the_exact_codes_and_counted() {
    let passwords = temp_file(
        "passwords",
        "# MQTT users\nalice:wonder:land\n\nbob:builder\n",
    );
    let server = Mqtt::start(
        &["--mqtt-password-file", passwords.as_str()],
        Some("s3cret-token"),
    );
    create_readings(&server).await;

    // MQTT 5 without a login: 0x86, bad user name or password.
    let mut stream = server.tcp().await;
    stream.write_all(&connect_v5(30, None)).await.unwrap();
    let mut buf = BytesMut::new();
    match read_v5(&mut stream, &mut buf).await {
        v5::Packet::ConnAck(ack) => {
            assert_eq!(ack.code, v5::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(closed(&mut stream).await, Vec::<u8>::new());
    // MQTT 3.1.1 with a wrong password: return code 4.
    let mut stream = server.tcp().await;
    stream
        .write_all(&connect_v4(30, Some(("alice", "wonder"))))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match read_v4(&mut stream, &mut buf).await {
        v4::Packet::ConnAck(ack) => {
            assert_eq!(ack.code, v4::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(closed(&mut stream).await, Vec::<u8>::new());
    // Real clients: a wrong password, a user's password under another name, the token as a
    // user name.
    for (version, user, password) in [
        ("mqttv311", "bob", "wrong"),
        ("mqttv5", "alice", "builder"),
        ("mqttv5", "s3cret-token", "x"),
    ] {
        let (ok, stderr) = server.pub_(&[
            "-h",
            "127.0.0.1",
            "-V",
            version,
            "-u",
            user,
            "-P",
            password,
            "-t",
            "car/1",
            "-m",
            "{}",
        ]);
        assert!(!ok, "{version} {user}:{password} got in");
        assert!(
            stderr.to_lowercase().contains("bad user name or password"),
            "{version}: {stderr:?}"
        );
    }
    server
        .expect_metric("eddy_mqtt_auth_failures_total", 5.0)
        .await;

    // Right passwords (one holding ':'), and the REST token under any user name, get in.
    let query = server
        .push("SELECT car_id FROM readings EMIT CHANGES LIMIT 3;")
        .await;
    for (n, version, user, password) in [
        (1, "mqttv311", "alice", "wonder:land"),
        (2, "mqttv5", "bob", "builder"),
        (3, "mqttv5", "any-device", "s3cret-token"),
    ] {
        let (ok, stderr) = server.pub_(&[
            "-h",
            "127.0.0.1",
            "-V",
            version,
            "-u",
            user,
            "-P",
            password,
            "-q",
            "1",
            "-t",
            "car/1",
            "-m",
            &reading(n),
        ]);
        assert!(ok, "{version} {user}: {stderr}");
    }
    assert_eq!(rows(query).await, vec![json!([1]), json!([2]), json!([3])]);
    assert_eq!(server.metric("eddy_mqtt_auth_failures_total").await, 5.0);
    server.http.terminate();
}

/// Each failed login from an address spaces that address's next attempts further apart (0.1 s
/// after the first, doubling, at most 5 s), and an attempt whose turn is over 30 s away is
/// refused unchecked: guessing costs time however many connections are opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_slow_their_address_down() {
    let passwords = temp_file("passwords", "alice:wonderland\n");
    let server = Mqtt::start(&["--mqtt-password-file", passwords.as_str()], None);
    let shared = &server;
    let login = move |password: &'static str| async move {
        let mut stream = shared.tcp().await;
        stream
            .write_all(&connect_v4(30, Some(("alice", password))))
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        match read_v4(&mut stream, &mut buf).await {
            v4::Packet::ConnAck(ack) => ack.code,
            other => panic!("{other:?}"),
        }
    };
    // Seven wrong guesses, one after another: about 6.3 s of waiting in all.
    let started = Instant::now();
    for _ in 0..7 {
        assert_eq!(
            login("guess").await,
            v4::ConnectReturnCode::BadUserNamePassword
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(6300));
    // Now 5 s apart: of ten guesses sent together, six get a turn within 30 s and four are
    // refused at once, unchecked; the right password too is refused until the turns clear.
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut stream = server.tcp().await;
        stream
            .write_all(&connect_v4(30, Some(("alice", "guess"))))
            .await
            .unwrap();
        held.push(stream);
    }
    server
        .expect_metric("eddy_mqtt_throttled_logins_total", 4.0)
        .await;
    assert_eq!(
        login("wonderland").await,
        v4::ConnectReturnCode::ServiceUnavailable
    );
    server
        .expect_metric("eddy_mqtt_throttled_logins_total", 5.0)
        .await;
    assert_eq!(server.metric("eddy_mqtt_auth_failures_total").await, 7.0);
    server.http.terminate();
}

/// A publish fixed header declaring `len` bytes to follow.
fn publish_header(len: usize) -> Vec<u8> {
    let mut out = vec![0x30];
    let mut len = len;
    loop {
        let byte = (len & 0x7F) as u8;
        len >>= 7;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_oversized_and_over_budget_publishes_close_only_their_connection() {
    const BUDGET: usize = 3_000_000;
    let server = Mqtt::start(&["--mqtt-max-unfinished-bytes", &BUDGET.to_string()], None);
    create_readings(&server).await;

    // MQTT 5: a wildcard topic gets DISCONNECT 0x90 (topic name invalid), then the end.
    let mut stream = server.tcp().await;
    let mut out = connect_v5(30, None);
    let mut publish = v5::Publish::new(
        "car/#",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        "{}",
        None,
    );
    publish.pkid = 1;
    v5::Packet::Publish(publish).write(&mut out, None).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_v5(&mut stream, &mut buf).await,
        v5::Packet::ConnAck(_)
    ));
    match read_v5(&mut stream, &mut buf).await {
        v5::Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, v5::DisconnectReasonCode::TopicNameInvalid)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(closed(&mut stream).await, Vec::<u8>::new());
    // MQTT 3.1.1 has no DISCONNECT from the server: the connection just ends.
    let mut stream = server.tcp().await;
    let mut out = connect_v4(30, None);
    v4::Packet::Publish(v4::Publish::new("car/+/speed", QoS::AtMostOnce, "{}"))
        .write(&mut out, usize::MAX)
        .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_v4(&mut stream, &mut buf).await,
        v4::Packet::ConnAck(_)
    ));
    assert_eq!(closed(&mut stream).await, Vec::<u8>::new());
    server
        .expect_metric("eddy_mqtt_invalid_topics_total", 2.0)
        .await;

    // A PUBLISH declaring more than the 1 MiB packet limit is refused as soon as its header is in.
    let mut stream = server.tcp().await;
    let mut out = connect_v4(30, None);
    out.extend_from_slice(&publish_header((1 << 20) + 1));
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_v4(&mut stream, &mut buf).await,
        v4::Packet::ConnAck(_)
    ));
    assert_eq!(closed(&mut stream).await, Vec::<u8>::new());
    server.expect_metric("eddy_mqtt_too_large_total", 1.0).await;

    // Unfinished 900 kB publishes, 700 kB of each sent: four fit in the 3 MB budget, the
    // fifth would not and is closed; the four stay open.
    const SENT: usize = 700_000;
    let header = publish_header(900_000);
    let held = header.len() + SENT;
    let mut unfinished = Vec::new();
    for n in 1..=5 {
        let mut stream = server.tcp().await;
        let mut out = connect_v4(30, None);
        out.extend_from_slice(&header);
        out.extend_from_slice(&[0, 5]);
        out.extend_from_slice(b"car/9");
        out.resize(out.len() + SENT - 7, b'x');
        // The fifth may be closed while still writing.
        let wrote = stream.write_all(&out).await;
        if n <= 4 {
            wrote.unwrap();
            server
                .expect_metric("eddy_mqtt_unfinished_bytes", (n * held) as f64)
                .await;
            unfinished.push(stream);
        } else {
            let got = closed(&mut stream).await;
            // At most its CONNACK came before the end.
            assert!(got.len() <= 4, "{got:02x?}");
        }
    }
    server
        .expect_metric("eddy_mqtt_over_budget_total", 1.0)
        .await;
    assert_eq!(
        server.metric("eddy_mqtt_unfinished_bytes").await,
        (4 * held) as f64
    );
    assert_eq!(server.metric("eddy_mqtt_connections").await, 4.0);

    // Meanwhile a well-behaved client is served.
    let query = server
        .push("SELECT car_id FROM readings EMIT CHANGES LIMIT 1;")
        .await;
    let (ok, stderr) = server.pub_(&[
        "-h",
        "127.0.0.1",
        "-q",
        "1",
        "-t",
        "car/2",
        "-m",
        &reading(2),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(rows(query).await, vec![json!([2])]);
    // The unfinished ones give their bytes back when they go.
    drop(unfinished);
    server
        .expect_metric("eddy_mqtt_unfinished_bytes", 0.0)
        .await;
    assert_eq!(server.metric("eddy_mqtt_invalid_topics_total").await, 2.0);
    assert_eq!(server.metric("eddy_mqtt_too_large_total").await, 1.0);
    assert_eq!(server.metric("eddy_mqtt_over_budget_total").await, 1.0);
    server.http.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_publishes_over_tls_and_plain_tcp_is_refused() {
    let dir = std::env::temp_dir().join(format!("eddy-mqtt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl not found");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let server = Mqtt::start(&["--mqtt-tls-cert", &cert, "--mqtt-tls-key", &key], None);
    create_readings(&server).await;

    let query = server
        .push("SELECT car_id FROM readings EMIT CHANGES LIMIT 2;")
        .await;
    for (n, version) in [(1, "mqttv311"), (2, "mqttv5")] {
        let (ok, stderr) = server.pub_(&[
            "-h",
            "localhost",
            "--cafile",
            &cert,
            "-V",
            version,
            "-q",
            "1",
            "-t",
            "car/1",
            "-m",
            &reading(n),
        ]);
        assert!(ok, "{version} over TLS: {stderr}");
    }
    assert_eq!(rows(query).await, vec![json!([1]), json!([2])]);

    // Plain MQTT on the TLS port fails the handshake, and is counted.
    let (ok, _) = server.pub_(&["-h", "127.0.0.1", "-t", "car/1", "-m", &reading(3)]);
    assert!(!ok, "plain MQTT got through a TLS listener");
    server
        .expect_metric("eddy_mqtt_tls_failures_total", 1.0)
        .await;
    assert_eq!(server.metric("eddy_mqtt_forwarded_total").await, 2.0);
    server.http.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `eddy mqtt-proxy` takes the same limits and logins under its own flag names, and its stats
/// line counts the refusals. No Kafka is needed: nothing here is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_proxy_checks_logins_caps_connections_and_counts_both_in_its_stats_line() {
    use std::io::{BufRead, BufReader};

    let passwords = temp_file("proxy-passwords", "dev:pw\n");
    let port = eddy_tests::kafka::free_port();
    let mut proxy = crate::reaped::Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["mqtt-proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--bootstrap-servers",
                &format!("127.0.0.1:{}", eddy_tests::kafka::free_port()),
            ])
            .args(["--map", "t:.*", "--password-file", &passwords])
            .args(["--max-connections", "1", "--stats-interval", "1"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting eddy mqtt-proxy"),
    );
    let proxy = &mut *proxy;
    let mut line = String::new();
    BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line:?}");
    // Stats lines, read on a thread: the proxy writes them every second.
    let (lines, stats) = std::sync::mpsc::channel();
    let stderr = proxy.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });

    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", "dev", "-P", "nope", "-t", "car/1", "-m", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.to_lowercase().contains("bad user name or password"),
        "{stderr:?}"
    );
    // The right login takes the one place; the next connection is closed unread.
    let mut held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    held.write_all(&connect_v4(30, Some(("dev", "pw"))))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match read_v4(&mut held, &mut buf).await {
        v4::Packet::ConnAck(ack) => assert_eq!(ack.code, v4::ConnectReturnCode::Success),
        other => panic!("{other:?}"),
    }
    let mut refused = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(closed(&mut refused).await, Vec::<u8>::new());

    let started = Instant::now();
    loop {
        let line = stats
            .recv_timeout(Duration::from_secs(30))
            .expect("a stats line");
        if line.contains("refused_connections: 1") {
            assert!(line.contains("auth_failures: 1,"), "{line}");
            assert!(line.contains("Stats { connections: 1,"), "{line}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no stats line counted the refusal; last: {line}"
        );
    }
}
