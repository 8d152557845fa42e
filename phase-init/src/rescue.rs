//! The rescue shell: busybox `sh` on the console with job control, respawned
//! whenever it exits. PID 1 reaps every zombie while it waits.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitOptions, WaitStatus};

use crate::console::console;

/// The shell the image carries (busybox, via the `/bin/sh` symlink).
pub const SHELL: &str = "/bin/sh";

/// A shell that exits sooner than this after starting counts as a quick exit;
/// quick exits in a row back off up to [`MAX_BACKOFF`].
const QUICK_EXIT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The terminals to offer a shell on: every active console (so a machine
/// with a screen gets one on the first VT and one on the serial port), the
/// device behind `/dev/console` (the last active one) first. `tty0` means
/// "the current VT", which is `tty1` at boot.
pub fn console_ttys() -> Vec<String> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for name in active.split_whitespace().rev() {
        let name = if name == "tty0" { "tty1" } else { name };
        let dev = format!("/dev/{name}");
        if Path::new(&dev).exists() && !out.contains(&dev) {
            out.push(dev);
        }
    }
    if out.is_empty() {
        out.push("/dev/console".to_owned());
    }
    out
}

fn open_tty(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// One terminal with its shell.
#[derive(Debug)]
struct Seat {
    tty: String,
    pid: Option<Pid>,
    started: Instant,
    backoff: Duration,
    next_start: Instant,
}

impl Seat {
    fn new(tty: String) -> Self {
        let now = Instant::now();
        Seat {
            tty,
            pid: None,
            started: now,
            backoff: Duration::ZERO,
            next_start: now,
        }
    }

    fn start(&mut self) {
        let c = console();
        self.started = Instant::now();
        match spawn_shell(&self.tty) {
            Ok(pid) => {
                self.pid = Some(pid);
                c.line(&format!(
                    "rescue: shell on {} (exit it to get a new one)",
                    self.tty
                ));
            }
            Err(e) => {
                c.line(&format!(
                    "rescue: cannot start {SHELL} on {}: {e}",
                    self.tty
                ));
                self.schedule_restart();
            }
        }
    }

    fn exited(&mut self, status: WaitStatus) {
        self.pid = None;
        console().line(&format!(
            "rescue: shell on {} exited ({})",
            self.tty,
            describe(Some(status))
        ));
        self.schedule_restart();
    }

    /// Quick exits in a row back off (1, 2, 4 ... 30 s); a shell that ran a
    /// while is restarted at once.
    fn schedule_restart(&mut self) {
        self.backoff = if self.started.elapsed() < QUICK_EXIT {
            (self.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        if !self.backoff.is_zero() {
            console().line(&format!(
                "rescue: restarting the shell on {} in {} s",
                self.tty,
                self.backoff.as_secs()
            ));
        }
        self.next_start = Instant::now() + self.backoff;
    }
}

/// Runs a rescue shell on every console, forever. Never returns.
pub fn shell_forever() -> ! {
    if !Path::new(SHELL).exists() {
        console().line(&format!(
            "rescue: {SHELL} is missing from the initramfs; nothing to run, idling"
        ));
        reap_forever();
    }
    match crate::status::install_command_link() {
        Ok(()) => {
            console().line("rescue: `phase-init status` prints the boot's steps and why it stopped")
        }
        Err(e) => console().line(&format!(
            "rescue: cannot link {} to /init ({e}); `/init status` prints the boot's steps",
            crate::status::COMMAND_LINK
        )),
    }
    let mut seats: Vec<Seat> = console_ttys().into_iter().map(Seat::new).collect();
    loop {
        let now = Instant::now();
        for seat in seats.iter_mut() {
            if seat.pid.is_none() && now >= seat.next_start {
                seat.start();
            }
        }
        let next_start = seats
            .iter()
            .filter(|s| s.pid.is_none())
            .map(|s| s.next_start)
            .min();
        let options = if next_start.is_some() {
            WaitOptions::NOHANG
        } else {
            WaitOptions::empty()
        };
        match rustix::process::wait(options) {
            Ok(Some((pid, status))) => {
                if let Some(seat) = seats.iter_mut().find(|s| s.pid == Some(pid)) {
                    seat.exited(status);
                }
                // Anything else was an orphan: reaped, nothing more to do.
            }
            Err(rustix::io::Errno::INTR) => {}
            // Nothing exited (NOHANG) or no children: wait for the next restart.
            Ok(None) | Err(_) => {
                let until = next_start.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(500)),
                );
            }
        }
    }
}

fn spawn_shell(tty: &str) -> std::io::Result<Pid> {
    let t = open_tty(tty)?;
    let mut cmd = Command::new(SHELL);
    cmd.arg("-l")
        .env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/")
        .env("TERM", "linux")
        .env("PS1", "(phase rescue) \\w # ")
        .current_dir("/")
        .stdin(Stdio::from(t.try_clone()?))
        .stdout(Stdio::from(t.try_clone()?))
        .stderr(Stdio::from(t));
    let child = crate::sys::spawn_session_leader(&mut cmd)?;
    // The pid of a child we just spawned is never 0.
    Pid::from_raw(child.id() as i32).ok_or_else(|| std::io::Error::other("child pid 0"))
}

/// Reaps whatever exits, forever (when there is nothing else to do).
fn reap_forever() -> ! {
    loop {
        sleep_reaping(Duration::from_secs(60));
    }
}

/// Sleeps for `d`, reaping zombies once a second.
fn sleep_reaping(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
    }
}

fn describe(status: Option<WaitStatus>) -> String {
    let Some(s) = status else {
        return "lost track of it".to_owned();
    };
    if let Some(code) = s.exit_status() {
        return format!("status {code}");
    }
    if let Some(sig) = s.terminating_signal() {
        return format!("signal {sig}");
    }
    "stopped".to_owned()
}
