//! Stage 2 (role "target", `phase.stage=target`): from the payload in the
//! target initramfs to the verified root filesystem.
//!
//! 1. `/phase/rootfs.squashfs` → a loop device (read-only, auto-clear) →
//!    squashfs mounted read-only at [`LOWER`]. When stage 1 left the
//!    rootfs's dm-verity parameters (`/phase/rootfs.verity.json`) and tree
//!    (`/phase/rootfs.verity`), the tree gets a loop device too and the
//!    squashfs is mounted from the device-mapper device
//!    [`VERITY_NAME`] (`/dev/dm-N`) whose dm-verity table comes from
//!    those signed parameters ([`open_verity`]): every block is checked as
//!    it is read, and a block that does not match reads as an I/O error;
//! 2. a tmpfs at [`RW`] holds the overlay's upper and work dirs (or, with
//!    `phase.persist=PARTNAME` and writes allowed, that partition's ext4
//!    file system does, under [`PERSIST_DIR`]: see [`upper_for`]); OverlayFS
//!    of the two at [`NEW_ROOT`];
//! 3. `/phase` (boot.json, the CAS) is bound read-only at `<root>/phase`;
//!    `/proc /sys /dev /run` are moved into the new root, and the lower and
//!    rw mounts under its `/run/phase/`;
//! 4. switch_root: delete the initramfs contents (not crossing mounts, and
//!    keeping `/phase`, which the bind and the loop device still use), move
//!    the new root onto `/`, chroot, chdir.
//!
//! Then [`handover`] says whether to exec systemd or supervise
//! `/etc/phase/services.toml`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{
    mount, mount_bind_recursive, mount_move, mount_remount, unmount, MountFlags, UnmountFlags,
};

use crate::cmdline::{Config, Mode};
use crate::payload;
use crate::step::Status;
use crate::sys;
use crate::{cachepart, step};

pub const LOWER: &str = "/.phase/lower";
/// The device-mapper name of the rootfs read through dm-verity.
pub const VERITY_NAME: &str = "phase-rootfs";
pub const RW: &str = "/.phase/rw";
pub const NEW_ROOT: &str = "/sysroot";
/// The payload directory kept across switch_root.
pub const PAYLOAD_DIR: &str = "/phase";
/// The directory on a `phase.persist` partition that holds the overlay's
/// `upper` and `work`; the rest of the partition is left alone, so it may
/// be the cache partition itself.
pub const PERSIST_DIR: &str = "phase-overlay";
/// How long stage 2 waits for the `phase.persist` partition to appear.
pub const PERSIST_WAIT: Duration = Duration::from_secs(5);

/// Where the overlay's upper, the target's changes, lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    /// A tmpfs: the changes are gone at power off (the default).
    Tmpfs,
    /// [`PERSIST_DIR`] on the ext4 file system of the GPT partition with
    /// this name (`phase.persist`): the changes are kept across boots.
    Partition(String),
}

/// The upper `config` asks for. `phase.persist` is honoured only when
/// writes are allowed; otherwise the second value says why it was set
/// aside (one line for the console).
pub fn upper_for(config: &Config) -> (Upper, Option<String>) {
    let Some(name) = &config.persist else {
        return (Upper::Tmpfs, None);
    };
    if config.nowrite() {
        let why = if config.mode == Mode::Private {
            "private mode writes no disk"
        } else {
            "phase.nowrite=true"
        };
        return (
            Upper::Tmpfs,
            Some(format!(
                "phase.persist={name} ignored: {why}; the target's changes stay in RAM"
            )),
        );
    }
    (Upper::Partition(name.clone()), None)
}

