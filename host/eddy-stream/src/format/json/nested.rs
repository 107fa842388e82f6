//! JSON values of ksqlDB's structured and parameterised types (`STRUCT`, `MAP`, `DECIMAL`,
//! `BYTES`, arrays of those and arrays of arrays), decoded value by value into Arrow and encoded
//! back as ksqlDB writes them: a `STRUCT` and a `MAP` as objects, a `DECIMAL` as a number, `BYTES`
//! as a base64 string.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{
    new_empty_array, new_null_array, Array, ArrayBuilder, ArrayRef, AsArray, ListArray, MapArray,
    StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::datatypes::{DataType, Decimal128Type, DecimalType, Field, Fields, TimeUnit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use datafusion::common::ScalarValue;
use serde_json::Value;

use super::{coerce, lookup, timestamp_ms};
use crate::format::common::display_name;

/// Whether values of `t` take this module's path rather than a typed builder's.
pub(crate) fn handles(t: &DataType) -> bool {
    match t {
        DataType::Struct(_)
        | DataType::Map(..)
        | DataType::Decimal128(..)
        | DataType::Binary
        | DataType::Date32
        | DataType::Time32(_) => true,
        DataType::List(item) => !matches!(
            item.data_type(),
            DataType::Float64
                | DataType::Int64
                | DataType::Int32
                | DataType::Boolean
                | DataType::Utf8
        ),
        _ => false,
    }
}

/// `value` as a value of `t`, or `None` when it does not fit (a `STRUCT` field missing from the
/// object is null, as in ksqlDB).
pub(crate) fn to_scalar(value: &Value, t: &DataType) -> Option<ScalarValue> {
    if value.is_null() {
        return ScalarValue::try_from(t).ok();
    }
    Some(match t {
        DataType::Boolean => ScalarValue::Boolean(Some(value.as_bool()?)),
        DataType::Int32 => ScalarValue::Int32(Some(coerce::to_i32(value)?)),
        DataType::Int64 => ScalarValue::Int64(Some(coerce::to_i64(value)?)),
        DataType::Float64 => ScalarValue::Float64(Some(coerce::to_f64(value)?)),
        DataType::Utf8 => ScalarValue::Utf8(Some(coerce::to_text(value)?)),
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            ScalarValue::TimestampMillisecond(Some(timestamp_ms(value)?), None)
        }
        // As ksqlDB writes them: a DATE is its days since the epoch, a TIME its milliseconds
        // since midnight.
        DataType::Date32 => ScalarValue::Date32(Some(coerce::to_i32(value)?)),
        DataType::Time32(TimeUnit::Millisecond) => {
            let ms = coerce::to_i32(value)?;
            if !(0..86_400_000).contains(&ms) {
                return None;
            }
            ScalarValue::Time32Millisecond(Some(ms))
        }
        DataType::Decimal128(precision, scale) => {
            let text = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return None,
            };
            let v = parse_decimal::<Decimal128Type>(&text, *precision, *scale).ok()?;
            Decimal128Type::validate_decimal_precision(v, *precision, *scale).ok()?;
            ScalarValue::Decimal128(Some(v), *precision, *scale)
        }
        DataType::Binary => ScalarValue::Binary(Some(STANDARD.decode(value.as_str()?).ok()?)),
        DataType::List(item) => {
            let items = value
                .as_array()?
                .iter()
                .map(|v| to_scalar(v, item.data_type()))
                .collect::<Option<Vec<_>>>()?;
            ScalarValue::List(ScalarValue::new_list(
                &items,
                item.data_type(),
                item.is_nullable(),
            ))
        }
        DataType::Struct(fields) => {
            let object = value.as_object()?;
            let columns = fields
                .iter()
                .map(|f| {
                    let v = lookup(object, f.name()).unwrap_or(&Value::Null);
                    to_scalar(v, f.data_type())?.to_array().ok()
                })
                .collect::<Option<Vec<_>>>()?;
            ScalarValue::Struct(Arc::new(
                StructArray::try_new(fields.clone(), columns, None).ok()?,
            ))
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return None;
            };
            let object = value.as_object()?;
            let keys: ArrayRef = Arc::new(StringArray::from_iter_values(object.keys()));
            let value_type = kv[1].data_type();
            let values = object
                .values()
                .map(|v| to_scalar(v, value_type))
                .collect::<Option<Vec<_>>>()?;
            let values = if values.is_empty() {
                new_empty_array(value_type)
            } else {
                ScalarValue::iter_to_array(values).ok()?
            };
            let pairs = StructArray::try_new(kv.clone(), vec![keys, values], None).ok()?;
            let offsets = OffsetBuffer::new(vec![0, i32::try_from(object.len()).ok()?].into());
            ScalarValue::Map(Arc::new(
                MapArray::try_new(entries.clone(), offsets, pairs, None, *sorted).ok()?,
            ))
        }
        _ => return None,
    })
}

