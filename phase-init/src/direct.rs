//! Whether the boot needs a second kernel (`phase.kexec`), and going on as
//! stage 2 without one.
//!
//! A kexec starts the verified target kernel with the target initramfs.
//! When those are byte for byte the kernel and initramfs the boot loader
//! started (the usual case: the stick was built from the release it
//! boots), the kexec would start the same kernel with the same initramfs
//! again, and the largest single step of the boot buys nothing. So with
//! `phase.kexec=auto` (the default) stage 1 reads back the files of the
//! loader entry systemd-boot names in `LoaderEntrySelected` from the ESP
//! (`PHASE-ESP`, mounted read-only for the check) and compares them byte
//! for byte with the verified target's files, which the fetch step has
//! just hashed. Equal bytes are an equal SHA-256, without a second hash
//! pass over the same bytes (the slowest part of the check under
//! emulation). It goes on as stage 2 itself only when
//!
//! - the kernel and the initramfs both match (a different initramfs means
//!   a different phase-init or module set, which only a kexec starts), and
//! - every kernel parameter the target's signed command line sets, other
//!   than `phase.*` (which stage 1 hands on itself), is already on the
//!   running kernel's command line: the running kernel cannot take new
//!   ones.
//!
//! Otherwise, with `phase.kexec=always`, or when anything cannot be read,
//! it kexecs; the console line says why. Then [`lay_out_step`] builds
//! `/phase` in place of the payload cpio: `boot.json` and the TUF metadata
//! written, and each verified object bind-mounted read-only from where the
//! fetch verified it (the cache partition or the RAM cache), so the rootfs
//! is used in place: neither copied into RAM nor read again.
//!
//! Secure Boot: where it is on, the firmware, shim and the loader checked
//! the running kernel's signature before it ran; the comparison adds that
//! it is also the kernel the signed release names.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::mount::{mount, mount_bind, mount_remount, unmount, MountFlags, UnmountFlags};

use crate::cmdline::{self, Config, Kexec};
use crate::handoff::{self, Artifacts, Provenance};
use crate::payload::{self, Artifact, Payload};
use crate::step::{chain, Status};

/// The GPT name of the stick's ESP (the image crate writes it).
pub const ESP_NAME: &str = "PHASE-ESP";
/// Where the ESP is mounted, read-only, while its files are hashed.
pub const ESP_MOUNT: &str = "/run/phase/esp";

/// Which way stage 1 hands over, and why (one line for the console and
/// `boot.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Go on as stage 2: the running kernel and initramfs are the target's.
    Direct(String),
    /// Start the target kernel with kexec.
    Kexec(String),
    /// Start, with kexec, the last release that booted on this machine:
    /// the running kernel refused the verified release's kernel
    /// ([`crate::fallback`]). Never chosen by [`decide`].
    Fallback(handover::Fallback),
}

impl Route {
    pub fn is_direct(&self) -> bool {
        matches!(self, Route::Direct(_))
    }

    /// The `boot.json` record of this choice.
    pub fn record(&self) -> handover::HandoverPath {
        let (path, reason, fallback) = match self {
            Route::Direct(r) => ("direct", r.clone(), None),
            Route::Kexec(r) => ("kexec", r.clone(), None),
            Route::Fallback(f) => (
                "kexec",
                "fallback: the running kernel refused the verified release's kernel; the last release that booted here instead".to_owned(),
                Some(f.clone()),
            ),
        };
        handover::HandoverPath {
            path: path.to_owned(),
            reason,
            fallback,
        }
    }
}

/// Why the running kernel and initramfs could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StartedError {
    #[error("the boot loader did not name its entry (no LoaderEntrySelected)")]
    NoEntry,
    #[error("no {ESP_NAME} partition")]
    NoEsp,
    #[error("cannot mount the ESP {dev} read-only at {ESP_MOUNT}")]
    Mount {
        dev: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the loader entry {path}")]
    Entry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the loader entry {entry} has {what}")]
    EntryShape { entry: String, what: String },
}

