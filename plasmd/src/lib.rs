//! plasmd, the Plasm daemon: runs WASM (WASI preview 1) jobs that were
//! published, signed and fetched like every other Phase Boot artifact.
//!
//! What this crate owns:
//! * job identity ([`job`]): a job is the TUF target `jobs/<name>.wasm`;
//!   [`Job::from_verified`] accepts bytes only with the [`verifier::Target`]
//!   that signed them and only if they match it, and reads args, env and
//!   limits from the signed custom metadata;
//! * the sandbox ([`sandbox`]): memory limit, fuel (CPU) limit, wall-clock
//!   deadline, a per-run scratch directory as the only writable file system,
//!   no network, output to the console and a per-run log;
//! * the record of a run ([`outcome`]): a typed [`JobStatus`] and [`Usage`];
//! * resolving a job name to verified bytes ([`resolve`]): TUF refresh
//!   through the `verifier`, bytes from the local CAS or from peers through
//!   the `fetcher`;
//! * the daemon ([`daemon`]): start-up jobs, the Unix control socket, the
//!   run table; its configuration ([`config`]) and the control protocol
//!   between it and its clients ([`protocol`]: `submit`, `status`,
//!   `logs`).
//!
//! What it does not own: TUF (the `verifier` crate), fetching from peers
//! (the `fetcher` crate), the `boot.json` schema it reads peers from (the
//! `handover` crate), or starting plasmd at boot (`phase-init`).

#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod job;
pub mod outcome;
pub mod protocol;
pub mod resolve;
pub mod sandbox;

pub use config::DaemonConfig;
pub use daemon::Daemon;
pub use job::{Job, JobError, JobLimits, JobSpec, Policy, RequestedLimits};
pub use outcome::{JobOutcome, JobStatus, Usage};
pub use protocol::{Request, Response, RunInfo, RunState};
pub use resolve::{ResolveError, Resolved, Resolver, Sources};
pub use sandbox::{host_name, Plasm, PlasmConfig, PlasmError};

/// The demo job's source (WAT), as committed in `plasmd/jobs/hello.wat`.
pub const HELLO_WAT: &str = include_str!("../jobs/hello.wat");

/// Assemble WebAssembly text into a binary module (what `plasmd assemble`
/// does for the demo job; no WASM toolchain needed).
pub fn assemble(wat_source: &str) -> Result<Vec<u8>, wat::Error> {
    wat::parse_str(wat_source)
}