/// A column built value by value, for the types [`handles`] names.
#[derive(Debug)]
pub(crate) struct ScalarColumn {
    data_type: DataType,
    values: Vec<ScalarValue>,
}

impl ScalarColumn {
    /// An empty column of `data_type`.
    pub(crate) fn new(data_type: DataType) -> ScalarColumn {
        ScalarColumn {
            data_type,
            values: Vec::new(),
        }
    }

    /// Appends `value` (checked to fit, so a misfit is null).
    pub(crate) fn append(&mut self, value: &Value) {
        let value = to_scalar(value, &self.data_type)
            .or_else(|| ScalarValue::try_from(&self.data_type).ok())
            .unwrap_or(ScalarValue::Null);
        self.values.push(value);
    }

    fn build(&self, values: Vec<ScalarValue>) -> ArrayRef {
        let n = values.len();
        if n == 0 {
            return new_empty_array(&self.data_type);
        }
        match ScalarValue::iter_to_array(values) {
            Ok(a) if a.data_type() == &self.data_type => a,
            Ok(a) => arrow::compute::cast(&a, &self.data_type)
                .unwrap_or_else(|_| new_null_array(&self.data_type, n)),
            Err(_) => new_null_array(&self.data_type, n),
        }
    }
}

impl ArrayBuilder for ScalarColumn {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn finish(&mut self) -> ArrayRef {
        let values = std::mem::take(&mut self.values);
        self.build(values)
    }