/// The kernel and initramfs files the boot loader started.
#[derive(Debug, Clone)]
pub struct Started {
    pub kernel: EspFile,
    pub initrd: EspFile,
}

/// A file the boot loader read: its path in the entry (below the ESP's
/// root) and where it is now.
#[derive(Debug, Clone)]
pub struct EspFile {
    pub name: String,
    pub path: PathBuf,
}

/// Bytes read and compared at a time.
const COMPARE_CHUNK: usize = 1 << 20;

/// The first byte at which the files `a` and `b` differ (for files of
/// different lengths, at most the shorter one's length), or `None` when
/// they are byte for byte the same.
pub fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    if la != lb {
        return Ok(Some(la.min(lb)));
    }
    let (mut ba, mut bb) = (vec![0u8; COMPARE_CHUNK], vec![0u8; COMPARE_CHUNK]);
    let mut at = 0u64;
    loop {
        let n = read_up_to(&mut fa, &mut ba)?;
        let m = read_up_to(&mut fb, &mut bb[..n.max(1)])?;
        if n == 0 || m != n {
            // Both at their end, or one ended first (it changed meanwhile).
            return Ok((n != m).then_some(at + n.min(m) as u64));
        }
        if let Some(i) = mismatch(&ba[..n], &bb[..n]) {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
}

/// Fills `buf` unless the file ends first; the count read.
fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first index where two slices of one length differ. The equal case,
/// the common one, is libc's `memcmp` (word- and vector-wise); only a
/// differing block is scanned byte by byte, once.
fn mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// The `linux` and the one `initrd` path of a systemd-boot entry (Boot
/// Loader Specification type #1), relative to the ESP's root.
pub fn entry_files(entry: &str, text: &str) -> Result<(String, String), StartedError> {
    let shape = |what: &str| StartedError::EntryShape {
        entry: entry.to_owned(),
        what: what.to_owned(),
    };
    let values = |key: &str| -> Vec<&str> {
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim())
            })
            .collect()
    };
    let one = |key: &str| -> Result<String, StartedError> {
        match values(key).as_slice() {
            [v] => {
                esp_relative(v).ok_or_else(|| shape(&format!("a {key} path {v:?} outside the ESP")))
            }
            [] => Err(shape(&format!("no {key} line"))),
            _ => Err(shape(&format!("more than one {key} line"))),
        }
    };
    Ok((one("linux")?, one("initrd")?))
}

/// `/EFI/x/vmlinuz` (or `\EFI\x\vmlinuz`) as a path below the ESP's root;
/// `None` for `..` or an empty path.
fn esp_relative(p: &str) -> Option<String> {
    let parts: Vec<&str> = p
        .split(['/', '\\'])
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    (!parts.is_empty() && !parts.contains(&"..")).then(|| parts.join("/"))
}

/// Reads the entry `entry` below the mounted ESP at `esp`: the files it
/// names.
pub fn started_from(esp: &Path, entry: &str) -> Result<Started, StartedError> {
    let name = esp_relative(entry)
        .filter(|n| !n.contains('/'))
        .ok_or_else(|| StartedError::EntryShape {
            entry: entry.to_owned(),
            what: "a name that is not a file name".to_owned(),
        })?;
    let path = esp.join("loader/entries").join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| StartedError::Entry {
        path: path.clone(),
        source,
    })?;
    let (linux, initrd) = entry_files(entry, &text)?;
    let file = |name: String| EspFile {
        path: esp.join(&name),
        name,
    };
    Ok(Started {
        kernel: file(linux),
        initrd: file(initrd),
    })
}

/// Why the file the loader started is not the verified `target` (`what`:
/// kernel or initramfs), or `None` when it is, byte for byte.
fn differs(what: &str, target: &Artifact, started: &EspFile) -> Option<String> {
    let short = target.sha256.get(..12).unwrap_or(&target.sha256);
    let head = format!("the target {what} (sha256 {short}) is not the one the loader started");
    match first_difference(&started.path, &target.path) {
        Ok(None) => None,
        Ok(Some(at)) => Some(format!("{head}: {} differs at byte {at}", started.name)),
        Err(e) => Some(format!("{head}: cannot compare {}: {e}", started.name)),
    }
}

