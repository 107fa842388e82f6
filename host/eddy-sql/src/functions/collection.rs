//! Regular expressions and collections: `REGEXP_EXTRACT`, `REGEXP_EXTRACT_ALL`,
//! `REGEXP_SPLIT_TO_ARRAY`, `SLICE`, `ELT`, `FIELD`, `SPLIT_TO_MAP`, `AS_MAP`, `MAP_UNION`,
//! `ENTRIES`. Regular expressions are
//! Rust's `regex` syntax, which covers Java's save for look-around and back-references.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Int32Array, ListArray, ListBuilder, MapArray,
    MapBuilder, StringArray, StringBuilder, StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{interleave, sort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{Signature, TypeSignature, Volatility};
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
        Ksql::new(
            "regexp_replace",
            vec![vec![S, S, S]],
            returns!(S),
            |a, _| {
                let mut patterns = Patterns::default();
                let (text, pattern, with) = (strings(&a[0])?, strings(&a[1])?, strings(&a[2])?);
                let mut out = StringBuilder::new();
                for i in 0..text.len() {
                    if text.is_null(i) || pattern.is_null(i) || with.is_null(i) {
                        out.append_null();
                        continue;
                    }
                    // Every match, as Java's replaceAll.
                    let re = patterns.get(pattern.value(i))?;
                    out.append_value(re.replace_all(text.value(i), with.value(i)));
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::with_signature(
            "array_sort",
            Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
            |t| match &t[0] {
                DataType::List(_) | DataType::Null => Ok(t[0].clone()),
                other => plan_err!("ARRAY_SORT takes an ARRAY, not {other}"),
            },
            array_sort,
        ),
        Ksql::with_signature(
            "generate_series",
            Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Int32, DataType::Int32]),
                    TypeSignature::Exact(vec![DataType::Int32, DataType::Int32, DataType::Int32]),
                    TypeSignature::Exact(vec![I, I]),
                    TypeSignature::Exact(vec![I, I, I]),
                ],
                Volatility::Immutable,
            ),
            |t| Ok(DataType::new_list(t[0].clone(), true)),
            generate_series,
        ),
        Ksql::with_signature(
            "array_join",
            Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
            |t| match &t[0] {
                DataType::List(_) | DataType::Null => Ok(S),
                other => plan_err!("ARRAY_JOIN takes an ARRAY, not {other}"),
            },
            array_join,
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
        Ksql::with_signature(
            "as_map",
            Signature::any(2, Volatility::Immutable),
            |t| match (&t[0], &t[1]) {
                (DataType::List(k), DataType::List(v)) if k.data_type() == &S => {
                    Ok(map_type(v.data_type().clone()))
                }
                (k, v) => plan_err!("AS_MAP takes an ARRAY<STRING> and an ARRAY, not {k}, {v}"),
            },
            as_map,
        ),
        Ksql::with_signature(
            "map_union",
            Signature::any(2, Volatility::Immutable),
            |t| match (&t[0], &t[1]) {
                (DataType::Map(..), b) if b == &t[0] => Ok(t[0].clone()),
                (a, b) => plan_err!("MAP_UNION takes two MAPs of one type, not {a}, {b}"),
            },
            map_union,
        ),
        Ksql::with_signature(
            "entries",
            Signature::any(2, Volatility::Immutable),
            |t| match (&t[0], &t[1]) {
                (DataType::Map(entries, _), DataType::Boolean) => {
                    Ok(DataType::new_list(entry_struct(map_parts(entries)?), true))
                }
                (m, b) => plan_err!("ENTRIES takes a MAP and a BOOLEAN, not {m}, {b}"),
            },
            entries,
        ),
    ]
}

