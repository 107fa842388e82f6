//! Window assignment: which open windows each row belongs to, and which windows have closed.
//! No row is kept here: the aggregation folds rows into per-window state as they arrive.
//!
//! Event time is each row's `rowtime`; stream time is the largest event time seen so far. A
//! window closes when stream time reaches its end plus the grace period, and is emitted once,
//! then (final results, like ksqlDB's `EMIT FINAL`). A row is late, counted and dropped, when
//! every window it belongs to has closed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, RecordBatch, TimestampMillisecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};

use crate::checkpoint::Checkpoint;
use crate::query::{Window, WindowKind};
use crate::Result;

/// Names a window in the rows [`WindowState::assign`] returns: `(start, end)` of a tumbling
/// or hopping window, `(id, id)` of a session (whose bounds still move as it grows).
pub(crate) type WindowId = (i64, i64);

/// A window that has closed, with its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// The window as rows named it.
    pub id: WindowId,
    /// Its first millisecond.
    pub start: i64,
    /// Its end: the last event's time for a session, one past the last millisecond otherwise.
    pub end: i64,
}

/// Rows assigned to windows, and sessions that merged on the way.
pub(crate) struct Assigned {
    /// The input's rows, one per window each belongs to, with `windowstart` and `windowend`
    /// holding the [`WindowId`].
    pub rows: RecordBatch,
    /// Sessions that grew into another, in order: `(from, into)`. Rows always name the
    /// session they ended up in.
    pub merges: Vec<(WindowId, WindowId)>,
}

struct Session {
    id: i64,
    start: i64,
    end: i64,
}

/// Open windows of one query.
pub(crate) struct WindowState {
    window: Window,
    rowtime: usize,
    keys: Vec<usize>,
    converter: Option<RowConverter>,
    out_schema: SchemaRef,
    stream_time: i64,
    /// Open tumbling and hopping windows by (end, start), so the earliest to close come first.
    fixed: BTreeSet<(i64, i64)>,
    sessions: HashMap<Vec<u8>, Vec<Session>>,
    /// Each open session's current bounds, by id.
    session_bounds: HashMap<i64, (i64, i64)>,
    next_session: i64,
    /// Rows dropped because all their windows had closed.
    pub late: u64,
}

