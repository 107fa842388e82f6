//! `eddy-bench udf`: the cost of the wasm boundary, against the same function in native Rust.
//!
//! Both run `celsius_to_fahrenheit` over the same Float64 rows in the same process: once as
//! whole SQL queries (what a user pays), once as bare UDF invocations per batch (the boundary
//! alone). Ratios are wasm rows/s over native rows/s.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use eddy_udf_host::UdfRuntime;

use crate::common::{bench_session, best_of, celsius, component, invoke_all, native_udf, rate};

/// Options of `eddy-bench udf`.
#[derive(clap::Args)]
pub(crate) struct UdfBench {
    /// Component providing celsius_to_fahrenheit; built from udfs/temperature when missing.
    #[arg(long, default_value_os_t = component("temperature"))]
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

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: &UdfBench, runtime: UdfRuntime) -> Result<()> {
    let session = bench_session(
        runtime,
        &args.component,
        "temperature",
        "celsius_to_fahrenheit",
        args.batch,
    )
    .await?;
    session.context().register_udf(native_udf());

    let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Float64, false)]));
    let arrays = celsius(args.rows, args.batch);
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
