//! The kernel command line (`phase.*`, phase-init's cmdline.rs), as raw
//! `/proc/cmdline` bytes. Oracle: never a panic; every value in effect is
//! one the parser takes back unchanged; every warning is one line.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::cmdline::run(data));
