//! What a running query reads: a log in memory, a connector's messages, or the generator.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::SchemaRef;
use eddy_connector::Source;
use eddy_generator::Generator;

use crate::format::json::BadEvent;
use crate::format::ValueDecoder;
use crate::join_order::Pending;
use crate::log::Log;
use crate::Result;

/// One step's worth of input.
pub(crate) struct InputBatch {
    /// Decoded rows in the stream's schema; may be empty.
    pub batch: RecordBatch,
    /// Messages that could not be decoded.
    pub bad: Vec<BadEvent>,
    /// Per partition, the offset of the first message in this step (for commit holds).
    pub first: BTreeMap<i32, i64>,
    /// Which input of a stream–stream join it came from: 0 (left, and every other query's
    /// input) or 1 (right).
    pub side: usize,
    /// The one partition all its messages came from, when the input is split by partition.
    pub partition: Option<i32>,
    /// A stream's records without a value (Kafka's null value), kept out of `batch`.
    pub nulls: Option<NullValues>,
    /// For each row of `batch`, the partition and offset of its message, when read from a
    /// source with offsets: where a join that processes part of a step resumes.
    pub rows_from: Option<Vec<(i32, i64)>>,
}

/// A stream's records without a value, decoded as rows of their key (if the stream has key
/// columns) and NULLs. ksqlDB drops them from filters, aggregations and joins, and a projection
/// passes each on as a record without a value.
pub(crate) struct NullValues {
    /// The rows, in the stream's schema.
    pub rows: RecordBatch,
    /// For each row, how many rows of the step's `batch` came before it.
    pub at: Vec<usize>,
}

impl InputBatch {
    /// Whether nothing at all arrived.
    pub(crate) fn is_idle(&self) -> bool {
        self.batch.num_rows() == 0 && self.bad.is_empty() && self.nulls.is_none()
    }
}

/// Decodes a stream's `messages`, those without a value apart (see [`NullValues`]).
fn decode_apart(
    decoder: &ValueDecoder,
    messages: Vec<eddy_connector::Message>,
) -> (RecordBatch, Vec<BadEvent>, Option<NullValues>) {
    if messages.iter().all(|m| !m.no_value) {
        let (batch, bad) = decoder.decode(&messages);
        return (batch, bad, None);
    }
    let order: Vec<bool> = messages.iter().map(|m| m.no_value).collect();
    let (nulls, values): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.no_value);
    let (batch, mut bad) = decoder.decode(&values);
    let (rows, null_bad) = decoder.decode_null_values(&nulls);
    // Where each null goes among the rows: after the values before it that decoded.
    let failed: HashSet<&str> = bad.iter().map(|b| b.origin.as_str()).collect();
    let null_failed: HashSet<&str> = null_bad.iter().map(|b| b.origin.as_str()).collect();
    let (mut values_seen, mut nulls_seen, mut good) = (0, 0, 0);
    let mut at = Vec::with_capacity(rows.num_rows());
    for is_null in order {
        if is_null {
            if !null_failed.contains(nulls[nulls_seen].origin.as_str()) {
                at.push(good);
            }
            nulls_seen += 1;
        } else {
            if !failed.contains(values[values_seen].origin.as_str()) {
                good += 1;
            }
            values_seen += 1;
        }
    }
    bad.extend(null_bad);
    (batch, bad, Some(NullValues { rows, at }))
}

/// Each decoded row's partition and offset: the messages in order, less those kept apart
/// (without a value) and those that failed to decode. `None` if that does not account for
/// every row.
fn rows_from(
    messages: &[(eddy_connector::Position, bool, String)],
    bad: &[BadEvent],
    rows: usize,
) -> Option<Vec<(i32, i64)>> {
    let failed: HashSet<&str> = bad.iter().map(|b| b.origin.as_str()).collect();
    let from: Vec<(i32, i64)> = messages
        .iter()
        .filter(|(_, apart, origin)| !apart && !failed.contains(origin.as_str()))
        .map(|(p, _, _)| (p.partition, p.offset))
        .collect();
    (from.len() == rows).then_some(from)
}

