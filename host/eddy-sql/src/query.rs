//! A DataFusion statement that runs apart from the session that made it, under a memory and
//! time budget: the caller can let go of the session (and any lock around it) before planning,
//! and reads the rows as a stream instead of collecting them.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::{Access, Error, Output, Result};

/// How much one query may use; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Bytes its operators may hold at once (sorts, aggregations, joins), through DataFusion's
    /// memory pool.
    pub memory: Option<usize>,
    /// Wall time from planning to its last row, UDF calls included.
    pub timeout: Option<Duration>,
}

/// A statement DataFusion runs, not yet planned.
pub struct Query {
    ctx: SessionContext,
    sql: String,
    access: Access,
    budget: Budget,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("sql", &self.sql)
            .field("access", &self.access)
            .field("budget", &self.budget)
            .finish()
    }
}

impl Query {
    pub(crate) fn new(ctx: SessionContext, sql: String, access: Access, budget: Budget) -> Query {
        Query {
            ctx,
            sql,
            access,
            budget,
        }
    }

    /// The statement's text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Plans and starts the statement; its rows come as they are computed. Planning and
    /// reading both count against the time budget: past it, the stream ends with an error.
    pub async fn stream(self) -> Result<SendableRecordBatchStream> {
        let Some(timeout) = self.budget.timeout else {
            return self.start(None).await;
        };
        let deadline = Instant::now() + timeout;
        let stream = match tokio::time::timeout_at(deadline, self.start(Some(deadline))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if Instant::now() < deadline => return Err(e),
            // Past the deadline, planning timed out, or a UDF call it ran was stopped there:
            // say which limit it was.
            _ => return Err(Error::Budget(over_time(timeout))),
        };
        Ok(Box::pin(Deadline {
            inner: stream,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            done: false,
        }))
    }

    /// Runs the statement to its end and keeps every row.
    pub async fn collect(self) -> Result<Output> {
        let mut stream = self.stream().await?;
        let schema = stream.schema();
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch.map_err(|e| match e.find_root() {
                DataFusionError::ResourcesExhausted(why) => Error::Budget(why.clone()),
                _ => Error::DataFusion(e),
            })?);
        }
        Ok(Output::Rows { schema, batches })
    }

    async fn start(self, deadline: Option<Instant>) -> Result<SendableRecordBatchStream> {
        let mut state = self.ctx.state();
        if let Some(deadline) = deadline {
            // The query's UDF calls stop at its deadline, not just at their own timeout.
            let options = state.config_mut().options_mut();
            options
                .extensions
                .insert(eddy_udf_host::QueryDeadline(deadline.into_std()));
            state.mark_start_execution();
        }
        let plan = state.create_logical_plan(&self.sql).await?;
        self.access.check(&plan)?;
        let frame = match plan {
            // DDL and SET take effect on the shared session.
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                self.ctx.execute_logical_plan(plan).await?
            }
            // A query (or INSERT, COPY) is planned with its own config, deadline included.
            plan => DataFrame::new(state, plan),
        };
        let mut task = frame.task_ctx();
        let physical = frame.create_physical_plan().await?;
        if let Some(bytes) = self.budget.memory {
            let mut runtime = (*task.runtime_env()).clone();
            runtime.memory_pool = Arc::new(TrackConsumersPool::new(
                GreedyMemoryPool::new(bytes),
                NonZeroUsize::new(3).expect("3 is not zero"),
            ));
            // Spilling would move the same bytes to the host's disk: over budget is over.
            runtime.disk_manager = Arc::new(
                DiskManager::builder()
                    .with_mode(DiskManagerMode::Disabled)
                    .build()?,
            );
            task = task.with_runtime(Arc::new(runtime));
        }
        let memory = self.budget.memory;
        let stream = execute_stream(physical, Arc::new(task))?;
        let schema = stream.schema();
        // Name the budget in the error a query gets for going over it.
        let stream = stream.map(move |b| b.map_err(|e| budget_error(e, memory)));
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream),
        ))
    }
}

fn over_time(timeout: Duration) -> String {
    format!("the query ran past its time limit of {timeout:?} (--query-timeout) and was cancelled")
}

/// The memory pool's refusal, said in Eddy's terms.
fn budget_error(e: DataFusionError, memory: Option<usize>) -> DataFusionError {
    match (e.find_root(), memory) {
        (DataFusionError::ResourcesExhausted(why), Some(bytes)) => {
            DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its memory budget of {} MiB (--query-memory): {why}",
                bytes >> 20
            ))
        }
        _ => e,
    }
}

/// Ends a stream with an error once its deadline has passed; dropping it cancels the query.
struct Deadline {
    inner: SendableRecordBatchStream,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    done: bool,
}

impl Stream for Deadline {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            let message = over_time(self.timeout);
            return Poll::Ready(Some(Err(DataFusionError::ResourcesExhausted(message))));
        }
        let next = self.inner.poll_next_unpin(cx);
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.done = true;
        }
        // A UDF call stopped at the deadline fails its batch: the query's limit is the news.
        if matches!(next, Poll::Ready(Some(Err(_)))) && Instant::now() >= self.sleep.deadline() {
            let message = over_time(self.timeout);
            return Poll::Ready(Some(Err(DataFusionError::ResourcesExhausted(message))));
        }
        next
    }
}

impl RecordBatchStream for Deadline {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
