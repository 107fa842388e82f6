//! `eddy-bench swap`: what hot swap and the sandbox cost.
//!
//! - swap latency: from `CREATE OR REPLACE FUNCTION` to the first batch the new version
//!   processed, in a query that keeps streaming (components already in the compile cache);
//! - warm instantiate: a new instance from a loaded component's `InstancePre`;
//! - limits: rows/s with epoch checks compiled in (how `timeout` is enforced) against without.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::prelude::SessionConfig;
use eddy_sql::Session;
use eddy_udf_host::{Limits, UdfRuntime};
use futures::StreamExt;

use crate::common::{
    bench_session, best_of, build_udfs, celsius, components_dir, invoke_all, rate,
};

/// Options of `eddy-bench swap`.
#[derive(clap::Args)]
pub(crate) struct SwapBench {
    /// Directory of the components built from udfs/ (tag_v1, tag_v2, temperature, anomaly).
    #[arg(long, default_value_os_t = components_dir())]
    components: PathBuf,
    /// Swaps to time.
    #[arg(long, default_value_t = 20)]
    swaps: usize,
    /// Rows per batch of the streaming query.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Instantiations to time.
    #[arg(long, default_value_t = 200)]
    instances: usize,
    /// Rows per run of the limits comparison.
    #[arg(long, default_value_t = 1 << 20)]
    rows: usize,
    /// Timed runs per side of the limits comparison; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Runs the three measurements; `cache_dir` is the compile cache both runtimes share.
pub(crate) async fn run(args: &SwapBench, cache_dir: PathBuf) -> Result<()> {
    for name in ["tag_v1", "tag_v2", "temperature", "anomaly"] {
        if !args.components.join(format!("{name}.wasm")).exists() {
            build_udfs("")?;
            break;
        }
    }
    let runtime = UdfRuntime::new(Some(cache_dir.clone()), Limits::default())?;
    swap_latency(args, runtime.clone()).await?;
    instantiate(args, &runtime)?;
    let unchecked = UdfRuntime::without_timeouts(Some(cache_dir), Limits::default())?;
    limits_cost(args, runtime, unchecked).await
}

async fn swap_latency(args: &SwapBench, runtime: UdfRuntime) -> Result<()> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(args.batch);
    let mut session = Session::with_config(runtime, config);
    let replace = |version: u8| {
        format!(
            "CREATE OR REPLACE FUNCTION tag FROM '{}'",
            args.components
                .join(format!("tag_v{version}.wasm"))
                .display()
        )
    };
    // Both versions through the compile cache once: the swaps below measure cached loads.
    for v in [2, 1] {
        session.execute(&replace(v)).await?;
    }
    let mut stream = session
        .execute_stream("SELECT tag(event_id) FROM car_sensor(1000000000, 1)")
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, u8)>();
    let reader = tokio::spawn(async move {
        let mut last = 0u8;
        while let Some(batch) = stream.next().await {
            let Ok(batch) = batch else { break };
            let tags = batch.column(0).as_string::<i32>();
            let version = tags.value(0).as_bytes()[1] - b'0';
            if version != last {
                last = version;
                if tx.send((Instant::now(), version)).is_err() {
                    break;
                }
            }
        }
    });
    let (_, first) = rx.recv().await.context("the query produced nothing")?;
    let mut serving = first;
    let mut statement = Vec::new();
    let mut first_batch = Vec::new();
    for _ in 0..args.swaps {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let next = 3 - serving;
        let started = Instant::now();
        session.execute(&replace(next)).await?;
        statement.push(started.elapsed());
        let (seen, version) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no batch from the new version within 10 s")?
            .context("the query stopped")?;
        if version != next {
            bail!("expected version {next} after the swap, saw {version}");
        }
        first_batch.push(seen.duration_since(started));
        serving = next;
    }
    reader.abort();
    println!(
        "hot swap, {} swaps of a cached component under a streaming query ({}-row batches):",
        args.swaps, args.batch
    );
    println!(
        "  CREATE OR REPLACE FUNCTION returns      {}",
        spread(statement)
    );
    println!(
        "  first batch by the new version after    {}",
        spread(first_batch)
    );
    Ok(())
}

fn instantiate(args: &SwapBench, runtime: &UdfRuntime) -> Result<()> {
    println!(
        "warm instantiate (InstancePre → instance), {} times:",
        args.instances
    );
    for name in ["temperature", "anomaly"] {
        let path = args.components.join(format!("{name}.wasm"));
        let component = runtime.load_file(&path)?;
        let mut times = Vec::with_capacity(args.instances);
        for _ in 0..args.instances {
            let started = Instant::now();
            component.prewarm()?;
            times.push(started.elapsed());
        }
        let kib = std::fs::metadata(&path).map_or(0, |m| m.len() / 1024);
        println!("  {name:<12} ({kib:>6} KiB)       {}", spread(times));
    }
    Ok(())
}

async fn limits_cost(args: &SwapBench, checked: UdfRuntime, unchecked: UdfRuntime) -> Result<()> {
    println!(
        "limits: rows/s with epoch checks (timeout enforced) and without, {} rows in 8192-row \
         batches (best of {})",
        args.rows, args.runs
    );
    println!(
        "  {:<24} {:>14} {:>14} {:>8}",
        "", "with checks", "without", "ratio"
    );
    let celsius = celsius(args.rows, 8192);
    let features = features(args.rows.min(1 << 17)).await?;
    let cases: [(&str, &str, &str, &[ArrayRef]); 2] = [
        (
            "temperature",
            "temperature",
            "celsius_to_fahrenheit",
            &celsius,
        ),
        ("anomaly", "anomaly", "anomaly_score", &features),
    ];
    for (name, crate_dir, function, arrays) in cases {
        let path = args.components.join(format!("{name}.wasm"));
        let mut rates = Vec::new();
        for runtime in [checked.clone(), unchecked.clone()] {
            let session = bench_session(runtime, &path, crate_dir, function, 8192).await?;
            let udf = datafusion::execution::FunctionRegistry::udf(session.context(), function)?;
            let measured = best_of(args.runs, || invoke_all(&udf, arrays))?;
            rates.push(rate(measured.1, measured.0));
        }
        println!(
            "  {function:<24} {:>14.0} {:>14.0} {:>8.3}",
            rates[0],
            rates[1],
            rates[0] / rates[1]
        );
    }
    Ok(())
}

/// The anomaly model's input column, `rows` generator events in 8192-row arrays.
async fn features(rows: usize) -> Result<Vec<ArrayRef>> {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192);
    let session = Session::with_config(UdfRuntime::new(None, Limits::default())?, config);
    let sql = format!(
        "SELECT make_array({}) FROM car_sensor({rows}, 3, 50)",
        eddy_generator::FEATURES.join(", ")
    );
    Ok(session
        .context()
        .sql(&sql)
        .await?
        .collect()
        .await?
        .iter()
        .map(|b| b.column(0).clone())
        .filter(|a| !a.is_empty())
        .collect())
}

/// `median 1.23 ms  p90 …  max …` of a set of durations.
fn spread(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:>8.3} ms  p90 {:>8.3} ms  max {:>8.3} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(1.0))
    )
}
