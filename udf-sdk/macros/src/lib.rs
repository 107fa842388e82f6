//! The `#[udf]` attribute: turns a plain Rust function into an Eddy scalar UDF.
//!
//! It keeps the function as written and adds an empty enum of the same name (types and functions
//! live in different namespaces) whose associated functions hold the function's description and
//! a batch loop, which `eddy_udf::export!` collects. Beside it goes a check that `export!`
//! implemented `eddy_udf::__private::Exported` for that enum, so a function left out of
//! `export!` fails to compile instead of being missing at `CREATE FUNCTION`.
//!
//! Mistakes the attribute can see (an unknown option, a bad volatility, an argument or return type
//! that is not a SQL type) are reported here, at the offending token, with what is accepted.

use proc_macro::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{
    parse_macro_input, spanned::Spanned, Expr, FnArg, ItemFn, Lit, LitStr, Meta, Pat, ReturnType,
    Type,
};

/// Marks a function as a scalar UDF. Options: `name = "sql_name"`,
/// `volatility = "immutable" | "stable" | "volatile"`, and `batch`: the function then takes a
/// `Vec` per parameter and returns a `Vec`, one call per batch (rows with a null in a plain
/// parameter are left out of the call and come back null).
#[proc_macro_attribute]
pub fn udf(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr with syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated);
    let func = parse_macro_input!(item as ItemFn);
    match expand(options.into_iter().collect(), &func) {
        Ok(tokens) => tokens.into(),
        Err(e) => with_stand_in(e, &func).into(),
    }
}

/// The error, plus the function and a stand-in for its enum so that the author sees this one
/// error, not also "not found" errors from `export!` and other callers of the function.
fn with_stand_in(error: syn::Error, func: &ItemFn) -> proc_macro2::TokenStream {
    let error = error.to_compile_error();
    if func.sig.receiver().is_some() {
        return error;
    }
    let ident = &func.sig.ident;
    let vis = &func.vis;
    quote! {
        #error
        #func

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis enum #ident {}

        impl #ident {
            pub fn __eddy_udf() -> ::eddy_udf::ScalarUdf {
                ::core::unreachable!()
            }
        }
    }
}

/// What `#[udf]` accepts, for the error messages.
const ARG_TYPES: &str = "f64 (DOUBLE), i64 (BIGINT), bool (BOOLEAN), &str or String (VARCHAR), \
    &[f64] or Vec<f64> (DOUBLE[]); wrap one in Option<T> to receive SQL NULLs";
const RET_TYPES: &str = "f64 (DOUBLE), i64 (BIGINT), bool (BOOLEAN), String (VARCHAR), \
    Vec<f64> (DOUBLE[]); or Option<T> of one (None is NULL), or Result<T, E: Display> \
    (an Err makes that row NULL and reports a row error)";
const VOLATILITIES: &str = "\"immutable\" (the default: same arguments, same result), \
    \"stable\" (same result within one query) or \"volatile\" (may change on every call, \
    e.g. clocks or randomness)";

/// The string literal of `key = "value"`.
fn string_value(meta: &Meta, key: &str, example: &str) -> syn::Result<LitStr> {
    if let Meta::NameValue(nv) = meta {
        if let Expr::Lit(lit) = &nv.value {
            if let Lit::Str(s) = &lit.lit {
                return Ok(s.clone());
            }
        }
        return Err(syn::Error::new_spanned(
            &nv.value,
            format!("`{key}` takes a string literal: `{key} = \"{example}\"`"),
        ));
    }
    Err(syn::Error::new_spanned(
        meta,
        format!("`{key}` takes a value: `{key} = \"{example}\"`"),
    ))
}

