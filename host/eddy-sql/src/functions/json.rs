//! ksqlDB's JSON functions: `TO_JSON_STRING`, `EXTRACTJSONFIELD`, `IS_JSON_STRING`,
//! `JSON_ARRAY_LENGTH`, `JSON_ARRAY_CONTAINS`, `JSON_KEYS`, `JSON_RECORDS`, `JSON_ITEMS`,
//! `JSON_CONCAT`.
//!
//! JSON text is read with a parser of its own rather than `serde_json`'s `Value`: ksqlDB (Jackson)
//! keeps an object's keys in their order and a number's digits as written (`1.23450`), and reads
//! the first value of a text, ignoring what follows it.

use std::fmt::Write;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, NaiveTime};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, ListBuilder, MapBuilder, StringArray,
    StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::{Signature, TypeSignature, Volatility};

use super::scalar::{returns, Ksql};
use super::string::strings;

const S: DataType = DataType::Utf8;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::with_signature(
            "to_json_string",
            Signature::any(1, Volatility::Immutable),
            returns!(S),
            |a, _| {
                let out: StringArray = (0..a[0].len())
                    .map(|i| {
                        let mut text = String::new();
                        write_arrow(&mut text, &a[0], i).map(|()| text)
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .map(Some)
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new("extractjsonfield", vec![vec![S, S]], returns!(S), |a, _| {
            let json = strings(&a[0])?;
            let paths = strings(&a[1])?;
            let out: StringArray = (0..json.len())
                .map(|i| {
                    if json.is_null(i) || paths.is_null(i) {
                        return None;
                    }
                    let path = parse_path(paths.value(i))?;
                    let value = parse(json.value(i))?;
                    text_of(value.at(&path)?)
                })
                .collect();
            Ok(Arc::new(out))
        }),
        Ksql::new(
            "is_json_string",
            vec![vec![S]],
            returns!(DataType::Boolean),
            |a, _| {
                let out: BooleanArray = strings(&a[0])?
                    .iter()
                    .map(|v| Some(v.and_then(parse).is_some()))
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "json_array_length",
            vec![vec![S]],
            returns!(DataType::Int32),
            |a, _| {
                let out: Int32Array = strings(&a[0])?
                    .iter()
                    .map(|v| match parse(v?)? {
                        Json::Array(items) => Some(items.len() as i32),
                        _ => None,
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::with_signature(
            "json_array_contains",
            Signature::one_of(
                [
                    DataType::Utf8,
                    DataType::Int64,
                    DataType::Float64,
                    DataType::Boolean,
                ]
                .into_iter()
                .map(|t| TypeSignature::Exact(vec![S, t]))
                .collect(),
                Volatility::Immutable,
            ),
            returns!(DataType::Boolean),
            json_array_contains,
        ),
        Ksql::new(
            "json_keys",
            vec![vec![S]],
            returns!(DataType::new_list(S, true)),
            |a, _| {
                let mut out = ListBuilder::new(StringBuilder::new());
                for v in strings(&a[0])?.iter() {
                    match v.and_then(parse) {
                        Some(Json::Object(fields)) => {
                            for (key, _) in fields {
                                out.values().append_value(key);
                            }
                            out.append(true);
                        }
                        _ => out.append(false),
                    }
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::new(
            "json_records",
            vec![vec![S]],
            returns!(records_type()),
            |a, _| {
                let mut out = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                for v in strings(&a[0])?.iter() {
                    match v.and_then(parse) {
                        Some(Json::Object(fields)) => {
                            for (key, value) in &fields {
                                out.keys().append_value(key);
                                out.values().append_option(text_of(value));
                            }
                            out.append(true)?;
                        }
                        _ => out.append(false)?,
                    }
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::new(
            "json_items",
            vec![vec![S]],
            returns!(DataType::new_list(S, true)),
            |a, _| {
                let mut out = ListBuilder::new(StringBuilder::new());
                for v in strings(&a[0])?.iter() {
                    match v.and_then(parse) {
                        Some(Json::Array(items)) => {
                            for item in &items {
                                out.values().append_value(item.to_string());
                            }
                            out.append(true);
                        }
                        _ => out.append(false),
                    }
                }
                Ok(Arc::new(out.finish()))
            },
        ),
        Ksql::with_signature(
            "json_concat",
            Signature::variadic(vec![S], Volatility::Immutable),
            |t| {
                if t.len() < 2 {
                    return plan_err!("JSON_CONCAT takes at least 2 arguments, not {}", t.len());
                }
                Ok(S)
            },
            |a, rows| {
                let texts = a.iter().map(strings).collect::<Result<Vec<_>>>()?;
                let out: StringArray = (0..rows)
                    .map(|i| {
                        let values = texts
                            .iter()
                            .map(|t| {
                                if t.is_null(i) {
                                    None
                                } else {
                                    parse(t.value(i))
                                }
                            })
                            .collect::<Option<Vec<_>>>()?;
                        Some(concat(values).to_string())
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
    ]
}

/// `JSON_RECORDS`' type: a `MAP<STRING, STRING>` as [`MapBuilder`] builds it.
pub(super) fn records_type() -> DataType {
    let entries = Field::new_struct(
        "entries",
        vec![Field::new("keys", S, false), Field::new("values", S, true)],
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// ksqlDB's `JSON_ARRAY_CONTAINS`: whether a top-level element of the array equals the value
/// (NULL finds a JSON null); false for NULL or what is not a JSON array.
fn json_array_contains(a: &[ArrayRef], _: usize) -> Result<ArrayRef> {
    let json = strings(&a[0])?;
    let out: BooleanArray = (0..json.len())
        .map(|i| {
            let Some(Json::Array(items)) = (!json.is_null(i)).then(|| parse(json.value(i)))? else {
                return Some(false);
            };
            let wanted = ScalarValue::try_from_array(&a[1], i).ok()?;
            Some(items.iter().any(|item| match (item, &wanted) {
                (Json::Null, w) => w.is_null(),
                (Json::String(s), ScalarValue::Utf8(Some(w))) => s == w,
                (Json::Bool(b), ScalarValue::Boolean(Some(w))) => b == w,
                (Json::Number(n), ScalarValue::Int64(Some(w))) => n.parse::<i64>() == Ok(*w),
                (Json::Number(n), ScalarValue::Float64(Some(w))) => {
                    !is_integer(n) && n.parse::<f64>() == Ok(*w)
                }
                _ => false,
            }))
        })
        .collect();
    Ok(Arc::new(out))
}

fn is_integer(number: &str) -> bool {
    !number.contains(['.', 'e', 'E'])
}

/// ksqlDB's `JSON_CONCAT`: objects merge (a later key replaces an earlier one, in its place);
/// anything else makes an array of the arrays' elements and the other values.
fn concat(values: Vec<Json>) -> Json {
    if values.iter().all(|v| matches!(v, Json::Object(_))) {
        let mut merged: Vec<(String, Json)> = Vec::new();
        for v in values {
            let Json::Object(fields) = v else { continue };
            for (key, value) in fields {
                match merged.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => merged.push((key, value)),
                }
            }
        }
        return Json::Object(merged);
    }
    let mut items = Vec::new();
    for v in values {
        match v {
            Json::Array(inner) => items.extend(inner),
            other => items.push(other),
        }
    }
    Json::Array(items)
}

/// What `EXTRACTJSONFIELD` and `JSON_RECORDS` give for a value: a string's text, NULL for null,
/// else its JSON text.
fn text_of(value: &Json) -> Option<String> {
    match value {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A JSON value as read: numbers keep their digits, objects their key order.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// One step of a JSON path: a field or an array index.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
}

impl Json {
    /// The value at `path`, if there is one.
    fn at(&self, path: &[Step]) -> Option<&Json> {
        path.iter()
            .try_fold(self, |value, step| match (value, step) {
                (Json::Object(fields), Step::Field(name)) => {
                    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
                }
                (Json::Array(items), Step::Index(i)) => {
                    usize::try_from(*i).ok().and_then(|i| items.get(i))
                }
                _ => None,
            })
    }
}

impl std::fmt::Display for Json {
    /// Compact JSON, as Jackson writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => f.write_str(n),
            Json::String(s) => write_string(f, s),
            Json::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Json::Object(fields) => {
                f.write_char('{')?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_string(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_char('}')
            }
        }
    }
}

/// `s` as a JSON string literal.
fn write_string(out: &mut impl Write, s: &str) -> std::fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// The first JSON value of `text`, or `None` when it does not start with one. What follows the
/// value is ignored, as Jackson's `readTree` does.
fn parse(text: &str) -> Option<Json> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    parser.value(0)
}

/// How deep arrays and objects may nest: deeper input is not JSON to us, not a stack overflow.
const MAX_DEPTH: usize = 512;

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.chars.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, word: &str) -> bool {
        let end = self.at + word.chars().count();
        if self
            .chars
            .get(self.at..end)
            .is_some_and(|w| w.iter().copied().eq(word.chars()))
        {
            self.at = end;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match *self.chars.get(self.at)? {
            '{' => {
                self.at += 1;
                let mut fields = Vec::new();
                if self.eat('}') {
                    return Some(Json::Object(fields));
                }
                loop {
                    self.skip_space();
                    let key = self.string()?;
                    if !self.eat(':') {
                        return None;
                    }
                    fields.push((key, self.value(depth + 1)?));
                    if self.eat('}') {
                        return Some(Json::Object(fields));
                    }
                    if !self.eat(',') {
                        return None;
                    }
                }
            }
            '[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(']') {
                    return Some(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(']') {
                        return Some(Json::Array(items));
                    }
                    if !self.eat(',') {
                        return None;
                    }
                }
            }
            '"' => self.string().map(Json::String),
            't' => self.word("true").then_some(Json::Bool(true)),
            'f' => self.word("false").then_some(Json::Bool(false)),
            'n' => self.word("null").then_some(Json::Null),
            _ => self.number().map(Json::Number),
        }
    }

    fn number(&mut self) -> Option<String> {
        let start = self.at;
        let digits = |p: &mut Parser| {
            let from = p.at;
            while p.chars.get(p.at).is_some_and(|c| c.is_ascii_digit()) {
                p.at += 1;
            }
            p.at > from
        };
        if self.chars.get(self.at) == Some(&'-') {
            self.at += 1;
        }
        if !digits(self) {
            return None;
        }
        if self.chars.get(self.at) == Some(&'.') {
            self.at += 1;
            if !digits(self) {
                return None;
            }
        }
        if matches!(self.chars.get(self.at), Some('e' | 'E')) {
            self.at += 1;
            if matches!(self.chars.get(self.at), Some('+' | '-')) {
                self.at += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        Some(self.chars[start..self.at].iter().collect())
    }

    fn string(&mut self) -> Option<String> {
        if self.chars.get(self.at) != Some(&'"') {
            return None;
        }
        self.at += 1;
        let mut out = String::new();
        loop {
            let c = *self.chars.get(self.at)?;
            self.at += 1;
            match c {
                '"' => return Some(out),
                '\\' => {
                    let e = *self.chars.get(self.at)?;
                    self.at += 1;
                    out.push(match e {
                        '"' => '"',
                        '\\' => '\\',
                        '/' => '/',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) && self.word("\\u") {
                                let lo = self.hex4()?;
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                            } else {
                                char::from_u32(hi)?
                            }
                        }
                        _ => return None,
                    });
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits: String = self.chars.get(self.at..self.at + 4)?.iter().collect();
        self.at += 4;
        u32::from_str_radix(&digits, 16).ok()
    }
}

/// A JSON path as `EXTRACTJSONFIELD` takes it: `$`, then `.field`, `['field']` or `[index]`
/// steps; `None` when it is not one.
fn parse_path(path: &str) -> Option<Vec<Step>> {
    let rest = path.trim().strip_prefix('$')?;
    let chars: Vec<char> = rest.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                if i == start {
                    return None;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
            '[' => {
                let close = i + chars[i..].iter().position(|c| *c == ']')?;
                let inside: String = chars[i + 1..close].iter().collect();
                let inside = inside.trim();
                let quoted = inside
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                steps.push(match quoted {
                    Some(name) => Step::Field(name.to_string()),
                    None => Step::Index(inside.parse().ok()?),
                });
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// Writes row `i` of `array` as JSON, as ksqlDB's `TO_JSON_STRING` does: a DATE as
/// `"yyyy-MM-dd"`, a TIME as `"HH:mm:ss"`, a TIMESTAMP as `"yyyy-MM-ddTHH:mm:ss.SSS"`, BYTES as
/// base64, a MAP or STRUCT as an object.
fn write_arrow(out: &mut String, array: &ArrayRef, i: usize) -> Result<()> {
    if array.is_null(i) || array.data_type() == &DataType::Null {
        out.push_str("null");
        return Ok(());
    }
    match array.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(i),
                DataType::LargeList(_) => array.as_list::<i64>().value(i),
                _ => array.as_fixed_size_list().value(i),
            };
            out.push('[');
            for j in 0..items.len() {
                if j > 0 {
                    out.push(',');
                }
                write_arrow(out, &items, j)?;
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (j, field) in fields.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                // A field's name as ksqlDB shows it: upper case unless it was quoted.
                let name = field.name();
                let shown = match name.chars().any(|c| c.is_ascii_uppercase()) {
                    true => name.to_string(),
                    false => name.to_ascii_uppercase(),
                };
                let _ = write_string(out, &shown);
                out.push(':');
                write_arrow(out, s.column(j), i)?;
            }
            out.push('}');
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(i);
            out.push('{');
            for j in 0..entries.len() {
                if j > 0 {
                    out.push(',');
                }
                let key = ScalarValue::try_from_array(entries.column(0), j)?;
                let _ = write_string(out, &key.to_string());
                out.push(':');
                write_arrow(out, entries.column(1), j)?;
            }
            out.push('}');
        }
        _ => write_scalar(out, &ScalarValue::try_from_array(array, i)?),
    }
    Ok(())
}

/// A non-null leaf value as JSON.
fn write_scalar(out: &mut String, value: &ScalarValue) {
    let quoted = |out: &mut String, s: &str| {
        let _ = write_string(out, s);
    };
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => quoted(out, s),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b)) => {
            quoted(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        ScalarValue::Float64(Some(x)) => out.push_str(&java_double(*x)),
        ScalarValue::Float32(Some(x)) => out.push_str(&java_double(f64::from(*x))),
        ScalarValue::Date32(Some(d)) => {
            let date = DateTime::from_timestamp(i64::from(*d) * 86_400, 0).map(|t| t.date_naive());
            quoted(out, &date.map(|d| d.to_string()).unwrap_or_default())
        }
        ScalarValue::Time32Millisecond(Some(ms)) => {
            let t = NaiveTime::from_num_seconds_from_midnight_opt(
                (*ms / 1000) as u32,
                (*ms % 1000) as u32 * 1_000_000,
            );
            quoted(out, &t.map(java_time).unwrap_or_default())
        }
        ScalarValue::TimestampMillisecond(Some(_), _)
        | ScalarValue::TimestampMicrosecond(Some(_), _)
        | ScalarValue::TimestampNanosecond(Some(_), _)
        | ScalarValue::TimestampSecond(Some(_), _) => {
            let ms = value
                .cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None))
                .ok()
                .and_then(|v| match v {
                    ScalarValue::TimestampMillisecond(Some(ms), _) => Some(ms),
                    _ => None,
                });
            let text = ms
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string());
            quoted(out, &text.unwrap_or_default())
        }
        ScalarValue::Boolean(Some(_))
        | ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::UInt64(Some(_))
        | ScalarValue::Decimal128(Some(_), ..)
        | ScalarValue::Decimal256(Some(_), ..) => out.push_str(&value.to_string()),
        other => quoted(out, &other.to_string()),
    }
}

/// A double as Java prints it in the common range: an integral value keeps its `.0`.
fn java_double(x: f64) -> String {
    if !x.is_finite() {
        return format!("\"{x}\"");
    }
    let text = format!("{x}");
    if text.contains('.') {
        text
    } else {
        text + ".0"
    }
}

/// A time as Java's `LocalTime` prints it: `HH:mm:ss`, with milliseconds when there are some.
fn java_time(t: NaiveTime) -> String {
    if t.format("%3f").to_string() == "000" {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%H:%M:%S%.3f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_value_and_keeps_its_text() {
        let v = parse(r#"{"b": [1.23450, "x\"y"], "a": null}} trailing"#).unwrap();
        assert_eq!(v.to_string(), r#"{"b":[1.23450,"x\"y"],"a":null}"#);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(r#""\ud83d\ude00""#), Some(Json::String("😀".into())));
    }

    #[test]
    fn paths_take_fields_and_indices() {
        let v = parse(r#"{"a": {"@type": "x", "list": [10, 20]}}"#).unwrap();
        let at = |p: &str| parse_path(p).and_then(|p| v.at(&p).and_then(text_of));
        assert_eq!(at("$.a.@type").as_deref(), Some("x"));
        assert_eq!(at("$.a.list[1]").as_deref(), Some("20"));
        assert_eq!(at("$['a']['list'][0]").as_deref(), Some("10"));
        assert_eq!(at("$.a.list[-1]"), None);
        assert_eq!(at("$.a.missing"), None);
        assert_eq!(at("a.list"), None);
    }

    #[test]
    fn concat_merges_objects_and_joins_the_rest() {
        let c =
            |texts: &[&str]| concat(texts.iter().map(|t| parse(t).unwrap()).collect()).to_string();
        assert_eq!(c(&[r#"{"a":1,"b":2}"#, r#"{"a":3}"#]), r#"{"a":3,"b":2}"#);
        assert_eq!(c(&["[1]", r#"{"a":1}"#, "2"]), r#"[1,{"a":1},2]"#);
        assert_eq!(c(&["null", "null"]), "[null,null]");
    }
}