/// A query's input.
pub(crate) enum Input {
    /// A stream kept in memory.
    Memory {
        /// The log.
        log: Arc<Log>,
        /// Next position to read.
        next: u64,
    },
    /// A connector's messages, decoded from their value format.
    Source {
        /// The source.
        source: Box<dyn Source>,
        /// The decoder for the stream's schema.
        decoder: ValueDecoder,
        /// Per partition, the offset after the last message read.
        next: BTreeMap<i32, i64>,
        /// Whether commits may stay behind open windows. Kafka keeps messages for a replay;
        /// an MQTT broker stops delivering once too many are unacknowledged, so there a
        /// window's events are acknowledged as soon as they are read.
        hold: bool,
        /// Whether each step holds one partition's messages only (state kept per partition).
        split: bool,
        /// Messages fetched for later steps of a split input, by partition in fetch order.
        later: Vec<eddy_connector::Message>,
        /// When the source is a repartition topic: what fills it, and what was counted.
        repartition: Option<Box<crate::repartition::Repartition>>,
        /// Whether records without a value are a stream's (kept apart, see [`NullValues`]),
        /// not a table's deletions.
        nulls_apart: bool,
        /// Whether steps say where each row came from ([`InputBatch::rows_from`]): a join's
        /// inputs, which may process part of a step.
        positions: bool,
    },
    /// The built-in car-sensor generator.
    Generator {
        /// The events.
        generator: Box<Generator>,
        /// Events per second, or as fast as possible.
        rate: Option<f64>,
        /// When it started, to keep the rate.
        started: Instant,
        /// Events emitted so far.
        emitted: u64,
        /// Schema with `rowtime`.
        schema: SchemaRef,
        /// A batch generated but not yet due.
        pending: Option<RecordBatch>,
    },
    /// A join's two inputs (two streams, or two tables), read in event-time order (see
    /// [`crate::join_order`]); each step says which it came from.
    Join {
        /// The left and right inputs.
        sides: Box<[Input; 2]>,
        /// Their schemas.
        schemas: [SchemaRef; 2],
        /// Which side is asked first next time, so a busy side cannot starve the other.
        turn: usize,
        /// Which sides have ended.
        ended: [bool; 2],
        /// Each side's step read and not yet processed in full.
        pending: Box<[Option<Pending>; 2]>,
        /// When reading began: a side that cannot yet tell whether it lags is waited for
        /// only during the first [`JOIN_WAIT`].
        started: Instant,
    },
}

