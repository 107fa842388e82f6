//! A continuous query's SQL, taken apart: ksqlDB's WINDOW clause out, DataFusion SQL in.
//!
//! The engine runs a query as DataFusion plans over small inputs: the stateless plan over each
//! batch, or for windowed aggregations a filter over each batch and the aggregation over each
//! window's rows when the window closes. This module writes those plans' SQL from the user's.

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr,
    Statement as SqlStatement, TableAlias, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::{Error, Result};

/// How rows are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumbling {
        /// Window length.
        size: i64,
    },
    /// Windows of `size` ms starting every `advance` ms.
    Hopping {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        advance: i64,
    },
    /// Per key, events closer than `gap` ms apart share a window.
    Session {
        /// Inactivity gap.
        gap: i64,
    },
}

/// A query's `WINDOW` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Its kind and sizes.
    pub kind: WindowKind,
    /// How long after its end a window still accepts late events, in ms.
    pub grace: i64,
    /// How long after its end plus grace a window's row stays in the table for pull queries,
    /// in ms (`RETENTION`); `None` keeps it until the table is dropped.
    pub retention: Option<i64>,
}

/// When an aggregation writes its rows (`EMIT CHANGES`, the default, or `EMIT FINAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emit {
    /// After each batch, every (key, window) whose row changed: ksqlDB's default for tables.
    Changes,
    /// Each window once, when it closes.
    Final,
}

/// The user's query, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    query: Box<Query>,
    /// The `WINDOW` clause.
    pub window: Option<Window>,
    /// A stream–stream join's `WITHIN` clause.
    pub within: Option<crate::join_within::Within>,
    /// The stream read (the first relation in FROM).
    pub source: String,
    /// The name rows of the source go by in the outer query (its alias, else its name); `None`
    /// for a subquery without an alias.
    pub alias: Option<String>,
    /// Relations joined to the source.
    pub joined: Vec<String>,
    /// The names their rows go by (alias, else name), in the same order.
    pub joined_aliases: Vec<String>,
    /// Whether it has `GROUP BY`.
    pub grouped: bool,
    /// Its `EMIT` clause; `None` when it has none.
    pub emit: Option<Emit>,
    /// Its `PARTITION BY` expressions: the record key of what it writes. Empty without one.
    pub partition_by: Vec<Expr>,
    /// For a query over a table (read from Kafka, kept in memory, or written by a query that
    /// selects its keys), that table's columns: its rows are then changes to follow.
    pub changelog: Option<Changelog>,
    /// For a join of two such tables, the joined table's columns.
    pub joined_changelog: Option<Changelog>,
}

/// The columns of a table whose records a query reads as changes: each record upserts its
/// key's row, and a record without a value (all value columns NULL) deletes it.
#[derive(Debug, Clone)]
pub(crate) struct Changelog {
    /// The `PRIMARY KEY` columns.
    pub keys: Vec<String>,
    /// The other columns, `rowtime` excluded.
    pub values: Vec<String>,
}

/// ksqlDB's pseudo-columns for a record's partition and offset: reserved names there, so
/// refused as column names and aliases here too.
pub(crate) const RECORD_PLACE: [&str; 2] = ["rowpartition", "rowoffset"];

/// The column that says whether a row of a table's changes adds it to its group (1) or
/// retracts it, as the row its key had before (-1).
pub(crate) const SIGN: &str = "__eddy_sign";

/// Rewrites the aggregates of `select` to run over signed rows (see [`SIGN`]), so that a row
/// that changes or leaves a table leaves its group's aggregates too: `COUNT` becomes a sum of
/// signs, `SUM(x)` a sum of `x × sign`, `AVG(x)` their quotient; `COLLECT_LIST(x)` and
/// `COLLECT_SET(x)` take the sign as a second argument. Other aggregates are left as
/// they are, for the planner to refuse, as ksqlDB refuses them over a table.
fn retracting(select: &mut datafusion::sql::sqlparser::ast::Select) {
    use datafusion::sql::sqlparser::ast::{
        DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    };
    let rewrite = |e: &mut Expr| {
        let Expr::Function(f) = &*e else {
            return std::ops::ControlFlow::<()>::Continue(());
        };
        let name = f.name.to_string().to_lowercase();
        let FunctionArguments::List(list) = &f.args else {
            return std::ops::ControlFlow::Continue(());
        };
        let plain = f.filter.is_none()
            && f.over.is_none()
            && list.clauses.is_empty()
            && !matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
        let arg = match list.args.as_slice() {
            [] => None,
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => None,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => Some(a.to_string()),
            _ => return std::ops::ControlFlow::Continue(()),
        };
        let counted = |a: &str| format!("sum(\"{SIGN}\" * CAST(({a}) IS NOT NULL AS BIGINT))");
        let sql = match (name.as_str(), arg) {
            _ if !plain => return std::ops::ControlFlow::Continue(()),
            ("count", None) => format!("sum(\"{SIGN}\")"),
            ("count", Some(a)) => counted(&a),
            ("sum", Some(a)) => format!("sum(({a}) * \"{SIGN}\")"),
            ("collect_list" | "collect_set", Some(a)) => format!("{name}({a}, \"{SIGN}\")"),
            ("avg", Some(a)) => format!(
                "CAST(sum(({a}) * \"{SIGN}\") AS DOUBLE) / NULLIF({}, 0)",
                counted(&a)
            ),
            _ => return std::ops::ControlFlow::Continue(()),
        };
        *e = Parser::new(&GenericDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_expr())
            .expect("a retracting aggregate parses");
        std::ops::ControlFlow::Continue(())
    };
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut select.projection, rewrite);
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut select.having, rewrite);
}

/// Makes each comparison (`=`, `<>`, `<`, `<=`, `>`, `>=`) of `select` false where one side is
/// NULL, as ksqlDB's are, rather than NULL: `SELECT a = b` gives false and `NOT (a = b)` keeps
/// the row. Where only truth counts (a condition of `WHERE`, `HAVING` or `CASE WHEN`, through
/// `AND` and `OR`) NULL acts as false already, so comparisons there stay as written, and so do
/// they in a join's `ON`, where an equality must stay a hash key.
fn null_comparisons_false(select: &mut datafusion::sql::sqlparser::ast::Select) {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut as visit;
    let _ = visit(&mut select.projection, falsify);
    let _ = visit(&mut select.selection, falsify);
    let _ = visit(&mut select.having, falsify);
    if let GroupByExpr::Expressions(keys, _) = &mut select.group_by {
        let _ = visit(keys, falsify);
    }
    for condition in [&mut select.selection, &mut select.having]
        .into_iter()
        .flatten()
    {
        as_written(condition);
    }
}

/// Wraps a comparison as `COALESCE((a = b), false)`; in a `CASE`, takes that back from its
/// conditions (see [`null_comparisons_false`]). Visits children first.
fn falsify(e: &mut Expr) -> std::ops::ControlFlow<()> {
    use datafusion::sql::sqlparser::ast::BinaryOperator as Op;
    match e {
        Expr::BinaryOp {
            op: Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq,
            ..
        } => {
            let compared = std::mem::replace(e, Expr::Identifier(Ident::new("_")));
            *e = Parser::new(&GenericDialect {})
                .try_with_sql(&format!("COALESCE(({compared}), false)"))
                .and_then(|mut p| p.parse_expr())
                .unwrap_or(compared);
        }
        Expr::Case { conditions, .. } => {
            for when in conditions {
                as_written(&mut when.condition);
            }
        }
        _ => {}
    }
    std::ops::ControlFlow::Continue(())
}

/// Takes back what [`falsify`] wrapped in a condition where only truth counts.
fn as_written(e: &mut Expr) {
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator as Op, FunctionArg, FunctionArgExpr, FunctionArguments,
    };
    match e {
        Expr::BinaryOp {
            op: Op::And | Op::Or,
            left,
            right,
        } => {
            as_written(left);
            as_written(right);
        }
        Expr::Nested(inner) => as_written(inner),
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("coalesce") => {
            let FunctionArguments::List(list) = &mut f.args else {
                return;
            };
            if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Nested(compared))), FunctionArg::Unnamed(FunctionArgExpr::Expr(last))] =
                list.args.as_mut_slice()
            {
                if last.to_string().eq_ignore_ascii_case("false") {
                    let compared =
                        std::mem::replace(compared.as_mut(), Expr::Identifier(Ident::new("_")));
                    *e = compared;
                }
            }
        }
        _ => {}
    }
}

