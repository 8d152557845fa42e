//! Job identity: a job is the TUF target `jobs/<name>.wasm`. Its bytes are
//! accepted only together with the [`Target`] that signed them, and only if
//! their length and digests match; the signed custom metadata carries the
//! job's arguments, environment and requested limits.
//!
//! ```json
//! {"kind": "job", "version": "1", "chunks": {...},
//!  "args": ["--verbose"], "env": {"GREETING": "hi"},
//!  "limits": {"memory_bytes": 16777216, "fuel": 100000000, "deadline_ms": 5000}}
//! ```
//!
//! `args`, `env` and `limits` (and each limit) are optional; a limit the job
//! does not name takes the node's default, and every limit is capped by the
//! node's maximum ([`Policy`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use verifier::{Kind, Storage, Target, Transport, Updater};

/// Target names of jobs start with this and end with [`JOB_SUFFIX`].
pub const JOB_PREFIX: &str = "jobs/";
/// Target names of jobs end with this.
pub const JOB_SUFFIX: &str = ".wasm";

/// Why a job was refused before it could run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The name is not `jobs/<name>.wasm` with a plain `<name>`.
    #[error("{0:?} is not a job target name (expected jobs/<name>.wasm, name of [A-Za-z0-9._-])")]
    Name(String),
    /// The trusted metadata does not list the job, or the refresh failed.
    #[error("job {name}: not resolved through trusted metadata")]
    Resolve {
        name: String,
        #[source]
        source: verifier::Error,
    },
    /// The bytes are not the signed ones.
    #[error("job {name}: bytes do not match the signed target (refused)")]
    Digest {
        name: String,
        #[source]
        source: verifier::Error,
    },
    /// The signed custom metadata is not Phase Boot metadata.
    #[error("job {name}: signed custom metadata is invalid")]
    Custom {
        name: String,
        #[source]
        source: verifier::Error,
    },
    /// The target is not of kind `job`.
    #[error("job {name}: target kind is {kind:?}, not \"job\"")]
    Kind { name: String, kind: &'static str },
    /// `args`, `env` or `limits` in the custom metadata are malformed.
    #[error("job {name}: custom metadata field {field:?} is malformed")]
    Spec {
        name: String,
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Limits a job asks for in its signed metadata; each is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    /// Most bytes of linear memory (all memories together).
    pub memory_bytes: Option<u64>,
    /// Wasmtime fuel units (about one per executed WASM instruction).
    pub fuel: Option<u64>,
    /// Wall-clock deadline from start to end, in milliseconds.
    pub deadline_ms: Option<u64>,
}

/// The limits a job runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimits {
    /// Most bytes of linear memory (all memories together).
    pub memory_bytes: u64,
    /// Wasmtime fuel units (about one per executed WASM instruction).
    pub fuel: u64,
    /// Wall-clock deadline from start to end, in milliseconds.
    pub deadline_ms: u64,
}

impl JobLimits {
    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// The node's limit policy: defaults for limits a job does not name, and
/// maximums no job may exceed whatever its metadata asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Used when the job's metadata names no value.
    pub default: JobLimits,
    /// Caps every value.
    pub max: JobLimits,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default: JobLimits {
                memory_bytes: 64 << 20,
                fuel: 10_000_000_000,
                deadline_ms: 60_000,
            },
            max: JobLimits {
                memory_bytes: 1 << 30,
                fuel: 1_000_000_000_000,
                deadline_ms: 24 * 3600 * 1000,
            },
        }
    }
}

impl Policy {
    /// The limits for a job that asks for `req`.
    pub fn apply(&self, req: &RequestedLimits) -> JobLimits {
        let pick = |asked: Option<u64>, default: u64, max: u64| asked.unwrap_or(default).min(max);
        JobLimits {
            memory_bytes: pick(
                req.memory_bytes,
                self.default.memory_bytes,
                self.max.memory_bytes,
            ),
            fuel: pick(req.fuel, self.default.fuel, self.max.fuel),
            deadline_ms: pick(
                req.deadline_ms,
                self.default.deadline_ms,
                self.max.deadline_ms,
            ),
        }
    }
}

/// What the signed metadata says about how to run the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// Arguments after `argv[0]` (which is the job name).
    pub args: Vec<String>,
    /// Environment variables (plasmd adds `PHASE_JOB` and `PHASE_HOSTNAME`).
    pub env: BTreeMap<String, String>,
    /// Limits asked for.
    pub limits: RequestedLimits,
}

/// A job whose bytes were checked against its signed target.
#[derive(Clone)]
pub struct Job {
    name: String,
    target: Target,
    bytes: Vec<u8>,
    spec: JobSpec,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("target", &self.target.name)
            .field("length", &self.bytes.len())
            .field("spec", &self.spec)
            .finish()
    }
}

