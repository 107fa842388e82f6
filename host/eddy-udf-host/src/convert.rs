//! Arrow arrays to WIT columns and back.
//!
//! Inbound, a column borrows the array's buffers: the canonical ABI copies them once, straight
//! into guest memory (offsets are re-based first when the array is a slice that does not start
//! at zero). Outbound, everything the guest returns is checked before Arrow sees it: the guest
//! is not trusted to produce well-formed offsets, lengths or types.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array,
    ListArray, StringArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type};

use crate::bindings::eddy::udf::types::{
    ColumnParam, ColumnResult, ColumnValuesParam, ColumnValuesResult, ListFloat64ValuesParam,
    ListFloat64ValuesResult, RowError, Utf8ValuesParam, Utf8ValuesResult,
};
use crate::SqlType;

/// An argument array in its declared type, and the few buffers its column cannot borrow as
/// they are.
pub(crate) struct Argument {
    array: ArrayRef,
    ty: SqlType,
    /// The validity bitmap starting at the array's first row, if any row is null.
    validity: Option<Buffer>,
    /// Boolean values starting at the array's first row.
    bits: Option<Buffer>,
    /// Offsets re-based to zero, when the array's first offset is not zero.
    rebased: Option<Vec<u32>>,
}

impl Argument {
    /// Prepares `array` to be passed as `ty`, casting it when it has another type.
    pub(crate) fn new(array: &ArrayRef, ty: SqlType) -> Result<Argument, String> {
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
        // Bitmaps are re-aligned only for a slice that starts inside a byte.
        let validity = array
            .logical_nulls()
            .filter(|n| n.null_count() > 0)
            .map(|n| n.inner().sliced());
        let mut bits = None;
        let mut rebased = None;
        match ty {
            SqlType::Float64 | SqlType::Int64 => {}
            SqlType::Boolean => bits = Some(array.as_boolean().values().sliced()),
            SqlType::Utf8 => rebased = rebase(array.as_string::<i32>().value_offsets()),
            SqlType::ListFloat64 => {
                let lists = array.as_list::<i32>();
                let offsets = lists.value_offsets();
                let (start, end) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
                if lists.values().slice(start, end - start).null_count() > 0 {
                    return Err("ARRAY<DOUBLE> elements must not be null".into());
                }
                rebased = rebase(offsets);
            }
        }
        Ok(Argument {
            array,
            ty,
            validity,
            bits,
            rebased,
        })
    }

    /// The column the guest receives, borrowing this argument's buffers.
    pub(crate) fn column(&self) -> ColumnParam<'_> {
        let values = match self.ty {
            SqlType::Float64 => {
                ColumnValuesParam::Float64(self.array.as_primitive::<Float64Type>().values())
            }
            SqlType::Int64 => {
                ColumnValuesParam::Int64(self.array.as_primitive::<Int64Type>().values())
            }
            SqlType::Boolean => {
                ColumnValuesParam::Boolean(self.bits.as_ref().map_or(&[], |b| b.as_slice()))
            }
            SqlType::Utf8 => {
                let strings = self.array.as_string::<i32>();
                let (offsets, range) = self.offsets(strings.offsets());
                ColumnValuesParam::Utf8(Utf8ValuesParam {
                    offsets,
                    data: &strings.value_data()[range],
                })
            }
            SqlType::ListFloat64 => {
                let lists = self.array.as_list::<i32>();
                let (offsets, range) = self.offsets(lists.offsets());
                let values = lists.values().as_primitive::<Float64Type>().values();
                ColumnValuesParam::ListFloat64(ListFloat64ValuesParam {
                    offsets,
                    values: &values[range],
                })
            }
        };
        ColumnParam {
            len: self.array.len() as u32,
            validity: self.validity.as_ref().map(|b| b.as_slice()),
            values,
        }
    }

    /// Offsets starting at zero, and the range of the child data they span.
    fn offsets<'a>(
        &'a self,
        offsets: &'a OffsetBuffer<i32>,
    ) -> (&'a [u32], std::ops::Range<usize>) {
        let range = offsets[0] as usize..offsets[offsets.len() - 1] as usize;
        match &self.rebased {
            Some(rebased) => (rebased, range),
            // Arrow offsets are never negative: the same bits read as u32.
            None => (offsets.inner().inner().typed_data::<u32>(), range),
        }
    }
}

