//! Reading argument columns and building the result column, so a UDF body sees plain values.
//!
//! Columns arrive in Arrow's layout (see `wit/udf.wit`); readers validate a column once per
//! batch so the per-row path is an index and a bit test.

use crate::bindings::eddy::udf::types::{
    Column, ColumnValues, ListFloat64Values, RowError, ScalarResult, Utf8Values,
};
use crate::DataType;

/// A type a `#[udf]` function can take as an argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[udf] argument type",
    label = "not a SQL type #[udf] can take",
    note = "supported argument types: f64 (DOUBLE), i64 (BIGINT), bool (BOOLEAN), &str or String (VARCHAR), &[f64] or Vec<f64> (DOUBLE[]); wrap one in Option<T> to receive SQL NULLs"
)]
pub trait Arg<'a>: Sized {
    /// The SQL type of the parameter.
    const DATA_TYPE: DataType;
    /// Borrowed, validated view of one column.
    type Reader;
    /// Checks the column's type and shape once per batch.
    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String>;
    /// The value of `row`, or `None` when it is null.
    fn read(reader: &Self::Reader, row: usize) -> Option<Self>;
    /// A column without nulls, read by index with no check per row (`f64`, `i64`); [`NoDense`]
    /// for the types that are always read with [`Arg::read`].
    #[doc(hidden)]
    type Dense: Copy;
    /// The dense view of a batch of `rows` rows, when the column has no nulls.
    #[doc(hidden)]
    fn dense(reader: &Self::Reader, rows: usize) -> Option<Self::Dense>;
    /// The value of `row` from a dense view.
    #[doc(hidden)]
    fn read_dense(dense: Self::Dense, row: usize) -> Self;
}

/// The dense view of a type that has none: it cannot be made, so it is never read.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum NoDense {}

/// The [`Arg`] items of a type read only with [`Arg::read`].
macro_rules! no_dense {
    () => {
        type Dense = NoDense;
        fn dense(_: &Self::Reader, _: usize) -> Option<NoDense> {
            None
        }
        fn read_dense(dense: NoDense, _: usize) -> Self {
            match dense {}
        }
    };
}

/// A validated column: values plus the optional validity bitmap.
#[doc(hidden)]
pub struct Reader<'a, V> {
    values: V,
    validity: Option<&'a [u8]>,
}

impl<V> Reader<'_, V> {
    #[inline]
    fn valid(&self, row: usize) -> bool {
        self.validity
            .is_none_or(|bits| bits[row >> 3] & (1 << (row & 7)) != 0)
    }
}

fn type_name(values: &ColumnValues) -> &'static str {
    match values {
        ColumnValues::Float64(_) => "DOUBLE",
        ColumnValues::Int64(_) => "BIGINT",
        ColumnValues::Boolean(_) => "BOOLEAN",
        ColumnValues::Utf8(_) => "VARCHAR",
        ColumnValues::ListFloat64(_) => "DOUBLE[]",
    }
}

fn mismatch(expected: &str, column: &Column) -> String {
    format!(
        "expected a {expected} column, got {}",
        type_name(&column.values)
    )
}

/// Checks the row count and validity bitmap shared by every column type.
fn validity(column: &Column, rows: usize) -> Result<Option<&[u8]>, String> {
    if column.len as usize != rows {
        return Err(format!("column has {} rows, batch has {rows}", column.len));
    }
    match &column.validity {
        Some(bits) if bits.len() < rows.div_ceil(8) => Err(format!(
            "validity bitmap has {} bytes, {rows} rows need {}",
            bits.len(),
            rows.div_ceil(8)
        )),
        Some(bits) => Ok(Some(bits)),
        None => Ok(None),
    }
}

fn check_offsets(offsets: &[u32], rows: usize, data_len: usize) -> Result<(), String> {
    if offsets.len() != rows + 1 {
        return Err(format!("{} offsets for {rows} rows", offsets.len()));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) || offsets[rows] as usize > data_len {
        return Err("offsets are not increasing within the data".to_string());
    }
    Ok(())
}

macro_rules! primitive_arg {
    ($t:ty, $variant:ident, $sql:literal) => {
        impl<'a> Arg<'a> for $t {
            const DATA_TYPE: DataType = DataType::$variant;
            type Reader = Reader<'a, &'a [$t]>;

            fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
                let ColumnValues::$variant(values) = &column.values else {
                    return Err(mismatch($sql, column));
                };
                let validity = validity(column, rows)?;
                if values.len() != rows {
                    return Err(format!("{} values for {rows} rows", values.len()));
                }
                Ok(Reader { values, validity })
            }

            #[inline]
            fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
                reader.valid(row).then(|| reader.values[row])
            }

            type Dense = &'a [$t];

            #[inline]
            fn dense(reader: &Self::Reader, rows: usize) -> Option<&'a [$t]> {
                // Exactly `rows` long, so indexing below `rows` needs no bounds check.
                reader.validity.is_none().then(|| &reader.values[..rows])
            }

            #[inline]
            fn read_dense(dense: &'a [$t], row: usize) -> Self {
                dense[row]
            }
        }
    };
}

