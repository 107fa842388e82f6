//! Streams that queries write to Kafka, keyed as ksqlDB keys them, against a real broker: a
//! query that projects and filters a keyed stream keeps its source's key, and reads from a
//! plain consumer show the record key and value byte for byte.

use eddy_connector::Record;
use eddy_tests::kafka::{shared, unique};

use crate::kafka::{engine, produce, read_raw, read_timed, run};

/// A record with a KAFKA INT key (4 bytes big-endian) and a JSON value (none: a null value).
fn keyed(id: i32, value: Option<&str>) -> Record {
    Record {
        key: Some(id.to_be_bytes().to_vec()),
        payload: value.map(|v| v.as_bytes().to_vec()),
        timestamp_ms: Some(1_000),
        partition: None,
        upstream: None,
    }
}

/// A record as a plain consumer reads it: key and value, `None` when absent.
type Raw = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Pairs of (key, value) as they are expected in a topic.
fn expected(pairs: &[(Option<&[u8]>, Option<&str>)]) -> Vec<Raw> {
    pairs
        .iter()
        .map(|(k, v)| (k.map(<[u8]>::to_vec), v.map(|v| v.as_bytes().to_vec())))
        .collect()
}

/// `CREATE STREAM … AS SELECT` over a stream with a `KEY` column writes that column as the
/// record key, in the source's key format unless `key_format` says otherwise, and the value holds
/// the other columns: selected under its name or an alias, or through `*`, with or without
/// `WHERE`, and with `timestamp` naming the record timestamp. As in ksqlDB, the key must be selected, once, beside at least one value column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_stream_query_keeps_its_sources_key() {
    let input = unique("keys-in");
    let (filtered, renamed, json, pairs) = (
        unique("keys-filtered"),
        unique("keys-renamed"),
        unique("keys-json"),
        unique("keys-two"),
    );
    let by_name = unique("keys-by-name");
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE STREAM input (id INT KEY, name VARCHAR, n BIGINT) WITH \
             (kafka_topic='{input}', partitions=1, key_format='KAFKA', value_format='JSON')"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM filtered WITH (kafka_topic='{filtered}', timestamp='n') AS \
             SELECT id, name, n FROM input WHERE n > 1"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM renamed WITH (kafka_topic='{renamed}', value_format='DELIMITED') AS \
             SELECT name, id AS new_key FROM input"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!(
            "CREATE STREAM json_keyed WITH (kafka_topic='{json}', key_format='JSON') AS \
             SELECT * FROM input"
        ),
    )
    .await;
    // PARTITION BY two columns: a JSON object key, and the old key back in the value.
    run(
        &mut engine,
        &format!(
            "CREATE STREAM by_two WITH (kafka_topic='{pairs}', key_format='JSON') AS \
             SELECT * FROM input PARTITION BY name, n"
        ),
    )
    .await;
    // ksqlDB repartitions before it projects: `*` has the old key after the value columns.
    run(
        &mut engine,
        &format!(
            "CREATE STREAM by_name WITH (kafka_topic='{by_name}', value_format='DELIMITED') AS \
             SELECT * FROM input PARTITION BY name"
        ),
    )
    .await;
    for (sql, message) in [
        (
            "SELECT name FROM input",
            "The query used to build `lost` must include the key column ID in its projection \
             (eg, SELECT ID...).",
        ),
        (
            "SELECT id, id AS id2, name FROM input",
            "The projection contains a key column (`ID`) more than once, aliased as: ID and ID2.",
        ),
        (
            "SELECT id FROM input",
            "The projection contains no value columns.",
        ),
    ] {
        let refused = engine
            .execute(&format!(
                "CREATE STREAM lost WITH (kafka_topic='{input}-lost') AS {sql}"
            ))
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} must be refused"));
        assert_eq!(refused.to_string(), message, "{sql}");
    }

    let broker = shared();
    produce(
        &broker.config("keys-producer"),
        &input,
        vec![
            keyed(1, Some(r#"{"NAME":"Nick","N":2}"#)),
            keyed(2, Some(r#"{"NAME":"Ann","N":1}"#)),
            keyed(3, Some(r#"{"NAME":"Bo","N":5}"#)),
            keyed(4, Some(r#"{"NAME":null,"N":null}"#)),
        ],
    )
    .await;
    let one = 1i32.to_be_bytes();
    let (two, three) = (2i32.to_be_bytes(), 3i32.to_be_bytes());
    // `timestamp='n'` makes `n` each record's timestamp.
    let timed = read_timed(&filtered, 2).await;
    assert_eq!(
        timed
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        expected(&[
            (Some(&one), Some(r#"{"NAME":"Nick","N":2}"#)),
            (Some(&three), Some(r#"{"NAME":"Bo","N":5}"#)),
        ])
    );
    assert_eq!(
        timed.iter().map(|(_, _, t)| *t).collect::<Vec<_>>(),
        [Some(2), Some(5)]
    );
    assert_eq!(
        read_raw(&renamed, 3).await,
        expected(&[
            (Some(&one), Some("Nick")),
            (Some(&two), Some("Ann")),
            (Some(&three), Some("Bo")),
        ])
    );
    assert_eq!(
        read_raw(&json, 3).await,
        expected(&[
            (Some(b"1"), Some(r#"{"NAME":"Nick","N":2}"#)),
            (Some(b"2"), Some(r#"{"NAME":"Ann","N":1}"#)),
            (Some(b"3"), Some(r#"{"NAME":"Bo","N":5}"#)),
        ])
    );
    // Two key columns make a key even when both are NULL, as in ksqlDB.
    assert_eq!(
        read_raw(&pairs, 4).await,
        expected(&[
            (Some(br#"{"NAME":"Nick","N":2}"#), Some(r#"{"ID":1}"#)),
            (Some(br#"{"NAME":"Ann","N":1}"#), Some(r#"{"ID":2}"#)),
            (Some(br#"{"NAME":"Bo","N":5}"#), Some(r#"{"ID":3}"#)),
            (Some(br#"{"NAME":null,"N":null}"#), Some(r#"{"ID":4}"#)),
        ])
    );
    assert_eq!(
        read_raw(&by_name, 4).await,
        expected(&[
            (Some(b"Nick"), Some("2,1")),
            (Some(b"Ann"), Some("1,2")),
            (Some(b"Bo"), Some("5,3")),
            (None, Some(",4")),
        ])
    );
}

/// A record without a value (Kafka's null value) in a stream, as ksqlDB treats one: a
/// projection passes it on as a record without a value under its key (also through
/// `PARTITION BY`, whose key it computes from the record's key alone), while a filter and an
/// aggregation drop it, even one that keeps NULLs (`WHERE name IS NULL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_record_without_a_value_passes_a_projection_only() {
    let input = unique("nulls-in");
    let (copied, filtered, by_name, counted) = (
        unique("nulls-copied"),
        unique("nulls-filtered"),
        unique("nulls-by-name"),
        unique("nulls-counted"),
    );
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE STREAM input (id INT KEY, name VARCHAR) WITH \
             (kafka_topic='{input}', partitions=1, key_format='KAFKA', value_format='JSON')"
        ),
    )
    .await;
    for sql in [
        format!("CREATE STREAM copied WITH (kafka_topic='{copied}') AS SELECT * FROM input"),
        format!(
            "CREATE STREAM filtered WITH (kafka_topic='{filtered}') AS \
             SELECT * FROM input WHERE name IS NULL"
        ),
        format!(
            "CREATE STREAM by_name WITH (kafka_topic='{by_name}') AS \
             SELECT * FROM input PARTITION BY name"
        ),
        format!(
            "CREATE TABLE counted WITH (kafka_topic='{counted}') AS \
             SELECT name, COUNT(*) AS n FROM input GROUP BY name"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    let broker = shared();
    produce(
        &broker.config("nulls-producer"),
        &input,
        vec![
            keyed(1, None),
            keyed(2, Some(r#"{"NAME":null}"#)),
            keyed(3, Some(r#"{"NAME":"n"}"#)),
        ],
    )
    .await;
    let (one, two, three) = (1i32.to_be_bytes(), 2i32.to_be_bytes(), 3i32.to_be_bytes());
    assert_eq!(
        read_raw(&copied, 3).await,
        expected(&[
            (Some(&one), None),
            (Some(&two), Some(r#"{"NAME":null}"#)),
            (Some(&three), Some(r#"{"NAME":"n"}"#)),
        ])
    );
    assert_eq!(
        read_raw(&filtered, 1).await,
        expected(&[(Some(&two), Some(r#"{"NAME":null}"#))])
    );
    assert_eq!(
        read_raw(&by_name, 3).await,
        expected(&[
            (None, None),
            (None, Some(r#"{"ID":2}"#)),
            (Some(b"n"), Some(r#"{"ID":3}"#)),
        ])
    );
    assert_eq!(
        read_raw(&counted, 1).await,
        expected(&[(Some(b"n"), Some(r#"{"N":1}"#))])
    );
}

/// A stream keyed by two columns passes its keys on as they came: a record without a key
/// stays without one (its key columns are NULL), as in ksqlDB, where a `PARTITION BY` of the
/// same columns would write `{"K1":null,"K2":null}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_record_without_a_key_keeps_none_through_a_projection() {
    let (input, copied) = (unique("pair-in"), unique("pair-copied"));
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE STREAM pairs (k1 INT KEY, k2 INT KEY, v INT) WITH (kafka_topic='{input}', \
             partitions=1, key_format='JSON')"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!("CREATE STREAM copied WITH (kafka_topic='{copied}') AS SELECT * FROM pairs"),
    )
    .await;
    let record = |key: Option<&str>, value: &str| Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        ..keyed(0, Some(value))
    };
    produce(
        &shared().config("pair-producer"),
        &input,
        vec![
            record(Some(r#"{"K1":1,"K2":2}"#), r#"{"V":0}"#),
            record(None, r#"{"V":1}"#),
        ],
    )
    .await;
    assert_eq!(
        read_raw(&copied, 2).await,
        expected(&[
            (Some(br#"{"K1":1,"K2":2}"#), Some(r#"{"V":0}"#)),
            (None, Some(r#"{"V":1}"#)),
        ])
    );
    engine.shutdown().await;
}

/// A record without a value in an unkeyed stream whose column is an ARRAY (here ksqlDB's
/// anonymous value, `wrap_single_value=false`) passes a projection as a record without a value,
/// and the query goes on reading: such a record once panicked the query's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_record_without_a_value_passes_with_nested_columns() {
    let (input, copied) = (unique("anon-in"), unique("anon-copied"));
    let mut engine = engine();
    run(
        &mut engine,
        &format!(
            "CREATE STREAM input (v ARRAY<DOUBLE>) WITH (kafka_topic='{input}', partitions=1, \
             value_format='JSON', wrap_single_value=false)"
        ),
    )
    .await;
    run(
        &mut engine,
        &format!("CREATE STREAM copied WITH (kafka_topic='{copied}') AS SELECT * FROM input"),
    )
    .await;
    let unkeyed = |value: Option<&str>| Record {
        key: None,
        ..keyed(0, value)
    };
    produce(
        &shared().config("anon-producer"),
        &input,
        vec![
            unkeyed(Some("[10.1]")),
            unkeyed(None),
            unkeyed(Some("[1.5,null]")),
        ],
    )
    .await;
    assert_eq!(
        read_raw(&copied, 3).await,
        expected(&[
            (None, Some(r#"{"V":[10.1]}"#)),
            (None, None),
            (None, Some(r#"{"V":[1.5,null]}"#)),
        ])
    );
    engine.shutdown().await;
}

/// A stream–table join written to Kafka is keyed by its join column, as in ksqlDB: the
/// stream's side of `ON` (or the table's), whichever it selects, in the stream's key format.
/// So is a join of a stream with two tables on one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_stream_table_join_is_keyed_by_its_join_column() {
    let (clicks, enriched) = (unique("join-clicks"), unique("join-enriched"));
    let ranked = unique("join-ranked");
    let mut engine = engine();
    for sql in [
        "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR)".to_string(),
        "INSERT INTO users (id, name) VALUES (1, 'Ada'), (2, 'Bo')".to_string(),
        format!(
            "CREATE STREAM clicks (k VARCHAR KEY, user_id INT, page VARCHAR) WITH \
             (kafka_topic='{clicks}', partitions=1, key_format='KAFKA', value_format='JSON')"
        ),
        format!(
            "CREATE STREAM enriched WITH (kafka_topic='{enriched}') AS \
             SELECT c.user_id, u.name, c.page FROM clicks c JOIN users u ON c.user_id = u.id"
        ),
        "CREATE TABLE tiers (id INT PRIMARY KEY, tier VARCHAR)".to_string(),
        "INSERT INTO tiers (id, tier) VALUES (1, 'gold'), (2, 'iron')".to_string(),
        format!(
            "CREATE STREAM ranked WITH (kafka_topic='{ranked}') AS \
             SELECT u.id, u.name, t.tier FROM clicks c JOIN users u ON c.user_id = u.id \
             JOIN tiers t ON c.user_id = t.id"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    let refused = engine
        .execute(&format!(
            "CREATE STREAM lost WITH (kafka_topic='{ranked}-lost') AS \
             SELECT u.name, t.tier FROM clicks c JOIN users u ON c.user_id = u.id \
             JOIN tiers t ON c.user_id = t.id"
        ))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "The query used to build `lost` must include the join expressions C.USER_ID, U.ID or \
         T.ID in its projection (eg, SELECT C.USER_ID...)."
    );
    let refused = engine
        .execute(&format!(
            "CREATE STREAM lost WITH (kafka_topic='{enriched}-lost') AS \
             SELECT u.name, c.page FROM clicks c JOIN users u ON c.user_id = u.id"
        ))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "The query used to build `lost` must include the join expression C.USER_ID or U.ID in \
         its projection (eg, SELECT C.USER_ID...)."
    );
    let click = |key: &str, value: &str| Record {
        key: Some(key.as_bytes().to_vec()),
        payload: Some(value.as_bytes().to_vec()),
        timestamp_ms: Some(1_000),
        partition: None,
        upstream: None,
    };
    produce(
        &shared().config("join-producer"),
        &clicks,
        vec![
            click("a", r#"{"USER_ID":2,"PAGE":"home"}"#),
            click("b", r#"{"USER_ID":1,"PAGE":"cart"}"#),
        ],
    )
    .await;
    let (one, two) = (1i32.to_be_bytes(), 2i32.to_be_bytes());
    assert_eq!(
        read_raw(&enriched, 2).await,
        expected(&[
            (Some(&two), Some(r#"{"NAME":"Bo","PAGE":"home"}"#)),
            (Some(&one), Some(r#"{"NAME":"Ada","PAGE":"cart"}"#)),
        ])
    );
    assert_eq!(
        read_raw(&ranked, 2).await,
        expected(&[
            (Some(&two), Some(r#"{"NAME":"Bo","TIER":"iron"}"#)),
            (Some(&one), Some(r#"{"NAME":"Ada","TIER":"gold"}"#)),
        ])
    );
}

/// A stream–stream join written to Kafka is keyed by its join column too, as in ksqlDB: the
/// FROM stream's, when both are selected, however `ON` writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_stream_stream_join_is_keyed_by_its_join_column() {
    let shipped = unique("join-shipped");
    let both = unique("join-both");
    let mut engine = engine();
    for sql in [
        "CREATE STREAM orders (id VARCHAR KEY, item VARCHAR, ts BIGINT) WITH (timestamp='ts')"
            .to_string(),
        "CREATE STREAM shipments (order_id VARCHAR KEY, warehouse VARCHAR, ts BIGINT) \
         WITH (timestamp='ts')"
            .to_string(),
        format!(
            "CREATE STREAM shipped WITH (kafka_topic='{shipped}') AS SELECT o.id, o.item, \
             s.warehouse FROM orders o JOIN shipments s WITHIN 1 HOUR ON o.id = s.order_id"
        ),
        format!(
            "CREATE STREAM both_ids WITH (kafka_topic='{both}') AS SELECT s.order_id, \
             o.id AS oid, s.warehouse FROM orders o JOIN shipments s WITHIN 1 HOUR \
             ON s.order_id = o.id"
        ),
        "INSERT INTO orders (id, item, ts) VALUES ('o1', 'book', 0), ('o2', 'pen', 0)".to_string(),
        "INSERT INTO shipments (order_id, warehouse, ts) VALUES ('o2', 'w2', 1000)".to_string(),
    ] {
        run(&mut engine, &sql).await;
    }
    assert_eq!(
        read_raw(&shipped, 1).await,
        expected(&[(Some(b"o2"), Some(r#"{"ITEM":"pen","WAREHOUSE":"w2"}"#))])
    );
    assert_eq!(
        read_raw(&both, 1).await,
        expected(&[(Some(b"o2"), Some(r#"{"ORDER_ID":"o2","WAREHOUSE":"w2"}"#))])
    );
}

/// ksqlDB's `format` sets the key and the value format at once, of a source and of a query; a
/// query that names neither writes in its source's formats, as in ksqlDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_format_sets_both_key_and_value_formats() {
    let (lines, as_json) = (unique("format-lines"), unique("format-json"));
    let copied = unique("format-copied");
    let mut engine = engine();
    for sql in [
        format!(
            "CREATE STREAM lines (id VARCHAR KEY, name VARCHAR, n INT) WITH \
             (kafka_topic='{lines}', partitions=1, format='DELIMITED')"
        ),
        format!(
            "CREATE STREAM as_json WITH (kafka_topic='{as_json}', format='JSON') AS \
             SELECT * FROM lines"
        ),
        format!("CREATE STREAM copied WITH (kafka_topic='{copied}') AS SELECT * FROM lines"),
    ] {
        run(&mut engine, &sql).await;
    }
    let refused = engine
        .execute(&format!(
            "CREATE STREAM both_ways WITH (kafka_topic='{as_json}-x', format='JSON', \
             value_format='JSON') AS SELECT * FROM lines"
        ))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.to_string(),
        "Cannot supply both 'VALUE_FORMAT' and 'FORMAT' properties, as 'FORMAT' sets both key \
         and value formats. Either use just 'FORMAT', or use 'KEY_FORMAT' and 'VALUE_FORMAT'."
    );
    produce(
        &shared().config("format-producer"),
        &lines,
        vec![Record {
            key: Some(b"ab".to_vec()),
            payload: Some(b"Nick,2".to_vec()),
            timestamp_ms: Some(1_000),
            partition: None,
            upstream: None,
        }],
    )
    .await;
    assert_eq!(
        read_raw(&as_json, 1).await,
        // The DELIMITED key `ab` is the JSON string `"ab"`.
        expected(&[(Some(br#""ab""#), Some(r#"{"NAME":"Nick","N":2}"#))])
    );
    assert_eq!(
        read_raw(&copied, 1).await,
        expected(&[(Some(b"ab"), Some("Nick,2"))])
    );
}

/// As in ksqlDB, the `KEY` columns of a stream over a topic are read from the record key, in the
/// KAFKA format when no `key_format` is given; and a query's output takes its source's key
/// format unless it names one: a GROUP BY of two columns over a JSON-keyed stream writes a JSON
/// object key, over a KAFKA-keyed one it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_keys_default_to_kafka_and_outputs_take_their_sources_key_format() {
    let (plain, copied) = (unique("default-key-in"), unique("default-key-copied"));
    let (json_in, counted) = (unique("json-key-in"), unique("json-key-counted"));
    let mut engine = engine();
    for sql in [
        format!(
            "CREATE STREAM plain (id INT KEY, name VARCHAR, n INT) WITH \
             (kafka_topic='{plain}', partitions=1, value_format='JSON')"
        ),
        format!("CREATE STREAM copied WITH (kafka_topic='{copied}') AS SELECT * FROM plain"),
        format!(
            "CREATE STREAM json_in (id INT KEY, name VARCHAR, n INT) WITH \
             (kafka_topic='{json_in}', partitions=1, format='JSON')"
        ),
        format!(
            "CREATE TABLE counted WITH (kafka_topic='{counted}') AS \
             SELECT name, n, COUNT(*) AS c FROM json_in GROUP BY name, n"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    for (sql, message) in [
        (
            format!("CREATE STREAM two (a INT KEY, b INT KEY, v INT) WITH (kafka_topic='{plain}')"),
            "key_format 'KAFKA' holds a single primitive key, so two needs exactly one KEY \
             column, not 2 (a, b): use key_format 'DELIMITED' for more",
        ),
        (
            format!(
                "CREATE TABLE by_two WITH (kafka_topic='{plain}-by-two') AS \
                 SELECT name, n, COUNT(*) AS c FROM plain GROUP BY name, n"
            ),
            "key_format 'KAFKA' holds a single primitive key, so the GROUP BY of by_two needs \
             exactly one KEY column, not 2 (name, n): use key_format 'DELIMITED' for more",
        ),
        (
            format!(
                "CREATE TABLE only_keys WITH (kafka_topic='{plain}-only-keys') AS \
                 SELECT name, n FROM json_in GROUP BY name, n"
            ),
            "The projection contains no value columns.",
        ),
    ] {
        let refused = engine.execute(&sql).await.err().expect("refused");
        assert_eq!(refused.to_string(), message, "{sql}");
    }
    let broker = shared();
    produce(
        &broker.config("default-key-producer"),
        &plain,
        vec![keyed(7, Some(r#"{"NAME":"Ann","N":1}"#))],
    )
    .await;
    produce(
        &broker.config("json-key-producer"),
        &json_in,
        vec![Record {
            key: Some(b"7".to_vec()),
            ..keyed(7, Some(r#"{"NAME":"Ann","N":1}"#))
        }],
    )
    .await;
    assert_eq!(
        read_raw(&copied, 1).await,
        expected(&[(Some(&7i32.to_be_bytes()), Some(r#"{"NAME":"Ann","N":1}"#))])
    );
    assert_eq!(
        read_raw(&counted, 1).await,
        expected(&[(Some(br#"{"NAME":"Ann","N":1}"#), Some(r#"{"C":1}"#))])
    );
}

/// A stream read from a windowed topic joins only a stream windowed alike, as in ksqlDB, which
/// says why in these words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_windowed_streams_join_only_streams_windowed_alike() {
    let mut engine = engine();
    for (name, window) in [
        ("sessions", ", window_type='Session'"),
        ("plain", ""),
        ("ticks", ", window_type='TUMBLING', window_size='1 SECOND'"),
    ] {
        let topic = unique(&format!("windowed-{name}"));
        run(
            &mut engine,
            &format!(
                "CREATE STREAM {name} (id INT KEY, v BIGINT) WITH (kafka_topic='{topic}', \
                 partitions=1{window})"
            ),
        )
        .await;
    }
    for (joined, message) in [
        (
            "plain",
            "Can not join windowed source to non-windowed source.\n`SESSIONS` is SESSION \
             windowed\n`PLAIN` is not windowed",
        ),
        (
            "ticks",
            "Incompatible windowed sources.\nLeft source: SESSION\nRight source: TUMBLING\n\
             Session windowed sources can only be joined to other session windowed sources, and \
             may still not result in expected behaviour as session bounds must be an exact match \
             for the join to work\nHopping and tumbling windowed sources can only be joined to \
             other hopping and tumbling windowed sources",
        ),
    ] {
        let refused = engine
            .execute(&format!(
                "CREATE STREAM joined AS SELECT s.id, s.v, o.v AS w FROM sessions s \
                 JOIN {joined} o WITHIN 1 MINUTE ON s.id = o.id"
            ))
            .await
            .err()
            .unwrap_or_else(|| panic!("joining {joined} must be refused"));
        assert_eq!(refused.to_string(), message);
    }
    engine.shutdown().await;
}

/// A join started over two topics that already hold records reads them in event-time order,
/// as Kafka Streams does, so it writes what the same records arriving live would give: a LEFT
/// join pads only the rows that no right row within the window precedes, and rows come out in
/// the order of the records that made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_join_reads_a_backlog_in_event_time_order() {
    let (left, right, joined) = (
        unique("order-left"),
        unique("order-right"),
        unique("order-joined"),
    );
    let admin = shared().config("admin");
    // librdkafka writes a timestamp of 0 as "now": times count from 1 000 000 ms.
    let at = |id: i32, value: &str, ms: i64| Record {
        timestamp_ms: Some(1_000_000 + ms),
        ..keyed(id, Some(value))
    };
    for topic in [&left, &right] {
        eddy_kafka::ensure_topic(&admin, topic, 1).await.unwrap();
    }
    produce(
        &admin,
        &left,
        vec![
            at(0, r#"{"NAME":"zero"}"#, 0),
            at(10, r#"{"NAME":"ten"}"#, 11_000),
            at(0, r#"{"NAME":"foo"}"#, 13_000),
            at(90, r#"{"NAME":"ninety"}"#, 17_000),
        ],
    )
    .await;
    produce(
        &admin,
        &right,
        vec![
            at(0, r#"{"F1":"blah"}"#, 10_000),
            at(0, r#"{"F1":"a"}"#, 15_000),
        ],
    )
    .await;
    let mut engine = engine();
    for sql in [
        format!("CREATE STREAM l (id INT KEY, name VARCHAR) WITH (kafka_topic='{left}')"),
        format!("CREATE STREAM r (id INT KEY, f1 VARCHAR) WITH (kafka_topic='{right}')"),
        format!(
            "CREATE STREAM joined WITH (kafka_topic='{joined}') AS SELECT l.id, l.name, r.f1 \
             FROM l LEFT JOIN r WITHIN 11 SECONDS ON l.id = r.id"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    let written: Vec<(i32, String, i64)> = read_timed(&joined, 6)
        .await
        .into_iter()
        .map(|(key, value, ts)| {
            let key = i32::from_be_bytes(key.unwrap().try_into().unwrap());
            (key, String::from_utf8(value.unwrap()).unwrap(), ts.unwrap())
        })
        .collect();
    let row = |id, value: &str, ts: i64| (id, value.to_string(), 1_000_000 + ts);
    assert_eq!(
        written,
        [
            row(0, r#"{"NAME":"zero","F1":null}"#, 0),
            row(0, r#"{"NAME":"zero","F1":"blah"}"#, 10_000),
            row(10, r#"{"NAME":"ten","F1":null}"#, 11_000),
            row(0, r#"{"NAME":"foo","F1":"blah"}"#, 13_000),
            row(0, r#"{"NAME":"foo","F1":"a"}"#, 15_000),
            row(90, r#"{"NAME":"ninety","F1":null}"#, 17_000),
        ]
    );
    engine.shutdown().await;
}

/// A KAFKA string key of no bytes is the empty string, as Kafka's string deserializer reads it;
/// only a record without a key has a NULL key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_an_empty_string_key_is_not_null() {
    let (input, output) = (unique("empty-key-in"), unique("empty-key-out"));
    let mut engine = engine();
    for sql in [
        format!(
            "CREATE STREAM input (k VARCHAR KEY, id BIGINT) WITH (kafka_topic='{input}', \
             partitions=1)"
        ),
        format!(
            "CREATE STREAM output WITH (kafka_topic='{output}') AS \
             SELECT k, id, k IS NULL AS missing FROM input"
        ),
    ] {
        run(&mut engine, &sql).await;
    }
    let record = |key: Option<&[u8]>, value: &str| Record {
        key: key.map(<[u8]>::to_vec),
        payload: Some(value.as_bytes().to_vec()),
        timestamp_ms: Some(1_000),
        partition: None,
        upstream: None,
    };
    produce(
        &shared().config("empty-key-producer"),
        &input,
        vec![
            record(Some(b""), r#"{"ID":1}"#),
            record(None, r#"{"ID":2}"#),
        ],
    )
    .await;
    assert_eq!(
        read_raw(&output, 2).await,
        expected(&[
            (Some(b""), Some(r#"{"ID":1,"MISSING":false}"#)),
            (None, Some(r#"{"ID":2,"MISSING":true}"#)),
        ])
    );
}
