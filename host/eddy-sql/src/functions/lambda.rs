//! ksqlDB's lambda functions over arrays: `TRANSFORM(a, x => …)`, `FILTER(a, x => …)` and
//! `REDUCE(a, start, (s, x) => …)`.
//!
//! The statement text carries each lambda as a string literal (`'x => x * 2'`: [`rewrite`]
//! turns ksqlDB's syntax into that before parsing, as DataFusion's parser has no lambdas, and
//! again for a body that holds lambdas of its own). Its body is planned with the session's own
//! functions over a batch whose columns are the lambda's parameters, and runs vectorised: over
//! every element of every row at once for `TRANSFORM` and `FILTER`, and over the n-th elements
//! of all rows at once, n after n, for `REDUCE`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericListArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{cast, filter, interleave, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::{exec_err, plan_err, DFSchema, Result, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::PhysicalExpr;
use parking_lot::RwLock;

/// A lambda's body, planned over a batch of its parameters.
type Planned = (Arc<dyn PhysicalExpr>, SchemaRef);

/// Which of the three a [`LambdaFunction`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Transform,
    Filter,
    Reduce,
}

/// One of ksqlDB's lambda functions, planning its lambdas with the session it belongs to.
#[derive(Debug)]
pub(crate) struct LambdaFunction {
    kind: Kind,
    signature: Signature,
    session: Weak<RwLock<SessionState>>,
    /// Bodies planned so far, with their parameters' schema, by lambda text and parameter types.
    planned: Mutex<HashMap<(String, Vec<DataType>), Planned>>,
}

impl PartialEq for LambdaFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for LambdaFunction {}

impl Hash for LambdaFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

/// The three functions, for the session whose state `session` is.
pub(crate) fn all(session: Weak<RwLock<SessionState>>) -> Vec<LambdaFunction> {
    [(Kind::Transform, 2), (Kind::Filter, 2), (Kind::Reduce, 3)]
        .into_iter()
        .map(|(kind, arity)| LambdaFunction {
            kind,
            signature: Signature::any(arity, Volatility::Immutable),
            session: session.clone(),
            planned: Mutex::new(HashMap::new()),
        })
        .collect()
}

/// A lambda's parameters and body, from its text (`x => …` or `(s, x) => …`).
fn parse(text: &str) -> Result<(Vec<String>, String)> {
    let Some((params, body)) = text.split_once("=>") else {
        return plan_err!("not a lambda: {text}");
    };
    let params = params.trim();
    let params = params
        .strip_prefix('(')
        .and_then(|p| p.strip_suffix(')'))
        .unwrap_or(params);
    let params: Vec<String> = params.split(',').map(|p| p.trim().to_lowercase()).collect();
    if params.iter().any(|p| p.is_empty()) {
        return plan_err!("a lambda's parameters are names: {text}");
    }
    Ok((params, body.trim().to_string()))
}

/// The element field of a list type.
fn element(t: &DataType, function: &str) -> Result<FieldRef> {
    match t {
        DataType::List(f) | DataType::LargeList(f) => Ok(f.clone()),
        DataType::Null => Ok(Arc::new(Field::new("item", DataType::Null, true))),
        other => plan_err!("{function} takes an ARRAY first, not {other}"),
    }
}

