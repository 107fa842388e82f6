//! Repartitioning, as ksqlDB's `…-GroupBy-repartition` topics do it. An aggregation whose
//! `GROUP BY` is not its topic's key first forwards each message, unchanged, to the partition of
//! an internal topic that its group hashes to, then aggregates that topic: there each partition
//! holds whole groups, so the query keeps its state per partition and partitions move between
//! processes with their state.
//!
//! Forwarding is at-least-once: after a crash or a rebalance, messages forwarded but not yet
//! committed upstream are forwarded again. Each forwarded record carries where it was first read
//! ([`eddy_connector::Message::upstream`]), and the aggregation drops those its state has counted
//! already, so the state stays exact.
//!
//! That drop relies on reading each partition of the repartition topic without skipping any
//! offset: a record skipped, then forwarded again after a later one was counted, would be taken
//! for counted. Eddy writes that topic without transactions and it is never compacted, so its
//! offsets have no gaps. A broker may still show a gap for a moment while several processes
//! write one partition (tansu makes a batch's offsets visible before the batch itself); the
//! reader then reads the partition again from the gap until it fills
//! ([`Repartition::cut_at_holes`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use eddy_connector::{Message, PartitionHook, Record, Sink, Source};

use crate::format::ValueDecoder;
use crate::Result;

/// Which partition of the repartition topic each row's group goes to.
pub(crate) struct Router {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    rows: RowConverter,
    partitions: i32,
}

impl Router {
    /// For `GROUP BY exprs` over rows of `schema` (which the query calls `qualifier`), into a
    /// topic of `partitions` partitions.
    pub(crate) fn new(
        ctx: &SessionContext,
        schema: &SchemaRef,
        qualifier: &str,
        exprs: &[String],
        partitions: i32,
    ) -> Result<Router> {
        let df_schema = DFSchema::try_from_qualified_schema(qualifier, schema)?;
        let exprs = exprs
            .iter()
            .map(|e| {
                let logical = ctx.parse_sql_expr(e, &df_schema)?;
                ctx.create_physical_expr(logical, &df_schema)
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let fields = exprs
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(schema)?)))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(Router {
            exprs,
            rows: RowConverter::new(fields)?,
            partitions: partitions.max(1),
        })
    }

    /// Each row's partition: a hash of its group's values that every process computes alike.
    fn route(&self, batch: &RecordBatch) -> Result<Vec<i32>> {
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
        let rows = self.rows.convert_columns(&columns)?;
        Ok(rows
            .iter()
            .map(|row| (fnv1a(row.as_ref()) % self.partitions as u64) as i32)
            .collect())
    }
}

/// FNV-1a: stable across processes and builds, unlike a seeded hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads the query's source and forwards each message to the partition of its group.
pub(crate) struct Forward {
    source: Box<dyn Source>,
    decoder: ValueDecoder,
    router: Router,
    sink: Box<dyn Sink>,
    /// Per source partition, the offset after the last message forwarded.
    next: BTreeMap<i32, i64>,
    /// Source partitions taken away since the last commit: not committed any more.
    lost: Arc<Lost>,
}

/// Source partitions the consumer group took from a forward.
#[derive(Default)]
struct Lost(Mutex<Vec<i32>>);

impl Lost {
    fn take(&self) -> Vec<i32> {
        std::mem::take(&mut *self.0.lock().expect("lost partitions lock"))
    }
}

impl PartitionHook for Lost {
    /// A forward starts each partition where the group committed it.
    fn assigned(&self, _: &[i32], _: usize) -> BTreeMap<i32, i64> {
        BTreeMap::new()
    }

    fn revoked(&self, partitions: &[i32]) {
        let mut lost = self.0.lock().expect("lost partitions lock");
        lost.extend(partitions);
    }
}

impl Forward {
    /// Forwards what `source` (read with `decoder`) has to `sink` as `router` says.
    pub(crate) fn new(
        mut source: Box<dyn Source>,
        decoder: ValueDecoder,
        router: Router,
        sink: Box<dyn Sink>,
    ) -> Forward {
        let lost = Arc::new(Lost::default());
        source.watch_partitions(lost.clone());
        Forward {
            source,
            decoder,
            router,
            sink,
            next: BTreeMap::new(),
            lost,
        }
    }

