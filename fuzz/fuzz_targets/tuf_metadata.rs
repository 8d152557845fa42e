//! Metadata JSON of every role through the verifier's parse and shape checks
//! (`verifier::trusted::parse`), as bytes from any peer or mirror arrive.
//! Oracle: no panic; what parses has canonical bytes that are a fixed point
//! of canonical encoding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::tuf_metadata::run(data));
