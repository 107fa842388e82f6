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

use datafusion::common::DFSchema;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ScalarUDF};

/// Adds ksqlDB's functions to a session being built; every session Eddy creates goes through it.
pub(crate) fn register(builder: &mut SessionStateBuilder) {
    let scalars = builder.scalar_functions().get_or_insert_with(Vec::new);
    scalars.extend(scalar_functions());
    // ksqlDB's IFNULL takes any type, as COALESCE does; DataFusion's (NVL) casts arrays and
    // maps to strings.
    let coalesce = datafusion::functions::core::coalesce();
    scalars.push(Arc::new((*coalesce).clone().with_aliases(["ifnull"])));
    // ksqlDB's ARRAY_REMOVE removes every occurrence; DataFusion's the first only.
    let remove_all = datafusion::functions_nested::remove::array_remove_all_udf();
    scalars.push(Arc::new(
        (*remove_all).clone().with_aliases(["array_remove"]),
    ));
    let aggregates = builder.aggregate_functions().get_or_insert_with(Vec::new);
    aggregates.extend(aggregate::all().into_iter().map(Arc::new));
    aggregates.extend(stats::all().into_iter().map(Arc::new));
    // `SUBSTRING(…)` is parsed as a special form that DataFusion's planners turn into its own
    // `substr`, bypassing the registry, and `+` of strings is theirs to refuse: plan first.
    let planners = builder.expr_planners().get_or_insert_with(Vec::new);
    planners.insert(0, Arc::new(KsqlPlanner));
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

/// Plans ksqlDB's syntax that DataFusion reads otherwise: `SUBSTRING(str, pos[, len])` (and
/// `SUBSTRING(str FROM pos FOR len)`) as ksqlDB's, and `a + b` of two strings as their
/// concatenation (`a || b`, NULL when either is).
#[derive(Debug)]
struct KsqlPlanner;

impl ExprPlanner for KsqlPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> datafusion::common::Result<PlannerResult<RawBinaryExpr>> {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        let text = |e: &Expr| {
            e.get_type(schema).is_ok_and(|t| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            })
        };
        if expr.op == BinaryOperator::Plus && text(&expr.left) && text(&expr.right) {
            return Ok(PlannerResult::Planned(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(expr.left),
                Operator::StringConcat,
                Box::new(expr.right),
            ))));
        }
        Ok(PlannerResult::Original(expr))
    }

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
