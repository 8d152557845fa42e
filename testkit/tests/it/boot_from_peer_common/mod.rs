//! What the boot-from-peer tests share: a repository published with a test
//! target (Debian's kernel, a target initramfs = phase-init, a busybox
//! squashfs whose service prints a marker), a stage-1 disk image with the
//! same trusted root and an EMPTY cache partition (everything must come
//! from the peers), and `phase serve --mdns` in a node of a test LAN.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::fixtures::{self, build_dir, need};
use testkit::netns::{Daemon, Lan};
use testkit::qemu::NicModel;

/// UEFI boot, a 10 s DHCP wait on a LAN without DHCP, the fetch, kexec and
/// stage 2, under TCG on a loaded 2-core host.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// The port `phase serve` listens on inside its node.
pub const PORT: u16 = 7070;

/// Runs `phase args...`; fails the test with its output on error.
pub fn phase(args: &[OsString]) {
    testkit::fixtures::run_phase(args);
}

fn os<S: AsRef<OsStr>>(v: &[S]) -> Vec<OsString> {
    v.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// The published test target and the stage-1 image that trusts it.
pub struct Published {
    pub dir: tempfile::TempDir,
    /// The TUF repository (`metadata/`, `targets/`).
    pub repo: PathBuf,
    /// The stage-1 disk image (cache partition empty).
    pub disk: PathBuf,
    /// What the target's service prints.
    pub marker: String,
}

/// The published test target alone (no stage-1 image yet).
pub struct Target {
    pub dir: tempfile::TempDir,
    /// The TUF repository (`metadata/`, `targets/`).
    pub repo: PathBuf,
    /// The key directory of `phase keygen` (its `1.root.json` is the root
    /// the target initramfs trusts).
    pub keys: PathBuf,
    /// What the target's service prints.
    pub marker: String,
}

/// The `phase image` arguments every image of these tests shares: trusted
/// `root`, output `out`, Debian's kernel, phase-init, x86_64.
fn image_args(root: &Path, out: &Path) -> Vec<OsString> {
    let build = build_dir();
    let (release, _) = fixtures::kernel();
    let init = build.join("x86_64/phase-init");
    need(&init, "run `make init`");
    let mut a = os(&["image", "--out"]);
    a.push(out.into());
    a.extend(os(&["--root"]));
    a.push(root.into());
    a.extend(os(&["--init"]));
    a.push(init.into());
    a.extend(os(&["--arch", "x86_64", "--build-dir"]));
    a.push(build.into());
    a.extend(os(&[
        "--kernel-version",
        release.as_str(),
        "--templates",
        "esp",
        "--modules-list",
        "kernel/modules-x86_64.list",
    ]));
    a
}

/// A stage-1 disk image at `out` trusting `root`, defaulting to `local`
/// mode with nothing seeded (everything must come from the peers).
pub fn stage1_disk(root: &Path, out: &Path) {
    let mut a = image_args(root, out);
    a.extend(os(&["--default-mode", "local"]));
    phase(&a);
}

/// Keys, target initramfs, rootfs with `marker`, `phase publish`, and a
/// disk image defaulting to `local` mode with nothing seeded.
pub fn publish(tag: &str) -> Published {
    let t = publish_target(tag);
    let disk = t.dir.path().join("disk.img");
    stage1_disk(&t.keys.join("1.root.json"), &disk);
    Published {
        dir: t.dir,
        repo: t.repo,
        disk,
        marker: t.marker,
    }
}

/// Keys, target initramfs (trusting those keys), rootfs with `marker`, and
/// `phase publish`.
pub fn publish_target(tag: &str) -> Target {
    let (_, kernel) = fixtures::kernel();
    need(Path::new("/bin/busybox"), "apt-get install busybox-static");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let keys = d.join("keys");
    let repo = d.join("repo");
    let root = keys.join("1.root.json");
    phase(&os(&[
        OsStr::new("keygen"),
        "--out".as_ref(),
        keys.as_os_str(),
    ]));
    let target_initrd = d.join("target-initramfs.img");
    let mut a = image_args(&root, &target_initrd);
    a.extend(os(&["--stage", "initramfs"]));
    phase(&a);

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let marker = format!("{tag}-{}-{nanos}", std::process::id());
    let squash = d.join("rootfs.squashfs");
    let hello = "echo \"peer-marker: $(cat /etc/marker) root=$(busybox awk '$2==\"/\"{print $3}' /proc/mounts)\"; \
                 echo \"boot.json: $(busybox tr -d ' \\n' < /phase/boot.json) :boot.json-end\"";
    let services = format!(
        "[service.hello]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"{}\"]\ntype = \"oneshot\"\n\n\
         [service.stopper]\ncommand = \"/bin/busybox\"\nargs = [\"poweroff\"]\nafter = [\"hello\"]\n",
        fixtures::toml_escape(hello)
    );
    let marker_file = format!("{marker}\n");
    fixtures::busybox_rootfs(d, &squash, &[("etc/marker", &marker_file)], &services);
    let mut p = os(&["publish", "--repo"]);
    p.push(repo.clone().into());
    p.extend(os(&["--keys"]));
    p.push(keys.clone().into());
    p.extend(os(&["--channel", "stable", "--arch", "x86_64", "--kernel"]));
    p.push(kernel.into());
    p.extend(os(&["--initramfs"]));
    p.push(target_initrd.into());
    p.extend(os(&["--rootfs"]));
    p.push(squash.into());
    p.extend(os(&[
        "--cmdline",
        "console=ttyS0,115200",
        "--release-version",
        "1",
    ]));
    phase(&p);
    Target {
        dir,
        repo,
        keys,
        marker,
    }
}

/// A copy of `repo` whose kernel object has one byte flipped in every
/// chunk, whatever the chunk size (metadata untouched, so only the hash
/// check can catch it). Returns the copy.
pub fn tampered_copy(repo: &Path, out: &Path) -> PathBuf {
    let st = Command::new("cp")
        .arg("-a")
        .arg(repo)
        .arg(out)
        .status()
        .expect("cp -a");
    assert!(st.success(), "cp -a {} {}", repo.display(), out.display());
    let mut kernels = Vec::new();
    let mut stack = vec![out.join("targets")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir targets").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with("kernel") {
                kernels.push(p);
            }
        }
    }
    assert!(
        !kernels.is_empty(),
        "no kernel file under {}",
        out.display()
    );
    for k in &kernels {
        let mut bytes = std::fs::read(k).expect("read kernel");
        // One flipped byte in the middle of every 64 KiB block: 64 KiB is
        // the smallest chunk `phase publish` makes (`--chunk-kib`), so every
        // chunk this peer serves fails its hash, whatever the chunk size.
        const BLOCK: usize = 64 << 10;
        let mut at = BLOCK / 2;
        while at < bytes.len() {
            bytes[at] ^= 0x01;
            at += BLOCK;
        }
        let mid = bytes.len() / 2;
        if bytes.len() < BLOCK / 2 {
            bytes[mid] ^= 0x01;
        }
        // A new file, not a write through a hard link into the original.
        let _ = std::fs::remove_file(k);
        std::fs::write(k, &bytes).expect("write tampered kernel");
    }
    out.to_owned()
}

