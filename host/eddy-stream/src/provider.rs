//! How streams and tables look to DataFusion: table providers over a log, a keyed state, or
//! the batch a query is working on right now.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

use crate::log::Log;

fn scan(
    batches: Vec<RecordBatch>,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(MemorySourceConfig::try_new_exec(
        &[batches],
        schema.clone(),
        projection.cloned(),
    )?)
}

/// The batch (or window) a running query is processing; each query plans against its own.
///
/// Plans read it when they run, not when they are built, so one physical plan serves batch
/// after batch.
#[derive(Debug)]
pub(crate) struct Slot {
    partition: Arc<SlotPartition>,
}

#[derive(Debug)]
struct SlotPartition {
    schema: SchemaRef,
    batches: Mutex<Vec<RecordBatch>>,
}

impl PartitionStream for SlotPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self.batches.lock().expect("slot lock").clone();
        let stream = futures::stream::iter(batches.into_iter().map(Ok));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

impl Slot {
    /// An empty slot of `schema`.
    pub(crate) fn new(schema: SchemaRef) -> Arc<Slot> {
        Arc::new(Slot {
            partition: Arc::new(SlotPartition {
                schema,
                batches: Mutex::new(Vec::new()),
            }),
        })
    }

    /// What plans reading this slot see the next time they run.
    pub(crate) fn set(&self, batches: Vec<RecordBatch>) {
        *self.partition.batches.lock().expect("slot lock") = batches;
    }

    /// Its schema.
    pub(crate) fn schema(&self) -> SchemaRef {
        self.partition.schema.clone()
    }

    /// The slot as a partition of a physical plan.
    pub(crate) fn partition(&self) -> Arc<dyn PartitionStream> {
        self.partition.clone()
    }
}

#[async_trait]
impl TableProvider for Slot {
    fn schema(&self) -> SchemaRef {
        self.partition.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StreamingTableExec::try_new(
            self.partition.schema.clone(),
            vec![self.partition()],
            projection,
            Vec::new(),
            false,
            None,
        )?))
    }
}

/// Where rows inserted with `INSERT INTO` go.
#[async_trait]
pub(crate) trait Inserter: fmt::Debug + Send + Sync {
    /// Takes a batch of the relation's schema; `rowtime` may still be null.
    async fn insert(&self, batch: RecordBatch) -> Result<()>;
}

/// A stream as a table: scans return the rows it has retained; inserts append.
#[derive(Debug)]
pub(crate) struct StreamProvider {
    /// Name, for messages.
    pub name: String,
    /// Retained rows, when the stream lives in memory.
    pub log: Option<Arc<Log>>,
    /// What it is read from otherwise, for the error a pull query gets.
    pub external: Option<String>,
    /// Where inserts go.
    pub inserter: Option<Arc<dyn Inserter>>,
    /// Its schema.
    pub schema: SchemaRef,
    /// A `SOURCE` stream, which refuses inserts.
    pub read_only: bool,
}

/// ksqlDB's refusal of `INSERT INTO … VALUES` into a `SOURCE` stream or table.
fn read_only(kind: &str, name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "Cannot insert values into read-only {kind}: {}",
        name.to_uppercase()
    ))
}

