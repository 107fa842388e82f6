//! The MQTT endpoint with a real client (Debian's `mosquitto_pub`) and a real Kafka (tansu):
//! exact counts, order per MQTT topic, and no acknowledgement while Kafka is away.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eddy_connector::Source;
use eddy_kafka::{ensure_topic, KafkaSource, OffsetReset};
use eddy_mqtt_endpoint::{Endpoint, EndpointConfig, TopicRule};
use eddy_tests::kafka::{free_port, shared, test_config, unique};

use crate::reaped::Reaped;

/// Starts `mosquitto_pub` sending one message per line of `lines` to `topic` on `port`.
fn mosquitto_pub(port: u16, topic: &str, qos: u8, version: &str, lines: &[String]) -> Reaped {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-q", &qos.to_string(), "-V", version, "-M", "64", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub not found: run ./setup.sh (package mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    // Written from a thread: with Kafka away the client stops reading its stdin.
    std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    Reaped::new(child)
}

/// Waits for a client to exit successfully within `limit`.
fn wait_ok(client: &mut Reaped, limit: Duration, what: &str) {
    let start = Instant::now();
    loop {
        if let Some(status) = client.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = client.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            assert!(status.success(), "{what}: mosquitto_pub {status}: {stderr}");
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: mosquitto_pub still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `topic` from the start until `expected` records arrived (and a little longer, to catch
/// extras), as (key, payload) pairs in the order of each partition.
async fn read_back(bootstrap: &str, topic: &str, expected: usize) -> BTreeMap<String, Vec<String>> {
    let mut source = KafkaSource::subscribe(
        &test_config(bootstrap, &unique("mqtt-check")),
        topic,
        OffsetReset::Earliest,
    )
    .unwrap();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut total = 0;
    let start = Instant::now();
    let mut extra_wait: Option<Instant> = None;
    loop {
        let messages = source
            .poll(10_000, Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap_or_default();
        for m in messages {
            let key = String::from_utf8(m.key.unwrap_or_default()).unwrap();
            by_key
                .entry(key)
                .or_default()
                .push(String::from_utf8(m.payload).unwrap());
            total += 1;
        }
        if total >= expected {
            let since = *extra_wait.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(500) {
                return by_key;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {total} of {expected} records reached {topic}"
        );
    }
}

fn numbered(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_at_qos_0_1_2_lands_exactly_n_records_in_order() {
    const N: usize = 2_000;
    let broker = shared();
    let topic = unique("mqtt-temperature");
    ensure_topic(&broker.config("admin"), &topic, 3)
        .await
        .unwrap();
    let port = free_port();
    let mut eddy = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["mqtt-proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--bootstrap-servers", &broker.bootstrap()])
            .args(["--map", &format!("{topic}:car/.*/temperature")])
            .args(["--stats-interval", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting eddy mqtt-proxy"),
    );
    let mut line = String::new();
    BufReader::new(eddy.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line:?}");

    let started = Instant::now();
    let cases = [
        (0, "mqttv311"),
        (1, "mqttv311"),
        (2, "mqttv311"),
        (1, "mqttv5"),
        (2, "mqttv5"),
    ];
    let mut clients: Vec<(String, Reaped)> = cases
        .iter()
        .map(|(qos, version)| {
            let mqtt_topic = format!("car/q{qos}-{version}/temperature");
            let client = mosquitto_pub(port, &mqtt_topic, *qos, version, &numbered(N, "m"));
            (mqtt_topic, client)
        })
        .collect();
    // Unmapped: acknowledged (3.1.1 has no negative ack) but not forwarded.
    let mut unmapped = mosquitto_pub(port, "car/1/speed", 1, "mqttv311", &numbered(3, "s"));
    for (mqtt_topic, client) in &mut clients {
        wait_ok(client, Duration::from_secs(60), mqtt_topic);
    }
    wait_ok(&mut unmapped, Duration::from_secs(60), "unmapped");
    let elapsed = started.elapsed();

    let by_key = read_back(&broker.bootstrap(), &topic, N * cases.len()).await;
    let expected = numbered(N, "m");
    for (mqtt_topic, _) in &clients {
        let got = by_key.get(mqtt_topic).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(got.len(), N, "{mqtt_topic}: {} records", got.len());
        assert!(got == expected, "{mqtt_topic}: records out of order");
    }
    assert_eq!(by_key.len(), cases.len(), "keys: {:?}", by_key.keys());
    eprintln!(
        "{} publishes from {} mosquitto_pub clients acknowledged in {elapsed:?}",
        N * cases.len(),
        cases.len()
    );
}

/// Kafka is not there when a device publishes at QoS 1: nothing is acknowledged, the endpoint
/// says Kafka is unreachable, and once a broker comes up every record lands, in order.
///
/// tansu keeps topics in memory, so "Kafka comes back" is a fresh tansu started on the port the
/// endpoint was pointed at, with the topic created right away; librdkafka holds the records
/// (`message.timeout.ms=0`) and sends them once it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_away_means_no_ack_and_nothing_lost_once_it_is_back() {
    const N: usize = 300;
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let topic = unique("mqtt-away");
    let rule = TopicRule::new(&topic, ".*").unwrap();
    let endpoint = Endpoint::start(EndpointConfig::new(
        "127.0.0.1:0",
        test_config(&bootstrap, "unused"),
        vec![rule],
    ))
    .await
    .unwrap();
    let mqtt_port = endpoint.local_addr().port();
    let mut client = mosquitto_pub(
        mqtt_port,
        "car/7/temperature",
        1,
        "mqttv311",
        &numbered(N, "t"),
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = endpoint.stats();
    assert!(
        client.try_wait().unwrap().is_none(),
        "mosquitto_pub finished although Kafka was away"
    );
    assert_eq!(stats.forwarded, 0, "{stats:?}");
    assert!(stats.inflight > 0, "{stats:?}");
    assert!(stats.published <= 64, "window not bounded: {stats:?}");
    assert!(!stats.kafka_reachable, "{stats:?}");
    assert_eq!(stats.blocked_connections, 1, "{stats:?}");

    let _kafka = eddy_tests::kafka::Broker::start_on(port);
    ensure_topic(&test_config(&bootstrap, "admin"), &topic, 1)
        .await
        .unwrap();
    wait_ok(
        &mut client,
        Duration::from_secs(60),
        "after Kafka came back",
    );

    let by_key = read_back(&bootstrap, &topic, N).await;
    assert_eq!(by_key.len(), 1, "{:?}", by_key.keys());
    assert!(
        by_key["car/7/temperature"] == numbered(N, "t"),
        "lost, duplicated or reordered"
    );
    let stats = endpoint.stats();
    assert_eq!(
        (stats.forwarded, stats.inflight),
        (N as u64, 0),
        "{stats:?}"
    );
    assert!(stats.kafka_reachable, "{stats:?}");
    endpoint.shutdown(Duration::from_secs(5)).await;
}

/// What real clients see of the endpoint's refusals: an MQTT 5 publish on an unmapped topic is
/// negatively acknowledged (0x90, topic name invalid), subscriptions are denied and MQTT 3.1 is
/// refused; the counters say so. No Kafka is needed for any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_real_clients_and_the_counters() {
    let endpoint = Endpoint::start(EndpointConfig::new(
        "127.0.0.1:0",
        test_config(&format!("127.0.0.1:{}", free_port()), "unused"),
        vec![TopicRule::new("temperature", ".*temperature").unwrap()],
    ))
    .await
    .unwrap();
    let port = endpoint.local_addr().port().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("mosquitto_pub not found: run ./setup.sh (package mosquitto-clients)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for qos in ["1", "2"] {
        let (_, stderr) = run(&["-V", "mqttv5", "-q", qos, "-t", "car/1/speed", "-m", "x"]);
        assert!(
            stderr.contains("Topic Name invalid"),
            "QoS {qos}: {stderr:?}"
        );
    }
    let (ok, stderr) = run(&["-V", "mqttv31", "-t", "car/1/temperature", "-m", "x"]);
    assert!(
        !ok && stderr.contains("unacceptable protocol version"),
        "{stderr:?}"
    );
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "#", "-C", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&sub.stderr);
    assert!(stderr.contains("denied"), "{stderr:?}");

    let stats = endpoint.stats();
    assert_eq!((stats.unmapped, stats.forwarded), (2, 0), "{stats:?}");
    assert_eq!(stats.protocol_errors, 1, "{stats:?}");
    endpoint.shutdown(Duration::from_secs(1)).await;
}

/// `TopicAs::Header`: the MQTT topic travels in a record header and the record has no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_topic_can_be_a_header_instead_of_the_key() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};

    let broker = shared();
    let topic = unique("mqtt-header");
    ensure_topic(&broker.config("admin"), &topic, 1)
        .await
        .unwrap();
    let mut config = EndpointConfig::new(
        "127.0.0.1:0",
        broker.config("unused"),
        vec![TopicRule::new(&topic, ".*").unwrap()],
    );
    config.topic_as = eddy_mqtt_endpoint::TopicAs::Header("mqtt_topic".into());
    let endpoint = Endpoint::start(config).await.unwrap();
    let mut client = mosquitto_pub(
        endpoint.local_addr().port(),
        "car/3/temperature",
        1,
        "mqttv311",
        &numbered(1, "h"),
    );
    wait_ok(&mut client, Duration::from_secs(30), "header");

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", unique("mqtt-header-check"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    // Assigned, not subscribed: no group to form.
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let start = Instant::now();
    let message = loop {
        assert!(start.elapsed() < Duration::from_secs(30), "no record");
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            break result.unwrap().detach();
        }
    };
    assert_eq!(message.key(), None);
    assert_eq!(message.payload(), Some(&b"h-0"[..]));
    let header = message.headers().unwrap().get(0);
    assert_eq!(header.key, "mqtt_topic");
    assert_eq!(header.value, Some(&b"car/3/temperature"[..]));
    endpoint.shutdown(Duration::from_secs(1)).await;
}