primitive_arg!(f64, Float64, "DOUBLE");
primitive_arg!(i64, Int64, "BIGINT");

impl<'a> Arg<'a> for bool {
    const DATA_TYPE: DataType = DataType::Boolean;
    type Reader = Reader<'a, &'a [u8]>;

    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
        let ColumnValues::Boolean(bits) = &column.values else {
            return Err(mismatch("BOOLEAN", column));
        };
        let validity = validity(column, rows)?;
        if bits.len() < rows.div_ceil(8) {
            return Err(format!("{} bytes of booleans for {rows} rows", bits.len()));
        }
        Ok(Reader {
            values: bits,
            validity,
        })
    }

    #[inline]
    fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
        reader
            .valid(row)
            .then(|| reader.values[row >> 3] & (1 << (row & 7)) != 0)
    }

    no_dense!();
}

impl<'a> Arg<'a> for &'a str {
    const DATA_TYPE: DataType = DataType::Utf8;
    type Reader = Reader<'a, (&'a [u32], &'a str)>;

    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
        let ColumnValues::Utf8(Utf8Values { offsets, data }) = &column.values else {
            return Err(mismatch("VARCHAR", column));
        };
        let validity = validity(column, rows)?;
        check_offsets(offsets, rows, data.len())?;
        // One UTF-8 check per batch; rows are then sliced at (checked) char boundaries.
        let text = std::str::from_utf8(data).map_err(|e| format!("invalid UTF-8: {e}"))?;
        Ok(Reader {
            values: (offsets, text),
            validity,
        })
    }

    #[inline]
    fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
        let (offsets, text) = reader.values;
        if !reader.valid(row) {
            return None;
        }
        // A split inside a character cannot come from Arrow; treat it as empty rather than trap.
        Some(
            text.get(offsets[row] as usize..offsets[row + 1] as usize)
                .unwrap_or(""),
        )
    }

    no_dense!();
}

impl<'a> Arg<'a> for String {
    const DATA_TYPE: DataType = DataType::Utf8;
    type Reader = <&'a str as Arg<'a>>::Reader;

    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
        <&'a str>::reader(column, rows)
    }

    #[inline]
    fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
        <&'a str>::read(reader, row).map(str::to_owned)
    }

    no_dense!();
}

impl<'a> Arg<'a> for &'a [f64] {
    const DATA_TYPE: DataType = DataType::ListFloat64;
    type Reader = Reader<'a, (&'a [u32], &'a [f64])>;

    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
        let ColumnValues::ListFloat64(ListFloat64Values { offsets, values }) = &column.values
        else {
            return Err(mismatch("DOUBLE[]", column));
        };
        let validity = validity(column, rows)?;
        check_offsets(offsets, rows, values.len())?;
        Ok(Reader {
            values: (offsets, values),
            validity,
        })
    }

    #[inline]
    fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
        let (offsets, values) = reader.values;
        reader
            .valid(row)
            .then(|| &values[offsets[row] as usize..offsets[row + 1] as usize])
    }

    no_dense!();
}

impl<'a> Arg<'a> for Vec<f64> {
    const DATA_TYPE: DataType = DataType::ListFloat64;
    type Reader = <&'a [f64] as Arg<'a>>::Reader;

    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
        <&'a [f64]>::reader(column, rows)
    }

    #[inline]
    fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
        <&'a [f64]>::read(reader, row).map(<[f64]>::to_vec)
    }

    no_dense!();
}

/// `Option<T>` lets the function see nulls instead of being skipped for them.
impl<'a, T: Arg<'a>> Arg<'a> for Option<T> {
    const DATA_TYPE: DataType = T::DATA_TYPE;
    type Reader = T::Reader;

    fn reader(column: &'a Column, rows: usize) -> Result<Self::Reader, String> {
        T::reader(column, rows)
    }

    #[inline]
    fn read(reader: &Self::Reader, row: usize) -> Option<Self> {
        Some(T::read(reader, row))
    }

    type Dense = T::Dense;

    #[inline]
    fn dense(reader: &Self::Reader, rows: usize) -> Option<T::Dense> {
        T::dense(reader, rows)
    }

    #[inline]
    fn read_dense(dense: T::Dense, row: usize) -> Self {
        Some(T::read_dense(dense, row))
    }
}