/// A join condition as ksqlDB prints it: each comparison in parentheses, names upper-cased.
fn condition_text(e: &Expr) -> String {
    match e {
        Expr::BinaryOp { left, op, right } => {
            format!("({} {op} {})", condition_text(left), condition_text(right))
        }
        Expr::Nested(inner) => condition_text(inner),
        other => other.to_string().to_uppercase(),
    }
}

/// Takes the WINDOW clause and any trailing `EMIT CHANGES|FINAL` out of `sql`, then parses it.
pub(crate) fn parse(sql: &str) -> Result<Parsed> {
    let (sql, window, emit, within) = strip_window(sql)?;
    let (sql, partition_by) = strip_partition_by(&sql)?;
    let statements = Parser::parse_sql(&GenericDialect {}, &sql).map_err(|e| {
        Error::Syntax(
            e.to_string()
                .trim_start_matches("sql parser error: ")
                .to_string(),
        )
    })?;
    let [SqlStatement::Query(mut query)] = <[SqlStatement; 1]>::try_from(statements)
        .map_err(|_| Error::Syntax("expected one SELECT".into()))?
    else {
        return Err(Error::Syntax("expected a SELECT".into()));
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        name_expressions(&mut select.projection);
        null_comparisons_false(select);
    }
    crate::type_check::check_literals(&query)?;
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return Err(Error::Unsupported(
            "WITH, ORDER BY and LIMIT in a continuous query (a stream has no end to sort or limit; \
             use LIMIT after EMIT CHANGES in a push query)"
                .into(),
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(Error::Unsupported(
            "UNION and other set operations in a continuous query".into(),
        ));
    };
    let [from] = select.from.as_slice() else {
        return Err(Error::Unsupported(
            "a continuous query reads one stream: use JOIN … ON for tables".into(),
        ));
    };
    let (source, alias) = source_of(&from.relation)?;
    let (joined, joined_aliases) = from
        .joins
        .iter()
        .map(|j| match &j.relation {
            TableFactor::Table { name, alias, .. } => {
                let name = object_name(name);
                let alias = alias
                    .as_ref()
                    .map_or_else(|| name.clone(), |a| ident(&a.name));
                Ok((name, alias))
            }
            _ => Err(Error::Unsupported("joins with subqueries".into())),
        })
        .collect::<Result<(Vec<_>, Vec<_>)>>()?;
    for join in &from.joins {
        use datafusion::sql::sqlparser::ast::{BinaryOperator, JoinConstraint, JoinOperator};
        let (JoinOperator::Join(JoinConstraint::On(on))
        | JoinOperator::Inner(JoinConstraint::On(on))
        | JoinOperator::Left(JoinConstraint::On(on))
        | JoinOperator::LeftOuter(JoinConstraint::On(on))
        | JoinOperator::FullOuter(JoinConstraint::On(on))
        | JoinOperator::Right(JoinConstraint::On(on))
        | JoinOperator::RightOuter(JoinConstraint::On(on))) = &join.join_operator
        else {
            continue;
        };
        if matches!(
            on,
            Expr::BinaryOp {
                op: BinaryOperator::And,
                ..
            }
        ) {
            return Err(Error::Plan(format!(
                "Invalid join condition: joins on multiple conditions are not yet supported. Got \
                 {}.",
                condition_text(on)
            )));
        }
    }
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        GroupByExpr::All(_) => {
            return Err(Error::Unsupported(
                "GROUP BY ALL in a continuous query: name the grouping columns".into(),
            ))
        }
    };
    if !partition_by.is_empty() && (grouped || window.is_some()) {
        return Err(Error::Unsupported(
            "PARTITION BY in an aggregation: a table's key is its GROUP BY".into(),
        ));
    }
    if emit == Some(Emit::Final) && window.is_none() {
        return Err(Error::Unsupported(
            "EMIT FINAL without a WINDOW: only a window has a final result (when it closes)".into(),
        ));
    }
    if within.is_some() && joined.len() != 1 {
        return Err(Error::Unsupported(
            "WITHIN belongs to a join of two streams: FROM a JOIN b WITHIN 1 HOUR ON a.id = b.id \
             (one join per query)"
                .into(),
        ));
    }
    if within.is_some() && (grouped || window.is_some()) {
        return Err(Error::Unsupported(
            "aggregating a stream–stream join: write the join to a stream (CREATE STREAM … AS), \
             then aggregate that stream"
                .into(),
        ));
    }
    Ok(Parsed {
        query,
        window,
        within,
        source,
        alias,
        joined,
        joined_aliases,
        grouped,
        emit,
        partition_by,
        changelog: None,
        joined_changelog: None,
    })
}

/// A pull query's text, its unaliased expressions named as a continuous query names them
/// (`KSQL_COL_0`, …, `FIELD` for `s->field`), as ksqlDB names both. Text that is not one SELECT
/// or has nothing to name comes back as it is, for DataFusion to run (or report on) unchanged.
pub(crate) fn ksql_names(sql: &str) -> std::borrow::Cow<'_, str> {
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return sql.into();
    };
    let [SqlStatement::Query(query)] = statements.as_mut_slice() else {
        return sql.into();
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return sql.into();
    };
    let unnamed = |item: &SelectItem| {
        matches!(item, SelectItem::UnnamedExpr(e)
            if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)))
    };
    if !select.projection.iter().any(unnamed) {
        return sql.into();
    }
    name_expressions(&mut select.projection);
    statements[0].to_string().into()
}

/// Names the unaliased expressions of a SELECT list as ksqlDB names them: a STRUCT field read
/// with `->` by the field's name, anything else but a column `KSQL_COL_0`, `KSQL_COL_1`, … in
/// order; names already in the list are not given twice.
fn name_expressions(projection: &mut [SelectItem]) {
    use datafusion::sql::sqlparser::ast::{AccessExpr, Subscript};
    let mut used: std::collections::HashSet<String> = projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(ident(i)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts.last().map(ident),
            SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
            _ => None,
        })
        .collect();
    let mut next = 0;
    for item in projection.iter_mut() {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        // `s->f` arrives rewritten as `s['f']`.
        let field = match &*expr {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => continue,
            Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
                Some(AccessExpr::Subscript(Subscript::Index { index })) => {
                    let text = index.to_string();
                    (text.len() > 2 && text.starts_with('\'') && text.ends_with('\''))
                        .then(|| text[1..text.len() - 1].to_lowercase())
                }
                _ => None,
            },
            _ => None,
        };
        let name = match field {
            Some(field) => {
                let mut name = field.clone();
                let mut n = 0;
                while used.contains(&name) {
                    n += 1;
                    name = format!("{field}_{n}");
                }
                name
            }
            None => loop {
                let name = format!("ksql_col_{next}");
                next += 1;
                if !used.contains(&name) {
                    break name;
                }
            },
        };
        used.insert(name.clone());
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::new(name),
        };
    }
}

/// The stream a FROM relation reads, looking into subqueries, and the name its rows go by.
fn source_of(relation: &TableFactor) -> Result<(String, Option<String>)> {
    match relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let source = object_name(name);
            let alias = alias
                .as_ref()
                .map_or_else(|| source.clone(), |a| a.name.value.to_lowercase());
            Ok((source, Some(alias)))
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            let inner = match subquery.body.as_ref() {
                SetExpr::Select(select)
                    if select.from.len() == 1 && select.from[0].joins.is_empty() =>
                {
                    source_of(&select.from[0].relation)?.0
                }
                _ => {
                    return Err(Error::Unsupported(
                        "a subquery in FROM must read one stream (SELECT … FROM stream)".into(),
                    ))
                }
            };
            Ok((inner, alias.as_ref().map(|a| a.name.value.to_lowercase())))
        }
        _ => Err(Error::Unsupported(
            "a continuous query reads a stream by name, or a subquery over one".into(),
        )),
    }
}

