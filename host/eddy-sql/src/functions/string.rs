//! String and collection functions: `LCASE`, `UCASE`, `LEN`, `SUBSTRING`, `INSTR`, `LPAD`,
//! `RPAD`, `SPLIT`, `AS_VALUE`, `ARRAY_LENGTH`. Positions count characters, from 1.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, Int32Array, Int64Array, ListBuilder,
    StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{Signature, Volatility};

use super::scalar::{returns, Ksql};

const S: DataType = DataType::Utf8;
const I: DataType = DataType::Int64;
const B: DataType = DataType::Binary;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::new("lcase", vec![vec![S]], returns!(S), |a, _| {
            map_str(&a[0], |s| s.to_lowercase())
        }),
        Ksql::new("ucase", vec![vec![S]], returns!(S), |a, _| {
            map_str(&a[0], |s| s.to_uppercase())
        }),
        Ksql::new(
            "len",
            vec![vec![S], vec![DataType::Binary]],
            returns!(DataType::Int32),
            len,
        ),
        substring(),
        Ksql::new(
            "instr",
            vec![vec![S, S], vec![S, S, I], vec![S, S, I, I]],
            returns!(DataType::Int32),
            instr,
        ),
        Ksql::new(
            "lpad",
            vec![vec![S, I, S], vec![B, I, B]],
            same_as_first,
            |a, _| pad(a, true),
        ),
        Ksql::new(
            "rpad",
            vec![vec![S, I, S], vec![B, I, B]],
            same_as_first,
            |a, _| pad(a, false),
        ),
        Ksql::new("chr", vec![vec![I], vec![S]], returns!(S), chr),
        // ksqlDB's TRIM is Java's: every character up to a space at either end (tabs too).
        Ksql::new("trim", vec![vec![S]], returns!(S), |a, _| {
            let out: StringArray = strings(&a[0])?
                .iter()
                .map(|t| t.map(|t| t.trim_matches(|c: char| c <= ' ')))
                .collect();
            Ok(Arc::new(out))
        }),
        // ksqlDB's INITCAP starts a word after whitespace only (`Some_string`).
        Ksql::new("initcap", vec![vec![S]], returns!(S), |a, _| {
            let out: StringArray = strings(&a[0])?
                .iter()
                .map(|text| {
                    let mut after_space = true;
                    text.map(|t| {
                        t.chars()
                            .flat_map(|c| {
                                let upper = after_space;
                                after_space = c.is_whitespace();
                                let cased: Vec<char> = if upper {
                                    c.to_uppercase().collect()
                                } else {
                                    c.to_lowercase().collect()
                                };
                                cased
                            })
                            .collect::<String>()
                    })
                })
                .collect();
            Ok(Arc::new(out))
        }),
        Ksql::new(
            "split",
            vec![vec![S, S], vec![DataType::Binary, DataType::Binary]],
            |t: &[DataType]| Ok(DataType::new_list(t[0].clone(), true)),
            split,
        ),
        Ksql::with_signature(
            "as_value",
            Signature::any(1, Volatility::Immutable),
            |t| Ok(t[0].clone()),
            |a, _| Ok(a[0].clone()),
        ),
        Ksql::with_signature(
            "array_length",
            Signature::any(1, Volatility::Immutable),
            |t| match &t[0] {
                DataType::List(_) | DataType::Null => Ok(DataType::Int32),
                other => plan_err!("ARRAY_LENGTH takes an ARRAY, not {other}"),
            },
            array_length,
        ),
    ]
}

