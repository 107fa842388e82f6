//! A query's task: reads its input, runs its plans, writes its outputs, checkpoints and commits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use eddy_connector::Sink;
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{Checkpoint, QueryState};
use crate::format::common::latest_rowtime;
use crate::format::records::StreamRecords;
use crate::input::Input;
use crate::log::Log;
use crate::pipeline::{Histogram, Processor};
use crate::provider::TableState;
use crate::Result;

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) events_in: AtomicU64,
    /// `u64::MAX` when the source cannot tell.
    pub(super) lag: AtomicU64,
    pub(super) rows_out: AtomicU64,
    pub(super) bad_events: AtomicU64,
    pub(super) late_events: AtomicU64,
    pub(super) failed_events: AtomicU64,
    pub(super) batch_duration: Histogram,
    pub(super) last_error: Mutex<Option<String>>,
    /// For a query over in-memory streams: per stream read (two for a stream–stream join), the
    /// log position up to which input is processed and its output written.
    pub(super) positions: [AtomicU64; 2],
    pub(super) finished: AtomicBool,
}

impl Stats {
    pub(super) fn error(&self, message: String) {
        *self.last_error.lock().expect("stats lock") = Some(message);
    }
}

/// What a query does when a batch fails (a UDF traps, a cast fails): `WITH (on_error=…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnError {
    /// Find the failing rows by splitting the batch, skip and count them (and dead-letter them
    /// when the source has a dead-letter topic); the other rows go through. The default.
    Skip,
    /// Stop the query, keeping the error in `SHOW QUERIES`.
    Fail,
}

/// Runs `batch`; when it fails, isolates the failing rows by bisection (stateless queries; an
/// aggregation skips the whole batch). Returns the output, the failed rows with their
/// reasons, and the error that stops the query under `on_error='fail'`.
pub(super) async fn process_isolating(
    processor: &mut Processor,
    ctx: &SessionContext,
    (batch, side): (RecordBatch, usize),
    first: &BTreeMap<i32, i64>,
    on_error: OnError,
) -> (Vec<RecordBatch>, Vec<(RecordBatch, String)>, Option<String>) {
    let mut out = Vec::new();
    let mut failed = Vec::new();
    let mut pending = vec![batch];
    while let Some(piece) = pending.pop() {
        match processor.process(ctx, piece.clone(), side, first).await {
            Ok(o) => out.extend(o),
            Err(e) if on_error == OnError::Fail => return (out, failed, Some(e.to_string())),
            Err(e) if piece.num_rows() <= 1 || processor.is_stateful() => {
                failed.push((piece, e.to_string()))
            }
            Err(_) => {
                // Halves go back on the stack second-half first, so rows keep their order.
                let half = piece.num_rows() / 2;
                pending.push(piece.slice(half, piece.num_rows() - half));
                pending.push(piece.slice(0, half));
            }
        }
    }
    (out, failed, None)
}