/// Points the relation that reads the stream at `table`, keeping the name its rows go by.
pub(crate) fn rename(relation: &mut TableFactor, table: &str) {
    match relation {
        TableFactor::Table { name, alias, .. } => {
            let original = object_name(name);
            *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
                '"', table,
            ))]);
            if alias.is_none() {
                *alias = Some(TableAlias {
                    explicit: true,
                    name: Ident::with_quote('"', original),
                    columns: vec![],
                    at: None,
                });
            }
        }
        TableFactor::Derived { subquery, .. } => {
            if let SetExpr::Select(select) = subquery.body.as_mut() {
                rename(&mut select.from[0].relation, table);
            }
        }
        _ => {}
    }
}

/// Whether `a` and `b` are the same expression, column references compared by the names
/// DataFusion resolves them to (`o.id` is `"o"."id"`).
fn same_reference(a: &Expr, b: &Expr) -> bool {
    match (a, b) {
        (Expr::Identifier(x), Expr::Identifier(y)) => ident(x) == ident(y),
        (Expr::CompoundIdentifier(x), Expr::CompoundIdentifier(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| ident(x) == ident(y))
        }
        _ => a == b,
    }
}

/// An identifier as DataFusion names it: lower-cased unless quoted.
fn ident(i: &Ident) -> String {
    if i.quote_style.is_none() {
        i.value.to_lowercase()
    } else {
        i.value.clone()
    }
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) if i.quote_style.is_none() => i.value.to_lowercase(),
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

impl Parsed {
    /// The relations it reads: its source stream, then the tables joined to it.
    pub(crate) fn relations(&self) -> Vec<String> {
        std::iter::once(self.source.clone())
            .chain(self.joined.iter().cloned())
            .collect()
    }

    fn select_mut(query: &mut Query) -> &mut datafusion::sql::sqlparser::ast::Select {
        match query.body.as_mut() {
            SetExpr::Select(select) => select,
            _ => unreachable!("checked in parse"),
        }
    }

    /// For each GROUP BY expression (or the PARTITION BY one), the output column that selects
    /// it, if one does: ksqlDB writes those as the record key.
    pub(crate) fn key_names(&self) -> Vec<(String, Option<String>)> {
        self.key_selections()
            .into_iter()
            .map(|(key, names)| (key, names.into_iter().next()))
            .collect()
    }

