//! Shared by `boot_wasm` and `fleet_of_three` (owner: target): a demo
//! repository with the REAL target (`make rootfs`: busybox, `phase`,
//! `plasmd`; the demo job `make plasmd-jobs`), signed with keys made here,
//! disk images with that trusted root, and a test LAN whose only host-side
//! node runs a DHCP server (busybox udhcpd) — never a `phase serve`.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::fixtures::{self, build_dir, need, phase_bin};
use testkit::netns::{self, Daemon, Lan};

/// The greeting of the demo job (plasmd/jobs/hello.wat).
pub const GREETING: &str = "Hello from Phase WASM on ";

/// Runs `phase args...`; fails the test with its output on error.
pub fn phase(args: &[OsString]) -> String {
    testkit::fixtures::run_phase(args)
}

pub fn os<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(a: I) -> Vec<OsString> {
    a.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// A published target and the files around it.
pub struct Published {
    pub keys: PathBuf,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub job: PathBuf,
    release: String,
    init: PathBuf,
}

/// keygen, the initramfs (stage 1 and target: the same phase-init), then
/// kernel + initramfs + the real rootfs + the demo job signed into `d/repo`.
pub fn publish(d: &Path) -> Published {
    let build = build_dir();
    let (release, kernel) = fixtures::kernel();
    let init = build.join("x86_64/phase-init");
    need(&init, "run `make init`");
    let rootfs = build.join("x86_64/rootfs.squashfs");
    need(&rootfs, "run `make rootfs`");
    let job = build.join("jobs/hello.wasm");
    need(&job, "run `make plasmd-jobs`");
    let keys = d.join("keys");
    let p = Published {
        root: keys.join("1.root.json"),
        keys,
        repo: d.join("repo"),
        kernel,
        initramfs: d.join("initramfs.img"),
        rootfs,
        job,
        release,
        init,
    };
    phase(&os([
        OsStr::new("keygen"),
        OsStr::new("--out"),
        p.keys.as_os_str(),
    ]));
    let mut a = p.image_args(&p.initramfs);
    a.extend(os(["--stage", "initramfs"]));
    phase(&a);
    p.release_with(&p.initramfs, "1");
    p
}

impl Published {
    /// Publishes release `version` of the target with `initramfs` (the
    /// same kernel, rootfs, job and command line).
    pub fn release_with(&self, initramfs: &Path, version: &str) {
        let mut a = os(["publish", "--repo"]);
        a.push(self.repo.clone().into());
        a.extend(os(["--keys"]));
        a.push(self.keys.clone().into());
        a.extend(os(["--channel", "stable", "--arch", "x86_64", "--kernel"]));
        a.push(self.kernel.clone().into());
        a.push("--initramfs".into());
        a.push(initramfs.into());
        a.push("--rootfs".into());
        a.push(self.rootfs.clone().into());
        a.push("--job".into());
        a.push(self.job.clone().into());
        a.extend(os([
            "--cmdline",
            "console=ttyS0,115200",
            "--release-version",
        ]));
        a.push(version.into());
        phase(&a);
    }

    fn image_args(&self, out: &Path) -> Vec<OsString> {
        let mut a = os(["image", "--out"]);
        a.push(out.into());
        a.push("--root".into());
        a.push(self.root.clone().into());
        a.push("--init".into());
        a.push(self.init.clone().into());
        a.extend(os(["--arch", "x86_64", "--build-dir"]));
        a.push(build_dir().into());
        a.push("--kernel-version".into());
        a.push(self.release.clone().into());
        a.extend(os([
            "--templates",
            "esp",
            "--modules-list",
            "kernel/modules-x86_64.list",
            "--default-mode",
            "local",
        ]));
        a
    }

    /// A disk image (local mode by default) with this trusted root; its
    /// cache partition seeded from the repository when `seeded`, else empty.
    pub fn disk(&self, out: &Path, seeded: bool) {
        self.disk_with(out, seeded, &[]);
    }

    /// [`Published::disk`] with more `phase image` arguments.
    pub fn disk_with(&self, out: &Path, seeded: bool, extra: &[OsString]) {
        let mut a = self.image_args(out);
        a.extend(extra.iter().cloned());
        if seeded {
            a.push("--seed-repo".into());
            a.push(self.repo.clone().into());
            a.extend(os(["--channel", "stable"]));
        }
        phase(&a);
    }
}

/// A test LAN with one host-side node running busybox udhcpd (leases
/// 198.18.0.100-150 on 198.18.0.0/24): the guests' only helper.
pub fn lan_with_dhcp(dir: &Path) -> (Lan, Daemon) {
    let lan = Lan::new(1, true).unwrap_or_else(|e| panic!("{e}"));
    let dhcpd = fixtures::dhcpd_in(lan.node(0), dir);
    (lan, dhcpd)
}

/// The IPv4 address the target's `net` service printed
/// (`net: <host>: eth0 198.18.0.N/24 ...`), from `line`.
pub fn net_ipv4(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with("198.18.") && w.contains('/'))
        .and_then(|w| w.split('/').next())
        .map(str::to_owned)
}

/// `phase fetch` of every target from `peer` into `cache`, run in
/// namespace `ns`, retried for up to `within` (the node's peer service
/// starts after its network); returns the last output and whether it
/// succeeded.
pub fn fetch_from(
    ns: &str,
    root: &Path,
    peer: &str,
    cache: &Path,
    within: Duration,
) -> (bool, String) {
    let start = Instant::now();
    let mut last = String::new();
    for _ in 0..60 {
        let out = netns::command(ns, phase_bin())
            .args(["fetch", "--root"])
            .arg(root)
            .args(["--peer", peer, "--cache"])
            .arg(cache)
            .args(["--channel", "stable", "--arch", "x86_64"])
            .output()
            .expect("run phase fetch");
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            return (true, last);
        }
        if start.elapsed() > within {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    (false, last)
}

/// `phase attest verify --root root --peer peer --ak-store store extra...`
/// run in namespace `ns`, retried for up to `within` while the node's peer
/// service does not answer yet; returns whether it passed, its stdout and
/// its stderr.
pub fn attest_verify(
    ns: &str,
    root: &Path,
    peer: &str,
    store: &Path,
    extra: &[&str],
    within: Duration,
) -> (bool, String, String) {
    let start = Instant::now();
    loop {
        let out = netns::command(ns, phase_bin())
            .args(["attest", "verify", "--root"])
            .arg(root)
            .args(["--peer", peer, "--ak-store"])
            .arg(store)
            .args(extra)
            .output()
            .expect("run phase attest verify");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Only a connection that fails is retried: any answer is the verdict.
        let unreachable = stderr.contains("/attest?nonce=") && stderr.contains(" failed");
        if out.status.success() || !unreachable || start.elapsed() > within {
            return (out.status.success(), stdout, stderr);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The CAS path of a file's SHA-256 under `cache`.
pub fn cas_object(cache: &Path, file: &Path) -> PathBuf {
    use sha2::Digest;
    let bytes = std::fs::read(file).expect("read");
    let hex = format!("{:x}", sha2::Sha256::digest(&bytes));
    cache.join(format!("cas/sha256/{}/{hex}", &hex[..2]))
}
