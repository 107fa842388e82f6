//! ksqlDB's function library under ksqlDB's names and semantics, beside DataFusion's own.
//!
//! Where DataFusion has a function of the same name with other semantics (`substring`, `instr`,
//! `lpad`, `rpad`, `round`, `array_length`, `encode`, `stddev_samp`), ksqlDB's wins: it is
//! registered after DataFusion's and replaces it by name.

mod aggregate;
mod bytes;
mod collection;
mod json;
mod lambda;
mod math;
mod scalar;
mod stats;
mod string;
mod table;
mod time;
mod tokens;
mod url;

pub use lambda::rewrite as rewrite_lambdas;
pub use table::explode_as_unnest;
pub use time::{parse_timestamp, quote_time_units};

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::{Expr, ScalarUDF};

/// Adds ksqlDB's functions to a session being built; every session Eddy creates goes through it.
pub(crate) fn register(builder: &mut SessionStateBuilder) {
    let scalars = builder.scalar_functions().get_or_insert_with(Vec::new);
    scalars.extend(scalar_functions());
    let aggregates = builder.aggregate_functions().get_or_insert_with(Vec::new);
    aggregates.extend(aggregate::all().into_iter().map(Arc::new));
    aggregates.extend(stats::all().into_iter().map(Arc::new));
    // `SUBSTRING(…)` is parsed as a special form that DataFusion's planners turn into its own
    // `substr`, bypassing the registry: plan it first.
    let planners = builder.expr_planners().get_or_insert_with(Vec::new);
    planners.insert(0, Arc::new(SubstringPlanner));
}

/// Adds ksqlDB's lambda functions to `ctx`: they plan their lambdas with its functions.
pub(crate) fn register_lambdas(ctx: &datafusion::prelude::SessionContext) {
    for f in lambda::all(ctx.state_weak_ref()) {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
}

/// The scalar functions, each a [`ScalarUDF`].
fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    string::all()
        .into_iter()
        .chain(math::all())
        .chain(time::all())
        .chain(json::all())
        .chain(bytes::all())
        .chain(collection::all())
        .chain(url::all())
        .map(|f| Arc::new(ScalarUDF::new_from_impl(f)))
        .collect()
}

/// Plans `SUBSTRING(str, pos[, len])` (and `SUBSTRING(str FROM pos FOR len)`) as ksqlDB's.
#[derive(Debug)]
struct SubstringPlanner;

impl ExprPlanner for SubstringPlanner {
    fn plan_substring(
        &self,
        args: Vec<Expr>,
    ) -> datafusion::common::Result<PlannerResult<Vec<Expr>>> {
        let udf = Arc::new(ScalarUDF::new_from_impl(string::substring()));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf, args),
        )))
    }
}
