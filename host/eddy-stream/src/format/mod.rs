//! Value formats, ksqlDB's `value_format`: JSON (see [`json`]), DELIMITED (CSV lines,
//! see [`delimited`]) and KAFKA (one primitive in Kafka's serializer encoding, see
//! [`kafka`]).
//!
//! [`ValueFormat`] comes from a statement's `WITH (…)` options; [`ValueDecoder`] and
//! [`ValueFormat::encode`] dispatch to the format's codec.

pub(crate) mod common;
pub(crate) mod delimited;
pub(crate) mod json;
pub(crate) mod kafka;
pub(crate) mod records;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
    Int64Builder, RecordBatch, StringBuilder, Time32MillisecondBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, SchemaRef, TimeUnit};
use eddy_connector::{Message, Options, Record};

use crate::{Error, Result};
use common::{type_name, Val};
use json::{BadEvent, Decoder};

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
    /// JSON with `wrap_single_value='false'`: a one-column value as the JSON value itself
    /// (`42`, not `{"N":42}`), as ksqlDB writes an anonymous value.
    JsonValue,
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
        let wrap = match options
            .get("wrap_single_value")
            .map(|v| v.trim().to_lowercase())
        {
            None => None,
            Some(v) if v == "true" => Some(true),
            Some(v) if v == "false" => Some(false),
            Some(v) => {
                return Err(Error::Catalog(format!(
                    "wrap_single_value must be true or false, found '{v}'"
                )))
            }
        };
        Ok(match (format, wrap) {
            (ValueFormat::Json, Some(false)) => ValueFormat::JsonValue,
            // As in ksqlDB: these formats never wrap a single value.
            (ValueFormat::Delimited { .. } | ValueFormat::Kafka, Some(true)) => {
                return Err(Error::Catalog(format!(
                    "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to 'true'.",
                    options["value_format"].trim().to_uppercase()
                )))
            }
            (format, _) => format,
        })
    }

    /// [`ValueFormat::check`], and as ksqlDB: `wrap_single_value='true'` only for one value
    /// column (it says so even where wrapping is the default).
    pub(crate) fn check_with(
        &self,
        options: &Options,
        relation: &str,
        columns: &[Field],
    ) -> Result<()> {
        let wrapped = options
            .get("wrap_single_value")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let values = columns.iter().filter(|f| f.name() != "rowtime").count();
        if wrapped && values != 1 {
            return Err(Error::Catalog(format!(
                "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas: {relation} \
                 has {values} value columns"
            )));
        }
        self.check(relation, columns)
    }

    /// Whether the format can hold `columns` (the value columns, without `rowtime`) of
    /// `relation`; the error states the format's rule.
    pub(crate) fn check(&self, relation: &str, columns: &[Field]) -> Result<()> {
        let columns: Vec<&Field> = columns.iter().filter(|f| f.name() != "rowtime").collect();
        match self {
            ValueFormat::Json => Ok(()),
            ValueFormat::JsonValue if columns.len() != 1 => Err(Error::Catalog(format!(
                "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas: {relation} \
                 has {} value columns",
                columns.len()
            ))),
            ValueFormat::JsonValue => Ok(()),
            ValueFormat::Delimited { .. } => match columns.iter().find(|f| !primitive(f)) {
                Some(f) => Err(Error::Catalog(format!(
                    "value_format 'DELIMITED' holds primitive columns only (no ARRAY, MAP or \
                     STRUCT): column {} of {relation} is {}",
                    f.name(),
                    type_name(f.data_type())
                ))),
                None => match columns
                    .iter()
                    .find(|f| matches!(f.data_type(), DataType::Binary))
                {
                    // ksqlDB reads these from base64 text; Eddy's DELIMITED decoder does not yet.
                    Some(f) => Err(Error::Catalog(format!(
                        "value_format 'DELIMITED' does not hold BYTES columns in Eddy yet: \
                         column {} of {relation} is {}; use JSON",
                        f.name(),
                        type_name(f.data_type())
                    ))),
                    None => Ok(()),
                },
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
                if kafka::supports(f.data_type()) {
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
            ValueFormat::Json => json::encode(batch),
            ValueFormat::JsonValue => json::encode_unwrapped(batch),
            ValueFormat::Delimited { delimiter } => delimited::encode(batch, *delimiter),
            ValueFormat::Kafka => kafka::encode(batch),
        }
    }
}

/// How a Kafka source's record keys are encoded: `WITH (key_format=…)`. With it, `KEY` (or
/// `PRIMARY KEY`) columns come from the record key, as in ksqlDB, and the value holds the rest;
/// without it, Eddy reads every column from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFormat {
    /// One primitive key column in the Kafka serializers' encoding (ksqlDB's default).
    Kafka,
    /// Key columns as one CSV line.
    Delimited {
        /// The field separator, `,` unless `key_delimiter` says otherwise.
        delimiter: u8,
    },
    /// One key column as a JSON value, several as a JSON object.
    Json,
    /// Records carry no key; the relation has no key columns.
    None,
}