#[async_trait]
impl TableProvider for StreamProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match &self.log {
            Some(log) => scan(log.snapshot(), &self.schema, projection),
            None => Err(DataFusionError::Plan(format!(
                "'{}' is read from {}, which Eddy does not keep: a pull query cannot scan it; \
                 use SELECT … FROM {} EMIT CHANGES",
                self.name,
                self.external.as_deref().unwrap_or("outside"),
                self.name
            ))),
        }
    }
    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::Plan(format!(
                "{insert_op} into a stream: streams only append"
            )));
        }
        if self.read_only {
            return Err(read_only("stream", &self.name));
        }
        let Some(inserter) = &self.inserter else {
            return Err(DataFusionError::Plan(match &self.external {
                Some(external) => format!(
                    "'{}' reads {external}: INSERT INTO goes to streams on Kafka or in memory",
                    self.name
                ),
                None => format!(
                    "'{}' is written by a query with PARTITION BY, which keys its records: \
                     insert into its source instead",
                    self.name
                ),
            }));
        };
        let sink = InsertSink {
            schema: self.schema.clone(),
            inserter: inserter.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// A table's current state: the latest row per primary key.
#[derive(Debug)]
pub(crate) struct TableState {
    schema: SchemaRef,
    keys: Vec<usize>,
    inner: Mutex<TableInner>,
    /// How far the query filling it has read, for the stream–table joins that read it.
    pub(crate) filled: crate::table_fill::Filled,
}

#[derive(Debug, Default)]
struct TableInner {
    /// Each key's row, as scalars (a slice of an input batch would keep all of it alive), and
    /// its place in scan order.
    rows: foldhash::HashMap<Vec<u8>, (u64, Vec<ScalarValue>)>,
    /// Keys in the order they were first inserted, so scans are stable.
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
    snapshot: Option<RecordBatch>,
}

impl TableInner {
    fn put(&mut self, key: &[u8], batch: &RecordBatch, row: usize) -> Result<()> {
        let values = |batch: &RecordBatch| {
            batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<Vec<_>>>()
        };
        if let Some((_, old)) = self.rows.get_mut(key) {
            // Overwritten in place: an update allocates nothing but its values.
            if old.len() == batch.num_columns() {
                for (value, column) in old.iter_mut().zip(batch.columns()) {
                    *value = ScalarValue::try_from_array(column, row)?;
                }
            } else {
                *old = values(batch)?;
            }
            return Ok(());
        }
        let at = self.next;
        self.next += 1;
        self.order.insert(at, key.to_vec());
        self.rows.insert(key.to_vec(), (at, values(batch)?));
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some((at, _)) = self.rows.remove(key) {
            self.order.remove(&at);
        }
    }
}

impl TableState {
    /// An empty table of `schema`, keyed by the columns at `keys`.
    pub(crate) fn new(schema: SchemaRef, keys: Vec<usize>) -> Arc<TableState> {
        Arc::new(TableState {
            schema,
            keys,
            inner: Mutex::new(TableInner::default()),
            filled: crate::table_fill::Filled::default(),
        })
    }

    /// Upserts every row of `batch`, in order; a row whose other columns are all null deletes
    /// its key (a tombstone: a Kafka record with a key and no value decodes to one).
    pub(crate) fn upsert(&self, batch: &RecordBatch) -> Result<()> {
        let rows = self.key_rows(batch)?;
        let mut inner = self.inner.lock().expect("table lock");
        inner.snapshot = None;
        for i in 0..batch.num_rows() {
            if self.keys.iter().any(|&k| batch.column(k).is_null(i)) {
                continue;
            }
            let key = rows.row(i);
            if self.is_tombstone(batch, i) {
                inner.remove(key.as_ref());
            } else {
                inner.put(key.as_ref(), batch, i)?;
            }
        }
        Ok(())
    }

    /// The key columns of `batch`, encoded as this table encodes its keys.
    fn key_rows(&self, batch: &RecordBatch) -> Result<arrow::row::Rows> {
        let fields = self
            .keys
            .iter()
            .map(|&i| SortField::new(self.schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let key_columns: Vec<_> = self.keys.iter().map(|&i| batch.column(i).clone()).collect();
        Ok(converter.convert_columns(&key_columns)?)
    }

    /// Whether row `i` of `batch` deletes its key: all its columns but the key and its
    /// `rowtime` (a decoded record's event time, not part of its value) are null, as a Kafka
    /// record with a key and no value decodes.
    fn is_tombstone(&self, batch: &RecordBatch, i: usize) -> bool {
        let schema = batch.schema();
        (0..batch.num_columns())
            .filter(|c| !self.keys.contains(c) && schema.field(*c).name() != "rowtime")
            .all(|c| batch.column(c).is_null(i))
    }

    /// The rows of `keys` (encoded as this table encodes its keys) that it holds, in that
    /// order.
    pub(crate) fn rows_of<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<RecordBatch> {
        let inner = self.inner.lock().expect("table lock");
        let rows: Vec<&Vec<ScalarValue>> = keys
            .into_iter()
            .filter_map(|k| inner.rows.get(k).map(|(_, row)| row))
            .collect();
        self.batch_of(&rows)
    }

    /// Whether it holds a row for `key` (encoded as this table encodes its keys).
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.inner
            .lock()
            .expect("table lock")
            .rows
            .contains_key(key)
    }

    /// `column`'s values encoded as this table (of one key column) encodes its keys: how a
    /// foreign key finds the row it names (`None` for NULL).
    pub(crate) fn encode(&self, column: &arrow::array::ArrayRef) -> Result<Vec<Option<Vec<u8>>>> {
        let key_type = self.schema.field(self.keys[0]).data_type();
        let converter = RowConverter::new(vec![SortField::new(key_type.clone())])?;
        let column = arrow::compute::cast(column, key_type)?;
        let rows = converter.convert_columns(std::slice::from_ref(&column))?;
        Ok((0..column.len())
            .map(|i| (!column.is_null(i)).then(|| rows.row(i).as_ref().to_vec()))
            .collect())
    }

    /// Its keys encoded, one per row of `batch` (`None` for a row with a NULL key).
    pub(crate) fn keys_of(&self, batch: &RecordBatch) -> Result<Vec<Option<Vec<u8>>>> {
        let rows = self.key_rows(batch)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                (!self.keys.iter().any(|&k| batch.column(k).is_null(i)))
                    .then(|| rows.row(i).as_ref().to_vec())
            })
            .collect())
    }

    /// Upserts `batch` (a table's rows with their `rowtime`, all kept) as
    /// [`TableState::upsert`] does, and returns what each row changed, as
    /// rows of `signed` (the batch's columns, then an Int64 sign): the row its key had before
    /// (sign -1), if any, then the row itself (sign 1) unless it is a tombstone. Rows without a
    /// key change nothing.
    pub(crate) fn changes(&self, batch: &RecordBatch, signed: &SchemaRef) -> Result<RecordBatch> {
        let keys = self.key_rows(batch)?;
        let mut rows: Vec<Vec<ScalarValue>> = Vec::with_capacity(batch.num_rows());
        let mut signs: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut inner = self.inner.lock().expect("table lock");
        inner.snapshot = None;
        for i in 0..batch.num_rows() {
            if self.keys.iter().any(|&k| batch.column(k).is_null(i)) {
                continue;
            }
            let key = keys.row(i);
            if let Some((_, old)) = inner.rows.get(key.as_ref()) {
                rows.push(old.clone());
                signs.push(-1);
            }
            if self.is_tombstone(batch, i) {
                inner.remove(key.as_ref());
            } else {
                inner.put(key.as_ref(), batch, i)?;
                rows.push(inner.rows[key.as_ref()].1.clone());
                signs.push(1);
            }
        }
        drop(inner);
        let mut columns = Vec::with_capacity(signed.fields().len());
        for (c, field) in batch.schema().fields().iter().enumerate() {
            columns.push(if rows.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                let array = ScalarValue::iter_to_array(rows.iter().map(|r| r[c].clone()))?;
                if array.data_type() == field.data_type() {
                    array
                } else {
                    arrow::compute::cast(&array, field.data_type())?
                }
            });
        }
        columns.push(Arc::new(arrow::array::Int64Array::from(signs)));
        Ok(RecordBatch::try_new_with_options(
            signed.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?)
    }

    /// Applies an aggregation's changes: each row replaces its group's, a tombstone deletes it.
    pub(crate) fn apply(&self, changes: &crate::changes::Changes) -> Result<()> {
        let mut inner = self.inner.lock().expect("table lock");
        inner.snapshot = None;
        for (i, key) in changes.keys.iter().enumerate() {
            if changes.is_deleted(i) {
                inner.remove(key);
            } else {
                inner.put(key, &changes.rows, i)?;
            }
        }
        Ok(())
    }

    /// Deletes the rows `expired` says are past their retention.
    pub(crate) fn retain(&self, expired: impl Fn(&[ScalarValue]) -> bool) {
        self.retain_keys(|_| true, expired)
    }

    /// Deletes the rows of keys `of` picks that `expired` says are past their retention.
    pub(crate) fn retain_keys(
        &self,
        of: impl Fn(&[u8]) -> bool,
        expired: impl Fn(&[ScalarValue]) -> bool,
    ) {
        let mut inner = self.inner.lock().expect("table lock");
        let gone: Vec<Vec<u8>> = inner
            .rows
            .iter()
            .filter(|(k, (_, row))| of(k) && expired(row))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        inner.snapshot = None;
        for key in gone {
            inner.remove(&key);
        }
    }

    /// Its schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The current rows as one batch.
    pub(crate) fn snapshot(&self) -> Result<RecordBatch> {
        let mut inner = self.inner.lock().expect("table lock");
        if let Some(s) = &inner.snapshot {
            return Ok(s.clone());
        }
        let rows: Vec<&Vec<ScalarValue>> = inner.order.values().map(|k| &inner.rows[k].1).collect();
        let batch = self.batch_of(&rows)?;
        inner.snapshot = Some(batch.clone());
        Ok(batch)
    }

    /// `rows` (in the table's schema) as one batch.
    fn batch_of(&self, rows: &[&Vec<ScalarValue>]) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, field)| {
                if rows.is_empty() {
                    return Ok(arrow::array::new_empty_array(field.data_type()));
                }
                let array = ScalarValue::iter_to_array(rows.iter().map(|r| r[c].clone()))?;
                if array.data_type() != field.data_type() {
                    return Ok(arrow::compute::cast(&array, field.data_type())?);
                }
                Ok(array)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?)
    }
}

