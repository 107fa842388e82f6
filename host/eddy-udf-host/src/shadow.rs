//! A shadow version: a candidate that runs beside the serving version on the same batches and
//! whose results are compared with the serving ones, never used.
//!
//! The shadow runs on a thread of its own, fed through a short queue, so its cost and its
//! failures stay off the query's path: a shadow that traps or loops until its time limit only
//! makes the queue full, and batches that find it full are counted as skipped, not waited for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;

use crate::call::{call_counted, CallError};
use crate::capture::Role;
use crate::{Component, FunctionSignature, FunctionStats, SqlType};

/// Batches waiting for the shadow beyond the one it runs; more are skipped.
const QUEUE_DEPTH: usize = 8;

/// The most differing rows a shadow may be asked to keep.
pub const MAX_KEPT_DIFFERENCES: usize = 1000;

/// How a shadow runs: which batches, how results are compared, what is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// Fraction of batches the shadow runs on (0 < sample ≤ 1), spread evenly: its cost bound.
    pub sample: f64,
    /// Numeric results within this absolute difference count as equal (DOUBLE, BIGINT and
    /// the elements of ARRAY<DOUBLE>); other types compare exactly.
    pub tolerance: f64,
    /// How many of the first differing rows are kept with their arguments.
    pub keep: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            sample: 1.0,
            tolerance: 0.0,
            keep: 10,
        }
    }
}

/// One row where the shadow disagreed with the serving version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The arguments, as `(parameter, value)`; `NULL` for nulls.
    pub arguments: Vec<(String, String)>,
    /// What the serving version returned (its result was used).
    pub serving: String,
    /// What the shadow returned.
    pub shadow: String,
}

impl Difference {
    /// `x=1, y=abc: serving 2, shadow 3`.
    pub fn display(&self) -> String {
        let args: Vec<String> = self
            .arguments
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!(
            "{}: serving {}, shadow {}",
            args.join(", "),
            self.serving,
            self.shadow
        )
    }
}

/// Rows compared and rows that differed, in all or in one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compared {
    /// Rows both versions returned a result for, compared.
    pub rows: u64,
    /// Of those, rows whose results differ (beyond the tolerance).
    pub differing: u64,
}

/// What a shadow has seen so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowReport {
    /// Rows both versions returned a result for, compared.
    pub rows_compared: u64,
    /// Of those, rows whose results differ (beyond the tolerance).
    pub rows_differing: u64,
    /// The same, per continuous query (by id); rows of pull queries count in the totals only.
    pub per_query: BTreeMap<String, Compared>,
    /// Batches sampled and run by the shadow.
    pub batches_run: u64,
    /// Rows of sampled batches skipped because the shadow was still busy with earlier ones.
    pub rows_skipped: u64,
    /// Rows of batches the sample left out.
    pub rows_not_sampled: u64,
    /// The first differing rows, up to [`ShadowConfig::keep`].
    pub differences: Vec<Difference>,
    /// The shadow's last failure (trap, limit, batch error), as the query would have seen it.
    pub last_error: Option<String>,
}

/// A batch the serving version has answered, for the shadow to answer too.
struct Job {
    args: Vec<ArrayRef>,
    rows: usize,
    serving: ArrayRef,
    /// The continuous query the batch came from.
    query: Option<String>,
}

/// A shadow version of one function.
pub struct Shadow {
    /// The candidate component.
    pub component: Arc<Component>,
    /// How it runs.
    pub config: ShadowConfig,
    /// When it started shadowing.
    pub since: SystemTime,
    function: FunctionSignature,
    /// Its own calls, rows, row errors, traps, limit hits and time.
    stats: Arc<FunctionStats>,
    compared: AtomicU64,
    differing: AtomicU64,
    per_query: Mutex<BTreeMap<String, Compared>>,
    batches: AtomicU64,
    skipped: AtomicU64,
    not_sampled: AtomicU64,
    offered: AtomicU64,
    pending: AtomicUsize,
    differences: Mutex<Vec<Difference>>,
    last_error: Mutex<Option<String>>,
    queue: SyncSender<Job>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("component", &self.component)
            .field("config", &self.config)
            .finish()
    }
}

