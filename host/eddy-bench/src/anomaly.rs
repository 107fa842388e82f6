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
    /// Timed pairs of runs (native, then wasm, in turn), so machine drift hits both sides.
    #[arg(long, default_value_t = 5)]
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
    let mut native = || {
        let mut n = 0;
        for values in &flat {
            n += model.score(values)?.score.len();
        }
        Ok(n)
    };
    let in_wasm = || invoke_all(&wasm, &arrays);
    println!(
        "anomaly_score over {} rows in {}-row batches: {} pairs, native then wasm in turn",
        args.rows, args.batch, args.runs
    );
    println!(
        "{:<22} {:>16} {:>16} {:>12}",
        "", "native rows/s", "wasm rows/s", "wasm/native"
    );
    let mut pairs = Vec::with_capacity(args.runs);
    for pair in 1..=args.runs.max(1) {
        // One run of each (after a warm-up run), back to back.
        let n = best_of(1, &mut native)?;
        let w = best_of(1, in_wasm)?;
        let (rn, rw) = (rate(n.1, n.0), rate(w.1, w.0));
        println!(
            "{:<22} {rn:>16.0} {rw:>16.0} {:>12.2}",
            format!("pair {pair}"),
            rw / rn
        );
        pairs.push((rn, rw));
    }
    let mut ratios: Vec<f64> = pairs.iter().map(|(n, w)| w / n).collect();
    ratios.sort_by(f64::total_cmp);
    let best_native = pairs.iter().map(|p| p.0).fold(0.0, f64::max);
    let best_wasm = pairs.iter().map(|p| p.1).fold(0.0, f64::max);
    println!(
        "{:<22} {best_native:>16.0} {best_wasm:>16.0} {:>12.2}",
        "best of each",
        best_wasm / best_native
    );
    println!(
        "wasm/native per pair: median {:.2}, range {:.2}-{:.2}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}
