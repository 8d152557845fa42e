//! The plasmd integration tests, in one test binary: one link, and
//! one harness that runs their tests side by side (`--test-threads`).

mod common;
mod cpu_limit;
mod daemon;
mod deadline;
mod demo_hello;
mod memory_limit;
mod scratch_only;
mod tampered_job;
