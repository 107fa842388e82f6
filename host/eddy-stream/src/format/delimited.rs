//! DELIMITED values, ksqlDB's CSV: one line per message, fields in column order, `"` quotes a
//! field (`""` inside is a quote), an empty field is NULL.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use eddy_connector::Record;

use super::common::{split_rowtime, type_name, Val};
use crate::Result;

/// The fields of one line, parsed into `columns`' types; the error names what is wrong.
pub(crate) fn parse(
    payload: &[u8],
    delimiter: u8,
    columns: &[FieldRef],
) -> std::result::Result<Vec<Val>, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let read = reader
        .read_record(&mut record)
        .map_err(|e| format!("malformed DELIMITED line: {e}"))?;
    let found = if read { record.len() } else { 0 };
    if found != columns.len() {
        let plural = if columns.len() == 1 { "" } else { "s" };
        return Err(format!(
            "expected {} field{plural}, found {found}",
            columns.len()
        ));
    }
    if reader
        .read_record(&mut csv::StringRecord::new())
        .unwrap_or(true)
    {
        return Err("expected one line, found more".into());
    }
    columns
        .iter()
        .zip(record.iter())
        .map(|(column, text)| field(column, text))
        .collect()
}

/// One field as `column`'s type: empty is NULL.
fn field(column: &Field, text: &str) -> std::result::Result<Val, String> {
    if text.is_empty() {
        return Ok(Val::Null);
    }
    let t = text.trim();
    let value = match column.data_type() {
        DataType::Boolean => {
            if t.eq_ignore_ascii_case("true") {
                Some(Val::Bool(true))
            } else if t.eq_ignore_ascii_case("false") {
                Some(Val::Bool(false))
            } else {
                None
            }
        }
        DataType::Int32 => t.parse().ok().map(Val::Int),
        DataType::Int64 => t.parse().ok().map(Val::BigInt),
        DataType::Float64 => t.parse().ok().map(Val::Double),
        DataType::Timestamp(..) => timestamp_ms(t).map(Val::Timestamp),
        // As ksqlDB writes them: days since the epoch, milliseconds since midnight.
        DataType::Date32 => t.parse().ok().map(Val::Date),
        DataType::Time32(_) => t
            .parse()
            .ok()
            .filter(|ms| (0..86_400_000).contains(ms))
            .map(Val::Time),
        DataType::Decimal128(precision, scale) => {
            arrow::compute::kernels::cast_utils::parse_decimal::<arrow::datatypes::Decimal128Type>(
                t, *precision, *scale,
            )
            .ok()
            .filter(|v| {
                <arrow::datatypes::Decimal128Type as arrow::datatypes::DecimalType>::
                    validate_decimal_precision(*v, *precision, *scale)
                    .is_ok()
            })
            .map(Val::Decimal)
        }
        _ => Some(Val::Str(text.to_string())),
    };
    value.ok_or_else(|| {
        format!(
            "column {}: '{}' is not a{} {}",
            column.name(),
            compact(text),
            match column.data_type() {
                DataType::Int32 => "n",
                _ => "",
            },
            match column.data_type() {
                DataType::Timestamp(..) => "TIMESTAMP (ms since the epoch or ISO 8601)".into(),
                other => type_name(other),
            }
        )
    })
}

/// ms since the epoch, or an ISO 8601 time (as JSON reads them).
fn timestamp_ms(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s)
            .ok()
            .map(|ns| ns / 1_000_000)
    })
}

fn compact(text: &str) -> String {
    if text.len() > 40 {
        format!("{}…", &text[..text.floor_char_boundary(40)])
    } else {
        text.to_string()
    }
}

/// Whether ksqlDB's CSV printer (Apache Commons CSV, minimal quoting) quotes `text`: a record's
/// first field that starts with anything but a letter or digit; any field that starts with a
/// character up to `#` or ends with one up to a space, or holds a quote, the delimiter or a line
/// break.
fn quoted(text: &str, first: bool, delimiter: u8) -> bool {
    let (Some(start), Some(end)) = (text.chars().next(), text.chars().last()) else {
        return false;
    };
    (first && !start.is_ascii_alphanumeric())
        || start <= '#'
        || end <= ' '
        || text
            .bytes()
            .any(|b| matches!(b, b'"' | b'\n' | b'\r') || b == delimiter)
}

