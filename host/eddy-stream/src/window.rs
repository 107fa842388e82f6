//! Window state: which rows belong to which open window, and which windows have closed.
//!
//! Event time is each row's `rowtime`; stream time is the largest event time seen so far. A
//! window closes when stream time reaches its end plus the grace period, and is emitted once,
//! then (final results, like ksqlDB's `EMIT FINAL`). A row is late, counted and dropped, when
//! every window it belongs to has closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};

use crate::query::{Window, WindowKind};
use crate::Result;

struct Session {
    start: i64,
    end: i64,
    rows: Vec<RecordBatch>,
}

/// Open windows of one query.
pub(crate) struct WindowState {
    window: Window,
    rowtime: usize,
    keys: Vec<usize>,
    converter: Option<RowConverter>,
    out_schema: SchemaRef,
    stream_time: i64,
    /// Tumbling and hopping windows by (end, start), so the earliest to close come first.
    fixed: BTreeMap<(i64, i64), Vec<RecordBatch>>,
    sessions: HashMap<Vec<u8>, Vec<Session>>,
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
            fixed: BTreeMap::new(),
            sessions: HashMap::new(),
            late: 0,
        })
    }

    /// The schema of closed windows' rows: the input's plus `windowstart` and `windowend`.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    /// Whether any window is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.sessions.is_empty()
    }

    /// Assigns the rows of `batch` to windows, in row order.
    pub(crate) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let times = batch
            .column(self.rowtime)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("rowtime is a timestamp")
            .clone();
        let grace = self.window.grace;
        match self.window.kind {
            WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => {
                let advance = match self.window.kind {
                    WindowKind::Hopping { advance, .. } => advance,
                    _ => size,
                };
                let mut rows: BTreeMap<(i64, i64), Vec<u32>> = BTreeMap::new();
                for i in 0..batch.num_rows() {
                    if times.is_null(i) {
                        self.late += 1;
                        continue;
                    }
                    let t = times.value(i);
                    let mut start = t - t.rem_euclid(advance);
                    let mut placed = false;
                    while start + size > t {
                        let end = start + size;
                        if end.saturating_add(grace) > self.stream_time {
                            rows.entry((end, start)).or_default().push(i as u32);
                            placed = true;
                        }
                        start -= advance;
                    }
                    if !placed {
                        self.late += 1;
                    }
                    self.stream_time = self.stream_time.max(t);
                }
                for (window, indices) in rows {
                    let taken = take(batch, indices)?;
                    self.fixed.entry(window).or_default().push(taken);
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
                    let mut merged = Session {
                        start: t,
                        end: t,
                        rows: vec![batch.slice(i, 1)],
                    };
                    let mut j = 0;
                    while j < sessions.len() {
                        let s = &sessions[j];
                        if s.start - gap <= t && t <= s.end + gap {
                            let s = sessions.swap_remove(j);
                            merged.start = merged.start.min(s.start);
                            merged.end = merged.end.max(s.end);
                            let mut rows = s.rows;
                            rows.append(&mut merged.rows);
                            merged.rows = rows;
                        } else {
                            j += 1;
                        }
                    }
                    sessions.push(merged);
                }
            }
        }
        Ok(())
    }

    /// Removes the windows that have closed and returns their rows, with `windowstart` and
    /// `windowend`, earliest-closing first.
    pub(crate) fn close(&mut self) -> Result<Vec<RecordBatch>> {
        let grace = self.window.grace;
        let now = self.stream_time;
        let mut out = Vec::new();
        match self.window.kind {
            WindowKind::Session { gap } => {
                let mut closed = Vec::new();
                self.sessions.retain(|_, sessions| {
                    let mut j = 0;
                    while j < sessions.len() {
                        if sessions[j].end.saturating_add(gap).saturating_add(grace) <= now {
                            closed.push(sessions.swap_remove(j));
                        } else {
                            j += 1;
                        }
                    }
                    !sessions.is_empty()
                });
                closed.sort_by_key(|s| (s.end, s.start));
                for s in closed {
                    out.push(self.with_window(&s.rows, s.start, s.end)?);
                }
            }
            _ => {
                while let Some(entry) = self.fixed.first_entry() {
                    let (end, start) = *entry.key();
                    if end.saturating_add(grace) > now {
                        break;
                    }
                    let rows = entry.remove();
                    out.push(self.with_window(&rows, start, end)?);
                }
            }
        }
        Ok(out)
    }

    fn with_window(&self, rows: &[RecordBatch], start: i64, end: i64) -> Result<RecordBatch> {
        let input = arrow::compute::concat_batches(&rows[0].schema(), rows)?;
        let n = input.num_rows();
        let mut columns = input.columns().to_vec();
        columns.push(Arc::new(TimestampMillisecondArray::from(vec![start; n])));
        columns.push(Arc::new(TimestampMillisecondArray::from(vec![end; n])));
        Ok(RecordBatch::try_new(self.out_schema.clone(), columns)?)
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

    fn spans(closed: &[RecordBatch]) -> Vec<(i64, i64, usize)> {
        closed
            .iter()
            .map(|b| {
                let ts = |c: usize| {
                    b.column(c)
                        .as_any()
                        .downcast_ref::<TimestampMillisecondArray>()
                        .unwrap()
                        .value(0)
                };
                (ts(2), ts(3), b.num_rows())
            })
            .collect()
    }

    #[test]
    fn tumbling_closes_after_grace_and_drops_late_rows() {
        let w = Window {
            kind: WindowKind::Tumbling { size: 10 },
            grace: 5,
        };
        let b = batch(&[1, 2], &["a", "a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        s.add(&b).unwrap();
        s.add(&batch(&[12, 9], &["a", "a"])).unwrap(); // 9 is late but within grace
        assert!(s.close().unwrap().is_empty());
        s.add(&batch(&[15, 3], &["a", "a"])).unwrap(); // 15 closes [0,10); 3 arrives after
        assert_eq!(spans(&s.close().unwrap()), vec![(0, 10, 3)]);
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
        };
        let b = batch(&[7], &["a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        s.add(&b).unwrap();
        s.add(&batch(&[30], &["a"])).unwrap();
        assert_eq!(spans(&s.close().unwrap()), vec![(0, 10, 1), (5, 15, 1)]);
    }

    #[test]
    fn sessions_merge_per_key() {
        let w = Window {
            kind: WindowKind::Session { gap: 10 },
            grace: 0,
        };
        // a@15 arrives when stream time is 30: 15 + gap <= 30, so it is late.
        let b = batch(&[0, 5, 8, 30, 15], &["a", "b", "a", "a", "a"]);
        let mut s = WindowState::new(w, &b.schema(), 1).unwrap();
        s.add(&b).unwrap();
        s.add(&batch(&[100], &["c"])).unwrap();
        assert_eq!(
            spans(&s.close().unwrap()),
            vec![(5, 5, 1), (0, 8, 2), (30, 30, 1)]
        );
        assert_eq!(s.late, 1);
    }
}
