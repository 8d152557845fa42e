//! One boot step: run it, time it, print its status line and its problems.
//!
//! The steps are [`Step::ALL`], in boot order; each module that does the
//! work of a step exports the function that turns its result into a
//! [`Status`] (`discover::step`, `net::step`, ...), and `main.rs` runs them.

use std::sync::Mutex;
use std::time::Instant;

use crate::console::{console, Outcome};

/// A boot step. [`Step::name`] is the word its console line, the step log
/// (`phase-init status`) and `boot.json`'s step timings use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Mounts,
    Cmdline,
    Modules,
    Loader,
    Platform,
    Clock,
    Trust,
    Identity,
    Network,
    Cache,
    Discover,
    Tor,
    Fetch,
    Grace,
    Artifact,
    Private,
    Measure,
    Route,
    Payload,
    Kexec,
    Rootfs,
    Move,
    Switch,
    /// Stage 2's `identity`: stage 1's MACs again, from `boot.json`.
    TargetIdentity,
    Services,
}

impl Step {
    /// Every step in boot order: the common steps, stage 1, stage 2.
    pub const ALL: [Step; 25] = [
        Step::Mounts,
        Step::Cmdline,
        Step::Modules,
        Step::Loader,
        Step::Platform,
        Step::Clock,
        Step::Trust,
        Step::Identity,
        Step::Network,
        Step::Cache,
        Step::Discover,
        Step::Tor,
        Step::Fetch,
        Step::Grace,
        Step::Artifact,
        Step::Private,
        Step::Measure,
        Step::Route,
        Step::Payload,
        Step::Kexec,
        Step::Rootfs,
        Step::Move,
        Step::Switch,
        Step::TargetIdentity,
        Step::Services,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Mounts => "mounts",
            Step::Cmdline => "cmdline",
            Step::Modules => "modules",
            Step::Loader => "loader",
            Step::Platform => "platform",
            Step::Clock => "clock",
            Step::Trust => "trust",
            Step::Identity | Step::TargetIdentity => "identity",
            Step::Network => "network",
            Step::Cache => "cache",
            Step::Discover => "discover",
            Step::Tor => "tor",
            Step::Fetch => "fetch",
            Step::Grace => "grace",
            Step::Artifact => "artifact",
            Step::Private => "private",
            Step::Measure => "measure",
            Step::Route => "route",
            Step::Payload => "payload",
            Step::Kexec => "kexec",
            Step::Rootfs => "rootfs",
            Step::Move => "move",
            Step::Switch => "switch",
            Step::Services => "services",
        }
    }
}

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

/// Runs `f` as `step` and prints `[  t.ttts] name  ok  N ms  detail`, then
/// one warning line per problem; records it in the step log
/// ([`crate::status`]). Returns what `f` produced.
pub fn run<T>(step: Step, f: impl FnOnce() -> (T, Status)) -> T {
    let name = step.name();
    let start = Instant::now();
    let (value, status) = f();
    let took = start.elapsed();
    if let Ok(mut t) = TIMINGS.lock() {
        t.push((name.to_owned(), took.as_millis() as u64));
    }
    crate::status::record_step(name, status.outcome, &status.detail, &status.problems, took);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// main.rs's `//!` list at the top: numbered 1..N, the names of
    /// `Step::ALL` in its order, so the boot's table of contents cannot
    /// drift from the steps that run.
    #[test]
    fn the_step_list_at_the_top_of_main_is_step_all() {
        let listed: Vec<(u32, String)> = include_str!("main.rs")
            .lines()
            .map_while(|l| l.strip_prefix("//!"))
            .filter_map(|l| {
                let (n, rest) = l.trim_start().split_once(". ")?;
                Some((n.parse().ok()?, rest.split_whitespace().next()?.to_owned()))
            })
            .collect();
        let expected: Vec<(u32, String)> = (1..)
            .zip(Step::ALL.iter().map(|s| s.name().to_owned()))
            .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn only_the_two_identity_steps_share_a_name() {
        let mut names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before - names.len(), 1, "{names:?}");
        assert_eq!(Step::Identity.name(), Step::TargetIdentity.name());
    }
}
