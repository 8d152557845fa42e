//! Offline cache boot: no network device at all. The image's
//! `PHASE-CACHE` partition is seeded from a repository this test publishes
//! (Debian's kernel, a target initramfs, a squashfs rootfs whose service
//! prints a marker), with keys generated here and baked into the image.
//! Stage 1 mounts the cache, refreshes TUF from the cached metadata alone,
//! re-verifies the kernel and initramfs, goes on as stage 2 (the stick is
//! the release's), opens the squashfs through dm-verity with the signed
//! tree and boots it under an overlay; the marker service runs from inside
//! it. Then one byte of the rootfs is flipped on the cache partition and
//! the stick boots again: stage 1 does not read the rootfs whole, and the
//! target reads the file holding the byte as an I/O error, with the
//! kernel's `device-mapper: verity` line, while the rest of the boot
//! completes. A third boot takes the kexec route (`phase.kexec=always`):
//! the rootfs stays out of the kexec initrd, and the target reads it in
//! place from the cache partition through dm-verity, with the same I/O
//! error for the flipped byte.
//!
//! Prerequisites (built by `make test`): `$PHASE_BIN` (the release `phase`
//! CLI), `$PHASE_BUILD/kernel/current` with the unpacked kernel,
//! `$PHASE_BUILD/x86_64/phase-init`; `mksquashfs` and a static
//! `/bin/busybox`. A missing one fails the test with what to do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::fixtures::{self, build_dir, need};
use testkit::qemu::{self, Qemu, Vm};

/// UEFI boot + a kexec'd second kernel under TCG on a loaded 2-core host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `phase args...` and fails the test with its output on error.
fn phase(args: &[&std::ffi::OsStr]) {
    testkit::fixtures::run_phase(args);
}

macro_rules! os {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

/// The probe file's length: two whole squashfs blocks (128 KiB each) of
/// incompressible bytes, so mksquashfs stores them as they are, in blocks
/// of their own (no fragment shared with another file).
const PROBE_LEN: usize = 256 * 1024;
/// The probe byte the second boot flips: inside the probe's second block,
/// far from any other file's data.
const PROBE_FLIP: usize = 200_000;

/// Bytes no compressor shrinks (xorshift64), the same for every run.
fn probe_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PROBE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// busybox + `/etc/phase/services.toml`: a marker service that proves it
/// runs from the overlay root and sees boot.json, says which device the
/// squashfs is mounted from, reads `/etc/verity-probe` whole and says
/// whether that worked and what the kernel said about dm-verity, then a
/// poweroff.
fn make_rootfs(dir: &Path, out: &Path, marker: &str) {
    let hello = "echo \"offline-marker: $(cat /etc/marker) root=$(busybox awk '$2==\"/\"{print $3}' /proc/mounts)\"; \
                 echo \"lower-device: $(busybox awk '$2==\"/run/phase/lower\"{print $1}' /proc/mounts) :lower-end\"; \
                 if busybox cat /etc/verity-probe > /dev/null 2> /tmp/probe-err; then echo \"verity-probe: read ok\"; \
                 else echo \"verity-probe: read failed: $(busybox cat /tmp/probe-err)\"; fi; \
                 echo \"verity-dmesg: $(busybox dmesg | busybox grep -m1 'device-mapper: verity') :dmesg-end\"; \
                 echo \"boot.json: $(busybox tr -d ' \\n' < /phase/boot.json) :boot.json-end\"";
    let services = fixtures::oneshot_then_poweroff("hello", hello);
    let marker_file = format!("{marker}\n");
    let probe = probe_bytes();
    fixtures::busybox_rootfs_bytes(
        dir,
        out,
        &[
            ("etc/marker", marker_file.as_bytes()),
            ("etc/verity-probe", probe.as_slice()),
        ],
        &services,
    );
}

/// The rootfs's record in a `boot.json` line says the boot did not hash it
/// whole, so the node's peer service hashes it before it re-shares it.
fn assert_rootfs_unhashed(boot_json: &str) {
    let rootfs = boot_json
        .split("\"kind\":\"rootfs\"")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no rootfs record in boot.json: {boot_json}"));
    assert!(
        rootfs.contains("\"hashed\":false"),
        "the rootfs record does not say it was not hashed: {rootfs}"
    );
}

/// Flips the probe byte wherever the disk image holds it (the rootfs
/// object in the cache partition's CAS), reading the image in pieces;
/// returns how many copies.
fn flip_probe_byte(disk: &Path) -> usize {
    use std::io::{Read, Seek, SeekFrom, Write};
    let probe = probe_bytes();
    let needle = &probe[PROBE_FLIP..PROBE_FLIP + 64];
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("open the disk image");
    let mut at = Vec::new();
    let mut buf = vec![0u8; 16 << 20];
    // Each piece starts with the previous one's last 63 bytes.
    let (mut kept, mut base) = (0usize, 0u64);
    loop {
        let n = f.read(&mut buf[kept..]).expect("read the disk image");
        if n == 0 {
            break;
        }
        let end = kept + n;
        for (i, w) in buf[..end].windows(needle.len()).enumerate() {
            if w == needle {
                at.push(base + i as u64);
            }
        }
        let keep = (needle.len() - 1).min(end);
        buf.copy_within(end - keep..end, 0);
        base += (end - keep) as u64;
        kept = keep;
    }
    at.dedup();
    for pos in &at {
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(*pos)).expect("seek");
        f.read_exact(&mut b).expect("read");
        b[0] ^= 0xff;
        f.seek(SeekFrom::Start(*pos)).expect("seek");
        f.write_all(&b).expect("write the disk image");
    }
    at.len()
}

