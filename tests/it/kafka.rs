//! Kafka connector tests against a real broker.
//!
//! Each test makes its own topics and groups on the process's shared tansu broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_connector::{Message, Record, Sink, Source};
use eddy_kafka::{ensure_topic, KafkaSink, KafkaSource, OffsetReset};
use eddy_tests::kafka::{shared, test_config, unique};

/// `n` keyed records, record `i` carrying `{"i":i,…}` and event time `1_700_000_000_000 + i`.
fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(format!("car-{:04}", i % 1000).into_bytes()),
            payload: Some(
                format!(
                    r#"{{"i":{i},"car":"car-{:04}","speed":{}.5}}"#,
                    i % 1000,
                    i % 200
                )
                .into_bytes(),
            ),
            timestamp_ms: Some(1_700_000_000_000 + i as i64),
            partition: None,
            upstream: None,
        })
        .collect()
}

/// The `i` a payload from [`records`] carries.
fn index(message: &Message) -> usize {
    let text = std::str::from_utf8(&message.payload).expect("utf-8 payload");
    let rest = text
        .strip_prefix(r#"{"i":"#)
        .unwrap_or_else(|| panic!("unexpected payload {text}"));
    rest[..rest.find(',').expect("a comma")]
        .parse()
        .expect("a number")
}

pub(crate) async fn produce(config: &eddy_kafka::KafkaConfig, topic: &str, records: Vec<Record>) {
    let mut sink = KafkaSink::new(config, topic).unwrap();
    for chunk in records.chunks(1000) {
        sink.send(chunk.to_vec()).await.unwrap();
    }
    sink.flush().await.unwrap();
}

/// Polls until `n` messages arrived, failing after `limit`.
async fn read(source: &mut KafkaSource, n: usize, limit: Duration) -> Vec<Message> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            start.elapsed() < limit,
            "read {} of {n} messages from {} in {limit:?}",
            out.len(),
            source.topic()
        );
        let batch = source
            .poll(n - out.len(), Duration::from_millis(100))
            .await
            .unwrap()
            .expect("a Kafka source never ends");
        out.extend(batch);
    }
    out
}

