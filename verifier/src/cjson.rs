//! Canonical JSON as the TUF specification requires (OLPC canonical JSON),
//! through awslabs' `olpc-cjson` formatter: keys sorted, no insignificant
//! whitespace, only `"` and `\` escaped, integers only.

use olpc_cjson::CanonicalFormatter;
use serde::Serialize;

/// Serializing a value to canonical JSON failed (a float, or a value that
/// serde cannot represent).
#[derive(Debug, thiserror::Error)]
#[error("value cannot be written as canonical JSON")]
pub struct CanonicalError(#[source] serde_json::Error);

/// The canonical JSON bytes of `value`; these are the bytes TUF signs.
pub fn to_canonical<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, CanonicalFormatter::new());
    value.serialize(&mut ser).map_err(CanonicalError)?;
    Ok(out)
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
    fn non_ascii_and_control_characters_stay_raw() {
        let v = json!({"k": "é\n"});
        assert_eq!(to_canonical(&v).unwrap(), "{\"k\":\"é\n\"}".as_bytes());
    }
}