    /// For each GROUP BY expression (or the PARTITION BY one), every output column that
    /// selects it, in the order selected (`*` last).
    pub(crate) fn key_selections(&self) -> Vec<(String, Vec<String>)> {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return Vec::new();
        };
        let primary: Vec<Expr>;
        let keys = match (&self.partition_by, &select.group_by, &self.changelog) {
            (keys, _, _) if !keys.is_empty() => keys.as_slice(),
            (_, GroupByExpr::Expressions(keys, _), Some(changelog)) if keys.is_empty() => {
                primary = changelog
                    .keys
                    .iter()
                    .map(|k| Expr::Identifier(Ident::with_quote('"', k)))
                    .collect();
                primary.as_slice()
            }
            (_, GroupByExpr::Expressions(keys, _), _) => keys.as_slice(),
            (_, GroupByExpr::All(_), _) => return Vec::new(),
        };
        let last = |e: &Expr| match e {
            Expr::Identifier(i) => Some(ident(i)),
            Expr::CompoundIdentifier(parts) => parts.last().map(ident),
            _ => None,
        };
        // `a.id` and `b.id` of a join are two columns; `id` is either.
        let same = |a: &Expr, b: &Expr| match (a, b) {
            (Expr::CompoundIdentifier(x), Expr::CompoundIdentifier(y)) => {
                x.iter().map(ident).eq(y.iter().map(ident))
            }
            _ => a == b || (last(a).is_some() && last(a) == last(b)),
        };
        let wildcard = select.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        keys.iter()
            .map(|key| {
                let mut names: Vec<String> = select
                    .projection
                    .iter()
                    .filter_map(|item| match item {
                        SelectItem::UnnamedExpr(e) if same(e, key) => last(e),
                        SelectItem::ExprWithAlias { expr, alias } if same(expr, key) => {
                            Some(ident(alias))
                        }
                        _ => None,
                    })
                    .collect();
                // `*` selects a column under its own name.
                if let Some(own) = wildcard.then(|| last(key)).flatten() {
                    if !names.contains(&own) {
                        names.push(own);
                    }
                }
                (key.to_string(), names)
            })
            .collect()
    }

    /// Whether its SELECT list has a `*` (or `a.*`).
    pub(crate) fn selects_all(&self) -> bool {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return false;
        };
        select.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
    }

    /// `expr` as ksqlDB prints it in messages: upper case, each column qualified by the name
    /// its source goes by (`ABS(INPUT.ID)`).
    pub(crate) fn qualified(&self, expr: &Expr) -> String {
        let by = self.alias.clone().unwrap_or_else(|| self.source.clone());
        let mut expr = expr.clone();
        let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut expr, |e| {
            if let Expr::Identifier(i) = e {
                *e = Expr::CompoundIdentifier(vec![Ident::new(by.clone()), i.clone()]);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        expr.to_string().to_uppercase()
    }

    /// Whether it only projects and filters its source's rows one by one: no aggregation
    /// clause, join or `PARTITION BY`.
    pub(crate) fn is_projection(&self) -> bool {
        self.partition_by.is_empty() && self.row_by_row()
    }

    /// Whether each of its output rows comes from one row of one stream: no aggregation
    /// clause, join, or table's changes.
    fn row_by_row(&self) -> bool {
        !self.grouped
            && self.window.is_none()
            && self.within.is_none()
            && self.joined.is_empty()
            && self.changelog.is_none()
    }

    /// Refuses, with ksqlDB's messages, a join of the stream to table `table` (joined `index`th,
    /// under `alias`, keyed by `keys`) that ksqlDB refuses: a FULL or RIGHT join, and a
    /// condition that does not name the table's PRIMARY KEY on one side.
    pub(crate) fn check_stream_table_join(
        &self,
        index: usize,
        table: &str,
        alias: &str,
        keys: &[String],
    ) -> Result<()> {
        use datafusion::sql::sqlparser::ast::{BinaryOperator, JoinConstraint, JoinOperator};
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return Ok(());
        };
        let Some(join) = select.from.first().and_then(|f| f.joins.get(index)) else {
            return Ok(());
        };
        let (source, table) = (self.source.to_uppercase(), table.to_uppercase());
        // A refused join: ksqlDB's name for its kind, and how it shows it.
        let (refused, on) = match &join.join_operator {
            JoinOperator::FullOuter(JoinConstraint::On(on)) => {
                (Some(("full-outer", "[FULL] OUTER")), on)
            }
            JoinOperator::Right(JoinConstraint::On(on))
            | JoinOperator::RightOuter(JoinConstraint::On(on)) => (Some(("right", "RIGHT")), on),
            JoinOperator::Join(JoinConstraint::On(on))
            | JoinOperator::Inner(JoinConstraint::On(on))
            | JoinOperator::Left(JoinConstraint::On(on))
            | JoinOperator::LeftOuter(JoinConstraint::On(on)) => (None, on),
            _ => return Ok(()),
        };
        if let Some((kind, written)) = refused {
            return Err(Error::Plan(format!(
                "Invalid join type: {kind} join not supported for stream-table join. Got \
                 {source} {written} JOIN {table}."
            )));
        }
        // The table's key column, as the condition may name it: alone, or after the table's
        // name or alias.
        let is_key = |e: &Expr| {
            let key = |i: &Ident| keys.iter().any(|k| *k == ident(i));
            match e {
                Expr::Identifier(i) => key(i),
                Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                    [relation, column] => {
                        let r = ident(relation);
                        (r == alias.to_lowercase() || r == table.to_lowercase()) && key(column)
                    }
                    _ => false,
                },
                _ => false,
            }
        };
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = on
        {
            // The whole key: one column of a table with one.
            if keys.len() == 1 && (is_key(left) || is_key(right)) {
                return Ok(());
            }
        }
        Err(Error::Plan(format!(
            "Invalid join condition: stream-table joins require to join on the table's primary \
             key. Got {}.",
            on.to_string().to_uppercase()
        )))
    }

    /// Refuses, with ksqlDB's messages, a selected column that ksqlDB cannot write: a bare
    /// `NULL` (of no type), and one aliased with a pseudo column's name: `ROWTIME`, and
    /// `WINDOWSTART` or `WINDOWEND` outside a windowed aggregation (where they are its window's
    /// bounds).
    pub(crate) fn check_projection(&self) -> Result<()> {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return Ok(());
        };
        for item in &select.projection {
            let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
            else {
                continue;
            };
            if matches!(expr, Expr::Value(v) if v.value == datafusion::sql::sqlparser::ast::Value::Null)
            {
                return Err(Error::Plan(
                    "Can't infer a type of null. Please explicitly cast it to a required type, \
                     e.g. CAST(null AS VARCHAR)."
                        .into(),
                ));
            }
            let SelectItem::ExprWithAlias { alias, .. } = item else {
                continue;
            };
            let name = ident(alias);
            let reserved = name == "rowtime"
                || (self.window.is_none() && (name == "windowstart" || name == "windowend"));
            if reserved {
                return Err(Error::Plan(format!(
                    "Reserved column name in select: `{}`. Please remove or alias the column.",
                    alias.value.to_uppercase()
                )));
            }
            if RECORD_PLACE.contains(&name.as_str()) {
                return Err(Error::Plan(format!(
                    "`{}` is a reserved column name. You cannot use it as an alias for a column.",
                    name.to_uppercase()
                )));
            }
        }
        Ok(())
    }

    /// What its joins are keyed by, as ksqlDB keys them, when every join is `ON a = b`: both
    /// sides of a single join, the FROM relation's column first and an expression last; for
    /// several, the columns of the last join's condition and every
    /// column an earlier join makes equal to one of them, in the order they are written.
    pub(crate) fn join_keys(&self) -> Option<Vec<Expr>> {
        use datafusion::sql::sqlparser::ast::{BinaryOperator, JoinConstraint, JoinOperator};
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return None;
        };
        let mut equalities: Vec<[Expr; 2]> = Vec::new();
        for join in &select.from.first()?.joins {
            let (JoinOperator::Join(JoinConstraint::On(on))
            | JoinOperator::Inner(JoinConstraint::On(on))
            | JoinOperator::Left(JoinConstraint::On(on))
            | JoinOperator::LeftOuter(JoinConstraint::On(on))) = &join.join_operator
            else {
                return None;
            };
            let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = on
            else {
                return None;
            };
            equalities.push([(**left).clone(), (**right).clone()]);
        }
        let (last, earlier) = equalities.split_last()?;
        if earlier.is_empty() {
            // As ksqlDB keys a join: by the FROM relation's column, else the other's column.
            let from = self.alias.clone().unwrap_or_else(|| self.source.clone());
            let rank = |e: &Expr| match e {
                Expr::CompoundIdentifier(p) if p.len() == 2 && ident(&p[0]) == from => 0,
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => 1,
                _ => 2,
            };
            let mut pair = last.to_vec();
            pair.sort_by_key(rank);
            return Some(pair);
        }
        let column = |e: &Expr| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
        let mut keys: Vec<Expr> = last.iter().filter(|e| column(e)).cloned().collect();
        // Widen to what earlier joins make equal to a key, until nothing more comes.
        let mut grown = true;
        while grown {
            grown = false;
            for [a, b] in earlier {
                for (x, y) in [(a, b), (b, a)] {
                    let known = |e: &Expr| keys.iter().any(|k| same_reference(k, e));
                    if known(x) && column(y) && !known(y) {
                        keys.push(y.clone());
                        grown = true;
                    }
                }
            }
        }
        // In the order the conditions write them.
        let written: Vec<Expr> = equalities.iter().flatten().cloned().collect();
        let mut ordered: Vec<Expr> = Vec::new();
        for e in &written {
            let key = keys.iter().any(|k| same_reference(k, e));
            if key && !ordered.iter().any(|o| same_reference(o, e)) {
                ordered.push(e.clone());
            }
        }
        (!ordered.is_empty()).then_some(ordered)
    }

    /// The output columns that select `expr` as it is, by name or under an alias.
    pub(crate) fn names_selecting(&self, expr: &Expr) -> Vec<String> {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return Vec::new();
        };
        select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::UnnamedExpr(e) if same_reference(e, expr) => match e {
                    Expr::Identifier(i) => Some(ident(i)),
                    Expr::CompoundIdentifier(parts) => parts.last().map(ident),
                    _ => None,
                },
                SelectItem::ExprWithAlias { expr: e, alias } if same_reference(e, expr) => {
                    Some(ident(alias))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether an output column selects `expr` as it is (by itself, or under an alias).
    pub(crate) fn selects(&self, expr: &Expr) -> bool {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return false;
        };
        select.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                same_reference(e, expr)
            }
            _ => false,
        })
    }

    /// Names a join's columns as ksqlDB does: a reference `a.col` to a column that more than
    /// one of the joined relations has is named `a_col` (unless aliased), and `*` (or `a.*`)
    /// stands for each relation's columns, each named `alias_col`, `rowtime` left out.
    /// `columns` holds each relation's alias and columns, in FROM order.
    pub(crate) fn name_join_columns(&mut self, columns: &[(String, Vec<String>)]) {
        let shared = |c: &str| {
            columns
                .iter()
                .filter(|(_, cols)| cols.iter().any(|x| x.eq_ignore_ascii_case(c)))
                .count()
                > 1
        };
        let prefixed = |alias: &str, column: &str| SelectItem::ExprWithAlias {
            expr: Expr::CompoundIdentifier(vec![
                Ident::with_quote('"', alias),
                Ident::with_quote('"', column),
            ]),
            alias: Ident::with_quote('"', format!("{alias}_{column}")),
        };
        let every = |only: Option<&str>| -> Vec<SelectItem> {
            columns
                .iter()
                .filter(|(alias, _)| only.is_none_or(|o| o.eq_ignore_ascii_case(alias)))
                .flat_map(|(alias, cols)| {
                    cols.iter()
                        .filter(|c| c.as_str() != "rowtime")
                        .map(|c| prefixed(alias, c))
                })
                .collect()
        };
        let select = Self::select_mut(&mut self.query);
        let items = std::mem::take(&mut select.projection);
        for item in items {
            match item {
                SelectItem::Wildcard(_) => select.projection.extend(every(None)),
                SelectItem::QualifiedWildcard(
                    datafusion::sql::sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(
                        name,
                    ),
                    _,
                ) => select.projection.extend(every(Some(&object_name(&name)))),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts))
                    if parts.len() == 2 && shared(&ident(&parts[1])) =>
                {
                    let alias = format!("{}_{}", ident(&parts[0]), ident(&parts[1]));
                    select.projection.push(SelectItem::ExprWithAlias {
                        expr: Expr::CompoundIdentifier(parts),
                        alias: Ident::with_quote('"', alias),
                    });
                }
                other => select.projection.push(other),
            }
        }
    }

    /// Expands a bare `*` of a query with `PARTITION BY` as ksqlDB does, whose repartition
    /// comes before the projection: the source's value columns (`columns` less `keys`), then
    /// its former key columns, then `rowtime`.
    pub(crate) fn star_after_repartition(&mut self, columns: &[String], keys: &[String]) {
        let is_key = |c: &String| keys.iter().any(|k| k.eq_ignore_ascii_case(c));
        let column =
            |c: &String| SelectItem::UnnamedExpr(Expr::Identifier(Ident::with_quote('"', c)));
        let values = columns
            .iter()
            .filter(|c| !is_key(c) && c.as_str() != "rowtime");
        let rowtime = columns.iter().filter(|c| c.as_str() == "rowtime");
        let order: Vec<&String> = values.chain(keys).chain(rowtime).collect();
        let select = Self::select_mut(&mut self.query);
        let items = std::mem::take(&mut select.projection);
        for item in items {
            match item {
                SelectItem::Wildcard(_) => {
                    select.projection.extend(order.iter().map(|c| column(c)))
                }
                other => select.projection.push(other),
            }
        }
    }

    /// Whether a stream's record without a value comes out of it as one without a value, as
    /// ksqlDB passes one through a projection and `PARTITION BY`; a filter, an aggregation or
    /// a join drops it.
    pub(crate) fn passes_null_values(&self) -> bool {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return false;
        };
        select.selection.is_none() && self.row_by_row()
    }

    /// For each of `columns` (its source's), the names of the output columns that select it
    /// as it is: by name, under an alias, or through `*`.
    pub(crate) fn selections_of(&self, columns: &[String]) -> Vec<Vec<String>> {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return vec![Vec::new(); columns.len()];
        };
        let names = |e: &Expr, c: &str| match e {
            Expr::Identifier(i) => ident(i).eq_ignore_ascii_case(c),
            Expr::CompoundIdentifier(parts) => {
                parts.len() == 2
                    && parts
                        .last()
                        .is_some_and(|i| ident(i).eq_ignore_ascii_case(c))
            }
            _ => false,
        };
        columns
            .iter()
            .map(|c| {
                select
                    .projection
                    .iter()
                    .filter_map(|item| match item {
                        SelectItem::UnnamedExpr(e) if names(e, c) => Some(c.clone()),
                        SelectItem::ExprWithAlias { expr, alias } if names(expr, c) => {
                            Some(ident(alias))
                        }
                        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                            Some(c.clone())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    /// Its `GROUP BY` expressions, as SQL text; empty without one.
    pub(crate) fn group_exprs(&self) -> Vec<String> {
        match self.query.body.as_ref() {
            SetExpr::Select(select) => match &select.group_by {
                GroupByExpr::Expressions(keys, _) => keys.iter().map(Expr::to_string).collect(),
                GroupByExpr::All(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Whether it reads its source directly (no subquery, no join) and groups by each of
    /// `columns` as it is: then all rows of a group come from one partition of a topic keyed by
    /// those columns.
    pub(crate) fn groups_by_columns(&self, columns: &[String]) -> bool {
        let SetExpr::Select(select) = self.query.body.as_ref() else {
            return false;
        };
        let direct = self.joined.is_empty()
            && select.from.len() == 1
            && select.from[0].joins.is_empty()
            && matches!(select.from[0].relation, TableFactor::Table { .. });
        let GroupByExpr::Expressions(keys, _) = &select.group_by else {
            return false;
        };
        let names = |c: &String| {
            keys.iter().any(|k| match k {
                Expr::Identifier(i) => ident(i).eq_ignore_ascii_case(c),
                Expr::CompoundIdentifier(parts) => parts
                    .last()
                    .is_some_and(|i| ident(i).eq_ignore_ascii_case(c)),
                _ => false,
            })
        };
        direct && !columns.is_empty() && columns.iter().all(names)
    }

    /// The query with its source renamed to `table` (keeping the name rows go by).
    fn reading(&self, table: &str) -> Box<Query> {
        let mut query = self.query.clone();
        let select = Self::select_mut(&mut query);
        rename(&mut select.from[0].relation, table);
        query
    }

    fn rowtime(&self) -> Expr {
        // A pair of rows of two streams happened when its later row did, as in ksqlDB.
        if let (Some(_), Some(right)) = (&self.within, self.joined_aliases.first()) {
            let alias = self.alias.clone().unwrap_or_else(|| self.source.clone());
            return Parser::new(&GenericDialect {})
                .try_with_sql(&format!(
                    "greatest(\"{}\".rowtime, \"{}\".rowtime)",
                    alias.replace('"', "\"\""),
                    right.replace('"', "\"\"")
                ))
                .and_then(|mut p| p.parse_expr())
                .expect("greatest(rowtime, rowtime) parses");
        }
        match &self.alias {
            Some(alias) => {
                Expr::CompoundIdentifier(vec![Ident::with_quote('"', alias), Ident::new("rowtime")])
            }
            None => Expr::Identifier(Ident::new("rowtime")),
        }
    }

    /// The user's SQL, reading `table`.
    pub(crate) fn plain_sql(&self, table: &str) -> String {
        self.reading(table).to_string()
    }

    /// SQL of a query without state: the user's, reading `table`, with the source's `rowtime`
    /// carried through so output rows keep their event time.
    pub(crate) fn stateless_sql(&self, table: &str) -> (String, bool) {
        let mut query = self.reading(table);
        let select = Self::select_mut(&mut query);
        let has_rowtime = select.projection.iter().any(|item| match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.eq_ignore_ascii_case("rowtime"),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts
                .last()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("rowtime")),
            SelectItem::ExprWithAlias { alias, .. } => alias.value.eq_ignore_ascii_case("rowtime"),
            _ => false,
        });
        if !has_rowtime {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: self.rowtime(),
                alias: Ident::new("rowtime"),
            });
        }
        if let Some(changelog) = &self.changelog {
            self.changes_of(select, changelog);
        } else if !self.partition_by.is_empty() {
            for (i, key) in self.partition_by.iter().enumerate() {
                select.projection.push(SelectItem::ExprWithAlias {
                    expr: key.clone(),
                    alias: Ident::with_quote('"', format!("{HIDDEN}k{i}")),
                });
            }
            select.projection.push(SelectItem::ExprWithAlias {
                expr: Expr::Value(datafusion::sql::sqlparser::ast::Value::Boolean(false).into()),
                alias: Ident::with_quote('"', format!("{HIDDEN}deleted")),
            });
        }
        (query.to_string(), !has_rowtime)
    }

    /// SQL of a join of two tables' rows, `left` and `right` read for the source and the
    /// joined table: the user's query, with its rowtime (the later of the two rows') and its
    /// key as `__eddy_k0` (the source's key for a `foreign`-key join, else the join key,
    /// either side's for rows one side lacks), never deleted: keys that changed and are
    /// missing from its result are the deleted ones.
    pub(crate) fn table_join_sql(
        &self,
        left: &str,
        right: &str,
        foreign: bool,
    ) -> Result<(String, bool)> {
        let (Some(l), Some(r)) = (&self.changelog, &self.joined_changelog) else {
            return Err(Error::Plan(
                "a table–table join needs both tables' keys".into(),
            ));
        };
        let quoted = |relation: &str, column: &str| {
            format!(
                "\"{}\".\"{}\"",
                relation.replace('"', "\"\""),
                column.replace('"', "\"\"")
            )
        };
        let aliases = [
            self.alias.clone().unwrap_or_else(|| self.source.clone()),
            self.joined_aliases[0].clone(),
        ];
        let mut query = self.reading(left);
        let select = Self::select_mut(&mut query);
        rename(&mut select.from[0].joins[0].relation, right);
        let selected_rowtime = select.projection.iter().any(|item| match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.eq_ignore_ascii_case("rowtime"),
            SelectItem::ExprWithAlias { alias, .. } => alias.value.eq_ignore_ascii_case("rowtime"),
            _ => false,
        });
        let parse = |sql: &str| {
            Parser::new(&GenericDialect {})
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_expr())
                .expect("generated SQL parses")
        };
        if !selected_rowtime {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: parse(&format!(
                    "greatest({}, {})",
                    quoted(&aliases[0], "rowtime"),
                    quoted(&aliases[1], "rowtime")
                )),
                alias: Ident::new("rowtime"),
            });
        }
        // A foreign-key join is keyed by the source's key; a primary-key join by the key
        // both share (either side's, in a full outer join).
        let key = match foreign {
            true => quoted(&aliases[0], &l.keys[0]),
            false => format!(
                "COALESCE({}, {})",
                quoted(&aliases[0], &l.keys[0]),
                quoted(&aliases[1], &r.keys[0])
            ),
        };
        select.projection.push(SelectItem::ExprWithAlias {
            expr: parse(&key),
            alias: Ident::with_quote('"', format!("{HIDDEN}k0")),
        });
        select.projection.push(SelectItem::ExprWithAlias {
            expr: Expr::Value(datafusion::sql::sqlparser::ast::Value::Boolean(false).into()),
            alias: Ident::with_quote('"', format!("{HIDDEN}deleted")),
        });
        Ok((query.to_string(), !selected_rowtime))
    }

    /// Makes `select`, over a table's records, emit a change per record: its key columns as
    /// `__eddy_k0…`, and `__eddy_deleted` for a record that deletes its key (no value) or
    /// does not pass WHERE, as ksqlDB forwards a tombstone for each. Records without a key are
    /// dropped, as ksqlDB drops them.
    fn changes_of(
        &self,
        select: &mut datafusion::sql::sqlparser::ast::Select,
        changelog: &Changelog,
    ) {
        let relation = self.alias.clone().unwrap_or_else(|| self.source.clone());
        let column = |c: &str| {
            format!(
                "\"{}\".\"{}\"",
                relation.replace('"', "\"\""),
                c.replace('"', "\"\"")
            )
        };
        let parse = |sql: &str| {
            Parser::new(&GenericDialect {})
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_expr())
                .expect("generated SQL parses")
        };
        for (i, key) in changelog.keys.iter().enumerate() {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: parse(&column(key)),
                alias: Ident::with_quote('"', format!("{HIDDEN}k{i}")),
            });
        }
        let no_value = if changelog.values.is_empty() {
            "false".to_string()
        } else {
            changelog
                .values
                .iter()
                .map(|v| format!("{} IS NULL", column(v)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let deleted = match select.selection.take() {
            Some(filter) => format!("NOT COALESCE(({filter}), false) OR ({no_value})"),
            None => no_value,
        };
        select.projection.push(SelectItem::ExprWithAlias {
            expr: parse(&deleted),
            alias: Ident::with_quote('"', format!("{HIDDEN}deleted")),
        });
        let keyed = changelog
            .keys
            .iter()
            .map(|k| format!("{} IS NOT NULL", column(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        select.selection = (!keyed.is_empty()).then(|| parse(&keyed));
    }

    /// SQL of a windowed query's first step: the source's rows that pass WHERE, with the
    /// GROUP BY keys as `__key0…` (session windows are per key).
    ///
    /// Over a join, the rows are the stream's columns (`stream`) and the joined tables' columns
    /// in `carried`: `(alias, column, name in the rows)`.
    pub(crate) fn filter_sql(
        &self,
        table: &str,
        stream: &[String],
        carried: &[(String, String, String)],
    ) -> (String, usize) {
        let mut query = self.reading(table);
        let select = Self::select_mut(&mut query);
        let keys = match &select.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs.clone(),
            GroupByExpr::All(_) => vec![],
        };
        select.projection = if carried.is_empty() {
            vec![SelectItem::Wildcard(Default::default())]
        } else {
            let alias = self.alias.clone().unwrap_or_default();
            let column = |relation: &str, column: &str, name: &str| SelectItem::ExprWithAlias {
                expr: Expr::CompoundIdentifier(vec![
                    Ident::with_quote('"', relation),
                    Ident::with_quote('"', column),
                ]),
                alias: Ident::with_quote('"', name),
            };
            stream
                .iter()
                .map(|c| column(&alias, c, c))
                .chain(carried.iter().map(|(r, c, n)| column(r, c, n)))
                .collect()
        };
        for (i, key) in keys.iter().enumerate() {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: key.clone(),
                alias: Ident::new(format!("__key{i}")),
            });
        }
        select.group_by = GroupByExpr::Expressions(vec![], vec![]);
        select.having = None;
        (query.to_string(), keys.len())
    }

    /// SQL of an aggregation over the rows in `table` (a windowed query's have `windowstart`
    /// and `windowend` columns). After the user's columns come the output's `rowtime` (the
    /// latest event time of the group and window) and the hidden columns that name each row's
    /// group: `__eddy_k0…` for the GROUP BY keys, then `__eddy_ws` and `__eddy_we`.
    ///
    /// Over a join, the joined tables are gone from FROM: references to their columns are
    /// rewritten to the names `carried` gave them in the rows.
    pub(crate) fn aggregate_sql(
        &self,
        table: &str,
        carried: &[(String, String, String)],
    ) -> String {
        let mut query = self.reading(table);
        let select = Self::select_mut(&mut query);
        select.selection = None;
        if !carried.is_empty() {
            select.from[0].joins.clear();
            // A selected column keeps its name when its reference is rewritten.
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(expr @ Expr::CompoundIdentifier(_)) = item {
                    let Expr::CompoundIdentifier(parts) = &*expr else {
                        unreachable!()
                    };
                    let alias = parts.last().expect("a column").clone();
                    *item = SelectItem::ExprWithAlias {
                        expr: expr.clone(),
                        alias,
                    };
                }
            }
            let rewrite = |e: &mut Expr| {
                if let Expr::CompoundIdentifier(parts) = e {
                    if let [relation, column] = parts.as_slice() {
                        let (relation, column) = (ident(relation), ident(column));
                        if let Some((_, _, name)) = carried
                            .iter()
                            .find(|(r, c, _)| *r == relation && *c == column)
                        {
                            *e = Expr::Identifier(Ident::with_quote('"', name));
                        }
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            };
            let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(select, rewrite);
        }
        if self.changelog.is_some() {
            retracting(select);
        }
        let keys = match &mut select.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                let keys = exprs.clone();
                if self.window.is_some() {
                    exprs.extend(
                        ["windowstart", "windowend"].map(|c| Expr::Identifier(Ident::new(c))),
                    );
                }
                keys
            }
            GroupByExpr::All(_) => unreachable!("refused in parse"),
        };
        let hidden = |expr: Expr, name: String| SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', name),
        };
        // As Kafka Streams times an aggregate's record: by the latest event in its group (and
        // window, a session's being its end).
        select.projection.push(hidden(
            Parser::new(&GenericDialect {})
                .try_with_sql(&format!("max({})", self.rowtime()))
                .and_then(|mut p| p.parse_expr())
                .expect("max(rowtime) parses"),
            "rowtime".into(),
        ));
        for (i, key) in keys.into_iter().enumerate() {
            select.projection.push(hidden(key, format!("{HIDDEN}k{i}")));
        }
        if self.window.is_some() {
            select.projection.push(hidden(
                Expr::Identifier(Ident::new("windowstart")),
                format!("{HIDDEN}ws"),
            ));
            select.projection.push(hidden(
                Expr::Identifier(Ident::new("windowend")),
                format!("{HIDDEN}we"),
            ));
        }
        query.to_string()
    }
}

