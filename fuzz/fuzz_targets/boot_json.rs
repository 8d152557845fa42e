//! `/phase/boot.json` (the `handover` crate), read by the target from
//! its initramfs. Oracle: no panic; what parses writes back to the same
//! record.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::boot_json::run(data));
