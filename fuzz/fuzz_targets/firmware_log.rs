//! The firmware's TCG event log a node sends in its `/attest` answer
//! (measure's firmware.rs). Oracle: no panic; an accepted log's records lie
//! in order inside it, and its replay is the fold of its records.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::firmware_log::run(data));
