//! The control protocol between `plasmd daemon` and its clients
//! (`plasmd submit`, `status`, `logs`): one JSON object per line over the
//! daemon's Unix socket. A client connects, sends one [`Request`] line and
//! reads one [`Response`] line; the daemon then closes the connection.
//!
//! ```text
//! -> {"op":"submit","job":"hello","wait":false}
//! <- {"ok":true,"run":{"id":"hello-2","job":"hello","state":"queued",...}}
//! -> {"op":"status"}
//! <- {"ok":true,"runs":[{...},{...}]}
//! -> {"op":"logs","run":"hello"}            (a run id, or a job name: its latest run)
//! <- {"ok":true,"run":{...},"log":"Hello from Phase WASM on node-7\n..."}
//! <- {"ok":false,"error":"no run or job named \"nope\""}
//! ```
//!
//! The server side (accepting, answering) is [`crate::daemon`]; the client
//! side is [`call`].

use std::io::{BufRead, BufReader, Read as _, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::outcome::JobOutcome;

/// Longest request line.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Resolve and run a job. With `wait`, answer when it has ended.
    Submit {
        job: String,
        #[serde(default)]
        wait: bool,
    },
    /// Every run this daemon knows.
    Status,
    /// The log of a run (by id), or of a job's latest run (by job name).
    Logs { run: String },
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Refreshing TUF, fetching and verifying the bytes.
    Resolving,
    /// Verified, waiting for a free slot.
    Queued,
    /// Running.
    Running,
    /// Ended; `outcome` says how.
    Done,
    /// Refused before running (not signed, altered, not fetchable); `error`
    /// says why.
    Refused,
    /// The host could not set the run up; `error` says why.
    Failed,
}

/// One run as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub job: String,
    pub state: RunState,
    pub submitted: DateTime<Utc>,
    /// Hex SHA-256 of the verified module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `cache` or the peers the bytes came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Status and resource use, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobOutcome>,
}

impl RunInfo {
    /// One line for humans: id, job, state and what it used.
    pub fn summary(&self) -> String {
        let mut s = format!("{:<16} {:<12} ", self.id, self.job);
        match (&self.state, &self.outcome, &self.error) {
            (RunState::Done, Some(o), _) => s.push_str(&format!(
                "{} (fuel {}, peak memory {} B, {} ms)",
                o.status, o.usage.fuel, o.usage.peak_memory_bytes, o.usage.wall_ms
            )),
            (st, _, Some(e)) => s.push_str(&format!("{} : {e}", state_word(*st))),
            (st, _, None) => s.push_str(state_word(*st)),
        }
        s
    }
}

fn state_word(s: RunState) -> &'static str {
    match s {
        RunState::Resolving => "resolving",
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Done => "done",
        RunState::Refused => "refused",
        RunState::Failed => "failed",
    }
}

/// A control answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RunInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl Response {
    /// A failure answer.
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::default()
        }
    }
}

/// Client side: send one request, read one response (blocking).
pub fn call(socket: &Path, req: &Request) -> Result<Response, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to plasmd at {}: {e} (is `plasmd daemon` running, and may you open its socket?)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("cannot send the request to {}: {e}", socket.display()))?;
    let mut resp = Vec::new();
    BufReader::new(s)
        .take(256 << 20)
        .read_until(b'\n', &mut resp)
        .map_err(|e| format!("cannot read the answer from {}: {e}", socket.display()))?;
    if resp.is_empty() {
        return Err(format!(
            "plasmd at {} closed without answering",
            socket.display()
        ));
    }
    serde_json::from_slice(&resp).map_err(|e| format!("plasmd sent an unreadable answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_named() {
        let r: Request = serde_json::from_str(r#"{"op":"submit","job":"hello"}"#).expect("submit");
        assert_eq!(
            r,
            Request::Submit {
                job: "hello".into(),
                wait: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"logs","run":"hello-1"}"#).expect("logs");
        assert_eq!(
            r,
            Request::Logs {
                run: "hello-1".into()
            }
        );
        let e = serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).expect_err("unknown op");
        assert!(e.to_string().contains("reboot"), "{e}");
        assert!(serde_json::from_str::<Request>(r#"{"op":"submit"}"#).is_err());
    }
}
