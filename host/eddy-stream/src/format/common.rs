//! What the value formats share: a decoded field, the record timestamp split off a batch,
//! names and SQL type names as ksqlDB shows them, and the event time a row gets: from a column,
//! from text read with a pattern, or from the wall clock.

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, TimeUnit};

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
    /// days since the epoch
    Date(i32),
    /// ms since midnight
    Time(i32),
    /// a DECIMAL's unscaled value
    Decimal(i128),
    Str(String),
}

impl Val {
    /// The event time this field gives, as a `timestamp` column.
    pub(crate) fn event_time(&self) -> Option<i64> {
        match self {
            Val::BigInt(v) | Val::Timestamp(v) => Some(*v),
            Val::Int(v) => Some(*v as i64),
            _ => None,
        }
    }
}

/// The latest `rowtime` of `batch`'s rows, if it has that column and a row with one.
pub(crate) fn latest_rowtime(batch: &RecordBatch) -> Option<i64> {
    batch
        .column_by_name("rowtime")?
        .as_any()
        .downcast_ref::<arrow::array::TimestampMillisecondArray>()
        .and_then(arrow::compute::max)
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

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A column type as SQL writes it (`DOUBLE`, `ARRAY<VARCHAR>`), for messages and listings.
pub(crate) fn type_name(t: &DataType) -> String {
    type_name_in(t, Spelling::Ddl)
}

/// How a type's name is spelled: one speller serves DDL listings, REST answers and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// As DDL, `SHOW` and `DESCRIBE` write it: `INT`, `VARCHAR`, `STRUCT<A INT>`.
    Ddl,
    /// As ksqlDB's REST answers do: `INTEGER`, `STRING`, `STRUCT<A INTEGER>`.
    Ksql,
    /// As ksqlDB's error messages do: like [`Spelling::Ksql`], with STRUCT fields in backticks.
    KsqlMessage,
}

/// The name of type `t`, spelled as `spelling` says.
pub fn type_name_in(t: &DataType, spelling: Spelling) -> String {
    let ksql = spelling != Spelling::Ddl;
    let inner = |t: &DataType| type_name_in(t, spelling);
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 if ksql => "INTEGER".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 if ksql => {
            "BIGINT".into()
        }
        DataType::Float32 if ksql => "DOUBLE".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::LargeUtf8 | DataType::Utf8View if ksql => "STRING".into(),
        DataType::Utf8 if ksql => "STRING".into(),
        DataType::Utf8 => "VARCHAR".into(),
        DataType::Timestamp(..) => "TIMESTAMP".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::LargeList(item) if ksql => format!("ARRAY<{}>", inner(item.data_type())),
        DataType::List(item) => format!("ARRAY<{}>", inner(item.data_type())),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::LargeBinary if ksql => "BYTES".into(),
        DataType::Binary => "BYTES".into(),
        DataType::Struct(fields) => format!(
            "STRUCT<{}>",
            fields
                .iter()
                .map(|f| {
                    let name = display_name(f.name());
                    match spelling {
                        Spelling::KsqlMessage => format!("`{name}` {}", inner(f.data_type())),
                        _ => format!("{name} {}", inner(f.data_type())),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP<{}, {}>",
                inner(kv[0].data_type()),
                inner(kv[1].data_type())
            ),
            other if ksql => other.to_string().to_uppercase(),
            other => other.to_string(),
        },
        other if ksql => other.to_string().to_uppercase(),
        other => other.to_string(),
    }
}

/// A column or relation name as ksqlDB shows it: unquoted identifiers upper-cased. DataFusion
/// lower-cases unquoted identifiers, so a name with an upper-case letter was quoted and stays.
pub fn display_name(name: &str) -> String {
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        name.to_string()
    } else {
        name.to_ascii_uppercase()
    }
}

/// Sets `rowtime` (the last column) from the VARCHAR column `column` read with the Java pattern
/// `pattern` (`timestamp_format`), where it matches; other rows keep the rowtime they have.
pub(crate) fn rowtime_from_text(
    batch: &RecordBatch,
    column: usize,
    pattern: &str,
) -> crate::Result<RecordBatch> {
    use arrow::array::StringArray;
    let last = batch.num_columns() - 1;
    let texts = batch
        .column(column)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| crate::Error::Plan("timestamp_format reads a VARCHAR column".into()))?;
    let given = batch
        .column(last)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| crate::Error::Plan("rowtime must be a TIMESTAMP".into()))?;
    let times: TimestampMillisecondArray = (0..batch.num_rows())
        .map(|i| {
            texts
                .is_valid(i)
                .then(|| eddy_sql::parse_timestamp(texts.value(i), pattern))
                .flatten()
                .or_else(|| given.is_valid(i).then(|| given.value(i)))
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[last] = std::sync::Arc::new(times);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Fills `rowtime` (the last column) where it is null, as rows inserted into a stream get it:
/// from the `timestamp` column (read with the Java `pattern` when there is one), else the
/// current time.
pub(crate) fn stamp(
    batch: RecordBatch,
    timestamp: Option<usize>,
    pattern: Option<&str>,
) -> crate::Result<RecordBatch> {
    let batch = match (pattern, timestamp) {
        (Some(pattern), Some(column)) => rowtime_from_text(&batch, column, pattern)?,
        _ => batch,
    };
    fill_rowtime(batch, timestamp)
}

/// Sets `rowtime` (the last column) from column `timestamp` (BIGINT ms or TIMESTAMP), as a
/// query's `WITH (timestamp=…)` asks; a row whose column is null gets the current time.
pub(crate) fn rowtime_from(batch: RecordBatch, timestamp: usize) -> crate::Result<RecordBatch> {
    let last = batch.num_columns() - 1;
    let mut columns = batch.columns().to_vec();
    columns[last] = arrow::array::new_null_array(columns[last].data_type(), batch.num_rows());
    fill_rowtime(
        RecordBatch::try_new(batch.schema(), columns)?,
        Some(timestamp),
    )
}

/// Fills `rowtime` (the last column) where it is null: from the event-time column when there
/// is one, else with the current time.
fn fill_rowtime(batch: RecordBatch, timestamp: Option<usize>) -> crate::Result<RecordBatch> {
    let last = batch.num_columns() - 1;
    let rowtime = batch.column(last);
    if rowtime.null_count() == 0 {
        return Ok(batch);
    }
    let given = rowtime
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| crate::Error::Plan("rowtime must be a TIMESTAMP".into()))?;
    let from_column = match timestamp {
        Some(i) => Some(arrow::compute::cast(
            batch.column(i),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?),
        None => None,
    };
    let from_column = from_column.as_ref().map(|a| {
        a.as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("cast")
    });
    let now = now_ms();
    let filled: TimestampMillisecondArray = (0..batch.num_rows())
        .map(|i| {
            if given.is_valid(i) {
                Some(given.value(i))
            } else {
                Some(
                    from_column
                        .filter(|c| c.is_valid(i))
                        .map_or(now, |c| c.value(i)),
                )
            }
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[last] = std::sync::Arc::new(filled);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}
