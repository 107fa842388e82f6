//! Arrow batches as ksqlDB rows: JSON values per column, and ksqlDB type names.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{json, Value};

/// ksqlDB's name for an Arrow type.
pub(crate) fn ksql_type(t: &DataType) -> String {
    eddy_stream::type_name_in(t, eddy_stream::Spelling::Ksql)
}

/// ksqlDB's `SchemaInfo` of a column type, as DESCRIBE lists it: a STRUCT carries its fields, an
/// ARRAY or MAP its member (a MAP's value; ksqlDB's map keys are strings), a DECIMAL its
/// precision and scale.
pub(crate) fn schema_info(t: &DataType) -> Value {
    let plain = |name: String| json!({"type": name, "fields": null, "memberSchema": null});
    match t {
        DataType::List(f) | DataType::LargeList(f) => {
            json!({"type": "ARRAY", "fields": null, "memberSchema": schema_info(f.data_type())})
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                json!({"type": "MAP", "fields": null, "memberSchema": schema_info(kv[1].data_type())})
            }
            _ => plain("MAP".into()),
        },
        DataType::Struct(fields) => {
            let fields: Vec<Value> = fields
                .iter()
                .map(|f| {
                    json!({"name": eddy_stream::display_name(f.name()), "schema": schema_info(f.data_type())})
                })
                .collect();
            json!({"type": "STRUCT", "fields": fields, "memberSchema": null})
        }
        DataType::Decimal128(precision, scale) => json!({
            "type": "DECIMAL", "fields": null, "memberSchema": null,
            "parameters": {"precision": precision, "scale": scale},
        }),
        other => plain(ksql_type(other)),
    }
}

/// ksqlDB's name for an Eddy SQL type name (`VARCHAR` → `STRING`, `INT` → `INTEGER`).
/// Whole words only, so `STRUCT<A INT, B VARCHAR>` becomes `STRUCT<A INTEGER, B STRING>`.
pub(crate) fn ksql_type_name(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "VARCHAR" => "STRING",
            "INT" => "INTEGER",
            other => other,
        });
        word.clear();
    };
    for c in sql.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The columns a client sees: a trailing `rowtime` is Eddy's, not the user's, unless asked for.
pub(crate) fn visible_fields(schema: &Schema, sql: &str) -> Vec<usize> {
    let wants_rowtime = names_rowtime(sql);
    (0..schema.fields().len())
        .filter(|&i| wants_rowtime || !schema.field(i).name().eq_ignore_ascii_case("rowtime"))
        .collect()
}

/// Column names, upper-cased as ksqlDB reports them.
pub(crate) fn column_names(schema: &Schema, columns: &[usize]) -> Vec<String> {
    columns
        .iter()
        .map(|&i| eddy_stream::display_name(schema.field(i).name()))
        .collect()
}

/// Column types, ksqlDB's names.
pub(crate) fn column_types(schema: &Schema, columns: &[usize]) -> Vec<String> {
    columns
        .iter()
        .map(|&i| ksql_type(schema.field(i).data_type()))
        .collect()
}