impl TableState {
    /// Adds its rows to `checkpoint` as section `name`, each with its key bytes first.
    pub(crate) fn save(
        &self,
        name: &str,
        checkpoint: &mut crate::checkpoint::Checkpoint,
    ) -> crate::Result<()> {
        self.save_where(name, checkpoint, |_| true)
    }

    /// Like [`TableState::save`], only the rows whose keys are in `keys`; keys no longer in
    /// the table (deleted, expired) leave `keys`.
    pub(crate) fn save_keys(
        &self,
        name: &str,
        checkpoint: &mut crate::checkpoint::Checkpoint,
        keys: &mut foldhash::HashSet<Vec<u8>>,
    ) -> crate::Result<()> {
        {
            let inner = self.inner.lock().expect("table lock");
            keys.retain(|k| inner.rows.contains_key(k));
        }
        self.save_where(name, checkpoint, |k| keys.contains(k))
    }

    /// Adds the rows whose keys `keep` picks to `checkpoint` as section `name`, in scan
    /// order, each with its key bytes first.
    fn save_where(
        &self,
        name: &str,
        checkpoint: &mut crate::checkpoint::Checkpoint,
        keep: impl Fn(&Vec<u8>) -> bool,
    ) -> crate::Result<()> {
        let (keys, rows) = {
            let inner = self.inner.lock().expect("table lock");
            let picked: Vec<(&Vec<u8>, &Vec<ScalarValue>)> = inner
                .order
                .values()
                .filter(|k| keep(k))
                .map(|k| (k, &inner.rows[k].1))
                .collect();
            let keys = arrow::array::BinaryArray::from_iter_values(picked.iter().map(|(k, _)| k));
            let values: Vec<&Vec<ScalarValue>> = picked.iter().map(|(_, r)| *r).collect();
            (keys, self.batch_of(&values)?)
        };
        let mut fields = vec![Arc::new(arrow::datatypes::Field::new(
            "__key",
            arrow::datatypes::DataType::Binary,
            false,
        ))];
        fields.extend(rows.schema().fields().iter().cloned());
        let mut columns: Vec<arrow::array::ArrayRef> = vec![Arc::new(keys)];
        columns.extend(rows.columns().iter().cloned());
        let batch = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
        checkpoint.sections.insert(name.into(), batch);
        Ok(())
    }