impl KeyFormat {
    /// Encodes the key columns of each row (`batch` holds only them) as record keys.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let payloads = |records: Vec<Record>| {
            records
                .into_iter()
                .map(|r| r.payload.unwrap_or_default())
                .collect()
        };
        Ok(match self {
            KeyFormat::Json => json::encode_key(batch)?,
            KeyFormat::Delimited { delimiter } => payloads(delimited::encode(batch, *delimiter)?),
            KeyFormat::Kafka | KeyFormat::None => payloads(kafka::encode(batch)?),
        })
    }

    /// The format `key_format` in `options` names, if any.
    pub(crate) fn from_options(options: &Options) -> Result<Option<KeyFormat>> {
        let format = KeyFormat::named(options)?;
        if options.contains_key("key_delimiter")
            && !matches!(format, Some(KeyFormat::Delimited { .. }))
        {
            return Err(Error::Catalog(
                "key_delimiter goes with key_format='DELIMITED'".into(),
            ));
        }
        Ok(format)
    }

    fn named(options: &Options) -> Result<Option<KeyFormat>> {
        let Some(name) = options.get("key_format") else {
            return Ok(None);
        };
        Ok(Some(match name.trim().to_uppercase().as_str() {
            "KAFKA" => KeyFormat::Kafka,
            "DELIMITED" => KeyFormat::Delimited {
                delimiter: match options.get("key_delimiter") {
                    Some(d) => parse_delimiter(d)?,
                    None => b',',
                },
            },
            "JSON" => KeyFormat::Json,
            "NONE" => KeyFormat::None,
            _ => {
                return Err(Error::Unsupported(format!(
                    "key_format '{name}': Eddy reads keys as KAFKA, DELIMITED, JSON or NONE"
                )))
            }
        }))
    }

    /// Its name in `key_format`.
    fn name(&self) -> &'static str {
        match self {
            KeyFormat::Kafka => "KAFKA",
            KeyFormat::Delimited { .. } => "DELIMITED",
            KeyFormat::Json => "JSON",
            KeyFormat::None => "NONE",
        }
    }

    /// Whether keys of this format can fill `keys`, the key columns of `relation`.
    pub(crate) fn check(&self, relation: &str, keys: &[&Field]) -> Result<()> {
        let names = || {
            keys.iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            KeyFormat::None if !keys.is_empty() => Err(Error::Catalog(format!(
                "key_format 'NONE' means records have no key, but {relation} has key columns ({})",
                names()
            ))),
            KeyFormat::None => Ok(()),
            KeyFormat::Kafka if keys.len() != 1 => Err(Error::Catalog(format!(
                "key_format 'KAFKA' holds a single primitive key, so {relation} needs exactly \
                 one KEY column, not {} ({}): use key_format 'DELIMITED' for more",
                keys.len(),
                names()
            ))),
            KeyFormat::Kafka if !kafka::supports(keys[0].data_type()) => {
                Err(Error::Catalog(format!(
                    "key_format 'KAFKA' holds an INT, BIGINT, DOUBLE or VARCHAR: key column {} \
                     of {relation} is {}",
                    keys[0].name(),
                    type_name(keys[0].data_type())
                )))
            }
            KeyFormat::Kafka => Ok(()),
            KeyFormat::Delimited { .. } | KeyFormat::Json if keys.is_empty() => {
                Err(Error::Catalog(format!(
                    "key_format '{}' needs KEY columns, and {relation} has none",
                    self.name()
                )))
            }
            KeyFormat::Delimited { .. } | KeyFormat::Json => {
                match keys.iter().find(|f| !primitive(f)) {
                    Some(f) => Err(Error::Catalog(format!(
                        "key_format '{}' holds primitive columns only: key column {} of \
                     {relation} is {}",
                        self.name(),
                        f.name(),
                        type_name(f.data_type())
                    ))),
                    None => Ok(()),
                }
            }
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
    /// Set when key columns come from the record key; `inner` then decodes the other columns.
    key: Option<Arc<KeySplit>>,
    /// A VARCHAR event-time column and its Java pattern (`timestamp_format`).
    event_time_text: Option<(usize, String)>,
}

/// Where the record key's columns go among a relation's columns.
#[derive(Debug)]
struct KeySplit {
    format: KeyFormat,
    /// The whole decoded schema, key columns included.
    schema: SchemaRef,
    /// Positions of the key columns in `schema`, in key order (a windowed key's `windowstart`
    /// and `windowend` last).
    keys: Vec<usize>,
    /// How the key carries its window, for a windowed relation.
    window: Option<KeyWindow>,
}

/// How a windowed record key ends, as Kafka Streams' windowed serdes write it (and Eddy's
/// windowed tables do): the start (8 bytes big-endian) for tumbling and hopping windows of
/// `size` ms, the end then the start for sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyWindow {
    /// Tumbling or hopping windows of this many ms.
    Fixed(i64),
    /// Session windows.
    Session,
}

