//! Property tests for what a client controls byte for byte: statement text and event payloads.
//! Whatever arrives, parsers return a value or an error, and decoders account for every message
//! as a row or a bad event; nothing panics. `cargo test` runs a few hundred cases each; a long
//! run: `PROPTEST_CASES=1000000 cargo test --release -p eddy-stream robustness`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use eddy_connector::{Message, Position};
use proptest::prelude::*;

use crate::format::{KeyFormat, ValueDecoder, ValueFormat};

/// Statements the parsers accept, to mutate.
const STATEMENTS: &[&str] = &[
    "CREATE STREAM s (id INT KEY, name VARCHAR, v DOUBLE, tags ARRAY<VARCHAR>) WITH (kafka_topic='t', value_format='JSON', key_format='KAFKA', timestamp='ts');",
    "CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 5 SECONDS) GROUP BY id HAVING COUNT(*) > 1;",
    "CREATE OR REPLACE FUNCTION f FROM 'udfs/x.wasm' WITH (max_memory = '64MB', timeout = '50ms');",
    "SELECT * FROM s WHERE v > 1.5 EMIT CHANGES LIMIT 10;",
    "PRINT 'topic' FROM BEGINNING LIMIT 5;",
    "SET 'auto.offset.reset' = 'earliest';",
    "DROP FUNCTION IF EXISTS f FORCE;",
    "TERMINATE CSAS_X_1; DROP TABLE t; SHOW QUERIES;",
    "INSERT INTO s (id, name) VALUES (1, 'a''b'), (2, NULL);",
];

/// A valid statement with bytes cut, repeated or replaced.
fn mutated_statement() -> impl Strategy<Value = String> {
    (
        prop::sample::select(STATEMENTS),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6),
    )
        .prop_map(|(base, edits)| {
            let mut bytes = base.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = at % bytes.len();
                match kind {
                    0 => {
                        bytes.truncate(at);
                    }
                    1 => bytes[at] = byte,
                    _ => {
                        let tail = bytes[at..].to_vec();
                        bytes.extend_from_slice(&tail);
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        mutated_statement(),
        "[ -~]{0,120}",
        any::<String>(),
        // Tokens of the grammar in random order.
        prop::collection::vec(
            prop::sample::select(
                &[
                    "CREATE", "STREAM", "TABLE", "AS", "SELECT", "FROM", "WITH", "(", ")", ",",
                    "=", "'x'", "KEY", "PRIMARY", "WINDOW", "TUMBLING", "SIZE", "1", "GROUP", "BY",
                    "EMIT", "CHANGES", "LIMIT", "ARRAY", "<", ">", ";", "FUNCTION", "PRINT",
                    "\"q\"",
                ][..]
            ),
            0..24,
        )
        .prop_map(|t| t.join(" ")),
    ]
}

fn messages() -> impl Strategy<Value = Vec<Message>> {
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "[ -~]{0,64}".prop_map(String::into_bytes),
        // Near-valid JSON and CSV.
        prop::sample::select(
            &[
                r#"{"ID": 1, "NAME": "a", "V": 1.5, "TS": 1000}"#,
                r#"{"id": "x", "v": [1, 2], "ts": -1}"#,
                r#"{"id": 9223372036854775807, "v": 1e400}"#,
                "1,a,1.5,1000",
                "\"1\",\"a\"\"b\",,",
                "\u{0}\u{0}\u{0}\u{7}",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    let key = prop::option::of(prop::collection::vec(any::<u8>(), 0..16));
    prop::collection::vec((key, payload), 0..12).prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (key, payload))| Message {
                key,
                payload,
                no_value: false,
                timestamp_ms: Some(i as i64),
                position: Position {
                    partition: 0,
                    offset: i as i64,
                },
                origin: format!("t[0]@{i}"),
                upstream: None,
            })
            .collect()
    })
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("v", DataType::Float64, true),
        Field::new("ts", DataType::Int64, true),
        Field::new(
            "rowtime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]))
}

/// Every message is a row or a bad event, never lost and never a panic.
fn accounts_for_all(decoder: &ValueDecoder, messages: &[Message]) {
    let (batch, bad) = decoder.decode(messages);
    assert_eq!(batch.num_rows() + bad.len(), messages.len());
}

proptest! {
    #[test]
    fn statement_parsers_never_panic(sql in statement()) {
        let _ = crate::parse(&sql);
        let _ = eddy_sql::parse(&sql);
        for (_, part) in eddy_sql::split_statements(&sql) {
            let _ = crate::parse(&part);
        }
    }

    #[test]
    fn json_decoding_accounts_for_every_message(messages in messages()) {
        let decoder = ValueDecoder::new(ValueFormat::Json, schema(), Some(3)).unwrap();
        accounts_for_all(&decoder, &messages);
    }

    #[test]
    fn delimited_decoding_accounts_for_every_message(messages in messages(), delimiter in prop::sample::select(&[b',', b'|', b'\t'][..])) {
        let decoder = ValueDecoder::new(ValueFormat::Delimited { delimiter }, schema(), Some(3)).unwrap();
        accounts_for_all(&decoder, &messages);
        // Keys from the record key, in every key format.
        for key_format in [
            KeyFormat::Kafka,
            KeyFormat::Delimited { delimiter: b',' },
            KeyFormat::Json,
        ] {
            let decoder = ValueDecoder::with_key(
                ValueFormat::Delimited { delimiter },
                Some(key_format),
                schema(),
                &[0],
                Some(3),
                None,
            )
            .unwrap();
            accounts_for_all(&decoder, &messages);
        }
    }

    #[test]
    fn kafka_decoding_accounts_for_every_message(messages in messages(), column in 0usize..4) {
        let fields = schema();
        let one = Arc::new(Schema::new(vec![fields.field(column).clone(), fields.field(4).clone()]));
        let decoder = ValueDecoder::new(ValueFormat::Kafka, one, None).unwrap();
        accounts_for_all(&decoder, &messages);
    }
}
