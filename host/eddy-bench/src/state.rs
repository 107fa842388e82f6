//! `eddy-bench state`: memory and throughput of aggregations over many groups (windowed with
//! changes or EMIT FINAL, and without a window), against the same events through a stateless
//! filter. Each workload runs in a child process of its own,
//! so one's memory is not read as the other's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eddy_sql::Session;
use eddy_stream::{Engine, EngineConfig};
use eddy_udf_host::UdfRuntime;

use crate::common::build_kind;

/// Options of `eddy-bench state`.
#[derive(clap::Args)]
pub(crate) struct StateBench {
    /// Events per workload.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events a query reads per batch at most (`EngineConfig::max_batch`).
    #[arg(long, default_value_t = EngineConfig::default().max_batch)]
    max_batch: usize,
    /// Distinct cars, i.e. groups.
    #[arg(long, default_value_t = 10_000)]
    cars: u64,
    /// Run one workload in this process (used by the parent run).
    #[arg(long, hide = true)]
    only: Option<String>,
}

const WORKLOADS: &[(&str, &str)] = &[
    (
        "stateless filter",
        "CREATE STREAM out AS SELECT car, speed FROM g WHERE speed >= 0",
    ),
    (
        "tumbling 120 min, GROUP BY car: COUNT, AVG, MAX (changes)",
        "CREATE TABLE out AS SELECT car, COUNT(*) AS n, AVG(speed) AS s, MAX(speed) AS top \
         FROM g WINDOW TUMBLING (SIZE 120 MINUTES) GROUP BY car",
    ),
    (
        "the same, EMIT FINAL",
        "CREATE TABLE out AS SELECT car, COUNT(*) AS n, AVG(speed) AS s, MAX(speed) AS top \
         FROM g WINDOW TUMBLING (SIZE 120 MINUTES) GROUP BY car EMIT FINAL",
    ),
    (
        "no window, GROUP BY car (changes)",
        "CREATE TABLE out AS SELECT car, COUNT(*) AS n, AVG(speed) AS s, MAX(speed) AS top \
         FROM g GROUP BY car",
    ),
];

/// Runs every workload in a child process (this executable again, with `--only`) and prints
/// the table; with `--only`, runs that one workload here. `cache_dir` is passed on to children.
pub(crate) async fn run(args: &StateBench, runtime: UdfRuntime, cache_dir: &Path) -> Result<()> {
    if let Some(name) = &args.only {
        let (_, sql) = WORKLOADS
            .iter()
            .find(|(n, _)| n == name)
            .context("no such workload")?;
        return workload(args, sql, runtime).await;
    }
    println!(
        "{} events, {} cars, batches of up to {} events, one process per workload ({} build)",
        args.events,
        args.cars,
        args.max_batch,
        build_kind()
    );
    println!("| workload | events/s | ratio | RSS after half | RSS at the end | peak RSS |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut baseline = None;
    let exe = std::env::current_exe().context("finding this executable to run the workloads")?;
    for (name, _) in WORKLOADS {
        let output = std::process::Command::new(&exe)
            .arg("--cache-dir")
            .arg(cache_dir)
            .args(["state", "--only", name])
            .args(["--events", &args.events.to_string()])
            .args(["--cars", &args.cars.to_string()])
            .args(["--max-batch", &args.max_batch.to_string()])
            .output()?;
        if !output.status.success() {
            bail!(
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let figures: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().context("a figure"))
            .collect::<Result<_>>()?;
        let [rate, half, end, peak] = figures[..] else {
            bail!("{name}: unexpected output {line:?}");
        };
        let base = *baseline.get_or_insert(rate);
        println!(
            "| {name} | {rate:.0} | {:.2}× | {:.0} MB | {:.0} MB | {:.0} MB |",
            rate / base,
            half / 1e6,
            end / 1e6,
            peak / 1e6
        );
    }
    Ok(())
}

/// One workload: prints events/s, RSS after half the events, RSS at the end, peak RSS.
async fn workload(args: &StateBench, sql: &str, runtime: UdfRuntime) -> Result<()> {
    let config = EngineConfig {
        max_batch: args.max_batch,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(Session::new(runtime), config);
    engine
        .execute(&format!(
            "CREATE STREAM g WITH (generator='car_sensor', seed=4, cars={}, max_events={})",
            args.cars, args.events
        ))
        .await?;
    engine.execute(sql).await?;
    let started = Instant::now();
    let (mut half, mut peak) = (0u64, 0u64);
    loop {
        let q = engine
            .queries()
            .into_iter()
            .next()
            .context("the query stopped")?;
        let rss = rss()?;
        peak = peak.max(rss);
        if half == 0 && q.events_in >= args.events / 2 {
            half = rss;
        }
        if q.events_in >= args.events {
            let elapsed = started.elapsed().as_secs_f64();
            println!("{} {half} {rss} {peak}", args.events as f64 / elapsed);
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("{} of {} events after an hour", q.events_in, args.events);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's resident set, in bytes.
fn rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next())
        .context("VmRSS in /proc/self/status")?
        .parse()?;
    Ok(kb * 1024)
}