#[derive(Debug, thiserror::Error)]
pub enum Stage2Error {
    #[error("the dm-verity parameters {path} are unusable: {why}")]
    VerityParams { path: PathBuf, why: String },
    #[error("cannot open the rootfs {target} through dm-verity")]
    Verity {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the rootfs {target} does not match its signed dm-verity root hash {root}: the squashfs on {dev} cannot be read ({source})")]
    VerityMount {
        target: String,
        root: String,
        dev: PathBuf,
        source: io::Error,
    },
    #[error("cannot mount the cache partition that holds the rootfs")]
    Cache(#[source] cachepart::CacheError),
    #[error("the cache partition has no rootfs at {0}")]
    NotInCache(PathBuf),
    #[error("{0}")]
    Bind(String),
    #[error("the payload has no root filesystem at {0} (was this initramfs kexec'd by stage 1?)")]
    NoRootfs(PathBuf),
    #[error("no partition named {name} appeared within {} s", PERSIST_WAIT.as_secs())]
    NoPartition { name: String },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Stage2Error {
    let path = path.into();
    move |source| Stage2Error::Io { what, path, source }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

/// Attaches `image` to a free loop device, read-only; returns its path and
/// an open handle. Keep the handle until the device is mounted: the device
/// is auto-clearing, so closing its last user before the mount detaches it.
pub fn attach_loop(image: &Path) -> Result<(PathBuf, File), Stage2Error> {
    let backing = File::open(image).map_err(io_err("open", image))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(io_err("open (is loop.ko loaded?)", "/dev/loop-control"))?;
    // A device taken between GET_FREE and attach gives EBUSY: try the next.
    let mut last = None;
    for _ in 0..8 {
        let n = sys::loop_get_free(control.as_fd())
            .map_err(io_err("get a free loop device from", "/dev/loop-control"))?;
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let f = open_when_present(&dev)?;
        match sys::loop_attach(
            f.as_fd(),
            backing.as_fd(),
            image.as_os_str().as_encoded_bytes(),
        ) {
            Ok(()) => return Ok((dev, f)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => return Err(io_err("attach the rootfs to", dev)(e)),
        }
    }
    Err(io_err("attach the rootfs to a loop device", image)(
        last.unwrap_or_else(|| io::Error::other("every loop device was busy")),
    ))
}

/// devtmpfs creates a new loop node asynchronously: wait up to 2 s for it.
fn open_when_present(dev: &Path) -> Result<File, Stage2Error> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match OpenOptions::new().read(true).open(dev) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io_err("open", dev)(e)),
        }
    }
}

fn mkdir(p: &Path) -> Result<(), Stage2Error> {
    fs::create_dir_all(p).map_err(io_err("create the directory", p))
}

/// Steps 1 and 2 with the overlay's upper on `upper`: returns a one-line
/// summary and the problems met on the way (a `phase.persist` partition
/// that cannot be used leaves the changes in RAM for this boot, and says
/// why, rather than stopping the boot).
pub fn mount_root(upper: &Upper) -> Result<(String, Vec<String>), Stage2Error> {
    let image = Path::new(payload::ROOTFS);
    let params = read_verity_params()?;
    let mut in_place = None;
    if !image.is_file() {
        let cache = Path::new(cachepart::MOUNT_POINT);
        match params.as_ref().and_then(|p| p.cache_object(cache)) {
            Some(object) => in_place = Some(rootfs_from_cache(&object, image)?),
            None => return Err(Stage2Error::NoRootfs(image.to_path_buf())),
        }
    }
    // Held until the squashfs is mounted (see attach_loop).
    let (dev, _hold) = attach_loop(image)?;
    let (lower, rw, root) = (Path::new(LOWER), Path::new(RW), Path::new(NEW_ROOT));
    mkdir(lower)?;
    let verity = match params {
        Some(p) => Some(open_verity(p, &dev)?),
        None => None,
    };
    let (from, mut words) = match &verity {
        Some(v) => (v.dev.clone(), v.words.clone()),
        None => (dev.clone(), format!("{}", dev.display())),
    };
    if let Some(place) = in_place {
        words = format!("{words}, in place from {place}");
    }
    if let Err(e) = mount(&from, lower, "squashfs", MountFlags::RDONLY, None) {
        let e = errno(e);
        return Err(match &verity {
            // dm-verity answers a block that does not match with EIO.
            Some(v) if e.raw_os_error() == Some(libc::EIO) => {
                let _ = crate::dm::remove(VERITY_NAME);
                Stage2Error::VerityMount {
                    target: v.target.clone(),
                    root: v.root.clone(),
                    dev: v.dev.clone(),
                    source: e,
                }
            }
            _ => io_err("mount the squashfs (is squashfs.ko loaded?) at", lower)(e),
        });
    }
    drop(verity);
    mkdir(rw)?;
    let mut problems = Vec::new();
    let persistent = match upper {
        Upper::Tmpfs => None,
        Upper::Partition(name) => match mount_persistent(name, rw) {
            Ok(part) => Some((name, part)),
            Err(e) => {
                problems.push(format!(
                    "phase.persist={name}: {}; the target's changes stay in RAM this boot",
                    step::chain(&e)
                ));
                None
            }
        },
    };
    let (base, upper_words) = match &persistent {
        Some((name, part)) => (
            rw.join(PERSIST_DIR),
            format!("persistent upper {name} ({})", part.display()),
        ),
        None => {
            mount(
                "tmpfs",
                rw,
                "tmpfs",
                MountFlags::empty(),
                Some(c"mode=0755"),
            )
            .map_err(errno)
            .map_err(io_err("mount the overlay's tmpfs at", rw))?;
            (rw.to_path_buf(), "tmpfs upper".to_owned())
        }
    };
    let (upper, work) = (base.join("upper"), base.join("work"));
    mkdir(&upper)?;
    mkdir(&work)?;
    mkdir(root)?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let opts = std::ffi::CString::new(opts).map_err(|_| Stage2Error::NoRootfs(image.into()))?;
    mount(
        "overlay",
        root,
        "overlay",
        MountFlags::empty(),
        Some(opts.as_c_str()),
    )
    .map_err(errno)
    .map_err(io_err("mount the overlay (is overlay.ko loaded?) at", root))?;
    let summary = format!(
        "{} on {words} (squashfs, read-only) + {upper_words} -> overlay {}",
        payload::ROOTFS,
        NEW_ROOT
    );
    Ok((summary, problems))
}

/// The rootfs opened through dm-verity: the device to mount, and what the
/// console line says about it. The tree's loop device is held open until
/// the squashfs is mounted (the table holds it after that).
struct Verity {
    dev: PathBuf,
    target: String,
    root: String,
    words: String,
    _tree: File,
}

/// The dm-verity table of `params` over the data device `data` and the
/// hash device `hash` (`major:minor` or paths).
pub fn verity_table(
    params: &payload::VerityParams,
    data: &str,
    hash: &str,
) -> Result<verity::Table, verity::Error> {
    let v = &params.verity;
    let p = verity::Params::new(v.data_block_size, v.hash_block_size, v.salt.clone())?;
    verity::Table::new(
        &p,
        v.data_blocks,
        v.hash_start_block(),
        v.root_hash,
        data,
        hash,
    )
}

/// The signed dm-verity parameters stage 1 left at
/// [`payload::ROOTFS_VERITY_PARAMS`], if it left any.
fn read_verity_params() -> Result<Option<payload::VerityParams>, Stage2Error> {
    let path = Path::new(payload::ROOTFS_VERITY_PARAMS);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    payload::VerityParams::from_json(&bytes)
        .map(Some)
        .map_err(|why| Stage2Error::VerityParams {
            path: path.to_path_buf(),
            why,
        })
}

/// The kexec route with the rootfs left on the cache partition
/// (`in_cache`): mounts the partition at [`cachepart::MOUNT_POINT`] (as
/// stage 1 did; the mount moves into the new root with `/run`) and binds
/// the rootfs object read-only at `image` and at its CAS name in the
/// payload, so the target reads and re-shares it in place. Returns the
/// console words.
fn rootfs_from_cache(object: &Path, image: &Path) -> Result<String, Stage2Error> {
    let mounted = cachepart::mount_cache(true, cachepart::WAIT).map_err(Stage2Error::Cache)?;
    if !object.is_file() {
        return Err(Stage2Error::NotInCache(object.to_path_buf()));
    }
    let name = object
        .strip_prefix(&mounted.dir)
        .map_err(|_| Stage2Error::NotInCache(object.to_path_buf()))?;
    let cas_name = Path::new(PAYLOAD_DIR).join(name);
    for at in [image, cas_name.as_path()] {
        if let Some(dir) = at.parent() {
            mkdir(dir)?;
        }
        File::create(at).map_err(io_err("create", at))?;
        crate::direct::bind_read_only(object, at).map_err(Stage2Error::Bind)?;
    }
    Ok(format!(
        "{} on the cache partition {}",
        object.display(),
        mounted.device.display()
    ))
}

/// Puts the rootfs on `data` (its loop device) behind dm-verity with the
/// signed parameters `p` and the tree at [`payload::ROOTFS_VERITY`] (a
/// loop device of its own).
fn open_verity(p: payload::VerityParams, data: &Path) -> Result<Verity, Stage2Error> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| Stage2Error::Verity {
        target: p.target.clone(),
        source,
    };
    let tree = Path::new(payload::ROOTFS_VERITY);
    let (tree_dev, tree_hold) = attach_loop(tree)?;
    let nums = |d: &Path| crate::dm::dev_numbers(d).map_err(|e| fail(Box::new(e)));
    let table = verity_table(&p, &nums(data)?, &nums(&tree_dev)?).map_err(|e| fail(Box::new(e)))?;
    let target = crate::dm::Target {
        start: 0,
        sectors: table.sectors(),
        target_type: "verity".to_owned(),
        params: table.target_params(),
    };
    let made = crate::dm::create(VERITY_NAME, crate::dm::READONLY_FLAG, &[target])
        .map_err(|e| fail(Box::new(e)))?;
    let dev = made.path();
    // devtmpfs makes the node asynchronously.
    if let Err(e) = open_when_present(&dev) {
        let _ = crate::dm::remove(VERITY_NAME);
        return Err(e);
    }
    let root = p.verity.root_hex();
    let words = format!(
        "{} (dm-verity {VERITY_NAME}: data {}, tree {} on {}, root {}..)",
        dev.display(),
        data.display(),
        p.verity.tree,
        tree_dev.display(),
        &root[..12]
    );
    Ok(Verity {
        dev,
        target: p.target,
        root,
        words,
        _tree: tree_hold,
    })
}

