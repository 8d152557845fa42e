//! Boot test of the hand-over: stage 1 kexecs a target kernel with
//! the target initramfs + payload, and stage 2 mounts the payload's squashfs
//! under an overlay, switch_roots and supervises the rootfs's services.
//!
//! Direct kernel boot (SeaBIOS, no firmware menu) of Debian's kernel with the
//! built initramfs plus a second, uncompressed cpio holding
//! `/etc/phase/test-artifacts/` (the same kernel, the same initramfs as the
//! target's, a squashfs made here with `mksquashfs -all-root`, the target's
//! cmdline). `phase.test=kexec` makes stage 1 hand over to those files
//! exactly as it does after a verified fetch.
//!
//! Under Secure Boot, the same hand-over with a target kernel whose
//! signature was stripped (`sbattach --remove`) is refused by the locked-down
//! kernel, and stage 1 says so in words: that boot is a disk image (shim,
//! signed systemd-boot) under OVMF with the Microsoft keys, because Secure
//! Boot needs the firmware. With no earlier release kept it stops there;
//! after a boot of a Debian-signed release from the same stick, a newer
//! release whose kernel is signed by a key the machine does not trust falls
//! back to that older release. Both assert the locked-down kernel's own
//! refusal line, so the refusal is the kernel's, not simulated.
//!
//! Prerequisites (built by `make test`): `$PHASE_BUILD/kernel/current`, the
//! kernel under `$PHASE_BUILD/kernel/<release>/boot/`, and
//! `$PHASE_BUILD/x86_64/initramfs.img`; `mksquashfs` and a static
//! `/bin/busybox` on the host. A missing one fails the test with what to do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use testkit::fixtures::{self, build_dir, need};
use testkit::qemu::{Qemu, Vm};

/// Generous for TCG on a loaded 2-core machine: two kernel boots take
/// 20–40 s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The rootfs: busybox, a marker file, and services that prove where they
/// run (overlay root, writable, payload visible, CAS holds the kernel),
/// exercise a restart with backoff, and power the VM off through PID 1.
fn make_rootfs(dir: &Path, out: &Path, marker: &str, kernel_sha: &str) {
    let cas = format!("/phase/cas/sha256/{}/{kernel_sha}", &kernel_sha[..2]);
    let hello = format!(
        "echo \"phase-target-marker: $(cat /etc/marker) root=$(busybox awk '$2==\"/\"{{print $3}}' /proc/mounts)\"; \
         echo overlay-writable > /probe && echo \"probe: $(busybox cat /probe)\"; \
         echo \"cas-kernel: $(busybox sha256sum {cas} | busybox cut -d' ' -f1)\"; \
         echo \"boot.json: $(busybox tr -d ' \\n' < /phase/boot.json) :boot.json-end\""
    );
    let services = format!(
        r#"[service.hello]
command = "/bin/sh"
args = ["-c", "{hello}"]
type = "oneshot"

[service.flaky]
command = "/bin/sh"
args = ["-c", "if [ -e /run/flaky-once ]; then echo flaky-recovered; else : > /run/flaky-once; exit 3; fi"]
type = "oneshot"
restart = "on-failure"
backoff_ms = 200

[service.stopper]
command = "/bin/busybox"
args = ["poweroff"]
after = ["hello", "flaky"]
"#,
        hello = fixtures::toml_escape(&hello)
    );
    let marker_file = format!("{marker}\n");
    fixtures::busybox_rootfs(dir, out, &[("etc/marker", &marker_file)], &services);
}

/// The stage-1 initrd: the built initramfs ++ an uncompressed cpio with
/// the test artifacts (the target initramfs is the built one again).
fn stage1_initrd(dir: &Path, initrd: &[u8], target_kernel: Vec<u8>, rootfs: Vec<u8>) -> PathBuf {
    let mut extra = image::cpio::Archive::new(0);
    let a = "etc/phase/test-artifacts";
    let files = [
        ("vmlinuz", target_kernel),
        ("initramfs.img", initrd.to_vec()),
        ("rootfs.squashfs", rootfs),
        ("cmdline", b"console=ttyS0,115200\n".to_vec()),
    ];
    for (name, bytes) in files {
        extra
            .file(&format!("{a}/{name}"), bytes, 0o644)
            .expect("cpio entry");
    }
    let mut stage1 = initrd.to_vec();
    stage1.resize(stage1.len().div_ceil(4) * 4, 0);
    stage1.extend_from_slice(&extra.to_newc());
    let path = dir.join("stage1.img");
    std::fs::write(&path, &stage1).expect("write stage-1 initrd");
    path
}