    /// Adds the rows of section `name` of `checkpoint` (written by [`TableState::save_keys`])
    /// to those it has, returning their keys.
    pub(crate) fn restore_keys(
        &self,
        name: &str,
        checkpoint: &crate::checkpoint::Checkpoint,
    ) -> crate::Result<foldhash::HashSet<Vec<u8>>> {
        self.load(name, checkpoint, false)
    }

    /// Deletes the rows of `keys`.
    pub(crate) fn remove_keys(&self, keys: &foldhash::HashSet<Vec<u8>>) {
        let mut inner = self.inner.lock().expect("table lock");
        inner.snapshot = None;
        for key in keys {
            inner.remove(key);
        }
    }

    /// Replaces its rows with section `name` of `checkpoint`, written by [`TableState::save`].
    pub(crate) fn restore(
        &self,
        name: &str,
        checkpoint: &crate::checkpoint::Checkpoint,
    ) -> crate::Result<()> {
        self.load(name, checkpoint, true).map(drop)
    }

    fn load(
        &self,
        name: &str,
        checkpoint: &crate::checkpoint::Checkpoint,
        replace: bool,
    ) -> crate::Result<foldhash::HashSet<Vec<u8>>> {
        use arrow::array::AsArray;
        let batch = checkpoint.section(name)?;
        let ours = self.schema.fields();
        if batch.num_columns() != ours.len() + 1
            || batch
                .schema()
                .fields()
                .iter()
                .skip(1)
                .zip(ours)
                .any(|(a, b)| a.data_type() != b.data_type())
        {
            return Err(crate::Error::State(format!(
                "the checkpoint's {name} has other columns than the table"
            )));
        }
        let keys = batch.column(0).as_binary::<i32>();
        let rows = batch.project(&(1..batch.num_columns()).collect::<Vec<_>>())?;
        let mut inner = self.inner.lock().expect("table lock");
        if replace {
            *inner = TableInner::default();
        }
        inner.snapshot = None;
        let mut loaded = foldhash::HashSet::default();
        for i in 0..rows.num_rows() {
            inner.put(keys.value(i), &rows, i)?;
            loaded.insert(keys.value(i).to_vec());
        }
        Ok(loaded)
    }
}