/// ksqlDB's `SUBSTRING(str, pos[, len])`: 1-based, a negative `pos` counts from the end, and
/// positions outside the string clamp to it rather than failing.
pub(super) fn substring() -> Ksql {
    Ksql::new(
        "substring",
        vec![vec![S, I], vec![S, I, I], vec![B, I], vec![B, I, I]],
        same_as_first,
        |a, _| {
            if a[0].data_type() == &B {
                return bytes_substring(a);
            }
            let text = strings(&a[0])?;
            let pos = ints(&a[1])?;
            let len = a.get(2).map(ints).transpose()?;
            let out: StringArray = (0..text.len())
                .map(|i| {
                    if text.is_null(i) || pos.is_null(i) {
                        return None;
                    }
                    let len = match &len {
                        Some(l) if l.is_null(i) => return None,
                        Some(l) => Some(l.value(i)),
                        None => None,
                    };
                    Some(substring_of(text.value(i), pos.value(i), len))
                })
                .collect();
            Ok(Arc::new(out))
        },
    )
}

/// A STRING for a STRING, BYTES for BYTES.
fn same_as_first(t: &[DataType]) -> Result<DataType> {
    Ok(if t.first() == Some(&B) { B } else { S })
}

/// [`substring`] of BYTES, counting bytes.
fn bytes_substring(a: &[ArrayRef]) -> Result<ArrayRef> {
    let bytes = a[0].as_binary::<i32>();
    let pos = ints(&a[1])?;
    let len = a.get(2).map(ints).transpose()?;
    let out: BinaryArray = (0..bytes.len())
        .map(|i| {
            if bytes.is_null(i) || pos.is_null(i) || len.as_ref().is_some_and(|l| l.is_null(i)) {
                return None;
            }
            let value = bytes.value(i);
            let (start, end) = bounds(
                value.len() as i64,
                pos.value(i),
                len.as_ref().map(|l| l.value(i)),
            );
            Some(value[start..end].to_vec())
        })
        .collect();
    Ok(Arc::new(out))
}

/// Where ksqlDB's 1-based `pos` and optional `len` cut a value of `n` units.
fn bounds(n: i64, pos: i64, len: Option<i64>) -> (usize, usize) {
    let start = if pos < 0 {
        n.saturating_add(pos).max(0)
    } else {
        (pos - 1).clamp(0, n)
    };
    let end = len.map_or(n, |l| start.saturating_add(l).min(n).max(start));
    (start as usize, end as usize)
}

fn substring_of(text: &str, pos: i64, len: Option<i64>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let (start, end) = bounds(chars.len() as i64, pos, len);
    chars[start..end].iter().collect()
}

fn len(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let out: Int32Array = match a[0].data_type() {
        DataType::Binary => {
            let b = a[0].as_binary::<i32>();
            b.iter().map(|v| v.map(|v| v.len() as i32)).collect()
        }
        _ => strings(&a[0])?
            .iter()
            .map(|v| v.map(|v| v.chars().count() as i32))
            .collect(),
    };
    Ok(Arc::new(out))
}

/// ksqlDB's `INSTR`: 0 when not found or when the string is null; a negative position searches
/// backwards from that far from the end.
fn instr(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let text = strings(&a[0])?;
    let sub = strings(&a[1])?;
    let pos = a.get(2).map(ints).transpose()?;
    let occurrence = a.get(3).map(ints).transpose()?;
    let out: Int32Array = (0..text.len())
        .map(|i| {
            let pos = match &pos {
                Some(p) if p.is_null(i) => return None,
                Some(p) => p.value(i),
                None => 1,
            };
            let occurrence = match &occurrence {
                Some(o) if o.is_null(i) => return None,
                Some(o) => o.value(i),
                None => 1,
            };
            if text.is_null(i) || sub.is_null(i) {
                return Some(0);
            }
            Some(instr_of(text.value(i), sub.value(i), pos, occurrence) as i32)
        })
        .collect();
    Ok(Arc::new(out))
}