/// Offsets re-based to start at zero, or `None` when they already do.
fn rebase(offsets: &[i32]) -> Option<Vec<u32>> {
    let base = offsets[0];
    (base != 0).then(|| offsets.iter().map(|o| (o - base) as u32).collect())
}

fn type_of(values: &ColumnValuesResult) -> SqlType {
    match values {
        ColumnValuesResult::Float64(_) => SqlType::Float64,
        ColumnValuesResult::Int64(_) => SqlType::Int64,
        ColumnValuesResult::Boolean(_) => SqlType::Boolean,
        ColumnValuesResult::Utf8(_) => SqlType::Utf8,
        ColumnValuesResult::ListFloat64(_) => SqlType::ListFloat64,
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
    column: ColumnResult,
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
        ColumnValuesResult::Float64(v) => {
            check_len("values", v.len(), rows)?;
            Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls))
        }
        ColumnValuesResult::Int64(v) => {
            check_len("values", v.len(), rows)?;
            Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls))
        }
        ColumnValuesResult::Boolean(bits) => {
            if bits.len() < rows.div_ceil(8) {
                return Err(format!("{} bytes of booleans for {rows} rows", bits.len()));
            }
            let values = BooleanBuffer::new(Buffer::from_vec(bits), 0, rows);
            Arc::new(BooleanArray::new(values, nulls))
        }
        ColumnValuesResult::Utf8(Utf8ValuesResult { offsets: o, data }) => {
            let o = offsets(o, rows, data.len())?;
            Arc::new(
                StringArray::try_new(o, Buffer::from_vec(data), nulls)
                    .map_err(|e| format!("bad strings: {e}"))?,
            )
        }
        ColumnValuesResult::ListFloat64(ListFloat64ValuesResult { offsets: o, values }) => {
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{BooleanArray, Float64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::Float64Type;

    use super::*;

    /// A slice that starts mid-byte and mid-data: what the guest gets starts at its first row.
    #[test]
    fn a_sliced_array_is_passed_from_its_first_row() {
        let strings: ArrayRef = Arc::new(StringArray::from(vec![
            Some("ab"),
            Some("c"),
            None,
            Some("def"),
        ]));
        let strings = Argument::new(&strings.slice(1, 3), SqlType::Utf8).unwrap();
        let column = strings.column();
        let ColumnValuesParam::Utf8(utf8) = &column.values else {
            panic!("not utf8")
        };
        assert_eq!((utf8.offsets, utf8.data), (&[0, 1, 1, 4][..], &b"cdef"[..]));
        assert_eq!(column.validity, Some(&[0b101u8][..]));

        let whole: ArrayRef = Arc::new(StringArray::from(vec!["ab", "c"]));
        let whole = Argument::new(&whole, SqlType::Utf8).unwrap();
        assert!(whole.rebased.is_none(), "offsets from zero are borrowed");
        let ColumnValuesParam::Utf8(utf8) = whole.column().values else {
            panic!("not utf8")
        };
        assert_eq!((utf8.offsets, utf8.data), (&[0, 2, 3][..], &b"abc"[..]));

        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
            Some(vec![Some(1.0)]),
            Some(vec![Some(2.0), Some(3.0)]),
            Some(vec![]),
        ]));
        let lists = Argument::new(&lists.slice(1, 2), SqlType::ListFloat64).unwrap();
        let ColumnValuesParam::ListFloat64(l) = lists.column().values else {
            panic!("not a list")
        };
        assert_eq!((l.offsets, l.values), (&[0, 2, 2][..], &[2.0, 3.0][..]));

        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![
            true, false, true, true, false, false, false, false, true, true,
        ]));
        let bools = Argument::new(&bools.slice(2, 8), SqlType::Boolean).unwrap();
        let ColumnValuesParam::Boolean(bits) = bools.column().values else {
            panic!("not boolean")
        };
        assert_eq!(bits, &[0b1100_0011u8][..]);

        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]));
        let floats = Argument::new(&floats.slice(1, 2), SqlType::Float64).unwrap();
        let ColumnValuesParam::Float64(values) = floats.column().values else {
            panic!("not float64")
        };
        assert_eq!(values, &[2.0, 3.0][..]);
    }
}