#[async_trait]
impl Inserter for TableState {
    async fn insert(&self, batch: RecordBatch) -> Result<()> {
        self.upsert(&batch)
    }
}

/// A table as DataFusion sees it.
#[derive(Debug)]
pub(crate) struct TableProviderImpl {
    /// Its state.
    pub state: Arc<TableState>,
    /// Where `INSERT INTO` goes, if it may write it: the state itself for a table in memory,
    /// the topic for a table read from Kafka.
    pub inserter: Option<Arc<dyn Inserter>>,
    /// Name, for messages.
    pub name: String,
    /// A `SOURCE` table, which refuses inserts.
    pub read_only: bool,
}

#[async_trait]
impl TableProvider for TableProviderImpl {
    fn schema(&self) -> SchemaRef {
        self.state.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        scan(vec![self.state.snapshot()?], &self.state.schema, projection)
    }
    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.read_only {
            return Err(read_only("table", &self.name));
        }
        let Some(inserter) = &self.inserter else {
            return Err(DataFusionError::Plan(format!(
                "'{}' is written by a query; INSERT INTO goes to source streams and tables",
                self.name
            )));
        };
        let sink = InsertSink {
            schema: self.state.schema.clone(),
            inserter: inserter.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

#[derive(Debug)]
struct InsertSink {
    schema: SchemaRef,
    inserter: Arc<dyn Inserter>,
}

impl DisplayAs for InsertSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InsertSink")
    }
}

#[async_trait]
impl DataSink for InsertSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let mut batches = Vec::new();
        while let Some(batch) = data.next().await {
            batches.push(batch?);
        }
        let batch = arrow::compute::concat_batches(&self.schema, &batches)?;
        let rows = batch.num_rows() as u64;
        // Cast to the declared schema's exact field names (DataFusion keeps them, but be sure).
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?;
        self.inserter.insert(batch).await?;
        Ok(rows)
    }
}