fn instr_of(text: &str, sub: &str, pos: i64, occurrence: i64) -> i64 {
    let mut text: Vec<char> = text.chars().collect();
    let mut sub: Vec<char> = sub.chars().collect();
    let n = text.len() as i64;
    if pos.abs() > n {
        return 0;
    }
    let reversed = pos < 0;
    let pos = pos.abs();
    if reversed {
        text.reverse();
        sub.reverse();
    }
    // Java's StringUtils.substring: a negative start counts from the end.
    let mut start = pos - 1;
    if start < 0 {
        start += n;
    }
    let Some(i) = nth_index(&text[start.max(0) as usize..], &sub, occurrence) else {
        return 0;
    };
    if reversed {
        n - pos - i - sub.len() as i64 + 2
    } else {
        i + pos
    }
}

/// The index of the `nth` (from 1) occurrence of `sub` in `text`; occurrences may overlap.
fn nth_index(text: &[char], sub: &[char], nth: i64) -> Option<i64> {
    if nth <= 0 {
        return None;
    }
    if sub.is_empty() {
        return Some(0);
    }
    let mut found = 0;
    for i in 0..text.len() {
        if text[i..].starts_with(sub) {
            found += 1;
            if found == nth {
                return Some(i as i64);
            }
        }
    }
    None
}

/// ksqlDB's `LPAD`/`RPAD`: truncates an input longer than `length`, and is null for an empty or
/// null padding or a negative length.
fn pad(a: &[ArrayRef], left: bool) -> Result<ArrayRef> {
    if a[0].data_type() == &B {
        return pad_bytes(a, left);
    }
    let text = strings(&a[0])?;
    let length = ints(&a[1])?;
    let padding = strings(&a[2])?;
    let out: StringArray = (0..text.len())
        .map(|i| {
            if text.is_null(i) || length.is_null(i) || padding.is_null(i) {
                return None;
            }
            let (text, length, padding) = (text.value(i), length.value(i), padding.value(i));
            if padding.is_empty() || length < 0 {
                return None;
            }
            let length = length as usize;
            let n = text.chars().count();
            if n >= length {
                return Some(text.chars().take(length).collect());
            }
            let fill: String = padding.chars().cycle().take(length - n).collect();
            Some(if left {
                fill + text
            } else {
                text.to_owned() + &fill
            })
        })
        .collect();
    Ok(Arc::new(out))
}

/// [`pad`] of BYTES, counting bytes.
fn pad_bytes(a: &[ArrayRef], left: bool) -> Result<ArrayRef> {
    let (bytes, padding) = (a[0].as_binary::<i32>(), a[2].as_binary::<i32>());
    let length = ints(&a[1])?;
    let out: BinaryArray = (0..bytes.len())
        .map(|i| {
            if bytes.is_null(i) || length.is_null(i) || padding.is_null(i) {
                return None;
            }
            let (value, length, padding) = (bytes.value(i), length.value(i), padding.value(i));
            if padding.is_empty() || length < 0 {
                return None;
            }
            let length = length as usize;
            if value.len() >= length {
                return Some(value[..length].to_vec());
            }
            let fill: Vec<u8> = padding
                .iter()
                .copied()
                .cycle()
                .take(length - value.len())
                .collect();
            Some(if left {
                [fill.as_slice(), value].concat()
            } else {
                [value, fill.as_slice()].concat()
            })
        })
        .collect();
    Ok(Arc::new(out))
}

/// ksqlDB's `CHR`: the character of a code point, given as a number or as Java's `\uXXXX`
/// escapes (a surrogate pair for code points beyond 0xFFFF); NULL for anything else.
fn chr(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let out: StringArray = if a[0].data_type() == &S {
        strings(&a[0])?
            .iter()
            .map(|text| {
                let units = text?
                    .split("\\u")
                    .skip(1)
                    .map(|hex| {
                        (hex.len() == 4)
                            .then(|| u16::from_str_radix(hex, 16).ok())
                            .flatten()
                    })
                    .collect::<Option<Vec<u16>>>()?;
                let decoded = String::from_utf16(&units).ok()?;
                (decoded.chars().count() == 1 && text?.starts_with("\\u")).then_some(decoded)
            })
            .collect()
    } else {
        ints(&a[0])?
            .iter()
            .map(|code| {
                let code = u32::try_from(code?).ok()?;
                char::from_u32(code).map(String::from)
            })
            .collect()
    };
    Ok(Arc::new(out))
}

