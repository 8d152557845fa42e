//! Fixtures the boot tests share: where `make` put the build outputs, the
//! Debian kernel it unpacked, the `phase` binary, a running `phase serve`,
//! and a busybox rootfs squashfs with a services file.
//!
//! These are test helpers: a missing prerequisite panics with what to run,
//! so a test fails loudly instead of passing vacuously.

use std::ffi::{OsStr, OsString};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::netns::{self, Daemon};

/// The build directory: `$PHASE_BUILD` (set by `make test`), else `build/`
/// at the top of the workspace.
pub fn build_dir() -> PathBuf {
    std::env::var_os("PHASE_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build"))
}

/// Fails the test unless `path` exists; `how` says how to make it.
pub fn need(path: &Path, how: &str) {
    assert!(
        path.exists(),
        "boot test prerequisite missing: {} ({how})",
        path.display()
    );
}

/// The Debian kernel `make kernel` unpacked: its release and its `vmlinuz`.
pub fn kernel() -> (String, PathBuf) {
    let build = build_dir();
    let current = build.join("kernel/current");
    need(&current, "run `make kernel`");
    let release = std::fs::read_to_string(&current).expect("read kernel/current");
    let release = release.trim().to_owned();
    let vmlinuz = build.join(format!("kernel/{release}/boot/vmlinuz-{release}"));
    need(&vmlinuz, "run `make kernel`");
    (release, vmlinuz)
}

/// The release `phase` binary `make test` names in `$PHASE_BIN`.
pub fn phase_bin() -> PathBuf {
    let path = std::env::var_os("PHASE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        panic!("PHASE_BIN is not set: run through `make test` (it points it at the release phase binary)")
    });
    need(&path, "build it with `make host`");
    path
}

/// Runs the release `phase` with `args` from the workspace root and returns
/// its stdout; fails the test with its output when it fails.
pub fn run_phase<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new(phase_bin())
        .args(&args)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run phase");
    assert!(
        out.status.success(),
        "phase {:?} failed: {}\n{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `phase serve ARGS` in network namespace `ns` (`None`: on the
/// host) and waits until it has printed a line starting with each of
/// `want`, in that order (other lines in between are skipped), `secs`
/// seconds at most in all. Returns the guard, which kills the server on
/// drop, and the lines that matched. Fails the test, with what the server
/// printed, if it exits first or the time runs out.
///
/// Its stdout is read until it exits, so the server never blocks on, or
/// fails writing to, a full or closed pipe; its stderr is inherited.
pub fn serve_phase<I, S>(
    ns: Option<&str>,
    args: I,
    want: &[&str],
    secs: u64,
) -> (Daemon, Vec<String>)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = match ns {
        Some(ns) => netns::command(ns, phase_bin()),
        None => Command::new(phase_bin()),
    };
    cmd.arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut d = netns::spawn(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
    let stdout = d.child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.as_ref().is_some_and(|t| t.send(line).is_err()) {
                tx = None;
            }
        }
    });
    let place = ns.unwrap_or("the host");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut found, mut printed) = (Vec::new(), Vec::new());
    for w in want {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with(w) => {
                    printed.push(l.clone());
                    found.push(l);
                    break;
                }
                Ok(l) => printed.push(l),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "phase serve in {place}: no line {w:?} within {secs} s; it printed: {printed:?}"
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "phase serve in {place} exited ({:?}) before printing {w:?}; it printed: {printed:?}",
                    d.child.wait()
                ),
            }
        }
    }
    (d, found)
}

/// busybox udhcpd on `eth0` of namespace `ns` (leases 198.18.0.100-150 on
/// 198.18.0.0/24, no router: the guests reach the LAN and nothing else);
/// its files in `dir`.
pub fn dhcpd_in(ns: &str, dir: &Path) -> Daemon {
    need(Path::new("/bin/busybox"), "apt-get install busybox-static");
    let conf = dir.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 198.18.0.100\nend 198.18.0.150\ninterface eth0\n\
             lease_file {d}/leases\npidfile {d}/udhcpd.pid\n\
             option subnet 255.255.255.0\noption lease 3600\n",
            d = dir.display()
        ),
    )
    .expect("write udhcpd.conf");
    std::fs::write(dir.join("leases"), b"").expect("leases file");
    netns::spawn(
        netns::command(ns, "/bin/busybox")
            .args(["udhcpd", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A `services.toml` with one oneshot service `name` that runs `script`
/// with `/bin/sh -c`, then a poweroff once it has exited.
pub fn oneshot_then_poweroff(name: &str, script: &str) -> String {
    format!(
        r#"[service.{name}]
command = "/bin/sh"
args = ["-c", "{script}"]
type = "oneshot"

[service.stopper]
command = "/bin/busybox"
args = ["poweroff"]
after = ["{name}"]
"#,
        script = toml_escape(script)
    )
}

/// `s` as the inside of a TOML basic string.
pub fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Writes `out`, a squashfs (`mksquashfs -all-root`) of a minimal rootfs:
/// static busybox as `/bin/sh` and `/sbin/init`, the usual mount points,
/// `files` (path relative to `/`, contents) and `/etc/phase/services.toml`.
/// Stage 2 of phase-init supervises those services.
pub fn busybox_rootfs(work: &Path, out: &Path, files: &[(&str, &str)], services_toml: &str) {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
    busybox_rootfs_bytes(work, out, &files, services_toml);
}

/// [`busybox_rootfs`] with files of any bytes.
pub fn busybox_rootfs_bytes(work: &Path, out: &Path, files: &[(&str, &[u8])], services_toml: &str) {
    need(Path::new("/bin/busybox"), "apt-get install busybox-static");
    let root = work.join("rootfs");
    for d in [
        "bin",
        "sbin",
        "etc/phase",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir in rootfs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy /bin/busybox");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink sh");
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init")).expect("symlink init");
    for (path, contents) in files {
        let dest = root.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).expect("mkdir in rootfs");
        }
        std::fs::write(&dest, contents).expect("write rootfs file");
    }
    std::fs::write(root.join("etc/phase/services.toml"), services_toml)
        .expect("write services.toml");
    let status = Command::new("mksquashfs")
        .arg(&root)
        .arg(out)
        .args(["-all-root", "-noappend", "-quiet", "-no-progress"])
        .status()
        .expect("run mksquashfs (apt-get install squashfs-tools)");
    assert!(status.success(), "mksquashfs failed: {status}");
}