/// The `/query` header's schema string: `` `A` STRING, `B` DOUBLE ``.
pub(crate) fn schema_string(schema: &Schema, columns: &[usize]) -> String {
    columns
        .iter()
        .map(|&i| {
            let f: &Field = schema.field(i);
            format!(
                "`{}` {}",
                eddy_stream::display_name(f.name()),
                ksql_type(f.data_type())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each row of `batch` as JSON values of `columns`.
pub(crate) fn rows(batch: &RecordBatch, columns: &[usize]) -> Vec<Vec<Value>> {
    let values: Vec<Vec<Value>> = columns.iter().map(|&i| column(batch.column(i))).collect();
    (0..batch.num_rows())
        .map(|r| values.iter().map(|c| c[r].clone()).collect())
        .collect()
}

fn column(array: &dyn Array) -> Vec<Value> {
    use arrow::datatypes::*;
    let n = array.len();
    let each = |f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if array.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    match array.data_type() {
        DataType::Boolean => each(&|i| json!(array.as_boolean().value(i))),
        DataType::Int8 => each(&|i| json!(array.as_primitive::<Int8Type>().value(i))),
        DataType::Int16 => each(&|i| json!(array.as_primitive::<Int16Type>().value(i))),
        DataType::Int32 => each(&|i| json!(array.as_primitive::<Int32Type>().value(i))),
        DataType::Int64 => each(&|i| json!(array.as_primitive::<Int64Type>().value(i))),
        DataType::UInt8 => each(&|i| json!(array.as_primitive::<UInt8Type>().value(i))),
        DataType::UInt16 => each(&|i| json!(array.as_primitive::<UInt16Type>().value(i))),
        DataType::UInt32 => each(&|i| json!(array.as_primitive::<UInt32Type>().value(i))),
        DataType::UInt64 => each(&|i| json!(array.as_primitive::<UInt64Type>().value(i))),
        DataType::Float32 => each(&|i| json!(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => each(&|i| json!(array.as_primitive::<Float64Type>().value(i))),
        DataType::Utf8 => each(&|i| json!(array.as_string::<i32>().value(i))),
        DataType::LargeUtf8 => each(&|i| json!(array.as_string::<i64>().value(i))),
        // ksqlDB's JSON carries timestamps as milliseconds since the epoch.
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            each(&|i| json!(array.as_primitive::<TimestampMillisecondType>().value(i)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            each(&|i| json!(array.as_primitive::<TimestampMicrosecondType>().value(i) / 1000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            each(&|i| json!(array.as_primitive::<TimestampNanosecondType>().value(i) / 1_000_000))
        }
        DataType::Timestamp(TimeUnit::Second, _) => {
            each(&|i| json!(array.as_primitive::<TimestampSecondType>().value(i) * 1000))
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            each(&|i| Value::Array(column(list.value(i).as_ref())))
        }
        // As ksqlDB's JSON has them: a STRUCT is an object under display names, a MAP an object.
        DataType::Struct(fields) => {
            let children: Vec<Vec<Value>> = array
                .as_struct()
                .columns()
                .iter()
                .map(|c| column(c.as_ref()))
                .collect();
            each(&|i| {
                Value::Object(
                    fields
                        .iter()
                        .zip(&children)
                        .map(|(f, c)| (eddy_stream::display_name(f.name()), c[i].clone()))
                        .collect(),
                )
            })
        }
        DataType::Map(..) => {
            let map = array.as_map();
            each(&|i| {
                let entries = map.value(i);
                let values = column(entries.column(1).as_ref());
                let keys = column(entries.column(0).as_ref());
                Value::Object(
                    keys.into_iter()
                        .zip(values)
                        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v))
                        .collect(),
                )
            })
        }
        DataType::Decimal128(..) => match ArrayFormatter::try_new(array, &FormatOptions::default())
        {
            Ok(formatter) => each(&|i| {
                let text = formatter.value(i).to_string();
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }),
            Err(_) => vec![Value::Null; n],
        },
        _ => match ArrayFormatter::try_new(array, &FormatOptions::default()) {
            Ok(formatter) => each(&|i| json!(formatter.value(i).to_string())),
            Err(_) => vec![Value::Null; n],
        },
    }
}

/// Whether `sql` names `rowtime` (as an identifier, quoted or not): a string literal or a
/// longer name holding the word does not count.
fn names_rowtime(sql: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    match Tokenizer::new(&GenericDialect {}, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case("rowtime"))),
        // The statement ran, so it tokenizes; if not, keep the column rather than hide it.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rowtime_shows_only_when_named() {
        assert!(names_rowtime("SELECT car, ROWTIME FROM s EMIT CHANGES"));
        assert!(names_rowtime("SELECT \"rowtime\" FROM s"));
        assert!(!names_rowtime("SELECT * FROM s"));
        assert!(!names_rowtime("SELECT car FROM s WHERE note = 'rowtime'"));
        assert!(!names_rowtime("SELECT my_rowtime_copy FROM s"));
    }

    #[test]
    fn structured_types_are_spelled_as_ksqldb_does() {
        assert_eq!(
            ksql_type_name("STRUCT<A INT, B VARCHAR, POINT ARRAY<INT>>"),
            "STRUCT<A INTEGER, B STRING, POINT ARRAY<INTEGER>>"
        );
        assert_eq!(ksql_type_name("MAP<VARCHAR, INT>"), "MAP<STRING, INTEGER>");
        let point = DataType::Struct(
            vec![
                Field::new("x", DataType::Int32, true),
                Field::new("label", DataType::Utf8, true),
            ]
            .into(),
        );
        assert_eq!(ksql_type(&point), "STRUCT<X INTEGER, LABEL STRING>");
    }
}
