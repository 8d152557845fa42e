//! Shared by the rollback and failure-path boot tests: a fleet (keys, a
//! target initramfs that is also the stage-1 initramfs, releases published
//! with `phase publish`), a seeded disk from `phase image`, a `phase serve`
//! peer on 127.0.0.1 that the guest reaches through QEMU user networking,
//! and the direct-kernel boot of stage 1 with that disk attached.
//!
//! The guest's network is QEMU user networking with `restrict=on` on
//! 198.18.64.0/24: nothing is routed anywhere; the only way out is the
//! `guestfwd` rule that hands each connection to 198.18.64.100:8080 to a
//! `busybox nc 127.0.0.1 PORT` (a new one per connection), i.e. to the peer
//! on this machine.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::fixtures::{self, build_dir, need};
use testkit::netns::Daemon;
use testkit::qemu::{Qemu, Vm};

/// UEFI-less boot + maybe a kexec'd second kernel under TCG on a loaded host.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The peer address inside the guest's user network.
pub const PEER_URL: &str = "http://198.18.64.100:8080";

/// Runs `phase args...`; fails the test with its output on error.
pub fn phase<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    testkit::fixtures::run_phase(args.into_iter().map(Into::<OsString>::into));
}

/// Keys, the stage-1/target initramfs with their root, the kernel.
pub struct Fleet {
    pub dir: PathBuf,
    pub keys: PathBuf,
    pub root: PathBuf,
    pub initramfs: PathBuf,
    pub kernel: PathBuf,
    release: String,
    init: PathBuf,
}

impl Fleet {
    /// `phase keygen` into `dir/<name>-keys`, then the initramfs.
    pub fn new(dir: &Path, name: &str) -> Fleet {
        let build = build_dir();
        let (release, kernel) = fixtures::kernel();
        let init = build.join("x86_64/phase-init");
        need(&init, "run `make init`");
        need(Path::new("/bin/busybox"), "apt-get install busybox-static");
        let keys = dir.join(format!("{name}-keys"));
        phase([
            OsString::from("keygen"),
            "--out".into(),
            keys.clone().into(),
        ]);
        let root = keys.join("1.root.json");
        let f = Fleet {
            dir: dir.to_owned(),
            initramfs: dir.join(format!("{name}-initramfs.img")),
            keys,
            root,
            kernel,
            release,
            init,
        };
        let mut a = f.image_args(&f.initramfs);
        a.extend(["--stage".into(), "initramfs".into(), "--init".into()]);
        a.push(f.init.clone().into());
        phase(a);
        f
    }

    fn image_args(&self, out: &Path) -> Vec<OsString> {
        vec![
            "image".into(),
            "--out".into(),
            out.into(),
            "--root".into(),
            self.root.clone().into(),
            "--arch".into(),
            "x86_64".into(),
            "--build-dir".into(),
            build_dir().into(),
            "--kernel-version".into(),
            self.release.clone().into(),
            "--templates".into(),
            "esp".into(),
            "--modules-list".into(),
            "kernel/modules-x86_64.list".into(),
        ]
    }

    /// Publishes one release into `repo` (each publish is the next
    /// targets/snapshot/timestamp version): this fleet's kernel and
    /// initramfs, and a busybox rootfs whose service prints
    /// `release-marker: <marker> root=<fs of />` and `/phase/boot.json`
    /// (`boot.json: {...} :boot.json-end`, spaces removed), then powers off.
    pub fn publish(&self, repo: &Path, marker: &str, version: u32) {
        self.publish_with_kernel(repo, marker, version, &self.kernel);
    }

    /// [`Fleet::publish`] with another kernel file.
    pub fn publish_with_kernel(&self, repo: &Path, marker: &str, version: u32, kernel: &Path) {
        let work = self.dir.join(format!("rootfs-{marker}"));
        std::fs::create_dir_all(&work).expect("mkdir");
        let squash = work.join("rootfs.squashfs");
        let hello = "echo \"release-marker: $(cat /etc/marker) root=$(busybox awk '$2==\"/\"{print $3}' /proc/mounts)\"; \
                     echo \"boot.json: $(busybox tr -d ' \\n' < /phase/boot.json) :boot.json-end\"";
        let services = format!(
            "[service.hello]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"{}\"]\ntype = \"oneshot\"\n\n\
             [service.stopper]\ncommand = \"/bin/busybox\"\nargs = [\"poweroff\"]\nafter = [\"hello\"]\n",
            fixtures::toml_escape(hello)
        );
        fixtures::busybox_rootfs(
            &work,
            &squash,
            &[("etc/marker", &format!("{marker}\n"))],
            &services,
        );
        phase([
            OsString::from("publish"),
            "--repo".into(),
            repo.into(),
            "--keys".into(),
            self.keys.clone().into(),
            "--channel".into(),
            "stable".into(),
            "--arch".into(),
            "x86_64".into(),
            "--kernel".into(),
            kernel.into(),
            "--initramfs".into(),
            self.initramfs.clone().into(),
            "--rootfs".into(),
            squash.into(),
            "--cmdline".into(),
            "console=ttyS0,115200".into(),
            "--release-version".into(),
            version.to_string().into(),
        ]);
    }