    fn finish_cloned(&self) -> ArrayRef {
        self.build(self.values.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_box_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// `column` as ksqlDB writes it in JSON: `BYTES` as base64 strings, times as numbers, `STRUCT`
/// fields under their display names, at any depth.
pub(crate) fn for_json(column: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
    Ok(match column.data_type() {
        // ksqlDB writes a TIMESTAMP as its milliseconds since the epoch.
        DataType::Timestamp(..) => arrow::compute::cast(column, &DataType::Int64)?,
        // A DATE as its days since the epoch, a TIME as its milliseconds since midnight.
        DataType::Date32 | DataType::Time32(_) => arrow::compute::cast(column, &DataType::Int32)?,
        DataType::Binary => {
            let bytes = column.as_binary::<i32>();
            Arc::new(
                bytes
                    .iter()
                    .map(|b| b.map(|b| STANDARD.encode(b)))
                    .collect::<StringArray>(),
            )
        }
        DataType::Struct(fields) => {
            let s = column.as_struct();
            let children = s
                .columns()
                .iter()
                .map(for_json)
                .collect::<Result<Vec<_>, _>>()?;
            let fields: Fields = fields
                .iter()
                .zip(&children)
                .map(|(f, c)| {
                    Field::new(
                        display_name(f.name()),
                        c.data_type().clone(),
                        f.is_nullable(),
                    )
                })
                .collect();
            Arc::new(StructArray::try_new(fields, children, s.nulls().cloned())?)
        }
        DataType::List(item) => {
            let list = column.as_list::<i32>();
            let values = for_json(list.values())?;
            let item = Field::new(item.name(), values.data_type().clone(), item.is_nullable());
            Arc::new(ListArray::try_new(
                item.into(),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?)
        }
        DataType::Map(entries, sorted) => {
            let map = column.as_map();
            let values = for_json(map.values())?;
            let DataType::Struct(kv) = entries.data_type() else {
                return Ok(column.clone());
            };
            let kv: Fields = vec![
                kv[0].as_ref().clone(),
                Field::new(
                    kv[1].name(),
                    values.data_type().clone(),
                    kv[1].is_nullable(),
                ),
            ]
            .into();
            let pairs = StructArray::try_new(kv.clone(), vec![map.keys().clone(), values], None)?;
            let entries = Field::new(entries.name(), DataType::Struct(kv), false);
            Arc::new(MapArray::try_new(
                entries.into(),
                map.offsets().clone(),
                pairs,
                map.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => column.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::map_type;

    fn decoded(json: &str, t: &DataType) -> String {
        let value: Value = serde_json::from_str(json).unwrap();
        match to_scalar(&value, t) {
            Some(v) => v.to_string(),
            None => "misfit".into(),
        }
    }

    #[test]
    fn decodes_ksqldb_json_values() {
        let point = DataType::Struct(
            vec![
                Field::new("x", DataType::Int32, true),
                Field::new("label", DataType::Utf8, true),
            ]
            .into(),
        );
        assert_eq!(
            decoded(r#"{"X": 1, "label": "a"}"#, &point),
            "{x:1,label:a}"
        );
        assert_eq!(decoded(r#"{"x": 2}"#, &point), "{x:2,label:}");
        assert_eq!(decoded(r#"{"x": "two"}"#, &point), "misfit");
        let map = map_type(DataType::Int32);
        assert_eq!(decoded(r#"{"a": 1, "b": null}"#, &map), "[{a:1,b:}]");
        assert_eq!(decoded("[1]", &map), "misfit");
        let decimal = DataType::Decimal128(5, 2);
        assert_eq!(decoded("12.5", &decimal), "12.50");
        assert_eq!(decoded("\"-0.01\"", &decimal), "-0.01");
        assert_eq!(decoded("1234.5", &decimal), "misfit");
        assert_eq!(decoded("\"aGk=\"", &DataType::Binary), "6869");
        assert_eq!(decoded("\"not base64!\"", &DataType::Binary), "misfit");
        let nested = DataType::new_list(DataType::new_list(DataType::Int32, true), true);
        assert_eq!(decoded("[[1, 2], [], null]", &nested), "[[1, 2], [], ]");
    }

    #[test]
    fn json_round_trips_as_ksqldb_writes_it() {
        use arrow::datatypes::Schema;
        use eddy_connector::{Message, Position};
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "pos",
                DataType::Struct(
                    vec![
                        Field::new("x", DataType::Int32, true),
                        Field::new("raw", DataType::Binary, true),
                    ]
                    .into(),
                ),
                true,
            ),
            Field::new("tags", map_type(DataType::Int32), true),
            Field::new("price", DataType::Decimal128(6, 2), true),
            Field::new("raw", DataType::Binary, true),
            Field::new(
                "grid",
                DataType::new_list(DataType::new_list(DataType::Int32, true), true),
                true,
            ),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let message = |payload: &str| Message {
            key: None,
            payload: payload.as_bytes().to_vec(),
            no_value: false,
            timestamp_ms: Some(7),
            position: Position {
                partition: 0,
                offset: 0,
            },
            origin: "t[0]@0".into(),
            upstream: None,
        };
        let decoder = super::super::Decoder::new(schema, None);
        let (batch, bad) = decoder.decode(&[
            message(
                r#"{"POS":{"X":1,"RAW":"aGk="},"TAGS":{"a":1},"PRICE":12.5,"RAW":"AAE=","GRID":[[1,2],[]]}"#,
            ),
            message(r#"{"pos":null,"tags":{},"price":null,"raw":null,"grid":null}"#),
            message(r#"{"pos":{"x":"one"},"tags":{},"price":1,"raw":null,"grid":null}"#),
        ]);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            bad[0].reason,
            "field 'pos' should be STRUCT<X INT, RAW BYTES>, found {\"x\":\"one\"}"
        );
        let records = super::super::encode(&batch).unwrap();
        let payloads: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.payload.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            payloads,
            vec![
                r#"{"POS":{"X":1,"RAW":"aGk="},"TAGS":{"a":1},"PRICE":12.50,"RAW":"AAE=","GRID":[[1,2],[]]}"#,
                r#"{"POS":null,"TAGS":{},"PRICE":null,"RAW":null,"GRID":null}"#,
            ]
        );
    }
}