/// A MAP type with string keys, as [`MapBuilder`] spells it.
fn map_type(value: DataType) -> DataType {
    let entries = Field::new_struct(
        "entries",
        vec![
            Field::new("keys", S, false),
            Field::new("values", value, true),
        ],
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The key and value fields of a MAP's entries.
fn map_parts(entries: &Field) -> Result<(Field, Field)> {
    match entries.data_type() {
        DataType::Struct(fields) if fields.len() == 2 => {
            Ok((Field::clone(&fields[0]), Field::clone(&fields[1])))
        }
        other => plan_err!("not a MAP's entries: {other}"),
    }
}

/// `ENTRIES`' element: ksqlDB's `STRUCT<K, V>`.
fn entry_struct((key, value): (Field, Field)) -> DataType {
    DataType::Struct(Fields::from(vec![
        key.with_name("K").with_nullable(true),
        value.with_name("V").with_nullable(true),
    ]))
}

/// Where an entry's key and value come from: (source array, index) of each.
type EntryAt = ((usize, usize), (usize, usize));

/// A MAP of `rows`, each NULL or where its entries' keys and values come from.
fn build_map(
    ty: &DataType,
    keys: &[&dyn Array],
    values: &[&dyn Array],
    rows: Vec<Option<Vec<EntryAt>>>,
) -> Result<ArrayRef> {
    let DataType::Map(entries, sorted) = ty else {
        return exec_err!("not a MAP: {ty}");
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return exec_err!("not a MAP's entries: {}", entries.data_type());
    };
    let flat: Vec<EntryAt> = rows.iter().flatten().flatten().copied().collect();
    let key_at: Vec<(usize, usize)> = flat.iter().map(|(k, _)| *k).collect();
    let value_at: Vec<(usize, usize)> = flat.iter().map(|(_, v)| *v).collect();
    let lengths = rows.iter().map(|r| r.as_ref().map_or(0, Vec::len));
    let valid: Vec<bool> = rows.iter().map(Option::is_some).collect();
    let struct_array = StructArray::try_new(
        fields.clone(),
        vec![interleave(keys, &key_at)?, interleave(values, &value_at)?],
        None,
    )?;
    Ok(Arc::new(MapArray::try_new(
        entries.clone(),
        OffsetBuffer::from_lengths(lengths),
        struct_array,
        Some(valid.into()),
        *sorted,
    )?))
}

/// Adds an entry under `key`: a later key replaces an earlier one, in its place, as a Java
/// map's `put` does.
fn put(entries: &mut Vec<(String, EntryAt)>, key: &str, at: EntryAt) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = at,
        None => entries.push((key.to_string(), at)),
    }
}

/// The entries' sources, in order, without their keys.
fn places(entries: Vec<(String, EntryAt)>) -> Vec<EntryAt> {
    entries.into_iter().map(|(_, at)| at).collect()
}

/// ksqlDB's `AS_MAP(keys, values)`: the n-th key maps to the n-th value, or to NULL when the
/// values run out; a later key wins; NULL keys are skipped; NULL when either array is.
fn as_map(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (keys, values) = (a[0].as_list::<i32>(), a[1].as_list::<i32>());
    let DataType::List(value_field) = a[1].data_type() else {
        return exec_err!("AS_MAP takes an ARRAY of values");
    };
    let key_strings = strings(keys.values())?;
    let no_value = new_null_array(value_field.data_type(), 1);
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        if keys.is_null(i) || values.is_null(i) {
            out.push(None);
            continue;
        }
        let k0 = keys.value_offsets()[i] as usize;
        let v0 = values.value_offsets()[i] as usize;
        let v_len = values.value_length(i) as usize;
        let mut entries = Vec::new();
        for n in 0..keys.value_length(i) as usize {
            if key_strings.is_null(k0 + n) {
                continue;
            }
            let value = if n < v_len { (0, v0 + n) } else { (1, 0) };
            put(
                &mut entries,
                key_strings.value(k0 + n),
                ((0, k0 + n), value),
            );
        }
        out.push(Some(places(entries)));
    }
    build_map(
        &map_type(value_field.data_type().clone()),
        &[&key_strings],
        &[values.values().as_ref(), no_value.as_ref()],
        out,
    )
}

