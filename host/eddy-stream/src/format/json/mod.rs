//! JSON values in and out: one event per message, one record per row.
//!
//! Decoding is per message so that one bad event is reported and skipped while its neighbours
//! go through. As in ksqlDB, a missing field is a null, and a value is coerced to its column's
//! type where ksqlDB coerces it (see [`coerce`]).

pub(crate) mod coerce;
pub(crate) mod nested;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use arrow::json::writer::LineDelimited;
use arrow::json::WriterBuilder;
use eddy_connector::{Message, Record};
use serde_json::{Map, Value};

use super::common::{display_name, now_ms, split_rowtime, type_name, Val};
use crate::{Error, Result};

/// A message that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent {
    /// Where it came from.
    pub origin: String,
    /// What was wrong, naming the field.
    pub reason: String,
    /// The raw payload, for the dead-letter topic.
    pub payload: Vec<u8>,
}

/// Decodes JSON messages into batches of a stream's schema (whose last column is `rowtime`).
#[derive(Debug, Clone)]
pub struct Decoder {
    schema: SchemaRef,
    /// Index of the column whose value is the event time, if declared.
    timestamp: Option<usize>,
    /// Whether a payload is the one column's value itself (`wrap_single_value='false'`).
    unwrapped: bool,
}

impl Decoder {
    /// A decoder for `schema`; `timestamp` names the event-time column.
    pub fn new(schema: SchemaRef, timestamp: Option<usize>) -> Decoder {
        Decoder {
            schema,
            timestamp,
            unwrapped: false,
        }
    }

    /// The same decoder for payloads that are a one-column schema's value itself.
    pub fn unwrapped(self) -> Decoder {
        Decoder {
            unwrapped: true,
            ..self
        }
    }

    /// Decodes what it can; the rest come back as [`BadEvent`]s, in order.
    pub fn decode(&self, messages: &[Message]) -> (RecordBatch, Vec<BadEvent>) {
        let columns = self.schema.fields().len() - 1;
        let mut builders: Vec<Box<dyn ArrayBuilder>> = self.schema.fields()[..columns]
            .iter()
            .map(|f| builder(f.data_type(), messages.len()))
            .collect();
        let mut rowtime = TimestampMillisecondBuilder::with_capacity(messages.len());
        let mut bad = Vec::new();
        let now = now_ms();
        for message in messages {
            let parsed: Map<String, Value> = match serde_json::from_slice(&message.payload) {
                // An anonymous value is the one column's, whatever JSON it is.
                Ok(value) if self.unwrapped => {
                    Map::from_iter([(self.schema.field(0).name().clone(), value)])
                }
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    bad.push(self.bad(
                        message,
                        format!("expected a JSON object, found {}", kind(&other)),
                    ));
                    continue;
                }
                Err(e) => {
                    bad.push(self.bad(message, format!("malformed JSON: {e}")));
                    continue;
                }
            };
            let values: Vec<&Value> = self.schema.fields()[..columns]
                .iter()
                .map(|field| lookup(&parsed, field.name()).unwrap_or(&Value::Null))
                .collect();
            // Check every value before appending any, so a bad event leaves no partial row.
            if let Some(reason) = self.schema.fields()[..columns]
                .iter()
                .zip(&values)
                .find_map(|(f, v)| check(f, v).err())
            {
                bad.push(self.bad(message, reason));
                continue;
            }
            for ((builder, field), value) in
                builders.iter_mut().zip(self.schema.fields()).zip(&values)
            {
                append(builder.as_mut(), field.data_type(), value);
            }
            let event_time = self
                .timestamp
                .and_then(|i| timestamp_ms(values[i]))
                .or(message.timestamp_ms)
                .unwrap_or(now);
            rowtime.append_value(event_time);
        }
        let mut arrays: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        arrays.push(Arc::new(rowtime.finish()));
        let batch =
            RecordBatch::try_new(self.schema.clone(), arrays).expect("builders follow the schema");
        (batch, bad)
    }

    fn bad(&self, message: &Message, reason: String) -> BadEvent {
        BadEvent {
            origin: message.origin.clone(),
            reason,
            payload: message.payload.clone(),
        }
    }
}

