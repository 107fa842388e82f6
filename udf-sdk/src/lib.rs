//! Write Eddy UDFs as plain Rust functions.
//!
//! ```ignore
//! use eddy_udf::udf;
//!
//! /// Converts degrees Celsius to degrees Fahrenheit.
//! #[udf]
//! fn celsius_to_fahrenheit(c: f64) -> f64 {
//!     c * 9.0 / 5.0 + 32.0
//! }
//!
//! eddy_udf::export!(celsius_to_fahrenheit);
//! ```
//!
//! Argument types: `f64`, `i64`, `bool`, `&str`/`String`, `&[f64]`/`Vec<f64>`. A SQL null in a
//! plain argument makes the result null without calling the function; take `Option<T>` to see
//! nulls yourself. Return `T`, `Option<T>` (None is null) or `Result<T, E: Display>` (an `Err`
//! makes that row null and reports the message to the host as a row error).
#![deny(missing_docs)]

mod column;
pub mod log;
mod types;
#[cfg(target_os = "wasi")]
mod wasi_stub;

pub use column::{Arg, NoDense, Output, Ret, RetValue};
pub use eddy_udf_macros::udf;
pub use types::{DataType, Volatility};

/// The generated bindings of `wit/udf.wit` (world `scalar-udf`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "scalar-udf",
        pub_export_macro: true,
        export_macro_name: "_export",
        default_bindings_module: "eddy_udf::bindings",
    });
}

/// One scalar function, as the `#[udf]` attribute describes it.
#[doc(hidden)]
pub struct ScalarUdf {
    /// SQL name.
    pub name: &'static str,
    /// Parameter names and types.
    pub params: &'static [(&'static str, DataType)],
    /// Result type.
    pub returns: DataType,
    /// Whether results depend only on arguments.
    pub volatility: Volatility,
    /// The function's doc comment.
    pub doc: &'static str,
    /// Evaluates one batch.
    pub call: fn(&[__private::Column], usize) -> Result<__private::ScalarResult, String>,
}

/// Items the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::eddy::udf::types::{
        Column, ColumnValues, FunctionSignature, Param, RowError, ScalarResult,
    };
    pub use crate::bindings::exports::eddy::udf::scalar::Guest;
    use crate::ScalarUdf;

    /// Implemented by `export!` for the marker type `#[udf]` generates (named after the function),
    /// and required by `#[udf]` beside it: a function `export!` does not list does not compile.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is a #[udf] function that `eddy_udf::export!` does not list",
        label = "not listed in `eddy_udf::export!(...)`",
        note = "add it: `eddy_udf::export!` must name every #[udf] function of the crate, e.g. `eddy_udf::export!(f, g)`; a function left out would be missing from the component"
    )]
    pub trait Exported {
        /// Named by `#[udf]`'s check.
        const LISTED: () = ();
    }

    /// Checks the argument count before any column is read.
    pub fn check_arity(name: &str, args: &[Column], expected: usize) -> Result<(), String> {
        if args.len() == expected {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {expected} argument(s), the host passed {}",
                args.len()
            ))
        }
    }

    /// The `describe` export: every function's signature.
    pub fn describe(udfs: &[ScalarUdf]) -> Vec<FunctionSignature> {
        udfs.iter()
            .map(|u| FunctionSignature {
                name: u.name.to_string(),
                params: u
                    .params
                    .iter()
                    .map(|(name, ty)| Param {
                        name: name.to_string(),
                        data_type: (*ty).into(),
                    })
                    .collect(),
                returns: u.returns.into(),
                volatility: u.volatility.into(),
                doc: u.doc.to_string(),
            })
            .collect()
    }

    /// The `call` export: finds the function by name and runs it over the batch.
    pub fn call(
        udfs: &[ScalarUdf],
        function: &str,
        args: Vec<Column>,
        rows: u32,
    ) -> Result<ScalarResult, String> {
        let udf = udfs
            .iter()
            .find(|u| u.name == function)
            .ok_or_else(|| format!("this component has no function named '{function}'"))?;
        (udf.call)(&args, rows as usize)
    }
}

/// Exports the listed `#[udf]` functions as this component's scalar UDFs.
///
/// Call it once per crate, naming every `#[udf]` function once: `eddy_udf::export!(f, g);`.
/// A `#[udf]` function it leaves out is a compile error at that function (rather than a function
/// missing at `CREATE FUNCTION`); naming one twice is a conflicting-implementation error.
#[macro_export]
macro_rules! export {
    () => {
        ::core::compile_error!(
            "name the #[udf] functions to export: `eddy_udf::export!(f, g)`"
        );
    };
    ($($f:ident),+ $(,)?) => {
        // The check `#[udf]` put beside each function: it is listed here.
        $(impl $crate::__private::Exported for $f {})+

        #[doc(hidden)]
        struct __EddyUdfComponent;

        impl __EddyUdfComponent {
            fn udfs() -> &'static [$crate::ScalarUdf] {
                static UDFS: ::std::sync::OnceLock<::std::vec::Vec<$crate::ScalarUdf>> =
                    ::std::sync::OnceLock::new();
                UDFS.get_or_init(|| ::std::vec![$($f::__eddy_udf()),+])
            }
        }

        impl $crate::__private::Guest for __EddyUdfComponent {
            fn describe() -> ::std::vec::Vec<$crate::__private::FunctionSignature> {
                $crate::__private::describe(Self::udfs())
            }

            fn call(
                function: ::std::string::String,
                args: ::std::vec::Vec<$crate::__private::Column>,
                rows: u32,
            ) -> ::std::result::Result<$crate::__private::ScalarResult, ::std::string::String> {
                $crate::__private::call(Self::udfs(), &function, args, rows)
            }
        }

        $crate::bindings::_export!(__EddyUdfComponent with_types_in $crate::bindings);
    };
}
