//! Scenario (found by the `canonical_json` fuzz target, docs/fuzzing.md):
//! metadata holding a string that is not in Unicode NFC, such as `e`
//! followed by U+0301 (how macOS spells file names).
//!
//! The canonical JSON formatter used before rewrote every string to NFC.
//! securesystemslib, which python-tuf signs with, keeps the bytes, so:
//! python-tuf's signature over such metadata did not verify here; and a
//! peer could swap the decomposed string for its composed twin (other bytes,
//! other meaning to a byte-comparing consumer) and the signature still
//! verified. Canonical bytes must be the bytes of the strings as sent.
use super::support;
use support::*;
use verifier::publish::sign_metadata;
use verifier::{Error, Rule, TrustedSet};

const DECOMPOSED: &str = "cafe\u{301}";
const COMPOSED: &str = "caf\u{e9}";

#[test]
fn canonical_bytes_keep_the_strings_as_securesystemslib_does() {
    // securesystemslib.formats.encode_canonical({"b": "cafe\u0301", "a": 1})
    let v = serde_json::json!({"b": DECOMPOSED, "a": 1});
    let got = verifier::cjson::to_canonical(&v).unwrap();
    assert_eq!(got, b"{\"a\":1,\"b\":\"cafe\xcc\x81\"}");
    assert_ne!(
        got,
        verifier::cjson::to_canonical(&serde_json::json!({"b": COMPOSED, "a": 1})).unwrap()
    );
}

#[test]
fn a_root_with_a_decomposed_string_verifies_and_its_composed_twin_does_not() {
    let repo = Repo::new();
    let mut signed = serde_json::to_value(&repo.root).unwrap();
    signed["x-owner"] = serde_json::Value::String(DECOMPOSED.into());
    let bytes = sign_metadata(&signed, &repo.signer_refs("root")).unwrap();
    TrustedSet::new(&bytes, now()).expect("the root as signed verifies");

    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(DECOMPOSED));
    let swapped = text.replace(DECOMPOSED, COMPOSED);
    let e = TrustedSet::new(swapped.as_bytes(), now()).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Threshold { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}
