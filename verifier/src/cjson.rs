//! Canonical JSON as the TUF specification requires (OLPC canonical JSON, as
//! securesystemslib writes it, which is what python-tuf signs):
//! object keys sorted by code point, no insignificant whitespace, integers
//! only, strings as they are with only `"` and `\` escaped.
//!
//! Strings are not Unicode-normalized. awslabs' `olpc-cjson` formatter turns
//! every string into NFC; securesystemslib does not, so metadata holding a
//! decomposed string (`e` + U+0301, as macOS file names are) signed by
//! python-tuf would not verify here, and two `signed` objects that differ
//! only in normalization would share one signature.

use serde::Serialize;
use serde_json::Value;

/// Serializing a value to canonical JSON failed (a float, or a value that
/// serde cannot represent).
#[derive(Debug, thiserror::Error)]
#[error("value cannot be written as canonical JSON")]
pub struct CanonicalError(#[source] serde_json::Error);

/// The canonical JSON bytes of `value`; these are the bytes TUF signs.
pub fn to_canonical<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(CanonicalError)?;
    let mut out = Vec::new();
    write(&value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(CanonicalError(serde::ser::Error::custom(format!(
                    "{n}: canonical JSON has integers only"
                ))));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Code point order is UTF-8 byte order, which `str` compares by.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, 2], "c": "x\"y\\z"}});
        let got = String::from_utf8(to_canonical(&v).unwrap()).unwrap();
        assert_eq!(got, r#"{"a":{"c":"x\"y\\z","d":[1,2]},"b":1}"#);
    }

    #[test]
    fn rejects_floats() {
        assert!(to_canonical(&json!({"a": 1.5})).is_err());
    }

    #[test]
    fn integers_of_both_signs() {
        let v = json!({"a": -3, "b": u64::MAX, "c": 0});
        let got = String::from_utf8(to_canonical(&v).unwrap()).unwrap();
        assert_eq!(got, format!(r#"{{"a":-3,"b":{},"c":0}}"#, u64::MAX));
    }

    #[test]
    fn strings_are_not_normalized() {
        // securesystemslib: "cafe" + U+0301 stays decomposed.
        let v = json!({"k": "cafe\u{301}"});
        assert_eq!(
            to_canonical(&v).unwrap(),
            "{\"k\":\"cafe\u{301}\"}".as_bytes()
        );
    }

    #[test]
    fn non_ascii_and_control_characters_stay_raw() {
        let v = json!({"k": "é\n"});
        assert_eq!(to_canonical(&v).unwrap(), "{\"k\":\"é\n\"}".as_bytes());
    }
}