/// Mounts the ext4 file system of the partition named `name` read-write
/// at `at` and makes sure [`PERSIST_DIR`]`/{upper,work}` exist on it;
/// returns the device. On failure nothing stays mounted at `at`.
fn mount_persistent(name: &str, at: &Path) -> Result<PathBuf, Stage2Error> {
    let dev = cachepart::wait_for(name, PERSIST_WAIT).ok_or_else(|| Stage2Error::NoPartition {
        name: name.to_owned(),
    })?;
    mount(&dev, at, "ext4", MountFlags::empty(), None)
        .map_err(errno)
        .map_err(io_err("mount read-write as ext4", &dev))?;
    let dir = at.join(PERSIST_DIR);
    if let Err(e) = mkdir(&dir.join("upper")).and_then(|()| mkdir(&dir.join("work"))) {
        let _ = unmount(at, UnmountFlags::empty());
        return Err(e);
    }
    Ok(dev)
}

/// Step 3: bind the payload, move the API filesystems and the overlay's
/// parts into the new root.
pub fn move_mounts() -> Result<String, Stage2Error> {
    let root = Path::new(NEW_ROOT);
    let phase = root.join("phase");
    mkdir(&phase)?;
    // Recursive: on the direct route (direct.rs) the objects under /phase
    // are read-only bind mounts of their own.
    mount_bind_recursive(PAYLOAD_DIR, &phase)
        .map_err(errno)
        .map_err(io_err("bind the payload at", &phase))?;
    mount_remount(&phase, MountFlags::BIND | MountFlags::RDONLY, "")
        .map_err(errno)
        .map_err(io_err("make read-only", &phase))?;
    let mut moved = Vec::new();
    for m in ["/proc", "/sys", "/dev", "/run"] {
        let to = root.join(m.trim_start_matches('/'));
        mkdir(&to)?;
        mount_move(m, &to)
            .map_err(errno)
            .map_err(io_err("move the mount into the new root:", m))?;
        moved.push(m);
    }
    for (from, name) in [(LOWER, "lower"), (RW, "rw")] {
        let to = root.join("run/phase").join(name);
        mkdir(&to)?;
        mount_move(from, &to)
            .map_err(errno)
            .map_err(io_err("move the mount into the new root:", from))?;
    }
    Ok(format!(
        "{} moved; payload at /phase (read-only)",
        moved.join(" ")
    ))
}

