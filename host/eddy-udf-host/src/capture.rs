//! Capture files: a failing guest call's batch and everything needed to run it again.
//!
//! When a call traps, hits a limit, fails its batch or returns row errors, the batch is written
//! as one Arrow IPC file whose schema metadata names the function, the version (content hash),
//! the component's source, the limits, and the sandbox's clock and random source. Files and
//! bytes in the directory are bounded; past either bound captures are counted, not written.
//! [`replay`] runs a capture again, on the same version or another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;

use crate::call::{call_counted, CallError};
use crate::{Component, Error, FunctionSignature, FunctionStats, Limits, Result};

/// Where captures go and how much they may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// Capture files the directory may hold, those of earlier runs included.
    pub max_files: usize,
    /// Bytes those files may take in total.
    pub max_bytes: u64,
}

impl CaptureConfig {
    /// Captures into `dir`, at most 100 files and 256 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> CaptureConfig {
        CaptureConfig {
            dir: dir.into(),
            max_files: 100,
            max_bytes: 256 << 20,
        }
    }
}

/// Capture files written and refused (over a bound or failed), for metrics.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Files written.
    pub written: AtomicU64,
    /// Captures not written: the directory was at its bound, or writing failed.
    pub dropped: AtomicU64,
}

/// The capture directory of a runtime, with what it holds.
#[derive(Debug)]
pub(crate) struct Captures {
    config: CaptureConfig,
    /// Files and bytes in the directory.
    used: Mutex<(usize, u64)>,
    /// Captures written by this process, per function version and outcome kind.
    per_kind: Mutex<HashMap<(String, String), usize>>,
    sequence: AtomicU64,
    pub(crate) stats: Arc<CaptureStats>,
}

/// The extension capture files carry.
const EXTENSION: &str = "arrow";

/// Captures per function version and outcome kind in one process: a function returning row
/// errors on every batch must not fill the directory before the trap that matters.
const PER_KIND: usize = 10;

impl Captures {
    /// Opens `config.dir`, counting the captures already there against the bounds.
    pub(crate) fn open(config: CaptureConfig) -> Result<Captures> {
        let io = |e: std::io::Error| Error::Capture {
            path: config.dir.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&config.dir).map_err(io)?;
        let mut used = (0, 0);
        for entry in std::fs::read_dir(&config.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.path().extension().is_some_and(|e| e == EXTENSION) {
                used.0 += 1;
                used.1 += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(Captures {
            config,
            used: Mutex::new(used),
            per_kind: Mutex::default(),
            sequence: AtomicU64::new(0),
            stats: Arc::default(),
        })
    }

    /// Takes one of the captures allowed for `version`'s `kind`, unless the directory or
    /// that kind's share is full: checked before the batch is encoded, so a function failing on
    /// every batch costs nothing once it has had its share.
    fn admit(&self, version: &str, kind: &str) -> std::result::Result<(), String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.0 >= self.config.max_files {
            return Err(format!("it holds {} captures already", used.0));
        }
        drop(used);
        let mut per_kind = self.per_kind.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_kind
            .entry((version.to_string(), kind.to_string()))
            .or_default();
        if *n >= PER_KIND {
            return Err(format!(
                "this version has left {PER_KIND} captures of {kind} already"
            ));
        }
        *n += 1;
        Ok(())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::result::Result<PathBuf, String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.0 >= self.config.max_files {
            return Err(format!("it holds {} captures already", used.0));
        }
        if used.1 + bytes.len() as u64 > self.config.max_bytes {
            return Err(format!(
                "{} more bytes would take it past {} bytes",
                bytes.len(),
                self.config.max_bytes
            ));
        }
        let path = self.config.dir.join(name);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| e.to_string())?;
        used.0 += 1;
        used.1 += bytes.len() as u64;
        Ok(path)
    }
}

/// Which version a call ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The version whose results the query uses.
    Serving,
    /// A shadow, whose results are only compared.
    Shadow,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Shadow => "shadow",
        }
    }
}

/// How a call ended: `kind` is `ok`, `trap`, `time`, `memory`, `table`, `stack`,
/// `batch_error`, `bad_result` or `row_errors`; `message` is what a query would see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The kind of ending.
    pub kind: String,
    /// What happened, in words.
    pub message: String,
}

