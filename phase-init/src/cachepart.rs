//! The cache partition: GPT partition label `PHASE-CACHE`, ext4.
//!
//! Found through the kernel's view of the block devices
//! (`/sys/class/block/*/uevent`, `PARTNAME=` and `DEVNAME=`), mounted at
//! [`MOUNT_POINT`] read-write, or read-only when writes are not allowed
//! (`phase.nowrite`, private mode).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{mount, MountFlags};

use crate::step::Status;

/// GPT partition name the image builder gives the cache partition.
pub const PARTNAME: &str = "PHASE-CACHE";
/// Where the cache partition is mounted.
pub const MOUNT_POINT: &str = "/run/phase/cache";
/// How long to wait for the partition to appear (block drivers probe
/// while the modules load; USB sticks can take a moment).
pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no partition labelled {PARTNAME} appeared within {} s", .0.as_secs())]
    NotFound(Duration),
    #[error("cannot create the mount point {0}")]
    MountPoint(PathBuf, #[source] io::Error),
    #[error(
        "cannot mount {dev} ({mode}) as ext4 at {MOUNT_POINT} (is ext4.ko in the module list?)"
    )]
    Mount {
        dev: PathBuf,
        mode: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The mounted cache partition.
#[derive(Debug, Clone)]
pub struct Mounted {
    pub device: PathBuf,
    pub dir: PathBuf,
    pub writable: bool,
}

/// The `DEVNAME` of the block device whose uevent carries
/// `PARTNAME=<label>`, from the uevent files under `sys_block`.
pub fn find(sys_block: &Path, label: &str) -> Option<String> {
    let mut names: Vec<_> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    names.sort();
    names.into_iter().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("uevent")).ok()?;
        devname_if_labelled(&text, label)
    })
}

/// `DEVNAME` of one uevent text if its `PARTNAME` is `label`.
pub fn devname_if_labelled(uevent: &str, label: &str) -> Option<String> {
    let field = |key: &str| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    (field("PARTNAME")? == label).then(|| field("DEVNAME").map(str::to_owned))?
}

/// `/dev/<name>` of the partition labelled `label`, waiting up to `wait`
/// for it to appear (`None`: it did not).
pub fn wait_for(label: &str, wait: Duration) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if let Some(d) = find(Path::new("/sys/class/block"), label) {
            return Some(Path::new("/dev").join(d));
        }
        if start.elapsed() >= wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to `wait` for the partition, then mounts it.
pub fn mount_cache(writable: bool, wait: Duration) -> Result<Mounted, CacheError> {
    let device = wait_for(PARTNAME, wait).ok_or(CacheError::NotFound(wait))?;
    let dir = PathBuf::from(MOUNT_POINT);
    std::fs::create_dir_all(&dir).map_err(|e| CacheError::MountPoint(dir.clone(), e))?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if !writable {
        flags |= MountFlags::RDONLY;
    }
    // Read-only also means no journal replay (`noload`): a read-only ext4
    // mount would otherwise still write the replayed journal to the disk.
    let data = if writable { None } else { Some(c"noload") };
    mount(&device, &dir, "ext4", flags, data).map_err(|e| CacheError::Mount {
        dev: device.clone(),
        mode: if writable { "read-write" } else { "read-only" },
        source: e.into(),
    })?;
    Ok(Mounted {
        device,
        dir,
        writable,
    })
}

/// The `cache` boot step: the cache partition, unless
/// `phase.cache=disabled`; read-only when writes are not allowed. A missing
/// partition is a warning: the peers may still have everything.
pub fn step(config: &crate::cmdline::Config) -> (Option<Mounted>, Status) {
    if config.cache == crate::cmdline::Cache::Disabled {
        return (None, Status::ok("disabled (phase.cache=disabled)"));
    }
    match mount_cache(!config.nowrite(), WAIT) {
        Ok(m) => {
            let detail = format!(
                "{} at {} {}",
                m.device.display(),
                m.dir.display(),
                if m.writable {
                    "read-write"
                } else {
                    "read-only"
                }
            );
            (Some(m), Status::ok(detail))
        }
        Err(e) => (
            None,
            Status::with_problems(
                "none",
                vec![format!(
                    "{}; continuing with peers only",
                    crate::step::chain(&e)
                )],
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_labelled_partition() {
        let dir = tempfile::tempdir().unwrap();
        for (n, text) in [
            ("vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n"),
            (
                "vda1",
                "MAJOR=254\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=ESP\n",
            ),
            (
                "vda2",
                "MAJOR=254\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=PHASE-CACHE\n",
            ),
        ] {
            std::fs::create_dir(dir.path().join(n)).unwrap();
            std::fs::write(dir.path().join(n).join("uevent"), text).unwrap();
        }
        assert_eq!(find(dir.path(), PARTNAME).as_deref(), Some("vda2"));
        assert_eq!(find(dir.path(), "OTHER"), None);
        assert_eq!(
            devname_if_labelled("PARTNAME=PHASE-CACHE-2\nDEVNAME=x", PARTNAME),
            None
        );
        assert_eq!(
            devname_if_labelled("PARTNAME=PHASE-CACHE\n", PARTNAME),
            None
        );
    }
}
