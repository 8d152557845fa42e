//! The client workflow's verify path (`verifier::TrustedSet`) with a fixed
//! trusted root: the first input byte picks the stage the rest is offered at
//! (0 initial root, 1 root rotation, 2 timestamp, 3 snapshot, 4 targets,
//! 5 the delegated role `apps`); the earlier stages get the fixture's valid
//! files (phase_fuzz::fixture).
//!
//! Oracle: no panic, and a rejected update leaves the trusted set as it was:
//! the fixture's own file for that stage is still accepted after it.
//!
//! `PHASE_FUZZ_WRITE_SEEDS=<dir>` writes the fixture as seeds (mk/fuzz.mk).
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: phase_fuzz::targets::tuf_verify::init(),
    |data: &[u8]| phase_fuzz::targets::tuf_verify::run(data)
);
