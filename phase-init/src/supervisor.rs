//! Exec mode: phase-init stays PID 1 and supervises the rootfs services
//! ([`crate::services`]).
//!
//! Services start as soon as everything in their `after` list is ready (a
//! `simple` service once started, a `oneshot` once it exited 0), so
//! independent services start in parallel. Exits are reaped (so are
//! orphans: we are PID 1), and restarted per policy after a backoff that
//! doubles up to 30 s (reset after a run of 30 s). Shutdown requests — the
//! signals busybox's `reboot` (SIGTERM), `poweroff` (SIGUSR2), `halt`
//! (SIGUSR1) and Ctrl-Alt-Del (SIGINT) send to PID 1 — are forwarded as
//! SIGTERM to every service's process group; what is still running 10 s
//! later gets SIGKILL. Then the caller powers off or reboots.
//!
//! Each event is one console line: `service <name>: started (pid N)`,
//! `service <name>: exited (status S)[; restarting in T s]`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::console::console;
use crate::services::{Kind, Restart, Service, Services};
use crate::step::Status;
use crate::sys;

/// How the machine should go down once the services are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    PowerOff,
    Reboot,
}

/// A run longer than this resets the restart counter.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// How long services get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest sleep between checks when nothing is scheduled.
const IDLE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running { pid: Pid, since: Instant },
    Backoff { until: Instant },
    Done,
}

#[derive(Debug)]
struct Unit {
    spec: Service,
    state: State,
    started_once: bool,
    succeeded: bool,
    restarts: u32,
}

impl Unit {
    fn ready(&self) -> bool {
        match self.spec.kind {
            Kind::Simple => self.started_once,
            Kind::Oneshot => self.succeeded,
        }
    }
}

/// What to do after an exit: restart after this delay, or not.
pub fn restart_delay(spec: &Service, success: bool, restarts: u32) -> Option<Duration> {
    let again = match spec.restart {
        Restart::Never => false,
        Restart::OnFailure => !success,
        Restart::Always => true,
    };
    again.then(|| spec.backoff(restarts))
}

/// What every service learns about the boot: `PHASE_MODE`,
/// `PHASE_CHANNEL`, and `PHASE_NOWRITE=1` when no disk may be written
/// (private mode or `phase.nowrite`), which services must respect.
pub fn boot_env(config: &crate::cmdline::Config) -> Vec<(String, String)> {
    vec![
        ("PHASE_MODE".into(), config.mode.as_str().into()),
        ("PHASE_CHANNEL".into(), config.channel.clone()),
        (
            "PHASE_NOWRITE".into(),
            if config.nowrite() { "1" } else { "0" }.into(),
        ),
    ]
}

fn describe(status: WaitStatus) -> (String, bool) {
    if let Some(code) = status.exit_status() {
        (format!("status {code}"), code == 0)
    } else if let Some(sig) = status.terminating_signal() {
        (format!("killed by signal {sig}"), false)
    } else {
        ("stopped".to_owned(), false)
    }
}

fn spawn(spec: &Service, base_env: &[(String, String)]) -> std::io::Result<Pid> {
    use std::os::unix::process::CommandExt;
    let child = Command::new(&spec.command)
        .args(&spec.args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/")
        .env("TERM", "linux")
        .envs(base_env.iter().map(|(k, v)| (k, v)))
        .envs(&spec.env)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()?;
    // The Child handle is dropped: PID 1 reaps every child with wait(-1)
    // (the services are in their own process groups, so waitpid(0) would
    // not see them).
    Pid::from_raw(child.id() as i32).ok_or_else(|| std::io::Error::other("spawn returned pid 0"))
}

/// Runs the services until a shutdown request; returns which one, after
/// stopping every service. Never returns otherwise. Every service gets
/// `base_env` (see [`boot_env`]) under its own `env`.
pub fn run(services: &Services, base_env: &[(String, String)]) -> Shutdown {
    let c = console();
    if let Err(e) = sys::block_signals(&sys::SUPERVISOR_SIGNALS) {
        c.line(&format!(
            "supervisor: cannot block signals ({e}); shutdown requests may be missed"
        ));
    }
    let mut units: BTreeMap<String, Unit> = services
        .services
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                Unit {
                    spec: s.clone(),
                    state: State::Waiting,
                    started_once: false,
                    succeeded: false,
                    restarts: 0,
                },
            )
        })
        .collect();
    loop {
        start_due(&mut units, base_env);
        let now = Instant::now();
        let next = units
            .values()
            .filter_map(|u| match u.state {
                State::Backoff { until } => Some(until.saturating_duration_since(now)),
                _ => None,
            })
            .min()
            .unwrap_or(IDLE_WAIT);
        match sys::wait_signal(&sys::SUPERVISOR_SIGNALS, next) {
            Some(libc::SIGTERM) | Some(libc::SIGINT) => {
                stop_all(&mut units, "reboot");
                return Shutdown::Reboot;
            }
            Some(libc::SIGUSR1) | Some(libc::SIGUSR2) => {
                stop_all(&mut units, "power off");
                return Shutdown::PowerOff;
            }
            _ => reap(&mut units, true),
        }
    }
}