impl KeyWindow {
    /// From `window_type` (and `window_size`) in `options`, if given.
    pub(crate) fn from_options(options: &Options) -> Result<Option<KeyWindow>> {
        let Some(kind) = options.get("window_type") else {
            if options.contains_key("window_size") {
                return Err(Error::Catalog(
                    "window_size goes with window_type='TUMBLING' or 'HOPPING'".into(),
                ));
            }
            return Ok(None);
        };
        match kind.trim().to_uppercase().as_str() {
            "SESSION" if options.contains_key("window_size") => Err(Error::Catalog(
                "'WINDOW_SIZE' should not be set for SESSION windows.".into(),
            )),
            "SESSION" => Ok(Some(KeyWindow::Session)),
            "TUMBLING" | "HOPPING" => {
                let size = options.get("window_size").ok_or_else(|| {
                    Error::Catalog(format!(
                        "window_type='{kind}' needs window_size, e.g. window_size='1 MINUTE'"
                    ))
                })?;
                Ok(Some(KeyWindow::Fixed(crate::query::parse_duration(size)?)))
            }
            _ => Err(Error::Catalog(format!(
                "window_type '{kind}': TUMBLING, HOPPING or SESSION"
            ))),
        }
    }

    /// Splits a windowed key into the key's own bytes and the window's (start, end).
    fn split<'a>(&self, key: &'a [u8]) -> std::result::Result<(&'a [u8], i64, i64), String> {
        let tail = match self {
            KeyWindow::Fixed(_) => 8,
            KeyWindow::Session => 16,
        };
        if key.len() < tail {
            return Err(format!(
                "a windowed key ends in {tail} bytes of window, and this one has {}",
                key.len()
            ));
        }
        let (own, window) = key.split_at(key.len() - tail);
        let long = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
        Ok(match self {
            KeyWindow::Fixed(size) => {
                let start = long(window);
                (own, start, start + size)
            }
            KeyWindow::Session => (own, long(&window[8..]), long(&window[..8])),
        })
    }
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
            ValueFormat::JsonValue => Inner::Json(Decoder::new(schema, timestamp).unwrapped()),
            ValueFormat::Delimited { delimiter } => Inner::Delimited {
                schema,
                timestamp,
                delimiter,
            },
            ValueFormat::Kafka => Inner::Kafka { schema, timestamp },
        };
        Ok(ValueDecoder {
            inner,
            key: None,
            event_time_text: None,
        })
    }

    /// A decoder for a Kafka source: with `key_format`, the columns at `keys` come from the
    /// record key in that format and the value holds the others; an empty value is then a
    /// row of only its key (a tombstone, for a table).
    pub(crate) fn with_key(
        format: ValueFormat,
        key_format: Option<KeyFormat>,
        schema: SchemaRef,
        keys: &[usize],
        timestamp: Option<usize>,
        window: Option<KeyWindow>,
    ) -> Result<ValueDecoder> {
        let Some(key_format) = key_format else {
            return ValueDecoder::new(format, schema, timestamp);
        };
        let own = keys.len() - if window.is_some() { 2 } else { 0 };
        let key_fields: Vec<&Field> = keys[..own].iter().map(|&i| schema.field(i)).collect();
        key_format.check("the stream", &key_fields)?;
        if keys.is_empty() {
            return ValueDecoder::new(format, schema, timestamp);
        }
        if timestamp.is_some_and(|t| keys.contains(&t)) {
            return Err(Error::Catalog(
                "the timestamp column cannot be a key column read from the record key".into(),
            ));
        }
        let value_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !keys.contains(i))
            .collect();
        let value_schema = Arc::new(schema.project(&value_columns)?);
        let value_timestamp = timestamp.and_then(|t| value_columns.iter().position(|&i| i == t));
        let mut decoder = ValueDecoder::new(format, value_schema, value_timestamp)?;
        decoder.key = Some(Arc::new(KeySplit {
            format: key_format,
            schema,
            keys: keys.to_vec(),
            window,
        }));
        Ok(decoder)
    }

    /// The same decoder, reading event time from column `timestamp` (of the whole row) with
    /// the Java pattern `timestamp_format` in `options`, when it names one.
    pub(crate) fn with_timestamp_format(
        mut self,
        timestamp: Option<usize>,
        options: &Options,
    ) -> ValueDecoder {
        if let (Some(column), Some(pattern)) = (timestamp, options.get("timestamp_format")) {
            self.event_time_text = Some((column, pattern.clone()));
        }
        self
    }

    /// Decodes what it can; the rest come back as [`BadEvent`]s, in order.
    pub(crate) fn decode(&self, messages: &[Message]) -> (RecordBatch, Vec<BadEvent>) {
        let (batch, mut bad) = match &self.key {
            Some(split) => self.decode_keyed(split, messages),
            None => self.decode_values(messages),
        };
        let Some((column, pattern)) = &self.event_time_text else {
            return (batch, bad);
        };
        match common::rowtime_from_text(&batch, *column, pattern) {
            Ok(batch) => (batch, bad),
            Err(e) => {
                // Cannot happen for a schema CREATE checked; keep the events visible if it does.
                bad.extend(messages.iter().map(|m| BadEvent {
                    origin: m.origin.clone(),
                    reason: format!("event time: {e}"),
                    payload: m.payload.clone(),
                }));
                (RecordBatch::new_empty(batch.schema()), bad)
            }
        }
    }

    /// Rows for a stream's records without a value: their key columns (when the stream has
    /// some, a bad key making a bad event) and NULLs, the record's time as `rowtime`.
    pub(crate) fn decode_null_values(&self, messages: &[Message]) -> (RecordBatch, Vec<BadEvent>) {
        if let Some(split) = &self.key {
            return self.decode_keyed(split, messages);
        }
        let schema = self.decode_values(&[]).0.schema();
        let columns = schema.fields().len() - 1;
        decode_rows(&schema, None, messages, |_| Ok(vec![Val::Null; columns]))
    }

    fn decode_values(&self, messages: &[Message]) -> (RecordBatch, Vec<BadEvent>) {
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
                kafka::parse(&m.payload, &schema.fields()[0]).map(|v| vec![v])
            }),
        }
    }
}

