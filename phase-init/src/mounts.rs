//! Early mounts, as a table (u-root's `libinit` style): what PID 1 needs
//! before anything else can run.

use std::ffi::CStr;
use std::io;
use std::path::Path;

use rustix::mount::{mount, MountFlags};

use crate::step::Status;

/// When a row applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always; a failure is a problem.
    Always,
    /// Only if the mount point already exists (e.g. efivarfs, which sysfs
    /// creates only on a UEFI boot).
    IfPresent,
}

/// One early mount.
#[derive(Debug)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: Option<&'static CStr>,
    pub when: When,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// The early mounts, in order (later rows mount inside earlier ones).
pub const EARLY_MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        when: When::Always,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        when: When::Always,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: Some(c"mode=0755"),
        when: When::Always,
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: Some(c"gid=5,mode=0620,ptmxmode=0666"),
        when: When::Always,
    },
    Mount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some(c"mode=1777"),
        when: When::Always,
    },
    // The kernel's lockdown level (`platform`), where the kernel has
    // securityfs.
    Mount {
        source: "securityfs",
        target: "/sys/kernel/security",
        fstype: "securityfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        when: When::IfPresent,
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some(c"mode=0755"),
        when: When::Always,
    },
];

/// Mounts that need a module first: efivarfs is `=m` in Debian's kernel, so
/// it is mounted after the module step.
pub const AFTER_MODULES: &[Mount] = &[Mount {
    source: "efivarfs",
    target: "/sys/firmware/efi/efivars",
    fstype: "efivarfs",
    flags: NOSUID_NODEV_NOEXEC,
    data: None,
    when: When::IfPresent,
}];

/// What [`mount_all`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Mounted now.
    pub mounted: Vec<&'static str>,
    /// Already mounted (EBUSY), e.g. a devtmpfs the kernel mounted itself.
    pub already: Vec<&'static str>,
    /// Rows that did not apply (mount point absent).
    pub skipped: Vec<&'static str>,
    /// Rows that failed, with the error.
    pub failed: Vec<(&'static str, io::Error)>,
}

impl Report {
    /// `/proc /sys /dev ...` — the mount points in effect.
    pub fn summary(&self) -> String {
        let mut all: Vec<&str> = self.mounted.clone();
        all.extend(&self.already);
        all.join(" ")
    }
}

/// Mounts every row of `table`, creating mount points; never stops early.
pub fn mount_all(table: &[Mount]) -> Report {
    let mut report = Report::default();
    for m in table {
        let target = Path::new(m.target);
        match m.when {
            When::IfPresent if !target.is_dir() => {
                report.skipped.push(m.target);
                continue;
            }
            _ => {}
        }
        if let Err(e) = std::fs::create_dir_all(target) {
            report.failed.push((m.target, e));
            continue;
        }
        match mount(m.source, m.target, m.fstype, m.flags, m.data) {
            Ok(()) => report.mounted.push(m.target),
            Err(rustix::io::Errno::BUSY) => report.already.push(m.target),
            Err(e) => report.failed.push((m.target, e.into())),
        }
    }
    report
}

/// The `mounts` boot step: [`EARLY_MOUNTS`].
pub fn step() -> ((), Status) {
    let r = mount_all(EARLY_MOUNTS);
    let problems = r
        .failed
        .iter()
        .map(|(target, e)| format!("mount {target}: {e}"))
        .collect();
    ((), Status::with_problems(r.summary(), problems))
}
