//! Power off (the `phase.test=poweroff` hook; later also the configured
//! fallback after a failed boot).

use std::io;

/// Syncs the disks and powers the machine off. Returns only if the kernel
/// refused, with the reason.
pub fn power_off() -> io::Error {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        Ok(()) => io::Error::other("reboot(POWER_OFF) returned without powering off"),
        Err(e) => e.into(),
    }
}

/// Syncs the disks and reboots. Returns only if the kernel refused.
pub fn reboot() -> io::Error {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::Restart) {
        Ok(()) => io::Error::other("reboot(RESTART) returned without rebooting"),
        Err(e) => e.into(),
    }
}