impl WindowState {
    /// State for rows of `schema`, whose columns `__key0…` hold the GROUP BY keys.
    pub(crate) fn new(window: Window, schema: &SchemaRef, keys: usize) -> Result<WindowState> {
        let rowtime = schema.index_of("rowtime")?;
        let keys: Vec<usize> = (0..keys)
            .map(|i| schema.index_of(&format!("__key{i}")))
            .collect::<Result<_, _>>()?;
        let converter = if matches!(window.kind, WindowKind::Session { .. }) && !keys.is_empty() {
            Some(RowConverter::new(
                keys.iter()
                    .map(|&k| SortField::new(schema.field(k).data_type().clone()))
                    .collect(),
            )?)
        } else {
            None
        };
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Arc::new(Field::new("windowstart", ts.clone(), false)));
        fields.push(Arc::new(Field::new("windowend", ts, false)));
        Ok(WindowState {
            window,
            rowtime,
            keys,
            converter,
            out_schema: Arc::new(Schema::new(fields)),
            stream_time: i64::MIN,
            fixed: BTreeSet::new(),
            sessions: HashMap::new(),
            session_bounds: HashMap::new(),
            next_session: 0,
            late: 0,
        })
    }

    /// The schema of assigned rows: the input's plus `windowstart` and `windowend`.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// Whether any window is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.sessions.is_empty()
    }

    /// The current bounds of open window `id`: a session's first and last event times, a
    /// fixed window's start and end.
    pub(crate) fn bounds(&self, id: WindowId) -> (i64, i64) {
        match self.window.kind {
            WindowKind::Session { .. } => self.session_bounds.get(&id.0).copied().unwrap_or(id),
            _ => id,
        }
    }

    /// The window clause.
    pub(crate) fn spec(&self) -> &Window {
        &self.window
    }

    /// The largest event time seen.
    pub(crate) fn stream_time(&self) -> i64 {
        self.stream_time
    }

    /// Assigns the rows of `batch` to windows, in row order; late rows are counted and left out.
    pub(crate) fn assign(&mut self, batch: &RecordBatch) -> Result<Assigned> {
        let times = batch
            .column(self.rowtime)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("rowtime is a timestamp")
            .clone();
        let grace = self.window.grace;
        let mut indices: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut ids: Vec<WindowId> = Vec::with_capacity(batch.num_rows());
        let mut merges = Vec::new();
        match self.window.kind {
            WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => {
                let advance = match self.window.kind {
                    WindowKind::Hopping { advance, .. } => advance,
                    _ => size,
                };
                for i in 0..batch.num_rows() {
                    if times.is_null(i) {
                        self.late += 1;
                        continue;
                    }
                    let t = times.value(i);
                    let mut start = t - t.rem_euclid(advance);
                    let mut starts = Vec::new();
                    // As in Kafka Streams, no window starts before the epoch: an event at 3 s
                    // in 10 s windows every 5 s is in [0, 10) only, not also in [-5, 5).
                    while start + size > t && (start >= 0 || t < 0) {
                        starts.push(start);
                        start -= advance;
                    }
                    // Earliest window first, as Kafka Streams updates (and emits) them.
                    let mut placed = false;
                    for start in starts.into_iter().rev() {
                        let end = start + size;
                        if end.saturating_add(grace) > self.stream_time {
                            self.fixed.insert((end, start));
                            indices.push(i as u32);
                            ids.push((start, end));
                            placed = true;
                        }
                    }
                    if !placed {
                        self.late += 1;
                    }
                    self.stream_time = self.stream_time.max(t);
                }
            }
            WindowKind::Session { gap } => {
                let keys = match &self.converter {
                    Some(c) => {
                        let cols: Vec<ArrayRef> =
                            self.keys.iter().map(|&k| batch.column(k).clone()).collect();
                        Some(c.convert_columns(&cols)?)
                    }
                    None => None,
                };
                // Where each session of this batch ended up, for rows that named it earlier.
                let mut moved: HashMap<i64, i64> = HashMap::new();
                let mut session_of_row: Vec<i64> = Vec::with_capacity(batch.num_rows());
                for i in 0..batch.num_rows() {
                    if times.is_null(i) {
                        self.late += 1;
                        continue;
                    }
                    let t = times.value(i);
                    if t.saturating_add(gap).saturating_add(grace) <= self.stream_time {
                        self.late += 1;
                        continue;
                    }
                    self.stream_time = self.stream_time.max(t);
                    let key = keys
                        .as_ref()
                        .map_or_else(Vec::new, |k| k.row(i).as_ref().to_vec());
                    let sessions = self.sessions.entry(key).or_default();
                    let mut into: Option<usize> = None;
                    let mut j = 0;
                    while j < sessions.len() {
                        let s = &sessions[j];
                        if !(s.start - gap <= t && t <= s.end + gap) {
                            j += 1;
                            continue;
                        }
                        match into {
                            None => {
                                into = Some(j);
                                j += 1;
                            }
                            Some(k) => {
                                // The survivor sits before j, where swap_remove moves nothing.
                                let s = sessions.swap_remove(j);
                                let survivor = &mut sessions[k];
                                survivor.start = survivor.start.min(s.start);
                                survivor.end = survivor.end.max(s.end);
                                merges.push(((s.id, s.id), (survivor.id, survivor.id)));
                                moved.insert(s.id, survivor.id);
                                self.session_bounds.remove(&s.id);
                                into = Some(k);
                            }
                        }
                    }
                    let id = match into {
                        Some(k) => {
                            let s = &mut sessions[k];
                            s.start = s.start.min(t);
                            s.end = s.end.max(t);
                            self.session_bounds.insert(s.id, (s.start, s.end));
                            s.id
                        }
                        None => {
                            let id = self.next_session;
                            self.next_session += 1;
                            sessions.push(Session {
                                id,
                                start: t,
                                end: t,
                            });
                            self.session_bounds.insert(id, (t, t));
                            id
                        }
                    };
                    indices.push(i as u32);
                    session_of_row.push(id);
                }
                let resolve = |mut id: i64| {
                    while let Some(&next) = moved.get(&id) {
                        id = next;
                    }
                    id
                };
                ids = session_of_row
                    .into_iter()
                    .map(|id| {
                        let id = resolve(id);
                        (id, id)
                    })
                    .collect();
            }
        }
        let taken = take(batch, indices)?;
        let mut columns = taken.columns().to_vec();
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            ids.iter().map(|w| w.0),
        )));
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
            ids.iter().map(|w| w.1),
        )));
        Ok(Assigned {
            rows: RecordBatch::try_new(self.out_schema.clone(), columns)?,
            merges,
        })
    }

    /// Removes the windows that have closed and returns them, earliest-closing first.
    pub(crate) fn close(&mut self) -> Vec<Closed> {
        let grace = self.window.grace;
        let now = self.stream_time;
        let mut out = Vec::new();
        match self.window.kind {
            WindowKind::Session { gap } => {
                self.sessions.retain(|_, sessions| {
                    let mut j = 0;
                    while j < sessions.len() {
                        if sessions[j].end.saturating_add(gap).saturating_add(grace) <= now {
                            let s = sessions.swap_remove(j);
                            self.session_bounds.remove(&s.id);
                            out.push(Closed {
                                id: (s.id, s.id),
                                start: s.start,
                                end: s.end,
                            });
                        } else {
                            j += 1;
                        }
                    }
                    !sessions.is_empty()
                });
                out.sort_by_key(|c| (c.end, c.start));
            }
            _ => {
                while let Some(&(end, start)) = self.fixed.first() {
                    if end.saturating_add(grace) > now {
                        break;
                    }
                    self.fixed.pop_first();
                    out.push(Closed {
                        id: (start, end),
                        start,
                        end,
                    });
                }
            }
        }
        out
    }
}

