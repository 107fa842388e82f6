//! Statements ksqlDB refuses for their types, and DataFusion would coerce into running: a
//! comparison or `IN` list across type families (`name = 5`, `SUM(x) > '100'`, `id IN (10,
//! true)`), a comparison with NULL (`x = NULL`), a `CASE` whose results are of different type
//! families, and an integer literal beyond BIGINT. Comparisons are read off a query's logical plan
//! before DataFusion's type coercion, so each side still has the type it was written with. The
//! messages are ksqlDB's. `IN` list literals that ksqlDB converts and DataFusion cannot (`name
//! IN ('a', 10)`) are converted here.

use std::ops::ControlFlow;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Case, Expr, ExprSchemable, Join, LogicalPlan, Operator,
};
use datafusion::sql::sqlparser::ast::{self as sql, visit_expressions};

use crate::format::common::display_name;

/// A statement ksqlDB refuses for its types.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    /// A function called with argument types it has no form for.
    #[error("Function '{name}' does not accept parameters ({types}).")]
    Arguments {
        /// The function, as called.
        name: String,
        /// The argument types as ksqlDB names them, comma-separated.
        types: String,
    },
    /// An aggregate's parameter that must be a literal (how many values, whether to skip
    /// NULLs) given as an expression.
    #[error(
        "Parameter {position} passed to function {function} must be a literal constant, but \
         was expression: '{expression}'"
    )]
    NotLiteral {
        /// 1-based.
        position: usize,
        /// The function, upper case.
        function: String,
        /// The expression as written.
        expression: String,
    },
    /// A CAST of a string to an ARRAY, MAP or STRUCT, which ksqlDB does not read.
    #[error("{clause}Cast of STRING to {target} is not supported")]
    Cast {
        /// `Invalid Select: ` in a projection.
        clause: &'static str,
        /// The type cast to, as ksqlDB names it.
        target: String,
    },
    /// A call that more than one of a function's forms could take.
    #[error("Function '{name}' cannot be resolved due to ambiguous method parameters ({types}).")]
    Ambiguous {
        /// The function, as called.
        name: String,
        /// The argument types as ksqlDB names them (`null` for a NULL), comma-separated.
        types: String,
    },
    /// An ARRAY, MAP or STRUCT constructor whose elements give it no type, or a STRUCT with a
    /// field named twice; ksqlDB's message.
    #[error("{0}")]
    Constructor(&'static str),
    /// Two sides of a comparison from type families ksqlDB does not compare.
    #[error(
        "{clause}Cannot compare {left} ({left_type}) to {right} ({right_type}) with {operator}."
    )]
    Compare {
        /// `Error in WHERE expression: `, `Error in HAVING expression: ` or nothing.
        clause: &'static str,
        /// The left side as written.
        left: String,
        /// Its type.
        left_type: String,
        /// The right side as written.
        right: String,
        /// Its type.
        right_type: String,
        /// ksqlDB's name of the operator: `EQUAL`, `GREATER_THAN`, …
        operator: &'static str,
    },
    /// An `IN` list element of a type the value cannot be compared with.
    #[error(
        "{clause}operator does not exist: {target} = {found} ({element}). Hint: You might need to \
         add explicit type casts."
    )]
    InList {
        /// `Invalid Predicate: ` in WHERE and HAVING, else nothing.
        clause: &'static str,
        /// The type the list's elements must have: the value's.
        target: String,
        /// The element's type.
        found: String,
        /// The element as written.
        element: String,
    },
    /// A string literal in an `IN` list of numbers or booleans that is not one.
    #[error("{clause}invalid input syntax for type {target}: \"{text}\".")]
    InListSyntax {
        /// `Invalid Predicate: ` in WHERE and HAVING, else nothing.
        clause: &'static str,
        /// The type the string should spell.
        target: String,
        /// The string.
        text: String,
    },
    /// A comparison with `NULL` (`x = NULL`), which is never true: ksqlDB asks for `IS NULL`.
    #[error(
        "{clause}Comparison with NULL not supported: {left} {operator} {right}\nUse 'IS NULL' or \
         'IS NOT NULL' instead."
    )]
    NullCompare {
        /// `Error in WHERE expression: `, `Error in HAVING expression: ` or nothing.
        clause: &'static str,
        /// The left side's base type (`BIGINT`, `DECIMAL`, `ARRAY`) or `NULL`.
        left: String,
        /// The operator as written: `=`, `<>`, `<`, …, `IS DISTINCT FROM`.
        operator: &'static str,
        /// The right side's base type or `NULL`.
        right: String,
    },
    /// A `CASE` whose `THEN` results are of different type families.
    #[error(
        "{clause}Invalid Case expression. Type for all 'THEN' clauses should be the \
         same.\nTHEN expression '{when}' has type: {found}.\nPrevious THEN expression(s) type: \
         {previous}."
    )]
    CaseThen {
        /// `Error in WHERE expression: `, `Error in HAVING expression: ` or nothing.
        clause: &'static str,
        /// The `WHEN … THEN …` clause, as ksqlDB prints it.
        when: String,
        /// Its result's type.
        found: String,
        /// The earlier results' type.
        previous: String,
    },
    /// A `CASE` whose `ELSE` result is of another type family than its `THEN` results.
    #[error(
        "{clause}Invalid Case expression. Type for the default clause should be the same as for \
         'THEN' clauses.\nTHEN type: {then}.\nDEFAULT type: {default}."
    )]
    CaseDefault {
        /// `Error in WHERE expression: `, `Error in HAVING expression: ` or nothing.
        clause: &'static str,
        /// The `THEN` results' type.
        then: String,
        /// The `ELSE` result's type.
        default: String,
    },
    /// A `CASE` all of whose results are `NULL`.
    #[error("{0}Invalid Case expression. All case branches have NULL type")]
    CaseNull(&'static str),
    /// A join's `ON` equality between columns of different type families.
    #[error("Invalid join condition: types don't match. Got {left}{{{left_type}}} = {right}{{{right_type}}}.")]
    JoinKeys {
        /// The left side, qualified by its source (`O.USER_ID`).
        left: String,
        /// Its type.
        left_type: String,
        /// The right side, qualified by its source.
        right: String,
        /// Its type.
        right_type: String,
    },
    /// An integer literal beyond BIGINT.
    #[error("Invalid numeric literal: {0}")]
    NumericLiteral(String),
    /// A floating-point literal beyond DOUBLE.
    #[error("Number overflows DOUBLE: {0}")]
    DoubleLiteral(String),
}