/// Encodes rows as DELIMITED lines, quoting only where needed and writing NULL as empty;
/// `rowtime` becomes the record's timestamp.
pub(crate) fn encode(batch: &RecordBatch, delimiter: u8) -> Result<Vec<Record>> {
    let (payload, times) = split_rowtime(batch);
    let options = FormatOptions::default().with_null("");
    // ksqlDB writes a TIMESTAMP as its milliseconds since the epoch.
    let columns = payload
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => arrow::compute::cast(c, &DataType::Int64),
            // A DATE as its days since the epoch, a TIME as its milliseconds since midnight.
            DataType::Date32 | DataType::Time32(_) => arrow::compute::cast(c, &DataType::Int32),
            _ => Ok(c.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let formatters = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut records = Vec::with_capacity(payload.num_rows());
    for (row, timestamp_ms) in times.into_iter().enumerate() {
        let mut line = Vec::new();
        for (i, f) in formatters.iter().enumerate() {
            if i > 0 {
                line.push(delimiter);
            }
            let text = f.value(row).to_string();
            if quoted(&text, i == 0, delimiter) {
                line.push(b'"');
                line.extend(text.replace('"', "\"\"").bytes());
                line.push(b'"');
            } else {
                line.extend(text.bytes());
            }
        }
        records.push(Record {
            key: None,
            payload: Some(line),
            timestamp_ms,
            partition: None,
            upstream: None,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Array, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
        TimestampMillisecondArray,
    };
    use arrow::datatypes::{Schema, TimeUnit};
    use eddy_connector::{Message, Position};

    use super::super::{ValueDecoder, ValueFormat};
    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("car", DataType::Utf8, true),
            Field::new("speed", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("n", DataType::Int32, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))
    }

    fn message(i: i64, payload: &[u8]) -> Message {
        Message {
            key: None,
            payload: payload.to_vec(),
            no_value: false,
            timestamp_ms: Some(1000 + i),
            position: Position {
                partition: 0,
                offset: i,
            },
            origin: format!("t[0]@{i}"),
            upstream: None,
        }
    }

    fn decode(delimiter: u8, lines: &[&[u8]]) -> (RecordBatch, Vec<(String, String)>) {
        let decoder =
            ValueDecoder::new(ValueFormat::Delimited { delimiter }, schema(), None).unwrap();
        let messages: Vec<Message> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| message(i as i64, l))
            .collect();
        let (batch, bad) = decoder.decode(&messages);
        (
            batch,
            bad.into_iter().map(|b| (b.origin, b.reason)).collect(),
        )
    }

    fn strings(batch: &RecordBatch, i: usize) -> Vec<Option<String>> {
        let a = batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        a.iter().map(|s| s.map(str::to_string)).collect()
    }

    #[test]
    fn decimals_dates_and_times_as_ksqldb_writes_them() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("price", DataType::Decimal128(6, 2), true),
            Field::new("day", DataType::Date32, true),
            Field::new("at", DataType::Time32(TimeUnit::Millisecond), true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let decoder =
            ValueDecoder::new(ValueFormat::Delimited { delimiter: b',' }, schema, None).unwrap();
        let messages: Vec<Message> = [&b"12.5,18263,48600000"[..], b"12345.1,1,2", b",,"]
            .iter()
            .enumerate()
            .map(|(i, l)| message(i as i64, l))
            .collect();
        let (batch, bad) = decoder.decode(&messages);
        let reasons: Vec<String> = bad.into_iter().map(|b| b.reason).collect();
        assert_eq!(reasons, ["column price: '12345.1' is not a DECIMAL(6, 2)"]);
        let lines: Vec<String> = encode(&batch, b',')
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        assert_eq!(lines, ["12.50,18263,48600000", ",,"]);
    }

    #[test]
    fn quoting_and_escaped_quotes() {
        let (batch, bad) = decode(
            b',',
            &[
                b"1,plain,1.5,true,7",
                b"2,\"a, quoted\",2.5,FALSE,8",
                b"3,\"say \"\"hi\"\"\",3,true,9\n",
            ],
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            strings(&batch, 1),
            vec![
                Some("plain".to_string()),
                Some("a, quoted".to_string()),
                Some("say \"hi\"".to_string())
            ]
        );
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1, 2, 3]);
        let speed = batch
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(speed.values(), &[1.5, 2.5, 3.0]);
        let ok = batch
            .column(3)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert_eq!(
            ok.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(true)]
        );
        let n = batch
            .column(4)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        assert_eq!(n.values(), &[7, 8, 9]);
        let rowtime = batch
            .column(5)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(
            rowtime.values(),
            &[1000, 1001, 1002],
            "the message timestamps"
        );
    }

    #[test]
    fn custom_delimiters_including_tab() {
        let (batch, bad) = decode(
            b'\t',
            &[b"1\ta,b\t1.5\ttrue\t1", b"2\t\"x\ty\"\t2\tfalse\t2"],
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            strings(&batch, 1),
            vec![Some("a,b".to_string()), Some("x\ty".to_string())]
        );
        let (batch, bad) = decode(b'|', &[b"1|a,b|1.5|true|1"]);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(strings(&batch, 1), vec![Some("a,b".to_string())]);
    }

    #[test]
    fn empty_fields_are_null() {
        let (batch, bad) = decode(b',', &[b"1,,,,", b",x,\"\",true,"]);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(strings(&batch, 1), vec![None, Some("x".to_string())]);
        for column in [0, 2, 4] {
            assert_eq!(
                batch.column(column).null_count(),
                1 + (column != 0) as usize
            );
        }
        assert_eq!(batch.column(3).null_count(), 1);
    }

    #[test]
    fn bad_lines_are_named_and_skipped() {
        let (batch, bad) = decode(
            b',',
            &[
                b"1,a,1.5,true,1",
                b"2,b,1.5",
                b"3,c,abc,true,1",
                b"4,d,1.5,yes,1",
                b"5,e,1.5,true,99999999999",
                b"6,\xff,1.5,true,1",
                b"7,g,1.5,true,1,extra",
                b"8,h,2.5,false,2",
            ],
        );
        assert_eq!(batch.num_rows(), 2);
        let reasons: Vec<&str> = bad.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons[..5],
            [
                "expected 5 fields, found 3",
                "column speed: 'abc' is not a DOUBLE",
                "column ok: 'yes' is not a BOOLEAN",
                "column n: '99999999999' is not an INT",
                reasons[4],
            ]
        );
        assert!(reasons[4].starts_with("invalid UTF-8"), "{}", reasons[4]);
        assert_eq!(reasons[5], "expected 5 fields, found 6");
        assert_eq!(bad[0].0, "t[0]@1");
    }

    #[test]
    fn encoding_quotes_as_ksqldb_does() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Utf8, true),
            Field::new(
                "rowtime",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("-10"), Some("x"), None])),
                Arc::new(Int64Array::from(vec![Some(-5), None, Some(1)])),
                Arc::new(StringArray::from(vec![
                    Some("!"),
                    Some("ends "),
                    Some("a-b"),
                ])),
                Arc::new(TimestampMillisecondArray::from(vec![0, 0, 0])),
            ],
        )
        .unwrap();
        let lines: Vec<String> = encode(&batch, b',')
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        // The first field quoted when it starts with a sign; any field starting with `!` or
        // ending in a space; not `-5` further on.
        assert_eq!(lines, ["\"-10\",-5,\"!\"", "x,,\"ends \"", ",1,a-b"]);
    }

    #[test]
    fn encoding_quotes_only_where_needed() {
        let (batch, bad) = decode(
            b',',
            &[
                b"1,\"a, b\",1.5,true,7",
                b"2,\"say \"\"hi\"\"\",,false,",
                b"3,plain,2,,",
            ],
        );
        assert!(bad.is_empty());
        let lines: Vec<String> = encode(&batch, b',')
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload.unwrap()).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                "1,\"a, b\",1.5,true,7",
                "2,\"say \"\"hi\"\"\",,false,",
                "3,plain,2.0,,"
            ]
        );
        let records = encode(&batch, b'\t').unwrap();
        assert_eq!(
            records[0].payload.as_deref(),
            Some(&b"1\ta, b\t1.5\ttrue\t7"[..])
        );
        assert_eq!(records[2].timestamp_ms, Some(1002));
        // And back again.
        let (again, bad) = decode(b',', &[lines[1].as_bytes()]);
        assert!(bad.is_empty());
        assert_eq!(strings(&again, 1), vec![Some("say \"hi\"".to_string())]);
    }
}
