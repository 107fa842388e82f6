//! Queries over tables read from Kafka, against a real broker: each record of the source
//! table's topic is a change (an upsert, or a tombstone) that the query turns into a change of
//! its own table, keyed as the source is.

use eddy_connector::Record;
use eddy_tests::kafka::{shared, unique};

use crate::kafka::{
    collect, engine, engine_with_state_in, produce, pull, pull_until, read_raw, read_timed, run,
};

/// A record of `topic`'s table: `key` (none for a record without one) and a JSON value (none
/// for a tombstone).
fn change(key: Option<&str>, value: Option<&str>) -> Record {
    Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        payload: value.map(|v| v.as_bytes().to_vec()),
        timestamp_ms: Some(1_000),
        partition: None,
        upstream: None,
    }
}

/// `CREATE TABLE … AS SELECT … FROM table` with a WHERE, as ksqlDB runs it: an upsert for a
/// record that passes, a tombstone for one that does not or that deletes its key, nothing for a
/// record without a key; the output topic is keyed by the source's PRIMARY KEY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_table_query_follows_its_source_tables_changes() {
    let source = unique("tq-cars");
    let out = unique("tq-dear");
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE TABLE cars (id VARCHAR PRIMARY KEY, owner VARCHAR, price INT) \
             WITH (kafka_topic='{source}', partitions=1, key_format='KAFKA')"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE TABLE dear WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT id, owner, price * 2 AS doubled FROM cars WHERE price > 100"
        ),
    )
    .await;
    let refused = engine
        .execute("CREATE STREAM s AS SELECT id, owner FROM cars")
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "Invalid result type. Your SELECT query produces a TABLE (it reads table 'cars'). \
         Please use CREATE TABLE AS SELECT statement instead."
    );
    let refused = engine
        .execute(&format!(
            "CREATE TABLE owners WITH (kafka_topic='{out}-owners') AS SELECT owner FROM cars"
        ))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "Key missing from projection: the query writing owners to Kafka must select its \
         source's key column \"id\", which becomes the record key (e.g. SELECT \"id\", …)"
    );
    produce(
        &shared().config(&unique("tq-producer")),
        &source,
        vec![
            change(Some("a"), Some(r#"{"OWNER":"ann","PRICE":150}"#)),
            change(Some("b"), Some(r#"{"OWNER":"bob","PRICE":50}"#)),
            change(Some("a"), Some(r#"{"OWNER":"ann","PRICE":90}"#)),
            change(Some("c"), Some(r#"{"OWNER":"cy","PRICE":300}"#)),
            change(None, Some(r#"{"OWNER":"x","PRICE":500}"#)),
            change(Some("c"), None),
            change(Some("b"), Some(r#"{"OWNER":"bob","PRICE":200}"#)),
        ],
    )
    .await;
    let json = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        read_raw(&out, 6).await,
        [
            (json("a"), json(r#"{"OWNER":"ann","DOUBLED":300}"#)),
            (json("b"), None),
            (json("a"), None),
            (json("c"), json(r#"{"OWNER":"cy","DOUBLED":600}"#)),
            (json("c"), None),
            (json("b"), json(r#"{"OWNER":"bob","DOUBLED":400}"#)),
        ]
    );
    assert_eq!(
        pull(&mut engine, "SELECT id, owner, doubled FROM dear").await,
        [["b", "bob", "400"]]
    );
    // A push query over the table streams its rows as they change, deletions left out.
    run(&mut engine, "SET 'auto.offset.reset' = 'earliest'").await;
    let rows = collect(
        run(
            &mut engine,
            "SELECT id, price FROM cars WHERE price < 250 EMIT CHANGES LIMIT 4",
        )
        .await,
    )
    .await;
    assert_eq!(rows, [["a", "150"], ["b", "50"], ["a", "90"], ["b", "200"]]);
    engine.shutdown().await;
}

/// A change to produce (key, value), and the records it makes each output write (key, value).
type Step<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    &'a [(&'a str, &'a str)],
    &'a [(&'a str, Option<&'a str>)],
);

/// An aggregation over a table, as ksqlDB runs one: a row that changes leaves its old group
/// before it joins its new one, a deleted row leaves its group, and a group that loses all its
/// rows stays, counting 0 (HAVING can delete it). Aggregates that cannot take a row back are
/// refused, with ksqlDB's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_an_aggregation_over_a_table_retracts_changed_rows() {
    let source = unique("tq-people");
    let cities = unique("tq-cities");
    let crowded = unique("tq-crowded");
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE TABLE people (id VARCHAR PRIMARY KEY, city VARCHAR, age INT) \
             WITH (kafka_topic='{source}', partitions=1, key_format='KAFKA')"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE TABLE cities WITH (kafka_topic='{cities}', partitions=1) AS \
             SELECT city, COUNT(*) AS n, SUM(age) AS ages, AVG(age) AS mean \
             FROM people GROUP BY city"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE TABLE crowded WITH (kafka_topic='{crowded}', partitions=1) AS \
             SELECT city, COUNT(*) AS n FROM people GROUP BY city HAVING COUNT(*) > 1"
        ),
    )
    .await;
    let refused = engine
        .execute("CREATE TABLE ages AS SELECT city, MIN(age) AS lo, MAX(age) AS hi FROM people GROUP BY city")
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "The aggregation functions MIN and MAX cannot be applied to a table source, only to a \
         stream source. ('people' is a table: its rows change, and only COUNT, SUM, AVG, \
         COLLECT_LIST and COLLECT_SET can take a changed row back out of its group.)"
    );
    let config = shared().config(&unique("tq-producer"));
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let mut expected = Vec::new();
    let mut expected_crowded = Vec::new();
    // One change at a time, each read back before the next, so that each is a batch of its own
    // and every change of every group is written.
    let steps: [Step; 6] = [
        (
            Some("a"),
            Some(r#"{"CITY":"paris","AGE":30}"#),
            &[("paris", r#"{"N":1,"AGES":30,"MEAN":30.0}"#)],
            &[],
        ),
        (
            Some("b"),
            Some(r#"{"CITY":"paris","AGE":40}"#),
            &[("paris", r#"{"N":2,"AGES":70,"MEAN":35.0}"#)],
            &[("paris", Some(r#"{"N":2}"#))],
        ),
        (
            Some("c"),
            Some(r#"{"CITY":"rome","AGE":20}"#),
            &[("rome", r#"{"N":1,"AGES":20,"MEAN":20.0}"#)],
            &[],
        ),
        // b moves to rome: it leaves paris, then joins rome.
        (
            Some("b"),
            Some(r#"{"CITY":"rome","AGE":50}"#),
            &[
                ("paris", r#"{"N":1,"AGES":30,"MEAN":30.0}"#),
                ("rome", r#"{"N":2,"AGES":70,"MEAN":35.0}"#),
            ],
            &[("paris", None), ("rome", Some(r#"{"N":2}"#))],
        ),
        // A record without a key changes nothing; a's tombstone takes it out of paris.
        (None, Some(r#"{"CITY":"rome","AGE":99}"#), &[], &[]),
        (
            Some("a"),
            None,
            &[("paris", r#"{"N":0,"AGES":0,"MEAN":null}"#)],
            &[],
        ),
    ];
    for (key, value, written, written_crowded) in steps {
        produce(&config, &source, vec![change(key, value)]).await;
        expected.extend(written.iter().map(|(k, v)| (json(k), json(v))));
        expected_crowded.extend(
            written_crowded
                .iter()
                .map(|(k, v)| (json(k), v.and_then(json))),
        );
        if written.is_empty() {
            continue;
        }
        assert_eq!(read_raw(&cities, expected.len()).await, expected);
        assert_eq!(
            read_raw(&crowded, expected_crowded.len()).await,
            expected_crowded
        );
    }
    let mut rows = pull(&mut engine, "SELECT city, n, ages, mean FROM cities").await;
    rows.sort();
    assert_eq!(rows, [["paris", "0", "0", ""], ["rome", "2", "70", "35.0"]]);
    assert_eq!(
        pull(&mut engine, "SELECT city, n FROM crowded").await,
        [["rome", "2"]]
    );
    engine.shutdown().await;
}

/// With durable state, an aggregation over a table checkpoints the table's rows beside its
/// groups: after a restart, a row that changes still leaves the group it was counted in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_an_aggregation_over_a_table_remembers_its_rows_across_a_restart() {
    let source = unique("tq-restart-people");
    let cities = unique("tq-restart-cities");
    let service = unique("eddy");
    let state_dir = std::env::temp_dir().join(unique("eddy-table-state"));
    let statements = [
        format!(
            "CREATE TABLE people (id VARCHAR PRIMARY KEY, city VARCHAR, age INT) \
             WITH (kafka_topic='{source}', partitions=1, key_format='KAFKA')"
        ),
        format!(
            "CREATE TABLE cities WITH (kafka_topic='{cities}', partitions=1) AS \
             SELECT city, COUNT(*) AS n FROM people GROUP BY city"
        ),
    ];
    let config = shared().config(&unique("tq-producer"));
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let mut engine = engine_with_state_in(&service, &state_dir);
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    for (id, count) in [("a", 1), ("b", 2)] {
        let value = r#"{"CITY":"paris","AGE":30}"#;
        produce(&config, &source, vec![change(Some(id), Some(value))]).await;
        let written = read_raw(&cities, count).await;
        assert_eq!(
            written.last(),
            Some(&(json("paris"), json(&format!(r#"{{"N":{count}}}"#))))
        );
    }
    // A clean stop checkpoints the groups and the table's rows, and commits past them.
    engine.shutdown().await;

    let mut engine = engine_with_state_in(&service, &state_dir);
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    produce(
        &config,
        &source,
        vec![change(Some("b"), Some(r#"{"CITY":"rome","AGE":31}"#))],
    )
    .await;
    assert_eq!(
        read_raw(&cities, 4).await[2..],
        [
            (json("paris"), json(r#"{"N":1}"#)),
            (json("rome"), json(r#"{"N":1}"#)),
        ]
    );
    let mut rows = pull(&mut engine, "SELECT city, n FROM cities").await;
    rows.sort();
    assert_eq!(rows, [["paris", "1"], ["rome", "1"]]);
    engine.shutdown().await;
    std::fs::remove_dir_all(&state_dir).ok();
}

/// A change to one of two joined tables (0: the source, 1: the joined table; key, value), and
/// the records it makes the inner and the full outer join write (key, value).
type JoinStep<'a> = (
    usize,
    &'a str,
    Option<&'a str>,
    &'a [(&'a str, Option<&'a str>)],
    &'a [(&'a str, Option<&'a str>)],
);

/// Table–table joins on their PRIMARY KEYs, as Kafka Streams joins tables for ksqlDB: a change
/// of either table joins its key again and writes the result, or a tombstone when the key's
/// row leaves the join; an inner join writes nothing for a key the other table lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_tables_join_on_their_keys() {
    let topics = [unique("tj-people"), unique("tj-badges")];
    let (both, either) = (unique("tj-both"), unique("tj-either"));
    let mut engine = engine();
    for (name, columns, topic) in [
        ("people", "city VARCHAR", &topics[0]),
        ("badges", "badge VARCHAR", &topics[1]),
    ] {
        run(
            &mut engine,
            &format!(
                "CREATE TABLE {name} (id VARCHAR PRIMARY KEY, {columns}) \
                 WITH (kafka_topic='{topic}', partitions=1, key_format='KAFKA')"
            ),
        )
        .await;
    }
    for (name, join, topic) in [
        ("both", "JOIN", &both),
        ("either", "FULL OUTER JOIN", &either),
    ] {
        run(
            &mut engine,
            &format!(
                "CREATE TABLE {name} WITH (kafka_topic='{topic}', partitions=1) AS \
                 SELECT p.id AS id, p.city, b.badge FROM people p {join} badges b ON p.id = b.id"
            ),
        )
        .await;
    }
    let config = shared().config(&unique("tj-producer"));
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let steps: [JoinStep; 7] = [
        (
            0,
            "a",
            Some(r#"{"CITY":"paris"}"#),
            &[],
            &[("a", Some(r#"{"CITY":"paris","BADGE":null}"#))],
        ),
        (
            1,
            "b",
            Some(r#"{"BADGE":"gold"}"#),
            &[],
            &[("b", Some(r#"{"CITY":null,"BADGE":"gold"}"#))],
        ),
        (
            1,
            "a",
            Some(r#"{"BADGE":"tin"}"#),
            &[("a", Some(r#"{"CITY":"paris","BADGE":"tin"}"#))],
            &[("a", Some(r#"{"CITY":"paris","BADGE":"tin"}"#))],
        ),
        (
            0,
            "a",
            None,
            &[("a", None)],
            &[("a", Some(r#"{"CITY":null,"BADGE":"tin"}"#))],
        ),
        (1, "a", None, &[], &[("a", None)]),
        (
            1,
            "c",
            Some(r#"{"BADGE":"iron"}"#),
            &[],
            &[("c", Some(r#"{"CITY":null,"BADGE":"iron"}"#))],
        ),
        (
            0,
            "c",
            Some(r#"{"CITY":"rome"}"#),
            &[("c", Some(r#"{"CITY":"rome","BADGE":"iron"}"#))],
            &[("c", Some(r#"{"CITY":"rome","BADGE":"iron"}"#))],
        ),
    ];
    let (mut expected_both, mut expected_either) = (Vec::new(), Vec::new());
    for (table, key, value, written_both, written_either) in steps {
        produce(&config, &topics[table], vec![change(Some(key), value)]).await;
        expected_both.extend(
            written_both
                .iter()
                .map(|(k, v)| (json(k), v.and_then(json))),
        );
        expected_either.extend(
            written_either
                .iter()
                .map(|(k, v)| (json(k), v.and_then(json))),
        );
        // Each change is read back before the next, so that each is a batch of its own.
        assert_eq!(
            read_raw(&either, expected_either.len()).await,
            expected_either
        );
        assert_eq!(read_raw(&both, expected_both.len()).await, expected_both);
    }
    assert_eq!(
        pull(&mut engine, "SELECT id, city, badge FROM both").await,
        [["c", "rome", "iron"]]
    );
    let mut rows = pull(&mut engine, "SELECT city, badge FROM either").await;
    rows.sort();
    assert_eq!(rows, [["", "gold"], ["rome", "iron"]]);
    engine.shutdown().await;
}

/// With durable state, a table–table join checkpoints both tables' rows with both topics'
/// offsets: a row read before a restart still joins the other table's row read after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_table_join_remembers_both_tables_across_a_restart() {
    let topics = [unique("tj-restart-people"), unique("tj-restart-badges")];
    let out = unique("tj-restart-out");
    let service = unique("eddy");
    let state_dir = std::env::temp_dir().join(unique("eddy-table-join-state"));
    let statements = [
        format!(
            "CREATE TABLE people (id VARCHAR PRIMARY KEY, city VARCHAR) \
             WITH (kafka_topic='{}', partitions=1, key_format='KAFKA')",
            topics[0]
        ),
        format!(
            "CREATE TABLE badges (id VARCHAR PRIMARY KEY, badge VARCHAR) \
             WITH (kafka_topic='{}', partitions=1, key_format='KAFKA')",
            topics[1]
        ),
        format!(
            "CREATE TABLE badged WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT p.id AS id, p.city, b.badge FROM people p JOIN badges b ON p.id = b.id"
        ),
    ];
    let config = shared().config(&unique("tj-producer"));
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let mut engine = engine_with_state_in(&service, &state_dir);
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    let first = [
        (0, "a", r#"{"CITY":"paris"}"#),
        (1, "b", r#"{"BADGE":"gold"}"#),
    ];
    for (table, key, value) in first {
        produce(
            &config,
            &topics[table],
            vec![change(Some(key), Some(value))],
        )
        .await;
    }
    consumed(&engine, "CTAS_BADGED", 2).await;
    engine.shutdown().await;

    let mut engine = engine_with_state_in(&service, &state_dir);
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    let second = [
        (1, "a", r#"{"BADGE":"tin"}"#),
        (0, "b", r#"{"CITY":"rome"}"#),
    ];
    for (table, key, value) in second {
        produce(
            &config,
            &topics[table],
            vec![change(Some(key), Some(value))],
        )
        .await;
    }
    let mut written = read_raw(&out, 2).await;
    written.sort();
    assert_eq!(
        written,
        [
            (json("a"), json(r#"{"CITY":"paris","BADGE":"tin"}"#)),
            (json("b"), json(r#"{"CITY":"rome","BADGE":"gold"}"#)),
        ]
    );
    let mut rows = pull(&mut engine, "SELECT id, city, badge FROM badged").await;
    rows.sort();
    assert_eq!(rows, [["a", "paris", "tin"], ["b", "rome", "gold"]]);
    engine.shutdown().await;
    std::fs::remove_dir_all(&state_dir).ok();
}

/// A foreign-key join, as ksqlDB's: each order names its customer; the output is keyed by the
/// order, an order whose customer is missing gets a tombstone (inner join), and a customer's
/// change joins again every order that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_foreign_key_join_follows_both_tables() {
    let topics = [unique("fk-orders"), unique("fk-customers")];
    let out = unique("fk-out");
    let mut engine = engine();
    for (name, columns, topic) in [
        ("orders", "customer VARCHAR, amount INT", &topics[0]),
        ("customers", "name VARCHAR", &topics[1]),
    ] {
        run(
            &mut engine,
            &format!(
                "CREATE TABLE {name} (id VARCHAR PRIMARY KEY, {columns}) \
                 WITH (kafka_topic='{topic}', partitions=1, key_format='KAFKA')"
            ),
        )
        .await;
    }
    run(
        &mut engine,
        &format!(
            "CREATE TABLE named WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT o.id AS id, o.amount, c.name FROM orders o JOIN customers c ON o.customer = c.id"
        ),
    )
    .await;
    let config = shared().config(&unique("fk-producer"));
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let steps: [Step; 6] = [
        (Some("c1"), Some(r#"{"NAME":"ann"}"#), &[], &[]),
        (
            Some("o1"),
            Some(r#"{"CUSTOMER":"c1","AMOUNT":5}"#),
            &[("o1", r#"{"AMOUNT":5,"NAME":"ann"}"#)],
            &[],
        ),
        (
            Some("o2"),
            Some(r#"{"CUSTOMER":"c2","AMOUNT":7}"#),
            &[],
            &[("o2", None)],
        ),
        (
            Some("c1"),
            Some(r#"{"NAME":"bea"}"#),
            &[("o1", r#"{"AMOUNT":5,"NAME":"bea"}"#)],
            &[],
        ),
        (
            Some("o1"),
            Some(r#"{"CUSTOMER":"c2","AMOUNT":9}"#),
            &[],
            &[("o1", None)],
        ),
        (
            Some("c2"),
            Some(r#"{"NAME":"cy"}"#),
            &[
                ("o1", r#"{"AMOUNT":9,"NAME":"cy"}"#),
                ("o2", r#"{"AMOUNT":7,"NAME":"cy"}"#),
            ],
            &[],
        ),
    ];
    // Orders' and customers' records alternate by key prefix; each step's upserts and
    // tombstones are written in that step, read back before the next.
    let mut expected = Vec::new();
    for (produced, (key, value, upserts, tombstones)) in steps.into_iter().enumerate() {
        let key = key.expect("keyed");
        let table = usize::from(key.starts_with('c'));
        produce(&config, &topics[table], vec![change(Some(key), value)]).await;
        // The two topics are read side by side: wait until this change is in before the
        // next, which may be of the other table.
        consumed(&engine, "CTAS_NAMED", produced as u64 + 1).await;
        expected.extend(tombstones.iter().map(|(k, _)| (json(k), None)));
        expected.extend(upserts.iter().map(|(k, v)| (json(k), json(v))));
        assert_eq!(read_raw(&out, expected.len()).await, expected);
    }
    let mut rows = pull(&mut engine, "SELECT id, amount, name FROM named").await;
    rows.sort();
    assert_eq!(rows, [["o1", "9", "cy"], ["o2", "7", "cy"]]);
    engine.shutdown().await;
}

/// Waits until the query whose id starts with `id` has read `n` events; fails after 30 s.
async fn consumed(engine: &eddy_stream::Engine, id: &str, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let read = engine
            .queries()
            .iter()
            .find(|q| q.id.starts_with(id))
            .map_or(0, |q| q.events_in);
        if read >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} read {read} of {n} events"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// After a restart, a foreign-key join still finds the source rows that name a changed key:
/// its index of who names what is rebuilt from the restored rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_foreign_key_join_finds_its_rows_after_a_restart() {
    let topics = [unique("fk-restart-orders"), unique("fk-restart-customers")];
    let out = unique("fk-restart-out");
    let service = unique("eddy");
    let state_dir = std::env::temp_dir().join(unique("eddy-fk-state"));
    let statements = [
        format!(
            "CREATE TABLE orders (id VARCHAR PRIMARY KEY, customer VARCHAR, amount INT) \
             WITH (kafka_topic='{}', partitions=1, key_format='KAFKA')",
            topics[0]
        ),
        format!(
            "CREATE TABLE customers (id VARCHAR PRIMARY KEY, name VARCHAR) \
             WITH (kafka_topic='{}', partitions=1, key_format='KAFKA')",
            topics[1]
        ),
        format!(
            "CREATE TABLE named WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT o.id AS id, o.amount, c.name FROM orders o JOIN customers c ON o.customer = c.id"
        ),
    ];
    let config = shared().config(&unique("fk-producer"));
    let json = |s: &str| Some(s.as_bytes().to_vec());
    let mut engine = engine_with_state_in(&service, &state_dir);
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    produce(
        &config,
        &topics[1],
        vec![change(Some("c1"), Some(r#"{"NAME":"ann"}"#))],
    )
    .await;
    consumed(&engine, "CTAS_NAMED", 1).await;
    produce(
        &config,
        &topics[0],
        vec![change(Some("o1"), Some(r#"{"CUSTOMER":"c1","AMOUNT":5}"#))],
    )
    .await;
    assert_eq!(
        read_raw(&out, 1).await,
        [(json("o1"), json(r#"{"AMOUNT":5,"NAME":"ann"}"#))]
    );
    engine.shutdown().await;

    let mut engine = engine_with_state_in(&service, &state_dir);
    for sql in &statements {
        run(&mut engine, sql).await;
    }
    produce(
        &config,
        &topics[1],
        vec![change(Some("c1"), Some(r#"{"NAME":"bea"}"#))],
    )
    .await;
    assert_eq!(
        read_raw(&out, 2).await[1..],
        [(json("o1"), json(r#"{"AMOUNT":5,"NAME":"bea"}"#))]
    );
    engine.shutdown().await;
    std::fs::remove_dir_all(&state_dir).ok();
}

/// A joined row is as late as the change that made it, as in Kafka Streams: a row that loses
/// its joined row takes the time of that row's deletion, not its own older time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_table_join_row_is_timed_by_the_change_that_made_it() {
    let topics = [unique("tj-time-people"), unique("tj-time-badges")];
    let out = unique("tj-time-out");
    let mut engine = engine();
    for (name, columns, topic) in [
        ("people", "city VARCHAR", &topics[0]),
        ("badges", "badge VARCHAR", &topics[1]),
    ] {
        run(
            &mut engine,
            &format!(
                "CREATE TABLE {name} (id VARCHAR PRIMARY KEY, {columns}) \
                 WITH (kafka_topic='{topic}', partitions=1)"
            ),
        )
        .await;
    }
    run(
        &mut engine,
        &format!(
            "CREATE TABLE either WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT p.id AS id, p.city, b.badge FROM people p LEFT JOIN badges b ON p.id = b.id"
        ),
    )
    .await;
    let config = shared().config(&unique("tj-time-producer"));
    let at = |key: &str, value: Option<&str>, ms: i64| Record {
        timestamp_ms: Some(ms),
        ..change(Some(key), value)
    };
    let steps = [
        (1, at("a", Some(r#"{"BADGE":"gold"}"#), 1_000)),
        (0, at("a", Some(r#"{"CITY":"paris"}"#), 2_000)),
        (1, at("a", None, 5_000)),
    ];
    for (n, (table, record)) in steps.into_iter().enumerate() {
        produce(&config, &topics[table], vec![record]).await;
        // Each change is read before the next is produced: each is a step of its own.
        consumed(&engine, "CTAS_EITHER", n as u64 + 1).await;
    }
    let bytes = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        read_timed(&out, 2).await,
        [
            (
                bytes("a"),
                bytes(r#"{"CITY":"paris","BADGE":"gold"}"#),
                Some(2_000)
            ),
            (
                bytes("a"),
                bytes(r#"{"CITY":"paris","BADGE":null}"#),
                Some(5_000)
            ),
        ]
    );
    engine.shutdown().await;
}

/// A row that HAVING stops passing is deleted with a tombstone timed by the event that dropped
/// it, as ksqlDB times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_row_having_drops_is_deleted_at_the_time_of_its_change() {
    let out = unique("having-out");
    let mut engine = engine();
    for sql in [
        "CREATE STREAM pv (page VARCHAR, ts BIGINT) WITH (timestamp='ts')".to_string(),
        format!(
            "CREATE TABLE rare WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT page, COUNT(*) AS n FROM pv GROUP BY page HAVING COUNT(*) < 2"
        ),
        "INSERT INTO pv (page, ts) VALUES ('cart', 1000)".to_string(),
    ] {
        run(&mut engine, &sql).await;
    }
    let bytes = |s: &str| Some(s.as_bytes().to_vec());
    // The first row is written before the second event comes, in a step of its own.
    assert_eq!(
        read_timed(&out, 1).await,
        [(bytes("cart"), bytes(r#"{"N":1}"#), Some(1_000))]
    );
    run(
        &mut engine,
        "INSERT INTO pv (page, ts) VALUES ('cart', 3000)",
    )
    .await;
    assert_eq!(
        read_timed(&out, 2).await[1],
        (bytes("cart"), None, Some(3_000))
    );
    engine.shutdown().await;
}

/// A stream joined to a table, both topics filled before the queries start (a restart, or a
/// backlog): each click joins the user row that came before it, however far back in the
/// table's topic, because the join waits for the table to be read up to each click's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_stream_joins_a_table_read_up_to_its_events() {
    let (users, clicks, out) = (
        unique("wait-users"),
        unique("wait-clicks"),
        unique("wait-out"),
    );
    const USERS: usize = 50_000;
    let config = shared().config(&unique("wait-producer"));
    // Users at 1 000 ms (as `change` times them); the clicks, at 2 000 ms, name the last users
    // of the topic.
    let rows = (0..USERS).map(|i| {
        let name = format!(r#"{{"NAME":"n{i}"}}"#);
        change(Some(&format!("u{i}")), Some(&name))
    });
    produce(&config, &users, rows.collect()).await;
    let named = (USERS - 100..USERS).map(|i| {
        let user = format!(r#"{{"USER_ID":"u{i}"}}"#);
        Record {
            timestamp_ms: Some(2_000),
            ..change(Some(&format!("c{i}")), Some(&user))
        }
    });
    produce(&config, &clicks, named.collect()).await;
    let mut engine = engine();
    for sql in [
        format!(
            "CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) \
             WITH (kafka_topic='{users}', key_format='KAFKA')"
        ),
        format!(
            "CREATE STREAM clicks (k VARCHAR KEY, user_id VARCHAR) \
             WITH (kafka_topic='{clicks}', key_format='KAFKA')"
        ),
        format!(
            "CREATE STREAM named WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT c.user_id, u.name FROM clicks c LEFT JOIN users u ON c.user_id = u.id"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    // The producers made the topics, with several partitions: compare in key order.
    let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap_or_default()).unwrap();
    let mut joined: Vec<_> = read_raw(&out, 100)
        .await
        .into_iter()
        .map(|(key, value)| (text(key), text(value)))
        .collect();
    joined.sort();
    let expected: Vec<_> = (USERS - 100..USERS)
        .map(|i| (format!("u{i}"), format!(r#"{{"NAME":"n{i}"}}"#)))
        .collect();
    assert_eq!(joined, expected);
    engine.shutdown().await;
}

/// `CREATE SOURCE TABLE` and `CREATE SOURCE STREAM`, as in ksqlDB: read from a topic, queried
/// and pulled as any other, and read-only: no `INSERT`, no `CREATE OR REPLACE`, each refused
/// with ksqlDB's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_tables_and_streams_are_read_only() {
    let (users, events, out) = (unique("src-users"), unique("src-events"), unique("src-out"));
    let mut engine = engine();
    for sql in [
        format!(
            "CREATE SOURCE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) \
             WITH (kafka_topic='{users}', partitions=1, key_format='KAFKA')"
        ),
        format!(
            "CREATE SOURCE STREAM events (k VARCHAR KEY, v INT) \
             WITH (kafka_topic='{events}', partitions=1, key_format='KAFKA')"
        ),
        format!(
            "CREATE STREAM others (k VARCHAR KEY, v INT) \
             WITH (kafka_topic='{events}', key_format='KAFKA')"
        ),
        format!(
            "CREATE TABLE named WITH (kafka_topic='{out}', partitions=1) AS \
             SELECT id, name FROM users WHERE name <> 'x'"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    let config = shared().config(&unique("src-producer"));
    let rows = vec![
        change(Some("a"), Some(r#"{"NAME":"ann"}"#)),
        change(Some("b"), Some(r#"{"NAME":"bo"}"#)),
    ];
    produce(&config, &users, rows).await;
    pull_until(
        &mut engine,
        "SELECT id, name FROM users",
        &[["a", "ann"], ["b", "bo"]],
    )
    .await;
    let json = |s: &str| Some(s.as_bytes().to_vec());
    assert_eq!(
        read_raw(&out, 2).await,
        [
            (json("a"), json(r#"{"NAME":"ann"}"#)),
            (json("b"), json(r#"{"NAME":"bo"}"#)),
        ]
    );
    for (sql, refusal) in [
        (
            "INSERT INTO users (id, name) VALUES ('c', 'cy')".to_string(),
            "Cannot insert values into read-only table: USERS",
        ),
        (
            "INSERT INTO events (k, v) VALUES ('c', 1)".to_string(),
            "Cannot insert values into read-only stream: EVENTS",
        ),
        (
            "INSERT INTO events SELECT * FROM others".to_string(),
            "Cannot insert into read-only stream: EVENTS",
        ),
        (
            format!(
                "CREATE OR REPLACE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR) \
                 WITH (kafka_topic='{users}', key_format='KAFKA')"
            ),
            "Cannot add table 'USERS': CREATE OR REPLACE is not supported on source tables.",
        ),
        (
            format!("CREATE OR REPLACE SOURCE STREAM fresh (v INT) WITH (kafka_topic='{events}')"),
            "Cannot add stream 'FRESH': CREATE OR REPLACE is not supported on source streams.",
        ),
        (
            "CREATE SOURCE STREAM kept (v INT)".to_string(),
            "a SOURCE STREAM is read from outside: give it kafka_topic (or mqtt_topic, or \
             generator)",
        ),
    ] {
        let refused = engine.execute(&sql).await.err().expect("refused");
        assert_eq!(refused.to_string(), refusal, "{sql}");
    }
    pull_until(
        &mut engine,
        "SELECT id, name FROM users",
        &[["a", "ann"], ["b", "bo"]],
    )
    .await;
    engine.shutdown().await;
}
