//! ksqlDB's lambda functions over arrays and maps: `TRANSFORM(a, x => …)`, `FILTER(a, x => …)`
//! and `REDUCE(a, start, (s, x) => …)`, and over a map `TRANSFORM(m, (k, v) => new key, (k, v)
//! => new value)`, `FILTER(m, (k, v) => …)` and `REDUCE(m, start, (s, k, v) => …)`.
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
    [
        (Kind::Transform, vec![2, 3]),
        (Kind::Filter, vec![2]),
        (Kind::Reduce, vec![3]),
    ]
    .into_iter()
    .map(|(kind, arities)| LambdaFunction {
        kind,
        signature: Signature::one_of(
            arities
                .into_iter()
                .map(datafusion::logical_expr::TypeSignature::Any)
                .collect(),
            Volatility::Immutable,
        ),
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
        other => plan_err!("{function} takes an ARRAY or a MAP first, not {other}"),
    }
}

/// What a lambda over a collection of type `t` takes per item: an element, or a map's key and
/// value.
fn item_types(t: &DataType, function: &str) -> Result<Vec<DataType>> {
    match t {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => {
                Ok(fields.iter().map(|f| f.data_type().clone()).collect())
            }
            other => plan_err!("unexpected map entries {other}"),
        },
        other => Ok(vec![element(other, function)?.data_type().clone()]),
    }
}

