//! State per input partition. An aggregation over a Kafka topic keyed by its GROUP BY columns
//! has all of a group's events in one partition, so it keeps one processor (groups, windows,
//! stream time) and one series of checkpoints per partition it owns. Partitions then move
//! between the processes of one `--service-id` with their state: Kafka's consumer group decides
//! who owns what, a partition that arrives is restored from its newest checkpoint before its
//! first message is read, and one that leaves is dropped, for its next owner to restore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use eddy_connector::PartitionHook;
use foldhash::HashSet;

use crate::changes::Changes;
use crate::checkpoint::{Checkpoint, QueryState};
use crate::input::Input;
use crate::pipeline::Processor;
use crate::provider::TableState;
use crate::query::Parsed;
use crate::repartition::Dedupe;
use crate::{Error, Result};

/// A partition that arrived: its checkpoints, and the newest one, loaded.
type Arrival = (i32, QueryState, Result<Option<Checkpoint>>);

/// Where the query's task and its Kafka source meet: the source reports assignments and
/// revocations, the task takes the partitions that arrived and drops those that left.
pub(crate) struct Handover {
    /// The query's checkpoints; each partition has its own below them.
    base: QueryState,
    /// For a query over a repartition topic, what each partition's state has counted.
    dedupe: Option<Arc<Dedupe>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Partitions whose state is in memory, or is in `arrived`.
    held: BTreeSet<i32>,
    /// How far the query has read the partitions it holds.
    progress: BTreeMap<i32, i64>,
    /// Partitions assigned and loaded, for the task to take.
    arrived: Vec<Arrival>,
    /// Partitions revoked and not assigned again since, for the task to drop.
    revoked: BTreeSet<i32>,
}

impl Handover {
    pub(crate) fn new(base: QueryState, dedupe: Option<Arc<Dedupe>>) -> Handover {
        Handover {
            base,
            dedupe,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("handover lock")
    }
}

impl PartitionHook for Handover {
    fn assigned(&self, partitions: &[i32], _of: usize) -> BTreeMap<i32, i64> {
        let mut inner = self.lock();
        let mut start = BTreeMap::new();
        for &p in partitions {
            inner.revoked.remove(&p);
            if inner.held.contains(&p) {
                // Back before the task dropped it: its state in memory goes on.
                if let Some(offset) = inner.progress.get(&p) {
                    start.insert(p, *offset);
                }
                continue;
            }
            let mut state = self.base.partition(p);
            // This runs on the source's fetching thread, which may block: the partition's
            // first message must not be read before its state is loaded.
            let loaded = futures::executor::block_on(state.load());
            if let Ok(Some(checkpoint)) = &loaded {
                if let Some(offset) = checkpoint.offsets.get(&p) {
                    start.insert(p, *offset);
                    // Should the group move it again before the task takes it, it starts here
                    // again, not at the group's older commit.
                    inner.progress.insert(p, *offset);
                }
            }
            if let Some(dedupe) = &self.dedupe {
                // Before the partition's first message is read, which it filters.
                let counted = match &loaded {
                    Ok(Some(checkpoint)) => checkpoint.upstream_offsets(),
                    _ => BTreeMap::new(),
                };
                dedupe.set(p, counted, start.get(&p).copied());
            }
            inner.held.insert(p);
            inner.arrived.push((p, state, loaded));
        }
        start
    }