    /// A disk image (GPT, ESP, `PHASE-CACHE` seeded from `repo`) around
    /// this fleet's initramfs.
    pub fn disk(&self, repo: &Path, out: &Path) {
        let mut a = self.image_args(out);
        a.extend([
            "--initramfs".into(),
            self.initramfs.clone().into(),
            "--seed-repo".into(),
            repo.into(),
            "--channel".into(),
            "stable".into(),
            "--default-mode".into(),
            "local".into(),
        ]);
        phase(a);
    }
}

/// `cp -a` (a repository at one version, kept while later ones are published).
pub fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        st.success(),
        "cp -a {} {} failed",
        from.display(),
        to.display()
    );
}

/// A `phase serve` of a repository on 127.0.0.1, killed on drop.
pub struct Peer {
    _daemon: Daemon,
    pub port: u16,
}

impl Peer {
    pub fn serve(repo: &Path, cache: &Path) -> Peer {
        std::fs::create_dir_all(cache).expect("mkdir peer cache");
        let (daemon, lines) = fixtures::serve_phase(
            None,
            [
                OsStr::new("--cache"),
                cache.as_os_str(),
                OsStr::new("--repo"),
                repo.as_os_str(),
                OsStr::new("--listen"),
                OsStr::new("127.0.0.1:0"),
            ],
            &["phase serve: listening on http://"],
            20,
        );
        let port = lines[0]
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in phase serve's line {:?}", lines[0]));
        Peer {
            _daemon: daemon,
            port,
        }
    }
}

/// QEMU user networking that reaches `port` on 127.0.0.1 (and nothing
/// else) as [`PEER_URL`]; `None`: a NIC on a network with no DHCP server
/// and no peer at all.
pub fn user_net(port: Option<u16>) -> Vec<String> {
    let mut netdev = "user,id=n0,net=198.18.64.0/24,restrict=on".to_owned();
    if let Some(p) = port {
        netdev.push_str(&format!(
            ",guestfwd=tcp:198.18.64.100:8080-cmd:/bin/busybox nc 127.0.0.1 {p}"
        ));
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56".into(),
    ]
}

/// Boots `kernel` + `initrd` (stage 1) with `disk` as a writable virtio
/// disk, `append` after `console=ttyS0,115200 phase.mode=local`.
pub fn boot(
    fleet: &Fleet,
    initrd: &Path,
    disk: &Path,
    append: &str,
    extra: Vec<String>,
    name: &str,
) -> Vm {
    let mut q = Qemu::direct_kernel(
        &fleet.kernel,
        initrd,
        format!("console=ttyS0,115200 phase.mode=local {append}"),
    )
    .name(name)
    .memory_mib(1024)
    .timeout(BOOT_TIMEOUT)
    .args([
        "-drive".to_owned(),
        format!(
            "if=virtio,format=raw,file={},cache=writeback",
            disk.display().to_string().replace(',', ",,")
        ),
    ]);
    if extra.is_empty() {
        // No NIC at all (the harness adds `-nic none`).
    } else {
        q = q.args(extra);
    }
    q.start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"))
}

/// Waits for `s` on the console or fails the test with the log.
pub fn expect(vm: &mut Vm, s: &str) -> String {
    vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"))
}

/// The rescue shell is up; `phase-init status` prints the step log ending
/// in the failure line, which must contain `cause`.
pub fn status_in_rescue_shell(vm: &mut Vm, cause: &str) {
    expect(vm, "rescue: `phase-init status` prints");
    expect(vm, "rescue: shell on ");
    // Let the shell print its prompt before typing.
    expect(vm, "(phase rescue)");
    vm.send_line("phase-init status; echo status-exit=$?")
        .expect("type on the serial console");
    expect(vm, "step      result    took");
    expect(vm, "fetch     fail");
    let failure = expect(vm, "boot failed: boot: no verified boot set");
    assert!(failure.contains(cause), "{failure}");
    expect(vm, "status-exit=0");
}