impl Shadow {
    /// Starts `component` shadowing `function`; its thread ends when the shadow is dropped.
    pub(crate) fn start(
        component: Arc<Component>,
        function: FunctionSignature,
        config: ShadowConfig,
        stats: Arc<FunctionStats>,
    ) -> Arc<Shadow> {
        let (queue, jobs) = sync_channel::<Job>(QUEUE_DEPTH);
        let shadow = Arc::new(Shadow {
            component,
            config,
            since: SystemTime::now(),
            function,
            stats,
            compared: AtomicU64::new(0),
            differing: AtomicU64::new(0),
            per_query: Mutex::new(BTreeMap::new()),
            batches: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            not_sampled: AtomicU64::new(0),
            offered: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            differences: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            queue,
        });
        // A weak reference: the thread must not keep the shadow (and its queue) alive, or it
        // would never see the queue close.
        let weak: Weak<Shadow> = Arc::downgrade(&shadow);
        let spawned = std::thread::Builder::new()
            .name(format!("eddy-shadow-{}", shadow.function.name))
            .spawn(move || {
                while let Ok(job) = jobs.recv() {
                    let Some(shadow) = weak.upgrade() else { break };
                    shadow.run(job);
                    shadow.pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if let Err(e) = spawned {
            // No thread: every batch will find the queue full and be counted as skipped.
            tracing::error!(target: "eddy::udf", "cannot start the shadow thread: {e}");
        }
        shadow
    }

    /// The shadow's own call counters.
    pub fn stats(&self) -> Arc<FunctionStats> {
        self.stats.clone()
    }

    /// Offers a batch the serving version answered; never waits.
    pub(crate) fn offer(
        &self,
        args: &[ArrayRef],
        rows: usize,
        serving: &ArrayRef,
        query: Option<&str>,
    ) {
        let n = self.offered.fetch_add(1, Ordering::Relaxed) as f64;
        let sampled = ((n + 1.0) * self.config.sample).floor() > (n * self.config.sample).floor();
        if !sampled {
            self.not_sampled.fetch_add(rows as u64, Ordering::Relaxed);
            return;
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            args: args.to_vec(),
            rows,
            serving: serving.clone(),
            query: query.map(str::to_string),
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.skipped.fetch_add(rows as u64, Ordering::Relaxed);
            }
        }
    }

    /// Waits until the batches offered so far are done, up to `timeout`; whether they were.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// What it has seen so far.
    pub fn report(&self) -> ShadowReport {
        ShadowReport {
            rows_compared: self.compared.load(Ordering::Relaxed),
            rows_differing: self.differing.load(Ordering::Relaxed),
            per_query: lock(&self.per_query).clone(),
            batches_run: self.batches.load(Ordering::Relaxed),
            rows_skipped: self.skipped.load(Ordering::Relaxed),
            rows_not_sampled: self.not_sampled.load(Ordering::Relaxed),
            differences: lock(&self.differences).clone(),
            last_error: lock(&self.last_error).clone(),
        }
    }

    fn run(&self, job: Job) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let result = call_counted(
            &self.component,
            &self.function,
            &job.args,
            job.rows,
            &self.stats,
            None,
        );
        let shadow = match result {
            Ok(called) => called.array,
            Err(e) => {
                let message = e.message(&self.function.name);
                if let CallError::Call { .. } | CallError::BadResult(_) = e {
                    crate::capture::record(
                        &self.component,
                        &self.function,
                        Role::Shadow,
                        &job.args,
                        job.rows,
                        &e,
                    );
                }
                *lock(&self.last_error) = Some(message);
                return;
            }
        };
        let differing = differing_rows(
            &job.serving,
            &shadow,
            self.function.returns,
            self.config.tolerance,
        );
        self.compared.fetch_add(job.rows as u64, Ordering::Relaxed);
        self.differing
            .fetch_add(differing.len() as u64, Ordering::Relaxed);
        if let Some(query) = &job.query {
            let mut per_query = lock(&self.per_query);
            let counts = per_query.entry(query.clone()).or_default();
            counts.rows += job.rows as u64;
            counts.differing += differing.len() as u64;
        }
        let mut kept = lock(&self.differences);
        for row in differing {
            if kept.len() >= self.config.keep {
                break;
            }
            kept.push(Difference {
                arguments: self
                    .function
                    .params
                    .iter()
                    .zip(&job.args)
                    .map(|((name, _), array)| (name.clone(), value(array, row)))
                    .collect(),
                serving: value(&job.serving, row),
                shadow: value(&shadow, row),
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cell as text, `NULL` for null.
fn value(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    array_value_to_string(array, row).unwrap_or_else(|e| format!("<{e}>"))
}

/// Rows where `a` and `b` (both of type `ty`) differ: a null against a value, or values apart
/// by more than `tolerance` (numbers; NaN equals NaN) or unequal (other types).
pub(crate) fn differing_rows(
    a: &ArrayRef,
    b: &ArrayRef,
    ty: SqlType,
    tolerance: f64,
) -> Vec<usize> {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= tolerance || (x.is_nan() && y.is_nan());
    let same = |row: usize| -> bool {
        match (a.is_null(row), b.is_null(row)) {
            (true, true) => return true,
            (false, false) => {}
            _ => return false,
        }
        match ty {
            SqlType::Float64 => close(
                a.as_primitive::<Float64Type>().value(row),
                b.as_primitive::<Float64Type>().value(row),
            ),
            SqlType::Int64 => {
                let (x, y) = (
                    a.as_primitive::<Int64Type>().value(row),
                    b.as_primitive::<Int64Type>().value(row),
                );
                x.abs_diff(y) as f64 <= tolerance
            }
            SqlType::Boolean => a.as_boolean().value(row) == b.as_boolean().value(row),
            SqlType::Utf8 => a.as_string::<i32>().value(row) == b.as_string::<i32>().value(row),
            SqlType::ListFloat64 => {
                let (x, y) = (a.as_list::<i32>().value(row), b.as_list::<i32>().value(row));
                x.len() == y.len()
                    && x.null_count() == 0
                    && y.null_count() == 0
                    && x.as_primitive::<Float64Type>()
                        .values()
                        .iter()
                        .zip(y.as_primitive::<Float64Type>().values())
                        .all(|(p, q)| close(*p, *q))
            }
        }
    };
    (0..a.len().min(b.len()))
        .filter(|&row| !same(row))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::Float64Type;

    use super::*;

    #[test]
    fn numbers_differ_beyond_the_tolerance_and_nulls_only_from_values() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            Some(2.0),
            None,
            None,
            Some(f64::NAN),
            Some(5.0),
        ]));
        let b: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            Some(2.05),
            None,
            Some(3.0),
            Some(f64::NAN),
            Some(5.2),
        ]));
        assert_eq!(differing_rows(&a, &b, SqlType::Float64, 0.0), [1, 3, 5]);
        assert_eq!(differing_rows(&a, &b, SqlType::Float64, 0.1), [3, 5]);
        let i: ArrayRef = Arc::new(Int64Array::from(vec![1, 10, i64::MIN]));
        let j: ArrayRef = Arc::new(Int64Array::from(vec![1, 12, i64::MAX]));
        assert_eq!(differing_rows(&i, &j, SqlType::Int64, 0.0), [1, 2]);
        assert_eq!(differing_rows(&i, &j, SqlType::Int64, 2.0), [2]);
    }

    #[test]
    fn strings_compare_exactly_and_arrays_elementwise() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["v1:1", "x", "y"]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["v2:1", "x", "Y"]));
        assert_eq!(differing_rows(&a, &b, SqlType::Utf8, 100.0), [0, 2]);
        let list = |rows: Vec<Option<Vec<Option<f64>>>>| -> ArrayRef {
            Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(rows))
        };
        let a = list(vec![
            Some(vec![Some(1.0), Some(2.0)]),
            Some(vec![Some(1.0)]),
            Some(vec![Some(1.0)]),
        ]);
        let b = list(vec![
            Some(vec![Some(1.0), Some(2.001)]),
            Some(vec![Some(1.0), Some(1.0)]),
            Some(vec![Some(1.0)]),
        ]);
        assert_eq!(differing_rows(&a, &b, SqlType::ListFloat64, 0.0), [0, 1]);
        assert_eq!(differing_rows(&a, &b, SqlType::ListFloat64, 0.01), [1]);
    }

    #[test]
    fn a_difference_reads_as_arguments_and_both_results() {
        let d = Difference {
            arguments: vec![("event_id".into(), "3".into()), ("s".into(), "NULL".into())],
            serving: "v1:3".into(),
            shadow: "v2:3".into(),
        };
        assert_eq!(d.display(), "event_id=3, s=NULL: serving v1:3, shadow v2:3");
    }
}