impl LambdaFunction {
    /// The lambdas among the arguments: all after the collection (and REDUCE's start).
    fn lambdas<'a>(&self, args: &'a [Option<&'a ScalarValue>]) -> Result<Vec<&'a str>> {
        let first = if self.kind == Kind::Reduce { 2 } else { 1 };
        let texts: Option<Vec<&str>> = args
            .get(first..)
            .unwrap_or_default()
            .iter()
            .map(|a| match a {
                Some(ScalarValue::Utf8(Some(text))) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        match texts {
            Some(texts) if !texts.is_empty() => Ok(texts),
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

    /// The lambdas `texts` planned for arguments of types `fields`, with the types of their
    /// parameters.
    fn bodies(&self, texts: &[&str], fields: &[FieldRef]) -> Result<(Vec<DataType>, Vec<Planned>)> {
        let items = item_types(fields[0].data_type(), self.name())?;
        let wanted = if self.kind == Kind::Transform {
            items.len()
        } else {
            1
        };
        if texts.len() != wanted {
            return plan_err!(
                "{} over {} takes {wanted} lambda{}, not {}",
                self.name().to_uppercase(),
                if items.len() == 2 {
                    "a MAP"
                } else {
                    "an ARRAY"
                },
                if wanted == 1 { "" } else { "s" },
                texts.len()
            );
        }
        let mut parameters = items;
        if self.kind == Kind::Reduce {
            parameters.insert(0, fields[1].data_type().clone());
        }
        let planned = texts
            .iter()
            .map(|text| self.plan(text, &parameters))
            .collect::<Result<Vec<_>>>()?;
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
        let texts = self.lambdas(args.scalar_arguments)?;
        let text = texts[0];
        let (_, bodies) = self.bodies(&texts, args.arg_fields)?;
        let outs = bodies
            .iter()
            .map(|(body, schema)| body.data_type(schema))
            .collect::<Result<Vec<_>>>()?;
        let out = outs[0].clone();
        let t = match self.kind {
            Kind::Transform if outs.len() == 2 => map_type(&outs[0], &outs[1]),
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
        let first = if self.kind == Kind::Reduce { 2 } else { 1 };
        let texts = args.args[first..]
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(text))) => Ok(text.as_str()),
                _ => exec_err!("{}: the lambda is not a literal", self.name()),
            })
            .collect::<Result<Vec<_>>>()?;
        let collection = args.args[0].to_array(n)?;
        if collection.data_type() == &DataType::Null {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(args.return_field.data_type(), n),
            ));
        }
        let items = Items::of(&collection, self.name())?;
        let (parameters, bodies) = self.bodies(&texts, &args.arg_fields)?;
        let out = match self.kind {
            Kind::Transform => transform(&items, &bodies)?,
            Kind::Filter => keep(&items, &bodies[0])?,
            Kind::Reduce => {
                let start = cast(&args.args[1].to_array(n)?, &parameters[0])?;
                reduce(&items, start, &bodies[0])?
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// A map type with entries of `key` and `value`.
fn map_type(key: &DataType, value: &DataType) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("key", key.clone(), false),
                Field::new("value", value.clone(), true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// An ARRAY or MAP column taken apart: every row's items in one array (a map's entries as a
/// struct), each row's range in it, and the rows' nulls.
struct Items {
    items: ArrayRef,
    ranges: Vec<(usize, usize)>,
    nulls: Option<datafusion::arrow::buffer::NullBuffer>,
    /// For a list, its element field; `None` for a map.
    element: Option<FieldRef>,
}

impl Items {
    fn of(collection: &ArrayRef, function: &str) -> Result<Items> {
        let (offsets, items, nulls, element) = match collection.data_type() {
            DataType::Map(_, _) => {
                let map = collection.as_map();
                let entries: ArrayRef = Arc::new(map.entries().clone());
                (
                    map.value_offsets().to_vec(),
                    entries,
                    map.nulls().cloned(),
                    None,
                )
            }
            t => {
                let field = element(t, function)?;
                let list = cast(collection, &DataType::List(field.clone()))?;
                let list = list.as_list::<i32>();
                (
                    list.value_offsets().to_vec(),
                    list.values().clone(),
                    list.nulls().cloned(),
                    Some(field),
                )
            }
        };
        let first = offsets[0] as usize;
        let last = offsets[offsets.len() - 1] as usize;
        let ranges = offsets
            .windows(2)
            .map(|w| (w[0] as usize - first, w[1] as usize - first))
            .collect();
        Ok(Items {
            items: items.slice(first, last - first),
            ranges,
            nulls,
            element,
        })
    }

    /// The lambda's per-item arguments for `items`: the element, or a map's key and value.
    fn arguments(&self, items: &ArrayRef) -> Vec<ArrayRef> {
        match self.element {
            Some(_) => vec![items.clone()],
            None => items.as_struct().columns().to_vec(),
        }
    }

    fn is_valid(&self, row: usize) -> bool {
        self.nulls.as_ref().is_none_or(|n| n.is_valid(row))
    }

    /// A column of the same kind, its rows' items `items` at `offsets`.
    fn rebuild(&self, items: ArrayRef, offsets: Vec<i32>) -> Result<ArrayRef> {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        match &self.element {
            Some(element) => {
                let field = Arc::new(Field::new(element.name(), items.data_type().clone(), true));
                Ok(Arc::new(GenericListArray::<i32>::try_new(
                    field,
                    offsets,
                    items,
                    self.nulls.clone(),
                )?))
            }
            None => {
                let entries = items.as_struct().clone();
                let field = Arc::new(Field::new("entries", entries.data_type().clone(), false));
                Ok(Arc::new(datafusion::arrow::array::MapArray::try_new(
                    field,
                    offsets,
                    entries,
                    self.nulls.clone(),
                    false,
                )?))
            }
        }
    }

    /// Each row's end offset, for items kept whole.
    fn offsets(&self) -> Vec<i32> {
        std::iter::once(0)
            .chain(self.ranges.iter().map(|r| r.1 as i32))
            .collect()
    }
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

fn transform(items: &Items, bodies: &[Planned]) -> Result<ArrayRef> {
    let arguments = items.arguments(&items.items);
    let mapped = bodies
        .iter()
        .map(|body| evaluate(body, arguments.clone()))
        .collect::<Result<Vec<_>>>()?;
    let new_items: ArrayRef = match mapped.as_slice() {
        [value] => value.clone(),
        [key, value] => Arc::new(datafusion::arrow::array::StructArray::try_new(
            vec![
                Field::new("key", key.data_type().clone(), false),
                Field::new("value", value.data_type().clone(), true),
            ]
            .into(),
            vec![key.clone(), value.clone()],
            None,
        )?),
        _ => return exec_err!("TRANSFORM takes one lambda per item part"),
    };
    items.rebuild(new_items, items.offsets())
}

fn keep(items: &Items, body: &Planned) -> Result<ArrayRef> {
    let verdict = evaluate(body, items.arguments(&items.items))?;
    // A null verdict drops the item, as WHERE drops a row.
    let verdict: BooleanArray = verdict
        .as_boolean()
        .iter()
        .map(|v| Some(v == Some(true)))
        .collect();
    let kept = filter(&items.items, &verdict)?;
    let mut offsets = Vec::with_capacity(items.ranges.len() + 1);
    offsets.push(0i32);
    let mut at = 0;
    for (start, end) in &items.ranges {
        at += (*start..*end).filter(|i| verdict.value(*i)).count() as i32;
        offsets.push(at);
    }
    items.rebuild(kept, offsets)
}

fn reduce(items: &Items, start: ArrayRef, body: &Planned) -> Result<ArrayRef> {
    let ranges = &items.ranges;
    let state_type = start.data_type().clone();
    let mut state = start;
    let longest = ranges.iter().map(|(s, e)| e - s).max().unwrap_or(0);
    for n in 0..longest {
        // The rows that have an n-th element, and those elements.
        let rows: Vec<u32> = (0..ranges.len() as u32)
            .filter(|&r| {
                let (s, e) = ranges[r as usize];
                items.is_valid(r as usize) && e - s > n
            })
            .collect();
        let at: UInt32Array = rows
            .iter()
            .map(|&r| (ranges[r as usize].0 + n) as u32)
            .collect();
        let rows_index = UInt32Array::from(rows.clone());
        let mut arguments = vec![take(&state, &rows_index, None)?];
        arguments.extend(items.arguments(&take(&items.items, &at, None)?));
        let folded = evaluate(body, arguments)?;
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
    // A null array has nothing to fold: it reduces to its start, as in ksqlDB.
    Ok(state)
}

/// `sql` with each lambda (`x => …`, `(s, x) => …`) replaced by a string literal holding its
/// text; text that does not tokenize, or has no `=>`, is returned as it is.
pub fn rewrite(sql: &str) -> String {
    use datafusion::sql::sqlparser::tokenizer::Token;
    if !sql.contains("=>") {
        return sql.to_string();
    }
    let Some(tokens) = super::tokens::with_offsets(sql) else {
        return sql.to_string();
    };
    let offset = |i: usize| tokens.get(i).map_or(sql.len(), |t| t.1);
    let token = |i: usize| tokens.get(i).map(|t| &t.0);
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