/// Polls until the group gave every source some partitions and they cover `partitions`.
async fn wait_for_assignment(sources: &mut [&mut KafkaSource], partitions: i32) {
    let start = Instant::now();
    loop {
        for source in sources.iter_mut() {
            let got = source.poll(100, Duration::from_millis(50)).await.unwrap();
            assert_eq!(got.map(|m| m.len()), Some(0), "no messages yet");
        }
        let assigned: Vec<Vec<i32>> = sources.iter().map(|s| s.assignment()).collect();
        let all: BTreeSet<i32> = assigned.iter().flatten().copied().collect();
        let total: usize = assigned.iter().map(Vec::len).sum();
        if assigned.iter().all(|a| !a.is_empty())
            && total == partitions as usize
            && all == (0..partitions).collect()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "group never settled: {assigned:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_round_trip_of_keyed_records() {
    const N: usize = 10_000;
    let broker = shared();
    let topic = unique("round-trip");
    let config = broker.config(&unique("round-trip-group"));
    ensure_topic(&config, &topic, 3).await.unwrap();
    // A second call finds the topic there and is fine with it.
    ensure_topic(&config, &topic, 3).await.unwrap();

    // Subscribed before anything is produced, and the first poll is abandoned while it waits:
    // whatever that fetch goes on to take must still come out of later polls.
    let mut source = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        source.poll(N, Duration::from_secs(10)),
    )
    .await;
    assert!(cancelled.is_err(), "nothing to read yet");

    let sent = records(N);
    let started = Instant::now();
    produce(&config, &topic, sent.clone()).await;
    let produced = started.elapsed();

    let started = Instant::now();
    let got = read(&mut source, N, Duration::from_secs(30)).await;
    let consumed = started.elapsed();
    eprintln!("kafka round trip: produced {N} in {produced:?}, read back in {consumed:?}");

    let mut seen = vec![false; N];
    let mut partitions = BTreeSet::new();
    for message in &got {
        let i = index(message);
        assert!(!seen[i], "record {i} read twice");
        seen[i] = true;
        assert_eq!(Some(&message.payload), sent[i].payload.as_ref());
        assert_eq!(message.key, sent[i].key, "key of record {i}");
        assert_eq!(
            message.timestamp_ms, sent[i].timestamp_ms,
            "time of record {i}"
        );
        assert_eq!(
            message.origin,
            format!(
                "{topic}[{}]@{}",
                message.position.partition, message.position.offset
            )
        );
        partitions.insert(message.position.partition);
    }
    assert_eq!(got.len(), N);
    assert_eq!(
        partitions,
        BTreeSet::from([0, 1, 2]),
        "keys spread over partitions"
    );
    // Per partition, offsets come in order with no gaps.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for message in &got {
        let expected = next.entry(message.position.partition).or_insert(0);
        assert_eq!(message.position.offset, *expected, "{}", message.origin);
        *expected += 1;
    }
    // Records with one key land in one partition.
    let mut partition_of_key = BTreeMap::new();
    for message in &got {
        let p = partition_of_key
            .entry(message.key.clone())
            .or_insert(message.position.partition);
        assert_eq!(*p, message.position.partition);
    }

    // Nothing more is there; an empty poll returns after about `wait`.
    let started = Instant::now();
    let more = source.poll(100, Duration::from_millis(300)).await.unwrap();
    assert_eq!(more, Some(vec![]));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_resumes_at_committed_offsets() {
    const N: usize = 3_000;
    let broker = shared();
    let topic = unique("resume");
    let config = broker.config(&unique("resume-group"));
    ensure_topic(&config, &topic, 3).await.unwrap();
    produce(&config, &topic, records(N)).await;

    // A processes the first 1000 messages it reads and commits just those; it read more.
    let mut a = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let read_by_a = read(&mut a, 1_500, Duration::from_secs(30)).await;
    let done = &read_by_a[..1_000];
    let mut next = BTreeMap::new();
    for message in done {
        next.insert(message.position.partition, message.position.offset + 1);
    }
    a.commit(&next).await.unwrap();
    drop(a);
    let committed: i64 = next.values().sum();
    assert_eq!(
        committed, 1_000,
        "offsets start at 0 and A read each partition in order"
    );

    let mut b = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let read_by_b = read(&mut b, N - 1_000, Duration::from_secs(30)).await;
    let mut first = BTreeMap::new();
    for message in &read_by_b {
        first
            .entry(message.position.partition)
            .or_insert(message.position.offset);
    }
    assert!(!first.is_empty());
    for (partition, offset) in first {
        assert_eq!(
            offset,
            next.get(&partition).copied().unwrap_or(0),
            "B resumes partition {partition} at A's commit"
        );
    }
    let seen: BTreeSet<usize> = done.iter().chain(&read_by_b).map(index).collect();
    assert_eq!(seen.len(), N, "every record done exactly once");
    assert_eq!(
        b.poll(100, Duration::from_millis(300)).await.unwrap(),
        Some(vec![])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_two_sources_split_a_topic() {
    const N: usize = 4_000;
    let broker = shared();
    let topic = unique("split");
    let config = broker.config(&unique("split-group"));
    ensure_topic(&config, &topic, 4).await.unwrap();

    let mut a = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let mut b = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let started = Instant::now();
    wait_for_assignment(&mut [&mut a, &mut b], 4).await;
    eprintln!("kafka: two consumers settled in {:?}", started.elapsed());
    let (mine_a, mine_b) = (a.assignment(), b.assignment());

    produce(&config, &topic, records(N)).await;
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    let start = Instant::now();
    while from_a.len() + from_b.len() < N {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "read {} + {} of {N}",
            from_a.len(),
            from_b.len()
        );
        let wait = Duration::from_millis(50);
        from_a.extend(a.poll(1_000, wait).await.unwrap().unwrap());
        from_b.extend(b.poll(1_000, wait).await.unwrap().unwrap());
    }
    assert_eq!(
        (a.assignment(), b.assignment()),
        (mine_a.clone(), mine_b.clone())
    );
    assert!(from_a
        .iter()
        .all(|m| mine_a.contains(&m.position.partition)));
    assert!(from_b
        .iter()
        .all(|m| mine_b.contains(&m.position.partition)));
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both did some work"
    );
    let seen: BTreeSet<usize> = from_a.iter().chain(&from_b).map(index).collect();
    assert_eq!(seen.len(), N);
    assert_eq!(from_a.len() + from_b.len(), N, "no record read twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_to_unreachable_broker_fails_on_flush() {
    let port = eddy_tests::kafka::free_port();
    let config =
        test_config(&format!("127.0.0.1:{port}"), "unused").with("message.timeout.ms", "1000");
    let topic = unique("nowhere");
    let mut sink = KafkaSink::new(&config, &topic).unwrap();
    sink.send(records(10)).await.unwrap();
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(10), sink.flush())
        .await
        .expect("flush gives up within message.timeout.ms")
        .expect_err("nothing was delivered");
    let message = error.to_string();
    assert!(message.contains(&topic), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The failure sticks: the engine must not take later records as durable.
    assert!(sink.flush().await.is_err());
    assert!(sink.send(records(1)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_commit_skips_partitions_the_group_moved_away() {
    const N: usize = 4_000;
    let broker = shared();
    let topic = unique("moved");
    let config = broker.config(&unique("moved-group"));
    ensure_topic(&config, &topic, 4).await.unwrap();
    produce(&config, &topic, records(N)).await;

    // A holds all four partitions and reads some of each (how much of which partition a fetch
    // returns is librdkafka's choice, so read until every partition has shown up).
    let mut a = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let mut read_by_a = Vec::new();
    let start = Instant::now();
    while read_by_a
        .iter()
        .map(|m: &Message| m.position.partition)
        .collect::<BTreeSet<_>>()
        .len()
        < 4
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "A read {} messages, not from every partition",
            read_by_a.len()
        );
        read_by_a.extend(
            a.poll(500, Duration::from_millis(100))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(a.assignment(), vec![0, 1, 2, 3]);

    // B joins; the group hands some of A's partitions to B.
    let mut b = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let start = Instant::now();
    loop {
        let wait = Duration::from_millis(50);
        read_by_a.extend(a.poll(500, wait).await.unwrap().unwrap());
        b.poll(500, wait).await.unwrap().unwrap();
        let (mine_a, mine_b) = (a.assignment(), b.assignment());
        if !mine_a.is_empty() && !mine_b.is_empty() && mine_a.len() + mine_b.len() == 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the group never rebalanced"
        );
    }
    let kept = a.assignment();

    // A commits everything it read, including partitions B holds now: those are skipped.
    let mut next = BTreeMap::new();
    for message in &read_by_a {
        let offset = next.entry(message.position.partition).or_insert(0);
        *offset = (*offset).max(message.position.offset + 1);
    }
    assert_eq!(next.len(), 4, "A read from every partition before B came");
    a.commit(&next).await.unwrap();
    drop(a);
    drop(b);

    // C resumes A's partitions at A's commit and B's from the start, as B committed nothing.
    let committed: i64 = kept.iter().map(|p| next[p]).sum();
    let mut c = KafkaSource::subscribe(&config, &topic, OffsetReset::Earliest).unwrap();
    let read_by_c = read(&mut c, N - committed as usize, Duration::from_secs(15)).await;
    let mut first = BTreeMap::new();
    for message in &read_by_c {
        first
            .entry(message.position.partition)
            .or_insert(message.position.offset);
    }
    for (partition, offset) in first {
        let expected = if kept.contains(&partition) {
            next[&partition]
        } else {
            0
        };
        assert_eq!(offset, expected, "C's start in partition {partition}");
    }
    assert_eq!(
        c.poll(100, Duration::from_millis(300)).await.unwrap(),
        Some(vec![])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_on_a_missing_topic_says_so() {
    let broker = shared();
    let topic = unique("missing");
    let config = broker.config(&unique("missing-group"));
    let mut source = KafkaSource::subscribe(&config, &topic, OffsetReset::Latest).unwrap();
    let start = Instant::now();
    let error = loop {
        match source.poll(10, Duration::from_millis(100)).await {
            Err(e) => break e,
            Ok(batch) => assert_eq!(batch, Some(vec![])),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no error for a missing topic"
        );
    };
    assert!(
        matches!(error, eddy_connector::Error::Config(_)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&topic) && message.contains(&broker.bootstrap()),
        "{message}"
    );
}

pub(crate) fn engine() -> eddy_stream::Engine {
    engine_of(&unique("eddy"))
}

pub(crate) async fn run(engine: &mut eddy_stream::Engine, sql: &str) -> eddy_stream::Output {
    match engine.execute(sql).await {
        Ok(output) => output,
        Err(e) => panic!("{sql}\n  failed: {e}"),
    }
}

/// Each row of `batch`, its columns as text.
pub(crate) fn text_rows(batch: &datafusion::arrow::array::RecordBatch) -> Vec<Vec<String>> {
    let options = datafusion::arrow::util::display::FormatOptions::default();
    let columns: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| {
            datafusion::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap()
        })
        .collect();
    (0..batch.num_rows())
        .map(|row| columns.iter().map(|c| c.value(row).to_string()).collect())
        .collect()
}

/// The rows of a push query (or PRINT) until it ends, each row's columns as text.
pub(crate) async fn collect(output: eddy_stream::Output) -> Vec<Vec<String>> {
    let eddy_stream::Output::Push(mut push) = output else {
        panic!("not a push query")
    };
    let mut rows = Vec::new();
    let read = async {
        while let Some(batch) = push.rows.recv().await {
            rows.extend(text_rows(&batch));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the push query ends at its LIMIT");
    rows
}

/// DELIMITED lines in, bad ones dead-lettered with their reasons; DELIMITED and KAFKA values
/// out of persistent queries; a KAFKA-format stream read back by a push query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delimited_and_kafka_value_formats() {
    let broker = shared();
    let input = unique("delimited-in");
    let output = unique("delimited-out");
    let speeds = unique("kafka-format-out");
    let dead = unique("delimited-dead");
    let config = broker.config(&unique("delimited-admin"));
    for topic in [&input, &dead] {
        ensure_topic(&config, topic, 1).await.unwrap();
    }
    let lines: [&[u8]; 6] = [
        b"1,alpha,1.5,first",
        b"2,\"beta, gamma\",2.5,\"said \"\"hi\"\"\"",
        b"3,delta,,empty speed",
        b"4,epsilon,abc,bad number",
        b"5,zeta,5.5",
        b"6,eta,6.5,last",
    ];
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| Record {
            key: None,
            payload: Some(line.to_vec()),
            timestamp_ms: Some(1_700_000_000_000 + i as i64),
            partition: None,
            upstream: None,
        })
        .collect();
    produce(&config, &input, records).await;

    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE STREAM readings (id BIGINT, name VARCHAR, speed DOUBLE, note VARCHAR) \
             WITH (kafka_topic='{input}', value_format='DELIMITED', dead_letter_topic='{dead}')"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM doubled WITH (kafka_topic='{output}', value_format='DELIMITED') AS \
             SELECT id, name, speed * 2 AS doubled, note FROM readings"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM speeds WITH (kafka_topic='{speeds}', value_format='KAFKA') AS \
             SELECT speed FROM readings"
        ),
    )
    .await;

    // The good lines, their fields in order; quoted where a field needs it, NULL as empty.
    let mut source = KafkaSource::subscribe(
        &broker.config(&unique("delimited-reader")),
        &output,
        OffsetReset::Earliest,
    )
    .unwrap();
    let got = read(&mut source, 4, Duration::from_secs(60)).await;
    let got: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "1,alpha,3.0,first",
            "2,\"beta, gamma\",5.0,\"said \"\"hi\"\"\"",
            "3,delta,,empty speed",
            "6,eta,13.0,last",
        ]
    );

    // KAFKA values: each speed as an 8-byte big-endian double, NULL as an empty payload.
    let mut source = KafkaSource::subscribe(
        &broker.config(&unique("kafka-format-reader")),
        &speeds,
        OffsetReset::Earliest,
    )
    .unwrap();
    let got = read(&mut source, 4, Duration::from_secs(60)).await;
    let payloads: Vec<Vec<u8>> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        payloads,
        [
            1.5f64.to_be_bytes().to_vec(),
            2.5f64.to_be_bytes().to_vec(),
            vec![],
            6.5f64.to_be_bytes().to_vec(),
        ]
    );
    assert_eq!(got[3].timestamp_ms, Some(1_700_000_000_005));

    // Both queries dead-letter the two bad lines, with the reasons and the raw line.
    let mut source = KafkaSource::subscribe(
        &broker.config(&unique("dead-reader")),
        &dead,
        OffsetReset::Earliest,
    )
    .unwrap();
    let letters = read(&mut source, 4, Duration::from_secs(60)).await;
    let mut letters: Vec<(String, String)> = letters
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            (
                v["reason"].as_str().unwrap().to_string(),
                v["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    letters.sort();
    letters.dedup();
    assert_eq!(
        letters,
        [
            (
                "column speed: 'abc' is not a DOUBLE".to_string(),
                "4,epsilon,abc,bad number".to_string()
            ),
            (
                "expected 4 fields, found 3".to_string(),
                "5,zeta,5.5".to_string()
            ),
        ]
    );
    let bad: u64 = engine.queries().iter().map(|q| q.bad_events).sum();
    assert_eq!(bad, 4, "two bad lines, counted by each query");

    // A KAFKA-format stream reads the single values back.
    run(
        &mut engine,
        &format!(
            "CREATE STREAM speed_values (speed DOUBLE) \
             WITH (kafka_topic='{speeds}', value_format='KAFKA')"
        ),
    )
    .await;
    run(&mut engine, "SET 'auto.offset.reset' = 'earliest'").await;
    let rows = collect(
        run(
            &mut engine,
            "SELECT speed, CAST(speed AS BIGINT) AS whole FROM speed_values EMIT CHANGES LIMIT 4",
        )
        .await,
    )
    .await;
    assert_eq!(
        rows,
        [
            vec!["1.5", "1"],
            vec!["2.5", "2"],
            vec!["", ""],
            vec!["6.5", "6"]
        ]
    );

    // KAFKA holds one value; a second column is an error naming the rule.
    let error = engine
        .execute(&format!(
            "CREATE STREAM two (a DOUBLE, b DOUBLE) WITH (kafka_topic='{speeds}', value_format='KAFKA')"
        ))
        .await
        .err()
        .expect("two columns in KAFKA")
        .to_string();
    assert!(
        error.contains("value_format 'KAFKA' holds a single primitive value"),
        "{error}"
    );

    // PRINT shows the raw lines, bad ones included.
    let printed = collect(
        run(
            &mut engine,
            &format!("PRINT '{input}' FROM BEGINNING LIMIT 6"),
        )
        .await,
    )
    .await;
    let values: Vec<&str> = printed.iter().map(|row| row[4].as_str()).collect();
    let expected: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect();
    assert_eq!(values, expected);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_delimited_stream_with_cast_over_a_udf_where_print_and_dead_letters() {
    let broker = shared();
    let input = unique("keyed-in");
    let dead = unique("keyed-dead");
    let config = broker.config(&unique("keyed-admin"));
    for topic in [&input, &dead] {
        ensure_topic(&config, topic, 1).await.unwrap();
    }
    let records: Vec<(Option<&[u8]>, &[u8])> = vec![
        (Some(b"car-0007"), b"50.5,3"),
        (Some(b"car-0002"), b"20,1"),
        (Some(&[0xff, 0xfe]), b"30,2"),
        (None, b"40,4"),
        (Some(b"car-0009"), b"70,5"),
    ];
    let records = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, payload))| Record {
            key: key.map(<[u8]>::to_vec),
            payload: Some(payload.to_vec()),
            timestamp_ms: Some(1_700_000_000_000 + i as i64),
            partition: None,
            upstream: None,
        })
        .collect();
    produce(&config, &input, records).await;

    let mut engine = engine();
    let text = eddy_tests::component("text");
    for function in ["shout", "car_number"] {
        run(
            &mut engine,
            &format!("CREATE FUNCTION {function} FROM '{}'", text.display()),
        )
        .await;
    }
    // The key column is not in the DELIMITED value: two fields, not three.
    run(
        &mut engine,
        &format!(
            "CREATE STREAM readings (car VARCHAR KEY, speed DOUBLE, gear VARCHAR) \
             WITH (kafka_topic='{input}', key_format='KAFKA', value_format='DELIMITED', \
             dead_letter_topic='{dead}')"
        ),
    )
    .await;
    run(&mut engine, "SET 'auto.offset.reset' = 'earliest'").await;
    let rows = collect(
        run(
            &mut engine,
            "SELECT car, speed, CAST(shout(gear, 0) AS INTEGER) AS gear_no FROM readings \
             WHERE car_number(car) > 5 EMIT CHANGES LIMIT 2",
        )
        .await,
    )
    .await;
    assert_eq!(
        rows,
        [vec!["car-0007", "50.5", "3"], vec!["car-0009", "70.0", "5"]]
    );

    // Every record, key or not: the one whose key is not UTF-8 is a bad event.
    let rows = collect(
        run(
            &mut engine,
            "SELECT car, gear FROM readings EMIT CHANGES LIMIT 4",
        )
        .await,
    )
    .await;
    assert_eq!(
        rows,
        [
            vec!["car-0007", "3"],
            vec!["car-0002", "1"],
            vec!["", "4"],
            vec!["car-0009", "5"]
        ]
    );

    // A persistent query over the stream dead-letters the record whose key is not UTF-8.
    run(
        &mut engine,
        "CREATE STREAM fast_cars AS SELECT car, speed FROM readings WHERE car_number(car) > 5",
    )
    .await;
    let mut source = KafkaSource::subscribe(
        &broker.config(&unique("keyed-dead-reader")),
        &dead,
        OffsetReset::Earliest,
    )
    .unwrap();
    let letters = read(&mut source, 1, Duration::from_secs(60)).await;
    for letter in &letters {
        let v: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
        assert!(
            v["reason"].as_str().unwrap().starts_with("bad key: "),
            "{v}"
        );
        assert_eq!(v["payload"], "30,2");
    }

    // PRINT shows the records as they are: keys, and the value without the key column.
    let printed = collect(
        run(
            &mut engine,
            &format!("PRINT '{input}' FROM BEGINNING LIMIT 5"),
        )
        .await,
    )
    .await;
    let keys_values: Vec<(&str, &str)> = printed
        .iter()
        .map(|row| (row[3].as_str(), row[4].as_str()))
        .collect();
    assert_eq!(
        keys_values,
        [
            ("car-0007", "50.5,3"),
            ("car-0002", "20,1"),
            ("\u{fffd}\u{fffd}", "30,2"),
            ("", "40,4"),
            ("car-0009", "70,5")
        ]
    );

    // Keys only come with a Kafka topic, and KAFKA keys are one column.
    for (sql, expected) in [
        (
            "CREATE STREAM local (car VARCHAR KEY, speed DOUBLE) WITH (key_format='KAFKA')"
                .to_string(),
            "option 'key_format' applies to Kafka (kafka_topic), and this relation reads memory",
        ),
        (
            format!(
                "CREATE STREAM two_keys (a VARCHAR KEY, b VARCHAR KEY, speed DOUBLE) \
                 WITH (kafka_topic='{input}', key_format='KAFKA')"
            ),
            "key_format 'KAFKA' holds a single primitive key, so two_keys needs exactly one KEY column, not 2 (a, b)",
        ),
    ] {
        let error = engine.execute(&sql).await.err().expect(&sql).to_string();
        assert!(error.contains(expected), "{error}");
    }
    engine.shutdown().await;
}

