//! The phase-init integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod bootfetch;
mod cmdline_grace_multibyte_unit;
mod cmdline_total;
mod dht_session;
mod fallback;
mod not_pid1;
