//! A peer's `/chunks` answer (fetcher's wire.rs). Input byte 0: the
//! object's chunk count (from signed metadata); the rest: the body.
//! Oracle: no panic; a partial map has exactly one flag per chunk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::chunks_json::run(data));
