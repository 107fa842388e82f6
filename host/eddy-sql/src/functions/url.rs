//! ksqlDB's URL functions: `URL_ENCODE_PARAM`, `URL_DECODE_PARAM` and `URL_EXTRACT_FRAGMENT`,
//! `_HOST`, `_PARAMETER`, `_PATH`, `_PORT`, `_PROTOCOL`, `_QUERY`.
//!
//! A URL is split as RFC 3986 (and Java's `URI`, which ksqlDB uses) splits it, without the
//! normalising a WHATWG parser does: a URL without a path has an empty one, not `/`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int32Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;

use super::scalar::{returns, Ksql};
use super::string::strings;

const S: DataType = DataType::Utf8;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::new("url_encode_param", vec![vec![S]], returns!(S), |a, _| {
            map(&a[0], |s| Some(encode_param(s)))
        }),
        Ksql::new("url_decode_param", vec![vec![S]], returns!(S), |a, _| {
            map(&a[0], decode_param)
        }),
        Ksql::new(
            "url_extract_fragment",
            vec![vec![S]],
            returns!(S),
            |a, _| map(&a[0], |s| decode(Url::split(s)?.fragment?)),
        ),
        Ksql::new("url_extract_host", vec![vec![S]], returns!(S), |a, _| {
            map(&a[0], |s| Url::split(s)?.host().map(str::to_string))
        }),
        Ksql::new("url_extract_path", vec![vec![S]], returns!(S), |a, _| {
            map(&a[0], |s| decode(Url::split(s)?.path))
        }),
        Ksql::new(
            "url_extract_protocol",
            vec![vec![S]],
            returns!(S),
            |a, _| map(&a[0], |s| Url::split(s)?.scheme.map(str::to_string)),
        ),
        Ksql::new("url_extract_query", vec![vec![S]], returns!(S), |a, _| {
            map(&a[0], |s| decode(Url::split(s)?.query?))
        }),
        Ksql::new(
            "url_extract_port",
            vec![vec![S]],
            returns!(DataType::Int32),
            |a, _| {
                let out: Int32Array = strings(&a[0])?
                    .iter()
                    .map(|v| Url::split(v?)?.port())
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "url_extract_parameter",
            vec![vec![S, S]],
            returns!(S),
            |a, _| {
                let (urls, names) = (strings(&a[0])?, strings(&a[1])?);
                let out: StringArray = (0..urls.len())
                    .map(|i| {
                        if urls.is_null(i) || names.is_null(i) {
                            return None;
                        }
                        let query = Url::split(urls.value(i))?.query?;
                        query.split('&').find_map(|pair| {
                            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                            (name == names.value(i)).then(|| value.to_string())
                        })
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
    ]
}

fn map(a: &ArrayRef, f: impl Fn(&str) -> Option<String>) -> Result<ArrayRef> {
    let out: StringArray = strings(a)?.iter().map(|v| f(v?)).collect();
    Ok(Arc::new(out))
}

/// A URL's parts, as written.
#[derive(Debug, PartialEq)]
struct Url<'a> {
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Url<'a> {
    /// RFC 3986's split; `None` for text that is not a URI (spaces, say, as Java refuses).
    fn split(text: &'a str) -> Option<Url<'a>> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (rest, fragment) = match text.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (text, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (scheme, rest) = match rest.find([':', '/']) {
            Some(at) if rest[at..].starts_with(':') && at > 0 => {
                (Some(&rest[..at]), &rest[at + 1..])
            }
            _ => (None, rest),
        };
        let (authority, path) = match rest.strip_prefix("//") {
            Some(r) => {
                let end = r.find('/').unwrap_or(r.len());
                (Some(&r[..end]), &r[end..])
            }
            None => (None, rest),
        };
        Some(Url {
            scheme,
            authority,
            path,
            query,
            fragment,
        })
    }

    /// The host and port, without user information.
    fn host_port(&self) -> Option<&'a str> {
        let authority = self.authority?;
        Some(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
    }

    fn host(&self) -> Option<&'a str> {
        let host_port = self.host_port()?;
        let host = match host_port.rfind(':') {
            Some(at) if !host_port[at..].contains(']') => &host_port[..at],
            _ => host_port,
        };
        (!host.is_empty()).then_some(host)
    }

    fn port(&self) -> Option<i32> {
        let host_port = self.host_port()?;
        let at = host_port.rfind(':')?;
        host_port[at + 1..].parse().ok()
    }
}

/// Percent-escapes decoded, as Java's `URI` getters give them; `None` for a broken escape.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Java's `URLEncoder` (UTF-8): letters, digits and `.-*_` stay, a space is `+`, the rest
/// `%XX`.
fn encode_param(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Java's `URLDecoder` (UTF-8): `+` is a space; `None` for a broken escape.
fn decode_param(text: &str) -> Option<String> {
    decode(&text.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_as_java_uri_does() {
        let u = Url::split("https://me@example.com:8443/a/b?x=1&y#top").unwrap();
        assert_eq!(u.scheme, Some("https"));
        assert_eq!(u.host(), Some("example.com"));
        assert_eq!(u.port(), Some(8443));
        assert_eq!(u.path, "/a/b");
        assert_eq!(u.query, Some("x=1&y"));
        assert_eq!(u.fragment, Some("top"));
        let bare = Url::split("http://example.com?q").unwrap();
        assert_eq!((bare.path, bare.port()), ("", None));
        assert_eq!(Url::split("example.com/x").unwrap().scheme, None);
        assert_eq!(Url::split("http://a b"), None);
    }

    #[test]
    fn params_encode_as_java_does() {
        assert_eq!(encode_param("?a b&é"), "%3Fa+b%26%C3%A9");
        assert_eq!(decode_param("%3Fa+b%26%C3%A9").as_deref(), Some("?a b&é"));
        assert_eq!(decode_param("%zz"), None);
    }
}
