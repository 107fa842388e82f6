//! `eddy-bench langs`: the same f64 function (`celsius_to_fahrenheit`) written in Rust, Python and
//! JavaScript, against native DataFusion: rows/s and the ratio to native, component size, first
//! compile time (an empty compile cache) and warm instantiate time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use datafusion::execution::FunctionRegistry;
use eddy_udf_host::{Limits, UdfRuntime};

use crate::common::{
    best_of, celsius, components_dir, ensure_component, invoke_all, native_udf, rate,
};

/// Options of `eddy-bench langs`.
#[derive(clap::Args)]
pub(crate) struct LangsBench {
    /// Where the components are (built from udfs/temperature, _py and _js when missing).
    #[arg(long, default_value_os_t = components_dir())]
    components: PathBuf,
    /// Rows per run.
    #[arg(long, default_value_t = 1 << 18)]
    rows: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Timed runs per side; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Warm instantiations timed per component (the median is reported).
    #[arg(long, default_value_t = 20)]
    instances: usize,
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: &LangsBench) -> Result<()> {
    let arrays = celsius(args.rows, args.batch);
    let native = native_udf();
    let (t, n) = best_of(args.runs, || invoke_all(&native, &arrays))?;
    let native_rate = rate(n, t);
    println!(
        "celsius_to_fahrenheit over {} rows in {}-row batches (UDF invocation, best of {} runs)",
        args.rows, args.batch, args.runs
    );
    println!("| language | rows/s | vs native | component | first compile | warm instantiate |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!("| native DataFusion | {native_rate:.3e} | 1 | — | — | — |");
    for (label, dir) in [
        ("Rust", "temperature"),
        ("Python", "temperature_py"),
        ("JavaScript", "temperature_js"),
    ] {
        let path = args.components.join(format!("{dir}.wasm"));
        ensure_component(&path, dir)?;
        // An empty cache: what the first CREATE FUNCTION of a new component pays.
        let cache = std::env::temp_dir().join(format!("eddy-bench-langs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let runtime = UdfRuntime::new(Some(cache.clone()), Limits::default())?;
        let started = Instant::now();
        let component = runtime.load_file(&path)?;
        let compile = started.elapsed();
        let mut times: Vec<Duration> = (0..args.instances)
            .map(|_| {
                let started = Instant::now();
                component.prewarm().map(|_| started.elapsed())
            })
            .collect::<Result<_, _>>()?;
        times.sort();
        let instantiate = times[times.len() / 2];

        let mut session = eddy_sql::Session::new(runtime);
        session
            .execute(&format!(
                "CREATE FUNCTION celsius_to_fahrenheit FROM '{}'",
                path.display()
            ))
            .await?;
        let udf = session.context().udf("celsius_to_fahrenheit")?;
        let (t, n) =
            tokio::task::block_in_place(|| best_of(args.runs, || invoke_all(&udf, &arrays)))?;
        let r = rate(n, t);
        let _ = std::fs::remove_dir_all(&cache);
        println!(
            "| {label} | {r:.3e} | {:.3} | {:.1} MiB | {:.1} s | {:.2} ms |",
            r / native_rate,
            std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64,
            compile.as_secs_f64(),
            instantiate.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
