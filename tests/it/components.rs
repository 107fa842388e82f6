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
    // Beside the components: the per-function cache (the next test).
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.is_dir())
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

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_a_component_compiles_only_the_functions_that_changed() {
    // tag_v1 and tag_v2 differ in one string constant; the function cache keeps each compiled
    // function by a hash of its code, so v2 reuses v1's functions (as a second Python or
    // JavaScript UDF reuses the interpreter's) and still computes its own answers.
    let cache = std::env::temp_dir().join(format!("eddy-fn-cache-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let runtime = UdfRuntime::new(Some(cache.clone()), eddy_tests::test_limits()).unwrap();
    let functions = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .map(|p| files_under(&p))
            .sum::<usize>()
    };
    runtime.load_file(eddy_tests::component("tag_v1")).unwrap();
    let v1 = functions();
    runtime.load_file(eddy_tests::component("tag_v2")).unwrap();
    let v2 = functions() - v1;
    assert!(v1 > 100, "tag_v1 cached only {v1} functions");
    // What v2 compiles anew is its changed code and the per-component glue: 25 of 274 today.
    assert!(
        v2 > 0 && v2 * 5 < v1,
        "tag_v2 compiled {v2} new functions of tag_v1's {v1}"
    );

    let mut session = eddy_sql::Session::new(runtime);
    for version in ["tag_v1", "tag_v2"] {
        session
            .execute(&format!(
                "CREATE OR REPLACE FUNCTION tag FROM '{}'",
                eddy_tests::component(version).display()
            ))
            .await
            .unwrap();
        let out = eddy_tests::rows(&mut session, "SELECT tag(7)").await;
        let tag = out[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .expect("a VARCHAR")
            .value(0)
            .to_string();
        assert_eq!(tag, format!("v{}:7", &version[5..]));
    }
    // Tidying a temporary directory is not what this test checks: a failure here (CI once saw
    // one) must not fail it.
    if let Err(e) = std::fs::remove_dir_all(&cache) {
        eprintln!("cannot remove {}: {e}", cache.display());
    }
}
