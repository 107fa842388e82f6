//! Regular expressions and collections: `REGEXP_EXTRACT`, `REGEXP_EXTRACT_ALL`,
//! `REGEXP_SPLIT_TO_ARRAY`, `SLICE`, `ELT`, `FIELD`, `SPLIT_TO_MAP`. Regular expressions are
//! Rust's `regex` syntax, which covers Java's save for look-around and back-references.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, ListArray, ListBuilder, MapBuilder, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{Signature, Volatility};
use regex::Regex;

use super::json::records_type;
use super::scalar::{returns, Ksql};
use super::string::{ints, strings};

const S: DataType = DataType::Utf8;
const I: DataType = DataType::Int64;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::new(
            "regexp_extract",
            vec![vec![S, S], vec![S, S, I]],
            returns!(S),
            |a, _| {
                let mut patterns = Patterns::default();
                let (pattern, text) = (strings(&a[0])?, strings(&a[1])?);
                let group = a.get(2).map(ints).transpose()?;
                let mut out = StringBuilder::new();
                for i in 0..text.len() {
                    let group = match &group {
                        Some(g) if g.is_null(i) => None,
                        Some(g) => usize::try_from(g.value(i)).ok(),
                        None => Some(0),
                    };
                    if pattern.is_null(i) || text.is_null(i) || group.is_none() {
                        out.append_null();
                        continue;
                    }
                    let re = patterns.get(pattern.value(i))?;
                    let found = re
                        .captures(text.value(i))
                        .and_then(|c| group.and_then(|g| c.get(g)))
                        .map(|m| m.as_str());
                    out.append_option(found);
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::new(
            "regexp_extract_all",
            vec![vec![S, S], vec![S, S, I]],
            returns!(DataType::new_list(S, true)),
            |a, _| {
                let mut patterns = Patterns::default();
                let (pattern, text) = (strings(&a[0])?, strings(&a[1])?);
                let group = a.get(2).map(ints).transpose()?;
                let mut out = ListBuilder::new(StringBuilder::new());
                for i in 0..text.len() {
                    let group = match &group {
                        Some(g) if g.is_null(i) => None,
                        Some(g) => usize::try_from(g.value(i)).ok(),
                        None => Some(0),
                    };
                    let (false, false, Some(group)) = (pattern.is_null(i), text.is_null(i), group)
                    else {
                        out.append(false);
                        continue;
                    };
                    let re = patterns.get(pattern.value(i))?;
                    for c in re.captures_iter(text.value(i)) {
                        out.values().append_option(c.get(group).map(|m| m.as_str()));
                    }
                    out.append(true);
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::new(
            "regexp_split_to_array",
            vec![vec![S, S]],
            returns!(DataType::new_list(S, true)),
            |a, _| {
                let mut patterns = Patterns::default();
                let (text, pattern) = (strings(&a[0])?, strings(&a[1])?);
                let mut out = ListBuilder::new(StringBuilder::new());
                for i in 0..text.len() {
                    if text.is_null(i) || pattern.is_null(i) {
                        out.append(false);
                        continue;
                    }
                    let (text, pattern) = (text.value(i), pattern.value(i));
                    if pattern.is_empty() {
                        for c in text.chars() {
                            out.values().append_value(c.to_string());
                        }
                    } else {
                        for piece in patterns.get(pattern)?.split(text) {
                            out.values().append_value(piece);
                        }
                    }
                    out.append(true);
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::with_signature(
            "slice",
            Signature::any(3, Volatility::Immutable),
            |t| match &t[0] {
                DataType::List(_) => Ok(t[0].clone()),
                other => plan_err!("SLICE takes an ARRAY, not {other}"),
            },
            slice,
        ),
        Ksql::with_signature(
            "elt",
            Signature::variadic_any(Volatility::Immutable),
            |t| match t.first() {
                Some(n) if n.is_integer() || n.is_null() => Ok(S),
                _ => plan_err!("ELT takes a position and strings"),
            },
            |a, rows| {
                let n = ints(&a[0])?;
                let choices = a[1..].iter().map(strings).collect::<Result<Vec<_>>>()?;
                let out: StringArray = (0..rows)
                    .map(|i| {
                        if n.is_null(i) {
                            return None;
                        }
                        let c = choices.get(usize::try_from(n.value(i) - 1).ok()?)?;
                        c.is_valid(i).then(|| c.value(i))
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::with_signature(
            "field",
            Signature::variadic_any(Volatility::Immutable),
            |t| {
                if t.is_empty() {
                    return plan_err!("FIELD takes a string and strings to find it in");
                }
                Ok(DataType::Int32)
            },
            |a, rows| {
                let all = a.iter().map(strings).collect::<Result<Vec<_>>>()?;
                let (wanted, choices) = (&all[0], &all[1..]);
                let out: Int32Array = (0..rows)
                    .map(|i| {
                        if wanted.is_null(i) {
                            return Some(0);
                        }
                        let at = choices
                            .iter()
                            .position(|c| c.is_valid(i) && c.value(i) == wanted.value(i));
                        Some(at.map_or(0, |p| p as i32 + 1))
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "split_to_map",
            vec![vec![S, S, S]],
            returns!(records_type()),
            split_to_map,
        ),
    ]
}

/// The compiled patterns of one batch, by text: a column of patterns is usually one literal.
#[derive(Default)]
struct Patterns(Vec<(String, Regex)>);

impl Patterns {
    fn get(&mut self, pattern: &str) -> Result<&Regex> {
        let at = match self.0.iter().position(|(p, _)| p == pattern) {
            Some(at) => at,
            None => match Regex::new(pattern) {
                Ok(re) => {
                    self.0.push((pattern.to_string(), re));
                    self.0.len() - 1
                }
                Err(e) => return exec_err!("not a regular expression: {pattern}: {e}"),
            },
        };
        Ok(&self.0[at].1)
    }
}

/// ksqlDB's `SLICE(array, from, to)`: elements `from` to `to`, from 1 and both included; a NULL
/// bound is the array's end; NULL when the bounds fall outside the array.
fn slice(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let DataType::List(field) = a[0].data_type() else {
        return exec_err!("SLICE takes an ARRAY, not {}", a[0].data_type());
    };
    let list = a[0].as_list::<i32>();
    let (from, to) = (ints(&a[1])?, ints(&a[2])?);
    let mut indices: Vec<u32> = Vec::new();
    let mut lengths: Vec<usize> = Vec::with_capacity(rows);
    let mut valid: Vec<bool> = Vec::with_capacity(rows);
    for i in 0..rows {
        let bounds = (!list.is_null(i)).then(|| {
            let len = list.value_length(i) as i64;
            let start = if from.is_null(i) {
                0
            } else {
                from.value(i) - 1
            };
            let end = if to.is_null(i) { len } else { to.value(i) };
            (start >= 0 && end <= len && start <= end).then_some((start, end))
        });
        match bounds.flatten() {
            Some((start, end)) => {
                let base = list.value_offsets()[i] as i64;
                indices.extend((base + start..base + end).map(|j| j as u32));
                lengths.push((end - start) as usize);
                valid.push(true);
            }
            None => {
                lengths.push(0);
                valid.push(false);
            }
        }
    }
    let values = take(list.values(), &UInt32Array::from(indices), None)?;
    let out = ListArray::try_new(
        Arc::new(Field::clone(field)),
        OffsetBuffer::from_lengths(lengths),
        values,
        Some(valid.into()),
    )?;
    Ok(Arc::new(out))
}

/// ksqlDB's `SPLIT_TO_MAP(s, entryDelimiter, kvDelimiter)`: empty entries and entries without
/// the key-value delimiter are skipped, a later key wins; NULL for an empty delimiter.
fn split_to_map(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let (text, entry, kv) = (strings(&a[0])?, strings(&a[1])?, strings(&a[2])?);
    let mut out = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for i in 0..text.len() {
        if text.is_null(i) || entry.is_null(i) || kv.is_null(i) {
            out.append(false)?;
            continue;
        }
        let (text, entry, kv) = (text.value(i), entry.value(i), kv.value(i));
        if entry.is_empty() || kv.is_empty() {
            out.append(false)?;
            continue;
        }
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for piece in text.split(entry).filter(|p| !p.is_empty()) {
            let mut parts = piece.split(kv);
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some(pair) => pair.1 = value,
                None => pairs.push((key, value)),
            }
        }
        for (key, value) in pairs {
            out.keys().append_value(key);
            out.values().append_value(value);
        }
        out.append(true)?;
    }
    Ok(Arc::new(out.finish()))
}
