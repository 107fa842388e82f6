//! What several benchmarks share: where the guest components are, sessions and timing helpers,
//! the Kafka they run against, and waiting for a continuous query to read its input.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::kernels::arity::unary;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility,
};
use datafusion::prelude::SessionConfig;
use eddy_kafka::KafkaConfig;
use eddy_sql::Session;
use eddy_stream::Engine;
use eddy_tests::kafka::Broker;
use eddy_udf_host::UdfRuntime;

/// The checkout this binary was built from; component defaults and `udfs/` builds are found
/// there, whatever the working directory.
pub(crate) fn repo_root() -> &'static Path {
    eddy_tests::repo_root()
}

/// Where `eddy udf build udfs` puts the components: `<repo>/udfs/target/components`.
pub(crate) fn components_dir() -> PathBuf {
    repo_root().join("udfs/target/components")
}

/// The default path of the component built from `udfs/<name>`.
pub(crate) fn component(name: &str) -> PathBuf {
    components_dir().join(format!("{name}.wasm"))
}

/// Builds `udfs/<name>` (`""`: the whole `udfs/` workspace) into [`components_dir`].
pub(crate) fn build_udfs(name: &str) -> Result<()> {
    let dir = repo_root().join("udfs").join(name);
    eprintln!("building {} …", dir.display());
    eddy_udf_build::build(&dir, &Default::default())
        .with_context(|| format!("building {}", dir.display()))?;
    Ok(())
}

/// Builds `udfs/<name>` when `component` is missing; fails if it is still missing after.
pub(crate) fn ensure_component(component: &Path, name: &str) -> Result<()> {
    if !component.exists() {
        build_udfs(name)?;
        if !component.exists() {
            bail!(
                "{} is missing (udfs/{name} was built into {})",
                component.display(),
                components_dir().display()
            );
        }
    }
    Ok(())
}

/// A session with `function`'s component loaded, built from `udfs/<crate_name>` when missing.
///
/// One partition and one thread of work per side: a like-for-like comparison.
pub(crate) async fn bench_session(
    runtime: UdfRuntime,
    component: &Path,
    crate_name: &str,
    function: &str,
    batch: usize,
) -> Result<Session> {
    ensure_component(component, crate_name)?;
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(batch);
    let mut session = Session::with_config(runtime, config);
    session
        .execute(&format!(
            "CREATE FUNCTION {function} FROM '{}'",
            component.display()
        ))
        .await?;
    Ok(session)
}

/// `celsius_to_fahrenheit` as a native DataFusion UDF, the baseline of every UDF benchmark.
pub(crate) fn native_udf() -> ScalarUDF {
    create_udf(
        "celsius_to_fahrenheit_native",
        vec![DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let array = args[0].to_array(1)?;
            let c = array
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("planned as DOUBLE");
            let f: Float64Array = unary::<Float64Type, _, Float64Type>(c, |c| c * 9.0 / 5.0 + 32.0);
            Ok(ColumnarValue::Array(Arc::new(f)))
        }),
    )
}

/// Celsius readings, `rows` of them in `batch`-row arrays: the input of the f64 UDF benchmarks.
pub(crate) fn celsius(rows: usize, batch: usize) -> Vec<ArrayRef> {
    (0..rows)
        .step_by(batch)
        .map(|start| {
            let end = (start + batch).min(rows);
            Arc::new(Float64Array::from_iter_values(
                (start..end).map(|i| (i % 2000) as f64 / 10.0 - 50.0),
            )) as ArrayRef
        })
        .collect()
}

/// The fastest of `runs` timed calls of `f` (after one untimed warm-up), and the rows it
/// returned.
pub(crate) fn best_of<F: FnMut() -> Result<usize>>(
    runs: usize,
    mut f: F,
) -> Result<(Duration, usize)> {
    f()?; // warm-up: instances, caches, page faults
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..runs {
        let start = Instant::now();
        rows = f()?;
        best = best.min(start.elapsed());
    }
    Ok((best, rows))
}

/// Rows per second.
pub(crate) fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

/// Calls `udf` once per array, as DataFusion would; returns the rows it produced.
pub(crate) fn invoke_all(udf: &ScalarUDF, batches: &[ArrayRef]) -> Result<usize> {
    let mut n = 0;
    let field = Arc::new(Field::new("c", batches[0].data_type().clone(), true));
    let config = Arc::new(ConfigOptions::default());
    for a in batches {
        let out = udf.invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(a.clone())],
            arg_fields: vec![field.clone()],
            number_rows: a.len(),
            return_field: Arc::new(Field::new("f", DataType::Float64, true)),
            config_options: config.clone(),
        })?;
        n += out.to_array(a.len())?.len();
    }
    Ok(n)
}

/// "debug" or "release": printed with figures, which differ by an order of magnitude.
pub(crate) fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The Kafka a benchmark uses: `bootstrap` if given, else the test harness's tansu started for
/// the run (`.tools/bin/tansu` from ./setup.sh, or `$EDDY_TANSU`), stopped when the broker is
/// dropped.
pub(crate) fn broker(bootstrap: Option<&str>) -> (Option<Broker>, String) {
    match bootstrap {
        Some(b) => (None, b.to_string()),
        None => {
            let broker = Broker::start();
            let bootstrap = broker.bootstrap();
            (Some(broker), bootstrap)
        }
    }
}

/// A benchmark client's config: short group timeouts, so consumers join at once.
pub(crate) fn bench_config(bootstrap: &str, group: &str) -> KafkaConfig {
    KafkaConfig::new(bootstrap, group)
        .with("session.timeout.ms", "2000")
        .with("heartbeat.interval.ms", "100")
        .with("fetch.wait.max.ms", "5")
}

/// Waits until the one query has read `events`; returns the time from its first event to
/// then, and the time before its first event.
pub(crate) async fn wait_for(
    engine: &Engine,
    events: u64,
    limit: Duration,
) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    loop {
        let q = engine
            .queries()
            .into_iter()
            .next()
            .context("the query stopped")?;
        if first.is_none() && q.events_in > 0 {
            first = Some(Instant::now());
        }
        if q.events_in >= events {
            let first = first.unwrap_or(started);
            return Ok((first.elapsed(), first.duration_since(started)));
        }
        if started.elapsed() > limit {
            bail!("{} of {events} events after {limit:?}", q.events_in);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