/// Deletes everything under `dir` that is on device `dev` (never crossing
/// into another mount), except the paths in `keep`. Returns the number of
/// entries removed; failures are skipped (as switch_root does).
pub fn delete_tree(dir: &Path, dev: u64, keep: &[&Path]) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if keep.iter().any(|k| *k == path) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            n += delete_tree(&path, dev, keep);
            if fs::remove_dir(&path).is_ok() {
                n += 1;
            }
        } else if fs::remove_file(&path).is_ok() {
            n += 1;
        }
    }
    n
}

/// Step 4: switch_root into [`NEW_ROOT`].
pub fn switch_root() -> Result<String, Stage2Error> {
    let root = Path::new(NEW_ROOT);
    rustix::process::chdir(root)
        .map_err(errno)
        .map_err(io_err("chdir to", root))?;
    let dev = fs::symlink_metadata("/")
        .map_err(io_err("stat", "/"))?
        .dev();
    let removed = delete_tree(Path::new("/"), dev, &[root, Path::new(PAYLOAD_DIR)]);
    mount_move(".", "/")
        .map_err(errno)
        .map_err(io_err("move the new root onto", "/"))?;
    rustix::process::chroot(".")
        .map_err(errno)
        .map_err(io_err("chroot to", root))?;
    rustix::process::chdir("/")
        .map_err(errno)
        .map_err(io_err("chdir to", "/"))?;
    Ok(format!(
        "{removed} initramfs entries freed; / is the overlay"
    ))
}