fn expand(options: Vec<Meta>, func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let ident = func.sig.ident.clone();
    let mut name = ident.to_string();
    let mut name_span = ident.span();
    let mut volatility = quote!(Immutable);
    let mut batch = false;
    for meta in &options {
        if meta.path().is_ident("batch") {
            if !matches!(meta, Meta::Path(_)) {
                return Err(syn::Error::new_spanned(
                    meta,
                    "`batch` takes no value: write `#[udf(batch)]`",
                ));
            }
            batch = true;
        } else if meta.path().is_ident("name") {
            let lit = string_value(meta, "name", "sql_name")?;
            name = lit.value();
            name_span = lit.span();
        } else if meta.path().is_ident("volatility") {
            let lit = string_value(meta, "volatility", "volatile")?;
            volatility = match lit.value().as_str() {
                "immutable" => quote!(Immutable),
                "stable" => quote!(Stable),
                "volatile" => quote!(Volatile),
                other => {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        format!("unknown volatility \"{other}\"; expected {VOLATILITIES}"),
                    ))
                }
            };
        } else {
            return Err(syn::Error::new_spanned(
                meta.path(),
                "unknown #[udf] option; expected `name = \"sql_name\"`, \
                 `volatility = \"immutable\" | \"stable\" | \"volatile\"` or `batch`",
            ));
        }
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(syn::Error::new(
            name_span,
            format!(
                "`{name}` is not a valid UDF name: a UDF's SQL name is lower-case letters, digits \
                 and `_`; rename the function or set `#[udf(name = \"...\")]`"
            ),
        ));
    }
    if let Some(a) = &func.sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "a #[udf] function cannot be async: remove `async`",
        ));
    }
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &func.sig.generics,
            "a #[udf] function cannot be generic: each parameter needs one concrete SQL type",
        ));
    }

    let doc = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(s) => Some(s.value().trim().to_string()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string();

    let mut param_names = Vec::new();
    let mut param_types: Vec<Type> = Vec::new();
    for input in &func.sig.inputs {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new_spanned(
                input,
                "a #[udf] function takes no `self`: make it a free function",
            ));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new_spanned(
                &pt.pat,
                "#[udf] parameters are plain names (they become the SQL parameter names), \
                 not patterns",
            ));
        };
        param_names.push(pi.ident.to_string());
        param_types.push((*pt.ty).clone());
    }
    let ret_ty = match &func.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                &func.sig,
                format!("a #[udf] function returns a value; supported return types: {RET_TYPES}"),
            ))
        }
    };

    if batch {
        param_types = param_types
            .iter()
            .map(|t| {
                vec_item(
                    t,
                    "a #[udf(batch)] parameter is a Vec<T> of one of the argument types",
                )
            })
            .collect::<syn::Result<_>>()?;
    }
    let ret_item = if batch {
        vec_item(
            &ret_ty,
            "a #[udf(batch)] function returns a Vec<T> with one result per row",
        )?
    } else {
        ret_ty.clone()
    };
    for t in &param_types {
        check_arg(t)?;
    }
    check_ret(&ret_item)?;
    // Every use of `<T as Arg>` and `<R as Ret>` is spanned at the author's type, and so are the
    // expressions whose type involves them (a path's span runs to its last segment, a call's to
    // its `)`, and a method call's obligations are reported at the method's name): a type the
    // traits reject (one #[udf] cannot judge by its name) is then one error there, with the
    // traits' own messages, instead of several more at `#[udf]`.
    let arity = param_types.len();
    let data_types: Vec<_> = param_types
        .iter()
        .map(|t| quote_spanned! {t.span()=> <#t as ::eddy_udf::Arg>::DATA_TYPE})
        .collect();
    let readers: Vec<_> = param_types
        .iter()
        .enumerate()
        .map(|(i, t)| format_ident!("r{i}", span = t.span()))
        .collect();
    let udf_name = &name;
    let make_readers: Vec<_> = param_types
        .iter()
        .zip(&readers)
        .zip(&param_names)
        .enumerate()
        .map(|(i, ((t, reader), param))| {
            let s = t.span();
            let index = syn::Index::from(i);
            let reader_fn = quote_spanned! {s=> <#t as ::eddy_udf::Arg>::reader};
            let call_args = spanned_parens(quote!(&args[#index], rows), s);
            let map_err = quote_spanned! {s=> .map_err};
            let context = spanned_parens(
                quote!(|e| ::std::format!("{}: argument '{}': {}", #udf_name, #param, e)),
                s,
            );
            quote!(let #reader = #reader_fn #call_args #map_err #context?;)
        })
        .collect();
    let reads: Vec<_> = param_types
        .iter()
        .zip(&readers)
        .map(|(t, reader)| {
            let s = t.span();
            let read_fn = quote_spanned! {s=> <#t as ::eddy_udf::Arg>::read};
            let borrow = quote_spanned! {s=> &#reader};
            let call_args = spanned_parens(quote!(#borrow, row), s);
            quote!(#read_fn #call_args)
        })
        .collect();
    let rs = ret_item.span();
    let value_ty = quote_spanned! {rs=> <#ret_item as ::eddy_udf::Ret>::Value};
    let returns = quote_spanned! {rs=> <#value_ty as ::eddy_udf::RetValue>::DATA_TYPE};
    let out = proc_macro2::Ident::new("out", rs);
    let new_out = {
        let new_fn = quote_spanned! {rs=> ::eddy_udf::Output::<#value_ty>::with_capacity};
        let call_args = spanned_parens(quote!(rows), rs);
        quote!(let mut #out = #new_fn #call_args;)
    };
    let push = |value: proc_macro2::TokenStream| {
        let push_fn = quote_spanned! {rs=> <#ret_item as ::eddy_udf::Ret>::push};
        let borrow = quote_spanned! {rs=> &mut #out};
        let call_args = spanned_parens(quote!(#value, #borrow), rs);
        quote!(#push_fn #call_args;)
    };
    let push_null = {
        let method = quote_spanned! {rs=> .push_null};
        let call_args = spanned_parens(quote!(), rs);
        quote!(#out #method #call_args;)
    };
    let finish = {
        let method = quote_spanned! {rs=> .finish};
        let call_args = spanned_parens(quote!(), rs);
        quote!(#out #method #call_args)
    };
    let values: Vec<_> = (0..arity).map(|i| format_ident!("a{i}")).collect();
    let vis = &func.vis;
    let vecs: Vec<_> = (0..arity).map(|i| format_ident!("v{i}")).collect();
    // Arguments without nulls, of types read by index (`f64`, `i64`), skip the per-row checks;
    // a plain `f64`/`i64` result then collects in one loop the compiler can vectorise.
    let dense_path = if arity == 0 {
        quote!()
    } else {
        let dense: Vec<_> = param_types
            .iter()
            .enumerate()
            .map(|(i, t)| format_ident!("d{i}", span = t.span()))
            .collect();
        let views: Vec<_> = param_types
            .iter()
            .zip(&readers)
            .map(|(t, reader)| {
                let s = t.span();
                let dense_fn = quote_spanned! {s=> <#t as ::eddy_udf::Arg>::dense};
                let borrow = quote_spanned! {s=> &#reader};
                let call_args = spanned_parens(quote!(#borrow, rows), s);
                quote!(#dense_fn #call_args)
            })
            .collect();
        let dense_reads: Vec<_> = param_types
            .iter()
            .zip(&dense)
            .map(|(t, d)| {
                let s = t.span();
                let read_fn = quote_spanned! {s=> <#t as ::eddy_udf::Arg>::read_dense};
                let call_args = spanned_parens(quote!(#d, row), s);
                quote!(#read_fn #call_args)
            })
            .collect();
        let collect_fn = quote_spanned! {rs=> <#ret_item as ::eddy_udf::Ret>::collect_dense};
        let call_args = spanned_parens(quote!(rows, |row| self::#ident(#(#dense_reads),*)), rs);
        let mut path = quote! {
            let #out = #collect_fn #call_args;
            return ::std::result::Result::Ok(#finish);
        };
        // One `if let` per argument, spanned at its type, so that a type the traits reject
        // reports no more than the error it already has there.
        for ((t, d), view) in param_types.iter().zip(&dense).zip(&views).rev() {
            path = quote_spanned! {t.span()=>
                if let ::std::option::Option::Some(#d) = #view {
                    #path
                }
            };
        }
        path
    };
    let push_result = push(quote!(r));
    let push_call = push(quote!(self::#ident(#(#values),*)));
    let body = if batch {
        quote! {
            // Rows with a null in a plain parameter are left out of the call.
            let mut kept: ::std::vec::Vec<usize> = ::std::vec::Vec::with_capacity(rows);
            #( let mut #vecs: ::std::vec::Vec<#param_types> = ::std::vec::Vec::with_capacity(rows); )*
            for row in 0..rows {
                #(
                    let ::std::option::Option::Some(#values) = #reads else {
                        continue;
                    };
                )*
                #( #vecs.push(#values); )*
                kept.push(row);
            }
            let results: ::std::vec::Vec<#ret_item> = self::#ident(#(#vecs),*);
            if results.len() != kept.len() {
                return ::std::result::Result::Err(::std::format!(
                    "{} returned {} results for {} rows", #name, results.len(), kept.len()
                ));
            }
            #new_out
            let mut results = results.into_iter();
            let mut kept = kept.into_iter().peekable();
            for row in 0..rows {
                if kept.peek() == ::std::option::Option::Some(&row) {
                    kept.next();
                    if let ::std::option::Option::Some(r) = results.next() {
                        #push_result
                    }
                } else {
                    #push_null
                }
            }
            ::std::result::Result::Ok(#finish)
        }
    } else {
        quote! {
            #dense_path
            #new_out
            for row in 0..rows {
                #(
                    let ::std::option::Option::Some(#values) = #reads else {
                        #push_null
                        continue;
                    };
                )*
                #push_call
            }
            ::std::result::Result::Ok(#finish)
        }
    };

    // Spanned at the function's name, so a function `export!` leaves out is reported there.
    let exported_check = quote_spanned! {ident.span()=>
        const _: () = <#ident as ::eddy_udf::__private::Exported>::LISTED;
    };

    Ok(quote! {
        #func

        /// Names the function for `eddy_udf::export!`, which implements `Exported` for it.
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis enum #ident {}

        #exported_check

        impl #ident {
            /// The function's description and batch loop, for `eddy_udf::export!`.
            pub fn __eddy_udf() -> ::eddy_udf::ScalarUdf {
                ::eddy_udf::ScalarUdf {
                    name: #name,
                    params: &[#((#param_names, #data_types)),*],
                    returns: #returns,
                    volatility: ::eddy_udf::Volatility::#volatility,
                    doc: #doc,
                    call: Self::__call,
                }
            }

            fn __call(
                args: &[::eddy_udf::__private::Column],
                rows: usize,
            ) -> ::std::result::Result<::eddy_udf::__private::ScalarResult, ::std::string::String> {
                ::eddy_udf::__private::check_arity(#name, args, #arity)?;
                #(
                    #make_readers
                )*
                #body
            }
        }
    })
}

/// `( tokens )` whose parentheses carry `span`: a call's span runs from its path to its `)`.
fn spanned_parens(tokens: proc_macro2::TokenStream, span: proc_macro2::Span) -> proc_macro2::Group {
    let mut group = proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, tokens);
    group.set_span(span);
    group
}

/// `T` of a `Vec<T>` type.
fn vec_item(ty: &Type, message: &str) -> syn::Result<Type> {
    if let syn::Type::Path(p) = ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Vec" {
                if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(syn::GenericArgument::Type(t)) = args.args.first() {
                        return Ok(t.clone());
                    }
                }
            }
        }
    }
    Err(syn::Error::new_spanned(ty, message))
}

/// The last segment's name and first type argument of a plain path type (`Option<T>` → T).
fn path_parts(ty: &Type) -> Option<(String, Option<&Type>)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    let arg = match &last.arguments {
        syn::PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    };
    Some((last.ident.to_string(), arg))
}

/// Rust's built-in scalar types and `String`: names that cannot be a user's alias of a SQL type.
fn builtin(name: &str) -> bool {
    matches!(
        name,
        "bool"
            | "char"
            | "str"
            | "f32"
            | "f64"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
            | "String"
    )
}

/// Strips parentheses and invisible groups around a type.
fn bare(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => bare(&p.elem),
        Type::Group(g) => bare(&g.elem),
        other => other,
    }
}

/// Is `ty` the element type of a list column (`f64`), or surely not (another built-in)? Other
/// names (aliases) are left to the `Arg`/`Ret` trait bounds, which have their own messages.
fn list_item_ok(ty: &Type) -> bool {
    match path_parts(bare(ty)) {
        Some((name, None)) if builtin(&name) => name == "f64",
        Some((name, _)) if matches!(name.as_str(), "Option" | "Vec" | "Result") => false,
        Some(_) => true,
        None => false,
    }
}

/// False when `ty` surely cannot be a #[udf] argument.
fn arg_ok(ty: &Type) -> bool {
    match bare(ty) {
        Type::Path(_) => match path_parts(bare(ty)) {
            Some((name, Some(inner))) if name == "Option" => arg_ok(inner),
            Some((name, Some(inner))) if name == "Vec" => list_item_ok(inner),
            Some((name, _)) if builtin(&name) => {
                matches!(name.as_str(), "f64" | "i64" | "bool" | "String")
            }
            _ => true,
        },
        Type::Reference(r) if r.mutability.is_none() => match bare(&r.elem) {
            Type::Slice(s) => list_item_ok(&s.elem),
            elem => match path_parts(elem) {
                Some((name, _)) => {
                    name == "str" || !(builtin(&name) || matches!(name.as_str(), "Vec" | "Option"))
                }
                None => false,
            },
        },
        _ => false,
    }
}

/// False when `ty` surely cannot be a #[udf] result; `wrapped` is true inside `Option`.
fn ret_ok(ty: &Type, wrapped: bool) -> bool {
    match path_parts(bare(ty)) {
        Some((name, Some(inner))) if name == "Option" => !wrapped && ret_ok(inner, true),
        Some((name, Some(inner))) if name == "Result" => !wrapped && ret_ok(inner, false),
        Some((name, Some(inner))) if name == "Vec" => list_item_ok(inner),
        Some((name, _)) if builtin(&name) => {
            matches!(name.as_str(), "f64" | "i64" | "bool" | "String")
        }
        Some(_) => true,
        None => false,
    }
}

fn check_arg(ty: &Type) -> syn::Result<()> {
    if arg_ok(ty) {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        ty,
        format!("unsupported #[udf] argument type; supported argument types: {ARG_TYPES}"),
    ))
}

fn check_ret(ty: &Type) -> syn::Result<()> {
    if ret_ok(ty, false) {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        ty,
        format!("unsupported #[udf] return type; supported return types: {RET_TYPES}"),
    ))
}