/// Publishes `rootfs` with Debian's kernel and a phase-init target
/// initramfs, under keys generated in `d`, and builds `d/disk.img`: a
/// `local`-mode image whose `PHASE-CACHE` is seeded with that release and
/// whose stage-1 initramfs trusts those keys. Returns the image.
fn seeded_disk(d: &Path, rootfs: &Path) -> PathBuf {
    let build = build_dir();
    let (release, kernel) = fixtures::kernel();
    let init = build.join("x86_64/phase-init");
    need(&init, "run `make init`");
    let keys = d.join("keys");
    let repo = d.join("repo");
    let root = keys.join("1.root.json");
    phase(os!["keygen", "--out", keys.as_os_str()]);

    // The target initramfs: phase-init again (role target via the kexec
    // cmdline), built with the same trusted root.
    let target_initrd = d.join("target-initramfs.img");
    let common = |out: &Path, stage: Option<&str>| {
        let mut a: Vec<std::ffi::OsString> = vec![
            "image".into(),
            "--out".into(),
            out.into(),
            "--root".into(),
            root.clone().into(),
            "--init".into(),
            init.clone().into(),
            "--arch".into(),
            "x86_64".into(),
            "--build-dir".into(),
            build.clone().into(),
            "--kernel-version".into(),
            release.clone().into(),
            "--templates".into(),
            "esp".into(),
            "--modules-list".into(),
            "kernel/modules-x86_64.list".into(),
        ];
        if let Some(s) = stage {
            a.extend(["--stage".into(), s.into()]);
        }
        a
    };
    let run = |a: Vec<std::ffi::OsString>| {
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        phase(&refs);
    };
    run(common(&target_initrd, Some("initramfs")));
    phase(os![
        "publish",
        "--repo",
        repo.as_os_str(),
        "--keys",
        keys.as_os_str(),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
        "--kernel",
        kernel.as_os_str(),
        "--initramfs",
        target_initrd.as_os_str(),
        "--rootfs",
        rootfs.as_os_str(),
        "--cmdline",
        "console=ttyS0,115200",
        "--release-version",
        "1",
    ]);

    // The stick starts the very initramfs the release names, so the boot
    // needs no second kernel (direct.rs).
    let disk = d.join("disk.img");
    let mut a = common(&disk, None);
    a.extend([
        "--initramfs".into(),
        target_initrd.clone().into(),
        "--seed-repo".into(),
        repo.into(),
        "--channel".into(),
        "stable".into(),
        "--default-mode".into(),
        "local".into(),
    ]);
    run(a);
    disk
}