    /// Forwards messages, `max` at a time, until dropped; commits the source every `interval`
    /// once what it forwarded is durable. A failure (the broker gone) is put in `failed` for
    /// the query to report, and the forward tries again.
    async fn run(mut self, max: usize, interval: Duration, failed: Arc<Mutex<Option<String>>>) {
        let mut last_commit = tokio::time::Instant::now();
        loop {
            let step = async {
                self.step(max).await?;
                if last_commit.elapsed() >= interval {
                    last_commit = tokio::time::Instant::now();
                    self.commit().await?;
                }
                Ok::<_, crate::Error>(())
            };
            if let Err(e) = step.await {
                tracing::warn!("repartition: forwarding: {e}");
                *failed.lock().expect("forward failure lock") = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Forwards up to `max` messages, waiting a little for the first.
    async fn step(&mut self, max: usize) -> Result<()> {
        let Some(messages) = self
            .source
            .poll(max, eddy_connector::DEFAULT_POLL_WAIT)
            .await?
        else {
            // The source ended (Kafka's do not); there is nothing more to forward.
            tokio::time::sleep(eddy_connector::DEFAULT_POLL_WAIT).await;
            return Ok(());
        };
        if messages.is_empty() {
            return Ok(());
        }
        for m in &messages {
            self.next
                .insert(m.position.partition, m.position.offset + 1);
        }
        let partitions = self.partitions(&messages);
        let records = messages
            .into_iter()
            .zip(partitions)
            .map(|(m, partition)| Record {
                key: m.key,
                payload: (!m.no_value).then_some(m.payload),
                timestamp_ms: m.timestamp_ms,
                partition: Some(partition),
                upstream: Some(m.position),
            })
            .collect();
        self.sink.send(records).await?;
        Ok(())
    }

    /// Each message's partition. One that does not decode, or whose group cannot be computed,
    /// goes to the partition of its source partition's number: the aggregation reports it as
    /// it would have without repartitioning.
    fn partitions(&self, messages: &[Message]) -> Vec<i32> {
        let fallback = |m: &Message| m.position.partition.rem_euclid(self.router.partitions);
        let (batch, bad) = self.decoder.decode(messages);
        let bad: HashSet<&str> = bad.iter().map(|b| b.origin.as_str()).collect();
        let good: Vec<usize> = (0..messages.len())
            .filter(|&i| !bad.contains(messages[i].origin.as_str()))
            .collect();
        let mut out: Vec<i32> = messages.iter().map(fallback).collect();
        if good.len() != batch.num_rows() {
            return out;
        }
        match self.router.route(&batch) {
            Ok(routes) => {
                for (i, partition) in good.into_iter().zip(routes) {
                    out[i] = partition;
                }
            }
            // One row may be at fault (a UDF that traps): route the rest one by one.
            Err(_) => {
                for (row, i) in good.into_iter().enumerate() {
                    if let Ok(route) = self.router.route(&batch.slice(row, 1)) {
                        out[i] = route[0];
                    }
                }
            }
        }
        out
    }

    /// Commits the source up to what the repartition topic now durably holds, for the
    /// partitions it still reads: the others' next readers commit them.
    async fn commit(&mut self) -> Result<()> {
        for p in self.lost.take() {
            self.next.remove(&p);
        }
        if self.next.is_empty() {
            return Ok(());
        }
        self.sink.flush().await?;
        self.source.commit(&self.next).await?;
        Ok(())
    }
}

/// Names each forwarded message's origin after its place in `topic`, where it was first read.
fn name_origins(topic: &str, messages: &mut [Message]) {
    for m in messages {
        if let Some(up) = m.upstream {
            m.origin = format!("{topic}[{}]@{}", up.partition, up.offset);
        }
    }
}

/// How long a gap in a partition of the repartition topic is waited for before its offsets are
/// given up as lost (with a warning).
const HOLE_WAIT: Duration = Duration::from_secs(10);

/// Per partition of the repartition topic, per source partition, the offset after the last
/// source message its state has counted.
#[derive(Default)]
pub(crate) struct Dedupe {
    seen: Mutex<BTreeMap<i32, BTreeMap<i32, i64>>>,
    /// Per partition restored from a checkpoint, the offset its reading starts at.
    starts: Mutex<BTreeMap<i32, i64>>,
}

impl Dedupe {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, BTreeMap<i32, i64>>> {
        self.seen.lock().expect("dedupe lock")
    }

    /// Drops the messages counted already; notes the rest as counted.
    fn retain(&self, messages: &mut Vec<Message>) {
        let mut seen = self.lock();
        let before = messages.len();
        messages.retain(|m| {
            let Some(upstream) = m.upstream else {
                return true;
            };
            let next = seen
                .entry(m.position.partition)
                .or_default()
                .entry(upstream.partition)
                .or_insert(0);
            if upstream.offset < *next {
                return false;
            }
            *next = upstream.offset + 1;
            true
        });
        if messages.len() < before {
            tracing::debug!(
                dropped = before - messages.len(),
                "repartition: dropped messages forwarded twice"
            );
        }
    }

    /// What partition `p`'s state has counted, for its checkpoint.
    pub(crate) fn of(&self, p: i32) -> BTreeMap<i32, i64> {
        self.lock().get(&p).cloned().unwrap_or_default()
    }

    /// Partition `p`'s state, restored, has counted `counted`; its reading starts at offset
    /// `start` (the checkpoint's), if known.
    pub(crate) fn set(&self, p: i32, counted: BTreeMap<i32, i64>, start: Option<i64>) {
        self.lock().insert(p, counted);
        let mut starts = self.starts.lock().expect("dedupe starts lock");
        match start {
            Some(start) => starts.insert(p, start),
            None => starts.remove(&p),
        };
    }

    /// Where partition `p`'s reading starts, when it was restored from a checkpoint.
    fn start(&self, p: i32) -> Option<i64> {
        self.starts
            .lock()
            .expect("dedupe starts lock")
            .get(&p)
            .copied()
    }

    /// Partition `p`'s state left this process.
    pub(crate) fn forget(&self, p: i32) {
        self.lock().remove(&p);
        self.starts.lock().expect("dedupe starts lock").remove(&p);
    }
}

/// The gaps a reader of a repartition topic waits for to fill.
struct Holes {
    /// Per gap (partition, first missing offset), since when it is waited for.
    waiting: BTreeMap<(i32, i64), Instant>,
    /// How long one is waited for before its offsets are given up.
    wait: Duration,
}

impl Holes {
    fn new(wait: Duration) -> Holes {
        Holes {
            waiting: BTreeMap::new(),
            wait,
        }
    }

    /// Cuts `messages` of each partition at the first one past the offset expected next (the
    /// one after the previous message of its partition here, else `expected`'s). Returns each
    /// partition cut and where its gap starts. A gap still there after `wait` is reported and
    /// passed over; a message before the offset expected (a partition read again) is no gap.
    fn cut(
        &mut self,
        messages: &mut Vec<Message>,
        expected: impl Fn(i32) -> Option<i64>,
        topic: &str,
    ) -> Vec<(i32, i64)> {
        let mut after: BTreeMap<i32, i64> = BTreeMap::new();
        let mut cut: BTreeMap<i32, i64> = BTreeMap::new();
        let mut present = HashSet::new();
        messages.retain(|m| {
            let (p, at) = (m.position.partition, m.position.offset);
            present.insert(p);
            if cut.contains_key(&p) {
                return false;
            }
            let want = after.get(&p).copied().or_else(|| expected(p));
            if let Some(want) = want.filter(|want| at > *want) {
                let since = *self.waiting.entry((p, want)).or_insert_with(Instant::now);
                if since.elapsed() < self.wait {
                    cut.insert(p, want);
                    return false;
                }
                tracing::warn!(
                    partition = p,
                    "repartition: offsets {want} to {} of the repartition topic of {topic} never \
                     arrived; going on without them",
                    at - 1
                );
            }
            after.insert(p, at + 1);
            true
        });
        // The gaps of a partition read and not cut there again are filled, or given up.
        self.waiting.retain(|(p, at), _| match cut.get(p) {
            Some(c) => c == at,
            None => !present.contains(p),
        });
        if !cut.is_empty() {
            tracing::debug!(?cut, "repartition: waiting for a gap to fill");
        }
        cut.into_iter().collect()
    }
}

/// What an input reading a repartition topic adds: the forward that fills it, running beside
/// the query, and the record of what was counted.
pub(crate) struct Repartition {
    /// The topic the forward reads: where bad events are said to come from.
    source_topic: String,
    forward: tokio::task::JoinHandle<()>,
    failed: Arc<Mutex<Option<String>>>,
    /// Shared with the query's per-partition state, which checkpoints and restores it.
    pub dedupe: Arc<Dedupe>,
    holes: Holes,
}

impl Repartition {
    /// Starts `forward` of `source_topic` in a task of its own (forwarding `max` messages at a
    /// time, committing every `interval`), so that it and the aggregation run side by side.
    pub(crate) fn start(
        forward: Forward,
        source_topic: &str,
        max: usize,
        interval: Duration,
    ) -> Repartition {
        let failed = Arc::new(Mutex::new(None));
        Repartition {
            source_topic: source_topic.to_string(),
            forward: tokio::spawn(forward.run(max, interval, failed.clone())),
            failed,
            dedupe: Arc::default(),
            holes: Holes::new(HOLE_WAIT),
        }
    }

    /// Cuts `messages` (read of the repartition topic) at the first gap in each partition: a
    /// message past the offset expected next, which is the one after the last read (`next`),
    /// or where a restored partition starts. Returns each partition cut and the offset to read
    /// it again from.
    pub(crate) fn cut_at_holes(
        &mut self,
        messages: &mut Vec<Message>,
        next: &BTreeMap<i32, i64>,
    ) -> Vec<(i32, i64)> {
        let dedupe = &self.dedupe;
        self.holes.cut(
            messages,
            |p| next.get(&p).copied().or_else(|| dedupe.start(p)),
            &self.source_topic,
        )
    }

    /// The forward's last failure since asked, if any: the query reports it.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().expect("forward failure lock").take()
    }

    /// Drops messages of `messages` counted already; the others are said to come from where
    /// they were first read, so a bad event is reported with its place in the source.
    pub(crate) fn retain(&self, messages: &mut Vec<Message>) {
        self.dedupe.retain(messages);
        name_origins(&self.source_topic, messages);
    }
}

impl Drop for Repartition {
    /// Stops the forward with the query. What it forwarded since its last commit is forwarded
    /// again by whoever reads the source next, and dropped as counted already.
    fn drop(&mut self) {
        self.forward.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_connector::Position;

    fn forwarded(partition: i32, upstream: (i32, i64)) -> Message {
        Message {
            key: None,
            payload: Vec::new(),
            no_value: false,
            timestamp_ms: None,
            position: Position {
                partition,
                offset: 0,
            },
            origin: String::new(),
            upstream: Some(Position {
                partition: upstream.0,
                offset: upstream.1,
            }),
        }
    }

    #[test]
    fn messages_forwarded_twice_are_counted_once() {
        let dedupe = Dedupe::default();
        let mut first = vec![
            forwarded(0, (1, 5)),
            forwarded(0, (2, 9)),
            forwarded(0, (1, 6)),
        ];
        dedupe.retain(&mut first);
        assert_eq!(first.len(), 3);
        // The forward ran again from offset 5 of partition 1, after a crash.
        let mut again = vec![
            forwarded(0, (1, 5)),
            forwarded(0, (1, 6)),
            forwarded(0, (1, 7)),
        ];
        dedupe.retain(&mut again);
        let kept: Vec<_> = again.iter().map(|m| m.upstream.unwrap().offset).collect();
        assert_eq!(kept, [7]);
        assert_eq!(dedupe.of(0), BTreeMap::from([(1, 8), (2, 10)]));
        // Another partition's record of what it counted is its own.
        let mut other = vec![forwarded(3, (1, 5))];
        dedupe.retain(&mut other);
        assert_eq!(other.len(), 1);
        // A restored partition's reading starts where its checkpoint says; forgotten with it.
        dedupe.set(3, BTreeMap::new(), Some(40));
        assert_eq!(dedupe.start(3), Some(40));
        dedupe.forget(3);
        assert_eq!(dedupe.start(3), None);
    }

    /// Messages of partition `p` at `offsets`.
    fn at(p: i32, offsets: &[i64]) -> Vec<Message> {
        offsets
            .iter()
            .map(|&o| {
                let mut m = forwarded(p, (0, o));
                m.position.offset = o;
                m
            })
            .collect()
    }

    fn offsets(messages: &[Message]) -> Vec<(i32, i64)> {
        messages
            .iter()
            .map(|m| (m.position.partition, m.position.offset))
            .collect()
    }

    #[test]
    fn a_gap_in_a_partition_is_read_again_until_it_fills() {
        let mut holes = Holes::new(Duration::from_secs(60));
        let expected = |p: i32| (p == 0).then_some(5);
        // Offset 7 of partition 0 is not visible yet; partition 1 has no offset expected.
        let mut read = [at(0, &[5, 6, 8, 9]), at(1, &[3, 4])].concat();
        assert_eq!(holes.cut(&mut read, expected, "cars"), [(0, 7)]);
        assert_eq!(offsets(&read), [(0, 5), (0, 6), (1, 3), (1, 4)]);
        // Read again from 7 while the gap is still there: nothing more of partition 0.
        let mut read = at(0, &[8]);
        assert_eq!(holes.cut(&mut read, |_| Some(7), "cars"), [(0, 7)]);
        assert!(read.is_empty());
        // Filled.
        let mut read = at(0, &[7, 8, 9]);
        assert!(holes.cut(&mut read, |_| Some(7), "cars").is_empty());
        assert_eq!(read.len(), 3);
        assert!(holes.waiting.is_empty());
        // A partition read again from an earlier offset has no gap.
        let mut read = at(0, &[2, 3]);
        assert!(holes.cut(&mut read, |_| Some(10), "cars").is_empty());
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn a_gap_that_never_fills_is_passed_over() {
        let mut holes = Holes::new(Duration::ZERO);
        let mut read = at(2, &[4, 9]);
        assert!(holes.cut(&mut read, |_| Some(4), "cars").is_empty());
        assert_eq!(offsets(&read), [(2, 4), (2, 9)]);
        assert!(holes.waiting.is_empty());
    }

    #[test]
    fn a_forwarded_message_is_said_to_come_from_its_source() {
        let mut messages = vec![forwarded(2, (1, 41))];
        name_origins("cars", &mut messages);
        assert_eq!(messages[0].origin, "cars[1]@41");
    }

    #[test]
    fn a_group_hashes_to_the_same_partition_in_every_process() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