    fn revoked(&self, partitions: &[i32]) {
        self.lock().revoked.extend(partitions);
    }
}

/// A query's processors and checkpoints, one per input partition it owns. The task's own
/// `processor` slot holds the one of the partition being processed; the others are parked.
pub(crate) struct Partitioned {
    handover: Arc<Handover>,
    /// What a partition's processor is planned from.
    parsed: Parsed,
    input: SchemaRef,
    id: String,
    expose_window: bool,
    /// Whether the task's slot holds the processor planned at CREATE, not yet anyone's.
    spare: bool,
    /// The partition whose processor is in the task's slot.
    current: Option<i32>,
    parked: BTreeMap<i32, Processor>,
    states: BTreeMap<i32, QueryState>,
    /// Per partition, the keys of the table rows its groups wrote.
    keys: BTreeMap<i32, HashSet<Vec<u8>>>,
    /// The partitions that left at the last sync.
    left: BTreeSet<i32>,
}

impl Partitioned {
    /// For query `id` running `parsed` over rows of `input`, with checkpoints under `base`;
    /// `dedupe` when the input is a repartition topic.
    pub(crate) fn new(
        base: QueryState,
        dedupe: Option<Arc<Dedupe>>,
        parsed: Parsed,
        input: SchemaRef,
        id: &str,
        expose_window: bool,
    ) -> Partitioned {
        Partitioned {
            handover: Arc::new(Handover::new(base, dedupe)),
            parsed,
            input,
            id: id.to_string(),
            expose_window,
            spare: true,
            current: None,
            parked: BTreeMap::new(),
            states: BTreeMap::new(),
            keys: BTreeMap::new(),
            left: BTreeSet::new(),
        }
    }

    /// What the source reports partition moves to.
    pub(crate) fn handover(&self) -> Arc<Handover> {
        self.handover.clone()
    }

    /// After each step of input: records how far it has read, drops the partitions that left
    /// (and their table rows), and restores those that arrived.
    pub(crate) async fn sync(
        &mut self,
        slot: &mut Option<Processor>,
        input: &mut Input,
        table: Option<&TableState>,
        ctx: &SessionContext,
    ) -> Result<()> {
        let (revoked, arrived) = {
            let mut inner = self.handover.lock();
            // A partition that arrived but has not been read yet keeps the offset it starts at.
            let mut progress = input.offsets();
            for (p, offset) in std::mem::take(&mut inner.progress) {
                progress.entry(p).or_insert(offset);
            }
            inner.progress = progress;
            let revoked = std::mem::take(&mut inner.revoked);
            for p in &revoked {
                inner.held.remove(p);
                inner.progress.remove(p);
                // Under the lock: a new assignment of `p` may set what it counted the moment
                // the lock is released, and that must not be forgotten.
                if let Some(dedupe) = &self.handover.dedupe {
                    dedupe.forget(*p);
                }
            }
            // A partition that arrived and left again before this sync is not here: restoring
            // it would keep a processor, and checkpoints, of a partition another process owns.
            let mut arrived = std::mem::take(&mut inner.arrived);
            arrived.retain(|(p, ..)| inner.held.contains(p));
            (revoked, arrived)
        };
        self.left = revoked.clone();
        for p in revoked {
            let processor = if self.current == Some(p) {
                self.current = None;
                slot.take()
            } else {
                self.parked.remove(&p)
            };
            if let Some(processor) = processor {
                for t in &processor.tables {
                    let _ = ctx.deregister_table(t.as_str());
                }
            }
            if let (Some(keys), Some(table)) = (self.keys.remove(&p), table) {
                table.remove_keys(&keys);
            }
            self.states.remove(&p);
            input.forget_partition(p);
            tracing::info!(query = %self.id, partition = p, "partition left, with its state");
        }
        for (p, state, loaded) in arrived {
            let checkpoint = loaded.map_err(|e| {
                Error::State(format!("restoring partition {p} of query {}: {e}", self.id))
            })?;
            let mut processor = match (self.spare, self.current) {
                (true, None) => {
                    self.spare = false;
                    slot.take().expect("the spare processor is in the slot")
                }
                _ => {
                    Processor::plan(
                        ctx,
                        &self.parsed,
                        self.input.clone(),
                        None,
                        &format!("{}_{p}", self.id),
                        self.expose_window,
                    )
                    .await?
                }
            };
            let mut keys = HashSet::default();
            if let Some(checkpoint) = &checkpoint {
                let restored = processor.restore(checkpoint).and_then(|()| match table {
                    Some(t) => t.restore_keys("table", checkpoint),
                    None => Ok(HashSet::default()),
                });
                keys = restored.map_err(|e| {
                    Error::State(format!(
                        "restoring partition {p} of query {} from {}: {e}",
                        self.id,
                        state.location()
                    ))
                })?;
                if let Some(offset) = checkpoint.offsets.get(&p) {
                    input.start_partition_at(p, *offset);
                }
            }
            tracing::info!(
                query = %self.id,
                partition = p,
                restored = checkpoint.is_some(),
                "partition arrived"
            );
            self.parked.insert(p, processor);
            self.states.insert(p, state);
            self.keys.insert(p, keys);
        }
        Ok(())
    }