/// ksqlDB's `MAP_UNION(a, b)`: the entries of both, `b`'s winning; a NULL map counts as empty,
/// and two give NULL.
fn map_union(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let maps = [a[0].as_map(), a[1].as_map()];
    let keys: Vec<StringArray> = maps
        .iter()
        .map(|m| strings(m.keys()))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        if maps.iter().all(|m| m.is_null(i)) {
            out.push(None);
            continue;
        }
        let mut entries = Vec::new();
        for (source, m) in maps.iter().enumerate() {
            if m.is_null(i) {
                continue;
            }
            let offsets = m.value_offsets();
            for j in offsets[i] as usize..offsets[i + 1] as usize {
                put(
                    &mut entries,
                    keys[source].value(j),
                    ((source, j), (source, j)),
                );
            }
        }
        out.push(Some(places(entries)));
    }
    let key_arrays: Vec<&dyn Array> = maps.iter().map(|m| m.keys().as_ref()).collect();
    let value_arrays: Vec<&dyn Array> = maps.iter().map(|m| m.values().as_ref()).collect();
    build_map(a[0].data_type(), &key_arrays, &value_arrays, out)
}

/// ksqlDB's `ENTRIES(map, sorted)`: the entries as `STRUCT<K, V>`s, by key when `sorted`.
fn entries(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let DataType::Map(entries_field, _) = a[0].data_type() else {
        return exec_err!("ENTRIES takes a MAP, not {}", a[0].data_type());
    };
    let DataType::Struct(fields) = entry_struct(map_parts(entries_field)?) else {
        return exec_err!("ENTRIES: no struct type");
    };
    let map = a[0].as_map();
    let sorted = a[1].as_boolean();
    let mut indices: Vec<u32> = Vec::new();
    let mut lengths = Vec::with_capacity(rows);
    let mut valid = Vec::with_capacity(rows);
    for i in 0..rows {
        if map.is_null(i) {
            lengths.push(0);
            valid.push(false);
            continue;
        }
        let (start, end) = (
            map.value_offsets()[i] as usize,
            map.value_offsets()[i + 1] as usize,
        );
        let mut row: Vec<u32> = (start as u32..end as u32).collect();
        if sorted.is_valid(i) && sorted.value(i) {
            let keys = map.keys().slice(start, end - start);
            let order = sort_to_indices(&keys, None, None)?;
            row = order.values().iter().map(|o| start as u32 + o).collect();
        }
        lengths.push(row.len());
        indices.extend(row);
        valid.push(true);
    }
    let indices = UInt32Array::from(indices);
    let items = StructArray::try_new(
        fields.clone(),
        vec![
            take(map.keys(), &indices, None)?,
            take(map.values(), &indices, None)?,
        ],
        None,
    )?;
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Struct(fields), true)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(items),
        Some(valid.into()),
    )?))
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

/// ksqlDB's `ARRAY_JOIN(array[, delimiter])`: the elements as Java prints them (`null` for a
/// NULL, `0.0` for a whole DOUBLE), joined by the delimiter, `,` when not given and nothing when
/// NULL.
fn array_join(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    if a[0].data_type().is_null() {
        return Ok(new_null_array(&S, rows));
    }
    let lists = a[0].as_list::<i32>();
    let delimiters = match a.get(1) {
        Some(d) => Some(datafusion::arrow::compute::cast(d, &S)?),
        None => None,
    };
    let delimiters = delimiters.as_ref().map(|d| d.as_string::<i32>());
    let out: StringArray = (0..rows)
        .map(|i| {
            if lists.is_null(i) {
                return Ok(None);
            }
            let delimiter = match delimiters {
                None => ",",
                Some(d) if d.is_null(i) => "",
                Some(d) => d.value(i),
            };
            let values = lists.value(i);
            let texts = (0..values.len())
                .map(|j| element_text(&values, j))
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(texts.join(delimiter)))
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(out))
}