/// The choice, from what was started (or why that is unknown), compared
/// byte for byte with the verified target's files, and the running
/// kernel's command line.
pub fn decide(
    config: &Config,
    target: &Artifacts,
    started: Result<Started, StartedError>,
    running_cmdline: &str,
) -> Route {
    if config.kexec == Kexec::Always {
        return Route::Kexec("phase.kexec=always".to_owned());
    }
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            return Route::Kexec(format!(
                "cannot tell what the loader started: {}",
                chain(&e)
            ))
        }
    };
    let short = |h: &str| h.get(..12).unwrap_or(h).to_owned();
    if let Some(why) = differs("kernel", &target.kernel, &started.kernel)
        .or_else(|| differs("initramfs", &target.initramfs, &started.initrd))
    {
        return Route::Kexec(why);
    }
    let running: Vec<&str> = running_cmdline.split_whitespace().collect();
    let missing: Vec<&str> = target
        .cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("phase.") && !running.contains(w))
        .collect();
    if !missing.is_empty() {
        return Route::Kexec(format!(
            "the target's kernel parameters {} are not on the running kernel's command line",
            missing.join(" ")
        ));
    }
    Route::Direct(format!(
        "the target kernel and initramfs (sha256 {}, {}) are the ones the loader started",
        short(&target.kernel.sha256),
        short(&target.initramfs.sha256)
    ))
}

/// Mounts the ESP read-only, runs `f` on the files the selected entry names
/// (or why they are unknown) while it is mounted, and unmounts it again.
fn with_started<R>(f: impl FnOnce(Result<Started, StartedError>) -> R) -> R {
    let at = Path::new(ESP_MOUNT);
    match mount_esp(at) {
        Ok(entry) => {
            let r = f(started_from(at, &entry));
            let _ = unmount(at, UnmountFlags::empty());
            r
        }
        Err(e) => f(Err(e)),
    }
}

/// Mounts the ESP read-only at `at`; the name of the entry the loader
/// booted.
fn mount_esp(at: &Path) -> Result<String, StartedError> {
    let efivars = Path::new(crate::platform::EFIVARS);
    let entry =
        crate::loader::variable(efivars, "LoaderEntrySelected").ok_or(StartedError::NoEntry)?;
    let dev = crate::cachepart::find(Path::new("/sys/class/block"), ESP_NAME)
        .map(|d| Path::new("/dev").join(d))
        .ok_or(StartedError::NoEsp)?;
    let mount_err = |source: std::io::Error| StartedError::Mount {
        dev: dev.clone(),
        source,
    };
    std::fs::create_dir_all(at).map_err(mount_err)?;
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    // iocharset: Debian's kernel defaults to `ascii`, whose module the
    // initramfs does not carry; without it vfat refuses the mount (EINVAL).
    mount(&dev, at, "vfat", flags, Some(c"iocharset=utf8")).map_err(|e| mount_err(e.into()))?;
    Ok(entry)
}

/// The `path` boot step: kexec, or go on as stage 2 (`true`).
pub fn step(config: &Config, target: &Artifacts) -> (Route, Status) {
    let running = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let path = if config.kexec == Kexec::Always {
        decide(config, target, Err(StartedError::NoEntry), &running)
    } else {
        with_started(|found| decide(config, target, found, &running))
    };
    let line = match &path {
        Route::Direct(why) => format!("direct, no second kernel: {why}"),
        Route::Kexec(why) => format!("kexec: {why}"),
        Route::Fallback(f) => format!("kexec: fallback after {}", f.refused),
    };
    (path, Status::ok(line))
}

