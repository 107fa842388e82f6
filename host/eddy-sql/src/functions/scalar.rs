//! One shape for every ksqlDB scalar function: a name, a signature, a return type and a body
//! over whole arrays, so each function is a few lines in its family's file.

use std::hash::{Hash, Hasher};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// The return type, from the argument types.
pub(crate) type Returns = fn(&[DataType]) -> Result<DataType>;
/// The body: argument arrays (each as long as the batch) and the batch's length, to the result.
pub(crate) type Body = fn(&[ArrayRef], usize) -> Result<ArrayRef>;

/// A ksqlDB scalar function.
#[derive(Debug)]
pub(crate) struct Ksql {
    name: &'static str,
    signature: Signature,
    returns: Returns,
    body: Body,
}

impl Ksql {
    /// A function taking any of `forms` (lists of exact argument types, coerced to).
    pub(crate) fn new(
        name: &'static str,
        forms: Vec<Vec<DataType>>,
        returns: Returns,
        body: Body,
    ) -> Ksql {
        let signature = Signature::one_of(
            forms.into_iter().map(TypeSignature::Exact).collect(),
            Volatility::Immutable,
        );
        Ksql::with_signature(name, signature, returns, body)
    }

    /// A function with a signature of its own.
    pub(crate) fn with_signature(
        name: &'static str,
        signature: Signature,
        returns: Returns,
        body: Body,
    ) -> Ksql {
        Ksql {
            name,
            signature,
            returns,
            body,
        }
    }
}

// Two functions are the same when their names are: a name is registered once.
impl PartialEq for Ksql {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Ksql {}

impl Hash for Ksql {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for Ksql {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        (self.returns)(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let result = (self.body)(&arrays, args.number_rows)?;
        Ok(ColumnarValue::Array(result))
    }
}

/// A [`Returns`] for a fixed type.
macro_rules! returns {
    ($t:expr) => {
        |_: &[DataType]| -> datafusion::common::Result<DataType> { Ok($t) }
    };
}
pub(crate) use returns;