impl ValueDecoder {
    /// Keys first, then the values of the messages whose key is good, then both put together
    /// in message order. Value decoders drop bad messages; they are matched back by origin,
    /// which is unique per Kafka record.
    fn decode_keyed(&self, split: &KeySplit, messages: &[Message]) -> (RecordBatch, Vec<BadEvent>) {
        let own = split.keys.len() - if split.window.is_some() { 2 } else { 0 };
        let key_fields: Vec<FieldRef> = split.keys[..own]
            .iter()
            .map(|&i| split.schema.fields()[i].clone())
            .collect();
        let mut bad: Vec<(usize, BadEvent)> = Vec::new();
        let mut keyed: Vec<(usize, Vec<Val>)> = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let parse = |k: &[u8]| match split.format {
                // A key of no bytes is the empty string, as Kafka's string deserializer reads it
                // (no key at all is NULL).
                KeyFormat::Kafka
                    if k.is_empty() && key_fields[0].data_type() == &DataType::Utf8 =>
                {
                    Ok(vec![Val::Str(String::new())])
                }
                KeyFormat::Kafka => kafka::parse(k, &key_fields[0]).map(|v| vec![v]),
                KeyFormat::Delimited { delimiter } => delimited::parse(k, delimiter, &key_fields),
                KeyFormat::Json => json::parse_key(k, &key_fields),
                KeyFormat::None => unreachable!("no key columns with key_format NONE"),
            };
            let key = match (&m.key, split.window) {
                (None, None) => Ok(vec![Val::Null; key_fields.len()]),
                (None, Some(_)) => Err("a windowed key is missing".to_string()),
                (Some(k), None) => parse(k),
                (Some(k), Some(window)) => window.split(k).and_then(|(own, start, end)| {
                    let mut values = parse(own)?;
                    values.push(Val::Timestamp(start));
                    values.push(Val::Timestamp(end));
                    Ok(values)
                }),
            };
            match key {
                Ok(values) => keyed.push((i, values)),
                Err(reason) => bad.push((
                    i,
                    BadEvent {
                        origin: m.origin.clone(),
                        reason: format!("bad key: {reason}"),
                        payload: m.payload.clone(),
                    },
                )),
            }
        }
        let with_value: Vec<usize> = keyed
            .iter()
            .map(|(i, _)| *i)
            .filter(|&i| !messages[i].payload.is_empty())
            .collect();
        let (values, value_bad) = if with_value.len() == messages.len() {
            self.decode_values(messages)
        } else {
            let subset: Vec<Message> = with_value.iter().map(|&i| messages[i].clone()).collect();
            self.decode_values(&subset)
        };
        // Which row of `values` each message became (None: bad value, or no value at all).
        let mut value_row: Vec<Option<u32>> = vec![None; messages.len()];
        let mut value_bad = value_bad.into_iter().peekable();
        let mut row = 0u32;
        for &i in &with_value {
            if value_bad
                .peek()
                .is_some_and(|b| b.origin == messages[i].origin)
            {
                bad.push((i, value_bad.next().expect("peeked")));
            } else {
                value_row[i] = Some(row);
                row += 1;
            }
        }
        bad.extend(value_bad.map(|b| (usize::MAX, b)));
        bad.sort_by_key(|(i, _)| *i);
        let rows: Vec<(usize, Vec<Val>)> = keyed
            .into_iter()
            .filter(|(i, _)| messages[*i].payload.is_empty() || value_row[*i].is_some())
            .collect();

