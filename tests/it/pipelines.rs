//! Continuous queries end to end through real brokers: JSON events into Kafka or MQTT, a query
//! with a wasm UDF in the engine, rows out of Kafka or a pull query.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array};
use eddy_connector::{Record, Sink, Source};
use eddy_kafka::{ensure_topic, KafkaSink, KafkaSource, OffsetReset};
use eddy_stream::{Engine, EngineConfig, KafkaSettings, Output};
use eddy_tests::kafka::{shared, unique};

fn engine(kafka: Option<KafkaSettings>) -> Engine {
    Engine::new(
        eddy_tests::session(),
        EngineConfig {
            kafka,
            service_id: unique("eddy"),
            commit_interval: Duration::from_millis(200),
            ..EngineConfig::default()
        },
    )
}

fn settings() -> KafkaSettings {
    let config = shared().config("unused");
    KafkaSettings {
        bootstrap_servers: config.bootstrap_servers,
        extra: config.extra,
    }
}

async fn run(engine: &mut Engine, sql: &str) {
    match engine.execute(sql).await {
        Ok(_) => {}
        Err(e) => panic!("{sql}\n  failed: {e}"),
    }
}

/// Reads JSON records from `topic` until `n` arrived (or panics after `limit`).
async fn consume(topic: &str, n: usize, limit: Duration) -> Vec<(serde_json::Value, Option<i64>)> {
    let config = shared().config(&unique("reader"));
    let mut source = KafkaSource::subscribe(&config, topic, OffsetReset::Earliest).unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            started.elapsed() < limit,
            "read {} of {n} records from {topic}",
            out.len()
        );
        let messages = source
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap();
        for m in messages {
            out.push((serde_json::from_slice(&m.payload).unwrap(), m.timestamp_ms));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_in_udf_kafka_out_exactly_n_rows_and_bad_events_dead_lettered() {
    const N: i64 = 20_000;
    // librdkafka reads a record timestamp of 0 as "now", so event times start later.
    const T0: i64 = 1_700_000_000_000;
    let settings = settings();
    let admin = shared().config("admin");
    let (input, output, dead) = (unique("cars"), unique("hot"), unique("dlq"));
    ensure_topic(&admin, &input, 3).await.unwrap();

    let mut records: Vec<Record> = (0..N)
        .map(|i| Record {
            key: Some(format!("car-{}", i % 7).into_bytes()),
            payload: Some(
                format!(
                    r#"{{"id":{i},"car":"car-{}","temp":{}.5,"ts":{}}}"#,
                    i % 7,
                    i % 100,
                    T0 + 1_000 * i
                )
                .into_bytes(),
            ),
            timestamp_ms: None,
            partition: None,
            upstream: None,
        })
        .collect();
    // Three bad events among the good ones: two of a wrong type, and one not JSON. (A missing
    // field is a NULL, as in ksqlDB.)
    records.insert(
        10,
        Record {
            key: None,
            payload: Some(br#"{"id":"ten","car":"x","temp":1.0,"ts":1}"#.to_vec()),
            timestamp_ms: None,
            partition: None,
            upstream: None,
        },
    );
    records.insert(
        500,
        Record {
            key: None,
            payload: Some(b"not json".to_vec()),
            timestamp_ms: None,
            partition: None,
            upstream: None,
        },
    );
    records.insert(
        9_000,
        Record {
            key: None,
            payload: Some(br#"{"id":1,"car":"x","temp":"hot","ts":1}"#.to_vec()),
            timestamp_ms: None,
            partition: None,
            upstream: None,
        },
    );
    let mut sink = KafkaSink::new(&admin, &input).unwrap();
    sink.send(records).await.unwrap();
    sink.flush().await.unwrap();

    let mut engine = engine(Some(settings));
    run(&mut engine, &format!(
        "CREATE STREAM car_sensor (id BIGINT, car VARCHAR, temp DOUBLE, ts BIGINT) \
         WITH (kafka_topic='{input}', value_format='JSON', timestamp='ts', dead_letter_topic='{dead}')"
    )).await;
    let udfs = eddy_tests::components().display().to_string();
    run(
        &mut engine,
        &format!("CREATE FUNCTION celsius_to_fahrenheit FROM '{udfs}/temperature.wasm'"),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM hot WITH (kafka_topic='{output}', partitions=2) AS \
         SELECT id, car, celsius_to_fahrenheit(temp) AS f FROM car_sensor"
        ),
    )
    .await;

    let rows = consume(&output, N as usize, Duration::from_secs(90)).await;
    let mut seen = BTreeMap::new();
    for (row, timestamp) in &rows {
        let id = row["ID"].as_i64().unwrap();
        let temp = (id % 100) as f64 + 0.5;
        assert_eq!(row["F"].as_f64().unwrap(), temp * 9.0 / 5.0 + 32.0, "{row}");
        assert_eq!(row["CAR"], format!("car-{}", id % 7));
        assert_eq!(
            *timestamp,
            Some(T0 + 1_000 * id),
            "the event time travels as the record timestamp"
        );
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), N as usize, "every id arrives");
    assert!(
        seen.values().all(|&n| n == 1),
        "and only once: {rows:?}",
        rows = seen
            .iter()
            .filter(|(_, &n)| n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>()
    );

    let dead = consume(&dead, 3, Duration::from_secs(30)).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|(r, _)| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.contains(&"field 'id' should be BIGINT, found \"ten\"".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"field 'temp' should be DOUBLE, found \"hot\"".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("malformed JSON")),
        "{reasons:?}"
    );
    assert!(dead.iter().any(|(r, _)| r["payload"] == "not json"));

    let info = engine
        .queries()
        .into_iter()
        .find(|q| q.id.starts_with("CSAS_HOT"))
        .unwrap();
    assert_eq!(
        (info.events_in, info.rows_out, info.bad_events),
        (N as u64 + 3, N as u64, 3)
    );
    // Everything read: the consumer lag (from librdkafka's cached watermarks) is back to 0.
    assert_eq!(info.lag, Some(0));

    // PRINT shows the topic's records as they are, bad ones included.
    let printed = match engine
        .execute(&format!("PRINT '{input}' FROM BEGINNING LIMIT 3"))
        .await
        .unwrap()
    {
        Output::Push(mut push) => {
            let mut rows = 0;
            let mut values = Vec::new();
            while let Some(batch) = push.rows.recv().await {
                rows += batch.num_rows();
                let v = batch
                    .column(4)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .unwrap();
                values.extend((0..v.len()).map(|i| v.value(i).to_string()));
            }
            assert_eq!(rows, 3);
            values
        }
        _ => unreachable!(),
    };
    assert!(printed.iter().all(|v| v.starts_with('{')), "{printed:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_in_rows_out() {
    let broker = eddy_tests::mqtt::shared();
    let mut engine = engine(None);
    let prefix = unique("fleet");
    run(
        &mut engine,
        &format!(
            "CREATE STREAM readings (car VARCHAR, speed DOUBLE) \
         WITH (mqtt_topic='{prefix}/+/sensors', mqtt_broker='{}', mqtt_qos=1)",
            broker.url()
        ),
    )
    .await;
    run(
        &mut engine,
        "CREATE STREAM fast AS SELECT car, speed FROM readings WHERE speed > 50",
    )
    .await;

    for car in 0..5 {
        let payloads: Vec<Vec<u8>> = (0..200)
            .map(|i| format!(r#"{{"car":"car-{car}","speed":{}}}"#, i % 100).into_bytes())
            .collect();
        eddy_tests::mqtt::publish(
            &broker.url(),
            &format!("{prefix}/car-{car}/sensors"),
            &payloads,
            1,
        )
        .await;
    }
    // Another topic under the prefix does not match the filter.
    eddy_tests::mqtt::publish(
        &broker.url(),
        &format!("{prefix}/car-9/status"),
        &[br#"{"car":"x","speed":99}"#.to_vec()],
        1,
    )
    .await;

    // 5 cars x 200 readings; speeds 51..=99 pass, twice per car.
    let expected = 5 * 2 * 49;
    let started = Instant::now();
    loop {
        let count = count(&mut engine, "fast").await;
        if count == expected {
            break;
        }
        assert!(count < expected, "{count} rows, expected {expected}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{count} of {expected} rows after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = engine
        .queries()
        .into_iter()
        .find(|q| q.id.starts_with("CSAS_FAST"))
        .unwrap();
    assert_eq!(info.events_in, 1000);
    engine.shutdown().await;
}

/// Counts the rows of a pull query over `relation`.
async fn count(engine: &mut Engine, relation: &str) -> i64 {
    match engine
        .execute(&format!("SELECT COUNT(*) FROM {relation}"))
        .await
        .unwrap()
    {
        Output::Rows { batches, .. } => batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0),
        _ => unreachable!(),
    }
}

/// The ids a pull query over `copied` returns.
async fn ids(engine: &mut Engine) -> std::collections::BTreeSet<i64> {
    match engine.execute("SELECT id FROM copied").await.unwrap() {
        Output::Rows { batches, .. } => batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                c.values().to_vec()
            })
            .collect(),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_partitions_creates_its_topic() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = unique("created");
    let mut e = engine(Some(settings()));
    run(
        &mut e,
        &format!("CREATE STREAM s (id BIGINT) WITH (kafka_topic='{topic}', partitions=3)"),
    )
    .await;
    let bootstrap = settings().bootstrap_servers;
    let found = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            // Only an existing topic's partitions count: nothing here may create it.
            .set("allow.auto.create.topics", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len()
    })
    .await
    .unwrap();
    assert_eq!(found, 3);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_with_one_service_id_split_the_partitions() {
    const N: i64 = 6_000;
    let admin = shared().config("admin");
    let input = unique("split");
    ensure_topic(&admin, &input, 4).await.unwrap();
    let records: Vec<Record> = (0..N)
        .map(|i| Record {
            key: Some(i.to_string().into_bytes()),
            payload: Some(format!(r#"{{"id":{i}}}"#).into_bytes()),
            timestamp_ms: None,
            partition: None,
            upstream: None,
        })
        .collect();
    let mut sink = KafkaSink::new(&admin, &input).unwrap();
    sink.send(records).await.unwrap();
    sink.flush().await.unwrap();

    // Two processes of one deployment: same service id, so the same consumer group.
    let service = unique("svc");
    let config = || EngineConfig {
        kafka: Some(settings()),
        service_id: service.clone(),
        commit_interval: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let mut a = Engine::new(eddy_tests::session(), config());
    let mut b = Engine::new(eddy_tests::session(), config());
    for engine in [&mut a, &mut b] {
        run(
            engine,
            &format!("CREATE STREAM events (id BIGINT) WITH (kafka_topic='{input}')"),
        )
        .await;
        run(engine, "CREATE STREAM copied AS SELECT id FROM events").await;
    }
    let started = Instant::now();
    loop {
        let (in_a, in_b) = (count(&mut a, "copied").await, count(&mut b, "copied").await);
        if in_a + in_b == N && in_a > 0 && in_b > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a read {in_a}, b read {in_b} of {N}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Disjoint halves: no id was read by both.
    let (ids_a, ids_b) = (ids(&mut a).await, ids(&mut b).await);
    assert!(ids_a.is_disjoint(&ids_b));
    assert_eq!(ids_a.len() + ids_b.len(), N as usize);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_read_from_kafka_joins_the_stream() {
    let admin = shared().config("admin");
    let users = unique("users");
    ensure_topic(&admin, &users, 1).await.unwrap();
    let mut sink = KafkaSink::new(&admin, &users).unwrap();
    let user = |id: &str, name: &str| Record {
        key: Some(id.as_bytes().to_vec()),
        payload: Some(format!(r#"{{"name":"{name}"}}"#).into_bytes()),
        timestamp_ms: None,
        partition: None,
        upstream: None,
    };
    sink.send(vec![
        user("u1", "Ada"),
        user("u2", "Bo"),
        user("u1", "Ada L."),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();

    let mut engine = engine(Some(settings()));
    run(
        &mut engine,
        &format!(
            "CREATE TABLE users (user_id VARCHAR PRIMARY KEY, name VARCHAR) WITH (kafka_topic='{users}')"
        ),
    )
    .await;
    run(
        &mut engine,
        "CREATE STREAM car (car_id VARCHAR, owner_id VARCHAR)",
    )
    .await;
    run(
        &mut engine,
        "CREATE STREAM owned AS SELECT c.car_id, u.name FROM car c LEFT JOIN users u ON c.owner_id = u.user_id",
    )
    .await;
    // The table is kept up to date from its topic: wait until it holds both users.
    let started = Instant::now();
    while count(&mut engine, "users").await < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "users never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run(
        &mut engine,
        "INSERT INTO car (car_id, owner_id) VALUES ('c1', 'u1'), ('c2', 'u2'), ('c3', 'u3')",
    )
    .await;
    let rows = match engine
        .execute("SELECT car_id, name FROM owned ORDER BY car_id")
        .await
        .unwrap()
    {
        Output::Rows { batches, .. } => {
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string()
        }
        _ => unreachable!(),
    };
    assert_eq!(
        rows,
        "+--------+--------+\n| car_id | name   |\n+--------+--------+\n| c1     | Ada L. |\n| c2     | Bo     |\n| c3     |        |\n+--------+--------+"
    );
    engine.shutdown().await;
}