/// Systemd mode: exec `init` (systemd) as PID 1. Returns only when the
/// exec failed, after saying so.
pub fn exec_systemd(init: &Path) {
    use std::os::unix::process::CommandExt;
    let console = crate::console::console();
    console.line(&format!("handover: systemd mode, exec {}", init.display()));
    let e = std::process::Command::new(init).exec();
    console.line(&format!("handover: cannot exec {}: {e}", init.display()));
}

/// What happens after switch_root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// `/sbin/init` is systemd: exec it (path inside the root).
    Systemd(PathBuf),
    /// phase-init supervises `/etc/phase/services.toml`.
    Exec,
}

/// Resolves `path` inside `root` (symlinks are followed relative to
/// `root`, at most 40 hops). `None` if it does not exist.
pub fn resolve_in(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut cur = PathBuf::from("/").join(path);
    for _ in 0..40 {
        let full = root.join(cur.strip_prefix("/").unwrap_or(&cur));
        let meta = fs::symlink_metadata(&full).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(cur);
        }
        let target = fs::read_link(&full).ok()?;
        cur = if target.is_absolute() {
            target
        } else {
            cur.parent().unwrap_or(Path::new("/")).join(target)
        };
        cur = normalize(&cur);
    }
    None
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// systemd mode when the root's `/sbin/init` resolves to a file named
/// `systemd`; exec mode otherwise.
pub fn handover(root: &Path) -> Handover {
    match resolve_in(root, Path::new("/sbin/init")) {
        Some(p) if p.file_name().is_some_and(|n| n == "systemd") => Handover::Systemd(p),
        _ => Handover::Exec,
    }
}

/// The `rootfs` boot step: [`mount_root`] over `upper`.
pub fn rootfs_step(upper: &Upper) -> (bool, Status) {
    match mount_root(upper) {
        Ok((detail, problems)) => (true, Status::with_problems(detail, problems)),
        Err(e) => (false, Status::fail(step::chain(&e))),
    }
}

/// The `move` boot step: [`move_mounts`].
pub fn move_step() -> (bool, Status) {
    done(move_mounts())
}

/// The `switch` boot step: [`switch_root`].
pub fn switch_step() -> (bool, Status) {
    done(switch_root())
}