    /// Whether partition `p` left at the last [`sync`](Self::sync): a step read before holds
    /// messages of it that its next owner reads.
    pub(crate) fn just_left(&self, p: i32) -> bool {
        self.left.contains(&p)
    }

    /// Puts partition `p`'s processor in the task's slot; false if it holds none.
    pub(crate) fn activate(&mut self, p: i32, slot: &mut Option<Processor>) -> bool {
        if self.current == Some(p) {
            return slot.is_some();
        }
        if let (Some(current), Some(processor)) = (self.current, slot.take()) {
            self.parked.insert(current, processor);
        }
        self.current = None;
        match self.parked.remove(&p) {
            Some(processor) => {
                *slot = Some(processor);
                self.current = Some(p);
                true
            }
            None => false,
        }
    }

    /// Notes which table rows the current partition's groups wrote or deleted.
    pub(crate) fn track(&mut self, changes: &Changes) {
        let Some(keys) = self.current.and_then(|p| self.keys.get_mut(&p)) else {
            return;
        };
        for (i, key) in changes.keys.iter().enumerate() {
            if changes.is_deleted(i) {
                keys.remove(key);
            } else if !keys.contains(key) {
                keys.insert(key.clone());
            }
        }
    }

    /// Whether the table row of `key` is the current partition's.
    pub(crate) fn owns(&self, key: &[u8]) -> bool {
        self.current
            .and_then(|p| self.keys.get(&p))
            .is_some_and(|keys| keys.contains(key))
    }

    /// Late events dropped by the processors of the partitions not being processed.
    pub(crate) fn late_parked(&self) -> u64 {
        self.parked.values().map(Processor::late).sum()
    }

    /// Writes one checkpoint per partition: its groups and windows, its table rows, and the
    /// offset they reflect (of `offsets`, the input's).
    pub(crate) async fn checkpoint(
        &mut self,
        slot: &mut Option<Processor>,
        offsets: BTreeMap<i32, i64>,
        table: Option<&TableState>,
    ) -> Result<()> {
        for (p, state) in &mut self.states {
            let processor = if self.current == Some(*p) {
                slot.as_mut()
            } else {
                self.parked.get_mut(p)
            };
            let Some(processor) = processor else { continue };
            let mut checkpoint = Checkpoint {
                offsets: offsets.get(p).map(|o| (*p, *o)).into_iter().collect(),
                ..Checkpoint::default()
            };
            processor.save(&mut checkpoint)?;
            if let Some(dedupe) = &self.handover.dedupe {
                checkpoint.set_upstream_offsets(&dedupe.of(*p));
            }
            if let (Some(table), Some(keys)) = (table, self.keys.get_mut(p)) {
                table.save_keys("table", &mut checkpoint, keys)?;
            }
            state.save(&mut checkpoint).await?;
        }
        Ok(())
    }

    /// Removes the tables its processors registered, when the query ends.
    pub(crate) fn close(self, ctx: &SessionContext, slot: &Option<Processor>) {
        for processor in self.parked.values().chain(slot) {
            for t in &processor.tables {
                let _ = ctx.deregister_table(t.as_str());
            }
        }
    }
}
