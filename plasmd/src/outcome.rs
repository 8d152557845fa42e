//! What a job run ended with: a typed status and the resources it used.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::job::JobLimits;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobStatus {
    /// `_start` returned (code 0) or the job called `proc_exit(code)`.
    Exited { code: i32 },
    /// The job tried to grow its memory past its limit.
    MemoryLimit {
        limit_bytes: u64,
        requested_bytes: u64,
    },
    /// The job used all its fuel (CPU limit).
    CpuLimit { fuel: u64 },
    /// The wall-clock deadline passed; the job was stopped.
    Deadline { deadline_ms: u64 },
    /// The job trapped (unreachable, out-of-bounds access, stack overflow...).
    Trapped { trap: String },
    /// The module did not compile, link or instantiate (bad module, an
    /// import plasmd does not provide, no `_start`).
    Failed { error: String },
}

impl JobStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, JobStatus::Exited { code: 0 })
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobStatus::Exited { code } => write!(f, "exited with code {code}"),
            JobStatus::MemoryLimit {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "killed: memory limit of {limit_bytes} bytes exceeded (asked for {requested_bytes})"
            ),
            JobStatus::CpuLimit { fuel } => write!(f, "killed: CPU limit ({fuel} fuel) used up"),
            JobStatus::Deadline { deadline_ms } => {
                write!(f, "killed: wall-clock deadline of {deadline_ms} ms passed")
            }
            JobStatus::Trapped { trap } => write!(f, "trapped: {trap}"),
            JobStatus::Failed { error } => write!(f, "did not start: {error}"),
        }
    }
}

/// Resources a run used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Fuel consumed.
    pub fuel: u64,
    /// Largest linear memory size reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock time from instantiation to end, in milliseconds.
    pub wall_ms: u64,
    /// Time spent compiling the module, in milliseconds.
    pub compile_ms: u64,
    /// Bytes written to stdout.
    pub stdout_bytes: u64,
    /// Bytes written to stderr.
    pub stderr_bytes: u64,
}

/// The record of one run, also written as `outcome.json` in the job's
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// Unique id of this run (`<name>-<n>`).
    pub id: String,
    /// Job name.
    pub job: String,
    /// Hex SHA-256 of the module that ran.
    pub sha256: String,
    /// The limits it ran under.
    pub limits: JobLimits,
    /// How it ended.
    pub status: JobStatus,
    /// What it used.
    pub usage: Usage,
    /// Its log (stdout and stderr, line-prefixed by stream).
    pub log: PathBuf,
    /// Its scratch directory (preopened as `/scratch`).
    pub scratch: PathBuf,
}