/// Refuses a numeric literal ksqlDB does not read: an integer beyond BIGINT (DataFusion would
/// make it an unsigned or floating-point number), a floating-point number beyond DOUBLE.
pub(crate) fn check_literals(query: &sql::Query) -> Result<(), Box<TypeError>> {
    // A negated number is read with its sign (`-9223372036854775808` is a BIGINT), and the
    // number under it is not read again.
    let mut negated: *const sql::Expr = std::ptr::null();
    let found = visit_expressions(query, |e| {
        let (text, negative) = match e {
            sql::Expr::UnaryOp {
                op: sql::UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                sql::Expr::Value(v) => match &v.value {
                    sql::Value::Number(n, _) => {
                        negated = expr.as_ref();
                        (n, true)
                    }
                    _ => return ControlFlow::Continue(()),
                },
                _ => return ControlFlow::Continue(()),
            },
            sql::Expr::Value(_) if std::ptr::eq(e, negated) => return ControlFlow::Continue(()),
            sql::Expr::Value(v) => match &v.value {
                sql::Value::Number(n, _) => (n, false),
                _ => return ControlFlow::Continue(()),
            },
            _ => return ControlFlow::Continue(()),
        };
        let written = if negative {
            format!("-{text}")
        } else {
            text.clone()
        };
        if text.contains(['e', 'E']) {
            if text.parse::<f64>().is_ok_and(f64::is_infinite) {
                return ControlFlow::Break(TypeError::DoubleLiteral(written));
            }
        } else if !text.contains('.') && written.parse::<i64>().is_err() {
            return ControlFlow::Break(TypeError::NumericLiteral(written));
        }
        ControlFlow::Continue(())
    });
    match found {
        ControlFlow::Break(e) => Err(Box::new(e)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// [`check_literals`] for a query's text (a pull query's); text that does not parse as one
/// query is left to the session.
pub(crate) fn check_query_literals(sql: &str) -> Result<(), Box<TypeError>> {
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};
    match Parser::parse_sql(&GenericDialect {}, sql).as_deref() {
        Ok([sql::Statement::Query(query)]) => check_literals(query),
        _ => Ok(()),
    }
}

/// `plan` (a continuous query's, not yet type-coerced) as ksqlDB would run it: refused where
/// [`check_plan`] refuses it, with its `IN` list literals converted ([`convert_in_lists`]).
pub(crate) fn check(plan: LogicalPlan) -> crate::Result<LogicalPlan> {
    check_plan(&plan)?;
    Ok(convert_in_lists(plan)?)
}

/// Refuses a comparison or `IN` list in `plan` (not yet type-coerced) whose sides ksqlDB does
/// not compare. Expressions whose type cannot be told are left to DataFusion.
pub(crate) fn check_plan(plan: &LogicalPlan) -> Result<(), Box<TypeError>> {
    let mut error = None;
    let _ = plan.apply_with_subqueries(|node| {
        let inputs = node.inputs();
        let schema: &DFSchema = match inputs.as_slice() {
            [one] => one.schema(),
            _ => node.schema(),
        };
        let (compare_clause, list_clause) = match node {
            LogicalPlan::Filter(f) if below_projections(&f.input) => {
                ("Error in HAVING expression: ", "Invalid Predicate: ")
            }
            LogicalPlan::Filter(_) => ("Error in WHERE expression: ", "Invalid Predicate: "),
            _ => ("", ""),
        };
        if let LogicalPlan::Join(join) = node {
            if let Some(found) = join_keys(join) {
                error = Some(found);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let found = match e {
                    Expr::BinaryExpr(b) => compare(b, schema, compare_clause),
                    Expr::Case(c) => case(c, schema, compare_clause),
                    Expr::InList(list) => in_list(&list.expr, &list.list, schema, list_clause),
                    // ksqlDB has no VALUES, where DataFusion's `[]` is fine.
                    Expr::AggregateFunction(f) => literal_parameters(f.func.name(), &f.params.args),
                    Expr::Cast(c) => {
                        let clause = match node {
                            LogicalPlan::Projection(_) => "Invalid Select: ",
                            _ => compare_clause,
                        };
                        text_to_nested(&c.expr, c.field.data_type(), schema, clause)
                    }
                    Expr::ScalarFunction(f) if !matches!(node, LogicalPlan::Values(_)) => {
                        constructor(f.name(), &f.args)
                            .or_else(|| unit_first(f, schema))
                            .or_else(|| extremes(f, schema))
                    }
                    _ => None,
                };
                match found {
                    Some(found) => {
                        error = Some(found);
                        Ok(TreeNodeRecursion::Stop)
                    }
                    None => Ok(TreeNodeRecursion::Continue),
                }
            })
        })
    });
    error.map_or(Ok(()), |e| Err(Box::new(e)))
}

