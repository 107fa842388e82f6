//! Value formats, ksqlDB's `value_format`: JSON (see [`crate::json`]), DELIMITED (CSV lines,
//! see [`crate::delimited`]) and KAFKA (one primitive in Kafka's serializer encoding, see
//! [`crate::kafka_format`]).
//!
//! [`ValueFormat`] comes from a statement's `WITH (…)` options; [`ValueDecoder`] and
//! [`ValueFormat::encode`] dispatch to the format's codec.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use eddy_connector::{Message, Options, Record};

use crate::json::{type_name, BadEvent, Decoder};
use crate::{delimited, kafka_format, Error, Result};

/// How a stream's values are encoded in its messages: `WITH (value_format=…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ValueFormat {
    /// A JSON object per message, fields by column name. The default.
    #[default]
    Json,
    /// A CSV line per message, fields in column order.
    Delimited {
        /// The field separator, `,` unless `value_delimiter` says otherwise.
        delimiter: u8,
    },
    /// A single primitive in the standard Kafka serializers' encoding.
    Kafka,
}

impl ValueFormat {
    /// The format `value_format` and `value_delimiter` in `options` name (JSON when absent).
    pub(crate) fn from_options(options: &Options) -> Result<ValueFormat> {
        let name = options.get("value_format").map(|f| f.trim().to_uppercase());
        let format = match name.as_deref() {
            None | Some("JSON") => ValueFormat::Json,
            Some("DELIMITED") => ValueFormat::Delimited {
                delimiter: match options.get("value_delimiter") {
                    Some(d) => parse_delimiter(d)?,
                    None => b',',
                },
            },
            Some("KAFKA") => ValueFormat::Kafka,
            Some(_) => {
                return Err(Error::Unsupported(format!(
                    "value_format '{}': Eddy reads JSON, DELIMITED and KAFKA (AVRO and JSON_SR \
                     need a schema registry, which Eddy does not have)",
                    options["value_format"]
                )))
            }
        };
        if options.contains_key("value_delimiter")
            && !matches!(format, ValueFormat::Delimited { .. })
        {
            return Err(Error::Catalog(
                "value_delimiter goes with value_format='DELIMITED'".into(),
            ));
        }
        Ok(format)
    }

