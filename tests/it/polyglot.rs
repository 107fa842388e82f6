//! Python and JavaScript UDFs (udfs/*_py, udfs/*_js, built by componentize-py and ComponentizeJS
//! through the SDKs in sdk/): what they declare, how their row errors are counted and logged, and
//! a running query swapped between a Rust and a Python version of one function.

use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, UInt64Type};

/// `(property, value)` of a DESCRIBE FUNCTION result, for the properties in `keys`.
fn described(batches: &[RecordBatch], keys: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in batches {
        let k = b.column(0).as_string::<i32>();
        let v = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            if keys.contains(&k.value(i)) {
                out.push((k.value(i).to_string(), v.value(i).to_string()));
            }
        }
    }
    out
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_functions_declare_signature_doc_and_volatility() {
    let keys = ["signature", "volatility", "description"];
    let mut session = eddy_tests::session_with("celsius_to_kelvin", "temperature_py", "").await;
    assert_eq!(
        described(
            &eddy_tests::rows(&mut session, "DESCRIBE FUNCTION celsius_to_kelvin").await,
            &keys
        ),
        pairs(&[
            ("signature", "celsius_to_kelvin(c DOUBLE) -> DOUBLE"),
            ("volatility", "immutable"),
            (
                "description",
                "Converts degrees Celsius to kelvin, a whole column per call."
            ),
        ])
    );
    assert_eq!(
        described(
            &eddy_tests::rows(&mut session, "DESCRIBE FUNCTION median_temperature").await,
            &keys
        ),
        pairs(&[
            ("signature", "median_temperature(readings ARRAY<DOUBLE>) -> DOUBLE"),
            ("volatility", "immutable"),
            (
                "description",
                "The median of a car's temperature readings (statistics.median); null for no readings."
            ),
        ])
    );

    let mut session = eddy_tests::session_with("car_number", "text_js", "").await;
    assert_eq!(
        described(
            &eddy_tests::rows(&mut session, "DESCRIBE FUNCTION shout").await,
            &keys
        ),
        pairs(&[
            ("signature", "shout(text VARCHAR, times BIGINT) -> VARCHAR"),
            ("volatility", "immutable"),
            (
                "description",
                "Shouts a car id: upper case, with `!` repeated `times` times."
            ),
        ])
    );
}

/// The row-error counter SHOW FUNCTIONS gives `function`.
async fn row_errors(session: &mut eddy_sql::Session, function: &str) -> u64 {
    let show = eddy_tests::rows(session, "SHOW FUNCTIONS").await;
    let batch = &show[0];
    let names = batch.column(0).as_string::<i32>();
    let row = (0..batch.num_rows())
        .find(|&i| names.value(i) == function)
        .expect("listed");
    batch.column(7).as_primitive::<UInt64Type>().value(row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_is_a_row_error_counted_and_logged_like_a_rust_err() {
    eddy_tests::logs();
    for (component, message) in [
        ("text_py", "ValueError: not a car id: 'bogus-py'"),
        ("text_js", "Error: not a car id: \"bogus-js\""),
    ] {
        let bad = if component.ends_with("py") {
            "bogus-py"
        } else {
            "bogus-js"
        };
        let mut session = eddy_tests::session_with("car_number", component, "").await;
        let out = eddy_tests::rows(
            &mut session,
            &format!("SELECT car_number(c) FROM (VALUES ('car-1'), ('{bad}'), ('car-30')) AS t(c)"),
        )
        .await;
        let numbers = out[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(
            (0..3)
                .map(|i| numbers.is_valid(i).then(|| numbers.value(i)))
                .collect::<Vec<_>>(),
            [Some(1), None, Some(30)],
            "{component}"
        );
        assert_eq!(
            row_errors(&mut session, "car_number").await,
            1,
            "{component}"
        );
        let logs = eddy_tests::logs();
        let line = logs
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("no log line with {message:?}"));
        assert!(
            line.contains(&format!(
                "row 1 of the batch: {message} (failed rows are null)"
            )),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_query_moves_between_rust_and_python_versions_exactly_once_per_event() {
    const N: usize = 30_000;
    let rust = eddy_tests::component("tag_v1");
    let python = eddy_tests::component("tag_py");
    let replace = |path: &std::path::Path| {
        format!("CREATE OR REPLACE FUNCTION tag FROM '{}'", path.display())
    };
    let mut engine =
        eddy_stream::Engine::new(eddy_tests::session(), eddy_stream::EngineConfig::default());
    // Load (and so compile: ~45 s cold, ~15 s from the function cache, in a debug build) the
    // Python version first, so every swap below costs what a swap costs, not a first compile.
    engine.execute(&replace(&python)).await.unwrap();
    engine.execute(&replace(&rust)).await.unwrap();
    engine
        .execute(&format!(
            "CREATE STREAM g WITH (generator='car_sensor', rate=5000, seed=3, max_events={N})"
        ))
        .await
        .unwrap();
    engine
        .execute("CREATE STREAM tagged AS SELECT event_id, tag(event_id) AS t FROM g")
        .await
        .unwrap();
    // Rust → Python → Rust → … while events flow.
    let mut swaps = 0;
    while engine.queries()[0].events_in < N as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let next = if swaps % 2 == 0 { &python } else { &rust };
        engine.execute(&replace(next)).await.unwrap();
        swaps += 1;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while engine.queries()[0].rows_out < N as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batches = match engine
        .execute("SELECT event_id, t FROM tagged ORDER BY event_id")
        .await
        .unwrap()
    {
        eddy_stream::Output::Rows { batches, .. } => batches,
        _ => unreachable!(),
    };
    // Every event once, tagged `v1:<id>` (Rust) or `v3:<id>` (Python) for its own id.
    let mut seen = vec![0u32; N];
    let mut versions = Vec::new();
    for batch in &batches {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let tags = batch.column(1).as_string::<i32>();
        assert_eq!(tags.null_count(), 0);
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            let (version, number) = tags
                .value(row)
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed tag {:?}", tags.value(row)));
            assert_eq!(number, id.to_string());
            assert!(version == "v1" || version == "v3", "{version}");
            seen[id as usize] += 1;
            versions.push(version.to_string());
        }
    }
    let missing = seen.iter().filter(|&&n| n == 0).count();
    let repeated = seen.iter().filter(|&&n| n > 1).count();
    assert_eq!((missing, repeated), (0, 0), "every event exactly once");
    let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(swaps >= 2, "the stream outlived only {swaps} swaps");
    assert!(
        (1..=swaps).contains(&changes),
        "{changes} version changes for {swaps} swaps"
    );
    assert!(
        versions.iter().any(|v| v == "v3"),
        "the Python version served some events"
    );
    assert_eq!(versions[0], "v1");
    engine.shutdown().await;
}