/// Each argument of `f` with its type; `None` when one cannot be told.
fn typed_args<'a>(
    f: &'a datafusion::logical_expr::expr::ScalarFunction,
    schema: &DFSchema,
) -> Option<Vec<(DataType, &'a Expr)>> {
    f.args
        .iter()
        .map(|a| a.get_type(schema).ok().map(|t| (t, a)))
        .collect()
}

/// Whether a string literal `text` reads as a value of `target`, as ksqlDB converts one in an
/// `IN` list: a number, or a boolean's spelling; any other family takes it as it is.
fn reads_as(text: &str, target: Family) -> bool {
    match target {
        Family::Number => text.trim().parse::<f64>().is_ok(),
        Family::Boolean => ScalarValue::Utf8(Some(text.to_string()))
            .cast_to(&DataType::Boolean)
            .is_ok(),
        _ => true,
    }
}

/// Refuses a `DATEADD`-like function whose first argument is not its unit: DataFusion would
/// cast a DATE or TIME there to the unit's string.
fn unit_first(
    f: &datafusion::logical_expr::expr::ScalarFunction,
    schema: &DFSchema,
) -> Option<TypeError> {
    const BY_UNIT: [&str; 6] = [
        "dateadd",
        "datesub",
        "timeadd",
        "timesub",
        "timestampadd",
        "timestampsub",
    ];
    if !BY_UNIT.contains(&f.name()) {
        return None;
    }
    let types = typed_args(f, schema)?;
    if matches!(
        types.first(),
        None | Some((DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, _))
    ) {
        return None;
    }
    Some(TypeError::Arguments {
        name: f.name().to_string(),
        types: types
            .iter()
            .map(|(t, e)| sql_type(e, t))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Refuses a CAST of a string to an ARRAY, MAP or STRUCT, as ksqlDB does (DataFusion parses
/// the text).
fn text_to_nested(
    e: &Expr,
    target: &DataType,
    schema: &DFSchema,
    clause: &'static str,
) -> Option<TypeError> {
    let from = e.get_type(schema).ok()?;
    let nested = matches!(
        target,
        DataType::List(_) | DataType::LargeList(_) | DataType::Map(..) | DataType::Struct(_)
    );
    (family(&from) == Some(Family::String) && nested).then(|| TypeError::Cast {
        clause,
        target: type_name(target),
    })
}

/// Refuses `EARLIEST_BY_OFFSET` and `LATEST_BY_OFFSET` whose count or NULL flag is not a
/// literal: ksqlDB fixes them when it plans the query.
fn literal_parameters(name: &str, args: &[Expr]) -> Option<TypeError> {
    if !matches!(name, "earliest_by_offset" | "latest_by_offset") {
        return None;
    }
    let (at, arg) = args
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, a)| !matches!(a, Expr::Literal(..)))?;
    Some(TypeError::NotLiteral {
        position: at + 1,
        function: name.to_uppercase(),
        expression: text(arg),
    })
}

/// Refuses `GREATEST` and `LEAST` calls ksqlDB cannot resolve to one of its forms (one per
/// type, numbers widening to BIGINT, DECIMAL or DOUBLE): only NULLs, numbers mixed with other
/// types, or integers and decimals mixed without a DOUBLE to settle on.
fn extremes(
    f: &datafusion::logical_expr::expr::ScalarFunction,
    schema: &DFSchema,
) -> Option<TypeError> {
    if !matches!(f.name(), "greatest" | "least") || f.args.is_empty() {
        return None;
    }
    let typed = typed_args(f, schema)?;
    let shown = || {
        typed
            .iter()
            .map(|(t, e)| match t {
                DataType::Null => "null".to_string(),
                _ => sql_type(e, t),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let known: Vec<(&DataType, &Expr)> = typed
        .iter()
        .filter(|(t, _)| !t.is_null())
        .map(|(t, e)| (t, *e))
        .collect();
    if known.is_empty() {
        return Some(TypeError::Ambiguous {
            name: f.name().to_string(),
            types: shown(),
        });
    }
    let numbers = known.iter().filter(|(t, _)| t.is_numeric()).count();
    if numbers > 0 && numbers < known.len() {
        return Some(TypeError::Arguments {
            name: f.name().to_string(),
            types: shown(),
        });
    }
    // An integer literal within INT's range is an INTEGER, as ksqlDB reads it.
    let kind = |(t, e): &(&DataType, &Expr)| match sql_type(e, t).as_str() {
        "INTEGER" => 0,
        _ if matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32) => 0,
        _ if matches!(t, DataType::Int64) => 1,
        _ if matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => 2,
        _ => 3,
    };
    let kinds: std::collections::HashSet<u8> = known.iter().map(kind).collect();
    let double = known
        .iter()
        .any(|(t, _)| matches!(t, DataType::Float32 | DataType::Float64));
    (numbers > 0 && !double && kinds.len() > 1).then(|| TypeError::Ambiguous {
        name: f.name().to_string(),
        types: shown(),
    })
}

/// Refuses the constructors ksqlDB refuses: `ARRAY[]`, `ARRAY[NULL]`, a MAP whose keys or
/// values are all NULL, a STRUCT with a field named twice.
fn constructor(name: &str, args: &[Expr]) -> Option<TypeError> {
    let null = |e: &Expr| matches!(e, Expr::Literal(ScalarValue::Null, _));
    let message = match name {
        "make_array" if args.is_empty() => {
            "Array constructor cannot be empty. Please supply at least one element (see \
             https://github.com/confluentinc/ksql/issues/4239)."
        }
        "make_array" if args.iter().all(null) => {
            "Cannot construct an array with all NULL elements (see \
             https://github.com/confluentinc/ksql/issues/4239). As a workaround, you may cast a \
             NULL value to the desired type."
        }
        // `MAP(k := v, …)` is planned as `map(make_array(k, …), make_array(v, …))`.
        "map" => {
            let elements = |e: &Expr| match e {
                Expr::ScalarFunction(f) if f.name() == "make_array" && !f.args.is_empty() => {
                    Some(f.args.iter().all(null))
                }
                _ => None,
            };
            match args {
                [keys, _] if elements(keys) == Some(true) => {
                    "Cannot construct a map with all NULL keys"
                }
                [_, values] if elements(values) == Some(true) => {
                    "Cannot construct a map with all NULL values"
                }
                _ => return None,
            }
        }
        "named_struct" => {
            let names: Vec<String> = args.iter().step_by(2).map(|e| e.to_string()).collect();
            let unique: std::collections::HashSet<&String> = names.iter().collect();
            if unique.len() == names.len() {
                return None;
            }
            "Duplicate field names found in STRUCT"
        }
        _ => return None,
    };
    Some(TypeError::Constructor(message))
}

/// Converts the literals of `IN` lists as ksqlDB does where DataFusion finds no common type: any
/// literal in a list of strings becomes the string it prints as (`name IN ('a', 10)`), a string
/// in a list of booleans the boolean it spells (`flag IN (true, 'false')`). For a plan
/// [`check_plan`] accepted.
fn convert_in_lists(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema = match node.inputs().as_slice() {
            [one] => one.schema().clone(),
            _ => node.schema().clone(),
        };
        let node = node.map_expressions(|e| {
            e.transform_up(|e| {
                let Expr::InList(mut list) = e else {
                    return Ok(Transformed::no(e));
                };
                let Ok(target) = list.expr.get_type(&schema) else {
                    return Ok(Transformed::no(Expr::InList(list)));
                };
                let mut changed = false;
                for item in &mut list.list {
                    if let Expr::Literal(v, metadata) = item {
                        if let Some(new) = converted(v, &target) {
                            *item = Expr::Literal(new, metadata.clone());
                            changed = true;
                        }
                    }
                }
                Ok(if changed {
                    Transformed::yes(Expr::InList(list))
                } else {
                    Transformed::no(Expr::InList(list))
                })
            })
        })?;
        if node.transformed {
            node.map_data(|p| p.recompute_schema())
        } else {
            Ok(node)
        }
    })
    .map(|t| t.data)
}

/// `v` as an element of an `IN` list whose value is of type `target`, where ksqlDB converts it.
fn converted(v: &ScalarValue, target: &DataType) -> Option<ScalarValue> {
    if v.is_null() {
        return None;
    }
    match (family(target)?, family(&v.data_type())?) {
        (Family::String, f) if f != Family::String => Some(ScalarValue::Utf8(Some(v.to_string()))),
        (Family::Boolean, Family::String) => v.cast_to(&DataType::Boolean).ok(),
        _ => None,
    }
}

/// Whether `plan` is an aggregation (under projections or aliases): a filter over it is HAVING.
fn below_projections(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(_) => true,
        LogicalPlan::Projection(p) => below_projections(&p.input),
        LogicalPlan::SubqueryAlias(a) => below_projections(&a.input),
        _ => false,
    }
}

/// ksqlDB's type families, by which it tells what compares with what.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Number,
    String,
    Boolean,
    /// TIMESTAMP and DATE.
    Moment,
    Time,
    Bytes,
    Array,
    Map,
    Struct,
}