/// Encodes rows as JSON records; `rowtime` becomes the record's timestamp, not a field.
pub fn encode(batch: &RecordBatch) -> Result<Vec<Record>> {
    let (payload, times) = split_rowtime(batch);
    // Field names as ksqlDB writes them, and values of types JSON lacks (BYTES) as it does.
    let payload = with_display_names(&payload)?;
    let columns = payload
        .columns()
        .iter()
        .map(nested::for_json)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let fields: Vec<Field> = payload
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
        .collect();
    let payload = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
    // The writer has no number for NaN and the infinities: ksqlDB writes them as strings.
    let patches = non_finite_fields(&payload);
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(Vec::new());
    writer.write(&payload)?;
    writer.finish()?;
    let text = writer.into_inner();
    text.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(i, line)| {
            let payload = match patches.get(&i) {
                None => line.to_vec(),
                Some(fields) => {
                    let mut row: Map<String, Value> = serde_json::from_slice(line)
                        .map_err(|e| Error::Plan(format!("encoding JSON: {e}")))?;
                    for (name, text) in fields {
                        row.insert(name.clone(), Value::String((*text).to_string()));
                    }
                    // In the columns' order, which a map of serde_json's does not keep.
                    let members: Vec<String> = payload
                        .schema()
                        .fields()
                        .iter()
                        .filter_map(|f| {
                            let value = row.get(f.name())?;
                            Some(format!("{}:{value}", Value::String(f.name().clone())))
                        })
                        .collect();
                    format!("{{{}}}", members.join(",")).into_bytes()
                }
            };
            Ok(Record {
                key: None,
                payload: Some(payload),
                timestamp_ms: times[i],
                partition: None,
                upstream: None,
            })
        })
        .collect()
}

/// `batch` with its column names as [`display_name`] shows them.
pub fn with_display_names(
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_name(display_name(f.name())))
        .collect();
    RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        batch.columns().to_vec(),
    )
}

/// A field by exact name, else case-insensitively (ksqlDB upper-cases, producers don't).
pub(crate) fn lookup<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The string ksqlDB writes for a DOUBLE JSON has no number for; `None` for a finite one.
fn non_finite(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some("NaN")
    } else if x == f64::INFINITY {
        Some("Infinity")
    } else if x == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// Per row, the top-level DOUBLE fields of `batch` whose values JSON has no number for: the
/// field's name and the string to write instead.
fn non_finite_fields(batch: &RecordBatch) -> BTreeMap<usize, Vec<(String, &'static str)>> {
    let mut found: BTreeMap<usize, Vec<(String, &'static str)>> = BTreeMap::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let Some(doubles) = column.as_any().downcast_ref::<arrow::array::Float64Array>() else {
            continue;
        };
        for (row, x) in doubles.iter().enumerate() {
            if let Some(text) = x.and_then(non_finite) {
                found
                    .entry(row)
                    .or_default()
                    .push((field.name().clone(), text));
            }
        }
    }
    found
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn builder(data_type: &DataType, capacity: usize) -> Box<dyn ArrayBuilder> {
    match data_type {
        t if nested::handles(t) => Box::new(nested::ScalarColumn::new(t.clone())),
        DataType::Boolean => Box::new(BooleanBuilder::with_capacity(capacity)),
        DataType::Int32 => Box::new(Int32Builder::with_capacity(capacity)),
        DataType::Int64 => Box::new(Int64Builder::with_capacity(capacity)),
        DataType::Float64 => Box::new(Float64Builder::with_capacity(capacity)),
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            Box::new(TimestampMillisecondBuilder::with_capacity(capacity))
        }
        DataType::List(item) => match item.data_type() {
            DataType::Float64 => {
                Box::new(ListBuilder::new(Float64Builder::new()).with_field(item.clone()))
            }
            DataType::Int64 => {
                Box::new(ListBuilder::new(Int64Builder::new()).with_field(item.clone()))
            }
            DataType::Int32 => {
                Box::new(ListBuilder::new(Int32Builder::new()).with_field(item.clone()))
            }
            DataType::Boolean => {
                Box::new(ListBuilder::new(BooleanBuilder::new()).with_field(item.clone()))
            }
            _ => Box::new(ListBuilder::new(StringBuilder::new()).with_field(item.clone())),
        },
        _ => Box::new(StringBuilder::with_capacity(capacity, capacity * 8)),
    }
}

