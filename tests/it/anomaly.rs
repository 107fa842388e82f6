//! The anomaly UDF: quality on generator data training never saw, and the same scores as the
//! model run natively by tract.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use eddy_anomaly_native::{NativeAnomalyModel, FEATURE_COUNT};
use eddy_sql::Session;

/// Seed of the evaluation stream: training used 1, threshold selection 2, the demo 3.
const UNSEEN_SEED: u64 = 4;

async fn session_with_anomaly() -> Session {
    eddy_tests::session_with("detect_anomaly", "anomaly", "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detects_labelled_anomalies_on_an_unseen_stream() {
    let mut session = session_with_anomaly().await;
    let sql = format!(
        "SELECT coalesce(anomaly, 'normal') AS label, count(*) AS events,
                sum(CASE WHEN detect_anomaly({f}) THEN 1 ELSE 0 END) AS flagged
         FROM car_sensor(100000, {UNSEEN_SEED}, 50) GROUP BY 1 ORDER BY 1",
        f = eddy_tests::features_sql()
    );
    let mut per_label = Vec::new();
    for b in eddy_tests::rows(&mut session, &sql).await {
        let label = b.column(0).as_string::<i32>();
        let events = b.column(1).as_primitive::<Int64Type>();
        let flagged = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            per_label.push((
                label.value(i).to_string(),
                events.value(i),
                flagged.value(i),
            ));
        }
    }
    let total: i64 = per_label.iter().map(|r| r.1).sum();
    assert_eq!(total, 100_000);
    let (normal, anomalous): (Vec<_>, Vec<_>) =
        per_label.iter().partition(|(label, ..)| label == "normal");
    let false_positives = normal[0].2;
    let true_positives: i64 = anomalous.iter().map(|r| r.2).sum();
    let anomalies: i64 = anomalous.iter().map(|r| r.1).sum();
    let precision = true_positives as f64 / (true_positives + false_positives) as f64;
    let recall = true_positives as f64 / anomalies as f64;
    let report = format!("{per_label:?}: precision {precision:.4}, recall {recall:.4}");
    eprintln!("{report}");
    assert_eq!(anomalous.len(), 5, "every anomaly kind occurs: {report}");
    // Floors from the issue; the model measures well above them (udfs/anomaly/model/README.md).
    assert!(precision >= 0.95, "{report}");
    assert!(recall >= 0.90, "{report}");
    for (label, events, flagged) in &anomalous {
        let kind_recall = *flagged as f64 / *events as f64;
        assert!(kind_recall >= 0.80, "{label}: {kind_recall:.3}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_scores_equal_native_tract_scores() {
    let mut session = session_with_anomaly().await;
    // Several batches, including a short last one.
    session
        .execute("SET datafusion.execution.batch_size = 1000")
        .await
        .unwrap();
    let sql = format!(
        "SELECT {f} AS features, anomaly_score({f}) AS score, detect_anomaly({f}) AS flag
         FROM car_sensor(5500, 11, 20) ORDER BY event_id",
        f = eddy_tests::features_sql()
    );
    let batches = eddy_tests::rows(&mut session, &sql).await;

    let mut features = Vec::new();
    let mut wasm_scores = Vec::new();
    let mut wasm_flags = Vec::new();
    for b in &batches {
        let lists = b.column(0).as_list::<i32>();
        for i in 0..b.num_rows() {
            let v = lists.value(i);
            let v = v.as_primitive::<Float64Type>();
            assert_eq!(v.len(), FEATURE_COUNT);
            features.extend(v.values().iter().map(|x| *x as f32));
        }
        let scores = b.column(1).as_primitive::<Float64Type>();
        assert_eq!(scores.null_count(), 0);
        wasm_scores.extend(scores.values().iter().copied());
        wasm_flags.extend(b.column(2).as_boolean().iter().map(|f| f.unwrap()));
    }
    assert_eq!(wasm_scores.len(), 5500);

    let model = NativeAnomalyModel::load(
        &eddy_tests::repo_root().join("udfs/anomaly/model/autoencoder.onnx"),
    )
    .unwrap();
    let native = model.score(&features).unwrap();
    let mut flag_mismatches = 0;
    for (i, (w, n)) in wasm_scores.iter().zip(&native.score).enumerate() {
        let n = f64::from(*n);
        assert!(
            (w - n).abs() <= 1e-4 * n.abs().max(1.0),
            "row {i}: wasm {w} native {n}"
        );
        flag_mismatches += usize::from(wasm_flags[i] != native.anomaly[i]);
    }
    // Float differences may flip a row sitting exactly on the threshold, nothing more.
    assert!(flag_mismatches <= 1, "{flag_mismatches} flags differ");
    assert!(
        native.anomaly.iter().any(|f| *f),
        "the sample holds anomalies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_row_errors_not_traps() {
    let mut session = session_with_anomaly().await;
    let good = "'95.1, 20.3, 30.2, 80.0, 13.9, 40.0, 60.0, 1.1, 0.3, 2.3, 2.3, 2.3, 2.3, 0.1, 0.1, 0.1, 0.1'";
    let sql = format!(
        "SELECT anomaly_score([1.0, 2.0]) IS NULL, anomaly_score_csv('1,2,x') IS NULL,
                anomaly_score_csv({good}) IS NOT NULL,
                anomaly_score_csv(replace({good}, ',', '#')) = anomaly_score_csv({good})"
    );
    let b = &eddy_tests::rows(&mut session, &sql).await[0];
    for c in 0..4 {
        assert!(b.column(c).as_boolean().value(0), "column {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_do_not_depend_on_batch_size_and_nulls_stay_null() {
    let mut session = session_with_anomaly().await;
    let f = eddy_tests::features_sql();
    // Every 5th event's features are NULL; 23 rows make ragged last batches.
    let sql = format!(
        "SELECT event_id, anomaly_score(CASE WHEN event_id % 5 = 0 THEN NULL ELSE {f} END) AS score
         FROM car_sensor(23, 5, 3) ORDER BY event_id"
    );
    let mut by_batch_size = Vec::new();
    for batch_size in [1, 4, 8192] {
        session
            .execute(&format!(
                "SET datafusion.execution.batch_size = {batch_size}"
            ))
            .await
            .unwrap();
        let mut scores = Vec::new();
        for b in eddy_tests::rows(&mut session, &sql).await {
            let s = b.column(1).as_primitive::<Float64Type>();
            scores.extend((0..b.num_rows()).map(|i| (!s.is_null(i)).then(|| s.value(i))));
        }
        assert_eq!(scores.len(), 23);
        for (i, s) in scores.iter().enumerate() {
            assert_eq!(
                s.is_none(),
                i % 5 == 0,
                "row {i} at batch size {batch_size}"
            );
        }
        by_batch_size.push(scores);
    }
    // f32 inference may round differently per batch shape; allow a tiny tolerance.
    for (a, b) in by_batch_size[0].iter().zip(&by_batch_size[2]) {
        if let (Some(a), Some(b)) = (a, b) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
    // An empty input calls nothing and returns nothing.
    let empty = eddy_tests::rows(
        &mut session,
        &format!("SELECT anomaly_score({f}) FROM car_sensor(10) WHERE speed < 0"),
    )
    .await;
    assert_eq!(empty.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}