        let mut key_builders: Vec<Builder> = split
            .keys
            .iter()
            .map(|&i| Builder::new(split.schema.field(i).data_type(), rows.len()))
            .collect();
        let take: arrow::array::UInt32Array = rows.iter().map(|(i, _)| value_row[*i]).collect();
        let mut rowtime = TimestampMillisecondBuilder::with_capacity(rows.len());
        let value_times = values
            .column(values.num_columns() - 1)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .expect("rowtime is last")
            .clone();
        let now = common::now_ms();
        for (i, key) in rows {
            for (builder, value) in key_builders.iter_mut().zip(key) {
                builder.append(value);
            }
            rowtime.append_value(match value_row[i] {
                Some(r) => value_times.value(r as usize),
                None => messages[i].timestamp_ms.unwrap_or(now),
            });
        }
        let mut key_arrays = key_builders.into_iter().map(Builder::finish);
        let mut value_arrays = values.columns()[..values.num_columns() - 1]
            .iter()
            .map(|c| arrow::compute::take(c, &take, None).expect("indices are in range"));
        let columns = split.schema.fields().len() - 1;
        let mut arrays: Vec<ArrayRef> = (0..columns)
            .map(|c| {
                if split.keys.contains(&c) {
                    key_arrays.next()
                } else {
                    value_arrays.next()
                }
                .expect("one array per column")
            })
            .collect();
        arrays.push(Arc::new(rowtime.finish()));
        let batch =
            RecordBatch::try_new(split.schema.clone(), arrays).expect("arrays follow the schema");
        (batch, bad.into_iter().map(|(_, b)| b).collect())
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
    let now = common::now_ms();
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
    Date(Date32Builder),
    Time(Time32MillisecondBuilder),
    Decimal(Decimal128Builder),
    Str(StringBuilder),
    /// A type no text format here parses (ARRAY, MAP, STRUCT, BYTES): only NULLs, as a record
    /// without a value gives its value columns.
    Nulls(DataType, usize),
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
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time32(TimeUnit::Millisecond) => {
                Builder::Time(Time32MillisecondBuilder::with_capacity(capacity))
            }
            DataType::Decimal128(precision, scale) => Builder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*precision, *scale)
                    .expect("the parser checked the DECIMAL's precision and scale"),
            ),
            DataType::Utf8 => Builder::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            other => Builder::Nulls(other.clone(), 0),
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
            (Builder::Date(b), Val::Date(v)) => b.append_value(v),
            (Builder::Time(b), Val::Time(v)) => b.append_value(v),
            (Builder::Decimal(b), Val::Decimal(v)) => b.append_value(v),
            (Builder::Str(b), Val::Str(v)) => b.append_value(v),
            (Builder::Nulls(_, n), value) => {
                debug_assert!(matches!(value, Val::Null), "no parser makes {value:?} here");
                *n += 1;
            }
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Int(b), _) => b.append_null(),
            (Builder::BigInt(b), _) => b.append_null(),
            (Builder::Double(b), _) => b.append_null(),
            (Builder::Timestamp(b), _) => b.append_null(),
            (Builder::Date(b), _) => b.append_null(),
            (Builder::Time(b), _) => b.append_null(),
            (Builder::Decimal(b), _) => b.append_null(),
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
            Builder::Date(mut b) => Arc::new(b.finish()),
            Builder::Time(mut b) => Arc::new(b.finish()),
            Builder::Decimal(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::Nulls(data_type, n) => arrow::array::new_null_array(&data_type, n),
        }
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

    fn keyed(offset: i64, key: Option<&[u8]>, payload: &str) -> Message {
        Message {
            key: key.map(<[u8]>::to_vec),
            payload: payload.as_bytes().to_vec(),
            no_value: false,
            timestamp_ms: Some(1000 + offset),
            position: eddy_connector::Position {
                partition: 0,
                offset,
            },
            origin: format!("t[0]@{offset}"),
            upstream: None,
        }
    }

    #[test]
    fn a_text_timestamp_is_read_with_timestamp_format_in_every_value_format() {
        use arrow::array::AsArray;
        use arrow::datatypes::{Schema, TimestampMillisecondType};
        let schema = Arc::new(Schema::new(vec![
            Field::new("at", DataType::Utf8, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let pattern = options(&[("timestamp_format", "dd/MM/yyyy HH:mm")]);
        for (format, payload) in [
            (ValueFormat::Json, r#"{"at":"06/12/2026 10:30"}"#),
            (ValueFormat::JsonValue, r#""06/12/2026 10:30""#),
            (
                ValueFormat::Delimited { delimiter: b';' },
                "06/12/2026 10:30",
            ),
            (ValueFormat::Kafka, "06/12/2026 10:30"),
        ] {
            let decoder = ValueDecoder::new(format, schema.clone(), Some(0))
                .unwrap()
                .with_timestamp_format(Some(0), &pattern);
            // The second message does not match: it keeps the record's own timestamp.
            let (batch, bad) = decoder.decode(&[keyed(0, None, payload), keyed(1, None, "\"x\"")]);
            assert!(bad.len() <= 1, "{format:?}: {bad:?}");
            let times = batch.column(1).as_primitive::<TimestampMillisecondType>();
            assert_eq!(times.value(0), 1_796_553_000_000, "{format:?}");
            if batch.num_rows() == 2 {
                assert_eq!(times.value(1), 1001, "{format:?}");
            }
        }
    }

    #[test]
    fn key_columns_come_from_the_record_key_with_a_key_format() {
        use arrow::array::AsArray;
        use arrow::datatypes::{Float64Type, Int64Type, Schema, TimestampMillisecondType};
        let schema = Arc::new(Schema::new(vec![
            Field::new("speed", DataType::Float64, true),
            Field::new("car_id", DataType::Int64, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder = ValueDecoder::with_key(
            ValueFormat::Delimited { delimiter: b',' },
            Some(KeyFormat::Kafka),
            schema,
            &[1],
            None,
            None,
        )
        .unwrap();
        let (batch, bad) = decoder.decode(&[
            keyed(0, Some(&7i64.to_be_bytes()), "50.5"),
            keyed(1, Some(&[1, 2, 3]), "60"),
            keyed(2, Some(&8i64.to_be_bytes()), "fast"),
            keyed(3, None, "70"),
            keyed(4, Some(&9i64.to_be_bytes()), ""),
            keyed(5, Some(&10i64.to_be_bytes()), "80,1"),
            keyed(6, Some(&11i64.to_be_bytes()), "90"),
        ]);
        let speed = batch.column(0).as_primitive::<Float64Type>();
        let car = batch.column(1).as_primitive::<Int64Type>();
        let time = batch.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(
            speed.iter().collect::<Vec<_>>(),
            [Some(50.5), Some(70.0), None, Some(90.0)]
        );
        assert_eq!(
            car.iter().collect::<Vec<_>>(),
            [Some(7), None, Some(9), Some(11)],
            "a record without a key has a null key; an empty value keeps only the key"
        );
        assert_eq!(time.values(), &[1000, 1003, 1004, 1006]);
        let bad: Vec<(String, String)> = bad.into_iter().map(|b| (b.origin, b.reason)).collect();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].0, "t[0]@1");
        assert!(bad[0].1.starts_with("bad key: "), "{bad:?}");
        assert_eq!(bad[1].0, "t[0]@2");
        assert_eq!(bad[2].0, "t[0]@5");
    }

    #[test]
    fn key_formats_come_from_options_and_fit_the_key_columns() {
        assert_eq!(KeyFormat::from_options(&options(&[])).unwrap(), None);
        assert_eq!(
            KeyFormat::from_options(&options(&[("key_format", "kafka")])).unwrap(),
            Some(KeyFormat::Kafka)
        );
        let err = KeyFormat::from_options(&options(&[("key_format", "AVRO")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Eddy reads keys as KAFKA, DELIMITED, JSON or NONE"),
            "{err}"
        );
        let a = Field::new("a", DataType::Utf8, true);
        let b = Field::new("b", DataType::Int64, true);
        let err = KeyFormat::Kafka
            .check("s", &[&a, &b])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exactly one KEY column, not 2 (a, b)"),
            "{err}"
        );
        assert!(KeyFormat::Kafka.check("s", &[&a]).is_ok());
        assert!(KeyFormat::Delimited { delimiter: b',' }
            .check("s", &[&a, &b])
            .is_ok());
        assert!(KeyFormat::Json.check("s", &[&a, &b]).is_ok());
        let err = KeyFormat::None.check("s", &[&a]).unwrap_err().to_string();
        assert!(err.contains("s has key columns (a)"), "{err}");
    }
}