struct Prereqs {
    release: String,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn prereqs() -> Prereqs {
    let (release, kernel) = fixtures::kernel();
    let initrd = build_dir().join("x86_64/initramfs.img");
    need(&initrd, "run `make initramfs`");
    need(Path::new("/bin/busybox"), "apt-get install busybox-static");
    Prereqs {
        release,
        kernel,
        initrd,
    }
}

#[test]
fn a_refused_kexec_says_why_and_lands_in_the_rescue_shell() {
    let p = prereqs();
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd_bytes = std::fs::read(&p.initrd).expect("read initramfs");
    // Not a kernel: kexec_file_load must refuse it (ENOEXEC), once.
    let junk = vec![0x4a; 64 * 1024];
    let stage1 = stage1_initrd(dir.path(), &initrd_bytes, junk, b"not a squashfs".to_vec());
    let mut vm = Qemu::direct_kernel(
        &p.kernel,
        &stage1,
        "console=ttyS0,115200 phase.mode=local phase.test=kexec",
    )
    .name("kexec-refused")
    .timeout(BOOT_TIMEOUT)
    .start()
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    expect(&mut vm, "payload  ok");
    expect(&mut vm, "kexec    FAIL");
    expect(
        &mut vm,
        "not a kernel image this kernel can kexec (ENOEXEC)",
    );
    expect(&mut vm, "rescue: shell on /dev/ttyS0");
    expect(&mut vm, "(phase rescue)");
    vm.send_line("/bin/busybox poweroff -f")
        .expect("type on the serial console");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    assert!(
        !log.contains("kexec_core: Starting new kernel"),
        "kexec happened"
    );
    assert_eq!(
        log.matches("kexec    FAIL").count(),
        1,
        "kexec must not be retried in a loop"
    );
}

/// Debian's kernel with its Authenticode signature removed, at
/// `dir/vmlinuz-unsigned`.
fn unsigned_copy(dir: &Path, kernel: &Path) -> PathBuf {
    let unsigned = dir.join("vmlinuz-unsigned");
    std::fs::copy(kernel, &unsigned).expect("copy the kernel");
    let st = std::process::Command::new("sbattach")
        .arg("--remove")
        .arg(&unsigned)
        .status()
        .expect("run sbattach (Debian package sbsigntool)");
    assert!(st.success(), "sbattach --remove failed: {st}");
    assert_ne!(
        std::fs::read(&unsigned).expect("read unsigned kernel"),
        std::fs::read(kernel).expect("read kernel"),
        "sbattach left the signature in place"
    );
    unsigned
}

/// Debian's kernel with its Authenticode signature replaced by one of a
/// key made here (`openssl req -x509`, `sbsign`), at `dir/vmlinuz-foreign`:
/// a valid signature by a key that no keyring of the machine holds.
fn foreign_signed_copy(dir: &Path, kernel: &Path) -> PathBuf {
    let unsigned = unsigned_copy(dir, kernel);
    let (key, cert) = (dir.join("foreign.key"), dir.join("foreign.crt"));
    let run = |cmd: &mut std::process::Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=Phase Boot test: a key no machine trusts"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req",
    );
    let signed = dir.join("vmlinuz-foreign");
    run(
        std::process::Command::new("sbsign")
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&signed)
            .arg(&unsigned),
        "sbsign (Debian package sbsigntool)",
    );
    run(
        std::process::Command::new("sbverify")
            .arg("--cert")
            .arg(&cert)
            .arg(&signed),
        "sbverify of the foreign signature",
    );
    signed
}

/// The locked-down kernel's own line when `kexec_file_load` refuses a
/// kernel's signature (kernel/kexec_file.c; Debian's kernel enforces
/// kexec signatures under Secure Boot through its IMA arch policy), with
/// the negative errno.
fn kernel_refusal(errno: i32) -> String {
    format!("kexec_file: Enforced kernel signature verification failed ({errno}).")
}

