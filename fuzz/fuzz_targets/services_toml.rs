//! `/etc/phase/services.toml` (phase-init's services.rs), read from the
//! rootfs. Oracle: no panic; an accepted list starts every service in
//! exactly one wave, after all it depends on, in every mode.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::services_toml::run(data));
