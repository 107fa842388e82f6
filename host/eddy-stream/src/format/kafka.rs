//! KAFKA values: one primitive per message as the standard Kafka serializers write it — INT
//! as 4 bytes big-endian, BIGINT 8, DOUBLE 8 (IEEE 754), VARCHAR as UTF-8. An empty payload is
//! NULL.

use arrow::array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use eddy_connector::Record;

use super::common::{split_rowtime, Val};
use crate::{Error, Result};

/// Whether a column of type `t` can be the value of a KAFKA message.
pub(crate) fn supports(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int32
            | DataType::Int64
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

/// The payload as `column`'s value; the error says what was wrong with it.
pub(crate) fn parse(payload: &[u8], column: &Field) -> std::result::Result<Val, String> {
    if payload.is_empty() {
        return Ok(Val::Null);
    }
    let fixed = |n: usize, name: &str| -> std::result::Result<(), String> {
        if payload.len() == n {
            Ok(())
        } else {
            Err(format!(
                "column {}: a KAFKA {name} is {n} bytes, found {}",
                column.name(),
                payload.len()
            ))
        }
    };
    Ok(match column.data_type() {
        DataType::Int32 => {
            fixed(4, "INT")?;
            Val::Int(i32::from_be_bytes(payload.try_into().expect("4 bytes")))
        }
        DataType::Int64 => {
            fixed(8, "BIGINT")?;
            Val::BigInt(i64::from_be_bytes(payload.try_into().expect("8 bytes")))
        }
        DataType::Float64 => {
            fixed(8, "DOUBLE")?;
            Val::Double(f64::from_be_bytes(payload.try_into().expect("8 bytes")))
        }
        _ => Val::Str(
            std::str::from_utf8(payload)
                .map_err(|e| format!("column {}: invalid UTF-8: {e}", column.name()))?
                .to_string(),
        ),
    })
}

/// Encodes the one value column of each row; NULL is an empty payload, `rowtime` becomes the
/// record's timestamp.
pub(crate) fn encode(batch: &RecordBatch) -> Result<Vec<Record>> {
    let (payload, times) = split_rowtime(batch);
    if payload.num_columns() != 1 {
        return Err(Error::Plan(format!(
            "value_format 'KAFKA' holds a single value, and the rows have {} columns",
            payload.num_columns()
        )));
    }
    let column = payload.column(0);
    let bytes: Vec<Vec<u8>> = match column.data_type() {
        DataType::Int32 => column
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("INT")
            .iter()
            .map(|v| v.map_or_else(Vec::new, |v| v.to_be_bytes().to_vec()))
            .collect(),
        DataType::Int64 => column
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("BIGINT")
            .iter()
            .map(|v| v.map_or_else(Vec::new, |v| v.to_be_bytes().to_vec()))
            .collect(),
        DataType::Float64 => column
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("DOUBLE")
            .iter()
            .map(|v| v.map_or_else(Vec::new, |v| v.to_be_bytes().to_vec()))
            .collect(),
        t if supports(t) => {
            let text = arrow::compute::cast(column, &DataType::Utf8)?;
            text.as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to VARCHAR")
                .iter()
                .map(|v| v.map_or_else(Vec::new, |v| v.as_bytes().to_vec()))
                .collect()
        }
        other => {
            return Err(Error::Plan(format!(
                "value_format 'KAFKA' holds an INT, BIGINT, DOUBLE or VARCHAR, not {other}"
            )))
        }
    };
    Ok(bytes
        .into_iter()
        .zip(times)
        .map(|(payload, timestamp_ms)| Record {
            key: None,
            payload: Some(payload),
            timestamp_ms,
            partition: None,
            upstream: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::ArrayRef;
    use arrow::datatypes::{Schema, TimeUnit};
    use eddy_connector::{Message, Position};

    use super::super::{ValueDecoder, ValueFormat};
    use super::*;

    fn message(i: i64, payload: Vec<u8>) -> Message {
        Message {
            key: None,
            payload,
            no_value: false,
            timestamp_ms: Some(7),
            position: Position {
                partition: 0,
                offset: i,
            },
            origin: format!("t[0]@{i}"),
            upstream: None,
        }
    }

    /// Decodes `payloads` as one column of `data_type`, encodes the rows again.
    fn round_trip(data_type: DataType, payloads: Vec<Vec<u8>>) -> (ArrayRef, Vec<String>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", data_type, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder = ValueDecoder::new(ValueFormat::Kafka, schema, None).unwrap();
        let messages: Vec<Message> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| message(i as i64, p.clone()))
            .collect();
        let (batch, bad) = decoder.decode(&messages);
        let good: Vec<&Vec<u8>> = payloads
            .iter()
            .zip(&messages)
            .filter(|(_, m)| !bad.iter().any(|b| b.origin == m.origin))
            .map(|(p, _)| p)
            .collect();
        let records = ValueFormat::Kafka.encode(&batch).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|r| r.payload.as_ref().unwrap())
                .collect::<Vec<_>>(),
            good,
            "encoding gives the payloads back"
        );
        assert!(records.iter().all(|r| r.timestamp_ms == Some(7)));
        (
            batch.column(0).clone(),
            bad.into_iter().map(|b| b.reason).collect(),
        )
    }

    #[test]
    fn int_round_trip_and_wrong_length() {
        let (values, bad) = round_trip(
            DataType::Int32,
            vec![
                42i32.to_be_bytes().to_vec(),
                (-1i32).to_be_bytes().to_vec(),
                vec![],
                vec![0, 1, 2],
            ],
        );
        let values = values.as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            [Some(42), Some(-1), None]
        );
        assert_eq!(bad, ["column v: a KAFKA INT is 4 bytes, found 3"]);
    }

    #[test]
    fn bigint_round_trip_and_wrong_length() {
        let (values, bad) = round_trip(
            DataType::Int64,
            vec![
                i64::MAX.to_be_bytes().to_vec(),
                1_700_000_000_000i64.to_be_bytes().to_vec(),
                42i32.to_be_bytes().to_vec(),
            ],
        );
        let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(values.values(), &[i64::MAX, 1_700_000_000_000]);
        assert_eq!(bad, ["column v: a KAFKA BIGINT is 8 bytes, found 4"]);
    }

    #[test]
    fn double_round_trip_and_wrong_length() {
        let (values, bad) = round_trip(
            DataType::Float64,
            vec![
                1.5f64.to_be_bytes().to_vec(),
                (-0.25f64).to_be_bytes().to_vec(),
                vec![1; 9],
            ],
        );
        let values = values.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(values.values(), &[1.5, -0.25]);
        assert_eq!(bad, ["column v: a KAFKA DOUBLE is 8 bytes, found 9"]);
    }

    #[test]
    fn string_round_trip_and_bad_utf8() {
        let (values, bad) = round_trip(
            DataType::Utf8,
            vec![
                b"hello, world".to_vec(),
                "größe".as_bytes().to_vec(),
                vec![0xff, 0xfe],
            ],
        );
        let values = values.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            [Some("hello, world"), Some("größe")]
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("column v: invalid UTF-8"), "{}", bad[0]);
    }
}
