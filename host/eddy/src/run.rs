//! `eddy run`: a SQL file's statements in order, then its continuous queries until stopped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use eddy_sql::{split_statements, DueLoad, Session, UdfDir};
use eddy_stream::{with_display_names, Engine, EngineConfig, KafkaSettings, Output, QueryInfo};
use eddy_udf_host::UdfRuntime;

/// Options of `eddy run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The SQL file.
    file: PathBuf,
    /// Go on after a failing statement instead of stopping.
    #[arg(long)]
    keep_going: bool,
    /// Kafka brokers, for streams WITH (kafka_topic=…).
    #[arg(long, env = "EDDY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    /// Extra librdkafka property for every Kafka client, KEY=VALUE (repeatable).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Names this deployment: processes with the same id split each query's partitions.
    #[arg(long, default_value = "eddy", env = "EDDY_SERVICE_ID")]
    service_id: String,
    /// Stop once every continuous query has read this many events (or its input ended).
    #[arg(long)]
    max_events: Option<u64>,
    /// Stop after this long, e.g. 30s or 5m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How often queries flush their sinks and commit their sources, e.g. 1s or 200ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    commit_interval: Duration,
    /// Rows each in-memory stream keeps for pull queries and readers (oldest dropped first).
    #[arg(long, default_value_t = eddy_stream::DEFAULT_RETAINED_ROWS)]
    retained_rows: usize,
    #[command(flatten)]
    state: crate::state::StateArgs,
    /// No live status line.
    #[arg(long, short)]
    quiet: bool,
    /// A directory of UDF components, loaded before the file runs and watched while it runs:
    /// `NAME.wasm` serves function NAME; a changed file replaces it at the next batch.
    #[arg(long)]
    udf_dir: Option<PathBuf>,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 30s"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}': use ms, s, m or h"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// `--kafka-property KEY=VALUE` arguments as librdkafka properties.
pub(crate) fn kafka_properties(
    properties: &[String],
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut extra = std::collections::BTreeMap::new();
    for property in properties {
        let (k, v) = property
            .split_once('=')
            .with_context(|| format!("--kafka-property {property}: expected KEY=VALUE"))?;
        extra.insert(k.to_string(), v.to_string());
    }
    Ok(extra)
}

