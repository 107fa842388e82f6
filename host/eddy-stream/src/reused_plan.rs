//! A physical plan built once and run once per batch.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{collect, ExecutionPlan};

/// How many runs a plan serves before its nodes are rebuilt. Every `execute` of a DataFusion
/// operator adds a set of metrics to the node, so a plan run for every batch of a query that
/// never ends would grow without bound (about 3 MB per million events in `eddy-bench state`).
const RESET_EVERY: u32 = 512;

/// A physical plan that a continuous query runs over every batch.
#[derive(Debug)]
pub(crate) struct ReusedPlan {
    plan: Arc<dyn ExecutionPlan>,
    runs: u32,
}

impl ReusedPlan {
    /// Wraps `plan`, which must be able to run again once a run has ended (no dynamic filters,
    /// no build side kept between runs).
    pub(crate) fn new(plan: Arc<dyn ExecutionPlan>) -> ReusedPlan {
        ReusedPlan { plan, runs: 0 }
    }

    /// Runs the plan to completion; every [`RESET_EVERY`] runs its nodes are first replaced by
    /// copies with fresh metrics (the same expressions and properties, so cheap).
    pub(crate) async fn collect(&mut self, task: Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
        if self.runs >= RESET_EVERY {
            self.plan = reset_plan_states(self.plan.clone())?;
            self.runs = 0;
        }
        self.runs += 1;
        collect(self.plan.clone(), task).await
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// The metrics a plan's nodes hold, counted over the whole tree.
    fn metric_sets(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let own = plan.metrics().map_or(0, |m| m.iter().count());
        own + plan.children().into_iter().map(metric_sets).sum::<usize>()
    }

    #[tokio::test]
    async fn metrics_stop_growing_once_the_plan_is_reset() {
        // One partition, as the engine plans a query's batches (a RepartitionExec cannot run twice).
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let df = ctx
            .sql("SELECT x + 1 AS y FROM (VALUES (1), (2)) AS t(x) WHERE x > 1")
            .await
            .unwrap();
        let physical = df.create_physical_plan().await.unwrap();
        let mut plan = ReusedPlan::new(physical);
        let mut after_one = 0;
        for run in 1..=RESET_EVERY {
            let out = plan.collect(ctx.task_ctx()).await.unwrap();
            assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
            if run == 1 {
                after_one = metric_sets(&plan.plan);
            }
        }
        let grown = metric_sets(&plan.plan);
        assert!(grown > after_one * 100, "{after_one} metrics, then {grown}");
        plan.collect(ctx.task_ctx()).await.unwrap();
        assert_eq!(metric_sets(&plan.plan), after_one);
    }
}