/// The rows of a pull query, each row's columns as text.
pub(crate) async fn pull(engine: &mut eddy_stream::Engine, sql: &str) -> Vec<Vec<String>> {
    let eddy_stream::Output::Rows { batches, .. } = run(engine, sql).await else {
        panic!("{sql}: not rows")
    };
    batches.iter().flat_map(text_rows).collect()
}

/// Pulls `sql` until its rows, sorted, are `expected` (a table over a topic catches up as its
/// own query reads the topic); fails after 30 s with what it last held.
pub(crate) async fn pull_until<E>(engine: &mut eddy_stream::Engine, sql: &str, expected: &[E])
where
    Vec<String>: PartialEq<E>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut rows = pull(engine, sql).await;
        rows.sort();
        if rows.len() == expected.len() && rows.iter().zip(expected).all(|(r, e)| r == e) {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} holds {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every record of `topic` from the start, as a plain consumer sees it: (key, value), a
/// tombstone's value `None`. Waits until `n` arrived.
pub(crate) async fn read_raw(topic: &str, n: usize) -> Vec<(Option<Vec<u8>>, Option<Vec<u8>>)> {
    read_timed(topic, n)
        .await
        .into_iter()
        .map(|(key, value, _)| (key, value))
        .collect()
}

/// The first `n` records of partition 0 of `topic`: key, value and timestamp (ms).
pub(crate) async fn read_timed(
    topic: &str,
    n: usize,
) -> Vec<(Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message as _;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", shared().bootstrap())
        .set("group.id", unique("raw-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create().unwrap();
    // Assigned, not subscribed: no group to join, so no rebalance to wait for.
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("read {} of {n} records of {topic}: {out:?}", out.len()))
            .unwrap();
        out.push((
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            message.timestamp().to_millis(),
        ));
    }
    // rdkafka's drop waits, without a bound, for the consumer to leave its group: not on the
    // test's runtime (a CI run once hung for an hour in a Kafka test; this is one such wait).
    std::thread::spawn(move || drop(consumer));
    out
}

/// A table written to Kafka, as ksqlDB writes one: the record key is the GROUP BY value (KAFKA
/// key format) or values (DELIMITED); a windowed table's key ends in the window start, 8 bytes
/// big-endian; the value holds the other columns; a key whose row left the table (HAVING no
/// longer holds) gets a tombstone. Each batch writes each changed key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_tables_write_keyed_changes_and_tombstones() {
    let rare = unique("table-rare");
    let windows = unique("table-windows");
    let mut engine = engine();
    run(
        &mut engine,
        "CREATE STREAM pv (page VARCHAR, usr VARCHAR, ts BIGINT) WITH (timestamp='ts')",
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE TABLE rare WITH (kafka_topic='{rare}') AS \
             SELECT page, COUNT(*) AS n FROM pv GROUP BY page HAVING COUNT(*) < 2"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE TABLE per_10s WITH (kafka_topic='{windows}', key_format='DELIMITED', \
             value_format='DELIMITED') AS SELECT page, usr, COUNT(*) AS n FROM pv \
             WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY page, usr"
        ),
    )
    .await;
    let pairs = unique("table-pairs");
    run(
        &mut engine,
        &format!(
            "CREATE TABLE pairs WITH (kafka_topic='{pairs}', key_format='JSON') AS \
             SELECT page, usr, COUNT(*) AS n FROM pv GROUP BY page, usr"
        ),
    )
    .await;
    let by_user = unique("stream-by-user");
    run(
        &mut engine,
        &format!(
            "CREATE STREAM by_user WITH (kafka_topic='{by_user}') AS \
             SELECT usr, page FROM pv WHERE page <> 'shop' PARTITION BY usr"
        ),
    )
    .await;
    let refused = engine
        .execute(&format!(
            "CREATE TABLE lost WITH (kafka_topic='{rare}-lost') AS \
             SELECT COUNT(*) AS n FROM pv GROUP BY page"
        ))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "Key missing from projection: the query writing lost to Kafka must select its GROUP BY \
         expression page, which becomes the record key (e.g. SELECT page, …)"
    );
    let refused = engine
        .execute(&format!(
            "CREATE TABLE two WITH (kafka_topic='{rare}-two') AS \
             SELECT page, usr, COUNT(*) AS n FROM pv GROUP BY page, usr"
        ))
        .await
        .err()
        .expect("refused");
    assert!(
        refused
            .to_string()
            .starts_with("key_format 'KAFKA' holds a single primitive key, so the GROUP BY of two needs exactly one KEY column, not 2 (page, usr)"),
        "{refused}"
    );

    run(
        &mut engine,
        "INSERT INTO pv (page, usr, ts) VALUES ('home', 'a', 1000), ('cart', 'a', 2000), ('home', 'b', 3000)",
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO pv (page, usr, ts) VALUES ('cart', 'b', 12000), ('cart', 'b', 13000), \
         ('shop', 'c', 14000)",
    )
    .await;

    // home passes HAVING only until its second event, in the same batch: never written. cart
    // is written, then deleted.
    let json = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        read_raw(&rare, 3).await,
        [
            (json("cart"), json(r#"{"N":1}"#)),
            (json("cart"), None),
            (json("shop"), json(r#"{"N":1}"#)),
        ]
    );
    // A table declared over the topic reads back what the query's table holds.
    run(
        &mut engine,
        &format!(
            "CREATE TABLE rare_copy (page VARCHAR PRIMARY KEY, n BIGINT) \
             WITH (kafka_topic='{rare}', key_format='KAFKA')"
        ),
    )
    .await;
    let original = pull(&mut engine, "SELECT page, n FROM rare").await;
    assert_eq!(original, [["shop", "1"]]);
    pull_until(&mut engine, "SELECT page, n FROM rare_copy", &original).await;
    // PARTITION BY: the record key is the user, the value the rest.
    let by_user = read_raw(&by_user, 5).await;
    assert_eq!(
        by_user,
        ["a", "a", "b", "b", "b"]
            .iter()
            .zip(["home", "cart", "home", "cart", "cart"])
            .map(|(k, v)| (json(k), json(&format!(r#"{{"PAGE":"{v}"}}"#))))
            .collect::<Vec<_>>()
    );
    // JSON keys: an object of the GROUP BY columns, read back by a table with two keys.
    assert_eq!(
        read_raw(&pairs, 5).await,
        [
            (json(r#"{"PAGE":"home","USR":"a"}"#), json(r#"{"N":1}"#)),
            (json(r#"{"PAGE":"cart","USR":"a"}"#), json(r#"{"N":1}"#)),
            (json(r#"{"PAGE":"home","USR":"b"}"#), json(r#"{"N":1}"#)),
            (json(r#"{"PAGE":"cart","USR":"b"}"#), json(r#"{"N":2}"#)),
            (json(r#"{"PAGE":"shop","USR":"c"}"#), json(r#"{"N":1}"#)),
        ]
    );
    run(
        &mut engine,
        &format!(
            "CREATE TABLE pairs_copy (page VARCHAR PRIMARY KEY, usr VARCHAR PRIMARY KEY, \
             n BIGINT) WITH (kafka_topic='{pairs}', key_format='JSON')"
        ),
    )
    .await;
    pull_until(
        &mut engine,
        "SELECT page, usr, n FROM pairs_copy",
        &[
            ["cart", "a", "1"],
            ["cart", "b", "2"],
            ["home", "a", "1"],
            ["home", "b", "1"],
            ["shop", "c", "1"],
        ],
    )
    .await;
    let key = |k: &str, start: i64| {
        let mut bytes = k.as_bytes().to_vec();
        bytes.extend_from_slice(&start.to_be_bytes());
        Some(bytes)
    };
    assert_eq!(
        read_raw(&windows, 5).await,
        [
            (key("home,a", 0), json("1")),
            (key("cart,a", 0), json("1")),
            (key("home,b", 0), json("1")),
            (key("cart,b", 10_000), json("2")),
            (key("shop,c", 10_000), json("1")),
        ]
    );
    // A windowed table's topic, read back with its window type and size.
    run(
        &mut engine,
        &format!(
            "CREATE TABLE per_10s_copy (page VARCHAR PRIMARY KEY, usr VARCHAR PRIMARY KEY, \
             n BIGINT) WITH (kafka_topic='{windows}', key_format='DELIMITED', \
             value_format='DELIMITED', window_type='TUMBLING', window_size='10 SECONDS')"
        ),
    )
    .await;
    let columns = "page, usr, n, windowstart, windowend";
    let mut original = pull(&mut engine, &format!("SELECT {columns} FROM per_10s")).await;
    original.sort();
    assert_eq!(original.len(), 5);
    assert_eq!(
        original[0],
        [
            "cart",
            "a",
            "1",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:10"
        ]
    );
    pull_until(
        &mut engine,
        &format!("SELECT {columns} FROM per_10s_copy"),
        &original,
    )
    .await;
    // A session has no size, as ksqlDB says.
    let refused = engine
        .execute(&format!(
            "CREATE TABLE sessions (page VARCHAR PRIMARY KEY, n BIGINT) WITH \
             (kafka_topic='{windows}', window_type='Session', window_size='30 seconds')"
        ))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "'WINDOW_SIZE' should not be set for SESSION windows."
    );
    engine.shutdown().await;
}

/// INSERT INTO a stream or table read from Kafka, as in ksqlDB: `VALUES` produce records to its
/// topic, keyed and encoded as the relation reads them, timestamped with its event time; and
/// `INSERT INTO … SELECT` is a query producing there too. Readers of the topic see both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_insert_into_relations_read_from_topics() {
    let cars = unique("insert-cars");
    let users = unique("insert-users");
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE STREAM cars (car VARCHAR KEY, speed DOUBLE, ts BIGINT) WITH \
             (kafka_topic='{cars}', partitions=1, key_format='KAFKA', timestamp='ts')"
        ),
    )
    .await;
    run(
        &mut engine,
        "CREATE STREAM eu (car VARCHAR, speed DOUBLE, ts BIGINT) WITH (timestamp='ts')",
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO cars SELECT car, speed * 2 AS speed, ts FROM eu",
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO cars (car, speed, ts) VALUES ('c1', 50.5, 1000)",
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO eu (car, speed, ts) VALUES ('e1', 45.0, 2000), ('e2', 65.0, 3000)",
    )
    .await;
    let bytes = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        read_timed(&cars, 3).await,
        [
            (
                bytes("c1"),
                bytes(r#"{"SPEED":50.5,"TS":1000}"#),
                Some(1000)
            ),
            (
                bytes("e1"),
                bytes(r#"{"SPEED":90.0,"TS":2000}"#),
                Some(2000)
            ),
            (
                bytes("e2"),
                bytes(r#"{"SPEED":130.0,"TS":3000}"#),
                Some(3000)
            ),
        ]
    );
    run(&mut engine, "SET 'auto.offset.reset' = 'earliest'").await;
    let rows = collect(
        run(
            &mut engine,
            "SELECT car, speed FROM cars EMIT CHANGES LIMIT 3",
        )
        .await,
    )
    .await;
    assert_eq!(rows, [["c1", "50.5"], ["e1", "90.0"], ["e2", "130.0"]]);

    // Into a stream a query writes to Kafka: the row goes to its topic and its log, beside the
    // query's rows; one whose query keys its records with PARTITION BY is refused.
    let fast = unique("insert-fast");
    run(
        &mut engine,
        &format!(
            "CREATE STREAM fast WITH (kafka_topic='{fast}', partitions=1) AS \
             SELECT car, speed FROM eu WHERE speed > 50"
        ),
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO fast (car, speed, rowtime) VALUES ('f1', 99.5, 5000)",
    )
    .await;
    let mut written = read_timed(&fast, 2).await;
    written.sort();
    assert_eq!(
        written,
        [
            (None, bytes(r#"{"CAR":"e2","SPEED":65.0}"#), Some(3000)),
            (None, bytes(r#"{"CAR":"f1","SPEED":99.5}"#), Some(5000)),
        ]
    );
    pull_until(
        &mut engine,
        "SELECT car, speed FROM fast",
        &[["e2", "65.0"], ["f1", "99.5"]],
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM keyed WITH (kafka_topic='{fast}-keyed', partitions=1) AS \
             SELECT car, speed FROM eu PARTITION BY car"
        ),
    )
    .await;
    let refused = engine
        .execute("INSERT INTO keyed (car, speed) VALUES ('k', 1.0)")
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        refused.as_deref(),
        Some(
            "'keyed' is written by a query with PARTITION BY, which \
             keys its records: insert into its source instead"
        )
    );

    // Into a stream a query writes keyed by its source's key: the inserted records are keyed
    // the same way, as in ksqlDB.
    let kept = unique("insert-kept");
    run(
        &mut engine,
        &format!(
            "CREATE STREAM fast_cars WITH (kafka_topic='{kept}', partitions=1) AS \
             SELECT car, speed, ts FROM cars WHERE speed > 100"
        ),
    )
    .await;
    run(
        &mut engine,
        "CREATE STREAM more (car VARCHAR KEY, speed DOUBLE, ts BIGINT) WITH (timestamp='ts')",
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO fast_cars SELECT car, speed, ts FROM more",
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO more (car, speed, ts) VALUES ('m1', 200.0, 7000)",
    )
    .await;
    let mut written = read_timed(&kept, 2).await;
    written.sort();
    assert_eq!(
        written,
        [
            (
                bytes("e2"),
                bytes(r#"{"SPEED":130.0,"TS":3000}"#),
                Some(3000)
            ),
            (
                bytes("m1"),
                bytes(r#"{"SPEED":200.0,"TS":7000}"#),
                Some(7000)
            ),
        ]
    );

    run(
        &mut engine,
        &format!(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) WITH \
             (kafka_topic='{users}', partitions=1, key_format='KAFKA')"
        ),
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO users (id, name) VALUES ('u1', 'Ada'), ('u2', 'Bo')",
    )
    .await;
    assert_eq!(
        read_raw(&users, 2).await,
        [
            (bytes("u1"), bytes(r#"{"NAME":"Ada"}"#)),
            (bytes("u2"), bytes(r#"{"NAME":"Bo"}"#)),
        ]
    );
    pull_until(
        &mut engine,
        "SELECT id, name FROM users",
        &[["u1", "Ada"], ["u2", "Bo"]],
    )
    .await;

    // Two key columns in a DELIMITED key, with its own delimiter, written and read back.
    let pairs = unique("insert-pairs");
    run(
        &mut engine,
        &format!(
            "CREATE TABLE pairs (a VARCHAR PRIMARY KEY, b INT PRIMARY KEY, v INT) WITH \
             (kafka_topic='{pairs}', partitions=1, key_format='DELIMITED', key_delimiter='|')"
        ),
    )
    .await;
    run(&mut engine, "INSERT INTO pairs VALUES ('x', 1, 10)").await;
    assert_eq!(
        read_raw(&pairs, 1).await,
        [(bytes("x|1"), bytes(r#"{"V":10}"#))]
    );
    pull_until(
        &mut engine,
        "SELECT a, b, v FROM pairs",
        &[["x", "1", "10"]],
    )
    .await;

    // A VARCHAR event time read with timestamp_format becomes the record timestamp.
    let logins = unique("insert-logins");
    run(
        &mut engine,
        &format!(
            "CREATE STREAM logins (usr VARCHAR, at VARCHAR) WITH (kafka_topic='{logins}', \
             partitions=1, timestamp='at', timestamp_format='dd/MM/yyyy HH:mm')"
        ),
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO logins (usr, at) VALUES ('a', '06/12/2026 10:00')",
    )
    .await;
    assert_eq!(
        read_timed(&logins, 1).await,
        [(
            None,
            bytes(r#"{"USR":"a","AT":"06/12/2026 10:00"}"#),
            Some(1_796_551_200_000)
        )]
    );
}

/// WITH (wrap_single_value=false), as in ksqlDB: a one-column value is written as the bare JSON
/// value (a NULL as a record without a value), and a stream declared the same way reads such
/// values back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_single_values_unwrapped() {
    let topic = unique("bare-speeds");
    let mut engine = engine();
    run(
        &mut engine,
        "CREATE STREAM speeds (car VARCHAR, speed DOUBLE, ts BIGINT) WITH (timestamp='ts')",
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM bare WITH (kafka_topic='{topic}', wrap_single_value=false) AS \
             SELECT speed FROM speeds"
        ),
    )
    .await;
    run(
        &mut engine,
        "INSERT INTO speeds (car, speed, ts) VALUES ('a', 50.5, 1000), ('b', 70.0, 2000), \
         ('c', NULL, 3000)",
    )
    .await;
    let bytes = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        read_raw(&topic, 3).await,
        [(None, bytes("50.5")), (None, bytes("70.0")), (None, None)]
    );
    run(
        &mut engine,
        &format!(
            "CREATE STREAM back (speed DOUBLE) WITH (kafka_topic='{topic}', \
             wrap_single_value=false)"
        ),
    )
    .await;
    run(&mut engine, "SET 'auto.offset.reset' = 'earliest'").await;
    let rows = collect(run(&mut engine, "SELECT speed FROM back EMIT CHANGES LIMIT 2").await).await;
    assert_eq!(rows, [["50.5"], ["70.0"]]);
}

/// The sum of column `n` of table `t`, once it reaches `expected` (or after 60 s).
async fn counted(engine: &mut eddy_stream::Engine, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = pull(engine, "SELECT car, n FROM t").await;
        let got: usize = rows.iter().map(|r| r[1].parse::<usize>().unwrap()).sum();
        if got >= expected || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An aggregation's state counts what it read beyond its committed offsets. When the consumer
/// group takes its partitions away (another member joins) and hands them back, they resume
/// after what the state counted, not at the committed offset: every event is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partitions_handed_back_resume_where_the_state_is() {
    const FIRST: usize = 2_000;
    const MORE: usize = 1_000;
    let broker = shared();
    let admin = broker.config("admin");
    let topic = unique("handback");
    ensure_topic(&admin, &topic, 2).await.unwrap();
    let service = unique("eddy");
    let mut engine = engine_of(&service);
    run(
        &mut engine,
        &format!(
            "CREATE STREAM s (i BIGINT, car VARCHAR, speed DOUBLE) \
             WITH (kafka_topic='{topic}', value_format='JSON')"
        ),
    )
    .await;
    // Without a window or checkpoints, the query commits nothing past its first event: a
    // partition resuming at the committed offset would count everything again.
    run(
        &mut engine,
        "CREATE TABLE t AS SELECT car, COUNT(*) AS n FROM s GROUP BY car",
    )
    .await;
    let all = records(FIRST + MORE);
    produce(&admin, &topic, all[..FIRST].to_vec()).await;
    assert_eq!(counted(&mut engine, FIRST).await, FIRST, "before");

    // A second member of the query's group takes partitions, reads them from the committed
    // offsets, and leaves without committing: the group hands them back.
    let group = format!("{service}-{}", engine.queries()[0].id);
    let mut intruder =
        KafkaSource::subscribe(&broker.config(&group), &topic, OffsetReset::Earliest).unwrap();
    let started = Instant::now();
    let mut read = 0;
    while read == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the second member read nothing"
        );
        read += intruder
            .poll(FIRST, Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap()
            .len();
    }
    drop(intruder);

    produce(&admin, &topic, all[FIRST..].to_vec()).await;
    assert_eq!(
        counted(&mut engine, FIRST + MORE).await,
        FIRST + MORE,
        "after"
    );
    // Nothing comes twice later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counted(&mut engine, 0).await, FIRST + MORE, "later");
    engine.shutdown().await;
}

/// The config of an engine of `service` on the shared broker, committing every 200 ms.
fn config_of(service: &str) -> eddy_stream::EngineConfig {
    let config = shared().config("unused");
    eddy_stream::EngineConfig {
        kafka: Some(eddy_stream::KafkaSettings {
            bootstrap_servers: config.bootstrap_servers,
            extra: config.extra,
        }),
        service_id: service.to_string(),
        commit_interval: Duration::from_millis(200),
        ..eddy_stream::EngineConfig::default()
    }
}

/// An engine of `service` on the shared broker, committing every 200 ms.
fn engine_of(service: &str) -> eddy_stream::Engine {
    eddy_stream::Engine::new(eddy_tests::session(), config_of(service))
}

/// [`engine_of`], checkpointing its state under `state_dir`.
pub(crate) fn engine_with_state_in(
    service: &str,
    state_dir: &std::path::Path,
) -> eddy_stream::Engine {
    eddy_stream::Engine::new(
        eddy_tests::session(),
        eddy_stream::EngineConfig {
            state: Some(eddy_stream::StateStore::local(state_dir, service).unwrap()),
            ..config_of(service)
        },
    )
}

/// Without durable state, an aggregation whose GROUP BY is not its source's key is not
/// repartitioned and keeps one state for all partitions. A second process of the same service id starting it gets only some partitions: its query
/// stops with an error that says why, and the first goes on counting every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_an_aggregation_not_by_key_refuses_to_share_its_partitions() {
    const FIRST: usize = 2_000;
    const MORE: usize = 1_000;
    let broker = shared();
    let admin = broker.config("admin");
    let topic = unique("whole");
    ensure_topic(&admin, &topic, 2).await.unwrap();
    let service = unique("eddy");
    let statements = [
        format!(
            "CREATE STREAM s (i BIGINT, car VARCHAR, speed DOUBLE) \
             WITH (kafka_topic='{topic}', value_format='JSON')"
        ),
        "CREATE TABLE t AS SELECT car, COUNT(*) AS n FROM s GROUP BY car".to_string(),
    ];
    let mut first = engine_of(&service);
    for sql in &statements {
        run(&mut first, sql).await;
    }
    let all = records(FIRST + MORE);
    produce(&admin, &topic, all[..FIRST].to_vec()).await;
    assert_eq!(counted(&mut first, FIRST).await, FIRST, "before");

    let mut second = engine_of(&service);
    for sql in &statements {
        run(&mut second, sql).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let query = &second.queries()[0];
        if let Some(e) = &query.last_error {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the second process's query ran on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.starts_with(
            "query stopped: another process of this service id runs query CTAS_T_0 and holds \
             the other partitions of its topic (this one got ["
        ) && error.ends_with(
            "] of 2). Its GROUP BY is not its source's KEY and it is not repartitioned, so its \
             state cannot be split by partition: run it in one process per service id, or give \
             it durable state (--state-dir), with which an aggregation over its source's own \
             columns is repartitioned"
        ),
        "{error}"
    );
    assert_eq!(second.queries()[0].events_in, 0, "it counted nothing");
    second.shutdown().await;

    produce(&admin, &topic, all[FIRST..].to_vec()).await;
    assert_eq!(
        counted(&mut first, FIRST + MORE).await,
        FIRST + MORE,
        "after"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counted(&mut first, 0).await, FIRST + MORE, "later");
    first.shutdown().await;
}

/// With durable state, an aggregation whose GROUP BY (here an expression) is not its source's
/// key reads its rows through a repartition topic, keyed by group: two processes of one
/// service id then split its partitions, each group is counted in one of them, and every event
/// once. The internal topic's records are the source's, unchanged, each carrying where it was
/// first read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_an_aggregation_not_by_key_is_repartitioned_and_shared() {
    const FIRST: usize = 2_000;
    const MORE: usize = 1_000;
    let broker = shared();
    let admin = broker.config("admin");
    let topic = unique("regroup");
    let dead = unique("regroup-dead");
    ensure_topic(&admin, &topic, 2).await.unwrap();
    ensure_topic(&admin, &dead, 1).await.unwrap();
    let service = unique("eddy");
    let state_dir = std::env::temp_dir().join(unique("eddy-regroup-state"));
    let engine_with_state = || engine_with_state_in(&service, &state_dir);
    let statements = [
        format!(
            "CREATE STREAM s (i BIGINT, car VARCHAR, speed DOUBLE) \
             WITH (kafka_topic='{topic}', value_format='JSON', dead_letter_topic='{dead}')"
        ),
        "CREATE TABLE t AS SELECT UPPER(car) AS car, COUNT(*) AS n FROM s GROUP BY UPPER(car)"
            .to_string(),
    ];
    let mut first = engine_with_state();
    for sql in &statements {
        run(&mut first, sql).await;
    }
    let all = records(FIRST + MORE);
    produce(&admin, &topic, all[..FIRST].to_vec()).await;
    assert_eq!(counted(&mut first, FIRST).await, FIRST, "before");

    let mut second = engine_with_state();
    for sql in &statements {
        run(&mut second, sql).await;
    }
    produce(&admin, &topic, all[FIRST..].to_vec()).await;
    let cars = |rows: Vec<Vec<String>>| -> BTreeMap<String, usize> {
        rows.into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (a, b) = loop {
        let a = cars(pull(&mut first, "SELECT car, n FROM t").await);
        let b = cars(pull(&mut second, "SELECT car, n FROM t").await);
        let total: usize = a.values().chain(b.values()).sum();
        if (total == FIRST + MORE && !b.is_empty()) || Instant::now() > deadline {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        second.queries()[0].last_error.is_none(),
        "{:?}",
        second.queries()[0].last_error
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "each process holds some groups"
    );
    assert!(
        a.keys().all(|car| !b.contains_key(car)),
        "a group in both processes"
    );
    let mut both = a;
    both.extend(b);
    let expected: BTreeMap<String, usize> = (0..1000)
        .map(|c| (format!("CAR-{c:04}"), (FIRST + MORE) / 1000))
        .collect();
    assert_eq!(both, expected);
    // A bad record goes through the repartition topic too, and is dead-lettered with its
    // place in the source topic.
    let mut bad = records(1);
    bad[0].payload = Some(b"{\"i\":".to_vec());
    bad[0].partition = Some(1);
    produce(&admin, &topic, bad).await;
    let mut letters = KafkaSource::subscribe(
        &broker.config(&unique("regroup-dl")),
        &dead,
        OffsetReset::Earliest,
    )
    .unwrap();
    let letter = read(&mut letters, 1, Duration::from_secs(30)).await;
    let letter: serde_json::Value = serde_json::from_slice(&letter[0].payload).unwrap();
    let origin = letter["origin"].as_str().unwrap();
    let offset = origin.strip_prefix(&format!("{topic}[1]@"));
    assert!(offset.is_some_and(|o| o.parse::<i64>().is_ok()), "{origin}");
    assert_eq!(letter["payload"], "{\"i\":");
    first.shutdown().await;
    second.shutdown().await;

    let internal = format!("_eddy-{service}-CTAS_T_0-repartition");
    let mut reader = KafkaSource::subscribe(
        &broker.config(&unique("peek")),
        &internal,
        OffsetReset::Earliest,
    )
    .unwrap();
    let mut seen = BTreeSet::new();
    let mut partitions_of: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < FIRST + MORE && Instant::now() < deadline {
        for m in reader
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap()
        {
            assert!(
                m.upstream.is_some(),
                "a forwarded record says where it was read"
            );
            if m.payload == b"{\"i\":" {
                continue; // the bad record, forwarded as it is
            }
            let key = m.key.clone().expect("the source's key, unchanged");
            assert_eq!(key, format!("car-{:04}", index(&m) % 1000).into_bytes());
            partitions_of
                .entry(key)
                .or_default()
                .insert(m.position.partition);
            seen.insert(index(&m));
        }
    }
    assert_eq!(seen.len(), FIRST + MORE, "every event forwarded");
    assert!(
        partitions_of.values().all(|p| p.len() == 1),
        "each group's records in one partition"
    );
    std::fs::remove_dir_all(&state_dir).ok();
}

/// A query that is repartitioned now, but whose state an earlier Eddy kept whole, is refused
/// with what to do: starting it without that state would silently lose what it counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_whole_state_of_a_query_now_repartitioned_is_not_dropped_silently() {
    let broker = shared();
    let topic = unique("was-whole");
    ensure_topic(&broker.config("admin"), &topic, 2)
        .await
        .unwrap();
    let service = unique("eddy");
    let state_dir = std::env::temp_dir().join(unique("eddy-was-whole"));
    let query_dir = state_dir.join(&service).join("CTAS_T_0");
    std::fs::create_dir_all(&query_dir).unwrap();
    std::fs::write(query_dir.join("00000000000000000007.ckpt"), b"whole").unwrap();
    let mut engine = engine_with_state_in(&service, &state_dir);
    run(
        &mut engine,
        &format!("CREATE STREAM s (car VARCHAR) WITH (kafka_topic='{topic}', value_format='JSON')"),
    )
    .await;
    let Err(error) = engine
        .execute("CREATE TABLE t AS SELECT car, COUNT(*) AS n FROM s GROUP BY car")
        .await
    else {
        panic!("the CREATE was accepted");
    };
    assert_eq!(
        error.to_string(),
        format!(
            "state: the checkpoints in {}/{service}/CTAS_T_0 hold this query's state for all \
             partitions in one, as Eddy kept it before it repartitioned such queries; move them \
             away to start this query over from its committed offsets",
            state_dir.display()
        )
    );
    assert!(engine.queries().is_empty());
    engine.shutdown().await;
    std::fs::remove_dir_all(&state_dir).ok();
}

/// A stream–stream join's buffered rows are part of its checkpoints: an order read before a
/// restart (its offset committed) still joins a shipment that comes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_join_keeps_its_buffers_across_a_restart() {
    let broker = shared();
    let admin = broker.config("admin");
    let (orders, shipments) = (unique("join-orders"), unique("join-shipments"));
    ensure_topic(&admin, &orders, 1).await.unwrap();
    ensure_topic(&admin, &shipments, 1).await.unwrap();
    let service = unique("eddy");
    let state_dir = std::env::temp_dir().join(unique("eddy-join-state"));
    let engine_with_state = || engine_with_state_in(&service, &state_dir);
    let statements = [
        format!(
            "CREATE STREAM orders (id VARCHAR KEY, item VARCHAR, ts BIGINT) WITH \
             (kafka_topic='{orders}', key_format='KAFKA', timestamp='ts')"
        ),
        format!(
            "CREATE STREAM shipments (order_id VARCHAR KEY, warehouse VARCHAR, ts BIGINT) WITH \
             (kafka_topic='{shipments}', key_format='KAFKA', timestamp='ts')"
        ),
        "CREATE STREAM shipped AS SELECT o.id, o.item, s.warehouse FROM orders o \
         JOIN shipments s WITHIN 1 HOUR ON o.id = s.order_id"
            .to_string(),
    ];
    let record = |key: &str, value: &str| Record {
        key: Some(key.as_bytes().to_vec()),
        payload: Some(value.as_bytes().to_vec()),
        timestamp_ms: None,
        partition: None,
        upstream: None,
    };
    let mut engine = engine_with_state();
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    produce(
        &admin,
        &orders,
        vec![
            record("o1", r#"{"ITEM":"book","TS":1000}"#),
            record("o2", r#"{"ITEM":"pen","TS":2000}"#),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.queries()[0].events_in < 2 {
        assert!(Instant::now() < deadline, "the orders were not read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A clean stop checkpoints the buffers and commits past the orders.
    engine.shutdown().await;

    let mut engine = engine_with_state();
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    produce(
        &admin,
        &shipments,
        vec![
            record("o1", r#"{"WAREHOUSE":"w1","TS":3000}"#),
            record("o2", r#"{"WAREHOUSE":"w2","TS":4000}"#),
        ],
    )
    .await;
    pull_until(
        &mut engine,
        "SELECT id, item, warehouse FROM shipped",
        &[["o1", "book", "w1"], ["o2", "pen", "w2"]],
    )
    .await;
    assert_eq!(
        engine.queries()[0].events_in,
        2,
        "the orders were not read again"
    );
    engine.shutdown().await;
    std::fs::remove_dir_all(&state_dir).ok();
}

/// A stream–stream join keeps one state over both streams, each read by its own consumer group:
/// a second process of the same service id starting it stops its copy, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_join_refuses_to_share_its_partitions() {
    let broker = shared();
    let admin = broker.config("admin");
    let (left, right) = (unique("share-left"), unique("share-right"));
    ensure_topic(&admin, &left, 2).await.unwrap();
    ensure_topic(&admin, &right, 2).await.unwrap();
    let service = unique("eddy");
    let statements = [
        format!("CREATE STREAM l (id VARCHAR KEY, v INT) WITH (kafka_topic='{left}', key_format='KAFKA')"),
        format!("CREATE STREAM r (id VARCHAR KEY, w INT) WITH (kafka_topic='{right}', key_format='KAFKA')"),
        "CREATE STREAM both_sides AS SELECT l.id, l.v, r.w FROM l JOIN r WITHIN 1 HOUR ON l.id = r.id"
            .to_string(),
    ];
    let mut first = engine_of(&service);
    for sql in &statements {
        run(&mut first, sql).await;
    }
    // The first holds every partition of both streams once it has read from them.
    produce(
        &admin,
        &left,
        (0..20)
            .map(|i| Record {
                key: Some(format!("k{i}").into_bytes()),
                payload: Some(format!(r#"{{"V":{i}}}"#).into_bytes()),
                timestamp_ms: None,
                partition: None,
                upstream: None,
            })
            .collect(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.queries()[0].events_in < 20 {
        assert!(Instant::now() < deadline, "the first process read nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = engine_of(&service);
    for sql in &statements {
        run(&mut second, sql).await;
    }
    let error = loop {
        if let Some(e) = &second.queries()[0].last_error {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the second process's join ran on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.starts_with(
            "query stopped: another process of this service id runs query CSAS_BOTH_SIDES_0 \
             and holds the other partitions of its topic (this one got ["
        ) && error.ends_with(
            "] of 2). A stream–stream join keeps one state over both streams: run it in one \
             process per service id"
        ),
        "{error}"
    );
    assert!(first.queries()[0].last_error.is_none());
    second.shutdown().await;
    first.shutdown().await;
}