#[test]
fn offline_boot_from_the_seeded_cache_reaches_the_target_marker() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let marker = format!("offline-{}-{}", std::process::id(), t0.elapsed().as_nanos());
    let squash = d.join("rootfs.squashfs");
    make_rootfs(d, &squash, &marker);
    let disk = seeded_disk(d, &squash);
    let t_built = t0.elapsed();

    let mut vm = Qemu::image(&disk)
        .mode("local")
        .memory_mib(1024)
        .name("offline")
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    // The loader booted the local entry: the kernel prints its command line.
    expect(&mut vm, "phase.mode=local");
    expect(&mut vm, "trust    ok");
    expect(&mut vm, "fingerprint ");
    expect(&mut vm, "network  ok");
    expect(&mut vm, "no wired interfaces");
    expect(&mut vm, "cache    ok");
    expect(&mut vm, "read-write");
    expect(&mut vm, "using the cached trusted copies");
    expect(&mut vm, "fetch: kernel");
    expect(&mut vm, "fetch: rootfs");
    expect(&mut vm, "fetch    ok");
    expect(&mut vm, "phase-init: ready mode=local channel=stable");
    // The stick's kernel and initramfs are the release's: stage 1 goes on
    // as stage 2, with the rootfs bound in place from the cache partition.
    let route = expect(&mut vm, "route    ok");
    assert!(
        route.contains("direct, no second kernel"),
        "{route}\n{}",
        vm.log()
    );
    let t_kexec = t0.elapsed();
    let payload = expect(&mut vm, "payload  ok");
    assert!(
        payload.contains("/phase in place")
            && payload.contains("rootfs /run/phase/cache/")
            && payload.contains("read through dm-verity with the tree stable/x86_64/rootfs.verity"),
        "{payload}"
    );
    expect(&mut vm, "stage=target");
    let rootfs = expect(&mut vm, "rootfs   ok");
    assert!(
        rootfs.contains("/dev/dm-") && rootfs.contains("dm-verity phase-rootfs"),
        "the squashfs is not read through dm-verity: {rootfs}"
    );
    expect(&mut vm, "switch   ok");
    expect(&mut vm, &format!("offline-marker: {marker} root=overlay"));
    let lower = expect(&mut vm, ":lower-end");
    assert!(lower.contains("lower-device: /dev/dm-"), "{lower}");
    expect(&mut vm, "verity-probe: read ok");
    expect(&mut vm, ":boot.json-end");
    let log = vm.log();
    // The warm cache's rootfs is not hashed whole: dm-verity checks it.
    let fetched = log
        .lines()
        .find(|l| l.contains("fetch: rootfs "))
        .unwrap_or_else(|| panic!("no rootfs fetch line:\n{log}"));
    assert!(
        fetched.contains("held; dm-verity checks it as it is read"),
        "{fetched}"
    );
    assert!(
        log.contains("fetch: verity    stable/x86_64/rootfs.verity"),
        "no tree fetch line:\n{log}"
    );
    let boot_json = log
        .lines()
        .find(|l| l.starts_with("boot.json: {"))
        .unwrap_or_else(|| panic!("no boot.json line in the log"));
    for want in [
        "\"target\":\"stable/x86_64/kernel\"",
        "\"target\":\"stable/x86_64/rootfs\"",
        "\"kind\":\"verity\",\"target\":\"stable/x86_64/rootfs.verity\"",
        "\"tuf\":{\"root\":1,",
        "\"peer\":\"cache\"",
        "\"mode\":\"local\"",
        "\"step\":\"fetch\"",
        "\"handover\":{\"path\":\"direct\"",
    ] {
        assert!(
            boot_json.contains(want),
            "boot.json lacks {want}: {boot_json}"
        );
    }
    assert_rootfs_unhashed(boot_json);
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    assert!(
        !vm.log().contains("kexec_core: Starting new kernel"),
        "a second kernel started on the direct route"
    );
    let t_first = t0.elapsed();

    // One byte of the rootfs flipped on the cache partition: the warm boot
    // does not notice it in stage 1, the target reads that file as an I/O
    // error and the kernel names dm-verity; the rest of the boot goes on.
    let copies = flip_probe_byte(&disk);
    assert!(copies >= 1, "the probe bytes are not in the disk image");
    let mut vm = Qemu::image(&disk)
        .mode("local")
        .memory_mib(1024)
        .name("offline-corrupt")
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let held = expect(&mut vm, "fetch: rootfs ");
    assert!(held.contains("held; dm-verity checks it"), "{held}");
    expect(&mut vm, "route    ok");
    expect(&mut vm, "rootfs   ok");
    expect(&mut vm, &format!("offline-marker: {marker} root=overlay"));
    let failed = expect(&mut vm, "verity-probe: read ");
    assert!(
        failed.contains("verity-probe: read failed")
            && (failed.contains("Input/output error") || failed.contains("I/O error")),
        "the flipped byte was read without an error: {failed}"
    );
    let dmesg = expect(&mut vm, ":dmesg-end");
    assert!(dmesg.contains("device-mapper: verity"), "{dmesg}");
    expect(&mut vm, ":boot.json-end");
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let t_corrupt = t0.elapsed();

    // The kexec route (phase.kexec=always) with the cache partition: the
    // rootfs stays out of the kexec initrd, the target mounts the cache
    // partition and reads the rootfs in place through dm-verity, and the
    // flipped byte is an I/O error there too.
    let mut vm = Qemu::image(&disk)
        .mode("local")
        .append("phase.kexec=always")
        .memory_mib(1024)
        .name("offline-kexec")
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let held = expect(&mut vm, "fetch: rootfs ");
    assert!(held.contains("held; dm-verity checks it"), "{held}");
    let route = expect(&mut vm, "route    ok");
    assert!(route.contains("kexec: phase.kexec=always"), "{route}");
    let payload = expect(&mut vm, "payload  ok");
    assert!(
        payload.contains("the rootfs stays on the cache partition (/run/phase/cache/cas/sha256/"),
        "{payload}"
    );
    expect(&mut vm, "kexec_core: Starting new kernel");
    expect(&mut vm, "stage=target");
    let rootfs = expect(&mut vm, "rootfs   ok");
    assert!(
        rootfs.contains("dm-verity phase-rootfs")
            && rootfs.contains("in place from /run/phase/cache/cas/sha256/"),
        "the target does not read the rootfs in place through dm-verity: {rootfs}"
    );
    expect(&mut vm, &format!("offline-marker: {marker} root=overlay"));
    let lower = expect(&mut vm, ":lower-end");
    assert!(lower.contains("lower-device: /dev/dm-"), "{lower}");
    let failed = expect(&mut vm, "verity-probe: read ");
    assert!(
        failed.contains("verity-probe: read failed")
            && (failed.contains("Input/output error") || failed.contains("I/O error")),
        "the flipped byte was read without an error after kexec: {failed}"
    );
    let dmesg = expect(&mut vm, ":dmesg-end");
    assert!(dmesg.contains("device-mapper: verity"), "{dmesg}");
    let boot_json = expect(&mut vm, ":boot.json-end");
    assert_rootfs_unhashed(&boot_json);
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    eprintln!(
        "offline boot test: build {:.1} s, to the route {:.1} s, first boot {:.1} s, corrupted {:.1} s, whole {:.1} s ({copies} copy of the probe flipped)",
        t_built.as_secs_f64(),
        t_kexec.as_secs_f64(),
        t_first.as_secs_f64(),
        t_corrupt.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// sha256sum of a file, as hex.
fn sha256_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `phase.persist` (stage 2): the target's changes are kept on
/// the named partition across boots, and only when writes are allowed.
///
/// The rootfs's service prints what an earlier boot left in
/// `/etc/persist-check`, then writes this boot's id there. One seeded image,
/// booted three times as it is (writable, no snapshot), with
/// `phase.persist=PHASE-CACHE`:
///   1. nothing found; the id written to the overlay upper on the partition;
///   2. boot 1's id found: the upper survived the power-off and the next
///      stage 1 (which mounts the same partition as its cache);
///   3. with `phase.nowrite=true` as well: the request is set aside with one
///      line, the upper is a tmpfs, nothing is found, and the image is
///      byte-identical afterwards;
///   4. writes allowed, `phase.persist=NO-SUCH-PART`: the boot goes on with
///      a tmpfs upper and a warning naming the missing partition.
#[test]
fn a_persistent_upper_keeps_the_targets_changes_only_when_writes_are_allowed() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let check = "f=/etc/persist-check; \
                 if [ -f $f ]; then echo \"persist-check: found $(cat $f)\"; else echo \"persist-check: none\"; fi; \
                 id=$(cat /proc/sys/kernel/random/boot_id); echo $id > $f; sync; \
                 echo \"persist-check: wrote $id\"";
    let services = fixtures::oneshot_then_poweroff("check", check);
    let squash = d.join("rootfs.squashfs");
    fixtures::busybox_rootfs(d, &squash, &[], &services);
    let disk = seeded_disk(d, &squash);

    // Each boot's entry is edited first (the image is booted as it is).
    let edit = |words: &str| {
        qemu::edit_entry_in_place(&disk, Some("local"), words).unwrap_or_else(|e| panic!("{e}"))
    };
    let boot = |name: &str, want: &[&str]| -> String {
        let mut vm = Qemu::image(&disk)
            .writable()
            .memory_mib(1024)
            .name(name)
            .timeout(BOOT_TIMEOUT)
            .start()
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
        for w in want {
            vm.wait_for(w).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let wrote = vm
            .wait_for("persist-check: wrote ")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        vm.wait_for("supervisor: powering off")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
        assert!(st.success(), "{name}: QEMU exit status {st}");
        let id = wrote
            .split("persist-check: wrote ")
            .nth(1)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        assert_eq!(id.len(), 36, "{name}: not a boot id: {wrote}");
        id
    };

    edit("phase.persist=PHASE-CACHE");
    let first = boot(
        "persist-1",
        &[
            "stage=target",
            "persistent upper PHASE-CACHE (/dev/",
            "persist-check: none",
        ],
    );
    let found = format!("persist-check: found {first}");
    let second = boot(
        "persist-2",
        &["persistent upper PHASE-CACHE (/dev/", &found],
    );
    assert_ne!(first, second, "two boots, one boot id");

    // Boot 3 with writes off: its entry is edited before the image is
    // hashed, so the hash covers exactly what the VM boots.
    edit("phase.nowrite=true");
    let before = sha256_file(&disk);
    boot(
        "persist-3",
        &[
            "phase.persist=PHASE-CACHE ignored: phase.nowrite=true; the target's changes stay in RAM",
            "+ tmpfs upper -> overlay",
            "persist-check: none",
        ],
    );
    assert_eq!(
        sha256_file(&disk),
        before,
        "a phase.nowrite boot changed the image"
    );

    // Boot 4, writes allowed again but a partition that does not exist:
    // the boot goes on with a tmpfs upper and says why.
    edit("phase.nowrite=false phase.persist=NO-SUCH-PART");
    boot(
        "persist-4",
        &[
            "+ tmpfs upper -> overlay",
            "phase.persist=NO-SUCH-PART: no partition named NO-SUCH-PART appeared within 5 s; the target's changes stay in RAM this boot",
            "persist-check: none",
        ],
    );
    eprintln!(
        "persist test: four boots in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
