//! Runs WebAssembly UDF components under wasmtime and exposes their functions to DataFusion.
//!
//! A component (world `eddy:udf/scalar-udf`, see `wit/udf.wit`) is compiled once per content
//! hash — cached on disk — and describes its own functions; each becomes a DataFusion
//! [`ScalarUDF`](datafusion::logical_expr::ScalarUDF) that calls the guest once per Arrow batch.
//! Guests run with no filesystem, environment or network, under memory and time limits; a trap
//! fails only the call that caused it.

mod bindings;
mod call;
mod capture;
mod component;
mod convert;
mod error;
mod function_cache;
mod output;
mod query_context;
mod runtime;
mod shadow;
mod sleep;
mod udf;

pub use capture::{replay, Capture, CaptureConfig, CaptureStats, Outcome, Replay, Role};
pub use component::{Component, FunctionSignature, LimitKind, SqlType};
pub use eddy_metrics::{Histogram, HistogramSnapshot, BUCKET_BOUNDS_NANOS};
pub use error::{Error, Result};
pub use query_context::{QueryDeadline, QueryId};
pub use runtime::{Limits, UdfRuntime};
pub use shadow::{Compared, Difference, Shadow, ShadowConfig, ShadowReport, MAX_KEPT_DIFFERENCES};
pub use udf::{FunctionStats, WasmScalarUdf};

/// Where compiled components are cached: `explicit` (a `--cache-dir`), else `$EDDY_CACHE_DIR`,
/// else `$XDG_CACHE_HOME/eddy`, else `~/.cache/eddy`, else `.eddy-cache`. The CLI and the
/// benchmarks share it, so both reuse one cache.
pub fn cache_dir(explicit: Option<std::path::PathBuf>) -> std::path::PathBuf {
    use std::path::PathBuf;
    explicit
        .or_else(|| std::env::var_os("EDDY_CACHE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("eddy")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/eddy")))
        .unwrap_or_else(|| PathBuf::from(".eddy-cache"))
}
