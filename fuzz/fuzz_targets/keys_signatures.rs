//! Keys and signatures (the verifier's crypto.rs); see
//! `phase_fuzz::targets::keys_signatures` for the input layout and oracles.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: phase_fuzz::targets::keys_signatures::init(),
    |data: &[u8]| phase_fuzz::targets::keys_signatures::run(data)
);