fn family(t: &DataType) -> Option<Family> {
    use DataType::*;
    Some(match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            Family::Number
        }
        Utf8 | LargeUtf8 | Utf8View => Family::String,
        Boolean => Family::Boolean,
        Timestamp(..) | Date32 | Date64 => Family::Moment,
        Time32(_) | Time64(_) => Family::Time,
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => Family::Bytes,
        List(_) | LargeList(_) | FixedSizeList(..) | ListView(_) | LargeListView(_) => {
            Family::Array
        }
        Map(..) => Family::Map,
        Struct(_) => Family::Struct,
        Dictionary(_, value) => return family(value),
        // NULL, intervals, durations, unions: DataFusion's to judge.
        _ => return None,
    })
}

/// ksqlDB's `ComparisonUtil.isValidComparison`: numbers with numbers, strings with strings and
/// times, times with their kind and strings, the rest with their own kind, and BOOLEAN, ARRAY,
/// MAP and STRUCT only for (in)equality.
fn comparable(left: Family, right: Family, equality: bool) -> bool {
    use Family::*;
    match left {
        Number => right == Number,
        String => matches!(right, String | Moment | Time),
        Moment => matches!(right, Moment | String),
        Time => matches!(right, Time | String),
        Bytes => right == Bytes,
        Boolean | Array | Map | Struct => right == left && equality,
    }
}