/// The `payload` step of the direct path: `boot.json` and `/phase` in
/// place (see the module comment). Returns the configuration stage 2 runs
/// with, parsed from the command line the target would have got.
pub fn lay_out_step(
    artifacts: &Artifacts,
    config: &Config,
    provenance: Option<Provenance>,
    identity: Option<&handover::Identity>,
    route: &Route,
    measurements: Vec<handover::Measurement>,
) -> (Option<Config>, Status) {
    let (cmdline, boot) =
        handoff::record(artifacts, config, provenance, identity, route, measurements);
    let extra: Vec<Artifact> = artifacts.extra.iter().map(|(_, a)| a.clone()).collect();
    let p = Payload {
        kernel: &artifacts.kernel,
        initramfs: &artifacts.initramfs,
        rootfs: &artifacts.rootfs,
        extra: &extra,
        verity: artifacts.verity.as_ref(),
        tuf: &artifacts.tuf,
        boot: &boot,
    };
    let binds = match payload::lay_out(Path::new("/"), &p) {
        Ok(b) => b,
        Err(e) => return (None, Status::fail(chain(&e))),
    };
    for b in &binds {
        if let Err(e) = bind_read_only(&b.from, &b.at) {
            return (None, Status::fail(e));
        }
    }
    let target = cmdline::parse(&cmdline).config;
    let verity = match &artifacts.verity {
        Some(v) => format!(
            ", read through dm-verity with the tree {}",
            v.params.verity.tree
        ),
        None => ", read without dm-verity (no tree)".to_owned(),
    };
    let detail = format!(
        "{} in place: {} verified objects bound read-only, rootfs {}{verity}",
        crate::stage2::PAYLOAD_DIR,
        binds.len(),
        artifacts.rootfs.path.display()
    );
    (Some(target), Status::ok(detail))
}

/// The lines stage 2 after a kexec shows first, for stage 2 in this
/// kernel: its configuration (as the cmdline line) and the ready line.
pub fn announce(target: &Config) {
    let console = crate::console::console();
    console.line(&format!("stage 2 in this kernel: {}", target.summary()));
    console.raw(&crate::ready_line(target));
}