/// A plain value a `#[udf]` function can return.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[udf] result type",
    label = "not a SQL type #[udf] can return",
    note = "supported result values: f64 (DOUBLE), i64 (BIGINT), bool (BOOLEAN), String (VARCHAR), Vec<f64> (DOUBLE[]), each alone or in Option<T> or Result<T, E: Display>"
)]
pub trait RetValue: Sized {
    /// The SQL type of the result.
    const DATA_TYPE: DataType;
    /// Where results accumulate.
    #[doc(hidden)]
    type Buffer: ValueBuffer;
    /// Appends this value.
    #[doc(hidden)]
    fn push_to(self, buffer: &mut Self::Buffer);
}

/// Accumulates result values of one type.
#[doc(hidden)]
pub trait ValueBuffer {
    /// An empty buffer for `rows` rows.
    fn with_capacity(rows: usize) -> Self;
    /// Appends a placeholder for a null row.
    fn push_null(&mut self);
    /// The finished values.
    fn finish(self) -> ColumnValues;
}

macro_rules! primitive_ret {
    ($t:ty, $variant:ident) => {
        impl ValueBuffer for Vec<$t> {
            fn with_capacity(rows: usize) -> Self {
                Vec::with_capacity(rows)
            }
            #[inline]
            fn push_null(&mut self) {
                self.push(<$t>::default());
            }
            fn finish(self) -> ColumnValues {
                ColumnValues::$variant(self)
            }
        }

        impl RetValue for $t {
            const DATA_TYPE: DataType = DataType::$variant;
            type Buffer = Vec<$t>;
            #[inline]
            fn push_to(self, buffer: &mut Vec<$t>) {
                buffer.push(self);
            }
        }
    };
}

primitive_ret!(f64, Float64);
primitive_ret!(i64, Int64);

/// Booleans packed as bits.
#[doc(hidden)]
pub struct BoolBuffer {
    bits: Vec<u8>,
    len: usize,
}

impl ValueBuffer for BoolBuffer {
    fn with_capacity(rows: usize) -> Self {
        BoolBuffer {
            bits: vec![0; rows.div_ceil(8)],
            len: 0,
        }
    }
    #[inline]
    fn push_null(&mut self) {
        false.push_to(self);
    }
    fn finish(self) -> ColumnValues {
        ColumnValues::Boolean(self.bits)
    }
}

impl RetValue for bool {
    const DATA_TYPE: DataType = DataType::Boolean;
    type Buffer = BoolBuffer;
    #[inline]
    fn push_to(self, buffer: &mut BoolBuffer) {
        if buffer.len >> 3 == buffer.bits.len() {
            buffer.bits.push(0);
        }
        if self {
            buffer.bits[buffer.len >> 3] |= 1 << (buffer.len & 7);
        }
        buffer.len += 1;
    }
}

/// Strings as offsets into one byte buffer.
#[doc(hidden)]
pub struct Utf8Buffer {
    offsets: Vec<u32>,
    data: Vec<u8>,
}

impl ValueBuffer for Utf8Buffer {
    fn with_capacity(rows: usize) -> Self {
        let mut offsets: Vec<u32> = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Utf8Buffer {
            offsets,
            data: Vec::new(),
        }
    }
    #[inline]
    fn push_null(&mut self) {
        self.offsets.push(self.data.len() as u32);
    }
    fn finish(self) -> ColumnValues {
        ColumnValues::Utf8(Utf8Values {
            offsets: self.offsets,
            data: self.data,
        })
    }
}

impl RetValue for String {
    const DATA_TYPE: DataType = DataType::Utf8;
    type Buffer = Utf8Buffer;
    #[inline]
    fn push_to(self, buffer: &mut Utf8Buffer) {
        buffer.data.extend_from_slice(self.as_bytes());
        buffer.push_null();
    }
}

/// Float lists as offsets into one value buffer.
#[doc(hidden)]
pub struct ListBuffer {
    offsets: Vec<u32>,
    values: Vec<f64>,
}

impl ValueBuffer for ListBuffer {
    fn with_capacity(rows: usize) -> Self {
        let mut offsets: Vec<u32> = Vec::with_capacity(rows + 1);
        offsets.push(0);
        ListBuffer {
            offsets,
            values: Vec::new(),
        }
    }
    #[inline]
    fn push_null(&mut self) {
        self.offsets.push(self.values.len() as u32);
    }
    fn finish(self) -> ColumnValues {
        ColumnValues::ListFloat64(ListFloat64Values {
            offsets: self.offsets,
            values: self.values,
        })
    }
}