/// `jobs/<name>.wasm` -> `<name>`, if `<name>` is a plain file name.
pub fn job_name(target_name: &str) -> Option<&str> {
    let name = target_name
        .strip_prefix(JOB_PREFIX)?
        .strip_suffix(JOB_SUFFIX)?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    plain.then_some(name)
}

/// The target name of job `name`.
pub fn target_name(name: &str) -> String {
    format!("{JOB_PREFIX}{name}{JOB_SUFFIX}")
}

impl Job {
    /// Accept `bytes` as the job `target` names: the name must be
    /// `jobs/<name>.wasm`, the length and every listed digest must match, the
    /// custom metadata must be valid Phase Boot metadata of kind `job`.
    pub fn from_verified(target: Target, bytes: Vec<u8>) -> Result<Job, JobError> {
        let name = job_name(&target.name)
            .ok_or_else(|| JobError::Name(target.name.clone()))?
            .to_string();
        target
            .verify_bytes(&bytes)
            .map_err(|source| JobError::Digest {
                name: name.clone(),
                source,
            })?;
        let custom = target.phase().map_err(|source| JobError::Custom {
            name: name.clone(),
            source,
        })?;
        if custom.kind != Kind::Job {
            return Err(JobError::Kind {
                name,
                kind: custom.kind.as_str(),
            });
        }
        let spec = spec_of(&name, target.custom.as_ref())?;
        Ok(Job {
            name,
            target,
            bytes,
            spec,
        })
    }

    /// Resolve `jobs/<name>.wasm` through an updater that has been
    /// refreshed, download it (length-capped, digests checked) and accept it.
    pub fn fetch<S: Storage, T: Transport>(
        updater: &mut Updater<S, T>,
        name: &str,
    ) -> Result<Job, JobError> {
        let tname = target_name(name);
        if job_name(&tname).is_none() {
            return Err(JobError::Name(tname));
        }
        let resolve = |source| JobError::Resolve {
            name: name.to_string(),
            source,
        };
        let target = updater.target(&tname).map_err(resolve)?;
        let bytes = updater
            .download_bytes(&target)
            .map_err(|source| JobError::Digest {
                name: name.to_string(),
                source,
            })?;
        Job::from_verified(target, bytes)
    }

    /// The job name (`hello` for `jobs/hello.wasm`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The verified module bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Args, env and limits from the signed metadata.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// Hex SHA-256 of the bytes (checked against the target).
    pub fn sha256(&self) -> &str {
        self.target.sha256().unwrap_or("")
    }
}

fn spec_of(name: &str, custom: Option<&serde_json::Value>) -> Result<JobSpec, JobError> {
    fn field<T: serde::de::DeserializeOwned + Default>(
        name: &str,
        custom: Option<&serde_json::Value>,
        field: &'static str,
    ) -> Result<T, JobError> {
        match custom.and_then(|c| c.get(field)) {
            None | Some(serde_json::Value::Null) => Ok(T::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|source| JobError::Spec {
                name: name.to_string(),
                field,
                source,
            }),
        }
    }
    Ok(JobSpec {
        args: field(name, custom, "args")?,
        env: field(name, custom, "env")?,
        limits: field(name, custom, "limits")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        assert_eq!(job_name("jobs/hello.wasm"), Some("hello"));
        assert_eq!(job_name("jobs/a-b_c.1.wasm"), Some("a-b_c.1"));
        for bad in [
            "jobs/.wasm",
            "jobs/a/b.wasm",
            "jobs/..wasm",
            "hello.wasm",
            "jobs/hello.wat",
            "jobs/he llo.wasm",
        ] {
            assert_eq!(job_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn policy_defaults_and_caps() {
        let p = Policy {
            default: JobLimits {
                memory_bytes: 10,
                fuel: 20,
                deadline_ms: 30,
            },
            max: JobLimits {
                memory_bytes: 100,
                fuel: 200,
                deadline_ms: 300,
            },
        };
        let l = p.apply(&RequestedLimits {
            memory_bytes: Some(1000),
            fuel: None,
            deadline_ms: Some(5),
        });
        assert_eq!(
            l,
            JobLimits {
                memory_bytes: 100,
                fuel: 20,
                deadline_ms: 5
            }
        );
    }

    #[test]
    fn spec_fields_are_typed() {
        let c = serde_json::json!({"args": ["a"], "env": {"K": "V"}, "limits": {"fuel": 5}});
        let s = spec_of("x", Some(&c)).expect("valid spec");
        assert_eq!(s.args, vec!["a".to_string()]);
        assert_eq!(s.env.get("K").map(String::as_str), Some("V"));
        assert_eq!(s.limits.fuel, Some(5));
        let bad = serde_json::json!({"limits": {"cpu": 5}});
        let e = spec_of("x", Some(&bad)).expect_err("unknown limit");
        assert!(e.to_string().contains("\"limits\""), "{e}");
        let bad = serde_json::json!({"args": "not a list"});
        assert!(spec_of("x", Some(&bad)).is_err());
    }
}
