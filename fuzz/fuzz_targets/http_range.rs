//! The `Range` header a client sends to `phase serve` (fetcher's wire.rs).
//! Input byte 0 picks the object length (small ones, 0, or u64 extremes);
//! the rest is the header. Oracle: no panic; a single range lies inside
//! the object.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::http_range::run(data));
