//! The console: the user interface of PID 1.
//!
//! Every line goes to `/dev/console` (fd 1, which the kernel opens for init),
//! to every other active console in `/sys/class/tty/console/active` (so a
//! screen on `tty0` sees what the serial console sees), and to `/dev/kmsg` at
//! debug level (so `dmesg` in the rescue shell has the boot log in order with
//! the kernel's, without the kernel echoing each line a second time).
//!
//! Format (docs/phase-init.md): a time since boot, then the text.
//!
//! ```text
//! [  1.234s] mounts   ok       3 ms  /proc /sys /dev /dev/pts /dev/shm /run
//! [  1.236s] warning: phase.mdoe: unknown parameter, ignored (known: ...)
//! phase-init: ready mode=local channel=stable
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything the step tried worked.
    Ok,
    /// The step finished but something in it went wrong (named on the next lines).
    Warn,
    /// The step could not do its job.
    Fail,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        }
    }
}

/// The console sinks; one per process, see [`console`].
#[derive(Debug)]
pub struct Console {
    sinks: Mutex<Sinks>,
}

#[derive(Debug, Default)]
struct Sinks {
    /// Active consoles other than `/dev/console` itself.
    extra: Vec<File>,
    kmsg: Option<File>,
}

/// The process-wide console.
pub fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| Console {
        sinks: Mutex::new(Sinks::default()),
    })
}

/// Time since boot (CLOCK_MONOTONIC, the clock of the kernel's own timestamps).
pub fn uptime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// `[  1.234s] ` — seconds since boot with milliseconds.
pub fn stamp(t: Duration) -> String {
    format!("[{:>3}.{:03}s]", t.as_secs(), t.subsec_millis())
}

/// A step line without the stamp: `mounts   ok       3 ms  detail`.
pub fn step_text(name: &str, outcome: Outcome, took: Duration, detail: &str) -> String {
    let ms = took.as_millis();
    let mut s = format!("{name:<8} {:<4} {ms:>5} ms", outcome.word());
    if !detail.is_empty() {
        s.push_str("  ");
        s.push_str(detail);
    }
    s
}

impl Console {
    /// Opens `/dev/kmsg` and the other active consoles; call after `/dev`,
    /// `/proc` and `/sys` are mounted. Safe to call again (replaces the sinks).
    pub fn attach(&self) {
        crate::sys::ensure_stdio_console();
        // Without this the kernel drops all but 10 lines per 5 s from userspace.
        let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        let mut extra = Vec::new();
        let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
        let names: Vec<&str> = active.split_whitespace().collect();
        // The last active console is the one /dev/console (our fd 1) points at.
        if let Some((_, others)) = names.split_last() {
            for name in others {
                let opened = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc_noctty())
                    .open(format!("/dev/{name}"));
                if let Ok(f) = opened {
                    extra.push(f);
                }
            }
        }
        let mut sinks = self.lock();
        sinks.kmsg = kmsg;
        sinks.extra = extra;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sinks> {
        // A panic while holding the lock must not silence the console.
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one line as is (no stamp) to every sink.
    pub fn raw(&self, line: &str) {
        let mut sinks = self.lock();
        let text = format!("{line}\n");
        // Console errors have nowhere to go; a missing console must not stop the boot.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        for f in &mut sinks.extra {
            let _ = f.write_all(text.as_bytes());
        }
        if let Some(k) = sinks.kmsg.as_mut() {
            // <15> = facility user, level debug: kept in dmesg, not echoed.
            let _ = k.write_all(format!("<15>phase-init: {line}\n").as_bytes());
        }
    }

    /// For the panic hook: like [`Console::line`], but never waits for the
    /// sinks' lock (the panic may have happened while it was held); without
    /// the lock it writes to fd 1 and a freshly opened `/dev/kmsg`.
    pub fn emergency(&self, text: &str) {
        let line = format!("{} {text}", stamp(uptime()));
        match self.sinks.try_lock() {
            Ok(sinks) => {
                drop(sinks);
                self.raw(&line);
            }
            Err(_) => {
                // Straight to fd 1: std's stdout lock may be what panicked.
                let _ =
                    rustix::io::write(std::io::stdout().as_fd(), format!("{line}\n").as_bytes());
                if let Ok(mut k) = OpenOptions::new().write(true).open("/dev/kmsg") {
                    let _ = k.write_all(format!("<11>phase-init: {line}\n").as_bytes());
                }
            }
        }
    }

    /// `[  1.234s] text`
    pub fn line(&self, text: &str) {
        self.raw(&format!("{} {text}", stamp(uptime())));
    }

    /// `[  1.234s] warning: text`
    pub fn warn(&self, text: &str) {
        self.line(&format!("warning: {text}"));
    }

    /// The status line of one step.
    pub fn step(&self, name: &str, outcome: Outcome, took: Duration, detail: &str) {
        self.line(&step_text(name, outcome, took, detail));
    }
}

fn libc_noctty() -> i32 {
    rustix::fs::OFlags::NOCTTY.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_has_fixed_width_under_1000_s() {
        assert_eq!(stamp(Duration::from_millis(123)), "[  0.123s]");
        assert_eq!(stamp(Duration::from_millis(12_345)), "[ 12.345s]");
        assert_eq!(stamp(Duration::from_millis(999_999)), "[999.999s]");
    }

    #[test]
    fn step_text_aligns_columns() {
        assert_eq!(
            step_text(
                "mounts",
                Outcome::Ok,
                Duration::from_millis(4),
                "/proc /sys"
            ),
            "mounts   ok       4 ms  /proc /sys"
        );
        assert_eq!(
            step_text("modules", Outcome::Warn, Duration::from_millis(1234), ""),
            "modules  warn  1234 ms"
        );
    }
}