/// ksqlDB's name of a comparison operator and its symbol, `None` for other operators.
fn operator_name(op: &Operator) -> Option<(&'static str, &'static str, bool)> {
    Some(match op {
        Operator::Eq => ("EQUAL", "=", true),
        Operator::NotEq => ("NOT_EQUAL", "<>", true),
        Operator::IsDistinctFrom => ("IS_DISTINCT_FROM", "IS DISTINCT FROM", true),
        Operator::IsNotDistinctFrom => ("IS_NOT_DISTINCT_FROM", "IS NOT DISTINCT FROM", true),
        Operator::Lt => ("LESS_THAN", "<", false),
        Operator::LtEq => ("LESS_THAN_OR_EQUAL", "<=", false),
        Operator::Gt => ("GREATER_THAN", ">", false),
        Operator::GtEq => ("GREATER_THAN_OR_EQUAL", ">=", false),
        _ => return None,
    })
}

fn compare(b: &BinaryExpr, schema: &DFSchema, clause: &'static str) -> Option<TypeError> {
    let (operator, symbol, equality) = operator_name(&b.op)?;
    let left_type = b.left.get_type(schema).ok()?;
    let right_type = b.right.get_type(schema).ok()?;
    if left_type == DataType::Null || right_type == DataType::Null {
        return Some(TypeError::NullCompare {
            clause,
            left: base_type(&b.left, &left_type),
            operator: symbol,
            right: base_type(&b.right, &right_type),
        });
    }
    let (left, right) = (family(&left_type)?, family(&right_type)?);
    if comparable(left, right, equality) {
        return None;
    }
    Some(TypeError::Compare {
        clause,
        left: text(&b.left),
        left_type: sql_type(&b.left, &left_type),
        right: text(&b.right),
        right_type: sql_type(&b.right, &right_type),
        operator,
    })
}

/// ksqlDB's join key check (`LogicalPlanner.verifyJoinConditionTypes`): the two sides of each
/// `ON` equality have one type. Refused here across type families (`o.name = u.id`) and between
/// numbers of different types (INT with BIGINT); other types of one family (TIMESTAMP with DATE)
/// are left to DataFusion's coercion.
fn join_keys(join: &Join) -> Option<TypeError> {
    // Before optimization the equalities are still in the join's filter, as written.
    let written = join
        .filter
        .iter()
        .flat_map(split_conjunction)
        .filter_map(|e| match e {
            Expr::BinaryExpr(b) if b.op == Operator::Eq => match (&*b.left, &*b.right) {
                (Expr::Column(l), Expr::Column(r))
                    if join.left.schema().has_column(l) != join.left.schema().has_column(r) =>
                {
                    Some((b.left.as_ref(), b.right.as_ref()))
                }
                _ => None,
            },
            _ => None,
        });
    let schema = join.schema.as_ref();
    for (l, r) in join.on.iter().map(|(l, r)| (l, r)).chain(written) {
        let (Ok(lt), Ok(rt)) = (l.get_type(schema), r.get_type(schema)) else {
            continue;
        };
        let (Some(lf), Some(rf)) = (family(&lt), family(&rt)) else {
            continue;
        };
        // Numbers must be of one type too (INT with BIGINT is refused, as in ksqlDB).
        let numbers_differ =
            lf == Family::Number && rf == Family::Number && sql_type(l, &lt) != sql_type(r, &rt);
        if lf != rf || numbers_differ {
            return Some(TypeError::JoinKeys {
                left: qualified(l),
                left_type: sql_type(l, &lt),
                right: qualified(r),
                right_type: sql_type(r, &rt),
            });
        }
    }
    None
}

