//! MQTT connector tests against a real broker.
//!
//! Tests share one mosquitto, each under a topic prefix and client ids of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_connector::{Error, Message, Source};
use eddy_mqtt::rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use eddy_mqtt::{MqttConfig, MqttSource};
use eddy_tests::mqtt::{publish, shared, Mosquitto};

/// How long a source stays silent before a test decides nothing more is coming.
const QUIET: Duration = Duration::from_millis(300);
/// How long a source may stay silent while more is certainly coming.
const WAIT: Duration = Duration::from_secs(10);

/// A client id unique to this test process.
fn client_id(name: &str) -> String {
    format!("eddy-it-{name}-{}", std::process::id())
}

/// `{"car":c,"i":i,…}`, a small sensor reading.
fn reading(car: usize, i: usize) -> Vec<u8> {
    format!(
        r#"{{"car":{car},"i":{i},"speed_kmh":{}.5,"rpm":{}}}"#,
        i % 180,
        800 + i % 5000
    )
    .into_bytes()
}

/// The `i` of a payload made by [`reading`] or a bare number.
fn index(message: &Message) -> usize {
    let text = std::str::from_utf8(&message.payload).unwrap();
    let i = text
        .split_once(r#""i":"#)
        .map(|(_, rest)| rest.split(',').next().unwrap())
        .unwrap_or(text);
    i.parse().unwrap_or_else(|_| panic!("payload {text}"))
}

fn topic(message: &Message) -> String {
    String::from_utf8(message.key.clone().expect("the topic is the key")).unwrap()
}

/// Polls until `done` holds for everything read, or until nothing arrives for `quiet`; after
/// every batch commits what was read, but never past `commit_limit`.
async fn read(
    source: &mut MqttSource,
    done: impl Fn(&[Message]) -> bool,
    commit_limit: i64,
    quiet: Duration,
) -> Vec<Message> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut read = Vec::new();
    let mut last = Instant::now();
    while !done(&read) && last.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "{} read, still not done",
            read.len()
        );
        let batch = source
            .poll(1000, Duration::from_millis(50))
            .await
            .expect("poll")
            .expect("an MQTT source never ends");
        let Some(newest) = batch.last() else { continue };
        let next = newest.position.offset + 1;
        read.extend(batch);
        last = Instant::now();
        source
            .commit(&BTreeMap::from([(0, next.min(commit_limit))]))
            .await
            .expect("commit");
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_subscription_reads_every_message_once_in_order() {
    const CARS: usize = 4;
    const PER_CAR: usize = 500;
    const N: usize = CARS * PER_CAR;
    let url = shared().url();
    let config = MqttConfig::new(&url, client_id("wildcard"));
    let mut source = MqttSource::subscribe(&config, &["wildcard/cars/+/sensors".to_string()])
        .await
        .unwrap();

    let started = Instant::now();
    futures::future::join_all((0..CARS).map(|car| {
        let payloads: Vec<_> = (0..PER_CAR).map(|i| reading(car, i)).collect();
        let url = url.clone();
        async move { publish(&url, &format!("wildcard/cars/{car}/sensors"), &payloads, 1).await }
    }))
    .await;
    let published = started.elapsed();
    // Publishing fills the broker's queue for the source, which gets only its in-flight
    // window until it commits: what follows times the source draining that queue.
    let started = Instant::now();
    let messages = read(&mut source, |read| read.len() >= N, i64::MAX, WAIT).await;
    let drained = started.elapsed();
    let extra = read(&mut source, |_| false, i64::MAX, QUIET).await;
    eprintln!(
        "mqtt: published {N} in {published:?}; source read them in {drained:?} ({:.0} messages/s)",
        N as f64 / drained.as_secs_f64()
    );

    assert_eq!(messages.len(), N, "{} extra after", extra.len());
    assert!(
        extra.is_empty(),
        "{} messages beyond the {N} published",
        extra.len()
    );
    let offsets: Vec<i64> = messages.iter().map(|m| m.position.offset).collect();
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    assert!(messages.iter().all(|m| m.position.partition == 0));
    let mut per_car = vec![Vec::new(); CARS];
    for message in &messages {
        let topic = topic(message);
        let car: usize = topic
            .strip_prefix("wildcard/cars/")
            .and_then(|t| t.strip_suffix("/sensors"))
            .unwrap_or_else(|| panic!("unexpected topic {topic}"))
            .parse()
            .unwrap();
        let i = index(message);
        assert_eq!(message.payload, reading(car, i));
        assert_eq!(message.origin, format!("mqtt:{topic}"));
        let ms = message.timestamp_ms.expect("arrival time");
        assert!((1_600_000_000_000..4_000_000_000_000).contains(&ms), "{ms}");
        per_car[car].push(i);
    }
    for (car, indices) in per_car.iter().enumerate() {
        // MQTT keeps one publisher's messages on one topic in order.
        assert_eq!(*indices, (0..PER_CAR).collect::<Vec<_>>(), "car {car}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_what_a_source_reads() {
    let url = shared().url();
    let mut nothing = MqttSource::subscribe(
        &MqttConfig::new(&url, client_id("nothing")),
        &["filters/nothing/+".to_string()],
    )
    .await
    .unwrap();
    // Two filters in one source, at QoS 0, which needs no acks.
    let config = MqttConfig {
        qos: 0,
        clean_session: true,
        ..MqttConfig::new(&url, client_id("two-filters"))
    };
    let mut two = MqttSource::subscribe(
        &config,
        &["filters/a/1".to_string(), "filters/b/#".to_string()],
    )
    .await
    .unwrap();

    let payloads = |from: usize| (from..from + 3).map(|i| i.to_string().into_bytes());
    publish(&url, "filters/a/1", &payloads(0).collect::<Vec<_>>(), 1).await;
    publish(&url, "filters/b/x/y", &payloads(3).collect::<Vec<_>>(), 1).await;
    publish(&url, "filters/c", &payloads(6).collect::<Vec<_>>(), 1).await;
    publish(
        &url,
        "filters/nothing/a/b",
        &payloads(9).collect::<Vec<_>>(),
        1,
    )
    .await;

    let got = read(&mut two, |read| read.len() >= 6, i64::MAX, WAIT).await;
    let got: BTreeSet<(String, usize)> = got.iter().map(|m| (topic(m), index(m))).collect();
    let want: BTreeSet<(String, usize)> = (0..3)
        .map(|i| ("filters/a/1".to_string(), i))
        .chain((3..6).map(|i| ("filters/b/x/y".to_string(), i)))
        .collect();
    assert_eq!(got, want);
    assert!(read(&mut two, |_| false, i64::MAX, QUIET).await.is_empty());
    let none = read(&mut nothing, |_| false, i64::MAX, QUIET).await;
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_messages_are_redelivered_to_the_next_source_with_the_client_id() {
    const N: usize = 300;
    const K: usize = 100;
    let url = shared().url();
    let config = MqttConfig::new(&url, client_id("resume"));
    let filters = ["resume/#".to_string()];
    let mut first = MqttSource::subscribe(&config, &filters).await.unwrap();
    let payloads: Vec<_> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    publish(&url, "resume/events", &payloads, 1).await;

    // Commits only the first K. Whether the broker then stops at its in-flight window
    // depends on it: mosquitto 2.0.11 lets up to `max_inflight_messages` more through for
    // every ack of the oldest message in flight, so here the first source reads all N.
    let seen_first = read(&mut first, |_| false, K as i64, QUIET).await;
    let first_indices: Vec<usize> = seen_first.iter().map(index).collect();
    assert_eq!(first_indices, (0..seen_first.len()).collect::<Vec<_>>());
    assert!(
        seen_first.len() > K,
        "the first source read {} of {N}",
        seen_first.len()
    );
    drop(first);

    let mut second = MqttSource::subscribe(&config, &filters).await.unwrap();
    let seen_second = read(
        &mut second,
        |read| read.iter().map(index).collect::<BTreeSet<_>>().len() >= N - K,
        i64::MAX,
        WAIT,
    )
    .await;
    let indices: Vec<usize> = seen_second.iter().map(index).collect();
    let distinct: BTreeSet<usize> = indices.iter().copied().collect();
    let redelivered = indices.iter().filter(|&&i| i < seen_first.len()).count();
    eprintln!(
        "mqtt: first source read {} and committed {K}; the second read {} ({} distinct), \
         {redelivered} of them already read by the first",
        seen_first.len(),
        indices.len(),
        distinct.len()
    );
    assert_eq!(
        distinct,
        (K..N).collect(),
        "the second source gets exactly what was not committed"
    );
    assert_eq!(
        redelivered,
        seen_first.len() - K,
        "everything the first read but did not commit comes again, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_resumed_without_losing_uncommitted_messages() {
    const N: usize = 60;
    const K: usize = 10;
    eddy_tests::logs();
    let url = shared().url();
    let id = client_id("reconnect");
    let config = MqttConfig::new(&url, &id);
    let mut source = MqttSource::subscribe(&config, &["reconnect/#".to_string()])
        .await
        .unwrap();
    let payloads: Vec<_> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    publish(&url, "reconnect/events", &payloads, 1).await;
    let before = read(&mut source, |_| false, K as i64, QUIET).await;
    assert!(before.len() > K, "read {}", before.len());

    // Another client taking the session over makes the broker drop the source's connection;
    // it acks nothing, so what the source had in flight stays in the session.
    let (host, port) = eddy_mqtt::parse_broker(&url).unwrap();
    let mut options = MqttOptions::new(id.clone(), host, port);
    options.set_clean_session(false).set_manual_acks(true);
    let (intruder, mut events) = AsyncClient::new(options, 10);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await.expect("the intruder connects") {
                Event::Incoming(Packet::ConnAck(_)) => break,
                _ => continue,
            }
        }
        intruder.disconnect().await.unwrap();
        while events.poll().await.is_ok() {}
    })
    .await
    .expect("the intruder comes and goes");

    let after = read(
        &mut source,
        |read| read.iter().any(|m| index(m) == N - 1),
        i64::MAX,
        WAIT,
    )
    .await;
    let after: Vec<usize> = after.iter().map(index).collect();
    let distinct: BTreeSet<usize> = after.iter().copied().collect();
    eprintln!(
        "mqtt: read {} and committed {K} before the connection was lost, {} after",
        before.len(),
        after.len()
    );
    assert_eq!(distinct, (K..N).collect(), "after the reconnect: {after:?}");
    assert!(
        read(&mut source, |_| false, i64::MAX, QUIET)
            .await
            .is_empty(),
        "everything committed stays acknowledged"
    );
    let logs = eddy_tests::logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("MQTT connection lost") && l.contains(&url)),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_messages_are_released_once_committed() {
    const N: usize = 50;
    let url = shared().url();
    let config = MqttConfig {
        qos: 2,
        ..MqttConfig::new(&url, client_id("qos2"))
    };
    let filters = ["qos2/#".to_string()];
    let mut first = MqttSource::subscribe(&config, &filters).await.unwrap();
    let payloads: Vec<_> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    publish(&url, "qos2/events", &payloads, 2).await;
    let read_first = read(&mut first, |read| read.len() >= N, i64::MAX, WAIT).await;
    let indices: Vec<usize> = read_first.iter().map(index).collect();
    assert_eq!(indices, (0..N).collect::<Vec<_>>());
    // Lets the PUBREC, PUBREL, PUBCOMP exchanges finish before the connection goes.
    assert!(read(&mut first, |_| false, i64::MAX, QUIET)
        .await
        .is_empty());
    drop(first);
    let mut second = MqttSource::subscribe(&config, &filters).await.unwrap();
    let again = read(&mut second, |_| false, i64::MAX, QUIET).await;
    assert!(again.is_empty(), "{} redelivered", again.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_fast_naming_the_broker() {
    eddy_tests::logs();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let started = Instant::now();
    let result =
        MqttSource::subscribe(&MqttConfig::new(&url, client_id("nothing")), &["#".into()]).await;
    let Err(Error::Io(e)) = result else {
        panic!("expected an I/O error")
    };
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains(&url), "{e}");
}

#[tokio::test]
async fn a_malformed_filter_is_refused_before_connecting() {
    let config = MqttConfig::new("mqtt://127.0.0.1:9", client_id("malformed"));
    let result = MqttSource::subscribe(&config, &["ok/+".into(), "bad/#/x".into()]).await;
    let Err(Error::Config(e)) = result else {
        panic!("expected a config error")
    };
    assert!(e.contains("'bad/#/x'"), "{e}");
}

#[test]
fn a_broker_of_its_own_stops_on_drop() {
    let broker = Mosquitto::start();
    let port = broker.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(broker.log().contains("running"), "{}", broker.log());
    drop(broker);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Throughput of one source draining a backlog; run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    const N: usize = 100_000;
    let url = shared().url();
    for qos in [0u8, 1] {
        let config = MqttConfig {
            qos,
            ..MqttConfig::new(&url, client_id(&format!("throughput-{qos}")))
        };
        let topic = format!("throughput/{qos}");
        let mut source = MqttSource::subscribe(&config, std::slice::from_ref(&topic))
            .await
            .unwrap();
        let payloads: Vec<_> = (0..N).map(|i| reading(i % 50, i)).collect();
        let started = Instant::now();
        publish(&url, &topic, &payloads, 1).await;
        let published = started.elapsed();
        let started = Instant::now();
        let messages = read(&mut source, |read| read.len() >= N, i64::MAX, WAIT).await;
        let elapsed = started.elapsed();
        eprintln!(
            "mqtt: QoS {qos}: published {N} in {published:?}; read {} in {elapsed:?}: \
             {:.0} messages/s",
            messages.len(),
            messages.len() as f64 / elapsed.as_secs_f64()
        );
    }
}