impl LambdaFunction {
    fn lambda<'a>(&self, args: &'a [Option<&'a ScalarValue>]) -> Result<&'a str> {
        match args.last().copied().flatten() {
            Some(ScalarValue::Utf8(Some(text))) => Ok(text),
            _ => plan_err!(
                "{} takes a lambda last, as in {}",
                self.name().to_uppercase(),
                match self.kind {
                    Kind::Transform => "TRANSFORM(a, x => x * 2)",
                    Kind::Filter => "FILTER(a, x => x > 0)",
                    Kind::Reduce => "REDUCE(a, 0, (s, x) => s + x)",
                }
            ),
        }
    }

    /// `text`'s body planned over its parameters, typed `types`.
    fn plan(&self, text: &str, types: &[DataType]) -> Result<Planned> {
        let key = (text.to_string(), types.to_vec());
        if let Some(planned) = self.planned.lock().expect("lambda lock").get(&key) {
            return Ok(planned.clone());
        }
        let (params, body) = parse(text)?;
        if params.len() != types.len() {
            return plan_err!(
                "the lambda of {} takes {} parameter{}, not {}: {text}",
                self.name().to_uppercase(),
                types.len(),
                if types.len() == 1 { "" } else { "s" },
                params.len()
            );
        }
        let schema = Schema::new(
            params
                .iter()
                .zip(types)
                .map(|(p, t)| Field::new(p, t.clone(), true))
                .collect::<Vec<_>>(),
        );
        let schema = Arc::new(schema);
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let Some(session) = self.session.upgrade() else {
            return exec_err!("the session of {} is gone", self.name());
        };
        let state = session.read().clone();
        let logical = state.create_logical_expr(&rewrite(&body), &df_schema)?;
        let physical = state.create_physical_expr(logical, &df_schema)?;
        let planned = (physical, schema);
        self.planned
            .lock()
            .expect("lambda lock")
            .insert(key, planned.clone());
        Ok(planned)
    }

    /// The lambda `text` planned for arguments of types `fields`, with the types of its
    /// parameters.
    fn body(&self, text: &str, fields: &[FieldRef]) -> Result<(Vec<DataType>, Planned)> {
        let item = element(fields[0].data_type(), self.name())?;
        let parameters = match self.kind {
            Kind::Transform | Kind::Filter => vec![item.data_type().clone()],
            Kind::Reduce => vec![fields[1].data_type().clone(), item.data_type().clone()],
        };
        let planned = self.plan(text, &parameters)?;
        Ok((parameters, planned))
    }
}

impl ScalarUDFImpl for LambdaFunction {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Transform => "transform",
            Kind::Filter => "filter",
            Kind::Reduce => "reduce",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        unreachable!("return_field_from_args is implemented")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let text = self.lambda(args.scalar_arguments)?;
        let (_, (body, schema)) = self.body(text, args.arg_fields)?;
        let out = body.data_type(&schema)?;
        let t = match self.kind {
            Kind::Transform => DataType::new_list(out, true),
            Kind::Filter => {
                if out != DataType::Boolean {
                    return plan_err!(
                        "the lambda of FILTER must return a BOOLEAN, not {out}: {text}"
                    );
                }
                args.arg_fields[0].data_type().clone()
            }
            Kind::Reduce => args.arg_fields[1].data_type().clone(),
        };
        Ok(Arc::new(Field::new(self.name(), t, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(text))) = &args.args[args.args.len() - 1]
        else {
            return exec_err!("{}: the lambda is not a literal", self.name());
        };
        let list = args.args[0].to_array(n)?;
        if list.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(args.return_field.data_type(), n),
            ));
        }
        let list = cast(
            &list,
            &DataType::List(element(list.data_type(), self.name())?),
        )?;
        let list = list.as_list::<i32>();
        let (parameters, body) = self.body(text, &args.arg_fields)?;
        let out = match self.kind {
            Kind::Transform => transform(list, &body)?,
            Kind::Filter => keep(list, &body)?,
            Kind::Reduce => {
                let start = cast(&args.args[1].to_array(n)?, &parameters[0])?;
                reduce(list, start, &body)?
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The elements of `list` as one array (its rows' elements, in order), and each row's range.
fn elements(list: &GenericListArray<i32>) -> (ArrayRef, Vec<(usize, usize)>) {
    let offsets = list.value_offsets();
    let first = offsets[0] as usize;
    let last = offsets[offsets.len() - 1] as usize;
    let values = list.values().slice(first, last - first);
    let ranges = offsets
        .windows(2)
        .map(|w| (w[0] as usize - first, w[1] as usize - first))
        .collect();
    (values, ranges)
}

fn evaluate((body, schema): &Planned, columns: Vec<ArrayRef>) -> Result<ArrayRef> {
    let rows = columns.first().map_or(0, |c| c.len());
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    body.evaluate(&batch)?.into_array(rows)
}

fn transform(list: &GenericListArray<i32>, body: &Planned) -> Result<ArrayRef> {
    let (values, ranges) = elements(list);
    let mapped = evaluate(body, vec![values])?;
    let offsets = OffsetBuffer::new(ScalarBuffer::from(
        std::iter::once(0)
            .chain(ranges.iter().map(|r| r.1 as i32))
            .collect::<Vec<i32>>(),
    ));
    let field = Arc::new(Field::new("item", mapped.data_type().clone(), true));
    Ok(Arc::new(GenericListArray::<i32>::try_new(
        field,
        offsets,
        mapped,
        list.nulls().cloned(),
    )?))
}

fn keep(list: &GenericListArray<i32>, body: &Planned) -> Result<ArrayRef> {
    let (values, ranges) = elements(list);
    let verdict = evaluate(body, vec![values.clone()])?;
    // A null verdict drops the element, as WHERE drops a row.
    let verdict: BooleanArray = verdict
        .as_boolean()
        .iter()
        .map(|v| Some(v == Some(true)))
        .collect();
    let kept = filter(&values, &verdict)?;
    let mut offsets = Vec::with_capacity(ranges.len() + 1);
    offsets.push(0i32);
    let mut at = 0;
    for (start, end) in &ranges {
        at += (*start..*end).filter(|i| verdict.value(*i)).count() as i32;
        offsets.push(at);
    }
    let field = match list.data_type() {
        DataType::List(f) => f.clone(),
        _ => unreachable!("cast to a list"),
    };
    Ok(Arc::new(GenericListArray::<i32>::try_new(
        field,
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        kept,
        list.nulls().cloned(),
    )?))
}

fn reduce(list: &GenericListArray<i32>, start: ArrayRef, body: &Planned) -> Result<ArrayRef> {
    let (values, ranges) = elements(list);
    let state_type = start.data_type().clone();
    let mut state = start;
    let longest = ranges.iter().map(|(s, e)| e - s).max().unwrap_or(0);
    for n in 0..longest {
        // The rows that have an n-th element, and those elements.
        let rows: Vec<u32> = (0..ranges.len() as u32)
            .filter(|&r| {
                let (s, e) = ranges[r as usize];
                list.is_valid(r as usize) && e - s > n
            })
            .collect();
        let at: UInt32Array = rows
            .iter()
            .map(|&r| (ranges[r as usize].0 + n) as u32)
            .collect();
        let rows_index = UInt32Array::from(rows.clone());
        let folded = evaluate(
            body,
            vec![take(&state, &rows_index, None)?, take(&values, &at, None)?],
        )?;
        let folded = cast(&folded, &state_type)?;
        // Each row's new state: folded where it had an n-th element, unchanged elsewhere.
        let mut next = rows.iter().peekable();
        let mut k = 0;
        let picks: Vec<(usize, usize)> = (0..ranges.len())
            .map(|r| {
                if next.peek().is_some_and(|&&x| x as usize == r) {
                    next.next();
                    k += 1;
                    (1, k - 1)
                } else {
                    (0, r)
                }
            })
            .collect();
        state = interleave(&[state.as_ref(), folded.as_ref()], &picks)?;
    }
    // A null array reduces to null.
    match list.nulls() {
        Some(nulls) if nulls.null_count() > 0 => {
            let both = datafusion::arrow::buffer::NullBuffer::union(Some(nulls), state.nulls());
            let data = state.to_data().into_builder().nulls(both).build()?;
            Ok(datafusion::arrow::array::make_array(data))
        }
        _ => Ok(state),
    }
}

/// `sql` with each lambda (`x => …`, `(s, x) => …`) replaced by a string literal holding its
/// text; text that does not tokenize, or has no `=>`, is returned as it is.
pub fn rewrite(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.contains("=>") {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let tokens: Vec<_> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    // Byte offsets of each line's start, for the tokens' line/column spans.
    let lines: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |i: usize| -> usize {
        let Some(t) = tokens.get(i) else {
            return sql.len();
        };
        let line = lines[(t.span.start.line as usize)
            .saturating_sub(1)
            .min(lines.len() - 1)];
        sql[line..]
            .char_indices()
            .nth((t.span.start.column as usize).saturating_sub(1))
            .map_or(sql.len(), |(b, _)| line + b)
    };
    let token = |i: usize| tokens.get(i).map(|t| &t.token);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for i in 1..tokens.len() {
        if token(i) != Some(&Token::RArrow) {
            continue;
        }
        // The parameters: one name, or names in parentheses.
        let first = match token(i - 1) {
            Some(Token::Word(_)) => Some(i - 1),
            Some(Token::RParen) => (0..i - 1)
                .rev()
                .find(|&k| !matches!(token(k), Some(Token::Word(_) | Token::Comma)))
                .filter(|&k| token(k) == Some(&Token::LParen)),
            _ => None,
        };
        let Some(first) = first else { continue };
        // The body: up to the `,` or `)` that ends the argument.
        let mut depth = 0i32;
        let mut end = i + 1;
        while let Some(tok) = token(end) {
            match tok {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket if depth == 0 => break,
                Token::RParen | Token::RBracket => depth -= 1,
                Token::Comma if depth == 0 => break,
                _ => {}
            }
            end += 1;
        }
        let start = offset(first);
        if start < copied {
            // Inside a lambda already taken: its body is rewritten when it is planned.
            continue;
        }
        let lambda = sql[start..offset(end)].trim_end();
        out.push_str(&sql[copied..start]);
        out.push('\'');
        out.push_str(&lambda.replace('\'', "''"));
        out.push('\'');
        copied = start + lambda.len();
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_parse_with_one_or_more_parameters() {
        assert_eq!(
            parse("x => x * 2").unwrap(),
            (vec!["x".to_string()], "x * 2".to_string())
        );
        assert_eq!(
            parse("(S, x) => s + x").unwrap(),
            (vec!["s".to_string(), "x".to_string()], "s + x".to_string())
        );
        assert!(parse("x * 2").is_err());
    }

    #[test]
    fn lambdas_become_string_literals() {
        assert_eq!(
            rewrite("SELECT TRANSFORM(a, x => x * 2) AS b FROM s"),
            "SELECT TRANSFORM(a, 'x => x * 2') AS b FROM s"
        );
        assert_eq!(
            rewrite("SELECT REDUCE(a, 0, (s, x) => s + ABS(x)), FILTER(a, v => v <> 'it''s') FROM s"),
            "SELECT REDUCE(a, 0, '(s, x) => s + ABS(x)'), FILTER(a, 'v => v <> ''it''''s''') FROM s"
        );
        // A lambda in a lambda's body stays as it is, for the body's own planning.
        assert_eq!(
            rewrite("SELECT TRANSFORM(g, r => REDUCE(r, 0, (s, x) => s + x))\nFROM t"),
            "SELECT TRANSFORM(g, 'r => REDUCE(r, 0, (s, x) => s + x)')\nFROM t"
        );
        let plain = "SELECT a -> b FROM s WHERE x >= 1";
        assert_eq!(rewrite(plain), plain);
    }
}