impl WindowState {
    /// Adds the open windows to `checkpoint`: stream time and fixed windows as metadata,
    /// sessions as the `sessions` section.
    pub(crate) fn save(&self, checkpoint: &mut Checkpoint) -> Result<()> {
        let fixed: Vec<[i64; 2]> = self.fixed.iter().map(|&(e, s)| [e, s]).collect();
        checkpoint.meta.insert(
            "window".into(),
            serde_json::json!({
                "stream_time": self.stream_time,
                "fixed": fixed,
                "next_session": self.next_session,
                "late": self.late,
            }),
        );
        let mut keys = BinaryBuilder::new();
        let (mut ids, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        for (key, sessions) in &self.sessions {
            for s in sessions {
                keys.append_value(key);
                ids.push(s.id);
                starts.push(s.start);
                ends.push(s.end);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("id", DataType::Int64, false),
            Field::new("start", DataType::Int64, false),
            Field::new("end", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(keys.finish()),
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(starts)),
                Arc::new(Int64Array::from(ends)),
            ],
        )?;
        checkpoint.sections.insert("sessions".into(), batch);
        Ok(())
    }

    /// Reopens the windows [`WindowState::save`] wrote.
    pub(crate) fn restore(&mut self, checkpoint: &Checkpoint) -> crate::Result<()> {
        let meta = &checkpoint.meta["window"];
        let bad = || crate::Error::State("the checkpoint's window state is malformed".into());
        self.stream_time = meta["stream_time"].as_i64().ok_or_else(bad)?;
        self.next_session = meta["next_session"].as_i64().ok_or_else(bad)?;
        self.late = meta["late"].as_u64().ok_or_else(bad)?;
        self.fixed.clear();
        for pair in meta["fixed"].as_array().ok_or_else(bad)? {
            let (Some(e), Some(s)) = (pair[0].as_i64(), pair[1].as_i64()) else {
                return Err(bad());
            };
            self.fixed.insert((e, s));
        }
        self.sessions.clear();
        self.session_bounds.clear();
        let batch = checkpoint.section("sessions")?;
        if batch.num_columns() != 4 {
            return Err(bad());
        }
        let keys = batch.column(0).as_binary::<i32>();
        let int = |i: usize| batch.column(i).as_primitive::<Int64Type>();
        let (ids, starts, ends) = (int(1), int(2), int(3));
        for row in 0..batch.num_rows() {
            let session = Session {
                id: ids.value(row),
                start: starts.value(row),
                end: ends.value(row),
            };
            self.session_bounds
                .insert(session.id, (session.start, session.end));
            self.sessions
                .entry(keys.value(row).to_vec())
                .or_default()
                .push(session);
        }
        Ok(())
    }
}

fn take(batch: &RecordBatch, indices: Vec<u32>) -> Result<RecordBatch> {
    let indices = UInt32Array::from(indices);
    let columns = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &indices, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(times: &[i64], keys: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("__key0", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(times.to_vec())),
                Arc::new(arrow::array::StringArray::from(keys.to_vec())),
            ],
        )
        .unwrap()
    }

    /// (windowstart, windowend) of each assigned row.
    fn ids(assigned: &Assigned) -> Vec<(i64, i64)> {
        let ts = |c: usize| {
            assigned
                .rows
                .column(c)
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap()
                .values()
                .to_vec()
        };
        ts(2).into_iter().zip(ts(3)).collect()
    }

    fn spans(closed: &[Closed]) -> Vec<(i64, i64)> {
        closed.iter().map(|c| (c.start, c.end)).collect()
    }

    #[test]
    fn tumbling_closes_after_grace_and_drops_late_rows() {
        let w = Window {
            kind: WindowKind::Tumbling { size: 10 },
            grace: 5,
            retention: None,
        };
        let b = batch(&[1, 2], &["a", "a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        assert_eq!(ids(&s.assign(&b).unwrap()), [(0, 10), (0, 10)]);
        // 9 is late but within grace.
        let a = s.assign(&batch(&[12, 9], &["a", "a"])).unwrap();
        assert_eq!(ids(&a), [(10, 20), (0, 10)]);
        assert!(s.close().is_empty());
        // 15 closes [0,10); 3 arrives after.
        let a = s.assign(&batch(&[15, 3], &["a", "a"])).unwrap();
        assert_eq!(ids(&a), [(10, 20)]);
        assert_eq!(spans(&s.close()), vec![(0, 10)]);
        assert_eq!(s.late, 1);
    }

    #[test]
    fn hopping_puts_rows_in_every_window_they_fall_in() {
        let w = Window {
            kind: WindowKind::Hopping {
                size: 10,
                advance: 5,
            },
            grace: 0,
            retention: None,
        };
        let b = batch(&[7], &["a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        // Earliest window first.
        assert_eq!(ids(&s.assign(&b).unwrap()), [(0, 10), (5, 15)]);
        assert_eq!(ids(&s.assign(&batch(&[3], &["a"])).unwrap()), [(0, 10)]);
        s.assign(&batch(&[30], &["a"])).unwrap();
        assert_eq!(spans(&s.close()), vec![(0, 10), (5, 15)]);
    }

    #[test]
    fn sessions_merge_per_key() {
        let w = Window {
            kind: WindowKind::Session { gap: 10 },
            grace: 0,
            retention: None,
        };
        // a@15 arrives when stream time is 30: 15 + gap <= 30, so it is late.
        let b = batch(&[0, 5, 8, 30, 15], &["a", "b", "a", "a", "a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        let a = s.assign(&b).unwrap();
        // a@0 and a@8 share session 0; b is session 1; a@30 starts session 2.
        assert_eq!(ids(&a), [(0, 0), (1, 1), (0, 0), (2, 2)]);
        s.assign(&batch(&[100], &["c"])).unwrap();
        assert_eq!(spans(&s.close()), vec![(5, 5), (0, 8), (30, 30)]);
        assert_eq!(s.late, 1);
    }

    #[test]
    fn a_row_between_two_sessions_merges_them() {
        let w = Window {
            kind: WindowKind::Session { gap: 10 },
            grace: 100,
            retention: None,
        };
        let b = batch(&[0, 20], &["a", "a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        assert_eq!(ids(&s.assign(&b).unwrap()), [(0, 0), (1, 1)]);
        // 10 is within the gap of both: session 1 grows into session 0.
        let a = s.assign(&batch(&[10], &["a"])).unwrap();
        assert_eq!(a.merges, vec![((1, 1), (0, 0))]);
        assert_eq!(ids(&a), [(0, 0)]);
        s.assign(&batch(&[500], &["b"])).unwrap();
        assert_eq!(spans(&s.close()), vec![(0, 20)]);
    }
}
