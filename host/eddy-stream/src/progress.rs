//! How far a stateful query has read each partition, so that a partition the consumer group
//! takes away and hands back resumes where the query's state left off.
//!
//! A query's state in memory counts every message it has read, while the group's committed
//! offset (or the last checkpoint's) lags behind it by up to a commit interval. A partition
//! that came back and resumed at the committed offset would be counted twice from there.
//!
//! It also notices a query whose state cannot be split by partition (its GROUP BY is not its
//! source's key, and it is not repartitioned) starting while another process of its service id runs it: the two would each
//! aggregate part of every group.

use std::collections::BTreeMap;
use std::sync::Mutex;

use eddy_connector::PartitionHook;

/// Per partition, the offset after the last message the query has read; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    next: Mutex<BTreeMap<i32, i64>>,
    /// Whether the query must hold all of its topic's partitions.
    whole: bool,
    /// Set at the first assignment: whether it lacked partitions that another member holds.
    first: Mutex<Option<Option<Shared>>>,
}

/// A first assignment short of the whole topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shared {
    /// The partitions this query got.
    pub got: Vec<i32>,
    /// How many the topic has.
    pub of: usize,
}

impl Progress {
    /// For a query whose state is one whole that cannot be split by partition.
    pub(crate) fn whole() -> Progress {
        Progress {
            whole: true,
            ..Progress::default()
        }
    }

    /// For a query that must hold the whole topic, whether its first assignment was short of
    /// it because another process of its service id holds the rest.
    pub(crate) fn shared(&self) -> Option<Shared> {
        self.first.lock().expect("progress lock").clone().flatten()
    }

    /// Records how far the query has read: each step's offsets, before the next fetch.
    pub(crate) fn record(&self, next: &BTreeMap<i32, i64>) {
        let mut held = self.next.lock().expect("progress lock");
        if *held != *next {
            held.clone_from(next);
        }
    }
}

impl PartitionHook for Progress {
    fn assigned(&self, partitions: &[i32], of: usize) -> BTreeMap<i32, i64> {
        let mut first = self.first.lock().expect("progress lock");
        if first.is_none() {
            let short = self.whole && of > 0 && partitions.len() < of;
            *first = Some(short.then(|| Shared {
                got: partitions.to_vec(),
                of,
            }));
        }
        drop(first);
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
        assert_eq!(progress.shared(), None, "splits freely");
    }

    #[test]
    fn a_whole_query_notices_a_first_assignment_short_of_the_topic() {
        let progress = Progress::whole();
        progress.assigned(&[0, 1], 4);
        let shared = Some(Shared {
            got: vec![0, 1],
            of: 4,
        });
        assert_eq!(progress.shared(), shared);
        // Only the first assignment tells: later ones move partitions of a running query.
        progress.assigned(&[0, 1, 2, 3], 4);
        assert_eq!(progress.shared(), shared);
        let alone = Progress::whole();
        alone.assigned(&[0, 1, 2, 3], 4);
        alone.assigned(&[0], 4);
        assert_eq!(alone.shared(), None);
    }
}