impl Outcome {
    fn of_error(e: &CallError, function: &str) -> Outcome {
        let kind = match e {
            CallError::Argument { .. } => "argument",
            CallError::Call {
                failure: crate::component::CallFailure::Guest(_),
                ..
            } => "batch_error",
            CallError::Call {
                limit: Some(limit), ..
            } => limit.label(),
            CallError::Call { .. } => "trap",
            CallError::BadResult(_) => "bad_result",
        };
        Outcome {
            kind: kind.into(),
            message: e.message(function),
        }
    }

    fn of_row_errors(errors: &[(u32, String)], rows: usize, function: &str) -> Outcome {
        match errors.first() {
            None => Outcome {
                kind: "ok".into(),
                message: format!("{rows} rows, no errors"),
            },
            Some((row, message)) => Outcome {
                kind: "row_errors".into(),
                message: format!(
                    "UDF '{function}': {} of {rows} rows failed; first, row {row}: {message}",
                    errors.len()
                ),
            },
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Writes a capture of a failed call, if the component's runtime captures.
pub(crate) fn record(
    component: &Component,
    function: &FunctionSignature,
    role: Role,
    args: &[ArrayRef],
    rows: usize,
    error: &CallError,
) {
    record_outcome(
        component,
        function,
        role,
        args,
        rows,
        Outcome::of_error(error, &function.name),
    );
}

/// Writes a capture of a call that returned row errors, if the component's runtime captures.
pub(crate) fn record_row_errors(
    component: &Component,
    function: &FunctionSignature,
    role: Role,
    args: &[ArrayRef],
    rows: usize,
    errors: &[(u32, String)],
) {
    record_outcome(
        component,
        function,
        role,
        args,
        rows,
        Outcome::of_row_errors(errors, rows, &function.name),
    );
}

fn record_outcome(
    component: &Component,
    function: &FunctionSignature,
    role: Role,
    args: &[ArrayRef],
    rows: usize,
    outcome: Outcome,
) {
    let Some(captures) = &component.captures else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (clock, random) = sandbox(component.deterministic, now);
    let limits = &component.limits;
    let metadata: HashMap<String, String> = [
        ("eddy.capture", "1".to_string()),
        ("eddy.function", function.name.clone()),
        ("eddy.signature", function.display()),
        ("eddy.role", role.label().into()),
        ("eddy.version", component.hash.clone()),
        ("eddy.source", component.source.clone()),
        ("eddy.rows", rows.to_string()),
        ("eddy.limits.max_memory", limits.max_memory.to_string()),
        (
            "eddy.limits.timeout_ns",
            limits.timeout.as_nanos().to_string(),
        ),
        (
            "eddy.limits.max_table_elements",
            limits.max_table_elements.to_string(),
        ),
        (
            "eddy.limits.max_log_lines",
            limits.max_log_lines_per_call.to_string(),
        ),
        (
            "eddy.sandbox.deterministic",
            component.deterministic.to_string(),
        ),
        ("eddy.sandbox.clock", clock),
        ("eddy.sandbox.random", random),
        ("eddy.outcome", outcome.kind.clone()),
        ("eddy.message", outcome.message.clone()),
        ("eddy.captured_at_ms", now.as_millis().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let written = captures
        .admit(
            &format!("{}/{}", function.name, component.hash),
            &outcome.kind,
        )
        .and_then(|()| encode(function, args, rows, metadata))
        .and_then(|bytes| {
            let name = format!(
                "{}-{}-{}-{}.{EXTENSION}",
                function.name,
                &component.hash[..12],
                now.as_millis(),
                captures.sequence.fetch_add(1, Ordering::Relaxed)
            );
            captures.write(&name, &bytes)
        });
    match written {
        Ok(path) => {
            captures.stats.written.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                target: "eddy::udf",
                udf = %function.name,
                "captured the failing batch ({}) in {}",
                outcome.kind,
                path.display()
            );
        }
        Err(why) => {
            // Counted, and logged only for the first refusal: a failing function must not
            // flood the log once the directory is full.
            if captures.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    target: "eddy::udf",
                    udf = %function.name,
                    "not capturing into {}: {why} (later captures are only counted)",
                    captures.config.dir.display()
                );
            }
        }
    }
}

/// How the sandbox's clock and random source were, in words that also say how to reproduce them.
fn sandbox(deterministic: bool, now: Duration) -> (String, String) {
    if deterministic {
        (
            "stopped: wall clock at the Unix epoch, monotonic clock at 0".into(),
            "fixed: the same 256 bytes (xorshift32 from 0x9e3779b9) over and over, seed 0".into(),
        )
    } else {
        (
            format!(
                "host: the real clocks; the call began at {} ms after the Unix epoch",
                now.as_millis()
            ),
            "host: the host's random source, not reproducible".into(),
        )
    }
}

fn encode(
    function: &FunctionSignature,
    args: &[ArrayRef],
    rows: usize,
    metadata: HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let fields: Vec<Field> = function
        .params
        .iter()
        .zip(args)
        .map(|((name, _), a)| Field::new(name, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        args.to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut writer = FileWriter::try_new(&mut bytes, &schema).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(bytes)
}

/// A capture file, read back.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The function called.
    pub function: String,
    /// Its signature, `name(a DOUBLE) -> DOUBLE`.
    pub signature: String,
    /// `serving` or `shadow`.
    pub role: String,
    /// The version (content hash) that failed.
    pub version: String,
    /// Where that version was loaded from.
    pub source: String,
    /// The limits it ran under.
    pub limits: Limits,
    /// Whether the sandbox had a stopped clock and fixed randomness.
    pub deterministic: bool,
    /// The sandbox's clock.
    pub clock: String,
    /// The sandbox's random source.
    pub random: String,
    /// How the call ended.
    pub outcome: Outcome,
    /// When, in ms since the Unix epoch.
    pub captured_at_ms: u64,
    /// The arguments, one column per parameter.
    pub batch: RecordBatch,
}

impl Capture {
    /// Reads a capture file.
    pub fn read(path: &Path) -> Result<Capture> {
        let bad = |message: String| Error::Capture {
            path: path.to_path_buf(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut reader = FileReader::try_new(file, None)
            .map_err(|e| bad(format!("not an Arrow IPC file: {e}")))?;
        let metadata = reader.schema().metadata().clone();
        let get = |key: &str| -> Result<String> {
            metadata
                .get(key)
                .cloned()
                .ok_or_else(|| bad(format!("not an Eddy capture: no {key}")))
        };
        let number = |key: &str| -> Result<u64> {
            get(key)?
                .parse()
                .map_err(|_| bad(format!("{key} is not a number")))
        };
        let batch = reader
            .next()
            .ok_or_else(|| bad("it holds no batch".into()))?
            .map_err(|e| bad(e.to_string()))?;
        Ok(Capture {
            function: get("eddy.function")?,
            signature: get("eddy.signature")?,
            role: get("eddy.role")?,
            version: get("eddy.version")?,
            source: get("eddy.source")?,
            limits: Limits {
                max_memory: number("eddy.limits.max_memory")? as usize,
                timeout: Duration::from_nanos(number("eddy.limits.timeout_ns")?),
                max_table_elements: number("eddy.limits.max_table_elements")? as usize,
                max_log_lines_per_call: number("eddy.limits.max_log_lines")? as usize,
            },
            deterministic: get("eddy.sandbox.deterministic")? == "true",
            clock: get("eddy.sandbox.clock")?,
            random: get("eddy.sandbox.random")?,
            outcome: Outcome {
                kind: get("eddy.outcome")?,
                message: get("eddy.message")?,
            },
            captured_at_ms: number("eddy.captured_at_ms")?,
            batch,
        })
    }
}

/// What running a capture again gave.
#[derive(Debug)]
pub struct Replay {
    /// How the call ended.
    pub outcome: Outcome,
    /// The result column, when the call returned one.
    pub result: Option<ArrayRef>,
}

/// Runs the captured batch through `component` (the captured version, or another); load it
/// under [`Capture::limits`] to replay the same limits.
pub fn replay(capture: &Capture, component: &Component) -> Result<Replay> {
    let function = component
        .function(&capture.function)
        .ok_or_else(|| Error::Capture {
            path: PathBuf::from(&component.source),
            message: format!(
                "the component does not provide '{}', the captured function",
                capture.function
            ),
        })?;
    let rows = capture.batch.num_rows();
    let stats = FunctionStats::default();
    match call_counted(
        component,
        function,
        capture.batch.columns(),
        rows,
        &stats,
        None,
    ) {
        Ok(called) => Ok(Replay {
            outcome: Outcome::of_row_errors(&called.row_errors, rows, &function.name),
            result: Some(called.array),
        }),
        Err(e) => Ok(Replay {
            outcome: Outcome::of_error(&e, &function.name),
            result: None,
        }),
    }
}