    /// Whether the format can hold `columns` (the value columns, without `rowtime`) of
    /// `relation`; the error states the format's rule.
    pub(crate) fn check(&self, relation: &str, columns: &[Field]) -> Result<()> {
        let columns: Vec<&Field> = columns.iter().filter(|f| f.name() != "rowtime").collect();
        match self {
            ValueFormat::Json => Ok(()),
            ValueFormat::Delimited { .. } => match columns.iter().find(|f| !primitive(f)) {
                Some(f) => Err(Error::Catalog(format!(
                    "value_format 'DELIMITED' holds primitive columns only (no ARRAY, MAP or \
                     STRUCT): column {} of {relation} is {}",
                    f.name(),
                    type_name(f.data_type())
                ))),
                None => Ok(()),
            },
            ValueFormat::Kafka => {
                if columns.len() != 1 {
                    return Err(Error::Catalog(format!(
                        "value_format 'KAFKA' holds a single primitive value, so {relation} \
                         needs exactly one column, not {} ({}): use JSON or DELIMITED for more",
                        columns.len(),
                        columns
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let f = columns[0];
                if kafka_format::supports(f.data_type()) {
                    Ok(())
                } else {
                    Err(Error::Catalog(format!(
                        "value_format 'KAFKA' holds an INT, BIGINT, DOUBLE or VARCHAR: column {} \
                         of {relation} is {}",
                        f.name(),
                        type_name(f.data_type())
                    )))
                }
            }
        }
    }

    /// Encodes rows as records of this format; `rowtime` becomes the record's timestamp.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<Record>> {
        match self {
            ValueFormat::Json => crate::json::encode(batch),
            ValueFormat::Delimited { delimiter } => delimited::encode(batch, *delimiter),
            ValueFormat::Kafka => kafka_format::encode(batch),
        }
    }
}

/// `value_delimiter`: one character, or `TAB` or `SPACE` as ksqlDB spells those.
fn parse_delimiter(text: &str) -> Result<u8> {
    let delimiter = match text.to_uppercase().as_str() {
        "TAB" => b'\t',
        "SPACE" => b' ',
        _ => match text.as_bytes() {
            [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => *b,
            _ => {
                return Err(Error::Catalog(format!(
                    "value_delimiter '{text}': give one character (not a quote or line break), \
                     or 'TAB' or 'SPACE'"
                )))
            }
        },
    };
    Ok(delimiter)
}

fn primitive(f: &Field) -> bool {
    !matches!(
        f.data_type(),
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// Decodes messages of one value format into batches of a stream's schema (`rowtime` last).
#[derive(Debug, Clone)]
pub(crate) struct ValueDecoder {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Json(Decoder),
    Delimited {
        schema: SchemaRef,
        timestamp: Option<usize>,
        delimiter: u8,
    },
    Kafka {
        schema: SchemaRef,
        timestamp: Option<usize>,
    },
}

impl ValueDecoder {
    /// A decoder of `format` for `schema`; `timestamp` names the event-time column.
    pub(crate) fn new(
        format: ValueFormat,
        schema: SchemaRef,
        timestamp: Option<usize>,
    ) -> Result<ValueDecoder> {
        let columns = &schema.fields()[..schema.fields().len() - 1];
        let columns: Vec<Field> = columns.iter().map(|f| f.as_ref().clone()).collect();
        format.check("the stream", &columns)?;
        let inner = match format {
            ValueFormat::Json => Inner::Json(Decoder::new(schema, timestamp)),
            ValueFormat::Delimited { delimiter } => Inner::Delimited {
                schema,
                timestamp,
                delimiter,
            },
            ValueFormat::Kafka => Inner::Kafka { schema, timestamp },
        };
        Ok(ValueDecoder { inner })
    }

    /// Decodes what it can; the rest come back as [`BadEvent`]s, in order.
    pub(crate) fn decode(&self, messages: &[Message]) -> (RecordBatch, Vec<BadEvent>) {
        match &self.inner {
            Inner::Json(d) => d.decode(messages),
            Inner::Delimited {
                schema,
                timestamp,
                delimiter,
            } => decode_rows(schema, *timestamp, messages, |m| {
                delimited::parse(
                    &m.payload,
                    *delimiter,
                    &schema.fields()[..schema.fields().len() - 1],
                )
            }),
            Inner::Kafka { schema, timestamp } => decode_rows(schema, *timestamp, messages, |m| {
                kafka_format::parse(&m.payload, &schema.fields()[0]).map(|v| vec![v])
            }),
        }
    }
}

/// One decoded field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Bool(bool),
    Int(i32),
    BigInt(i64),
    Double(f64),
    /// ms since the epoch
    Timestamp(i64),
    Str(String),
}

impl Val {
    /// The event time this field gives, as a `timestamp` column.
    fn event_time(&self) -> Option<i64> {
        match self {
            Val::BigInt(v) | Val::Timestamp(v) => Some(*v),
            Val::Int(v) => Some(*v as i64),
            _ => None,
        }
    }
}

/// Builds a batch of `schema` from messages `parse` turns into one [`Val`] per column (or a
/// reason they are bad). Event time as in JSON: the `timestamp` column, else the message's
/// timestamp, else now.
fn decode_rows(
    schema: &SchemaRef,
    timestamp: Option<usize>,
    messages: &[Message],
    parse: impl Fn(&Message) -> std::result::Result<Vec<Val>, String>,
) -> (RecordBatch, Vec<BadEvent>) {
    let columns = schema.fields().len() - 1;
    let mut builders: Vec<Builder> = schema.fields()[..columns]
        .iter()
        .map(|f| Builder::new(f.data_type(), messages.len()))
        .collect();
    let mut rowtime = TimestampMillisecondBuilder::with_capacity(messages.len());
    let mut bad = Vec::new();
    let now = crate::json::now_ms();
    for message in messages {
        let values = match parse(message) {
            Ok(v) => v,
            Err(reason) => {
                bad.push(BadEvent {
                    origin: message.origin.clone(),
                    reason,
                    payload: message.payload.clone(),
                });
                continue;
            }
        };
        let event_time = timestamp
            .and_then(|i| values[i].event_time())
            .or(message.timestamp_ms)
            .unwrap_or(now);
        for (builder, value) in builders.iter_mut().zip(values) {
            builder.append(value);
        }
        rowtime.append_value(event_time);
    }
    let mut arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
    arrays.push(Arc::new(rowtime.finish()));
    let batch = RecordBatch::try_new(schema.clone(), arrays).expect("builders follow the schema");
    (batch, bad)
}

enum Builder {
    Bool(BooleanBuilder),
    Int(Int32Builder),
    BigInt(Int64Builder),
    Double(Float64Builder),
    Timestamp(TimestampMillisecondBuilder),
    Str(StringBuilder),
}

impl Builder {
    fn new(data_type: &DataType, capacity: usize) -> Builder {
        match data_type {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int32 => Builder::Int(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Builder::BigInt(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => Builder::Double(Float64Builder::with_capacity(capacity)),
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                Builder::Timestamp(TimestampMillisecondBuilder::with_capacity(capacity))
            }
            _ => Builder::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
        }
    }

    /// Appends `value`, which the parser made for this column's type (or null).
    fn append(&mut self, value: Val) {
        match (self, value) {
            (Builder::Bool(b), Val::Bool(v)) => b.append_value(v),
            (Builder::Int(b), Val::Int(v)) => b.append_value(v),
            (Builder::BigInt(b), Val::BigInt(v)) => b.append_value(v),
            (Builder::Double(b), Val::Double(v)) => b.append_value(v),
            (Builder::Timestamp(b), Val::Timestamp(v)) => b.append_value(v),
            (Builder::Str(b), Val::Str(v)) => b.append_value(v),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Int(b), _) => b.append_null(),
            (Builder::BigInt(b), _) => b.append_null(),
            (Builder::Double(b), _) => b.append_null(),
            (Builder::Timestamp(b), _) => b.append_null(),
            (Builder::Str(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::BigInt(mut b) => Arc::new(b.finish()),
            Builder::Double(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Splits off `rowtime` (if the batch has it): the payload columns and the record timestamps.
pub(crate) fn split_rowtime(batch: &RecordBatch) -> (RecordBatch, Vec<Option<i64>>) {
    let schema = batch.schema();
    match schema.index_of("rowtime") {
        Ok(i) => {
            let times = batch
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::TimestampMillisecondArray>()
                .map_or_else(|| vec![None; batch.num_rows()], |t| t.iter().collect());
            let mut payload = batch.clone();
            payload.remove_column(i);
            (payload, times)
        }
        Err(_) => (batch.clone(), vec![None; batch.num_rows()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn formats_come_from_options() {
        assert_eq!(
            ValueFormat::from_options(&options(&[])).unwrap(),
            ValueFormat::Json
        );
        assert_eq!(
            ValueFormat::from_options(&options(&[("value_format", "delimited")])).unwrap(),
            ValueFormat::Delimited { delimiter: b',' }
        );
        for (given, expected) in [("TAB", b'\t'), ("space", b' '), ("|", b'|'), (";", b';')] {
            assert_eq!(
                ValueFormat::from_options(&options(&[
                    ("value_format", "DELIMITED"),
                    ("value_delimiter", given)
                ]))
                .unwrap(),
                ValueFormat::Delimited {
                    delimiter: expected
                }
            );
        }
        assert_eq!(
            ValueFormat::from_options(&options(&[("value_format", "Kafka")])).unwrap(),
            ValueFormat::Kafka
        );
        let err = ValueFormat::from_options(&options(&[("value_format", "AVRO")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "not supported: value_format 'AVRO': Eddy reads JSON, DELIMITED and KAFKA (AVRO and \
             JSON_SR need a schema registry, which Eddy does not have)"
        );
        let err = ValueFormat::from_options(&options(&[
            ("value_format", "DELIMITED"),
            ("value_delimiter", "ab"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("give one character"), "{err}");
        let err = ValueFormat::from_options(&options(&[("value_delimiter", "|")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("value_format='DELIMITED'"), "{err}");
    }

    #[test]
    fn kafka_needs_one_primitive_column() {
        let two = [
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ];
        let err = ValueFormat::Kafka.check("s", &two).unwrap_err().to_string();
        assert!(
            err.contains("value_format 'KAFKA' holds a single primitive value")
                && err.contains("not 2 (a, b)"),
            "{err}"
        );
        let boolean = [Field::new("a", DataType::Boolean, true)];
        let err = ValueFormat::Kafka
            .check("s", &boolean)
            .unwrap_err()
            .to_string();
        assert!(err.contains("column a of s is BOOLEAN"), "{err}");
        assert!(ValueFormat::Kafka.check("s", &two[..1]).is_ok());
        let list = [Field::new(
            "xs",
            DataType::new_list(DataType::Float64, true),
            true,
        )];
        let err = ValueFormat::Delimited { delimiter: b',' }
            .check("s", &list)
            .unwrap_err()
            .to_string();
        assert!(err.contains("column xs of s is ARRAY<DOUBLE>"), "{err}");
    }
}