/// The prefix of columns the engine adds to an aggregation's output to name each row's group.
pub(crate) const HIDDEN: &str = "__eddy_";

/// The statement's tokens, whitespace included, with their positions.
fn tokenize(sql: &str) -> Result<Vec<datafusion::sql::sqlparser::tokenizer::TokenWithSpan>> {
    Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(Error::tokenizer)
}

/// The unquoted word at `i`, upper-cased (a keyword candidate).
fn keyword(
    tokens: &[datafusion::sql::sqlparser::tokenizer::TokenWithSpan],
    i: usize,
) -> Option<String> {
    match tokens.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
        _ => None,
    }
}

/// `token` as SQL text again. The tokenizer's own `Display` writes a string literal or quoted
/// name without doubling the quotes inside it (`'a''b'` would come back as `'a'b'`).
fn token_text(token: &Token) -> String {
    match token {
        Token::SingleQuotedString(s) => format!("'{}'", s.replace('\'', "''")),
        Token::Word(w) => match w.quote_style {
            Some(q) => {
                let close = if q == '[' { ']' } else { q };
                let inner = w.value.replace(close, &format!("{close}{close}"));
                format!("{q}{inner}{close}")
            }
            None => w.value.clone(),
        },
        other => other.to_string(),
    }
}

/// Removes a trailing `PARTITION BY expr, …` (the statement's last clause once EMIT is gone).
fn strip_partition_by(sql: &str) -> Result<(String, Vec<Expr>)> {
    let tokens = tokenize(sql)?;
    let word = |i: usize| keyword(&tokens, i);
    let mut depth = 0i32;
    for i in 0..tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth != 0 || word(i).as_deref() != Some("PARTITION") {
            continue;
        }
        let mut k = i + 1;
        while matches!(tokens.get(k).map(|t| &t.token), Some(Token::Whitespace(_))) {
            k += 1;
        }
        if word(k).as_deref() != Some("BY") {
            continue;
        }
        let head: String = tokens[..i].iter().map(|t| token_text(&t.token)).collect();
        let tail: String = tokens[k + 1..]
            .iter()
            .map(|t| token_text(&t.token))
            .collect();
        let exprs = Parser::new(&GenericDialect {})
            .try_with_sql(tail.trim())
            .and_then(|mut p| {
                let e = p.parse_comma_separated(|p| p.parse_expr())?;
                p.expect_token(&Token::EOF)?;
                Ok(e)
            })
            .map_err(|_| {
                Error::Syntax(format!(
                    "PARTITION BY takes expressions separated by commas and ends the query \
                     (before EMIT), found 'PARTITION BY {}'",
                    tail.trim()
                ))
            })?;
        return Ok((head.trim().to_string(), exprs));
    }
    Ok((sql.to_string(), Vec::new()))
}

