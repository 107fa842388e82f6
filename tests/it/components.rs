//! Loading components: bad files leave the session as it was; compiled code is cached by hash.

use std::time::Duration;

use eddy_sql::Output;
use eddy_udf_host::{Limits, UdfRuntime};

async fn one_value(session: &mut eddy_sql::Session, sql: &str) -> f64 {
    match session.execute(sql).await.unwrap() {
        Output::Rows { batches, .. } => batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .expect("a DOUBLE")
            .value(0),
        other => panic!("unexpected {other:?}"),
    }
}

async fn function_count(session: &mut eddy_sql::Session) -> usize {
    match session.execute("SHOW FUNCTIONS").await.unwrap() {
        Output::Rows { batches, .. } => batches.iter().map(|b| b.num_rows()).sum(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_another_world_is_refused_and_nothing_changes() {
    let dir = std::env::temp_dir().join(format!("eddy-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid component that exports nothing: the smallest "wrong world".
    let empty = eddy_udf_build::componentize(b"\0asm\x01\0\0\0").unwrap();
    let wrong = dir.join("empty.wasm");
    std::fs::write(&wrong, empty).unwrap();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();

    let mut session = eddy_tests::session();
    session
        .execute(&format!(
            "CREATE FUNCTION celsius_to_fahrenheit FROM '{}'",
            eddy_tests::component("temperature").display()
        ))
        .await
        .unwrap();
    assert_eq!(function_count(&mut session).await, 2);

    let err = eddy_tests::error(
        &mut session,
        &format!(
            "CREATE OR REPLACE FUNCTION celsius_to_fahrenheit FROM '{}'",
            wrong.display()
        ),
    )
    .await;
    assert!(
        err.starts_with(&format!(
            "{} does not implement the eddy:udf/scalar-udf@0.1.0 world: ",
            wrong.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("eddy:udf/scalar@0.1.0"),
        "names the missing export: {err}"
    );

    let err = eddy_tests::error(
        &mut session,
        &format!(
            "CREATE OR REPLACE FUNCTION celsius_to_fahrenheit FROM '{}'",
            garbage.display()
        ),
    )
    .await;
    assert!(
        err.starts_with(&format!(
            "{} is not a valid WebAssembly component",
            garbage.display()
        )),
        "{err}"
    );

    assert_eq!(function_count(&mut session).await, 2);
    assert_eq!(
        one_value(&mut session, "SELECT celsius_to_fahrenheit(10.0)").await,
        50.0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let cache = std::env::temp_dir().join(format!("eddy-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let path = eddy_tests::component("temperature");
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    };

    let first = UdfRuntime::new(Some(cache.clone()), limits.clone()).unwrap();
    let loaded = first.load_file(&path).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        name.starts_with(&loaded.hash) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A second runtime (a restarted host) loads from the cache and gets the same functions.
    let second = UdfRuntime::new(Some(cache.clone()), limits.clone()).unwrap();
    let again = second.load_file(&path).unwrap();
    assert_eq!(again.hash, loaded.hash);
    assert_eq!(again.functions, loaded.functions);

    // A damaged cache entry is ignored and recompiled, not trusted.
    std::fs::write(&entries[0], b"corrupt").unwrap();
    let third = UdfRuntime::new(Some(cache.clone()), limits).unwrap();
    assert_eq!(third.load_file(&path).unwrap().functions, loaded.functions);
    assert!(
        std::fs::metadata(&entries[0]).unwrap().len() > 1000,
        "rewritten"
    );
    std::fs::remove_dir_all(&cache).unwrap();
}