/// Binds the file `from` onto the existing file `at`, read-only.
pub fn bind_read_only(from: &Path, at: &Path) -> Result<(), String> {
    mount_bind(from, at)
        .and_then(|()| mount_remount(at, MountFlags::BIND | MountFlags::RDONLY, ""))
        .map_err(|e| {
            format!(
                "cannot bind {} read-only at {}: {e}",
                from.display(),
                at.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, name: &str, bytes: &[u8]) -> Artifact {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        Artifact::hash_file("test", &p).expect("hash")
    }

    /// An ESP with one entry, and a target whose kernel and initramfs are
    /// the entry's files.
    fn esp(dir: &Path) -> Artifacts {
        std::fs::create_dir_all(dir.join("loader/entries")).expect("mkdir");
        std::fs::create_dir_all(dir.join("EFI/phase")).expect("mkdir");
        std::fs::write(
            dir.join("loader/entries/phase-local.conf"),
            "title Phase\nlinux      /EFI/phase/vmlinuz\ninitrd \\EFI\\phase\\initrd.img\noptions console=ttyS0 phase.mode=local\n",
        )
        .expect("entry");
        let kernel = artifact(dir, "EFI/phase/vmlinuz", b"kernel");
        let initramfs = artifact(dir, "EFI/phase/initrd.img", b"initrd");
        let rootfs = artifact(dir, "rootfs", b"hsqs");
        Artifacts {
            kernel,
            initramfs,
            rootfs,
            cmdline: "console=ttyS0 phase.debug=true".into(),
            names: ["k".into(), "i".into(), "r".into()],
            extra: vec![],
            tuf: vec![],
            verity: None,
            rootfs_hashed: true,
        }
    }

    #[test]
    fn the_same_kernel_initramfs_and_parameters_go_on_without_kexec() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = esp(d.path());
        let started = started_from(d.path(), "phase-local.conf");
        let path = decide(
            &Config::default(),
            &target,
            started,
            "console=ttyS0 phase.mode=local",
        );
        assert!(path.is_direct(), "{path:?}");
        assert_eq!(path.record().path, "direct");
    }

    #[test]
    fn always_a_different_file_a_missing_parameter_or_no_entry_kexec_and_say_why() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = esp(d.path());
        let started = || started_from(d.path(), "phase-local.conf");
        let running = "console=ttyS0";
        let always = Config {
            kexec: Kexec::Always,
            ..Config::default()
        };
        let why = |p: Route| match p {
            Route::Kexec(why) => why,
            other => panic!("not kexec: {other:?}"),
        };
        assert_eq!(
            why(decide(&always, &target, started(), running)),
            "phase.kexec=always"
        );

        let mut other = target.clone();
        other.kernel = artifact(d.path(), "other-kernel", b"another kernel");
        let w = why(decide(&Config::default(), &other, started(), running));
        assert!(w.starts_with("the target kernel (sha256 "), "{w}");
        assert!(w.ends_with("EFI/phase/vmlinuz differs at byte 6"), "{w}");

        let mut other = target.clone();
        other.initramfs = artifact(d.path(), "other-initrd", b"another initrd");
        let w = why(decide(&Config::default(), &other, started(), running));
        assert!(w.starts_with("the target initramfs (sha256 "), "{w}");

        let mut other = target.clone();
        other.cmdline = "console=ttyS0 quiet phase.debug=true".into();
        let w = why(decide(&Config::default(), &other, started(), running));
        assert!(w.contains("parameters quiet are not on"), "{w}");

        let w = why(decide(
            &Config::default(),
            &target,
            Err(StartedError::NoEntry),
            running,
        ));
        assert!(w.contains("no LoaderEntrySelected"), "{w}");
    }

    #[test]
    fn files_compare_byte_for_byte_across_chunks_and_words() {
        let d = tempfile::tempdir().expect("tempdir");
        let len = COMPARE_CHUNK * 2 + 13;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let write = |name: &str, b: &[u8]| {
            let p = d.path().join(name);
            std::fs::write(&p, b).expect("write");
            p
        };
        let a = write("a", &bytes);
        assert_eq!(
            first_difference(&a, &write("same", &bytes)).expect("read"),
            None
        );
        for at in [0, 5, 8, COMPARE_CHUNK - 1, COMPARE_CHUNK + 8, len - 1] {
            let mut other = bytes.clone();
            other[at] ^= 1;
            let b = write("flipped", &other);
            assert_eq!(
                first_difference(&a, &b).expect("read"),
                Some(at as u64),
                "{at}"
            );
        }
        let short = write("short", &bytes[..len - 3]);
        assert_eq!(
            first_difference(&a, &short).expect("read"),
            Some(len as u64 - 3)
        );
        let empty = write("empty", b"");
        assert_eq!(
            first_difference(&empty, &write("e2", b"")).expect("read"),
            None
        );
        assert!(first_difference(&a, &d.path().join("missing")).is_err());
    }

    #[test]
    fn a_bad_entry_is_named() {
        let d = tempfile::tempdir().expect("tempdir");
        esp(d.path());
        let e = |entry: &str| match started_from(d.path(), entry) {
            Err(e) => chain(&e),
            Ok(_) => panic!("{entry} was read"),
        };
        assert!(
            e("../x.conf").contains("not a file name"),
            "{}",
            e("../x.conf")
        );
        assert!(
            e("missing.conf").contains("missing.conf"),
            "{}",
            e("missing.conf")
        );
        for (text, what) in [
            ("linux /a\n", "no initrd line"),
            (
                "linux /a\ninitrd /b\ninitrd /c\n",
                "more than one initrd line",
            ),
            ("linux /../a\ninitrd /b\n", "outside the ESP"),
        ] {
            let err = entry_files("x.conf", text).expect_err(text);
            assert!(err.to_string().contains(what), "{err}");
        }
        assert_eq!(
            entry_files("x.conf", "linux \\EFI\\a\ninitrd  /EFI//b \n").expect("parsed"),
            ("EFI/a".to_owned(), "EFI/b".to_owned())
        );
    }
}
