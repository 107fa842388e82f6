//! `eddy-bench anomaly`: the anomaly model inside wasm (tract compiled to wasm32) against tract
//! run natively (eddy-anomaly-native), over the same generated features.

use std::path::PathBuf;

use anyhow::Result;
use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::execution::FunctionRegistry;
use eddy_udf_host::UdfRuntime;

use crate::common::{bench_session, best_of, component, invoke_all, rate, repo_root};

/// Options of `eddy-bench anomaly`.
#[derive(clap::Args)]
pub(crate) struct AnomalyBench {
    /// The anomaly component; built from udfs/anomaly when missing.
    #[arg(long, default_value_os_t = component("anomaly"))]
    component: PathBuf,
    /// The ONNX model the native twin runs.
    #[arg(long, default_value_os_t = repo_root().join("udfs/anomaly/model/autoencoder.onnx"))]
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

/// The anomaly model inside wasm (tract compiled to wasm32) against tract run natively.
pub(crate) async fn run(args: &AnomalyBench, runtime: UdfRuntime) -> Result<()> {
    let session = bench_session(
        runtime,
        &args.component,
        "anomaly",
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
