//! Arrow batches as ksqlDB rows: JSON values per column, and ksqlDB type names.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{json, Value};

/// ksqlDB's name for an Arrow type.
pub(crate) fn ksql_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "INTEGER".into(),
        DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "BIGINT".into(),
        DataType::Float32 | DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Timestamp(..) => "TIMESTAMP".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::List(f) | DataType::LargeList(f) => {
            format!("ARRAY<{}>", ksql_type(f.data_type()))
        }
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Binary | DataType::LargeBinary => "BYTES".into(),
        other => other.to_string().to_uppercase(),
    }
}

/// ksqlDB's name for an Eddy SQL type name (`VARCHAR` → `STRING`, `INT` → `INTEGER`).
pub(crate) fn ksql_type_name(sql: &str) -> String {
    match sql {
        "VARCHAR" => "STRING".into(),
        "INT" => "INTEGER".into(),
        other => other.replace("VARCHAR", "STRING"),
    }
}

/// The columns a client sees: a trailing `rowtime` is Eddy's, not the user's, unless asked for.
pub(crate) fn visible_fields(schema: &Schema, sql: &str) -> Vec<usize> {
    let wants_rowtime = sql.to_lowercase().contains("rowtime");
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
        _ => match ArrayFormatter::try_new(array, &FormatOptions::default()) {
            Ok(formatter) => each(&|i| json!(formatter.value(i).to_string())),
            Err(_) => vec![Value::Null; n],
        },
    }
}
