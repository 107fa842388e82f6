//! Arrow arrays to WIT columns and back.
//!
//! Inbound, a column is one copy of Arrow's buffers (re-based when the array is a slice).
//! Outbound, everything the guest returns is checked before Arrow sees it: the guest is not
//! trusted to produce well-formed offsets, lengths or types.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array,
    ListArray, StringArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type};

use crate::bindings::eddy::udf::types::{
    Column, ColumnValues, ListFloat64Values, RowError, Utf8Values,
};
use crate::SqlType;

/// Offsets of rows `0..len` re-based to start at zero, and the range of the child data they span.
fn rebase(offsets: &[i32]) -> (Vec<u32>, std::ops::Range<usize>) {
    let base = offsets[0];
    let rebased = offsets.iter().map(|o| (o - base) as u32).collect();
    (rebased, base as usize..offsets[offsets.len() - 1] as usize)
}

/// Converts an argument array to the column type the function declared.
pub(crate) fn to_wit(array: &ArrayRef, ty: SqlType) -> Result<Column, String> {
    let target = ty.arrow_type();
    let array = if array.data_type() == &target {
        array.clone()
    } else {
        cast(array, &target).map_err(|e| {
            format!(
                "cannot pass {} as {}: {e}",
                array.data_type(),
                ty.sql_name()
            )
        })?
    };
    let validity = array
        .logical_nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| n.inner().sliced().as_slice().to_vec());
    let values = match ty {
        SqlType::Float64 => {
            ColumnValues::Float64(array.as_primitive::<Float64Type>().values().to_vec())
        }
        SqlType::Int64 => ColumnValues::Int64(array.as_primitive::<Int64Type>().values().to_vec()),
        SqlType::Boolean => {
            ColumnValues::Boolean(array.as_boolean().values().sliced().as_slice().to_vec())
        }
        SqlType::Utf8 => {
            let strings = array.as_string::<i32>();
            let (offsets, range) = rebase(strings.value_offsets());
            ColumnValues::Utf8(Utf8Values {
                offsets,
                data: strings.value_data()[range].to_vec(),
            })
        }
        SqlType::ListFloat64 => {
            let lists = array.as_list::<i32>();
            let (offsets, range) = rebase(lists.value_offsets());
            let values = lists.values().as_primitive::<Float64Type>();
            let inner = values.slice(range.start, range.len());
            if inner.null_count() > 0 {
                return Err("ARRAY<DOUBLE> elements must not be null".into());
            }
            ColumnValues::ListFloat64(ListFloat64Values {
                offsets,
                values: inner.values().to_vec(),
            })
        }
    };
    Ok(Column {
        len: array.len() as u32,
        validity,
        values,
    })
}

fn type_of(values: &ColumnValues) -> SqlType {
    match values {
        ColumnValues::Float64(_) => SqlType::Float64,
        ColumnValues::Int64(_) => SqlType::Int64,
        ColumnValues::Boolean(_) => SqlType::Boolean,
        ColumnValues::Utf8(_) => SqlType::Utf8,
        ColumnValues::ListFloat64(_) => SqlType::ListFloat64,
    }
}

fn check_len(what: &str, actual: usize, rows: usize) -> Result<(), String> {
    if actual == rows {
        Ok(())
    } else {
        Err(format!("{actual} {what} for {rows} rows"))
    }
}

fn offsets(offsets: Vec<u32>, rows: usize, child_len: usize) -> Result<OffsetBuffer<i32>, String> {
    check_len("offsets", offsets.len(), rows + 1)?;
    let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
    let last = offsets[rows] as usize;
    if !ordered || last > child_len || last > i32::MAX as usize {
        return Err("offsets are not increasing within the data".into());
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(
        offsets.into_iter().map(|o| o as i32).collect::<Vec<_>>(),
    )))
}

/// Checks and converts a guest's result column; rows with errors become null.
pub(crate) fn from_wit(
    column: Column,
    errors: &[RowError],
    ty: SqlType,
    rows: usize,
) -> Result<ArrayRef, String> {
    if column.len as usize != rows {
        return Err(format!("{} rows for a batch of {rows}", column.len));
    }
    if type_of(&column.values) != ty {
        return Err(format!(
            "it declared {} but returned {}",
            ty.sql_name(),
            type_of(&column.values).sql_name()
        ));
    }
    let mut valid = BooleanBufferBuilder::new(rows);
    match &column.validity {
        Some(bits) if bits.len() < rows.div_ceil(8) => {
            return Err(format!(
                "validity bitmap of {} bytes for {rows} rows",
                bits.len()
            ))
        }
        Some(bits) => valid.append_packed_range(0..rows, bits),
        None => valid.append_n(rows, true),
    }
    for e in errors {
        if (e.row as usize) < rows {
            valid.set_bit(e.row as usize, false);
        } else {
            return Err(format!("row error for row {} of {rows}", e.row));
        }
    }
    let nulls = Some(NullBuffer::new(valid.finish())).filter(|n| n.null_count() > 0);
    let array: ArrayRef = match column.values {
        ColumnValues::Float64(v) => {
            check_len("values", v.len(), rows)?;
            Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls))
        }
        ColumnValues::Int64(v) => {
            check_len("values", v.len(), rows)?;
            Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls))
        }
        ColumnValues::Boolean(bits) => {
            if bits.len() < rows.div_ceil(8) {
                return Err(format!("{} bytes of booleans for {rows} rows", bits.len()));
            }
            let values = BooleanBuffer::new(Buffer::from_vec(bits), 0, rows);
            Arc::new(BooleanArray::new(values, nulls))
        }
        ColumnValues::Utf8(Utf8Values { offsets: o, data }) => {
            let o = offsets(o, rows, data.len())?;
            Arc::new(
                StringArray::try_new(o, Buffer::from_vec(data), nulls)
                    .map_err(|e| format!("bad strings: {e}"))?,
            )
        }
        ColumnValues::ListFloat64(ListFloat64Values { offsets: o, values }) => {
            let o = offsets(o, rows, values.len())?;
            let field = Arc::new(Field::new_list_field(DataType::Float64, true));
            Arc::new(
                ListArray::try_new(field, o, Arc::new(Float64Array::from(values)), nulls)
                    .map_err(|e| format!("bad lists: {e}"))?,
            )
        }
    };
    Ok(array)
}