/// One array element as Java's `toString` prints it.
fn element_text(values: &ArrayRef, j: usize) -> Result<String> {
    if values.is_null(j) {
        return Ok("null".into());
    }
    let double = match values.data_type() {
        DataType::Float64 => Some(
            values
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(j),
        ),
        DataType::Float32 => Some(f64::from(
            values
                .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                .value(j),
        )),
        _ => None,
    };
    Ok(match double {
        Some(x) if x.is_nan() => "NaN".into(),
        Some(x) if x.is_infinite() => if x > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e7 => format!("{x:.1}"),
        Some(x) => x.to_string(),
        None => datafusion::arrow::util::display::array_value_to_string(values, j)?,
    })
}

/// ksqlDB's `ARRAY_SORT(array[, 'ASC' | 'DESC'])`: NULL elements last either way.
fn array_sort(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    if a[0].data_type().is_null() {
        return Ok(a[0].clone());
    }
    let lists = a[0].as_list::<i32>();
    let directions = a.get(1).map(strings).transpose()?;
    let DataType::List(field) = lists.data_type() else {
        return exec_err!("ARRAY_SORT takes an ARRAY");
    };
    let mut offsets = vec![0i32];
    let mut pieces: Vec<ArrayRef> = Vec::new();
    for i in 0..rows {
        let end = *offsets.last().expect("an offset");
        if lists.is_null(i) {
            offsets.push(end);
            continue;
        }
        let descending = directions
            .as_ref()
            .is_some_and(|d| d.is_valid(i) && d.value(i).eq_ignore_ascii_case("desc"));
        let values = lists.value(i);
        let options = datafusion::arrow::compute::SortOptions {
            descending,
            nulls_first: false,
        };
        let order = sort_to_indices(&values, Some(options), None)?;
        pieces.push(take(&values, &order, None)?);
        offsets.push(end + values.len() as i32);
    }
    let values = match pieces.is_empty() {
        true => datafusion::arrow::array::new_empty_array(field.data_type()),
        false => datafusion::arrow::compute::concat(
            &pieces.iter().map(|p| p.as_ref()).collect::<Vec<_>>(),
        )?,
    };
    Ok(Arc::new(ListArray::try_new(
        field.clone(),
        OffsetBuffer::new(offsets.into()),
        values,
        lists.nulls().cloned(),
    )?))
}

/// ksqlDB's `GENERATE_SERIES(start, end[, step])`: both ends included, counting down when
/// `start` is above `end` and no step is given; NULL for a step of 0 or of the wrong sign.
fn generate_series(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let element = a[0].data_type().clone();
    let bounds = a
        .iter()
        .map(|c| datafusion::arrow::compute::cast(c, &I))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let bounds: Vec<&datafusion::arrow::array::Int64Array> =
        bounds.iter().map(|c| c.as_primitive()).collect();
    let mut out = ListBuilder::new(datafusion::arrow::array::Int64Builder::new());
    for i in 0..rows {
        if bounds.iter().any(|b| b.is_null(i)) {
            out.append_null();
            continue;
        }
        let (start, end) = (bounds[0].value(i), bounds[1].value(i));
        let step = match bounds.get(2) {
            Some(s) => s.value(i),
            None if start <= end => 1,
            None => -1,
        };
        if step == 0 || (end - start).signum() * step.signum() < 0 {
            out.append_null();
            continue;
        }
        let mut n = start;
        while (step > 0 && n <= end) || (step < 0 && n >= end) {
            out.values().append_value(n);
            n += step;
        }
        out.append(true);
    }
    let series: ArrayRef = Arc::new(out.finish());
    Ok(datafusion::arrow::compute::cast(
        &series,
        &DataType::new_list(element, true),
    )?)
}
