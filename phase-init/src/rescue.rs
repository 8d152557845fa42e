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

/// The real device behind `/dev/console` (the last of
/// `/sys/class/tty/console/active`), which can become a controlling terminal.
pub fn console_tty() -> String {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    match active.split_whitespace().last() {
        Some(name) if Path::new("/dev").join(name).exists() => format!("/dev/{name}"),
        _ => "/dev/console".to_owned(),
    }
}

fn open_tty(path: &str) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Runs the rescue shell forever. Never returns.
pub fn shell_forever() -> ! {
    let c = console();
    let mut backoff = Duration::ZERO;
    loop {
        if !Path::new(SHELL).exists() {
            c.line(&format!(
                "rescue: {SHELL} is missing from the initramfs; nothing to run, idling"
            ));
            reap_forever();
        }
        let tty = console_tty();
        let started = Instant::now();
        match spawn_shell(&tty) {
            Ok(pid) => {
                c.line(&format!(
                    "rescue: shell on {tty} (exit it to get a new one)"
                ));
                let status = wait_for(pid);
                c.line(&format!("rescue: shell exited ({})", describe(status)));
            }
            Err(e) => c.line(&format!("rescue: cannot start {SHELL} on {tty}: {e}")),
        }
        backoff = if started.elapsed() < QUICK_EXIT {
            (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        if !backoff.is_zero() {
            c.line(&format!("rescue: restarting in {} s", backoff.as_secs()));
            sleep_reaping(backoff);
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

/// Waits until `pid` exits, reaping every other child on the way.
fn wait_for(pid: Pid) -> Option<WaitStatus> {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((p, status))) if p == pid => return Some(status),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            // ECHILD: nothing left to wait for.
            Err(_) => return None,
        }
    }
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
