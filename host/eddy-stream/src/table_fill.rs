//! How far the query that fills a table has read: what a stream–table join waits for.
//!
//! A table read from a topic, or built by a query, is filled by a task of its own, while a
//! stream joined to it is read by the join's task. Started together over a backlog (a restart,
//! or topics filled before the queries), the stream would join whatever part of the table was
//! loaded by then. So a stream's step waits until each table it joins has been read up to the
//! step's latest event time, or to the end of what its source holds, as Kafka Streams reads a
//! stream's and a table's records in event-time order.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a join waits for a table whose filling query makes no progress at all (stopped,
/// or its broker gone) before it joins the table as it is, with a warning.
pub(crate) const STALL: Duration = Duration::from_secs(10);

/// A table's filling progress, shared between its filling task and the joins that read it.
#[derive(Debug)]
pub(crate) struct Filled {
    /// The latest event time the filling query has read; `i64::MIN` before any.
    read_to: AtomicI64,
    /// Whether it has read everything its source held when it last looked.
    caught_up: AtomicBool,
    /// When it last read rows or changed its mind about being caught up: a filler that has
    /// not moved for [`STALL`] is waited for no longer.
    moved_at: Mutex<Instant>,
}

impl Default for Filled {
    /// A table filled by statements (`INSERT INTO … VALUES`), which is always up to date.
    fn default() -> Filled {
        Filled {
            read_to: AtomicI64::new(i64::MIN),
            caught_up: AtomicBool::new(true),
            moved_at: Mutex::new(Instant::now()),
        }
    }
}

impl Filled {
    /// A query starts filling the table: until it catches up, joins wait for it.
    pub(crate) fn begin(&self) {
        self.caught_up.store(false, Ordering::SeqCst);
        *self.moved_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// The filling query has processed a step whose latest event time is `read` (if it had
    /// rows), and `caught_up` says whether its source holds nothing more now.
    pub(crate) fn advanced(&self, read: Option<i64>, caught_up: bool) {
        let moved = read.is_some() || caught_up != self.caught_up.load(Ordering::SeqCst);
        if let Some(t) = read {
            self.read_to.fetch_max(t, Ordering::SeqCst);
        }
        self.caught_up.store(caught_up, Ordering::SeqCst);
        if moved {
            *self.moved_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }

    /// Whether a stream event at `time` may join the table now.
    pub(crate) fn ready_for(&self, time: i64) -> bool {
        self.caught_up.load(Ordering::SeqCst) || self.read_to.load(Ordering::SeqCst) >= time
    }

    /// Whether the filling query has not moved for [`STALL`].
    pub(crate) fn stalled(&self) -> bool {
        self.moved_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= STALL
    }

    /// The latest event time read, for a warning.
    pub(crate) fn read_to(&self) -> Option<i64> {
        Some(self.read_to.load(Ordering::SeqCst)).filter(|t| *t != i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::Filled;

    #[test]
    fn a_table_filled_by_statements_is_always_ready() {
        assert!(Filled::default().ready_for(i64::MAX));
    }

    #[test]
    fn a_join_waits_until_the_table_is_read_up_to_its_event_or_caught_up() {
        let filled = Filled::default();
        filled.begin();
        assert!(!filled.ready_for(1_000));
        filled.advanced(Some(999), false);
        assert!(!filled.ready_for(1_000));
        filled.advanced(Some(1_000), false);
        assert!(filled.ready_for(1_000));
        assert!(!filled.ready_for(5_000));
        // Nothing more to read: every event may join the table as it is.
        filled.advanced(None, true);
        assert!(filled.ready_for(5_000));
        assert_eq!(filled.read_to(), Some(1_000));
        assert!(!filled.stalled());
    }
}
