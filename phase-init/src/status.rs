//! The step log and `phase-init status`.
//!
//! Every boot step is recorded with its outcome, time and problems (the
//! step runner calls [`record_step`]); the failure line that sends the boot to the rescue shell is
//! recorded too. PID 1 writes the whole log to [`STEPS_FILE`] (tmpfs) after
//! each step, so the rescue shell can show it: `phase-init status` (a
//! symlink `/bin/phase-init -> /init` that PID 1 makes before the first
//! shell) or `/init status` reads the file and prints one line per step.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::console::{uptime, Outcome};

/// Where PID 1 keeps the step log (`/run` is a tmpfs).
pub const STEPS_FILE: &str = "/run/phase/steps.json";

/// The command name the rescue shell uses (a symlink to `/init`).
pub const COMMAND: &str = "phase-init";

/// Where that symlink goes.
pub const COMMAND_LINK: &str = "/bin/phase-init";

/// One step as it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub step: String,
    /// `ok`, `warn` or `fail`.
    pub outcome: String,
    /// Milliseconds since boot when the step ended.
    pub at_ms: u64,
    /// How long it took.
    pub ms: u64,
    pub detail: String,
    pub problems: Vec<String>,
}

/// The whole log: `/run/phase/steps.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepLog {
    pub version: u32,
    pub steps: Vec<StepRecord>,
    /// The line that ended the boot in the rescue shell, if it did.
    pub failure: Option<String>,
}

struct Recorder {
    log: StepLog,
    file: Option<PathBuf>,
}

static RECORDER: Mutex<Recorder> = Mutex::new(Recorder {
    log: StepLog {
        version: 1,
        steps: Vec::new(),
        failure: None,
    },
    file: None,
});

/// From now on, write the log to `path` after every change (PID 1 only;
/// tests and tools never call it, so they never write `/run`).
pub fn persist_to(path: impl Into<PathBuf>) {
    if let Ok(mut r) = RECORDER.lock() {
        r.file = Some(path.into());
        save(&r);
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Warn => "warn",
        Outcome::Fail => "fail",
    }
}

/// Records one step as it ended (the step runner calls it for every step).
pub fn record_step(
    name: &str,
    outcome: Outcome,
    detail: &str,
    problems: &[String],
    took: Duration,
) {
    if let Ok(mut r) = RECORDER.lock() {
        r.log.steps.push(StepRecord {
            step: name.to_owned(),
            outcome: outcome_word(outcome).to_owned(),
            at_ms: uptime().as_millis() as u64,
            ms: took.as_millis() as u64,
            detail: detail.to_owned(),
            problems: problems.to_vec(),
        });
        save(&r);
    }
}

/// Records the line that ends the boot (the caller prints it).
pub fn record_failure(line: &str) {
    if let Ok(mut r) = RECORDER.lock() {
        r.log.failure = Some(line.to_owned());
        save(&r);
    }
}

/// The log so far.
pub fn snapshot() -> StepLog {
    RECORDER.lock().map(|r| r.log.clone()).unwrap_or_default()
}

fn save(r: &Recorder) {
    let Some(path) = &r.file else { return };
    // Best effort: a full tmpfs must not stop the boot.
    let _ = write_atomic(path, &r.log);
}

fn write_atomic(path: &Path, log: &StepLog) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(log)?)?;
    std::fs::rename(&tmp, path)
}

/// Reads a step log written by PID 1.
pub fn read(path: &Path) -> Result<StepLog, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {}: {e} (is this the Phase Boot initramfs, after PID 1 started?)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a step log: {e}", path.display()))
}

/// The log as text: one line per step, its problems indented below it, then
/// the failure line.
pub fn render(log: &StepLog) -> String {
    let mut out = String::from("step      result    took      at  detail\n");
    for s in &log.steps {
        out.push_str(&format!(
            "{:9} {:5} {:>7} ms {:>6.1}s  {}\n",
            s.step,
            s.outcome,
            s.ms,
            s.at_ms as f64 / 1000.0,
            s.detail
        ));
        for p in &s.problems {
            out.push_str(&format!("          ! {p}\n"));
        }
    }
    let total: u64 = log.steps.iter().map(|s| s.ms).sum();
    out.push_str(&format!(
        "{} step(s), {total} ms in steps\n",
        log.steps.len()
    ));
    match &log.failure {
        Some(f) => out.push_str(&format!("boot failed: {f}\n")),
        None => out.push_str("no boot failure recorded\n"),
    }
    out
}

/// `phase-init status [FILE]` and `phase-init help`: the rescue shell's
/// view of the boot (phase-init run as anything but PID 1; the kernel's init
/// is always PID 1, so its arguments never get here). Returns the exit code.
pub fn command(args: &[String]) -> i32 {
    match args.get(1).map(String::as_str) {
        Some("status") => {
            let path = args
                .get(2)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(STEPS_FILE));
            match read(&path) {
                Ok(log) => {
                    print!("{}", render(&log));
                    0
                }
                Err(e) => {
                    eprintln!("phase-init status: {e}");
                    1
                }
            }
        }
        Some("help" | "--help" | "-h") => {
            println!(
                "usage: phase-init status [FILE]   the boot's step log (default {STEPS_FILE})"
            );
            0
        }
        Some(other) => {
            eprintln!("phase-init: unknown command {other:?}; try `phase-init status`");
            2
        }
        None => {
            eprintln!(
                "phase-init: as a command it takes `status`; as PID 1 it boots (it mounts, loads modules and powers off)"
            );
            2
        }
    }
}

/// Makes `/bin/phase-init -> /init` so the rescue shell finds the command.
pub fn install_command_link() -> std::io::Result<()> {
    match std::fs::symlink_metadata(COMMAND_LINK) {
        Ok(_) => Ok(()),
        Err(_) => std::os::unix::fs::symlink("/init", COMMAND_LINK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StepLog {
        StepLog {
            version: 1,
            steps: vec![
                StepRecord {
                    step: "mounts".into(),
                    outcome: "ok".into(),
                    at_ms: 1200,
                    ms: 3,
                    detail: "/proc /sys".into(),
                    problems: vec![],
                },
                StepRecord {
                    step: "fetch".into(),
                    outcome: "fail".into(),
                    at_ms: 5400,
                    ms: 812,
                    detail: String::new(),
                    problems: vec!["TUF refresh failed".into()],
                },
            ],
            failure: Some("boot: no verified boot set".into()),
        }
    }

    #[test]
    fn render_shows_every_step_problem_and_the_failure() {
        let text = render(&sample());
        assert!(
            text.contains("mounts    ok          3 ms    1.2s  /proc /sys"),
            "{text}"
        );
        assert!(text.contains("fetch     fail      812 ms"), "{text}");
        assert!(text.contains("! TUF refresh failed"), "{text}");
        assert!(text.contains("2 step(s), 815 ms in steps"), "{text}");
        assert!(
            text.ends_with("boot failed: boot: no verified boot set\n"),
            "{text}"
        );
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/phase/steps.json");
        write_atomic(&path, &sample()).unwrap();
        assert_eq!(read(&path).unwrap(), sample());
        std::fs::write(&path, "{\"version\":1}").unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.contains("is not a step log"), "{e}");
        let e = read(&dir.path().join("nope.json")).unwrap_err();
        assert!(e.contains("cannot read") && e.contains("nope.json"), "{e}");
    }

    #[test]
    fn unknown_or_missing_commands_are_usage_errors() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command(&v(&["phase-init", "frobnicate"])), 2);
        assert_eq!(command(&v(&["phase-init"])), 2);
        assert_eq!(command(&v(&["phase-init", "help"])), 0);
    }
}
