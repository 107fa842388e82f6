//! `eddy-bench fanout`: one continuous query's output pushed to 1, 10 and 100 HTTP clients of
//! an in-process `eddy_server::Server`, against the query's own output as the baseline.
//!
//! Rows are written straight into an in-memory stream at a steady rate, each carrying the time
//! it was sent; `CREATE STREAM out AS SELECT …` copies them to a derived stream. The baseline
//! (a) is when a row is readable in `out`, seen by an in-process subscriber with no HTTP; (b) is
//! when it reaches each HTTP client (`POST /query-stream`, delimited). (b) minus (a) is what
//! serving it over HTTP adds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::{Array, Int64Array};
use eddy_sql::Session;
use eddy_stream::{Engine, EngineConfig, Output};
use eddy_udf_host::UdfRuntime;
use serde_json::json;
use tokio::sync::Mutex;

/// Options of `eddy-bench fanout`.
#[derive(clap::Args)]
pub(crate) struct FanoutBench {
    /// Numbers of HTTP push clients, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    clients: Vec<usize>,
    /// Rows per second written into the query's input.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds each run feeds rows.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// What one run measured.
struct Run {
    clients: usize,
    /// Rows/s each client received, over the time from the first row sent to its last row.
    per_client: Vec<f64>,
    /// Microseconds from send to arrival in the query's own output.
    sink: Vec<u64>,
    /// Microseconds from send to arrival at an HTTP client, all clients together.
    http: Vec<u64>,
    /// Rows some client never got before the deadline.
    missing: u64,
}

/// Runs one fan-out per number of clients and prints the table.
pub(crate) async fn run(args: &FanoutBench, runtime: UdfRuntime) -> Result<()> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be above 0");
    }
    let mut runs = Vec::new();
    for &clients in &args.clients {
        let run = run_clients(args, clients, runtime.clone())
            .await
            .with_context(|| format!("the run with {clients} client(s)"))?;
        runs.push(run);
    }
    println!(
        "fan-out of one continuous query over HTTP ({} rows/s for {} s per run; latency from a row's send time)",
        args.rate, args.seconds
    );
    println!(
        "{:>7} | {:>14} | {:>13} | {:>14} | {:>14} | {:>9}",
        "clients", "rows/s/client", "rows/s total", "sink p50/p99", "HTTP p50/p99", "added p99"
    );
    for run in &mut runs {
        let total: f64 = run.per_client.iter().sum();
        let per_client = total / run.per_client.len().max(1) as f64;
        let (s50, s99) = (
            percentile(&mut run.sink, 50.0),
            percentile(&mut run.sink, 99.0),
        );
        let (h50, h99) = (
            percentile(&mut run.http, 50.0),
            percentile(&mut run.http, 99.0),
        );
        println!(
            "{:>7} | {:>14.0} | {:>13.0} | {:>14} | {:>14} | {:>9}{}",
            run.clients,
            per_client,
            total,
            format!("{}/{}", ms(s50), ms(s99)),
            format!("{}/{}", ms(h50), ms(h99)),
            ms(h99.saturating_sub(s99)),
            if run.missing > 0 {
                format!("  ({} rows missing)", run.missing)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn run_clients(args: &FanoutBench, clients: usize, runtime: UdfRuntime) -> Result<Run> {
    let rows = args.rate * args.seconds;
    let engine = Arc::new(Mutex::new(Engine::new(
        Session::new(runtime),
        EngineConfig::default(),
    )));
    let writers = {
        let mut engine = engine.lock().await;
        engine
            .execute("CREATE STREAM src (id BIGINT, sent BIGINT)")
            .await?;
        engine
            .execute("CREATE STREAM out AS SELECT id, sent FROM src")
            .await?;
        engine.stream_writers()
    };
    let query = format!("SELECT id, sent FROM out EMIT CHANGES LIMIT {rows}");

    // (a) The query's own output, read in process.
    let Output::Push(mut push) = engine.lock().await.execute(&query).await? else {
        bail!("expected a push query");
    };
    let sink = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(rows as usize);
        while let Some(batch) = push.rows.recv().await {
            let now = now_micros();
            let sent = batch
                .column_by_name("sent")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .cloned();
            for i in 0..sent.as_ref().map_or(0, |s| s.len()) {
                let sent = sent.as_ref().map_or(0, |s| s.value(i));
                latencies.push(now.saturating_sub(sent as u64));
            }
        }
        latencies
    });

    // The server, on a loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = eddy_server::Server::new(engine.clone(), eddy_server::ServerConfig::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    // (b) The HTTP clients, each its own HTTP/1.1 connection; all subscribed before rows flow.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut response = http
            .post(format!("{base}/query-stream"))
            .body(json!({"sql": format!("{query};"), "properties": {}}).to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("/query-stream answered {}", response.status());
        }
        // The header line: the push query is registered.
        let mut pending = Vec::new();
        while !pending.contains(&b'\n') {
            match response.chunk().await? {
                Some(chunk) => pending.extend_from_slice(&chunk),
                None => bail!("/query-stream ended before its header"),
            }
        }
        readers.push(tokio::spawn(read_client(response, pending, rows)));
    }

    // The feed: a steady rate, in 10 ms ticks, each row stamped with its send time.
    let started = Instant::now();
    let per_tick = (args.rate / 100).max(1);
    let feed = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut id = 0;
        while id < rows {
            tick.tick().await;
            for _ in 0..per_tick.min(rows - id) {
                let payload = json!({"ID": id, "SENT": now_micros()}).to_string();
                writers.write("src", "bench", payload.as_bytes())?;
                id += 1;
            }
        }
        anyhow::Ok(())
    });
    feed.await??;

    // Every reader ends at the LIMIT; a slow one is cut off a while after the feed ended.
    let deadline = Duration::from_secs(args.seconds + 30);
    let mut per_client = Vec::new();
    let mut latencies = Vec::new();
    let mut missing = 0;
    for reader in readers {
        let (got, lat, last) =
            match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), reader).await {
                Ok(done) => done??,
                Err(_) => (0, Vec::new(), Instant::now()),
            };
        missing += rows - got;
        let elapsed = last.saturating_duration_since(started).as_secs_f64();
        per_client.push(got as f64 / elapsed.max(1e-9));
        latencies.extend(lat);
    }
    let sink = tokio::time::timeout(Duration::from_secs(30), sink)
        .await
        .context("the in-process subscriber did not reach its LIMIT")??;
    let _ = stop.send(());
    serving.await??;
    engine.lock().await.shutdown().await;
    Ok(Run {
        clients,
        per_client,
        sink,
        http: latencies,
        missing,
    })
}

