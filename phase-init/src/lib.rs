//! phase-init: PID 1 of Phase Boot, for both roles — stage 1 ("boot") on the
//! stick and, after kexec, stage 2 ("target").
//!
//! This crate owns what PID 1 does: the early mounts, the console, the
//! `phase.*` command line, kernel modules, and the rescue shell; later the
//! network bring-up, the verified fetch, kexec and the handover.
//! It does not own TUF, the CAS or discovery (the `verifier`, `fetcher` and
//! `discovery` crates). The boot steps are [`step::Step`]; the binary's
//! `main.rs` runs them in order and lists them.
//!
//! Unsafe code lives in [`sys`] only (the crate denies it, `sys` allows it).
#![deny(unsafe_code)]
// PID 1 never panics: no unwrap, expect or panic outside the tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bootfetch;
pub mod cachepart;
/// The names inside a cache directory (`fetcher::cas::layout`), for
/// [`payload`], which the fuzz crate compiles with its own copy.
pub use fetcher::cas::layout as cas_layout;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod direct;
pub mod discover;
pub mod dm;
pub mod failure;
pub mod fallback;
pub mod fetchloop;
pub mod handoff;
pub mod kernel;
pub mod kexec;
pub mod keywatch;
pub mod loader;
pub mod logging;
pub mod measure;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod onlink;
pub mod panic;
pub mod payload;
pub mod platform;
pub mod power;
pub mod private;
pub mod private_boot;
pub mod rescue;
pub mod retry;
pub mod route;
pub mod services;
pub mod stage2;
pub mod status;
pub mod step;
pub mod supervisor;
pub mod sys;
#[cfg(feature = "tor")]
pub mod torboot;
pub mod trust;

/// The machine-readable line every boot prints when stage 1 is done with its
/// own steps; tests and tools key on it, so its shape never changes.
pub fn ready_line(config: &cmdline::Config) -> String {
    format!(
        "phase-init: ready mode={} channel={}",
        config.mode, config.channel
    )
}

/// True when this process is PID 1.
pub fn is_pid1() -> bool {
    rustix::process::getpid().is_init()
}
