//! `eddy udf replay FILE [--component X.wasm]`: runs a captured failing batch again.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use eddy_udf_host::{Capture, UdfRuntime};

/// Rows of the result printed at most; the rest are counted.
const ROWS_SHOWN: usize = 20;

/// Replays `file` on the captured version (loaded from where it was loaded, and checked by its
/// hash) or on `component`. Exit status: 0 when the replay ran clean, 2 when it failed.
pub(crate) fn replay(file: &Path, component: Option<&PathBuf>, runtime: UdfRuntime) -> Result<i32> {
    let capture = Capture::read(file)?;
    println!("capture   {}", file.display());
    println!(
        "function  {} ({} version {} from {})",
        capture.signature,
        capture.role,
        short(&capture.version),
        capture.source
    );
    println!(
        "limits    max_memory {} bytes, timeout {:?}, max_log_lines {}",
        capture.limits.max_memory, capture.limits.timeout, capture.limits.max_log_lines_per_call
    );
    println!("clock     {}", capture.clock);
    println!("random    {}", capture.random);
    println!(
        "batch     {} rows, captured at {} ms after the Unix epoch",
        capture.batch.num_rows(),
        capture.captured_at_ms
    );
    println!("captured  {}", capture.outcome);

    let path = component
        .cloned()
        .unwrap_or_else(|| PathBuf::from(&capture.source));
    let loaded = runtime
        .load_file_with_limits(&path, capture.limits.clone())
        .with_context(|| {
            format!(
                "loading {} (give the captured version's file with --component)",
                path.display()
            )
        })?;
    if component.is_none() && loaded.hash != capture.version {
        bail!(
            "{} is now version {}, not the captured {}; give the captured version's file with \
             --component (or another version on purpose)",
            path.display(),
            short(&loaded.hash),
            short(&capture.version)
        );
    }
    if loaded.deterministic != capture.deterministic {
        println!(
            "note      this version's sandbox has {} clocks and random, the captured one had {}",
            if loaded.deterministic {
                "fixed"
            } else {
                "the host's"
            },
            if capture.deterministic {
                "fixed"
            } else {
                "the host's"
            }
        );
    } else if !capture.deterministic {
        println!(
            "note      a volatile function reads the host's clock and random: a replay may differ"
        );
    }
    let replayed = eddy_udf_host::replay(&capture, &loaded)?;
    println!(
        "replayed  {} (version {} from {})",
        replayed.outcome,
        short(&loaded.hash),
        loaded.source
    );
    if replayed.outcome == capture.outcome {
        println!("same outcome as captured");
    } else {
        println!("a different outcome from the captured one");
    }
    if let Some(result) = &replayed.result {
        let shown = result.len().min(ROWS_SHOWN);
        let mut columns = capture.batch.columns().to_vec();
        columns.push(result.clone());
        let mut fields: Vec<Field> = capture
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("result", result.data_type().clone(), true));
        let table = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?;
        println!("{}", pretty_format_batches(&[table.slice(0, shown)])?);
        if shown < result.len() {
            println!("({} more rows)", result.len() - shown);
        }
    }
    Ok(if replayed.outcome.kind == "ok" { 0 } else { 2 })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
