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
use datafusion::logical_expr::ScalarUDF;
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
    /// Skip the sweep over batch sizes that splits a call's cost into fixed and per row.
    #[arg(long)]
    no_sweep: bool,
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
    if !args.no_sweep {
        sweep(args, &native, &wasm)?;
    }
    Ok(())
}

/// Batch sizes of the sweep that separates a call's fixed cost from its cost per row.
const SWEEP: [usize; 6] = [64, 256, 1024, 4096, 16384, 65536];

/// Times invocations over [`SWEEP`]'s batch sizes and fits `µs per call = fixed + per row ×
/// rows` (least squares) for each side.
fn sweep(args: &UdfBench, native: &ScalarUDF, wasm: &ScalarUDF) -> Result<()> {
    println!();
    println!(
        "{:>12} {:>18} {:>18} {:>12}",
        "batch rows", "native µs/call", "wasm µs/call", "wasm/native"
    );
    let mut points = [Vec::new(), Vec::new()];
    for batch in SWEEP.into_iter().filter(|&b| b <= args.rows) {
        let arrays = celsius(args.rows, batch);
        let mut per_call = [0.0; 2];
        for (i, udf) in [native, wasm].into_iter().enumerate() {
            let (time, _) = best_of(args.runs, || invoke_all(udf, &arrays))?;
            per_call[i] = time.as_secs_f64() * 1e6 / arrays.len() as f64;
            points[i].push((batch as f64, per_call[i]));
        }
        println!(
            "{batch:>12} {:>18.2} {:>18.2} {:>12.2}",
            per_call[0],
            per_call[1],
            per_call[0] / per_call[1]
        );
    }
    for (label, points) in ["native", "wasm"].iter().zip(&points) {
        let (fixed, per_row) = fit(points);
        println!(
            "{label:<6} fixed {fixed:.2} µs per call + {:.3} ns per row",
            per_row * 1e3
        );
    }
    Ok(())
}

/// Least-squares line `y = a + b·x` through `points`: `(a, b)`.
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_recovers_a_line() {
        let (a, b) = fit(&[
            (64.0, 2.0 + 0.128),
            (1024.0, 2.0 + 2.048),
            (8192.0, 2.0 + 16.384),
        ]);
        assert!(
            (a - 2.0).abs() < 1e-9 && (b - 0.002).abs() < 1e-12,
            "{a} {b}"
        );
    }
}
