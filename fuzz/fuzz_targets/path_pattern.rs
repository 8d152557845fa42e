//! Delegation path patterns (the verifier's fnmatch.rs, through
//! `DelegatedRole::matches`, the way the target search uses them): the
//! pattern comes from a delegator's metadata, the path from a targets
//! request. Input: target, 0xFF, pattern. Oracle: no panic or hang; a pattern without wildcards
//! matches exactly itself; `*` matches every single segment.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phase_fuzz::targets::path_pattern::run(data));
