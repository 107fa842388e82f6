//! DESCRIBE/SHOW FUNCTIONS against what the component declared and what ran.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;
use eddy_sql::Output;
use sha2::{Digest, Sha256};

/// `(property, value)` pairs of a DESCRIBE FUNCTION result.
fn properties(batches: &[RecordBatch]) -> Vec<(String, String)> {
    batches
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_string::<i32>();
            let v = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| (k.value(i).to_string(), v.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_function_shows_the_declared_signature() {
    let path = eddy_tests::component("text");
    let mut session = eddy_tests::session();
    let loaded = session
        .execute(&format!(
            "CREATE FUNCTION car_number FROM '{}'",
            path.display()
        ))
        .await
        .unwrap();
    let hash = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    match loaded {
        Output::Message(m) => assert_eq!(
            m,
            format!(
                "Loaded {} (version {}): shout, has_label, car_number, flip",
                path.display(),
                &hash[..12]
            )
        ),
        other => panic!("unexpected {other:?}"),
    }

    let described =
        properties(&eddy_tests::rows(&mut session, "DESCRIBE FUNCTION car_number").await);
    let expected = [
        ("name", "car_number".to_string()),
        ("signature", "car_number(car VARCHAR) -> BIGINT".into()),
        ("parameters", "car VARCHAR".into()),
        ("returns", "BIGINT".into()),
        ("volatility", "immutable".into()),
        (
            "sandbox",
            "fixed clock and random (every function of the component is immutable)".into(),
        ),
        (
            "description",
            "Parses a car id like `car-0042` into its number; anything else is a row error.".into(),
        ),
        ("version", hash.clone()),
        ("source", path.display().to_string()),
        ("max_memory", format!("{} bytes", 128 << 20)),
        ("timeout", "2s".into()),
        ("max_log_lines", "100".into()),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(described, expected);

    let shout = properties(&eddy_tests::rows(&mut session, "DESCRIBE FUNCTION shout").await);
    assert_eq!(shout[1].1, "shout(text VARCHAR, times BIGINT) -> VARCHAR");

    let err = session.execute("DESCRIBE FUNCTION nope").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "function 'nope' does not exist (see SHOW FUNCTIONS)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_functions_counts_one_call_per_batch_and_row_errors() {
    let mut session = eddy_tests::session();
    session
        .execute(&format!(
            "CREATE FUNCTION car_number FROM '{}'",
            eddy_tests::component("text").display()
        ))
        .await
        .unwrap();
    session
        .execute("SET datafusion.execution.batch_size = 7")
        .await
        .unwrap();
    // 100 rows in batches of 7 is 15 calls; car ids all parse.
    let out = eddy_tests::rows(
        &mut session,
        "SELECT sum(car_number(car)) FROM car_sensor(100, 1, 4)",
    )
    .await;
    // Cars 1..4 round-robin over 100 events: 25 each.
    assert_eq!(
        out[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0),
        25 * (1 + 2 + 3 + 4)
    );
    // Three bad ids in one batch: three row errors, still one call.
    session
        .execute("SELECT car_number(c) FROM (VALUES ('x'), ('car-1'), ('y'), ('z')) AS t(c)")
        .await
        .unwrap();

    let show = eddy_tests::rows(&mut session, "SHOW FUNCTIONS").await;
    let batch = &show[0];
    let names = batch.column(0).as_string::<i32>();
    let row = (0..batch.num_rows())
        .find(|&i| names.value(i) == "car_number")
        .expect("car_number is listed");
    let counter = |col: usize| batch.column(col).as_primitive::<UInt64Type>().value(row);
    assert_eq!(counter(5), 15 + 1, "calls");
    assert_eq!(counter(6), 100 + 4, "rows");
    assert_eq!(counter(7), 3, "row errors");
    assert_eq!(counter(8), 0, "traps");
    assert_eq!(
        batch.num_rows(),
        4,
        "all four functions of text.wasm are listed"
    );
    assert!(batch
        .column(2)
        .as_string::<i32>()
        .iter()
        .all(|v| v.unwrap().len() == 12));
    assert_eq!(batch.column(4).null_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_function_shows_limits_set_with_create() {
    let mut session = eddy_tests::session();
    session
        .execute(&format!(
            "CREATE FUNCTION shout FROM '{}' WITH (max_memory = '3MiB', timeout = '1500ms', max_log_lines = 0)",
            eddy_tests::component("text").display()
        ))
        .await
        .unwrap();
    // Every function of the component runs under them.
    for name in ["shout", "flip"] {
        let described =
            properties(&eddy_tests::rows(&mut session, &format!("DESCRIBE FUNCTION {name}")).await);
        assert_eq!(
            described[9..],
            [
                ("max_memory".to_string(), format!("{} bytes", 3 << 20)),
                ("timeout".to_string(), "1.5s".to_string()),
                ("max_log_lines".to_string(), "0".to_string()),
            ]
        );
    }
}