impl RetValue for Vec<f64> {
    const DATA_TYPE: DataType = DataType::ListFloat64;
    type Buffer = ListBuffer;
    #[inline]
    fn push_to(self, buffer: &mut ListBuffer) {
        buffer.values.extend_from_slice(&self);
        buffer.push_null();
    }
}

/// The result column under construction, with its validity bitmap and row errors.
pub struct Output<T: RetValue> {
    values: T::Buffer,
    validity: Vec<u8>,
    has_nulls: bool,
    len: usize,
    errors: Vec<RowError>,
}

impl<T: RetValue> Output<T> {
    /// An empty output for a batch of `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Output {
            values: T::Buffer::with_capacity(rows),
            validity: vec![0xff; rows.div_ceil(8)],
            has_nulls: false,
            len: 0,
            errors: Vec::new(),
        }
    }

    /// An output of `len` rows, none null, from their values.
    fn from_values(values: T::Buffer, len: usize) -> Self {
        Output {
            values,
            validity: vec![0xff; len.div_ceil(8)],
            has_nulls: false,
            len,
            errors: Vec::new(),
        }
    }

    /// Appends a value.
    #[inline]
    pub fn push_value(&mut self, value: T) {
        value.push_to(&mut self.values);
        self.len += 1;
    }

    /// Appends a null.
    #[inline]
    pub fn push_null(&mut self) {
        if self.len >> 3 == self.validity.len() {
            self.validity.push(0xff);
        }
        self.validity[self.len >> 3] &= !(1 << (self.len & 7));
        self.has_nulls = true;
        self.values.push_null();
        self.len += 1;
    }

    /// Appends a null and records why this row failed.
    pub fn push_error(&mut self, message: String) {
        self.errors.push(RowError {
            row: self.len as u32,
            message,
        });
        self.push_null();
    }

    /// The finished column and row errors.
    pub fn finish(self) -> ScalarResult {
        ScalarResult {
            column: Column {
                len: self.len as u32,
                validity: self.has_nulls.then_some(self.validity),
                values: self.values.finish(),
            },
            row_errors: self.errors,
        }
    }
}

/// What a `#[udf]` function can return: a value, `Option` of one, or `Result` of either.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a #[udf] return type",
    label = "not a SQL type #[udf] can return",
    note = "supported return types: f64 (DOUBLE), i64 (BIGINT), bool (BOOLEAN), String (VARCHAR), Vec<f64> (DOUBLE[]); or Option<T> of one (None is NULL), or Result<T, E: Display> (an Err makes that row NULL and reports a row error)"
)]
pub trait Ret {
    /// The plain value type inside.
    type Value: RetValue;
    /// Appends this result to the output.
    fn push(self, out: &mut Output<Self::Value>);
    /// The output of a batch of `rows` rows whose arguments have no nulls: `f(row)` for each.
    /// Plain `f64` and `i64` results collect into their column in one loop the compiler can
    /// vectorise; other results are pushed row by row.
    #[doc(hidden)]
    #[inline]
    fn collect_dense(rows: usize, mut f: impl FnMut(usize) -> Self) -> Output<Self::Value>
    where
        Self: Sized,
    {
        let mut out = Output::with_capacity(rows);
        for row in 0..rows {
            f(row).push(&mut out);
        }
        out
    }
}

/// `Ret` for plain values; those after `;` also collect a dense batch in one loop.
macro_rules! plain_ret {
    (@impl $t:ty { $($dense:item)? }) => {
        impl Ret for $t {
            type Value = $t;
            #[inline]
            fn push(self, out: &mut Output<$t>) {
                out.push_value(self);
            }
            $($dense)?
        }
    };
    ($($t:ty),*; $($d:ty),*) => {
        $(plain_ret!(@impl $t {});)*
        $(plain_ret!(@impl $d {
            #[inline]
            fn collect_dense(rows: usize, f: impl FnMut(usize) -> Self) -> Output<$d> {
                Output::from_values((0..rows).map(f).collect(), rows)
            }
        });)*
    };
}

plain_ret!(bool, String, Vec<f64>; f64, i64);

impl<T: RetValue> Ret for Option<T> {
    type Value = T;
    #[inline]
    fn push(self, out: &mut Output<T>) {
        match self {
            Some(v) => out.push_value(v),
            None => out.push_null(),
        }
    }
}

impl<T: Ret, E: std::fmt::Display> Ret for Result<T, E> {
    type Value = T::Value;
    #[inline]
    fn push(self, out: &mut Output<T::Value>) {
        match self {
            Ok(v) => v.push(out),
            Err(e) => out.push_error(e.to_string()),
        }
    }
}
