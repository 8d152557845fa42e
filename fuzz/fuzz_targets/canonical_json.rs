//! Canonical JSON (the bytes TUF signs, `verifier::cjson`). Oracle: what
//! encodes decodes to the same value, and encoding is idempotent.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::canonical_json::run(data));
