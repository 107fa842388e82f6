//! Bytes and encodings: `TO_BYTES(s, encoding)`, `FROM_BYTES(b, encoding)` and ksqlDB's
//! `ENCODE(s, inputEncoding, outputEncoding)`, over `hex`, `utf8`, `ascii` and `base64`
//! (any case). An unknown encoding, or text that its encoding cannot read, gives NULL.

use std::sync::Arc;

use base64::Engine;
use datafusion::arrow::array::{Array, AsArray, BinaryArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use super::scalar::{returns, Ksql};
use super::string::strings;

const S: DataType = DataType::Utf8;
const B: DataType = DataType::Binary;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::new("to_bytes", vec![vec![S, S]], returns!(B), |a, _| {
            let text = strings(&a[0])?;
            let encoding = strings(&a[1])?;
            let out: BinaryArray = (0..text.len())
                .map(|i| {
                    if text.is_null(i) || encoding.is_null(i) {
                        return None;
                    }
                    decode(text.value(i), Encoding::named(encoding.value(i))?, false)
                })
                .collect();
            Ok(Arc::new(out))
        }),
        Ksql::new("from_bytes", vec![vec![B, S]], returns!(S), |a, _| {
            let bytes = cast(&a[0], &B)?;
            let bytes = bytes.as_binary::<i32>();
            let encoding = strings(&a[1])?;
            let out: StringArray = (0..bytes.len())
                .map(|i| {
                    if bytes.is_null(i) || encoding.is_null(i) {
                        return None;
                    }
                    let encoding = Encoding::named(encoding.value(i))?;
                    Some(encode(bytes.value(i), encoding, true))
                })
                .collect();
            Ok(Arc::new(out))
        }),
        Ksql::new("encode", vec![vec![S, S, S]], returns!(S), |a, _| {
            let text = strings(&a[0])?;
            let from = strings(&a[1])?;
            let to = strings(&a[2])?;
            let out: StringArray = (0..text.len())
                .map(|i| {
                    if text.is_null(i) || from.is_null(i) || to.is_null(i) {
                        return None;
                    }
                    let from = Encoding::named(from.value(i))?;
                    let to = Encoding::named(to.value(i))?;
                    Some(encode(&decode(text.value(i), from, true)?, to, false))
                })
                .collect();
            Ok(Arc::new(out))
        }),
    ]
}

/// An encoding ksqlDB names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Hex,
    Utf8,
    Ascii,
    Base64,
}

impl Encoding {
    fn named(name: &str) -> Option<Encoding> {
        match name.to_ascii_lowercase().as_str() {
            "hex" => Some(Encoding::Hex),
            "utf8" => Some(Encoding::Utf8),
            "ascii" => Some(Encoding::Ascii),
            "base64" => Some(Encoding::Base64),
            _ => None,
        }
    }
}

/// The bytes `text` stands for in `encoding`. With `literals` (as `ENCODE` reads hex), hex may
/// be written `0x…` (an odd digit count gets a leading 0) or `X'…'`.
fn decode(text: &str, encoding: Encoding, literals: bool) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => {
            let digits = if !literals {
                text.to_string()
            } else if let Some(d) = text.strip_prefix("0x") {
                if d.len() % 2 == 1 {
                    format!("0{d}")
                } else {
                    d.to_string()
                }
            } else if let Some(d) = text.strip_prefix("X'").or_else(|| text.strip_prefix("x'")) {
                d.strip_suffix('\'')?.to_string()
            } else {
                text.to_string()
            };
            hex::decode(digits).ok()
        }
        Encoding::Utf8 => Some(text.as_bytes().to_vec()),
        // A character outside ASCII becomes '?', as Java's encoder replaces it.
        Encoding::Ascii => Some(
            text.chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
        ),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    }
}

/// `bytes` as text in `encoding`; hex digits are upper case for `FROM_BYTES`, lower for
/// `ENCODE`, as in ksqlDB.
fn encode(bytes: &[u8], encoding: Encoding, upper_hex: bool) -> String {
    match encoding {
        Encoding::Hex if upper_hex => hex::encode_upper(bytes),
        Encoding::Hex => hex::encode(bytes),
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        // A byte outside ASCII becomes U+FFFD, as Java's decoder replaces it.
        Encoding::Ascii => bytes
            .iter()
            .map(|b| if b.is_ascii() { *b as char } else { '\u{FFFD}' })
            .collect(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_literals_as_encode_reads_them() {
        let hex =
            |t: &str| decode(t, Encoding::Hex, true).map(|b| encode(&b, Encoding::Utf8, false));
        assert_eq!(hex("0x48690a").as_deref(), Some("Hi\n"));
        assert_eq!(hex("X'4869'").as_deref(), Some("Hi"));
        assert_eq!(hex("0x869").as_deref(), Some("\u{8}i"));
        assert_eq!(hex("869"), None);
        assert_eq!(hex("x'4869"), None);
        assert_eq!(hex("0x").as_deref(), Some(""));
    }

    #[test]
    fn ascii_replaces_what_it_cannot_hold() {
        assert_eq!(decode("aé", Encoding::Ascii, false), Some(vec![b'a', b'?']));
        assert_eq!(encode(&[b'a', 0xC3], Encoding::Ascii, false), "a\u{FFFD}");
    }
}
