//! `eddy`: run SQL files, build UDF components, benchmark the UDF boundary.

mod bench;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use datafusion::arrow::util::pretty::pretty_format_batches;
use eddy_sql::{split_statements, Output, Session};
use eddy_udf_host::{Limits, UdfRuntime};

/// Continuous SQL over car-sensor streams, with UDFs as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "eddy", version)]
struct Cli {
    /// Where compiled components are cached (default: $EDDY_CACHE_DIR or ~/.cache/eddy).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the statements of a SQL file and prints their results.
    Run {
        /// The SQL file.
        file: PathBuf,
        /// Go on after a failing statement instead of stopping.
        #[arg(long)]
        keep_going: bool,
    },
    /// UDF components.
    Udf {
        #[command(subcommand)]
        command: UdfCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Writes generated car-sensor events as CSV to stdout (training data for models).
    Generate {
        /// Number of events.
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Number of cars.
        #[arg(long, default_value_t = 10)]
        cars: u32,
    },
}

#[derive(Subcommand)]
enum UdfCommand {
    /// Compiles a UDF crate (or a workspace of them) into WebAssembly components.
    Build {
        /// The crate directory, e.g. udfs/temperature.
        dir: PathBuf,
        /// Output file (one crate only); default <target>/components/<crate>.wasm.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Parallel compile jobs.
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Loads a component and prints the functions it describes.
    Check {
        /// The component file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The same f64 UDF, native and as a wasm component, over the same rows.
    Udf(bench::UdfBench),
    /// The anomaly model in wasm against tract run natively.
    Anomaly(bench::AnomalyBench),
}

fn cache_dir(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("EDDY_CACHE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("eddy")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/eddy")))
        .unwrap_or_else(|| PathBuf::from(".eddy-cache"))
}

/// Prints one statement's output the way the ksqlDB CLI does: a table, or a message.
fn print_output(output: &Output) -> Result<()> {
    match output {
        Output::Message(m) => println!("{m}"),
        Output::Rows { batches, .. } => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if rows > 0 {
                println!("{}", pretty_format_batches(batches)?);
            }
            println!("({rows} row{})", if rows == 1 { "" } else { "s" });
        }
    }
    Ok(())
}

async fn run_file(session: &mut Session, file: &Path, keep_going: bool) -> Result<()> {
    let script =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut failed = 0;
    for (line, statement) in split_statements(&script) {
        println!("\n{}> {}", file.display(), first_line(&statement));
        let started = Instant::now();
        match session.execute(&statement).await {
            Ok(output) => {
                print_output(&output)?;
                tracing::debug!(elapsed = ?started.elapsed(), "statement done");
            }
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

fn first_line(statement: &str) -> String {
    let mut lines = statement.lines();
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first
    }
}

fn generate_csv(rows: u64, seed: u64, cars: u32) -> Result<()> {
    let config = eddy_generator::GeneratorConfig {
        rows,
        seed,
        cars,
        ..Default::default()
    };
    let stdout = std::io::stdout().lock();
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(stdout);
    for batch in eddy_generator::Generator::new(config) {
        writer.write(&batch)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,eddy::udf=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = || UdfRuntime::new(Some(cache_dir(cli.cache_dir.clone())), Limits::default());
    match cli.command {
        Command::Run {
            ref file,
            keep_going,
        } => {
            let mut session = Session::new(runtime()?);
            run_file(&mut session, file, keep_going).await
        }
        Command::Udf {
            command: UdfCommand::Build { dir, out, jobs },
        } => {
            let options = eddy_udf_build::BuildOptions {
                out,
                jobs,
                quiet: false,
            };
            for built in eddy_udf_build::build(&dir, &options)? {
                println!("{}", built.component.display());
            }
            Ok(())
        }
        Command::Udf {
            command: UdfCommand::Check { ref file },
        } => {
            let component = runtime()?.load_file(file)?;
            println!("{} (version {})", component.source, component.hash);
            for f in &component.functions {
                println!("  {}  -- {}", f.display(), f.doc);
            }
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Udf(ref args),
        } => bench::udf(args, runtime()?).await,
        Command::Bench {
            command: BenchCommand::Anomaly(ref args),
        } => bench::anomaly(args, runtime()?).await,
        Command::Generate { rows, seed, cars } => generate_csv(rows, seed, cars),
    }
}