/// Whether `value` fits `field`; the error names the field and what was found.
fn check(field: &Field, value: &Value) -> std::result::Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let ok = match field.data_type() {
        t if nested::handles(t) => nested::to_scalar(value, t).is_some(),
        DataType::Boolean => value.is_boolean(),
        DataType::Int32 => coerce::to_i32(value).is_some(),
        DataType::Int64 => coerce::to_i64(value).is_some(),
        DataType::Float64 => coerce::to_f64(value).is_some(),
        DataType::Timestamp(..) => timestamp_ms(value).is_some(),
        DataType::List(item) => value
            .as_array()
            .is_some_and(|items| items.iter().all(|v| check(item, v).is_ok())),
        _ => coerce::to_text(value).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field '{}' should be {}, found {}",
            field.name(),
            match field.data_type() {
                DataType::Timestamp(..) => "TIMESTAMP (ms since the epoch or ISO 8601)".into(),
                t => type_name(t),
            },
            compact(value)
        ))
    }
}

fn compact(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 40 {
        format!("{}…", &text[..text.floor_char_boundary(40)])
    } else {
        text
    }
}

pub(crate) fn timestamp_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok().or_else(|| {
            arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s)
                .ok()
                .map(|ns| ns / 1_000_000)
        }),
        _ => None,
    }
}

fn append(builder: &mut dyn ArrayBuilder, data_type: &DataType, value: &Value) {
    let any = builder.as_any_mut();
    match data_type {
        t if nested::handles(t) => any
            .downcast_mut::<nested::ScalarColumn>()
            .expect("builder")
            .append(value),
        DataType::Boolean => any
            .downcast_mut::<BooleanBuilder>()
            .expect("builder")
            .append_option(value.as_bool()),
        DataType::Int32 => any
            .downcast_mut::<Int32Builder>()
            .expect("builder")
            .append_option(coerce::to_i32(value)),
        DataType::Int64 => any
            .downcast_mut::<Int64Builder>()
            .expect("builder")
            .append_option(coerce::to_i64(value)),
        DataType::Float64 => any
            .downcast_mut::<Float64Builder>()
            .expect("builder")
            .append_option(coerce::to_f64(value)),
        DataType::Timestamp(..) => any
            .downcast_mut::<TimestampMillisecondBuilder>()
            .expect("builder")
            .append_option(timestamp_ms(value)),
        DataType::List(item) => {
            let items = value.as_array();
            macro_rules! list {
                ($b:ty, $get:expr) => {{
                    let list = any.downcast_mut::<ListBuilder<$b>>().expect("builder");
                    match items {
                        Some(items) => {
                            for v in items {
                                list.values().append_option($get(v));
                            }
                            list.append(true);
                        }
                        None => list.append(false),
                    }
                }};
            }
            match item.data_type() {
                DataType::Float64 => list!(Float64Builder, coerce::to_f64),
                DataType::Int64 => list!(Int64Builder, coerce::to_i64),
                DataType::Int32 => list!(Int32Builder, coerce::to_i32),
                DataType::Boolean => list!(BooleanBuilder, |v: &Value| v.as_bool()),
                _ => list!(StringBuilder, coerce::to_text),
            }
        }
        _ => any
            .downcast_mut::<StringBuilder>()
            .expect("builder")
            .append_option(coerce::to_text(value)),
    }
}

/// Reads a JSON record key into `columns`: one key column is the JSON value itself (as ksqlDB
/// writes a single key), several are the fields of an object, matched by name.
pub(crate) fn parse_key(
    payload: &[u8],
    columns: &[arrow::datatypes::FieldRef],
) -> std::result::Result<Vec<Val>, String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("malformed JSON key: {e}"))?;
    if let [column] = columns {
        // A single key may also come wrapped, as {"NAME": value}.
        let value = match &value {
            Value::Object(map) => lookup(map, column.name()).unwrap_or(&value),
            _ => &value,
        };
        return Ok(vec![key_value(value, column)?]);
    }
    let Value::Object(map) = &value else {
        return Err(format!(
            "a JSON key of several columns is an object, found {}",
            kind(&value)
        ));
    };
    columns
        .iter()
        .map(|column| match lookup(map, column.name()) {
            Some(v) => key_value(v, column),
            None => Ok(Val::Null),
        })
        .collect()
}