/// Reads one client's rows until its LIMIT: (rows, latencies in µs, when the last row came).
async fn read_client(
    mut response: reqwest::Response,
    mut pending: Vec<u8>,
    rows: u64,
) -> Result<(u64, Vec<u64>, Instant)> {
    let mut last = Instant::now();
    let mut latencies = Vec::with_capacity(rows as usize);
    let mut got = 0;
    // The header line was read by the caller.
    let header_end = pending.iter().position(|&b| b == b'\n').unwrap_or(0);
    pending.drain(..=header_end);
    loop {
        let now = now_micros();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            // `[id,sent]`: read by hand, so the clients (in this process too) cost little CPU.
            if let Some(sent) = sent_of(&line) {
                latencies.push(now.saturating_sub(sent));
                got += 1;
                last = Instant::now();
            }
        }
        if got >= rows {
            break;
        }
        match response.chunk().await? {
            Some(chunk) => pending.extend_from_slice(&chunk),
            None => break,
        }
    }
    Ok((got, latencies, last))
}

/// The `sent` column of a delimited row `[id,sent]`.
fn sent_of(line: &[u8]) -> Option<u64> {
    let line = std::str::from_utf8(line).ok()?.trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    inner.rsplit(',').next()?.trim().parse().ok()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The `p`th percentile (nearest rank) of `values`, in µs; 0 when empty.
fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Microseconds as milliseconds with one decimal.
fn ms(micros: u64) -> String {
    format!("{:.1}ms", micros as f64 / 1000.0)
}
