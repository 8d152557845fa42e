//! One boot step: run it, time it, print its status line and its problems.

use std::sync::Mutex;
use std::time::Instant;

use crate::console::{console, Outcome};

/// What a step reports about itself.
#[derive(Debug)]
pub struct Status {
    pub outcome: Outcome,
    /// Shown on the status line after the time.
    pub detail: String,
    /// One line each, printed as warnings after the status line.
    pub problems: Vec<String>,
}

impl Status {
    pub fn ok(detail: impl Into<String>) -> Self {
        Status {
            outcome: Outcome::Ok,
            detail: detail.into(),
            problems: Vec::new(),
        }
    }

    /// `Ok` when `problems` is empty, else `Warn`.
    pub fn with_problems(detail: impl Into<String>, problems: Vec<String>) -> Self {
        let outcome = if problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Warn
        };
        Status {
            outcome,
            detail: detail.into(),
            problems,
        }
    }

    pub fn fail(problem: impl Into<String>) -> Self {
        Status {
            outcome: Outcome::Fail,
            detail: String::new(),
            problems: vec![problem.into()],
        }
    }
}

/// Runs `f` as the step `name` and prints `[  t.ttts] name  ok  N ms  detail`,
/// then one warning line per problem. Returns what `f` produced.
pub fn run<T>(name: &str, f: impl FnOnce() -> (T, Status)) -> T {
    let start = Instant::now();
    let (value, status) = f();
    let took = start.elapsed();
    if let Ok(mut t) = TIMINGS.lock() {
        t.push((name.to_owned(), took.as_millis() as u64));
    }
    crate::status::record_step(name, &status, took);
    let c = console();
    c.step(name, status.outcome, took, &status.detail);
    for p in &status.problems {
        c.warn(p);
    }
    value
}

static TIMINGS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// Every step run so far with its duration in milliseconds (for `boot.json`).
pub fn timings() -> Vec<(String, u64)> {
    TIMINGS.lock().map(|t| t.clone()).unwrap_or_default()
}

/// Formats an error with its whole `source()` chain: `a: b: c`.
pub use verifier::error_chain as chain;
