//! An aggregation's output read as changes to a table: each row names its group (key columns
//! and window bounds, hidden after the visible columns), and some rows retract a group's row.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::row::{RowConverter, SortField};

use crate::Result;

/// One output batch of an aggregation, taken apart.
pub(crate) struct Changes {
    /// The visible columns.
    pub rows: RecordBatch,
    /// Each row's group: its key columns, then its window bounds for a windowed aggregation.
    pub group: Vec<ArrayRef>,
    /// Each row's group, encoded: the table key.
    pub keys: Vec<Vec<u8>>,
    /// Which rows retract their group's row (tombstones).
    pub deleted: arrow::array::BooleanArray,
}

/// Splits `batch` after its `visible` columns: then come the group columns, and last the
/// tombstone flag.
pub(crate) fn split(batch: &RecordBatch, visible: usize) -> Result<Changes> {
    let n = batch.num_columns();
    let rows = batch.project(&(0..visible).collect::<Vec<_>>())?;
    let group: Vec<ArrayRef> = batch.columns()[visible..n - 1].to_vec();
    let deleted = batch.column(n - 1).as_boolean().clone();
    let keys = if group.is_empty() {
        vec![Vec::new(); batch.num_rows()]
    } else {
        let converter = RowConverter::new(
            group
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )?;
        let encoded = converter.convert_columns(&group)?;
        encoded.iter().map(|r| r.as_ref().to_vec()).collect()
    };
    Ok(Changes {
        rows,
        group,
        keys,
        deleted,
    })
}

/// `batch` (visible columns, group columns, tombstone flag) without its tombstones.
pub(crate) fn without_deletions(batch: RecordBatch) -> Result<RecordBatch> {
    let deleted = batch.column(batch.num_columns() - 1).as_boolean().clone();
    if deleted.true_count() == 0 {
        return Ok(batch);
    }
    let keep = arrow::compute::not(&deleted)?;
    Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
}

impl Changes {
    /// The visible rows that are not tombstones.
    pub(crate) fn standing(&self) -> Result<RecordBatch> {
        if self.deleted.true_count() == 0 {
            return Ok(self.rows.clone());
        }
        let keep = arrow::compute::not(&self.deleted)?;
        Ok(arrow::compute::filter_record_batch(&self.rows, &keep)?)
    }

    /// The visible rows as a table's log holds them: a tombstone becomes a row with only its
    /// key, each `(visible, group)` column of `keys` showing its group column.
    pub(crate) fn logged(&self, keys: &[(usize, usize)]) -> Result<RecordBatch> {
        if self.deleted.true_count() == 0 {
            return Ok(self.rows.clone());
        }
        let mut columns = self.rows.columns().to_vec();
        for &(visible, group) in keys {
            let field = self.rows.schema().field(visible).clone();
            let shown = arrow::compute::cast(&self.group[group], field.data_type())?;
            columns[visible] =
                arrow::compute::kernels::zip::zip(&self.deleted, &shown, &columns[visible])?;
        }
        Ok(RecordBatch::try_new(self.rows.schema(), columns)?)
    }

    /// Whether row `i` is a tombstone.
    pub(crate) fn is_deleted(&self, i: usize) -> bool {
        self.deleted.is_valid(i) && self.deleted.value(i)
    }
}

/// How a table's changes become Kafka records, as ksqlDB writes them: the group is the record
/// key (a windowed table's key also holds the window), the value holds the other columns, and
/// a deleted row is a tombstone (a key without a value).
#[derive(Debug, Clone)]
pub(crate) struct TableRecords {
    /// How the GROUP BY values are encoded.
    pub key_format: crate::format::KeyFormat,
    /// The key columns' names, for a JSON key.
    pub key_names: Vec<String>,
    /// The visible columns the value holds (`rowtime` last, to become the record timestamp).
    pub value_columns: Vec<usize>,
    /// How many of the group columns are GROUP BY values (the rest are window bounds).
    pub keys: usize,
    /// The window in the key, for a windowed table.
    pub window: Option<WindowKey>,
    /// Whether a key whose columns are all NULL is no key at all: so for a key passed on from
    /// the source (a record without a key keeps none) and a GROUP BY; a user's PARTITION BY of
    /// several expressions makes a key even of NULLs, as in ksqlDB.
    pub all_null_is_no_key: bool,
}

/// How a window is written after the key bytes, as Kafka Streams' windowed serdes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKey {
    /// Tumbling and hopping windows: the start, 8 bytes big-endian.
    Start,
    /// Sessions: the end, then the start, 8 bytes big-endian each.
    EndStart,
}

impl TableRecords {
    /// The records of `changes`, values encoded in `format`.
    pub(crate) fn encode(
        &self,
        changes: &Changes,
        format: &crate::format::ValueFormat,
    ) -> Result<Vec<eddy_connector::Record>> {
        let values = changes.rows.project(&self.value_columns)?;
        let mut records = format.encode(&values)?;
        let keys = self.key_bytes(changes)?;
        for (i, (record, key)) in records.iter_mut().zip(keys).enumerate() {
            record.key = key;
            if changes.is_deleted(i) {
                record.payload = None;
            }
        }
        Ok(records)
    }

    fn key_bytes(&self, changes: &Changes) -> Result<Vec<Option<Vec<u8>>>> {
        let n = changes.rows.num_rows();
        let mut keys: Vec<Option<Vec<u8>>> = if self.keys == 0 {
            vec![None; n]
        } else {
            let fields: Vec<arrow::datatypes::Field> = (0..self.keys)
                .map(|i| {
                    arrow::datatypes::Field::new(
                        self.key_names
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("k{i}")),
                        changes.group[i].data_type().clone(),
                        true,
                    )
                })
                .collect();
            let batch = RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                changes.group[..self.keys].to_vec(),
            )?;
            // A NULL key column is no key at all, as ksqlDB writes it; see `all_null_is_no_key`
            // for several.
            let groups = &changes.group[..self.keys];
            let keyless = self.all_null_is_no_key || groups.len() == 1;
            self.key_format
                .encode(&batch)?
                .into_iter()
                .enumerate()
                .map(|(i, key)| (!keyless || groups.iter().any(|g| g.is_valid(i))).then_some(key))
                .collect()
        };
        if let Some(window) = self.window {
            let bound = |c: usize| {
                changes.group[self.keys + c]
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMillisecondArray>()
                    .expect("window bounds are timestamps")
                    .clone()
            };
            let (starts, ends) = (bound(0), bound(1));
            for (i, key) in keys.iter_mut().enumerate() {
                let mut bytes = key.take().unwrap_or_default();
                if window == WindowKey::EndStart {
                    bytes.extend_from_slice(&ends.value(i).to_be_bytes());
                }
                bytes.extend_from_slice(&starts.value(i).to_be_bytes());
                *key = Some(bytes);
            }
        }
        Ok(keys)
    }
}