/// Starts every waiting unit whose dependencies are ready and every unit
/// whose backoff is over. Repeats until nothing changes, so a chain of
/// `simple` services starts in one pass.
fn start_due(units: &mut BTreeMap<String, Unit>, base_env: &[(String, String)]) {
    let c = console();
    // Bounded: each round starts at least one unit or stops.
    for _ in 0..=units.len() {
        let now = Instant::now();
        let due: Vec<String> = units
            .iter()
            .filter(|(_, u)| match u.state {
                State::Waiting => u
                    .spec
                    .after
                    .iter()
                    .all(|d| units.get(d).is_some_and(Unit::ready)),
                State::Backoff { until } => until <= now,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for name in due {
            let Some(u) = units.get_mut(&name) else {
                continue;
            };
            match spawn(&u.spec, base_env) {
                Ok(pid) => {
                    c.line(&format!(
                        "service {name}: started (pid {})",
                        pid.as_raw_nonzero()
                    ));
                    u.state = State::Running {
                        pid,
                        since: Instant::now(),
                    };
                    u.started_once = true;
                }
                Err(e) => {
                    let delay = restart_delay(&u.spec, false, u.restarts);
                    match delay {
                        Some(d) => {
                            c.line(&format!(
                                "service {name}: cannot start {}: {e}; retrying in {:.1} s",
                                u.spec.command,
                                d.as_secs_f64()
                            ));
                            u.restarts += 1;
                            u.state = State::Backoff {
                                until: Instant::now() + d,
                            };
                        }
                        None => {
                            c.line(&format!(
                                "service {name}: cannot start {}: {e}; not restarting (restart = never)",
                                u.spec.command
                            ));
                            u.state = State::Done;
                        }
                    }
                }
            }
        }
    }
}

/// Reaps every exited child; `restart` false during shutdown.
fn reap(units: &mut BTreeMap<String, Unit>, restart: bool) {
    let c = console();
    // Bounded by the number of zombies, which is finite.
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        let Some((name, u)) = units
            .iter_mut()
            .find(|(_, u)| matches!(u.state, State::Running { pid: p, .. } if p == pid))
        else {
            continue; // an orphan reparented to PID 1
        };
        let State::Running { since, .. } = u.state else {
            continue;
        };
        let (what, success) = describe(status);
        if since.elapsed() >= STABLE_RUN {
            u.restarts = 0;
        }
        if success && u.spec.kind == Kind::Oneshot {
            u.succeeded = true;
        }
        match restart
            .then(|| restart_delay(&u.spec, success, u.restarts))
            .flatten()
        {
            Some(d) => {
                c.line(&format!(
                    "service {name}: exited ({what}); restarting in {:.1} s (restart {})",
                    d.as_secs_f64(),
                    u.restarts + 1
                ));
                u.restarts += 1;
                u.state = State::Backoff {
                    until: Instant::now() + d,
                };
            }
            None => {
                c.line(&format!("service {name}: exited ({what})"));
                u.state = State::Done;
            }
        }
    }
}

fn running(units: &BTreeMap<String, Unit>) -> Vec<Pid> {
    units
        .values()
        .filter_map(|u| match u.state {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        })
        .collect()
}

fn stop_all(units: &mut BTreeMap<String, Unit>, why: &str) {
    let c = console();
    let pids = running(units);
    c.line(&format!(
        "supervisor: {why} requested; stopping {} service(s)",
        pids.len()
    ));
    for pid in &pids {
        let _ = rustix::process::kill_process_group(*pid, Signal::TERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !running(units).is_empty() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        sys::wait_signal(&[libc::SIGCHLD], left.min(Duration::from_millis(200)));
        reap(units, false);
    }
    for pid in running(units) {
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
    }
}

/// The `services` boot step (exec mode): [`crate::services::SERVICES_FILE`]
/// for `config.mode`, one line per service its `modes` leave out, the start
/// order on the status line.
pub fn step(config: &crate::cmdline::Config) -> (Option<Services>, Status) {
    let file = std::path::Path::new(crate::services::SERVICES_FILE);
    match crate::services::load(file) {
        Ok(s) => {
            let (s, left_out) = s.for_mode(config.mode.as_str());
            for name in left_out {
                console().line(&format!(
                    "service {name}: not started in {} mode (its `modes` leave it out)",
                    config.mode
                ));
            }
            let waves: Vec<String> = s.waves().iter().map(|w| w.join(" ")).collect();
            let detail = format!(
                "exec mode: {} service(s), start order: {}",
                s.services.len(),
                waves.join(" | ")
            );
            (Some(s), Status::ok(detail))
        }
        Err(e) => (None, Status::fail(crate::step::chain(&e))),
    }
}

/// Exec mode after the `services` step: [`run`] until a shutdown request,
/// then power off or reboot. Returns only when that failed, after saying so.
pub fn serve(services: &Services, config: &crate::cmdline::Config) {
    let e = match run(services, &boot_env(config)) {
        Shutdown::PowerOff => {
            console().line("supervisor: powering off");
            crate::power::power_off()
        }
        Shutdown::Reboot => {
            console().line("supervisor: rebooting");
            crate::power::reboot()
        }
    };
    console().line(&format!("supervisor: shutdown failed: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::parse;

    #[test]
    fn restart_policy_decides_and_backoff_grows() {
        let s = parse(
            "[service.a]\ncommand = \"/x\"\nrestart = \"on-failure\"\nbackoff_ms = 100\n\
             [service.b]\ncommand = \"/x\"\nrestart = \"always\"\n\
             [service.c]\ncommand = \"/x\"\n",
            "f",
        )
        .expect("valid");
        let a = &s.services["a"];
        assert_eq!(restart_delay(a, true, 0), None);
        assert_eq!(restart_delay(a, false, 0), Some(Duration::from_millis(100)));
        assert_eq!(restart_delay(a, false, 3), Some(Duration::from_millis(800)));
        let b = &s.services["b"];
        assert_eq!(restart_delay(b, true, 0), Some(Duration::from_secs(1)));
        let c = &s.services["c"];
        assert_eq!(restart_delay(c, false, 0), None);
    }

    #[test]
    fn services_learn_the_write_policy() {
        let c = crate::cmdline::parse("phase.mode=private phase.channel=testing").config;
        let env = boot_env(&c);
        assert!(env.contains(&("PHASE_NOWRITE".into(), "1".into())));
        assert!(env.contains(&("PHASE_MODE".into(), "private".into())));
        assert!(env.contains(&("PHASE_CHANNEL".into(), "testing".into())));
        let env = boot_env(&crate::cmdline::Config::default());
        assert!(env.contains(&("PHASE_NOWRITE".into(), "0".into())));
    }

    #[test]
    fn readiness_follows_the_kind() {
        let s = parse(
            "[service.a]\ncommand = \"/x\"\n[service.b]\ncommand = \"/x\"\ntype = \"oneshot\"\n",
            "f",
        )
        .expect("valid");
        let mut u = Unit {
            spec: s.services["a"].clone(),
            state: State::Waiting,
            started_once: false,
            succeeded: false,
            restarts: 0,
        };
        assert!(!u.ready());
        u.started_once = true;
        assert!(u.ready(), "simple: ready once started");
        u.spec = s.services["b"].clone();
        assert!(!u.ready(), "oneshot: not before it succeeded");
        u.succeeded = true;
        assert!(u.ready());
    }
}
