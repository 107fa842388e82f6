//! `eddy bench udf`: the cost of the wasm boundary, against the same function in native Rust.
//!
//! Both run `celsius_to_fahrenheit` over the same Float64 rows in the same process: once as
//! whole SQL queries (what a user pays), once as bare UDF invocations per batch (the boundary
//! alone). Ratios are wasm rows/s over native rows/s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use datafusion::arrow::compute::kernels::arity::unary;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ScalarFunctionArgs, ScalarUDF, Volatility,
};
use datafusion::prelude::SessionConfig;
use eddy_sql::Session;
use eddy_udf_host::UdfRuntime;

/// Options of `eddy bench anomaly`.
#[derive(clap::Args)]
pub(crate) struct AnomalyBench {
    /// The anomaly component; built from udfs/anomaly when missing.
    #[arg(long, default_value = "udfs/target/components/anomaly.wasm")]
    component: PathBuf,
    /// The ONNX model the native twin runs.
    #[arg(long, default_value = "udfs/anomaly/model/autoencoder.onnx")]
    model: PathBuf,
    /// Rows per run.
    #[arg(long, default_value_t = 1 << 18)]
    rows: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Timed runs per side; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A session with `function`'s component loaded, built from `crate_dir` when missing.
///
/// One partition and one thread of work per side: a like-for-like comparison.
pub(crate) async fn bench_session(
    runtime: UdfRuntime,
    component: &Path,
    crate_dir: &str,
    function: &str,
    batch: usize,
) -> Result<Session> {
    if !component.exists() {
        eprintln!("building {crate_dir} …");
        eddy_udf_build::build(crate_dir.as_ref(), &Default::default())
            .with_context(|| format!("building {crate_dir}"))?;
    }
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

/// The anomaly model inside wasm (tract compiled to wasm32) against tract run natively.
pub(crate) async fn anomaly(args: &AnomalyBench, runtime: UdfRuntime) -> Result<()> {
    let session = bench_session(
        runtime,
        &args.component,
        "udfs/anomaly",
        "anomaly_score",
        args.batch,
    )
    .await?;
    let features = format!("make_array({})", eddy_generator::FEATURES.join(", "));
    let arrays: Vec<ArrayRef> = session
        .context()
        .sql(&format!(
            "SELECT {features} FROM car_sensor({}, 3, 50)",
            args.rows
        ))
        .await?
        .collect()
        .await?
        .iter()
        .map(|b| b.column(0).clone())
        .collect();
    let flat: Vec<Vec<f32>> = arrays
        .iter()
        .map(|a| {
            let lists = a.as_list::<i32>();
            lists
                .values()
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|v| *v as f32)
                .collect()
        })
        .collect();
    let model = eddy_anomaly_native::NativeAnomalyModel::load(&args.model)?;
    let wasm = session.context().udf("anomaly_score")?;
    // No instance exists yet: the first call instantiates the component and has tract parse
    // the embedded model; the second reuses the pooled instance.
    let one = [arrays[0].slice(0, 1)];
    let started = std::time::Instant::now();
    invoke_all(&wasm, &one)?;
    let cold = started.elapsed();
    let started = std::time::Instant::now();
    invoke_all(&wasm, &one)?;
    let warm = started.elapsed();
    println!(
        "component {} ({} KiB); first call on a new instance (instantiate + model load) {:.2} ms, \
         next call {:.3} ms (1 row each)",
        args.component.display(),
        std::fs::metadata(&args.component).map_or(0, |m| m.len() / 1024),
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
    let native = best_of(args.runs, || {
        let mut n = 0;
        for values in &flat {
            n += model.score(values)?.score.len();
        }
        Ok(n)
    })?;
    let in_wasm = best_of(args.runs, || invoke_all(&wasm, &arrays))?;
    let (rn, rw) = (rate(native.1, native.0), rate(in_wasm.1, in_wasm.0));
    println!(
        "anomaly_score over {} rows in {}-row batches (best of {} runs)",
        args.rows, args.batch, args.runs
    );
    println!(
        "{:<22} {:>16} {:>16} {:>12}",
        "", "native rows/s", "wasm rows/s", "wasm/native"
    );
    println!(
        "{:<22} {rn:>16.0} {rw:>16.0} {:>12.2}",
        "tract inference",
        rw / rn
    );
    Ok(())
}

/// Options of `eddy bench udf`.
#[derive(clap::Args)]
pub(crate) struct UdfBench {
    /// Component providing celsius_to_fahrenheit; built from udfs/temperature when missing.
    #[arg(long, default_value = "udfs/target/components/temperature.wasm")]
    component: PathBuf,
    /// Rows per run.
    #[arg(long, default_value_t = 1 << 20)]
    rows: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Timed runs per side; the best is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
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

pub(crate) fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

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

pub(crate) async fn udf(args: &UdfBench, runtime: UdfRuntime) -> Result<()> {
    let session = bench_session(
        runtime,
        &args.component,
        "udfs/temperature",
        "celsius_to_fahrenheit",
        args.batch,
    )
    .await?;
    session.context().register_udf(native_udf());

    let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Float64, false)]));
    let arrays: Vec<ArrayRef> = (0..args.rows)
        .step_by(args.batch)
        .map(|start| {
            let end = (start + args.batch).min(args.rows);
            Arc::new(Float64Array::from_iter_values(
                (start..end).map(|i| (i % 2000) as f64 / 10.0 - 50.0),
            )) as ArrayRef
        })
        .collect();
    let batches: Vec<RecordBatch> = arrays
        .iter()
        .map(|a| RecordBatch::try_new(schema.clone(), vec![a.clone()]))
        .collect::<Result<_, _>>()?;
    let table = MemTable::try_new(schema, vec![batches])?;
    session
        .context()
        .register_table("readings", Arc::new(table))?;

    let ctx = session.context().clone();
    let mut sql_time = Vec::new();
    for f in ["celsius_to_fahrenheit_native", "celsius_to_fahrenheit"] {
        let sql = format!("SELECT {f}(c) FROM readings");
        let handle = tokio::runtime::Handle::current();
        let ctx = ctx.clone();
        let measured = tokio::task::block_in_place(|| {
            best_of(args.runs, || {
                handle.block_on(async {
                    let batches = ctx.sql(&sql).await?.collect().await?;
                    Ok(batches.iter().map(|b| b.num_rows()).sum())
                })
            })
        })?;
        sql_time.push(measured);
    }
    let native = ctx.udf("celsius_to_fahrenheit_native")?;
    let wasm = ctx.udf("celsius_to_fahrenheit")?;
    let call_native = best_of(args.runs, || invoke_all(&native, &arrays))?;
    let call_wasm = best_of(args.runs, || invoke_all(&wasm, &arrays))?;

    println!(
        "celsius_to_fahrenheit over {} rows in {}-row batches (best of {} runs)",
        args.rows, args.batch, args.runs
    );
    println!(
        "{:<22} {:>16} {:>16} {:>12}",
        "", "native rows/s", "wasm rows/s", "wasm/native"
    );
    for (label, n, w) in [
        ("SQL query", sql_time[0], sql_time[1]),
        ("UDF invocation only", call_native, call_wasm),
    ] {
        let (rn, rw) = (rate(n.1, n.0), rate(w.1, w.0));
        println!("{label:<22} {rn:>16.0} {rw:>16.0} {:>12.2}", rw / rn);
    }
    let per_call = call_wasm.0.as_secs_f64() / arrays.len() as f64 * 1e6;
    println!("wasm: {per_call:.1} µs per {}-row call", args.batch);
    Ok(())
}