/// What [`strip_window`] takes out of a query.
type Stripped = (
    String,
    Option<Window>,
    Option<Emit>,
    Option<crate::join_within::Within>,
);

/// Removes `WINDOW kind (…)`, a join's `WITHIN …` and a trailing `EMIT CHANGES|FINAL`,
/// returning them.
fn strip_window(sql: &str) -> Result<Stripped> {
    let tokens = tokenize(sql)?;
    let word = |i: usize| keyword(&tokens, i);
    let next = |mut i: usize| {
        while matches!(tokens.get(i).map(|t| &t.token), Some(Token::Whitespace(_))) {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(sql.len());
    let mut window = None;
    let mut emit = None;
    let mut within = None;
    let mut i = 0;
    while i < tokens.len() {
        let here = word(i);
        if here.as_deref() == Some("WITHIN") {
            if let Some((spec, end)) = crate::join_within::parse_within(&tokens, i)? {
                if within.is_some() {
                    return Err(Error::Unsupported(
                        "more than one WITHIN: a query joins two streams at most".into(),
                    ));
                }
                within = Some(spec);
                out.push(' ');
                i = end;
                continue;
            }
        }
        if here.as_deref() == Some("WINDOW") {
            let k = next(i + 1);
            if let Some(kind @ ("TUMBLING" | "HOPPING" | "SESSION")) = word(k).as_deref() {
                if window.is_some() {
                    return Err(Error::Syntax(
                        "a query has at most one WINDOW clause".into(),
                    ));
                }
                let open = next(k + 1);
                if tokens.get(open).map(|t| &t.token) != Some(&Token::LParen) {
                    return Err(at(&tokens, open, "'(' after WINDOW ".to_string() + kind));
                }
                let close = (open..tokens.len())
                    .find(|&j| tokens[j].token == Token::RParen)
                    .ok_or_else(|| {
                        at(
                            &tokens,
                            tokens.len(),
                            "')' closing the WINDOW clause".into(),
                        )
                    })?;
                let inner: Vec<_> = tokens[open + 1..close]
                    .iter()
                    .filter(|t| !matches!(t.token, Token::Whitespace(_)))
                    .cloned()
                    .collect();
                window = Some(window_spec(kind, &inner)?);
                out.push(' ');
                i = close + 1;
                continue;
            }
        }
        if here.as_deref() == Some("EMIT") {
            let k = next(i + 1);
            if let Some(mode @ ("CHANGES" | "FINAL")) = word(k).as_deref() {
                let end = next(k + 1);
                let rest_empty = end >= tokens.len()
                    || (tokens[end].token == Token::SemiColon && next(end + 1) >= tokens.len());
                if rest_empty {
                    emit = Some(if mode == "FINAL" {
                        Emit::Final
                    } else {
                        Emit::Changes
                    });
                    break;
                }
            }
        }
        out.push_str(&token_text(&tokens[i].token));
        i += 1;
    }
    Ok((
        out.trim().trim_end_matches(';').to_string(),
        window,
        emit,
        within,
    ))
}

fn at(
    tokens: &[datafusion::sql::sqlparser::tokenizer::TokenWithSpan],
    i: usize,
    expected: String,
) -> Error {
    Error::syntax_at(tokens.get(i), tokens.last(), &expected)
}

/// Parses `SIZE 2 MINUTES, ADVANCE BY 30 SECONDS, GRACE PERIOD 10 SECONDS` and the like.
fn window_spec(
    kind: &str,
    t: &[datafusion::sql::sqlparser::tokenizer::TokenWithSpan],
) -> Result<Window> {
    let word = |i: usize| match t.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.value.to_uppercase()),
        _ => None,
    };
    let mut size = None;
    let mut advance = None;
    let mut grace = None;
    let mut retention = None;
    let mut i = 0;
    while i < t.len() {
        let (slot, skip) = match word(i).as_deref() {
            Some("SIZE") => (&mut size, 1),
            Some("ADVANCE") if word(i + 1).as_deref() == Some("BY") => (&mut advance, 2),
            Some("GRACE") if word(i + 1).as_deref() == Some("PERIOD") => (&mut grace, 2),
            Some("RETENTION") => (&mut retention, 1),
            None if kind == "SESSION" && i == 0 => (&mut size, 0),
            _ => {
                return Err(at(
                    t,
                    i,
                    "SIZE, ADVANCE BY, RETENTION or GRACE PERIOD".into(),
                ))
            }
        };
        i += skip;
        let ms = duration(t, i)?;
        *slot = Some(ms);
        i += 2;
        if i < t.len() {
            if t[i].token != Token::Comma {
                return Err(at(t, i, "',' or ')'".into()));
            }
            i += 1;
        }
    }
    let size = size.ok_or_else(|| {
        Error::Syntax(format!(
            "WINDOW {kind} needs a size, e.g. WINDOW {kind} (SIZE 1 MINUTE)"
        ))
    })?;
    let grace = grace.unwrap_or(0);
    let kind = match kind {
        "TUMBLING" => {
            if advance.is_some() {
                return Err(Error::Syntax(
                    "ADVANCE BY makes a HOPPING window, not TUMBLING".into(),
                ));
            }
            WindowKind::Tumbling { size }
        }
        "HOPPING" => {
            let advance = advance.ok_or_else(|| {
                Error::Syntax(
                    "WINDOW HOPPING needs ADVANCE BY, e.g. (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS)"
                        .into(),
                )
            })?;
            if advance > size {
                return Err(Error::Syntax(format!(
                    "ADVANCE BY ({advance} ms) must not exceed SIZE ({size} ms)"
                )));
            }
            WindowKind::Hopping { size, advance }
        }
        _ => WindowKind::Session { gap: size },
    };
    Ok(Window {
        kind,
        grace,
        retention,
    })
}

