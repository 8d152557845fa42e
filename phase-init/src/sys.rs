//! The only unsafe code of phase-init: what std cannot express safely.
//!
//! Everything else goes through rustix's safe wrappers.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Makes sure fds 0, 1 and 2 are the console. The kernel opens
/// `/dev/console` for init, but only if the node exists when init starts;
/// after devtmpfs is mounted we can open it ourselves.
pub fn ensure_stdio_console() {
    if rustix::io::fcntl_getfd(std::io::stdout()).is_ok() {
        return;
    }
    let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    // Failures leave the fds as they were: there is no console to report to.
    let _ = rustix::stdio::dup2_stdin(&console);
    let _ = rustix::stdio::dup2_stdout(&console);
    let _ = rustix::stdio::dup2_stderr(&console);
}

/// Spawns `cmd` as the leader of a new session whose controlling terminal is
/// its stdin (which must be a tty), so a shell gets job control.
pub fn spawn_session_leader(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes two raw syscalls through
    // rustix (setsid, ioctl TIOCSCTTY): no allocation, no locks, no access to
    // state shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    cmd.spawn()
}
