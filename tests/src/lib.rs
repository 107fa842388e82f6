//! Shared helpers for the integration tests: the guest components, built once per run, and
//! sessions wired to a test compile cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use eddy_sql::Session;
use eddy_udf_host::{Limits, UdfRuntime};

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
}

/// Directory of the components built from `udfs/`; builds the whole workspace on first use.
///
/// Every test binary calls this; cargo's own lock and freshness checks make all but the first
/// build a no-op, so guests compile once per run.
pub fn components() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let built = eddy_udf_build::build(
            &repo_root().join("udfs"),
            &eddy_udf_build::BuildOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("building udfs/: {e}"));
        built[0]
            .component
            .parent()
            .expect("components have a directory")
            .to_path_buf()
    })
}

/// The component built from `udfs/<name>`.
pub fn component(name: &str) -> PathBuf {
    components().join(format!("{name}.wasm"))
}

/// Limits tight enough that hostile guests fail fast in tests.
pub fn test_limits() -> Limits {
    Limits {
        max_memory: 128 << 20,
        timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// A runtime sharing one compile cache across the test run.
pub fn runtime() -> UdfRuntime {
    UdfRuntime::new(
        Some(repo_root().join("target/eddy-test-cache")),
        test_limits(),
    )
    .expect("wasm engine")
}

/// A fresh session on a shared test runtime.
pub fn session() -> Session {
    static RUNTIME: OnceLock<UdfRuntime> = OnceLock::new();
    Session::new(RUNTIME.get_or_init(runtime).clone())
}

/// SQL for the anomaly model's input: the 17 features as one `ARRAY<DOUBLE>`, in model order.
pub fn features_sql() -> String {
    format!("make_array({})", eddy_generator::FEATURES.join(", "))
}

/// Everything logged at INFO or above since the first call, as text; the first call installs a
/// process-wide subscriber that records it.
///
/// Tests in one binary share it: filter for lines only your test can produce.
pub fn logs() -> String {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("no other subscriber in the test binary");
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A fresh session with `function` loaded from the component built from `udfs/<crate_name>`;
/// `with` is an optional `WITH (...)` clause.
pub async fn session_with(function: &str, crate_name: &str, with: &str) -> Session {
    let mut session = session();
    session
        .execute(&format!(
            "CREATE FUNCTION {function} FROM '{}' {with}",
            component(crate_name).display()
        ))
        .await
        .unwrap_or_else(|e| panic!("loading {crate_name}: {e}"));
    session
}

/// The rows of a statement that must succeed and return rows.
pub async fn rows(session: &mut Session, sql: &str) -> Vec<datafusion::arrow::array::RecordBatch> {
    match session.execute(sql).await.unwrap() {
        eddy_sql::Output::Rows { batches, .. } => batches,
        eddy_sql::Output::Message(m) => panic!("expected rows from {sql:?}, got {m:?}"),
    }
}

/// The error message of a statement that must fail.
pub async fn error(session: &mut Session, sql: &str) -> String {
    match session.execute(sql).await {
        Ok(output) => panic!("expected {sql:?} to fail, got {output:?}"),
        Err(e) => e.to_string(),
    }
}

pub mod kafka;
pub mod mqtt;