/// A duration as an option gives it, e.g. `'10 SECONDS'`, in ms.
pub(crate) fn parse_duration(text: &str) -> Result<i64> {
    let tokens: Vec<_> = Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .map_err(Error::tokenizer)?
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    if tokens.len() != 2 {
        return Err(Error::Syntax(format!(
            "expected a duration such as '10 SECONDS', found '{text}'"
        )));
    }
    duration(&tokens, 0)
}

/// `n UNIT` at `i`, in ms.
pub(crate) fn duration(
    t: &[datafusion::sql::sqlparser::tokenizer::TokenWithSpan],
    i: usize,
) -> Result<i64> {
    let Some(Token::Number(n, _)) = t.get(i).map(|t| &t.token) else {
        return Err(at(t, i, "a number".into()));
    };
    let n: i64 = n.parse().map_err(|_| at(t, i, "a whole number".into()))?;
    let unit = match t.get(i + 1).map(|t| &t.token) {
        Some(Token::Word(w)) => w.value.to_uppercase(),
        _ => {
            return Err(at(
                t,
                i + 1,
                "a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)".into(),
            ))
        }
    };
    let ms = match unit.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => {
            return Err(at(
                t,
                i + 1,
                "a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)".into(),
            ))
        }
    };
    Ok(n * ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_inside_literals_and_names_survive_the_clauses_taken_out() {
        let (sql, window, ..) = strip_window(
            r#"SELECT 'it''s' AS "we""ird" FROM s WINDOW TUMBLING (SIZE 1 SECOND) GROUP BY x"#,
        )
        .unwrap();
        assert!(window.is_some());
        assert_eq!(sql, r#"SELECT 'it''s' AS "we""ird" FROM s   GROUP BY x"#);
        let (sql, _) = strip_partition_by("SELECT 'a''b' AS x FROM s PARTITION BY x").unwrap();
        assert_eq!(sql.trim_end(), "SELECT 'a''b' AS x FROM s");
    }

    #[test]
    fn pull_queries_name_unaliased_expressions_as_continuous_ones_do() {
        assert_eq!(
            ksql_names("SELECT car, speed * 2, COUNT(*) AS n, UPPER(car) FROM cars GROUP BY car"),
            "SELECT car, speed * 2 AS ksql_col_0, COUNT(*) AS n, UPPER(car) AS ksql_col_1 FROM cars GROUP BY car"
        );
        assert_eq!(
            ksql_names("SELECT pos['lat'] FROM cars"),
            "SELECT pos['lat'] AS lat FROM cars"
        );
        // Nothing to name, or not one SELECT: the text as it came.
        for unchanged in [
            "SELECT car, speed FROM cars",
            "SELECT * FROM cars",
            "SELEC 1",
        ] {
            assert_eq!(ksql_names(unchanged), unchanged);
        }
    }

    #[test]
    fn strips_windows_and_emit() {
        let p = parse(
            "SELECT car, COUNT(*) FROM s WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 30 SECONDS, \
             GRACE PERIOD 5 SECONDS) WHERE x > 1 GROUP BY car HAVING COUNT(*) > 5 EMIT CHANGES;",
        )
        .unwrap();
        assert_eq!(
            p.window,
            Some(Window {
                kind: WindowKind::Hopping {
                    size: 120_000,
                    advance: 30_000
                },
                grace: 5_000,
                retention: None,
            })
        );
        assert_eq!(p.emit, Some(Emit::Changes));
        assert_eq!(p.source, "s");
        assert!(p.grouped);
        assert_eq!(
            p.filter_sql("__in", &[], &[]),
            (
                "SELECT *, car AS __key0 FROM \"__in\" AS \"s\" WHERE x > 1".to_string(),
                1
            )
        );
        assert_eq!(
            p.aggregate_sql("__w", &[]),
            "SELECT car, COUNT(*) AS ksql_col_0, max(\"s\".rowtime) AS \"rowtime\", car AS \
             \"__eddy_k0\", windowstart AS \"__eddy_ws\", windowend AS \"__eddy_we\" FROM \"__w\" AS \"s\" \
             GROUP BY car, windowstart, windowend HAVING COUNT(*) > 5"
        );
        let p = parse("SELECT car, SUM(v) FROM s GROUP BY car EMIT FINAL").unwrap_err();
        assert_eq!(
            p.to_string(),
            "not supported: EMIT FINAL without a WINDOW: only a window has a final result (when \
             it closes)"
        );
        let p = parse("SELECT car, SUM(v) AS t FROM s GROUP BY car").unwrap();
        assert_eq!(
            p.aggregate_sql("__w", &[]),
            "SELECT car, SUM(v) AS t, max(\"s\".rowtime) AS \"rowtime\", car AS \"__eddy_k0\" \
             FROM \"__w\" AS \"s\" GROUP BY car"
        );
        let p = parse("SELECT c.a, u.b FROM car c LEFT JOIN users u ON c.o = u.id").unwrap();
        assert_eq!(p.alias.as_deref(), Some("c"));
        assert_eq!(p.joined, vec!["users".to_string()]);
        assert_eq!(
            p.stateless_sql("__in").0,
            "SELECT c.a, u.b, \"c\".rowtime AS rowtime FROM \"__in\" c LEFT JOIN users u ON c.o = u.id"
        );
    }

    #[test]
    fn partition_by_is_the_last_clause_and_becomes_a_hidden_key() {
        let p = parse("SELECT usr, page FROM pv WHERE ms > 1 PARTITION BY UPPER(usr) EMIT CHANGES")
            .unwrap();
        let keys: Vec<String> = p.partition_by.iter().map(|e| e.to_string()).collect();
        assert_eq!(keys, ["UPPER(usr)"]);
        assert_eq!(
            p.stateless_sql("__in").0,
            "SELECT usr, page, \"pv\".rowtime AS rowtime, UPPER(usr) AS \"__eddy_k0\", false AS \
             \"__eddy_deleted\" FROM \"__in\" AS \"pv\" WHERE ms > 1"
        );
        let two = parse("SELECT a, b, c FROM s PARTITION BY a, b").unwrap();
        assert_eq!(
            two.stateless_sql("__in").0,
            "SELECT a, b, c, \"s\".rowtime AS rowtime, a AS \"__eddy_k0\", b AS \"__eddy_k1\", \
             false AS \"__eddy_deleted\" FROM \"__in\" AS \"s\""
        );
        let e = parse("SELECT a FROM s PARTITION BY a, b WHERE a > 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "syntax error: PARTITION BY takes expressions separated by commas and ends the query \
             (before EMIT), found 'PARTITION BY a, b WHERE a > 1'"
        );
        let e = parse("SELECT a, COUNT(*) FROM s GROUP BY a PARTITION BY a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not supported: PARTITION BY in an aggregation: a table's key is its GROUP BY"
        );
    }

    #[test]
    fn within_is_taken_out_of_a_join() {
        use crate::join_within::Within;
        let p = parse(
            "SELECT o.id FROM orders o LEFT JOIN shipments s WITHIN (5 MINUTES, 1 HOUR) \
             GRACE PERIOD 10 SECONDS ON o.id = s.id",
        )
        .unwrap();
        assert_eq!(
            p.within,
            Some(Within {
                before: 300_000,
                after: 3_600_000,
                grace: Some(10_000)
            })
        );
        assert_eq!(p.joined, vec!["shipments".to_string()]);
        let p = parse("SELECT o.id FROM orders o JOIN shipments s WITHIN 2 SECONDS ON o.id = s.id")
            .unwrap();
        assert_eq!(
            p.within,
            Some(Within {
                before: 2_000,
                after: 2_000,
                grace: None
            })
        );
        assert_eq!(
            p.stateless_sql("__in").0,
            "SELECT o.id, greatest(\"o\".rowtime, \"s\".rowtime) AS rowtime FROM \"__in\" o JOIN \
             shipments s ON o.id = s.id"
        );
        // An ordered-set aggregate's WITHIN GROUP stays.
        let p = parse("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM s").unwrap();
        assert_eq!(p.within, None);
        let e = parse("SELECT a FROM s WITHIN 1 HOUR").unwrap_err();
        assert!(
            e.to_string()
                .contains("WITHIN belongs to a join of two streams"),
            "{e}"
        );
        let e =
            parse("SELECT o.id FROM o JOIN s WITHIN (1 HOUR 2 HOURS) ON o.id = s.id").unwrap_err();
        assert_eq!(
            e.to_string(),
            "syntax error at line 1, column 42: expected ',' between WITHIN's before and after \
             durations, found '2'"
        );
    }

    #[test]
    fn window_errors_point_at_the_token() {
        let e = parse("SELECT COUNT(*) FROM s WINDOW TUMBLING (SIZE 2 FORTNIGHTS) GROUP BY k")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "syntax error at line 1, column 48: expected a time unit (MILLISECONDS, SECONDS, \
             MINUTES, HOURS, DAYS), found 'FORTNIGHTS'"
        );
        let e =
            parse("SELECT COUNT(*) FROM s WINDOW HOPPING (SIZE 2 MINUTES) GROUP BY k").unwrap_err();
        assert!(e.to_string().contains("needs ADVANCE BY"), "{e}");
    }
}