/// A column as ksqlDB prints a join's side: qualified by its source (`O.USER_ID`).
fn qualified(e: &Expr) -> String {
    match e {
        Expr::Column(c) => match &c.relation {
            Some(r) => format!("{}.{}", display_name(r.table()), display_name(&c.name)),
            None => display_name(&c.name),
        },
        other => printed(other),
    }
}

/// ksqlDB's `CASE` typing (`ExpressionTypeManager.visitSearchedCaseExpression`): the `THEN`
/// results share a type, the `ELSE` result has it too, and not all are `NULL`. Results are
/// refused here across type families (`THEN 1 ELSE 'x'`) and between numbers of different types
/// (`THEN n ELSE 0`, BIGINT with INTEGER); other types of one family are left to DataFusion's
/// coercion. A literal such as `2.5` is a DOUBLE here, a DECIMAL in ksqlDB.
fn case(c: &Case, schema: &DFSchema, clause: &'static str) -> Option<TypeError> {
    let mut previous: Option<(Family, String)> = None;
    for (when, then) in &c.when_then_expr {
        let t = then.get_type(schema).ok()?;
        if t == DataType::Null {
            continue;
        }
        let f = family(&t)?;
        match &previous {
            None => previous = Some((f, sql_type(then, &t))),
            Some((pf, previous)) if differ(*pf, previous, f, &sql_type(then, &t)) => {
                let condition = match &c.expr {
                    Some(operand) => format!("({} = {})", printed(operand), printed(when)),
                    None => printed(when),
                };
                return Some(TypeError::CaseThen {
                    clause,
                    when: format!("WHEN {condition} THEN {}", printed(then)),
                    found: sql_type(then, &t),
                    previous: previous.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let default = match &c.else_expr {
        Some(e) => {
            let t = e.get_type(schema).ok()?;
            (t != DataType::Null).then_some((e, t))
        }
        None => None,
    };
    match (previous, default) {
        (None, None) => Some(TypeError::CaseNull(clause)),
        (Some((pf, then)), Some((e, t))) if differ(pf, &then, family(&t)?, &sql_type(e, &t)) => {
            Some(TypeError::CaseDefault {
                clause,
                then,
                default: sql_type(e, &t),
            })
        }
        _ => None,
    }
}

/// Whether two `CASE` results' types differ as ksqlDB tells: by family, and numbers by type
/// (INTEGER, BIGINT, DOUBLE, DECIMAL(p, s)).
fn differ(left: Family, left_type: &str, right: Family, right_type: &str) -> bool {
    left != right || (left == Family::Number && left_type != right_type)
}

/// An expression as ksqlDB's formatter prints it inside a larger one: comparisons and
/// arithmetic in parentheses (`(N > 1)`), columns and functions upper-cased.
fn printed(e: &Expr) -> String {
    match e {
        Expr::BinaryExpr(b) => {
            let op = match operator_name(&b.op) {
                Some((_, symbol, _)) => symbol.to_string(),
                None => match b.op {
                    Operator::And => "AND".into(),
                    Operator::Or => "OR".into(),
                    other => other.to_string(),
                },
            };
            format!("({} {op} {})", printed(&b.left), printed(&b.right))
        }
        Expr::Cast(c) => format!(
            "CAST({} AS {})",
            printed(&c.expr),
            type_name(c.field.data_type())
        ),
        Expr::Not(inner) => format!("(NOT {})", printed(inner)),
        Expr::IsNull(inner) => format!("({} IS NULL)", printed(inner)),
        Expr::IsNotNull(inner) => format!("({} IS NOT NULL)", printed(inner)),
        other => text(other),
    }
}

/// A type as ksqlDB names its base type (`ComparisonUtil`'s NULL message): `DECIMAL`, `ARRAY`,
/// or `NULL` for an untyped NULL.
fn base_type(e: &Expr, t: &DataType) -> String {
    if *t == DataType::Null {
        return "NULL".into();
    }
    let full = sql_type(e, t);
    full.split(['(', '<']).next().unwrap_or(&full).to_string()
}

/// ksqlDB's `IN` coercion (`CoercionUtil.coerceUserList`): the value and the list's elements
/// must share a family, the first one's; a literal converts to a string, and a string literal
/// to the number or boolean it spells.
fn in_list(
    value: &Expr,
    list: &[Expr],
    schema: &DFSchema,
    clause: &'static str,
) -> Option<TypeError> {
    let mut target: Option<(Family, DataType, &Expr)> = None;
    for e in std::iter::once(value).chain(list) {
        let t = e.get_type(schema).ok()?;
        let Some(f) = family(&t) else {
            if t == DataType::Null {
                continue;
            }
            return None;
        };
        let Some((target_family, target_type, target_expr)) = &target else {
            target = Some((f, t, e));
            continue;
        };
        if f == *target_family {
            // An ARRAY, MAP or STRUCT: element by element, as ksqlDB compares them.
            match nested(target_type, e, &t) {
                Some(Nested::Syntax { target, text }) => {
                    return Some(TypeError::InListSyntax {
                        clause,
                        target: type_name(&target),
                        text,
                    })
                }
                Some(Nested::Types) => {
                    return Some(TypeError::InList {
                        clause,
                        target: sql_type(target_expr, target_type),
                        found: sql_type(e, &t),
                        element: text(e),
                    })
                }
                None => continue,
            }
        }
        let literal = match e {
            Expr::Literal(v, _) => Some(v),
            _ => None,
        };
        match (target_family, literal) {
            (Family::String, Some(_)) => continue,
            (Family::Number | Family::Boolean, Some(v)) if f == Family::String => {
                let text = v.to_string();
                if reads_as(&text, *target_family) {
                    continue;
                }
                return Some(TypeError::InListSyntax {
                    clause,
                    target: sql_type(target_expr, target_type),
                    text,
                });
            }
            _ => {
                if matches!(
                    (target_family, f),
                    (Family::Moment | Family::Time, Family::String)
                        | (Family::String, Family::Moment | Family::Time)
                ) {
                    continue;
                }
                return Some(TypeError::InList {
                    clause,
                    target: sql_type(target_expr, target_type),
                    found: sql_type(e, &t),
                    element: text(e),
                });
            }
        }
    }
    None
}

/// Why an ARRAY, MAP or STRUCT cannot stand for another of its kind in an `IN` list.
enum Nested {
    /// A string literal among its elements does not read as the element type.
    Syntax { target: DataType, text: String },
    /// An element's type does not compare with the other's.
    Types,
}

/// Whether `e`, of type `t`, compares with values of `target`, a type of the same kind: the
/// elements (a MAP's values, a STRUCT's fields of one name) of both must be of one family, a
/// constructor's string literals reading as numbers or booleans where those are expected.
fn nested(target: &DataType, e: &Expr, t: &DataType) -> Option<Nested> {
    let call = |name: &str| match e {
        Expr::ScalarFunction(f) if f.name() == name => Some(f.args.as_slice()),
        _ => None,
    };
    // Each element of `e` (its expression when a constructor makes it) and its target type.
    let pairs: Vec<(Option<&Expr>, DataType, DataType)> = match (target, t) {
        (DataType::List(te), DataType::List(ee)) => match call("make_array") {
            Some(args) => args
                .iter()
                .map(|a| (Some(a), te.data_type().clone(), ee.data_type().clone()))
                .collect(),
            None => vec![(None, te.data_type().clone(), ee.data_type().clone())],
        },
        (DataType::Map(tf, _), DataType::Map(ef, _)) => {
            let value = |f: &arrow::datatypes::FieldRef| match f.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => Some(kv[1].data_type().clone()),
                _ => None,
            };
            let (tv, ev) = (value(tf)?, value(ef)?);
            let values = call("map").and_then(|args| match args.get(1) {
                Some(Expr::ScalarFunction(f)) if f.name() == "make_array" => {
                    Some(f.args.as_slice())
                }
                _ => None,
            });
            match values {
                Some(values) => values
                    .iter()
                    .map(|v| (Some(v), tv.clone(), ev.clone()))
                    .collect(),
                None => vec![(None, tv, ev)],
            }
        }
        (DataType::Struct(tf), DataType::Struct(ef)) => {
            let args = call("named_struct");
            ef.iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    let wanted = tf.iter().find(|t| t.name() == f.name())?;
                    let value = args.and_then(|a| a.get(2 * i + 1));
                    Some((value, wanted.data_type().clone(), f.data_type().clone()))
                })
                .collect()
        }
        _ => return None,
    };
    for (element, want, have) in pairs {
        if let Some(Expr::Literal(v, _)) = element {
            if v.is_null() {
                continue;
            }
            if family(&have) == Some(Family::String) {
                let text = v.to_string();
                if family(&want).is_none_or(|f| reads_as(&text, f)) {
                    continue;
                }
                return Some(Nested::Syntax { target: want, text });
            }
        }
        match (family(&want), family(&have)) {
            (Some(a), Some(b)) if a != b => return Some(Nested::Types),
            (Some(_), Some(_)) if element.is_none() => {
                if let Some(found) = nested(&want, &Expr::Literal(ScalarValue::Null, None), &have) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// An expression as ksqlDB shows it in a message: columns and functions upper-cased, string
/// literals quoted, constructors as ksqlDB writes them (`ARRAY[A]`, `MAP('a':=A)`,
/// `STRUCT(F:=A)`).
fn text(e: &Expr) -> String {
    let args = |e: &Expr| match e {
        Expr::ScalarFunction(f) => Some((f.name().to_string(), f.args.clone())),
        _ => None,
    };
    if let Some((function, list)) = args(e) {
        let joined = |items: Vec<String>| items.join(", ");
        match function.as_str() {
            "make_array" => return format!("ARRAY[{}]", joined(list.iter().map(text).collect())),
            "named_struct" => {
                let fields = list
                    .chunks(2)
                    .map(|kv| match kv {
                        [Expr::Literal(k, _), v] => {
                            format!("{}:={}", k.to_string().to_uppercase(), text(v))
                        }
                        _ => String::new(),
                    })
                    .collect();
                return format!("STRUCT({})", joined(fields));
            }
            "map" => {
                if let [keys, values] = list.as_slice() {
                    if let (Some((_, keys)), Some((_, values))) = (args(keys), args(values)) {
                        let entries = keys
                            .iter()
                            .zip(&values)
                            .map(|(k, v)| format!("{}:={}", text(k), text(v)))
                            .collect();
                        return format!("MAP({})", joined(entries));
                    }
                }
            }
            _ => {}
        }
    }
    match e {
        Expr::Column(c) => name(&c.name),
        Expr::Literal(v, _) => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => format!("'{}'", s.replace('\'', "''")),
            other => other.to_string(),
        },
        Expr::Alias(a) => text(&a.expr),
        other => name(&other.to_string()),
    }
}

/// A column's or expression's name without table qualifiers (`sum(readings.n)` is `SUM(N)`),
/// upper-cased where nothing is quoted.
fn name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut word = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        // `word.` before a name is a qualifier; before a digit it is a number's point.
        let qualifier = c == '.'
            && word.starts_with(|w: char| !w.is_ascii_digit())
            && chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_');
        if !qualifier {
            out.push_str(&word);
            out.push(c);
        }
        word.clear();
    }
    out.push_str(&word);
    if out.contains(['\'', '"']) {
        out
    } else {
        display_name(&out)
    }
}

/// A type as ksqlDB names it in messages (`INTEGER`, `STRING`); an integer literal within INT's
/// range is an INTEGER, as ksqlDB reads it.
fn sql_type(e: &Expr, t: &DataType) -> String {
    if let Expr::Literal(ScalarValue::Int64(Some(n)), _) = e {
        if i32::try_from(*n).is_ok() {
            return "INTEGER".into();
        }
    }
    type_name(t)
}

fn type_name(t: &DataType) -> String {
    crate::format::common::type_name_in(t, crate::format::common::Spelling::KsqlMessage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn literals(sql: &str) -> Result<(), Box<TypeError>> {
        let statement = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        let sql::Statement::Query(query) = statement else {
            panic!("a query")
        };
        check_literals(&query)
    }

    #[test]
    fn integer_literals_beyond_bigint_are_refused() {
        assert!(literals("SELECT 9223372036854775807, -9223372036854775808 FROM t").is_ok());
        assert_eq!(
            literals("SELECT 9223372036854775808 FROM t")
                .unwrap_err()
                .to_string(),
            "Invalid numeric literal: 9223372036854775808"
        );
        assert_eq!(
            literals("SELECT a FROM t WHERE a > -9223372036854775809")
                .unwrap_err()
                .to_string(),
            "Invalid numeric literal: -9223372036854775809"
        );
        assert!(literals("SELECT 1.5, 1e300, 12345678901234567890.5 FROM t").is_ok());
        assert_eq!(
            literals("SELECT 1.8e308 FROM t").unwrap_err().to_string(),
            "Number overflows DOUBLE: 1.8e308"
        );
    }

    #[test]
    fn names_lose_engine_qualifiers() {
        assert_eq!(name("sum(__eddy_ctas_t_1_window.value)"), "SUM(VALUE)");
        assert_eq!(name("sum(readings.n) + 1.5"), "SUM(N) + 1.5");
        assert_eq!(name("__eddy_k0"), "__EDDY_K0");
        assert_eq!(name("Quoted"), "Quoted");
    }

    #[test]
    fn expressions_print_as_ksqldb_formats_them() {
        use datafusion::logical_expr::{col, lit};
        let e = col("n").gt(lit(10i64)).and(col("name").is_null());
        assert_eq!(printed(&e), "((N > 10) AND (NAME IS NULL))");
        assert_eq!(printed(&lit("it's")), "'it''s'");
        assert_eq!(
            base_type(&col("d"), &DataType::Decimal128(6, 2)),
            "DECIMAL".to_string()
        );
        assert_eq!(base_type(&lit(ScalarValue::Null), &DataType::Null), "NULL");
    }

    #[test]
    fn families_compare_as_in_ksqldb() {
        use Family::*;
        assert!(comparable(Number, Number, false));
        assert!(comparable(Moment, String, false));
        assert!(comparable(String, Moment, false));
        assert!(!comparable(String, Number, true));
        assert!(!comparable(Number, Boolean, true));
        assert!(comparable(Boolean, Boolean, true));
        assert!(!comparable(Boolean, Boolean, false));
        assert!(!comparable(Array, Array, false));
    }
}