fn done(r: Result<String, Stage2Error>) -> (bool, Status) {
    match r {
        Ok(detail) => (true, Status::ok(detail)),
        Err(e) => (false, Status::fail(step::chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn persist_is_honoured_only_when_writes_are_allowed() {
        let c = |line: &str| crate::cmdline::parse(line).config;
        assert_eq!(upper_for(&c("phase.mode=local")), (Upper::Tmpfs, None));
        assert_eq!(
            upper_for(&c("phase.mode=local phase.persist=PHASE-DATA")),
            (Upper::Partition("PHASE-DATA".into()), None)
        );
        for (line, why) in [
            (
                "phase.mode=local phase.persist=PHASE-DATA phase.nowrite=true",
                "phase.nowrite=true",
            ),
            (
                "phase.mode=private phase.persist=PHASE-DATA",
                "private mode writes no disk",
            ),
        ] {
            let (upper, note) = upper_for(&c(line));
            assert_eq!(upper, Upper::Tmpfs, "{line}");
            let note = note.unwrap_or_else(|| panic!("{line}: no line saying why"));
            assert!(
                note.starts_with("phase.persist=PHASE-DATA ignored: ") && note.contains(why),
                "{note}"
            );
        }
    }

    #[test]
    fn systemd_is_found_through_relative_and_absolute_links() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        fs::create_dir_all(r.join("sbin")).expect("mkdir");
        fs::create_dir_all(r.join("lib/systemd")).expect("mkdir");
        fs::write(r.join("lib/systemd/systemd"), b"elf").expect("write");
        symlink("../lib/systemd/systemd", r.join("sbin/init")).expect("symlink");
        assert_eq!(
            handover(r),
            Handover::Systemd("/lib/systemd/systemd".into())
        );
        fs::remove_file(r.join("sbin/init")).expect("rm");
        // An absolute link is resolved inside the root, not on the host.
        symlink("/lib/systemd/systemd", r.join("sbin/init")).expect("symlink");
        assert_eq!(
            handover(r),
            Handover::Systemd("/lib/systemd/systemd".into())
        );
    }

    #[test]
    fn busybox_init_or_nothing_means_exec_mode() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        assert_eq!(handover(r), Handover::Exec);
        fs::create_dir_all(r.join("sbin")).expect("mkdir");
        fs::create_dir_all(r.join("bin")).expect("mkdir");
        fs::write(r.join("bin/busybox"), b"elf").expect("write");
        symlink("/bin/busybox", r.join("sbin/init")).expect("symlink");
        assert_eq!(handover(r), Handover::Exec);
        // A dangling link or a loop is not systemd either.
        fs::remove_file(r.join("sbin/init")).expect("rm");
        symlink("init", r.join("sbin/init")).expect("symlink");
        assert_eq!(handover(r), Handover::Exec);
    }

    #[test]
    fn delete_tree_keeps_what_it_is_told_and_removes_the_rest() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).expect("mkdir");
        fs::write(r.join("a/b/f"), b"x").expect("write");
        fs::create_dir_all(r.join("keep")).expect("mkdir");
        fs::write(r.join("keep/f"), b"x").expect("write");
        symlink("/etc", r.join("link")).expect("symlink");
        let dev = fs::metadata(r).expect("stat").dev();
        let n = delete_tree(r, dev, &[&r.join("keep")]);
        assert_eq!(n, 4, "a, a/b, a/b/f, link");
        assert!(r.join("keep/f").exists());
        assert!(!r.join("a").exists());
        assert!(
            Path::new("/etc").exists(),
            "a symlink is removed, not followed"
        );
    }

    #[test]
    fn the_verity_table_comes_from_the_signed_parameters() {
        let p = payload::VerityParams {
            target: "stable/x86_64/rootfs".into(),
            verity: verifier::Verity {
                version: 1,
                hash_algorithm: "sha256".into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 300,
                salt: vec![0xab; 2],
                root_hash: [0x01; 32],
                tree: "stable/x86_64/rootfs.verity".into(),
            },
            in_cache: None,
        };
        let t = verity_table(&p, "7:0", "7:1").expect("table");
        assert_eq!(t.sectors(), 300 * 8);
        assert_eq!(
            t.target_params(),
            format!("1 7:0 7:1 4096 4096 300 1 sha256 {} abab", "01".repeat(32))
        );
        assert!(verity_table(&p, "7:0", "bad dev").is_err());
    }

    #[test]
    fn mount_root_without_a_payload_says_so() {
        let e = mount_root(&Upper::Tmpfs).expect_err("no payload on the build host");
        assert!(e.to_string().contains("/phase/rootfs.squashfs"), "{e}");
    }
}