fn key_value(v: &Value, column: &Field) -> std::result::Result<Val, String> {
    let value = match (v, column.data_type()) {
        (Value::Null, _) => Some(Val::Null),
        (Value::Bool(b), DataType::Boolean) => Some(Val::Bool(*b)),
        (_, DataType::Int32) => coerce::to_i32(v).map(Val::Int),
        (_, DataType::Int64) => coerce::to_i64(v).map(Val::BigInt),
        (_, DataType::Float64) => coerce::to_f64(v).map(Val::Double),
        (_, DataType::Utf8) => coerce::to_text(v).map(Val::Str),
        (_, DataType::Timestamp(..)) => timestamp_ms(v).map(Val::Timestamp),
        _ => None,
    };
    value.ok_or_else(|| {
        format!(
            "key column {} is {}, found {}",
            column.name(),
            type_name(column.data_type()),
            compact(v)
        )
    })
}

/// Encodes each row of `batch` as a JSON record key: the value itself for one column, else an
/// object with the columns' display names.
pub(crate) fn encode_key(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let records = if batch.num_columns() == 1 {
        encode_unwrapped(batch)?
    } else {
        encode(batch)?
    };
    Ok(records
        .into_iter()
        .map(|r| r.payload.unwrap_or_else(|| b"null".to_vec()))
        .collect())
}