impl Input {
    /// The next step of input, waiting at most `wait` for it; `None` when the input has ended.
    pub(crate) async fn next(
        &mut self,
        schema: &SchemaRef,
        max: usize,
        wait: Duration,
    ) -> Result<Option<InputBatch>> {
        let empty = |schema: &SchemaRef| InputBatch {
            batch: RecordBatch::new_empty(schema.clone()),
            bad: Vec::new(),
            first: BTreeMap::new(),
            side: 0,
            partition: None,
            nulls: None,
            rows_from: None,
        };
        match self {
            Input::Memory { log, next } => {
                let mut read = log.read(*next, 64);
                if read.batches.is_empty() {
                    let _ = tokio::time::timeout(wait, log.wait_beyond(*next)).await;
                    read = log.read(*next, 64);
                }
                if read.missed_rows > 0 {
                    tracing::warn!(
                        missed = read.missed_rows,
                        "a reader fell behind the in-memory log's retention"
                    );
                }
                *next = read.next;
                if read.batches.is_empty() {
                    return Ok(Some(empty(schema)));
                }
                let batch = arrow::compute::concat_batches(schema, &read.batches)?;
                Ok(Some(InputBatch {
                    batch,
                    bad: Vec::new(),
                    first: BTreeMap::new(),
                    side: 0,
                    partition: None,
                    nulls: None,
                    rows_from: None,
                }))
            }
            Input::Source {
                source,
                decoder,
                next,
                split,
                later,
                repartition,
                nulls_apart,
                positions,
                ..
            } => {
                if let Some(failure) = repartition.as_ref().and_then(|r| r.failure()) {
                    return Err(crate::Error::Connector(eddy_connector::Error::Io(format!(
                        "forwarding to the repartition topic: {failure}"
                    ))));
                }
                let messages = if later.is_empty() {
                    let Some(mut messages) = source.poll(max, wait).await? else {
                        return Ok(None);
                    };
                    if *split {
                        // Stable: each partition's messages keep their order.
                        messages.sort_by_key(|m| m.position.partition);
                        *later = messages;
                        one_partition(later)
                    } else {
                        messages
                    }
                } else {
                    one_partition(later)
                };
                let mut messages = messages;
                if let Some(r) = repartition.as_mut() {
                    let cut = r.cut_at_holes(&mut messages, next);
                    for &(p, offset) in &cut {
                        source.seek(p, offset)?;
                    }
                    if !cut.is_empty() && messages.is_empty() {
                        // The gap is a batch being written: give it a moment.
                        tokio::time::sleep(HOLE_RETRY).await;
                    }
                }
                let partition = (*split)
                    .then(|| messages.first().map(|m| m.position.partition))
                    .flatten();
                let mut first = BTreeMap::new();
                for m in &messages {
                    first
                        .entry(m.position.partition)
                        .or_insert(m.position.offset);
                    next.insert(m.position.partition, m.position.offset + 1);
                }
                if let Some(r) = repartition {
                    r.retain(&mut messages);
                }
                // Only a join needs them: an origin is a string to copy per message.
                let placed: Option<Vec<(eddy_connector::Position, bool, String)>> =
                    positions.then(|| {
                        messages
                            .iter()
                            .map(|m| (m.position, m.no_value && *nulls_apart, m.origin.clone()))
                            .collect()
                    });
                let (batch, bad, nulls) = if *nulls_apart {
                    decode_apart(decoder, messages)
                } else {
                    let (batch, bad) = decoder.decode(&messages);
                    (batch, bad, None)
                };
                let rows_from = placed.and_then(|p| rows_from(&p, &bad, batch.num_rows()));
                Ok(Some(InputBatch {
                    batch,
                    bad,
                    first,
                    side: 0,
                    partition,
                    nulls,
                    rows_from,
                }))
            }
            Input::Join {
                sides,
                schemas,
                turn,
                ended,
                pending,
                started,
            } => {
                let first = *turn;
                *turn = 1 - first;
                // What each side has now, without waiting.
                for side in [first, 1 - first] {
                    fill(sides, schemas, ended, pending, side, max, Duration::ZERO).await?;
                }
                if pending.iter().all(Option::is_none) {
                    let side = if ended[1 - first] { first } else { 1 - first };
                    fill(sides, schemas, ended, pending, side, max, wait).await?;
                }
                // A side with nothing read may still hold earlier events than the other's:
                // wait for it while it is known to lag, or cannot tell yet.
                let lags = |side: &Input| match side.may_have_more() {
                    Some(more) => more,
                    None => started.elapsed() < JOIN_WAIT,
                };
                for side in [first, 1 - first] {
                    if pending[side].is_none() && pending[1 - side].is_some() && lags(&sides[side])
                    {
                        fill(sides, schemas, ended, pending, side, max, wait).await?;
                    }
                }
                // Still nothing from it: the other side's step waits, for a while at most.
                for side in [0, 1] {
                    let held = pending[1 - side]
                        .as_ref()
                        .is_some_and(|p| p.read_at.elapsed() < JOIN_WAIT);
                    if held && pending[side].is_none() && !ended[side] && lags(&sides[side]) {
                        return Ok(Some(empty(&schemas[0])));
                    }
                }
                let (side, n) = match (&pending[0], &pending[1]) {
                    (None, None) if ended.iter().all(|e| *e) => return Ok(None),
                    (None, None) => return Ok(Some(empty(&schemas[0]))),
                    (Some(left), Some(right)) => {
                        crate::join_order::next_of([&left.step, &right.step])
                    }
                    (Some(p), None) | (None, Some(p)) => (p.step.side, p.step.batch.num_rows()),
                };
                let Some(p) = pending[side].as_mut() else {
                    unreachable!("the side chosen has a step")
                };
                if n >= p.step.batch.num_rows() {
                    return Ok(pending[side].take().map(|p| p.step));
                }
                Ok(Some(crate::join_order::take(&mut p.step, n)))
            }
            Input::Generator {
                generator,
                rate,
                started,
                emitted,
                schema: with_rowtime,
                pending,
            } => {
                let batch = match pending.take() {
                    Some(b) => b,
                    None => match generator.next() {
                        Some(b) => b,
                        None => return Ok(None),
                    },
                };
                if let Some(rate) = rate {
                    let due = started.elapsed().as_secs_f64() * *rate;
                    let after = (*emitted + batch.num_rows() as u64) as f64;
                    if after > due {
                        let sleep = Duration::from_secs_f64((after - due) / *rate);
                        if sleep > wait {
                            tokio::time::sleep(wait).await;
                            *pending = Some(batch);
                            return Ok(Some(empty(with_rowtime)));
                        }
                        tokio::time::sleep(sleep).await;
                    }
                }
                *emitted += batch.num_rows() as u64;
                let times = batch
                    .column_by_name("timestamp")
                    .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
                    .cloned()
                    .expect("the generator stamps its events");
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(times));
                Ok(Some(InputBatch {
                    batch: RecordBatch::try_new(with_rowtime.clone(), columns)?,
                    bad: Vec::new(),
                    first: BTreeMap::new(),
                    side: 0,
                    partition: None,
                    nulls: None,
                    rows_from: None,
                }))
            }
        }
    }

    /// Records that everything before `next` (per partition, capped by `hold`) is done.
    pub(crate) async fn commit(&mut self, hold: &BTreeMap<i32, i64>) -> Result<()> {
        if let Input::Join { sides, pending, .. } = self {
            // A join's holds are not tracked per side: each commits what it has processed.
            for (side, pending) in sides.iter_mut().zip(pending.iter()) {
                let hold = pending.as_ref().map(|p| p.step.first.clone());
                Box::pin(side.commit(&hold.unwrap_or_default())).await?;
            }
            return Ok(());
        }
        if let Input::Source {
            source,
            next,
            hold: may_hold,
            ..
        } = self
        {
            if next.is_empty() {
                return Ok(());
            }
            let upto: BTreeMap<i32, i64> = next
                .iter()
                .map(|(p, o)| match hold.get(p) {
                    Some(h) if *may_hold => (*p, (*h).min(*o)),
                    _ => (*p, *o),
                })
                .collect();
            tracing::debug!(?upto, "committing");
            source.commit(&upto).await?;
        }
        Ok(())
    }

    /// Whether it reads a source with offsets to resume from (Kafka, MQTT): the inputs whose
    /// state a checkpoint can carry over a restart.
    pub(crate) fn resumable(&self) -> bool {
        match self {
            Input::Source { .. } => true,
            Input::Join { sides, .. } => sides.iter().all(Input::resumable),
            _ => false,
        }
    }

    /// Per partition, the offset after the last message read: for a stream–stream join, the
    /// left side's, then the right side's.
    pub(crate) fn checkpoint_offsets(&self) -> (BTreeMap<i32, i64>, Option<BTreeMap<i32, i64>>) {
        match self {
            Input::Join { sides, pending, .. } => {
                let processed = |side: usize| {
                    let mut offsets = sides[side].offsets();
                    for (p, o) in pending[side].iter().flat_map(|p| &p.step.first) {
                        offsets.entry(*p).and_modify(|next| *next = (*next).min(*o));
                    }
                    offsets
                };
                (processed(0), Some(processed(1)))
            }
            _ => (self.offsets(), None),
        }
    }

    /// Continues from a checkpoint's offsets ([`Input::checkpoint_offsets`]).
    pub(crate) fn resume_sides(
        &mut self,
        offsets: &BTreeMap<i32, i64>,
        right: Option<&BTreeMap<i32, i64>>,
    ) {
        match self {
            Input::Join { sides, .. } => {
                sides[0].resume(offsets);
                if let Some(right) = right {
                    sides[1].resume(right);
                }
            }
            _ => self.resume(offsets),
        }
    }

    /// Per partition, the offset after the last message read.
    pub(crate) fn offsets(&self) -> BTreeMap<i32, i64> {
        match self {
            Input::Source { next, .. } => next.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// Has its source tell `hook` when partitions move (Kafka's consumer group).
    pub(crate) fn watch_partitions(&mut self, hook: Arc<dyn eddy_connector::PartitionHook>) {
        if let Input::Source { source, .. } = self {
            source.watch_partitions(hook);
        }
    }

    /// Per source it reads (one, or a stream–stream join's two), the offset after the last
    /// message read of each partition.
    pub(crate) fn offsets_each(&self) -> Vec<BTreeMap<i32, i64>> {
        match self {
            Input::Source { next, .. } => vec![next.clone()],
            Input::Join { sides, .. } => sides.iter().flat_map(|s| s.offsets_each()).collect(),
            _ => Vec::new(),
        }
    }

    /// Has each source it reads tell the matching one of `hooks` (as [`Input::offsets_each`]
    /// orders them) when partitions move.
    pub(crate) fn watch_each(&mut self, hooks: &[Arc<crate::progress::Progress>]) {
        match self {
            Input::Source { source, .. } => {
                if let Some(hook) = hooks.first() {
                    source.watch_partitions(hook.clone());
                }
            }
            Input::Join { sides, .. } => {
                for (side, hook) in sides.iter_mut().zip(hooks) {
                    side.watch_partitions(hook.clone());
                }
            }
            _ => {}
        }
    }

    /// What a repartitioned input's state has counted, shared with that state.
    pub(crate) fn dedupe(&self) -> Option<Arc<crate::repartition::Dedupe>> {
        match self {
            Input::Source {
                repartition: Some(r),
                ..
            } => Some(r.dedupe.clone()),
            _ => None,
        }
    }

    /// Makes each step say where each of its rows came from (a join's input).
    pub(crate) fn keep_positions(&mut self) {
        if let Input::Source { positions, .. } = self {
            *positions = true;
        }
    }

    /// Makes each step hold one partition's messages, so a query can keep state per partition.
    pub(crate) fn split_partitions(&mut self) {
        if let Input::Source { split, .. } = self {
            *split = true;
        }
    }

    /// Forgets partition `p`, which the query no longer owns: its offset is not committed.
    pub(crate) fn forget_partition(&mut self, p: i32) {
        if let Input::Source { next, later, .. } = self {
            next.remove(&p);
            later.retain(|m| m.position.partition != p);
        }
    }

    /// Sets where partition `p`, just restored, starts: the offset of its next message. If a
    /// step already read messages of it (they follow the checkpoint, and are processed on the
    /// restored state next), their offsets stand: going back would checkpoint their counts
    /// with an offset before them, and a later restore would count them twice.
    pub(crate) fn start_partition_at(&mut self, p: i32, offset: i64) {
        if let Input::Source { next, .. } = self {
            next.entry(p).or_insert(offset);
        }
    }

    /// Continues from `offsets` (a checkpoint's) rather than from the last commit.
    pub(crate) fn resume(&mut self, offsets: &BTreeMap<i32, i64>) {
        if let Input::Source { source, next, .. } = self {
            source.resume_from(offsets);
            // Partitions that see no message before the next checkpoint keep their offset.
            *next = offsets.clone();
        }
    }

    /// Messages waiting beyond what was read (Kafka consumer lag; the log's unread batches for
    /// memory), if known.
    pub(crate) fn lag(&self) -> Option<u64> {
        match self {
            Input::Source { source, .. } => source.lag(),
            Input::Memory { log, next } => Some(log.end().saturating_sub(*next)),
            Input::Generator { .. } => None,
            Input::Join { sides, .. } => sides.iter().map(|s| s.lag()).sum(),
        }
    }

    /// For each in-memory log it reads, the position it reads next (in the order of
    /// [`Input::memory_logs`]).
    pub(crate) fn memory_positions(&self) -> Vec<u64> {
        match self {
            Input::Memory { next, .. } => vec![*next],
            Input::Join { sides, pending, .. } => sides
                .iter()
                .zip(pending.iter())
                .flat_map(|(s, p)| match p {
                    Some(p) => p.memory_from.clone(),
                    None => s.memory_positions(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether messages are known to wait beyond what was read; `None` while it cannot tell
    /// (see [`eddy_connector::Source::may_have_more`]).
    pub(crate) fn may_have_more(&self) -> Option<bool> {
        match self {
            Input::Source { source, .. } => source.may_have_more(),
            Input::Memory { log, next } => Some(log.end() > *next),
            Input::Generator { .. } => Some(true),
            Input::Join { sides, pending, .. } => {
                if pending.iter().any(Option::is_some) {
                    return Some(true);
                }
                let [left, right] = [&sides[0], &sides[1]].map(|s| s.may_have_more());
                match (left, right) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }
            }
        }
    }

    /// The in-memory logs it reads: what `settle` waits on.
    pub(crate) fn memory_logs(&self) -> Vec<Arc<Log>> {
        match self {
            Input::Memory { log, .. } => vec![log.clone()],
            Input::Join { sides, .. } => sides.iter().flat_map(|s| s.memory_logs()).collect(),
            _ => Vec::new(),
        }
    }
}

/// How long a join waits for a side that cannot yet tell whether it lags, from its start (a
/// consumer still joining its group; MQTT, which never can), and how long a step read from one
/// side waits at most for a lagging other side to deliver.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// How long a read of a repartition topic that stopped at a gap waits before reading again.
const HOLE_RETRY: Duration = Duration::from_millis(10);

/// Reads side `side` of a join into `pending`, if nothing of it is pending and it has not
/// ended, waiting at most `wait`. What it read is kept at once, so a cancelled call loses
/// nothing.
async fn fill(
    sides: &mut [Input; 2],
    schemas: &[SchemaRef; 2],
    ended: &mut [bool; 2],
    pending: &mut [Option<Pending>; 2],
    side: usize,
    max: usize,
    wait: Duration,
) -> Result<()> {
    if pending[side].is_some() || ended[side] {
        return Ok(());
    }
    let memory_from = sides[side].memory_positions();
    match Box::pin(sides[side].next(&schemas[side], max, wait)).await? {
        None => ended[side] = true,
        Some(step) if step.is_idle() => {}
        Some(mut step) => {
            step.side = side;
            pending[side] = Some(Pending {
                step,
                memory_from,
                read_at: Instant::now(),
            });
        }
    }
    Ok(())
}

/// The leading run of `messages` from one partition, taken out of it.
fn one_partition(messages: &mut Vec<eddy_connector::Message>) -> Vec<eddy_connector::Message> {
    let Some(first) = messages.first().map(|m| m.position.partition) else {
        return Vec::new();
    };
    let n = messages
        .iter()
        .take_while(|m| m.position.partition == first)
        .count();
    messages.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_connector::{Message, Position};

    #[test]
    fn a_split_input_serves_one_partition_at_a_time_in_order() {
        let message = |partition, offset| Message {
            key: None,
            payload: Vec::new(),
            no_value: false,
            timestamp_ms: None,
            position: Position { partition, offset },
            origin: String::new(),
            upstream: None,
        };
        let mut fetched = vec![message(1, 5), message(0, 7), message(1, 6), message(0, 8)];
        fetched.sort_by_key(|m| m.position.partition);
        let taken = |ms: Vec<Message>| -> Vec<(i32, i64)> {
            ms.iter()
                .map(|m| (m.position.partition, m.position.offset))
                .collect()
        };
        assert_eq!(taken(one_partition(&mut fetched)), [(0, 7), (0, 8)]);
        assert_eq!(taken(one_partition(&mut fetched)), [(1, 5), (1, 6)]);
        assert!(one_partition(&mut fetched).is_empty());
    }
}
