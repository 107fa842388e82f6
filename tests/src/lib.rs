//! Shared helpers for the integration tests: the guest components, built once per run, and
//! sessions wired to a test compile cache.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
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
