//! An in-memory, bounded, append-only log of batches: what streams without a topic are made of.

use std::collections::VecDeque;
use std::sync::Mutex;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::Notify;

/// Rows a log keeps before it drops its oldest batches.
pub const DEFAULT_RETAINED_ROWS: usize = 1_000_000;

/// A log of batches; readers hold a sequence number and never block writers.
#[derive(Debug)]
pub struct Log {
    schema: SchemaRef,
    inner: Mutex<Inner>,
    notify: Notify,
    retained_rows: usize,
}

#[derive(Debug, Default)]
struct Inner {
    batches: VecDeque<RecordBatch>,
    /// Sequence number of `batches[0]`.
    first: u64,
    rows: usize,
    /// Rows dropped from the front because the log was full.
    dropped_rows: u64,
}

/// What a read returned.
#[derive(Debug)]
pub struct Read {
    /// The batches from the requested position on.
    pub batches: Vec<RecordBatch>,
    /// The position to read from next.
    pub next: u64,
    /// Rows the reader missed because they were evicted before it got to them.
    pub missed_rows: u64,
}

impl Log {
    /// An empty log that keeps up to `retained_rows` rows.
    pub fn new(schema: SchemaRef, retained_rows: usize) -> Log {
        Log {
            schema,
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            retained_rows,
        }
    }

    /// The schema of every batch.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends a batch and wakes readers.
    pub fn append(&self, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let mut inner = self.inner.lock().expect("log lock");
        inner.rows += batch.num_rows();
        inner.batches.push_back(batch);
        while inner.rows > self.retained_rows && inner.batches.len() > 1 {
            let old = inner.batches.pop_front().expect("non-empty");
            inner.rows -= old.num_rows();
            inner.dropped_rows += old.num_rows() as u64;
            inner.first += 1;
        }
        drop(inner);
        self.notify.notify_waiters();
    }

    /// The position after the last batch.
    pub fn end(&self) -> u64 {
        let inner = self.inner.lock().expect("log lock");
        inner.first + inner.batches.len() as u64
    }

    /// Batches from position `from` on, at most `max_batches` of them.
    pub fn read(&self, from: u64, max_batches: usize) -> Read {
        let inner = self.inner.lock().expect("log lock");
        let (start, missed_rows) = if from < inner.first {
            // Whole batches were evicted; we cannot say exactly how many rows the reader lost
            // without keeping sizes, so count the batches' rows we know were dropped.
            (inner.first, inner.dropped_rows)
        } else {
            (from, 0)
        };
        let skip = (start - inner.first) as usize;
        let batches: Vec<RecordBatch> = inner
            .batches
            .iter()
            .skip(skip)
            .take(max_batches)
            .cloned()
            .collect();
        let next = start + batches.len() as u64;
        Read {
            batches,
            next,
            missed_rows,
        }
    }

    /// Everything retained, oldest first.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        let inner = self.inner.lock().expect("log lock");
        inner.batches.iter().cloned().collect()
    }

    /// Waits until something is appended after `position`, or returns at once if it already was.
    pub async fn wait_beyond(&self, position: u64) {
        loop {
            let notified = self.notify.notified();
            if self.end() > position {
                return;
            }
            notified.await;
        }
    }
}
