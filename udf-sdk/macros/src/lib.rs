//! The `#[udf]` attribute: turns a plain Rust function into an Eddy scalar UDF.
//!
//! It keeps the function as written and adds a module of the same name (modules and functions
//! live in different namespaces) holding the function's description and a batch loop, which
//! `eddy_udf::export!` collects.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_macro_input, spanned::Spanned, Expr, FnArg, ItemFn, Lit, Meta, Pat, ReturnType};

/// Marks a function as a scalar UDF. Options: `name = "sql_name"`,
/// `volatility = "immutable" | "stable" | "volatile"`, and `batch`: the function then takes a
/// `Vec` per parameter and returns a `Vec`, one call per batch (rows with a null in a plain
/// parameter are left out of the call and come back null).
#[proc_macro_attribute]
pub fn udf(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr with syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated);
    let func = parse_macro_input!(item as ItemFn);
    match expand(options.into_iter().collect(), func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn string_value(meta: &Meta) -> syn::Result<String> {
    if let Meta::NameValue(nv) = meta {
        if let Expr::Lit(lit) = &nv.value {
            if let Lit::Str(s) = &lit.lit {
                return Ok(s.value());
            }
        }
    }
    Err(syn::Error::new_spanned(meta, "expected `key = \"value\"`"))
}

fn expand(options: Vec<Meta>, func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let ident = func.sig.ident.clone();
    let mut name = ident.to_string();
    let mut volatility = quote!(Immutable);
    let mut batch = false;
    for meta in &options {
        if let Meta::Path(p) = meta {
            if p.is_ident("batch") {
                batch = true;
                continue;
            }
        }
        if meta.path().is_ident("name") {
            name = string_value(meta)?;
        } else if meta.path().is_ident("volatility") {
            volatility = match string_value(meta)?.as_str() {
                "immutable" => quote!(Immutable),
                "stable" => quote!(Stable),
                "volatile" => quote!(Volatile),
                _ => {
                    return Err(syn::Error::new_spanned(
                        meta,
                        "volatility is \"immutable\", \"stable\" or \"volatile\"",
                    ))
                }
            };
        } else {
            return Err(syn::Error::new_spanned(
                meta,
                "unknown option; expected `name`, `volatility` or `batch`",
            ));
        }
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(syn::Error::new(
            func.sig.ident.span(),
            "a UDF's SQL name is lower-case letters, digits and `_`",
        ));
    }
    if func.sig.asyncness.is_some() || !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &func.sig,
            "a UDF is a plain, non-generic, non-async fn",
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
    let mut param_types: Vec<syn::Type> = Vec::new();
    for input in &func.sig.inputs {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new(input.span(), "a UDF takes no `self`"));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new(
                pt.pat.span(),
                "UDF parameters are plain names",
            ));
        };
        param_names.push(pi.ident.to_string());
        param_types.push((*pt.ty).clone());
    }
    let ret_ty = match &func.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(&func.sig, "a UDF returns a value"))
        }
    };

    if batch {
        param_types = param_types
            .iter()
            .map(|t| vec_item(t, "a #[udf(batch)] parameter is a Vec<T>"))
            .collect::<syn::Result<_>>()?;
    }
    let ret_item = if batch {
        vec_item(&ret_ty, "a #[udf(batch)] function returns a Vec<T>")?
    } else {
        ret_ty.clone()
    };
    let arity = param_types.len();
    let readers: Vec<_> = (0..arity).map(|i| format_ident!("r{i}")).collect();
    let values: Vec<_> = (0..arity).map(|i| format_ident!("a{i}")).collect();
    let indices: Vec<_> = (0..arity).map(syn::Index::from).collect();
    let vis = &func.vis;
    let vecs: Vec<_> = (0..arity).map(|i| format_ident!("v{i}")).collect();
    let body = if batch {
        quote! {
            // Rows with a null in a plain parameter are left out of the call.
            let mut kept: ::std::vec::Vec<usize> = ::std::vec::Vec::with_capacity(rows);
            #( let mut #vecs: ::std::vec::Vec<#param_types> = ::std::vec::Vec::with_capacity(rows); )*
            for row in 0..rows {
                #(
                    let ::std::option::Option::Some(#values) = <#param_types as ::eddy_udf::Arg>::read(&#readers, row) else {
                        continue;
                    };
                )*
                #( #vecs.push(#values); )*
                kept.push(row);
            }
            let results: ::std::vec::Vec<#ret_item> = super::#ident(#(#vecs),*);
            if results.len() != kept.len() {
                return ::std::result::Result::Err(::std::format!(
                    "{} returned {} results for {} rows", #name, results.len(), kept.len()
                ));
            }
            let mut out = ::eddy_udf::Output::<<#ret_item as ::eddy_udf::Ret>::Value>::with_capacity(rows);
            let mut results = results.into_iter();
            let mut kept = kept.into_iter().peekable();
            for row in 0..rows {
                if kept.peek() == ::std::option::Option::Some(&row) {
                    kept.next();
                    if let ::std::option::Option::Some(r) = results.next() {
                        ::eddy_udf::Ret::push(r, &mut out);
                    }
                } else {
                    out.push_null();
                }
            }
            ::std::result::Result::Ok(out.finish())
        }
    } else {
        quote! {
            let mut out = ::eddy_udf::Output::<<#ret_item as ::eddy_udf::Ret>::Value>::with_capacity(rows);
            for row in 0..rows {
                #(
                    let ::std::option::Option::Some(#values) = <#param_types as ::eddy_udf::Arg>::read(&#readers, row) else {
                        out.push_null();
                        continue;
                    };
                )*
                ::eddy_udf::Ret::push(super::#ident(#(#values),*), &mut out);
            }
            ::std::result::Result::Ok(out.finish())
        }
    };

    Ok(quote! {
        #func

        #[doc(hidden)]
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;

            pub fn __eddy_udf() -> ::eddy_udf::ScalarUdf {
                ::eddy_udf::ScalarUdf {
                    name: #name,
                    params: &[#((#param_names, <#param_types as ::eddy_udf::Arg>::DATA_TYPE)),*],
                    returns: <<#ret_item as ::eddy_udf::Ret>::Value as ::eddy_udf::RetValue>::DATA_TYPE,
                    volatility: ::eddy_udf::Volatility::#volatility,
                    doc: #doc,
                    call: __call,
                }
            }

            fn __call(
                args: &[::eddy_udf::__private::Column],
                rows: usize,
            ) -> ::std::result::Result<::eddy_udf::__private::ScalarResult, ::std::string::String> {
                ::eddy_udf::__private::check_arity(#name, args, #arity)?;
                #(
                    let #readers = <#param_types as ::eddy_udf::Arg>::reader(&args[#indices], rows)
                        .map_err(|e| ::std::format!("{}: argument '{}': {}", #name, #param_names, e))?;
                )*
                #body
            }
        }
    })
}

/// `T` of a `Vec<T>` type.
fn vec_item(ty: &syn::Type, message: &str) -> syn::Result<syn::Type> {
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