#[test]
fn under_secure_boot_an_unsigned_target_kernel_is_refused_in_words() {
    let p = prereqs();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The target kernel: Debian's, with its Authenticode signature removed.
    let unsigned = unsigned_copy(d, &p.kernel);
    let unsigned_bytes = std::fs::read(&unsigned).expect("read unsigned kernel");
    let initrd_bytes = std::fs::read(&p.initrd).expect("read initramfs");
    let stage1 = stage1_initrd(d, &initrd_bytes, unsigned_bytes, b"not used".to_vec());
    // A stick (shim, signed systemd-boot, the signed boot kernel) whose
    // stage-1 initramfs carries the test artifacts.
    let disk = d.join("disk.img");
    let out = std::process::Command::new(fixtures::phase_bin())
        // The repository root: `--templates esp` is relative to it.
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .arg("image")
        .arg("--out")
        .arg(&disk)
        .arg("--initramfs")
        .arg(&stage1)
        .args(["--arch", "x86_64", "--build-dir"])
        .arg(build_dir())
        .arg("--kernel-version")
        .arg(&p.release)
        .args(["--templates", "esp", "--default-mode", "local", "--json"])
        .output()
        .expect("run phase image");
    assert!(
        out.status.success(),
        "phase image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut vm = Qemu::image(&disk)
        .append("phase.test=kexec")
        .secure_boot()
        .name("kexec-unsigned-secureboot")
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    expect(&mut vm, "secureboot on, lockdown integrity");
    expect(&mut vm, "payload  ok");
    expect(&mut vm, "kexec    FAIL");
    expect(
        &mut vm,
        &format!("target kernel {} is not signed (ENODATA)", p.release),
    );
    // No earlier release to fall back to (a test hand-over has no cache).
    expect(&mut vm, "fallback FAIL");
    expect(
        &mut vm,
        "no fallback: no cache partition, so no earlier release is kept; nothing else is started",
    );
    expect(&mut vm, "rescue: shell on /dev/ttyS0");
    expect(&mut vm, "(phase rescue)");
    vm.send_line("/bin/busybox poweroff -f")
        .expect("type on the serial console");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    assert!(
        log.contains(&kernel_refusal(-61)),
        "the kernel's own refusal (-ENODATA) is not on the console:\n{log}"
    );
    assert!(
        !log.contains("kexec_core: Starting new kernel"),
        "an unsigned kernel was started"
    );
}

#[test]
fn stage1_kexecs_into_the_target_which_boots_the_squashfs_and_runs_its_services() {
    let t0 = Instant::now();
    let Prereqs {
        release,
        kernel,
        initrd,
    } = prereqs();

    let dir = tempfile::tempdir().expect("tempdir");
    let kernel_bytes = std::fs::read(&kernel).expect("read kernel");
    let initrd_bytes = std::fs::read(&initrd).expect("read initramfs");
    let kernel_sha = sha256_hex(&kernel_bytes);
    let initrd_sha = sha256_hex(&initrd_bytes);
    let marker = format!("marker-{}-{}", std::process::id(), t0.elapsed().as_nanos());
    let squash = dir.path().join("rootfs.squashfs");
    make_rootfs(dir.path(), &squash, &marker, &kernel_sha);
    let squash_bytes = std::fs::read(&squash).expect("read squashfs");
    let rootfs_sha = sha256_hex(&squash_bytes);

    let stage1_path = stage1_initrd(dir.path(), &initrd_bytes, kernel_bytes, squash_bytes);
    let mut vm = Qemu::direct_kernel(
        &kernel,
        &stage1_path,
        "console=ttyS0,115200 phase.mode=local phase.channel=testing phase.test=kexec",
    )
    .name("kexec")
    .timeout(BOOT_TIMEOUT)
    .start()
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));

    // Stage 1.
    expect(&mut vm, "stage=boot test=kexec");
    expect(&mut vm, "phase-init: ready mode=local channel=testing");
    expect(&mut vm, "payload  ok");
    expect(&mut vm, "kexec    ok");
    // (the line arrives in pieces: match its parts, not the returned text)
    expect(&mut vm, "phase.mode=local phase.channel=testing");
    expect(&mut vm, "phase.stage=target");
    expect(&mut vm, "kexec: starting the target kernel");
    let t_kexec = t0.elapsed();
    // The target kernel.
    expect(&mut vm, "kexec_core: Starting new kernel");
    expect(&mut vm, &format!("Linux version {release}"));
    expect(&mut vm, "stage=target");
    expect(&mut vm, "phase-init: ready mode=local channel=testing");
    // Stage 2.
    expect(&mut vm, "rootfs   ok");
    expect(&mut vm, "switch   ok");
    expect(&mut vm, "start order: flaky hello | stopper");
    expect(&mut vm, "service hello: started");
    // From inside the overlay root: the squashfs's marker, the overlay as
    // `/`, a write that lands in the tmpfs upper, the CAS copy of the kernel
    // and boot.json naming all three artifacts.
    expect(
        &mut vm,
        &format!("phase-target-marker: {marker} root=overlay"),
    );
    expect(&mut vm, "probe: overlay-writable");
    expect(&mut vm, &format!("cas-kernel: {kernel_sha}"));
    expect(&mut vm, ":boot.json-end");
    let log = vm.log();
    let boot_json = log
        .lines()
        .find(|l| l.starts_with("boot.json: {"))
        .unwrap_or_else(|| panic!("no boot.json line in the log"));
    for (kind, sha) in [
        ("kernel", &kernel_sha),
        ("initramfs", &initrd_sha),
        ("rootfs", &rootfs_sha),
    ] {
        assert!(
            boot_json.contains(&format!(
                "\"kind\":\"{kind}\",\"target\":\"testing/x86_64/{kind}\",\"sha256\":\"{sha}\""
            )),
            "boot.json lacks {kind} {sha}: {boot_json}"
        );
    }
    assert!(boot_json.contains("\"mode\":\"local\""), "{boot_json}");
    assert!(boot_json.contains("\"step\":\"modules\""), "{boot_json}");
    // The supervisor: restart with backoff, then the dependent service,
    // then busybox poweroff -> SIGUSR2 -> PID 1 powers off.
    expect(&mut vm, "service stopper: started");
    let log = vm.log();
    assert!(
        log.contains("service flaky: exited (status 3); restarting in 0.2 s (restart 1)"),
        "no restart line in the log"
    );
    expect(&mut vm, "supervisor: power off requested");
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    assert!(
        vm.log().contains("flaky-recovered"),
        "flaky did not succeed on its restart"
    );
    eprintln!(
        "kexec boot test: stage 1 -> kexec {:.1} s, whole test {:.1} s",
        t_kexec.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// Under Secure Boot with the Microsoft keys, two boots of one writable
/// stick (a fleet of `boot_fail_common`, seeded with release 1):
///
/// 1. offline from the cache: release 1 (Debian's signed kernel) boots,
///    and stage 1 keeps it in the cache as the release to fall back to;
/// 2. a peer serves release 2, whose kernel is the same one signed by a
///    key made here instead of Debian's: stage 1 verifies and fetches it,
///    the locked-down kernel refuses it (its own line, `-ENOKEY`), and
///    stage 1 falls back to release 1 from the cache: its marker runs,
///    `boot.json` records the refused kernel, and no kernel but the
///    Debian-signed one is started.
#[test]
fn under_secure_boot_a_refused_kernel_falls_back_to_the_last_release_that_booted() {
    use super::boot_fail_common::{user_net, Fleet, Peer, PEER_URL};
    let t0 = Instant::now();
    let p = prereqs();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let fleet = Fleet::new(d, "fallback");
    let repo = d.join("repo");
    let tag = format!("{}-{}", std::process::id(), t0.elapsed().as_nanos());
    let (old, new) = (format!("release1-{tag}"), format!("release2-{tag}"));
    fleet.publish(&repo, &old, 1);
    let disk = d.join("disk.img");
    fleet.disk(&repo, &disk);
    let foreign = foreign_signed_copy(d, &fleet.kernel);
    fleet.publish_with_kernel(&repo, &new, 2, &foreign);
    let signed_sha = sha256_hex(&std::fs::read(&fleet.kernel).expect("read kernel"));
    let foreign_sha = sha256_hex(&std::fs::read(&foreign).expect("read foreign kernel"));
    let t_built = t0.elapsed();
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    let line = |vm: &mut Vm, s: &str| {
        let re = regex::Regex::new(&format!("{}[^\\n]*\\n", regex::escape(s))).expect("regex");
        vm.wait_for_regex(&re)
            .unwrap_or_else(|e| panic!("{e}"))
            .trim_end()
            .to_owned()
    };

    // Boot 1: no NIC; release 1 from the seeded cache, kept as the one to
    // fall back to.
    {
        let mut vm = Qemu::image(&disk)
            .writable()
            .secure_boot()
            .memory_mib(1024)
            .name("fallback-boot1")
            .timeout(BOOT_TIMEOUT * 2)
            .start()
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
        expect(&mut vm, "secureboot on, lockdown integrity");
        let fetched = line(&mut vm, "fetch    ok");
        assert!(fetched.contains("targets v1"), "{fetched}");
        expect(
            &mut vm,
            "fallback: kept release targets v1 snapshot v1 in the cache as the one to fall back to",
        );
        expect(&mut vm, &format!("release-marker: {old} root=overlay"));
        expect(&mut vm, "supervisor: powering off");
        let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
        assert!(st.success(), "QEMU exit status {st}");
    }
    let t_boot1 = t0.elapsed();

    // Boot 2: the same stick; a peer serves release 2.
    testkit::qemu::edit_entry_in_place(&disk, None, &format!("phase.peers={PEER_URL}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let peer = Peer::serve(&repo, &d.join("peer-cache"));
    let mut vm = Qemu::image(&disk)
        .writable()
        .secure_boot()
        .args(user_net(Some(peer.port)))
        .memory_mib(1024)
        .name("fallback-boot2")
        .timeout(BOOT_TIMEOUT * 2)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    expect(&mut vm, "secureboot on, lockdown integrity");
    let kernel = line(&mut vm, "fetch: kernel    stable/x86_64/kernel");
    assert!(
        kernel.contains(&format!("sha256:{}..", &foreign_sha[..12])) && kernel.contains(PEER_URL),
        "release 2's kernel, verified, from the peer: {kernel}"
    );
    let fetched = line(&mut vm, "fetch    ok");
    assert!(fetched.contains("targets v2"), "{fetched}");
    let route = line(&mut vm, "route    ok");
    assert!(
        route.contains("kexec: the target kernel (sha256"),
        "{route}"
    );
    expect(&mut vm, "kexec    FAIL");
    expect(
        &mut vm,
        &format!(
            "target kernel {} is not signed by a key this machine trusts (ENOKEY; secureboot on, lockdown integrity)",
            p.release
        ),
    );
    let fallback = line(&mut vm, "fallback ok");
    assert!(
        fallback.contains(&format!(
            "release targets v2 snapshot v2 refused (its kernel sha256:{}..); falling back to release targets v1 snapshot v1, the older signed target in the cache: kernel sha256:{}..",
            &foreign_sha[..12],
            &signed_sha[..12]
        )),
        "{fallback}"
    );
    expect(&mut vm, "kexec    ok");
    expect(&mut vm, "kexec: starting the target kernel");
    expect(&mut vm, "kexec_core: Starting new kernel");
    expect(&mut vm, &format!("release-marker: {old} root=overlay"));
    let bj = line(&mut vm, "boot.json: {");
    assert!(
        bj.contains(&format!(
            "\"kind\":\"kernel\",\"target\":\"stable/x86_64/kernel\",\"sha256\":\"{signed_sha}\""
        )),
        "boot.json names the signed kernel: {bj}"
    );
    assert!(
        bj.contains("\"fallback\":{\"refused\":\"targetkernel")
            && bj.contains(&format!("\"kernel\":\"{foreign_sha}\""))
            && bj.contains("\"path\":\"kexec\""),
        "boot.json records the refused kernel: {bj}"
    );
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    assert!(
        !log.contains(&format!("release-marker: {new}")),
        "release 2 ran:\n{log}"
    );
    assert_eq!(log.matches("kexec    FAIL").count(), 1, "{log}");
    // The refusal is the locked-down kernel's, not stage 1's.
    assert_eq!(
        log.matches(&kernel_refusal(-126)).count(),
        1,
        "the kernel's own refusal (-ENOKEY), once:\n{log}"
    );
    assert_eq!(
        log.matches("kexec_core: Starting new kernel").count(),
        1,
        "one kernel started after stage 1, the signed one:\n{log}"
    );
    drop(peer);
    eprintln!(
        "fallback test: build {:.1} s, boot 1 {:.1} s, boot 2 {:.1} s",
        t_built.as_secs_f64(),
        (t_boot1 - t_built).as_secs_f64(),
        (t0.elapsed() - t_boot1).as_secs_f64()
    );
}
