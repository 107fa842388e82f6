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
}

/// The user's query, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    query: Box<Query>,
    /// The `WINDOW` clause.
    pub window: Option<Window>,
    /// The stream read (the first relation in FROM).
    pub source: String,
    /// The name rows of the source go by in the outer query (its alias, else its name); `None`
    /// for a subquery without an alias.
    pub alias: Option<String>,
    /// Relations joined to the source.
    pub joined: Vec<String>,
    /// Whether it has `GROUP BY`.
    pub grouped: bool,
}

/// Takes the WINDOW clause and any trailing `EMIT CHANGES|FINAL` out of `sql`, then parses it.
pub(crate) fn parse(sql: &str) -> Result<Parsed> {
    let (sql, window) = strip_window(sql)?;
    let statements = Parser::parse_sql(&GenericDialect {}, &sql).map_err(|e| {
        Error::Syntax(
            e.to_string()
                .trim_start_matches("sql parser error: ")
                .to_string(),
        )
    })?;
    let [SqlStatement::Query(query)] = <[SqlStatement; 1]>::try_from(statements)
        .map_err(|_| Error::Syntax("expected one SELECT".into()))?
    else {
        return Err(Error::Syntax("expected a SELECT".into()));
    };
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
    let joined = from
        .joins
        .iter()
        .map(|j| match &j.relation {
            TableFactor::Table { name, .. } => Ok(object_name(name)),
            _ => Err(Error::Unsupported("joins with subqueries".into())),
        })
        .collect::<Result<Vec<_>>>()?;
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        GroupByExpr::All(_) => true,
    };
    Ok(Parsed {
        query,
        window,
        source,
        alias,
        joined,
        grouped,
    })
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
fn rename(relation: &mut TableFactor, table: &str) {
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

    /// The query with its source renamed to `table` (keeping the name rows go by).
    fn reading(&self, table: &str) -> Box<Query> {
        let mut query = self.query.clone();
        let select = Self::select_mut(&mut query);
        rename(&mut select.from[0].relation, table);
        query
    }

    fn rowtime(&self) -> Expr {
        match &self.alias {
            Some(alias) => {
                Expr::CompoundIdentifier(vec![Ident::with_quote('"', alias), Ident::new("rowtime")])
            }
            None => Expr::Identifier(Ident::new("rowtime")),
        }
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
        (query.to_string(), !has_rowtime)
    }

    /// SQL of a windowed query's first step: the source's rows that pass WHERE, with the
    /// GROUP BY keys as `__key0…` (session windows are per key).
    pub(crate) fn filter_sql(&self, table: &str) -> (String, usize) {
        let mut query = self.reading(table);
        let select = Self::select_mut(&mut query);
        let keys = match &select.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs.clone(),
            GroupByExpr::All(_) => vec![],
        };
        select.projection = vec![SelectItem::Wildcard(Default::default())];
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

    /// SQL of a windowed query's aggregation over closed windows' rows in `table`, which has
    /// `windowstart` and `windowend` columns; the output's `rowtime` is the window's end.
    pub(crate) fn aggregate_sql(&self, table: &str) -> String {
        let mut query = self.reading(table);
        let select = Self::select_mut(&mut query);
        select.selection = None;
        let window_columns = [Ident::new("windowstart"), Ident::new("windowend")];
        match &mut select.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                exprs.extend(window_columns.iter().cloned().map(Expr::Identifier))
            }
            GroupByExpr::All(_) => {}
        }
        select.projection.push(SelectItem::ExprWithAlias {
            expr: Expr::Identifier(Ident::new("windowend")),
            alias: Ident::new("rowtime"),
        });
        query.to_string()
    }
}

/// Removes `WINDOW kind (…)` and a trailing `EMIT CHANGES|FINAL`, returning the window.
fn strip_window(sql: &str) -> Result<(String, Option<Window>)> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Syntax(e.to_string()))?;
    let word = |i: usize| match tokens.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
        _ => None,
    };
    let next = |mut i: usize| {
        while matches!(tokens.get(i).map(|t| &t.token), Some(Token::Whitespace(_))) {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(sql.len());
    let mut window = None;
    let mut i = 0;
    while i < tokens.len() {
        let here = word(i);
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
            if matches!(word(k).as_deref(), Some("CHANGES" | "FINAL")) {
                let end = next(k + 1);
                let rest_empty = end >= tokens.len()
                    || (tokens[end].token == Token::SemiColon && next(end + 1) >= tokens.len());
                if rest_empty {
                    break;
                }
            }
        }
        out.push_str(&tokens[i].token.to_string());
        i += 1;
    }
    Ok((out.trim().trim_end_matches(';').to_string(), window))
}

fn at(
    tokens: &[datafusion::sql::sqlparser::tokenizer::TokenWithSpan],
    i: usize,
    expected: String,
) -> Error {
    match tokens.get(i) {
        Some(t) => Error::Syntax(format!(
            "expected {expected}, found '{}' at line {}, column {}",
            t.token, t.span.start.line, t.span.start.column
        )),
        None => Error::Syntax(format!(
            "expected {expected}, found the end of the statement"
        )),
    }
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
    let mut i = 0;
    while i < t.len() {
        let (slot, skip) = match word(i).as_deref() {
            Some("SIZE") => (&mut size, 1),
            Some("ADVANCE") if word(i + 1).as_deref() == Some("BY") => (&mut advance, 2),
            Some("GRACE") if word(i + 1).as_deref() == Some("PERIOD") => (&mut grace, 2),
            Some("RETENTION") => {
                return Err(at(t, i, "SIZE, ADVANCE BY or GRACE PERIOD (Eddy keeps no window retention: windows are emitted when they close)".into()));
            }
            None if kind == "SESSION" && i == 0 => (&mut size, 0),
            _ => return Err(at(t, i, "SIZE, ADVANCE BY or GRACE PERIOD".into())),
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
    Ok(Window { kind, grace })
}

/// `n UNIT` at `i`, in ms.
fn duration(t: &[datafusion::sql::sqlparser::tokenizer::TokenWithSpan], i: usize) -> Result<i64> {
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
    if n <= 0 && unit != "GRACE" {
        // A zero-length window would never hold a row; zero grace is fine and is the default.
    }
    Ok(n * ms)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                grace: 5_000
            })
        );
        assert_eq!(p.source, "s");
        assert!(p.grouped);
        assert_eq!(
            p.filter_sql("__in"),
            (
                "SELECT *, car AS __key0 FROM \"__in\" AS \"s\" WHERE x > 1".to_string(),
                1
            )
        );
        assert_eq!(
            p.aggregate_sql("__w"),
            "SELECT car, COUNT(*), windowend AS rowtime FROM \"__w\" AS \"s\" GROUP BY car, \
             windowstart, windowend HAVING COUNT(*) > 5"
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
    fn window_errors_point_at_the_token() {
        let e = parse("SELECT COUNT(*) FROM s WINDOW TUMBLING (SIZE 2 FORTNIGHTS) GROUP BY k")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "syntax error: expected a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS), \
             found 'FORTNIGHTS' at line 1, column 48"
        );
        let e =
            parse("SELECT COUNT(*) FROM s WINDOW HOPPING (SIZE 2 MINUTES) GROUP BY k").unwrap_err();
        assert!(e.to_string().contains("needs ADVANCE BY"), "{e}");
    }
}