/// ksqlDB's `SPLIT`: empty pieces are kept, and an empty delimiter splits every character.
fn split(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    if a[0].data_type() == &DataType::Binary {
        return split_bytes(a);
    }
    let text = strings(&a[0])?;
    let delimiter = strings(&a[1])?;
    let mut out = ListBuilder::new(StringBuilder::new());
    for i in 0..text.len() {
        if text.is_null(i) || delimiter.is_null(i) {
            out.append(false);
            continue;
        }
        let (text, delimiter) = (text.value(i), delimiter.value(i));
        if delimiter.is_empty() {
            for c in text.chars() {
                out.values().append_value(c.to_string());
            }
        } else {
            for piece in text.split(delimiter) {
                out.values().append_value(piece);
            }
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// `SPLIT` of `BYTES` by a `BYTES` delimiter, as ksqlDB splits them: into single bytes when
/// the delimiter is empty.
fn split_bytes(a: &[ArrayRef]) -> Result<ArrayRef> {
    let (bytes, delimiter) = (a[0].as_binary::<i32>(), a[1].as_binary::<i32>());
    let mut out = ListBuilder::new(BinaryBuilder::new());
    for i in 0..bytes.len() {
        if bytes.is_null(i) || delimiter.is_null(i) {
            out.append(false);
            continue;
        }
        let (bytes, delimiter) = (bytes.value(i), delimiter.value(i));
        if delimiter.is_empty() {
            for b in bytes {
                out.values().append_value([*b]);
            }
        } else {
            let mut rest = bytes;
            while let Some(at) = rest.windows(delimiter.len()).position(|w| w == delimiter) {
                out.values().append_value(&rest[..at]);
                rest = &rest[at + delimiter.len()..];
            }
            out.values().append_value(rest);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

fn array_length(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let out: Int32Array = match a[0].data_type() {
        DataType::List(_) => {
            let list = a[0].as_list::<i32>();
            (0..list.len())
                .map(|i| (!list.is_null(i)).then(|| list.value_length(i)))
                .collect()
        }
        _ => Int32Array::new_null(rows),
    };
    Ok(Arc::new(out))
}

/// `a` as UTF-8 strings (the signature has coerced it to a string type).
pub(super) fn strings(a: &ArrayRef) -> Result<StringArray> {
    Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// `a` as 64-bit integers (the signature has coerced it to an integer type).
pub(super) fn ints(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn map_str(a: &ArrayRef, f: impl Fn(&str) -> String) -> Result<ArrayRef> {
    let out: StringArray = strings(a)?.iter().map(|v| v.map(&f)).collect();
    Ok(Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instr_follows_ksqldb_examples() {
        let t = "CORPORATE FLOOR";
        assert_eq!(instr_of(t, "OR", 1, 1), 2);
        assert_eq!(instr_of(t, "OR", 3, 1), 5);
        assert_eq!(instr_of(t, "OR", 3, 2), 14);
        assert_eq!(instr_of(t, "OR", -3, 1), 5);
        assert_eq!(instr_of(t, "OR", -3, 2), 2);
        assert_eq!(instr_of(t, "MISSING", 1, 1), 0);
    }

    #[test]
    fn substring_clamps_like_ksqldb() {
        assert_eq!(substring_of("stream", 1, Some(4)), "stre");
        assert_eq!(substring_of("stream", -3, None), "eam");
        assert_eq!(substring_of("stream", -10, Some(2)), "st");
        assert_eq!(substring_of("stream", 0, None), "stream");
        assert_eq!(substring_of("stream", 9, None), "");
        assert_eq!(substring_of("stream", 2, Some(-1)), "");
        assert_eq!(substring_of("héllo", 2, Some(2)), "él");
    }
}