/// Encodes rows of one column (besides `rowtime`) as records whose payload is the column's
/// JSON value itself, not an object: a single key, or a value with `wrap_single_value='false'`.
pub(crate) fn encode_unwrapped(batch: &RecordBatch) -> Result<Vec<Record>> {
    encode(batch)?
        .into_iter()
        .map(|mut record| {
            let payload = record.payload.take().unwrap_or_default();
            let value: Value = serde_json::from_slice(&payload)
                .map_err(|e| Error::Plan(format!("encoding a single JSON value: {e}")))?;
            let single = match value {
                Value::Object(map) => map.into_iter().next().map_or(Value::Null, |(_, v)| v),
                other => other,
            };
            // ksqlDB writes a null single value as a record without a value, not as `null`.
            record.payload =
                (!single.is_null()).then(|| serde_json::to_vec(&single).expect("JSON encodes"));
            Ok(record)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMillisecondArray;
    use arrow::datatypes::Schema;
    use eddy_connector::Position;

    fn message(i: i64, payload: &str) -> Message {
        Message {
            key: None,
            payload: payload.as_bytes().to_vec(),
            no_value: false,
            timestamp_ms: Some(5),
            position: Position {
                partition: 0,
                offset: i,
            },
            origin: format!("t[0]@{i}"),
            upstream: None,
        }
    }

    #[test]
    fn bad_events_are_named_and_skipped() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("car", DataType::Utf8, true),
            Field::new("speed", DataType::Float64, true),
            Field::new("ts", DataType::Int64, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder = Decoder::new(schema, Some(2));
        let (batch, bad) = decoder.decode(&[
            message(0, r#"{"car":"a","speed":1.5,"ts":1000}"#),
            message(1, r#"{"car":"b","speed":"fast","ts":1}"#),
            message(2, r#"{"car":"c","ts":2,"speed":true}"#),
            message(3, r#"{"car":"d""#),
            message(4, r#"{"CAR":"e","speed":null,"ts":3000,"extra":1}"#),
        ]);
        assert_eq!(batch.num_rows(), 2);
        let reasons: Vec<_> = bad
            .iter()
            .map(|b| (b.origin.as_str(), b.reason.as_str()))
            .collect();
        assert_eq!(
            reasons[0],
            ("t[0]@1", "field 'speed' should be DOUBLE, found \"fast\"")
        );
        assert_eq!(
            reasons[1],
            ("t[0]@2", "field 'speed' should be DOUBLE, found true")
        );
        assert!(
            reasons[2].1.starts_with("malformed JSON: EOF"),
            "{}",
            reasons[2].1
        );
        let rowtime = batch
            .column(3)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(rowtime.values(), &[1000, 3000]);
        let records = encode(&batch).unwrap();
        assert_eq!(
            String::from_utf8(records[1].payload.clone().unwrap()).unwrap(),
            r#"{"CAR":"e","SPEED":null,"TS":3000}"#
        );
        assert_eq!(records[1].timestamp_ms, Some(3000));
    }

    #[test]
    fn a_timestamp_is_written_as_its_milliseconds() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "seen",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let seen = TimestampMillisecondArray::from(vec![Some(1500), None]);
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(seen.clone()), Arc::new(seen)]).unwrap();
        let payloads: Vec<String> = encode(&batch)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        assert_eq!(payloads, [r#"{"SEEN":1500}"#, r#"{"SEEN":null}"#]);
    }

    #[test]
    fn a_missing_field_is_null_and_values_convert_as_in_ksqldb() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("car", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
            Field::new("speed", DataType::Float64, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder = Decoder::new(schema, None);
        let (batch, bad) = decoder.decode(&[
            message(0, r#"{"car":"a"}"#),
            message(1, r#"{"CAR":7,"n":"12","speed":"2.5"}"#),
            message(2, r#"{"car":{"x":[1]},"n":3.9,"speed":4}"#),
            message(3, r#"{"car":"d","n":"3.9"}"#),
        ]);
        let reasons: Vec<&str> = bad.iter().map(|b| b.reason.as_str()).collect();
        assert_eq!(reasons, ["field 'n' should be INT, found \"3.9\""]);
        let payloads: Vec<String> = encode(&batch)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        assert_eq!(
            payloads,
            [
                r#"{"CAR":"a","N":null,"SPEED":null}"#,
                r#"{"CAR":"7","N":12,"SPEED":2.5}"#,
                r#"{"CAR":"{\"x\":[1]}","N":3,"SPEED":4.0}"#,
            ]
        );
    }

    #[test]
    fn dates_and_times_are_numbers_as_ksqldb_writes_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Date32, true),
            Field::new("at", DataType::Time32(TimeUnit::Millisecond), true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder = Decoder::new(schema, None);
        let (batch, bad) = decoder.decode(&[
            message(0, r#"{"day":18263,"at":48600000}"#),
            message(1, r#"{"day":"1","at":null}"#),
            message(2, r#"{"day":1,"at":86400000}"#),
        ]);
        let reasons: Vec<&str> = bad.iter().map(|b| b.reason.as_str()).collect();
        assert_eq!(reasons, ["field 'at' should be TIME, found 86400000"]);
        let shown = arrow::util::pretty::pretty_format_columns("day", &[batch.column(0).clone()])
            .unwrap()
            .to_string();
        assert!(shown.contains("2020-01-02"), "{shown}");
        let payloads: Vec<String> = encode(&batch)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        assert_eq!(
            payloads,
            [r#"{"DAY":18263,"AT":48600000}"#, r#"{"DAY":1,"AT":null}"#]
        );
    }

    #[test]
    fn nan_and_the_infinities_are_the_strings_ksqldb_writes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("car", DataType::Utf8, true),
            Field::new("speed", DataType::Float64, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder = Decoder::new(schema, None);
        let (batch, bad) = decoder.decode(&[
            message(0, r#"{"car":"a","speed":"NaN"}"#),
            message(1, r#"{"car":"b","speed":"Infinity"}"#),
            message(2, r#"{"car":"c","speed":"-Infinity"}"#),
            message(3, r#"{"car":"d","speed":1.5}"#),
            message(4, r#"{"car":"e","speed":"nan"}"#),
        ]);
        assert_eq!(bad.len(), 1, "only ksqlDB's spellings are read");
        let payloads: Vec<String> = encode(&batch)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        assert_eq!(
            payloads,
            [
                r#"{"CAR":"a","SPEED":"NaN"}"#,
                r#"{"CAR":"b","SPEED":"Infinity"}"#,
                r#"{"CAR":"c","SPEED":"-Infinity"}"#,
                r#"{"CAR":"d","SPEED":1.5}"#,
            ]
        );
    }
}