/// `phase serve --mdns` in node `i`, serving `repo` (with an empty cache
/// of its own) on `[::]:PORT`; waits (10 s at most) for its listening line
/// and returns the guard and the mDNS id it announces.
pub fn serve(lan: &Lan, i: usize, repo: &Path, work: &Path) -> (Daemon, String) {
    let cache = work.join(format!("serve-cache-{i}"));
    std::fs::create_dir_all(&cache).expect("mkdir cache");
    let (d, lines) = fixtures::serve_phase(
        Some(lan.node(i)),
        [
            OsStr::new("--cache"),
            cache.as_os_str(),
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--listen"),
            OsStr::new(&format!("[::]:{PORT}")),
            OsStr::new("--mdns"),
        ],
        &["phase serve: mDNS ", "phase serve: listening on"],
        10,
    );
    let id = lines[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id= in phase serve's mDNS line: {}", lines[0]))
        .to_owned();
    (d, id)
}

/// The host name stage 1 gives a peer announcing `id` (see
/// `phase_init::discover::host_name`), without the uniqueness suffix.
pub fn host_label(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}

/// Waits for the first complete console line (up to its newline) that
/// contains `needle` after the previous match, and returns it. The serial
/// log can end in the middle of a line; a plain `wait_for` would then
/// return a cut line.
pub fn full_line(vm: &mut testkit::qemu::Vm, needle: &str) -> String {
    let re = regex::Regex::new(&format!("{}[^\\n]*\\n", regex::escape(needle))).expect("regex");
    vm.wait_for_regex(&re)
        .unwrap_or_else(|e| panic!("{e}"))
        .trim_end()
        .to_owned()
}

/// Waits for the `network` status line (`ok` or `warn`) of a VM with one
/// NIC of `model` and checks that the line lists exactly one interface,
/// bound to `model`'s driver (`eth0 ... [e1000e]`): the boot's network
/// went over that NIC. Returns the line.
pub fn one_nic_line(vm: &mut testkit::qemu::Vm, model: NicModel) -> String {
    let re = regex::Regex::new(r"network  (ok|warn) [^\n]*\n").expect("regex");
    let found = vm.wait_for_regex(&re).unwrap_or_else(|e| panic!("{e}"));
    // The match may come with the lines after it: the network line alone.
    let line = found
        .lines()
        .find(|l| l.contains("network  "))
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    let entries = line.split_once("network  ").map_or("", |(_, e)| e);
    let driver = format!(" [{}]", model.driver());
    assert!(
        entries.ends_with(&driver) && entries.matches(" [").count() == 1 && !entries.contains(", "),
        "one interface, bound to {} ({}): {line}",
        model.driver(),
        model.device()
    );
    line
}