pub(crate) async fn run(args: &RunArgs, runtime: UdfRuntime) -> Result<()> {
    let kafka = match &args.bootstrap_servers {
        Some(servers) => Some(KafkaSettings {
            bootstrap_servers: servers.clone(),
            extra: kafka_properties(&args.kafka_properties)?,
        }),
        None => None,
    };
    let config = EngineConfig {
        kafka,
        service_id: args.service_id.clone(),
        commit_interval: args.commit_interval,
        retained_rows: args.retained_rows,
        state: args.state.store(&args.service_id)?,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(Session::new(runtime), config);
    let mut udf_dir = args.udf_dir.as_ref().map(UdfDir::new);
    if let Some(dir) = &mut udf_dir {
        sync_udf_dir(dir, &mut engine).await?;
    }
    let result = run_file(&mut engine, &args.file, args.keep_going).await;
    if result.is_ok() && engine.queries().iter().any(|q| q.sink.is_some()) {
        watch(&mut engine, args, udf_dir.as_mut()).await;
    }
    let running = engine.queries();
    engine.shutdown().await;
    summary(&running);
    result
}

async fn run_file(engine: &mut Engine, file: &Path, keep_going: bool) -> Result<()> {
    let script =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut failed = 0;
    for (line, statement) in split_statements(&script) {
        println!("\n{}> {}", file.display(), first_line(&statement));
        match engine.execute(&statement).await {
            Ok(output) => print_output(output).await?,
            Err(e) => {
                eprintln!("error: {}:{line}: {e}", file.display());
                failed += 1;
                if !keep_going {
                    bail!("stopped at the failing statement on line {line}");
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} statement(s) failed");
    }
    Ok(())
}

/// Prints one statement's output the way the ksqlDB CLI does: a table, a message, or a push
/// query's rows as they arrive (until its LIMIT or Ctrl-C).
async fn print_output(output: Output) -> Result<()> {
    match output {
        Output::Message(m) => println!("{m}"),
        Output::Rows { batches, .. } => print_rows(&batches)?,
        Output::Push(mut push) => {
            let mut rows = 0;
            loop {
                tokio::select! {
                    batch = push.rows.recv() => match batch {
                        Some(batch) => {
                            rows += batch.num_rows();
                            println!("{}", pretty_format_batches(&[with_display_names(&batch)?])?);
                        }
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            println!(
                "({rows} row{} from push query {})",
                if rows == 1 { "" } else { "s" },
                push.id
            );
        }
    }
    Ok(())
}

fn print_rows(batches: &[RecordBatch]) -> Result<()> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > 0 {
        let batches = batches
            .iter()
            .map(with_display_names)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        println!("{}", pretty_format_batches(&batches)?);
    }
    println!("({rows} row{})", if rows == 1 { "" } else { "s" });
    Ok(())
}

/// Waits for Ctrl-C, the duration, or --max-events, showing a live status line on a terminal.
async fn watch(engine: &mut Engine, args: &RunArgs, mut udf_dir: Option<&mut UdfDir>) {
    let started = Instant::now();
    let live = !args.quiet && std::io::stderr().is_terminal();
    let mut last = (Instant::now(), totals(&engine.queries()));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        if let Some(dir) = udf_dir.as_deref_mut() {
            if let Err(e) = sync_udf_dir(dir, engine).await {
                tracing::warn!("{e:#}");
            }
        }
        let queries = engine.queries();
        let persistent: Vec<&QueryInfo> = queries.iter().filter(|q| q.sink.is_some()).collect();
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Some(max) = args.max_events {
            if persistent.iter().all(|q| q.events_in >= max) {
                break;
            }
        }
        let now = (Instant::now(), totals(&queries));
        if live {
            let seconds = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / seconds;
            let lag: Option<u64> = persistent.iter().filter_map(|q| q.lag).reduce(|a, b| a + b);
            eprint!(
                "\r{} queries | in {:>9.0}/s out {:>9.0}/s | lag {} | total in {} out {} bad {} late {} failed {}   ",
                persistent.len(),
                rate(now.1 .0, last.1 .0),
                rate(now.1 .1, last.1 .1),
                lag.map_or_else(|| "-".to_string(), |l| l.to_string()),
                now.1 .0,
                now.1 .1,
                now.1 .2,
                now.1 .3,
                now.1 .4,
            );
        }
        last = now;
    }
    if live {
        eprintln!();
    }
}

/// Loads what changed in the UDF directory, logging each load and each refusal.
pub(crate) async fn sync_udf_dir(dir: &mut UdfDir, engine: &mut Engine) -> Result<()> {
    let due = due_in_udf_dir(dir)?;
    load_udf_dir(dir, due, engine).await;
    Ok(())
}

/// What changed in the UDF directory, not loaded yet.
pub(crate) fn due_in_udf_dir(dir: &mut UdfDir) -> Result<Vec<DueLoad>> {
    dir.due()
        .with_context(|| format!("reading the UDF directory {}", dir.dir().display()))
}

/// Loads what [`due_in_udf_dir`] found, logging each load and each refusal.
pub(crate) async fn load_udf_dir(dir: &mut UdfDir, due: Vec<DueLoad>, engine: &mut Engine) {
    for load in dir.load(due, engine.session()).await {
        match load.result {
            Ok(message) => tracing::info!(
                target: "eddy::udf",
                "UDF directory: {} from {}: {message}",
                load.function,
                load.path.display()
            ),
            Err(e) => tracing::warn!(
                target: "eddy::udf",
                "UDF directory: {} from {} refused, the previous version (if any) keeps serving: {e}",
                load.function,
                load.path.display()
            ),
        }
    }
}

fn totals(queries: &[QueryInfo]) -> (u64, u64, u64, u64, u64) {
    queries.iter().fold((0, 0, 0, 0, 0), |t, q| {
        (
            t.0 + q.events_in,
            t.1 + q.rows_out,
            t.2 + q.bad_events,
            t.3 + q.late_events,
            t.4 + q.failed_events,
        )
    })
}

fn summary(queries: &[QueryInfo]) {
    for q in queries {
        eprintln!(
            "{}: {} events in, {} rows out, {} bad, {} late, {} failed{}",
            q.id,
            q.events_in,
            q.rows_out,
            q.bad_events,
            q.late_events,
            q.failed_events,
            q.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
}

fn first_line(statement: &str) -> String {
    let mut lines = statement.lines();
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first
    }
}