/// `batch` (visible columns, key columns, tombstone flag) with every row a tombstone.
fn all_deleted(batch: RecordBatch) -> crate::Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    let last = columns.len() - 1;
    columns[last] = Arc::new(arrow::array::BooleanArray::from(vec![
        true;
        batch.num_rows()
    ]));
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// `batch` with the `rowtime` of its `visible` columns (the last of them) taken from column
/// `timestamp`; the hidden key columns after them stay as they are.
fn rowtime_from_column(
    batch: RecordBatch,
    visible: usize,
    timestamp: usize,
) -> crate::Result<RecordBatch> {
    if visible >= batch.num_columns() {
        return crate::format::common::rowtime_from(batch, timestamp);
    }
    let shown = batch.project(&(0..visible).collect::<Vec<_>>())?;
    let shown = crate::format::common::rowtime_from(shown, timestamp)?;
    let mut columns = shown.columns().to_vec();
    columns.extend_from_slice(&batch.columns()[visible..]);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[derive(Default)]
pub(super) struct TaskOutput {
    /// Push queries show `rowtime` only when the query selected it.
    pub(super) strip_rowtime: bool,
    pub(super) log: Option<Arc<Log>>,
    pub(super) sink: Option<Box<dyn Sink>>,
    /// How rows are written to `sink`: in the value format, and keyed as the target stream is
    /// when they go into an existing one (`INSERT INTO … SELECT`). The default, JSON without a
    /// key, serves outputs without a sink.
    pub(super) encoding: StreamRecords,
    pub(super) channel: Option<mpsc::Sender<RecordBatch>>,
    /// The table an aggregation keeps: the latest row per group.
    pub(super) table: Option<Arc<TableState>>,
    /// How a table's changes are written to `sink`: keyed, with tombstones, the values in
    /// `encoding`'s value format.
    pub(super) records: Option<crate::changes::TableRecords>,
    /// The schema rows take before they are written: an existing stream's, whose column names
    /// the query's rows may spell differently.
    pub(super) conform: Option<SchemaRef>,
    /// The column whose value becomes each row's `rowtime` (`WITH (timestamp=…)` on a query).
    pub(super) event_time: Option<usize>,
    /// Whether a stream's records without a value become records without a value in `sink`,
    /// as a ksqlDB projection writes them (see [`crate::input::NullValues`]).
    pub(super) null_values: bool,
    /// Whether an aggregation writes its changes after each input record rather than once per
    /// key per step: ksqlDB's `cache.max.bytes.buffering` set to 0.
    pub(super) each_record: bool,
    /// For a table whose log carries deletions: each visible key column, and the group column
    /// it shows (see [`crate::changes::Changes::logged`]).
    pub(super) log_keys: Vec<(usize, usize)>,
}

pub(super) struct Task {
    pub(super) id: String,
    /// For a query over a stream: the tables it joins, whose filling it waits for.
    pub(super) joined_tables: Vec<JoinedTable>,
    pub(super) on_error: OnError,
    pub(super) input: Input,
    pub(super) input_schema: SchemaRef,
    pub(super) processor: Option<Processor>,
    pub(super) table: Option<Arc<TableState>>,
    pub(super) output: TaskOutput,
    pub(super) dead: Option<Box<dyn Sink>>,
    pub(super) ctx: SessionContext,
    pub(super) stats: Arc<Stats>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) commit_interval: Duration,
    pub(super) max_batch: usize,
    pub(super) limit: Option<usize>,
    /// Where it checkpoints its state at each commit, if it does.
    pub(super) state: Option<QueryState>,
    /// For a stateful query over Kafka (an aggregation, a stream–stream join): per source, how
    /// far it has read, where partitions the consumer group hands back resume.
    pub(super) progress: Vec<Arc<crate::progress::Progress>>,
    /// For an aggregation keeping its state per input partition: the partitions' processors
    /// and checkpoints.
    pub(super) partitioned: Option<super::partitioned::Partitioned>,
}

/// A table a stream query joins, and whether the join was told it stalled.
pub(super) struct JoinedTable {
    pub(super) name: String,
    pub(super) state: Arc<TableState>,
    pub(super) warned: bool,
}

impl Task {
    /// The table this task fills, if any: a table read from outside, or a query's output
    /// table (see `table_fill`).
    pub(super) fn fills(&self) -> Option<&Arc<TableState>> {
        self.table.as_ref().or(self.output.table.as_ref())
    }

