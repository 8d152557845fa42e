//! Canonical JSON (the bytes TUF signs, `verifier::cjson`). Oracle: what
//! encodes decodes to the same value, and encoding is idempotent.
/// One input.
pub fn run(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(c) = verifier::cjson::to_canonical(&v) else {
        return;
    };
    let back = crate::read_canonical(&c).expect("canonical JSON parses");
    assert_eq!(back, v, "canonical JSON changed the value");
    let again = verifier::cjson::to_canonical(&back).expect("re-encodes");
    assert_eq!(again, c, "canonical JSON is not idempotent");
}
