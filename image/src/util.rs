//! Small helpers shared by the writers.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// A failed external command: which program, and what it said.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{program}` (is it installed? see scripts/deps-check.sh)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Run a command to completion; a non-zero exit becomes an error carrying the
/// command line and the last lines of its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let command = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let output = cmd
        .output()
        .map_err(|source| CommandError::Spawn { program, source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        return Err(CommandError::Failed {
            command,
            status: output.status,
            stderr,
        });
    }
    Ok(output)
}

/// A UUID (random-looking, version 4 layout) derived from a seed and a label,
/// so the same inputs give the same image while different images differ.
pub(crate) fn derived_uuid(seed: &[u8; 32], label: &str) -> uuid::Uuid {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// `a/b/c` for a path made of normal components only (no `..`, no root).
pub(crate) fn relative_slash_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

pub(crate) fn path_join(base: &Path, rel: &str) -> PathBuf {
    rel.split('/')
        .filter(|s| !s.is_empty())
        .fold(base.to_path_buf(), |p, s| p.join(s))
}