    pub(super) async fn run(mut self) {
        let started = Instant::now();
        let fills = self.fills().cloned();
        let mut last_commit = Instant::now();
        let mut dirty = false;
        let mut sent = 0usize;
        loop {
            if *self.stop.borrow() {
                break;
            }
            // A push query whose client went away ends now, not when its next row finds the
            // channel closed: an idle stream would keep it in SHOW QUERIES forever.
            if self.output.channel.as_ref().is_some_and(|c| c.is_closed()) {
                break;
            }
            // Everything read so far is processed and its output written: what `settle` waits on.
            for (slot, position) in self
                .stats
                .positions
                .iter()
                .zip(self.input.memory_positions())
            {
                slot.store(position, Ordering::SeqCst);
            }
            let step = tokio::select! {
                _ = self.stop.changed() => break,
                step = self.input.next(&self.input_schema, self.max_batch, Duration::from_millis(100)) => step,
            };
            let step = match step {
                Ok(Some(step)) => step,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(query = %self.id, "input failed: {e}");
                    self.stats.error(format!("input: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let offsets = self.input.offsets_each();
            let shared = self
                .progress
                .iter()
                .zip(&offsets)
                .find_map(|(progress, next)| {
                    progress.record(next);
                    progress.shared()
                });
            if let Some(shared) = shared {
                let why = if self.processor.as_ref().is_some_and(|p| p.is_aggregate()) {
                    "Its GROUP BY is not its source's KEY and it is not repartitioned, so its \
                     state cannot be split by partition: run it in one process per service id, \
                     or give it durable state (--state-dir), with which an aggregation over its \
                     source's own columns is repartitioned"
                } else {
                    "A stream–stream join keeps one state over both streams: run it in one \
                     process per service id"
                };
                let e = format!(
                    "another process of this service id runs query {} and holds the other \
                     partitions of its topic (this one got {:?} of {}). {why}",
                    self.id, shared.got, shared.of
                );
                tracing::error!(query = %self.id, "query stopped: {e}");
                self.stats.error(format!("query stopped: {e}"));
                break;
            }
            if let Some(parts) = &mut self.partitioned {
                let synced = parts
                    .sync(
                        &mut self.processor,
                        &mut self.input,
                        self.output.table.as_deref(),
                        &self.ctx,
                    )
                    .await;
                if let Err(e) = synced {
                    tracing::error!(query = %self.id, "query stopped: {e}");
                    self.stats.error(format!("query stopped: {e}"));
                    break;
                }
                if let Some(p) = step.partition {
                    if !parts.activate(p, &mut self.processor) {
                        if parts.just_left(p) {
                            // Read just before the partition left: its next owner reads them.
                            continue;
                        }
                        // Every assignment is restored before its messages come: stop rather
                        // than commit past events no state counted.
                        let e = format!("messages of partition {p}, whose state is not here");
                        tracing::error!(query = %self.id, "query stopped: {e}");
                        self.stats.error(format!("query stopped: {e}"));
                        break;
                    }
                }
            }
            self.stats
                .lag
                .store(self.input.lag().unwrap_or(u64::MAX), Ordering::Relaxed);
            // What a table this task fills tells the joins that wait for it (`table_fill`):
            // a source that cannot tell whether more waits counts as read up once it had
            // time to join its consumer group.
            let filled_to = fills.as_ref().map(|_| {
                let caught_up = match self.input.may_have_more() {
                    Some(more) => !more,
                    None => started.elapsed() >= crate::table_fill::STALL,
                };
                (latest_rowtime(&step.batch), caught_up)
            });
            if step.is_idle() {
                if let (Some(table), Some((_, caught_up))) = (&fills, filled_to) {
                    table.filled.advanced(None, caught_up);
                }
                if dirty {
                    dirty = !self.commit().await;
                    last_commit = Instant::now();
                }
                continue;
            }
            dirty = true;
            let nulls = step.nulls.as_ref().map_or(0, |n| n.rows.num_rows());
            let events = step.batch.num_rows() + step.bad.len() + nulls;
            tracing::trace!(query = %self.id, events, "step");
            self.stats
                .events_in
                .fetch_add(events as u64, Ordering::Relaxed);
            if !step.bad.is_empty() {
                self.bad_events(step.bad).await;
            }
            if step.side == 0 && !self.joined_tables.is_empty() {
                if let Some(time) = latest_rowtime(&step.batch) {
                    self.wait_for_tables(time).await;
                }
            }
            if let Some(table) = &self.table {
                if let Err(e) = table.upsert(&step.batch) {
                    self.stats.error(e.to_string());
                }
                self.stats
                    .rows_out
                    .fetch_add(step.batch.num_rows() as u64, Ordering::Relaxed);
            } else if self.processor.is_some() {
                let mut stopped = false;
                for (batch, tombstones) in self.pieces(step.batch, step.nulls) {
                    let going = self
                        .process(batch, step.side, &step.first, tombstones, &mut sent)
                        .await;
                    if !going {
                        stopped = true;
                        break;
                    }
                }
                if stopped {
                    break;
                }
            }
            if let (Some(table), Some((read, caught_up))) = (&fills, filled_to) {
                table.filled.advanced(read, caught_up);
            }
            if last_commit.elapsed() >= self.commit_interval {
                dirty = !self.commit().await;
                last_commit = Instant::now();
            }
        }
        if dirty {
            self.commit().await;
        }
        if let Some(parts) = self.partitioned.take() {
            parts.close(&self.ctx, &self.processor);
        }
        // Its input ended (or it stopped): nothing more will come to wait for.
        if let Some(table) = &fills {
            table.filled.advanced(None, true);
        }
        self.stats.finished.store(true, Ordering::SeqCst);
    }

    /// Waits until every table the query joins has been filled up to event time `time`, or
    /// its filling query has not moved for [`crate::table_fill::STALL`] (then the join goes on
    /// with that table as it is, and says so once), or the query is stopped.
    async fn wait_for_tables(&mut self, time: i64) {
        loop {
            let mut waiting = false;
            for table in &mut self.joined_tables {
                let filled = &table.state.filled;
                if filled.ready_for(time) {
                    table.warned = false;
                } else if !filled.stalled() {
                    waiting = true;
                } else if !table.warned {
                    table.warned = true;
                    tracing::warn!(
                        query = %self.id,
                        "joining table '{}' as it is: it is filled up to event time {:?}, \
                         this step reaches {time}, and it has read nothing for {:?}",
                        table.name,
                        filled.read_to(),
                        crate::table_fill::STALL
                    );
                }
            }
            if !waiting {
                return;
            }
            tokio::select! {
                _ = self.stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    }

    /// The step's rows in their order, cut where a stream's records without a value came
    /// between them; the pieces of those are flagged. As in ksqlDB, only a projection passes
    /// them on (`output.null_values`): filters, aggregations and joins drop them.
    fn pieces(
        &self,
        batch: RecordBatch,
        nulls: Option<crate::input::NullValues>,
    ) -> Vec<(RecordBatch, bool)> {
        let aggregate = self.processor.as_ref().is_some_and(|p| p.is_aggregate());
        let once_per_key = self
            .processor
            .as_ref()
            .is_some_and(|p| p.writes_once_per_key());
        if once_per_key && self.output.each_record {
            return (0..batch.num_rows())
                .map(|i| (batch.slice(i, 1), false))
                .collect();
        }
        let passes = self.output.null_values && !aggregate;
        let Some(nulls) = nulls.filter(|_| passes) else {
            return vec![(batch, false)];
        };
        let mut pieces = Vec::new();
        let (mut from, mut i) = (0, 0);
        while i < nulls.at.len() {
            let at = nulls.at[i];
            if at > from {
                pieces.push((batch.slice(from, at - from), false));
                from = at;
            }
            let run = nulls.at[i..].iter().take_while(|&&a| a == at).count();
            pieces.push((nulls.rows.slice(i, run), true));
            i += run;
        }
        if from < batch.num_rows() {
            pieces.push((batch.slice(from, batch.num_rows() - from), false));
        }
        pieces
    }

    /// Runs one piece of a step through the query and writes what comes out; `tombstones` when
    /// the piece is a stream's records without a value, whose output rows are written as
    /// records without a value. False when the query must stop (`on_error='fail'`, or a push
    /// query past its `LIMIT` or without its reader).
    async fn process(
        &mut self,
        batch: RecordBatch,
        side: usize,
        first: &BTreeMap<i32, i64>,
        tombstones: bool,
        sent: &mut usize,
    ) -> bool {
        let started = Instant::now();
        let Some(processor) = &mut self.processor else {
            return true;
        };
        let (out, failed, fatal) =
            process_isolating(processor, &self.ctx, (batch, side), first, self.on_error).await;
        self.stats.batch_duration.observe(started.elapsed());
        let late = processor.late()
            + self
                .partitioned
                .as_ref()
                .map_or(0, |parts| parts.late_parked());
        self.stats.late_events.store(late, Ordering::Relaxed);
        let expired = processor.take_expired();
        if !failed.is_empty() {
            self.failed_rows(failed).await;
        }
        if let Some(e) = fatal {
            tracing::error!(query = %self.id, "query failed (on_error='fail'): {e}");
            self.stats
                .error(format!("query stopped (on_error='fail'): {e}"));
            return false;
        }
        if let (Some(cutoff), Some(table)) = (expired, &self.output.table) {
            if let Ok(end) = table.schema().index_of("windowend") {
                let expired = |row: &[ScalarValue]| match &row[end] {
                    ScalarValue::TimestampMillisecond(Some(t), _) => *t <= cutoff,
                    _ => false,
                };
                match &self.partitioned {
                    // Only this partition's windows have closed.
                    Some(parts) => table.retain_keys(|k| parts.owns(k), expired),
                    None => table.retain(expired),
                }
            }
        }
        let mut done = false;
        let visible = self
            .processor
            .as_ref()
            .map_or(usize::MAX, |p| p.schema().fields().len());
        for mut batch in out {
            // A push query shows a table's upserts, not its deletions: LIMIT counts
            // what it shows.
            if self.limit.is_some() && visible < batch.num_columns() {
                match crate::changes::without_deletions(batch) {
                    Ok(b) => batch = b,
                    Err(e) => {
                        self.stats.error(format!("output: {e}"));
                        continue;
                    }
                }
            }
            if let Some(limit) = self.limit {
                let left = limit - *sent;
                if batch.num_rows() >= left {
                    batch = batch.slice(0, left);
                    done = true;
                }
            }
            *sent += batch.num_rows();
            if !self.write(batch, tombstones).await {
                done = true;
            }
            if done {
                return false;
            }
        }
        true
    }

    /// Writes one output batch; false when the reader of a push query has gone. An
    /// aggregation's batch carries its group columns and tombstone flag after the visible ones:
    /// the table is upserted by group, and the other outputs get the rows that stand. With
    /// `tombstones`, every row is written to the sink as a record without a value (its key
    /// kept), and nowhere else.
    async fn write(&mut self, batch: RecordBatch, tombstones: bool) -> bool {
        if batch.num_rows() == 0 {
            return true;
        }
        let batch = match &self.output.conform {
            Some(schema) => match RecordBatch::try_new(schema.clone(), batch.columns().to_vec()) {
                Ok(b) => b,
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            },
            None => batch,
        };
        let visible = self
            .processor
            .as_ref()
            .map_or(batch.num_columns(), |p| p.schema().fields().len());
        let batch = match self.output.event_time {
            Some(column) => match rowtime_from_column(batch, visible, column) {
                Ok(b) => b,
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            },
            None => batch,
        };
        let batch = match tombstones && visible < batch.num_columns() {
            true => match all_deleted(batch) {
                Ok(b) => b,
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            },
            false => batch,
        };
        self.stats
            .rows_out
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let (batch, records) = if visible < batch.num_columns() {
            let changes = match crate::changes::split(&batch, visible) {
                Ok(c) => c,
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            };
            if let Some(table) = &self.output.table {
                if let Err(e) = table.apply(&changes) {
                    self.stats.error(format!("table: {e}"));
                }
                if let Some(parts) = &mut self.partitioned {
                    parts.track(&changes);
                }
            }
            let records = match (&self.output.sink, &self.output.records) {
                (Some(_), Some(layout)) => {
                    Some(layout.encode(&changes, &self.output.encoding.value))
                }
                _ => None,
            };
            if !self.output.log_keys.is_empty() {
                if let Some(log) = &self.output.log {
                    match changes.logged(&self.output.log_keys) {
                        Ok(b) => log.append(b),
                        Err(e) => self.stats.error(format!("output: {e}")),
                    }
                }
            }
            match changes.standing() {
                Ok(b) => (b, records),
                Err(e) => {
                    self.stats.error(format!("output: {e}"));
                    return true;
                }
            }
        } else {
            (batch, None)
        };
        if let Some(sink) = &mut self.output.sink {
            let mut records = records.unwrap_or_else(|| self.output.encoding.encode(&batch));
            if let (true, Ok(records)) = (tombstones, &mut records) {
                for record in records {
                    record.payload = None;
                }
            }
            match records {
                Ok(records) => {
                    if let Err(e) = sink.send(records).await {
                        tracing::warn!(query = %self.id, "sink failed: {e}");
                        self.stats.error(format!("sink: {e}"));
                    }
                }
                Err(e) => self.stats.error(format!("encoding: {e}")),
            }
        }
        // A stream in memory has no record without a value to hold.
        if batch.num_rows() == 0 || tombstones {
            return true;
        }
        if let (Some(log), true) = (&self.output.log, self.output.log_keys.is_empty()) {
            log.append(batch.clone());
        }
        if let Some(channel) = &self.output.channel {
            let mut batch = batch;
            if self.output.strip_rowtime {
                batch.remove_column(batch.num_columns() - 1);
            }
            return channel.send(batch).await.is_ok();
        }
        true
    }

    /// Writes the query's state, with the input offsets it reflects, as its newest checkpoint.
    pub(super) async fn checkpoint(&mut self) -> Result<()> {
        if let Some(parts) = &mut self.partitioned {
            return parts
                .checkpoint(
                    &mut self.processor,
                    self.input.offsets(),
                    self.output.table.as_deref(),
                )
                .await;
        }
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        let started = Instant::now();
        let (offsets, right) = self.input.checkpoint_offsets();
        let mut checkpoint = Checkpoint {
            offsets,
            ..Checkpoint::default()
        };
        if let Some(right) = right {
            checkpoint.set_right_offsets(&right);
        }
        if let Some(p) = &mut self.processor {
            p.save(&mut checkpoint)?;
        }
        if let Some(t) = self.output.table.as_ref().or(self.table.as_ref()) {
            t.save("table", &mut checkpoint)?;
        }
        state.save(&mut checkpoint).await?;
        tracing::debug!(query = %self.id, elapsed = ?started.elapsed(), "checkpointed");
        Ok(())
    }

    /// Flushes the sinks, then commits the input; false if anything failed (try again later).
    pub(super) async fn commit(&mut self) -> bool {
        tracing::debug!(query = %self.id, "flushing before commit");
        let flush_started = Instant::now();
        if let Some(sink) = &mut self.output.sink {
            if let Err(e) = sink.flush().await {
                tracing::warn!(query = %self.id, "sink flush failed, not committing: {e}");
                self.stats.error(format!("sink: {e}"));
                return false;
            }
        }
        if let Some(dead) = &mut self.dead {
            if let Err(e) = dead.flush().await {
                self.stats.error(format!("dead-letter sink: {e}"));
                return false;
            }
        }
        tracing::debug!(query = %self.id, elapsed = ?flush_started.elapsed(), "flushed");
        // With its state checkpointed, a query commits everything it read: a restart restores
        // the state and resumes there. Without, the commit stays behind open windows' events.
        let hold = if self.state.is_some() || self.partitioned.is_some() {
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(query = %self.id, "checkpoint failed, not committing: {e}");
                self.stats.error(e.to_string());
                return false;
            }
            BTreeMap::new()
        } else {
            self.processor
                .as_ref()
                .map(|p| p.held())
                .unwrap_or_default()
        };
        let started = Instant::now();
        let committed = self.input.commit(&hold).await;
        tracing::debug!(query = %self.id, elapsed = ?started.elapsed(), "committed");
        if let Err(e) = committed {
            tracing::warn!(query = %self.id, "commit failed: {e}");
            self.stats.error(format!("commit: {e}"));
            return false;
        }
        true
    }
}
