//! How streams and tables look to DataFusion: table providers over a log, a keyed state, or
//! the batch a query is working on right now.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session;
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
pub(crate) trait Inserter: fmt::Debug + Send + Sync {
    /// Takes a batch of the relation's schema; `rowtime` may still be null.
    fn insert(&self, batch: RecordBatch) -> Result<()>;
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
        let Some(inserter) = &self.inserter else {
            return Err(DataFusionError::Plan(format!(
                "'{}' is written by a query; INSERT INTO goes to source streams and tables",
                self.name
            )));
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
}

#[derive(Debug, Default)]
struct TableInner {
    rows: HashMap<Vec<u8>, RecordBatch>,
    /// Insertion order of keys, so scans are stable.
    order: Vec<Vec<u8>>,
    snapshot: Option<RecordBatch>,
}

impl TableState {
    /// An empty table of `schema`, keyed by the columns at `keys`.
    pub(crate) fn new(schema: SchemaRef, keys: Vec<usize>) -> Arc<TableState> {
        Arc::new(TableState {
            schema,
            keys,
            inner: Mutex::new(TableInner::default()),
        })
    }

    /// Upserts every row of `batch`, in order; a row whose other columns are all null deletes
    /// its key (a tombstone).
    pub(crate) fn upsert(&self, batch: &RecordBatch) -> Result<()> {
        let fields = self
            .keys
            .iter()
            .map(|&i| SortField::new(self.schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let key_columns: Vec<_> = self.keys.iter().map(|&i| batch.column(i).clone()).collect();
        let rows = converter.convert_columns(&key_columns)?;
        let mut inner = self.inner.lock().expect("table lock");
        inner.snapshot = None;
        for i in 0..batch.num_rows() {
            if self.keys.iter().any(|&k| batch.column(k).is_null(i)) {
                continue;
            }
            let key = rows.row(i).as_ref().to_vec();
            let tombstone = (0..batch.num_columns())
                .filter(|c| !self.keys.contains(c))
                .all(|c| batch.column(c).is_null(i));
            if tombstone {
                if inner.rows.remove(&key).is_some() {
                    inner.order.retain(|k| k != &key);
                }
            } else if inner.rows.insert(key.clone(), batch.slice(i, 1)).is_none() {
                inner.order.push(key);
            }
        }
        Ok(())
    }

    /// The current rows as one batch.
    pub(crate) fn snapshot(&self) -> Result<RecordBatch> {
        let mut inner = self.inner.lock().expect("table lock");
        if let Some(s) = &inner.snapshot {
            return Ok(s.clone());
        }
        let rows: Vec<&RecordBatch> = inner.order.iter().map(|k| &inner.rows[k]).collect();
        let batch = arrow::compute::concat_batches(&self.schema, rows)?;
        inner.snapshot = Some(batch.clone());
        Ok(batch)
    }
}

impl Inserter for TableState {
    fn insert(&self, batch: RecordBatch) -> Result<()> {
        self.upsert(&batch)
    }
}

/// A table as DataFusion sees it.
#[derive(Debug)]
pub(crate) struct TableProviderImpl {
    /// Its state.
    pub state: Arc<TableState>,
    /// Whether `INSERT INTO` may write it.
    pub insertable: bool,
    /// Name, for messages.
    pub name: String,
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
        if !self.insertable {
            return Err(DataFusionError::Plan(format!(
                "'{}' is read from a topic; produce to the topic instead of INSERT INTO",
                self.name
            )));
        }
        let sink = InsertSink {
            schema: self.state.schema.clone(),
            inserter: self.state.clone(),
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
        self.inserter.insert(batch)?;
        Ok(rows)
    }
}
