//! How far a stateful query has read each partition, so that a partition the consumer group
//! takes away and hands back resumes where the query's state left off.
//!
//! A query's state in memory counts every message it has read, while the group's committed
//! offset (or the last checkpoint's) lags behind it by up to a commit interval. A partition
//! that came back and resumed at the committed offset would be counted twice from there.

use std::collections::BTreeMap;
use std::sync::Mutex;

use eddy_connector::PartitionHook;

/// Per partition, the offset after the last message the query has read; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    next: Mutex<BTreeMap<i32, i64>>,
}

impl Progress {
    /// Records how far the query has read: each step's offsets, before the next fetch.
    pub(crate) fn record(&self, next: &BTreeMap<i32, i64>) {
        let mut held = self.next.lock().expect("progress lock");
        if *held != *next {
            held.clone_from(next);
        }
    }
}

impl PartitionHook for Progress {
    fn assigned(&self, partitions: &[i32], _of: usize) -> BTreeMap<i32, i64> {
        let next = self.next.lock().expect("progress lock");
        let resume: BTreeMap<i32, i64> = partitions
            .iter()
            .filter_map(|p| next.get(p).map(|o| (*p, *o)))
            .collect();
        if !resume.is_empty() {
            tracing::info!(
                ?resume,
                "partitions back: resuming where the query's state is"
            );
        }
        resume
    }

    /// The state keeps what it counted of them; if they come back, they resume after it.
    fn revoked(&self, _partitions: &[i32]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_resume_where_the_state_is() {
        let progress = Progress::default();
        assert!(progress.assigned(&[0, 1], 2).is_empty());
        progress.record(&BTreeMap::from([(0, 17), (1, 4)]));
        progress.revoked(&[0, 1]);
        assert_eq!(progress.assigned(&[1, 2], 3), BTreeMap::from([(1, 4)]));
    }
}
