//! `eddy`: run SQL files (continuous queries included), serve the REST API, build UDF components.
//!
//! Benchmarks are a binary of their own: `cargo run --release -p eddy-bench -- <benchmark>`.

mod mqtt_proxy;
mod open_files;
mod repl;
mod replay;
mod run;
mod server;
mod state;
mod udf_new;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use eddy_udf_host::{Limits, UdfRuntime};

/// Continuous SQL over car-sensor streams, with UDFs as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "eddy", version)]
struct Cli {
    /// Where compiled components are cached (default: $EDDY_CACHE_DIR or ~/.cache/eddy).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Where failing UDF calls (trap, limit, batch error, row errors) leave a capture file for
    /// `eddy udf replay` (default: none are written).
    #[arg(long, global = true)]
    capture_dir: Option<PathBuf>,
    /// Capture files the capture directory may hold, earlier runs' included.
    #[arg(long, global = true, default_value_t = 100)]
    capture_max_files: usize,
    /// Bytes the capture files may take in total.
    #[arg(long, global = true, default_value = "256MB", value_parser = parse_size)]
    capture_max_bytes: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the statements of a SQL file; continuous queries then run until Ctrl-C.
    Run(run::RunArgs),
    /// Serves the ksqlDB-compatible REST API (/ksql, /query, /query-stream, /metrics, …).
    Server(Box<server::ServerArgs>),
    /// A client for `eddy server`: `-e 'statement'`, or a prompt.
    Sql(server::SqlArgs),
    /// An MQTT endpoint that lands device publishes in Kafka, acknowledging after Kafka does.
    MqttProxy(mqtt_proxy::MqttProxyArgs),
    /// UDF components.
    Udf {
        #[command(subcommand)]
        command: UdfCommand,
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
    /// Builds a UDF into a WebAssembly component: a Rust crate (or a workspace of them), or a
    /// directory with `udf.py` (Python) or `udf.js` (JavaScript).
    Build {
        /// The UDF directory, e.g. udfs/temperature or udfs/temperature_py.
        dir: PathBuf,
        /// Output file (one crate only); default <target>/components/<crate>.wasm.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Parallel compile jobs.
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Starts a UDF project in Rust, Python or JavaScript, anywhere: manifest, one example
    /// function, a README.
    New {
        /// The function's name (lower case, digits, '_').
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: udf_new::Lang,
        /// Where to create it (default ./NAME).
        dir: Option<PathBuf>,
    },
    /// Loads a component and prints the functions it describes.
    Check {
        /// The component file.
        file: PathBuf,
    },
    /// Runs a capture file (from --capture-dir) again and shows the outcome; exits 2 if the
    /// replayed call failed.
    Replay {
        /// The capture file.
        file: PathBuf,
        /// Another version to run the batch on, instead of the captured one.
        #[arg(long)]
        component: Option<PathBuf>,
    },
}

fn cache_dir(cli: Option<PathBuf>) -> PathBuf {
    eddy_udf_host::cache_dir(cli)
}

fn parse_size(text: &str) -> Result<usize, String> {
    eddy_sql::parse_size(text).map_err(|e| format!("'{text}' {e}"))
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
    let runtime = || -> Result<UdfRuntime> {
        let runtime = UdfRuntime::new(Some(cache_dir(cli.cache_dir.clone())), Limits::default())?;
        Ok(match &cli.capture_dir {
            Some(dir) => runtime.with_captures(eddy_udf_host::CaptureConfig {
                dir: dir.clone(),
                max_files: cli.capture_max_files,
                max_bytes: cli.capture_max_bytes as u64,
            })?,
            None => runtime,
        })
    };
    match cli.command {
        Command::Run(ref args) => run::run(args, runtime()?).await,
        Command::MqttProxy(ref args) => mqtt_proxy::run(args).await,
        Command::Server(ref args) => server::server(args, runtime()?).await,
        Command::Sql(ref args) => server::sql(args).await,
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
            command: UdfCommand::New { name, lang, dir },
        } => {
            let dir = udf_new::scaffold(&name, lang, dir)?;
            println!(
                "created {}: build it with `eddy udf build {}`",
                dir.display(),
                dir.display()
            );
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
        Command::Udf {
            command:
                UdfCommand::Replay {
                    ref file,
                    ref component,
                },
        } => {
            // A replay must not capture itself.
            let runtime =
                UdfRuntime::new(Some(cache_dir(cli.cache_dir.clone())), Limits::default())?;
            let status = replay::replay(file, component.as_ref(), runtime)?;
            std::process::exit(status)
        }
        Command::Generate { rows, seed, cars } => generate_csv(rows, seed, cars),
    }
}
