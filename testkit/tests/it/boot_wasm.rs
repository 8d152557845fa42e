//! Boot to WASM: the REAL target boots and runs a verified job,
//! then re-shares what it booted from.
//!
//! A disk image with an EMPTY cache partition (local mode) boots from a
//! `phase serve` peer on a test LAN, serving a repository this test signs: Debian's kernel, the initramfs, the target
//! rootfs of `make rootfs` (busybox, `phase`, `plasmd`) and the demo job of
//! `make plasmd-jobs`. The VM has one NIC on the LAN, whose host-side node
//! runs the peer and a DHCP server. The serial console must show stage 1 verifying
//! the boot set and the job, stage 2 (without a second kernel: the stick is
//! the release it boots), and `Hello from Phase WASM on
//! <host>` printed by the job plasmd ran. (A seeded stick does not carry
//! jobs yet: `phase image --seed-repo` seeds the boot set only.) Then a
//! host-side node fetches every
//! target from the VM's `phase serve` (`phase fetch`, which verifies each
//! against the test's root) and the job by its digest (curl): the node
//! re-shares exactly the verified bytes.
//!
//! The PC has a TPM (swtpm): stage 1 extends its events into PCR 23 and
//! shows the value it reads back; the target shows the value it reads and
//! prints `boot.json`'s event log, which this test replays on the host
//! (`measure::replay_log`): all three values must be equal. Then the node
//! attests: `phase attest verify --peer` on the host-side node checks the
//! quote the target's `phase serve` makes with the TPM (signature, nonce,
//! both event logs' replays, the stick's initramfs and loader entry in
//! PCR 9 against the manifest `phase image` wrote, the artifacts against
//! the TUF metadata) and must print its verdict, with the PCR 23 the
//! console showed and the stick image; and the PCRs 4, 7 and 9 the guest
//! read after its quote must be the host's replay of the firmware event
//! log (`binary_bios_measurements`) it sends. The last answer is kept as
//! `boot-wasm-attest.json` in cargo's `CARGO_TARGET_TMPDIR` (a real OVMF +
//! swtpm event log). The stick names its peer with `--append-cmdline`, so
//! its manifest holds the command line it boots with.
//!
//! Then one more boot, of the same stick rebuilt with one NUL byte more
//! of stage-1 initramfs (padding the kernel skips; published as release 2
//! so the node boots it directly) and a word appended to its loader entry:
//! checked against the first stick's manifest, the verifier refuses it in
//! one line naming PCR 9, both initramfs digests and the command line with
//! the word.
//!
//! The VM is a PC with a USB stick: the disk is a removable USB
//! mass-storage device on an xHCI controller, and the firmware is OVMF's
//! Secure Boot build with the stock Microsoft keys, as a PC leaves the
//! factory: the stick's shim (Microsoft-signed) starts
//! Debian-signed systemd-boot, which starts Debian's signed kernel; the
//! kernel is then locked down (`integrity`). `boot_late_seed` kexecs
//! under Secure Boot (`kexec_file_load`'s signature check); the other boot
//! tests boot the same kind of stick with Secure Boot off.
//!
//! Prerequisites (built by `make test`): `$PHASE_BIN`, `$PHASE_BUILD` with
//! the kernel, `x86_64/phase-init`, `x86_64/rootfs.squashfs`,
//! `jobs/hello.wasm`; busybox-static; root (network namespaces).

use super::target_common;

use std::time::Duration;

use base64::Engine as _;
use target_common as tc;
use testkit::qemu::{Qemu, Vm};

/// UEFI + the target's services under TCG on a loaded 2-core host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

#[test]
fn the_real_target_runs_the_verified_wasm_job_and_re_shares_its_boot_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = tc::publish(d);
    let (mut lan, mut dhcpd) = tc::lan_with_dhcp(d);
    // The stick's entries name the peer themselves, so its manifest
    // records the command line the node boots with.
    let peers = format!("phase.peers=http://{}:7070", lan.ipv4(0));
    let disk = d.join("disk.img");
    p.disk_with(&disk, false, &tc::os(["--append-cmdline", &peers]));
    let manifest_path = d.join("disk.img.manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path).expect("phase image wrote the stick manifest"),
    )
    .expect("the manifest is JSON");
    let stick_id = manifest["id"]
        .as_str()
        .expect("the stick image id")
        .to_owned();
    assert_eq!(
        manifest["initramfs_sha256"],
        sha256_hex(&std::fs::read(&p.initramfs).expect("read the initramfs")),
        "the stick carries the published initramfs: {manifest}"
    );

    // The peer the VM boots from: `phase serve` over the repository in
    // node 0 (198.18.0.10).
    let _serve = testkit::netns::spawn(
        testkit::netns::command(lan.node(0), testkit::fixtures::phase_bin())
            .args(["serve", "--repo"])
            .arg(&p.repo)
            .arg("--cache")
            .arg(d.join("peer-cache"))
            .args(["--listen", "[::]:7070"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let mut vm = Qemu::image(&disk)
        .memory_mib(768)
        .name("boot-wasm")
        .tap(&tap)
        .timeout(BOOT_TIMEOUT)
        .secure_boot()
        .usb_stick()
        .tpm()
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    expect(&mut vm, "secureboot on, lockdown integrity");
    // The cache partition is found on the USB stick (a SCSI disk), not a
    // virtio one.
    let usb_cache = regex::Regex::new(r"cache +ok +[0-9]+ ms  /dev/sd[a-z]2 at ").expect("regex");
    vm.wait_for_regex(&usb_cache)
        .unwrap_or_else(|e| panic!("{e}"));
    expect(&mut vm, "fetch: rootfs");
    expect(&mut vm, "fetch: job       jobs/hello.wasm");
    expect(&mut vm, "fetch    ok");
    let pcr_hex = regex::Regex::new(r"events into PCR 23, now ([0-9a-f]{64})").expect("regex");
    let measured = vm
        .wait_for_regex(&pcr_hex)
        .unwrap_or_else(|e| panic!("{e}"));
    let stage1 = pcr_hex.captures(&measured).expect("the line matched")[1].to_owned();
    // The stick was built from the release it boots: no second kernel.
    let route = expect(&mut vm, "route    ok");
    assert!(
        route.contains("direct, no second kernel"),
        "{route}\n{}",
        vm.log()
    );
    expect(&mut vm, "stage=target");
    let target_pcr = regex::Regex::new(r"measure: PCR 23 ([0-9a-f]{64})").expect("regex");
    let seen = vm
        .wait_for_regex(&target_pcr)
        .unwrap_or_else(|e| panic!("{e}"));
    let stage2 = target_pcr.captures(&seen).expect("the line matched")[1].to_owned();
    let log_line = expect(&mut vm, "phase-init: measurements ");
    let json = &log_line[log_line.find('[').expect("a JSON list")..];
    let log: Vec<handover::Measurement> =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    let replayed = measure::replay_log(&log, measure::PHASE_PCR).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stage1, stage2,
        "PCR 23 changed between stage 1 and the target"
    );
    assert_eq!(
        stage2,
        hex::encode(replayed),
        "boot.json's log does not replay to PCR 23: {log:?}"
    );
    for kind in [
        "root-fingerprint",
        "targets-version",
        "kernel",
        "rootfs",
        "job",
        "cmdline",
    ] {
        assert!(
            log.iter().any(|m| m.kind == kind),
            "no {kind} event: {log:?}"
        );
    }
    expect(&mut vm, "switch   ok");
    let net = expect(&mut vm, "net: phase-node-");
    let greeting = expect(&mut vm, tc::GREETING);
    assert!(
        greeting.contains("phase-node-180000"),
        "the job sees the node's host name: {greeting}"
    );
    let ip = tc::net_ipv4(&net).unwrap_or_else(|| panic!("no IPv4 lease in {net:?}"));

    // The node re-shares: a host-side node fetches and verifies every target.
    let cache = d.join("fetched");
    let (ok, out) = tc::fetch_from(
        lan.node(0),
        &p.root,
        &format!("http://{ip}:7070"),
        &cache,
        Duration::from_secs(90),
    );
    assert!(ok, "phase fetch from the booted node failed:\n{out}");
    for f in [&p.kernel, &p.initramfs, &p.rootfs] {
        let obj = tc::cas_object(&cache, f);
        assert!(
            obj.is_file(),
            "{} was not re-shared ({} missing)\n{out}",
            f.display(),
            obj.display()
        );
    }
    // `phase fetch` takes the boot set; the job is served by digest too,
    // byte for byte what was signed.
    let job = std::fs::read(&p.job).expect("read job");
    let obj = tc::cas_object(d, &p.job);
    let hex = obj
        .file_name()
        .expect("digest")
        .to_string_lossy()
        .into_owned();
    let got = d.join("job.wasm");
    let st = testkit::netns::command(lan.node(0), "curl")
        .args(["-fsS", "--max-time", "20", "-o"])
        .arg(&got)
        .arg(format!("http://{ip}:7070/cas/sha256/{hex}"))
        .status()
        .expect("run curl");
    assert!(st.success(), "the node does not serve the job ({st})");
    assert_eq!(std::fs::read(&got).expect("read"), job, "job bytes differ");

    // The node attests its boot to the host-side node.
    let peer = format!("http://{ip}:7070");
    let store = d.join("aks.json");
    let within = Duration::from_secs(60);
    let stick = manifest_path.to_str().expect("a UTF-8 path");
    let (ok, out, err) = tc::attest_verify(
        lan.node(0),
        &p.root,
        &peer,
        &store,
        &["--json", "--stick", stick],
        within,
    );
    assert!(
        ok,
        "phase attest verify of the booted node failed:\n{err}\n{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("phase-node-180000")),
        "{v}"
    );
    assert_eq!(v["pcrs"]["23"], stage2.as_str(), "the quoted PCR 23: {v}");
    assert_eq!(v["events"], log.len(), "{v}");
    assert_eq!(v["mode"], "local", "{v}");
    assert_eq!(v["channel"], "stable", "{v}");
    assert_eq!(v["ak_first_use"], true, "{v}");
    assert_eq!(v["stick"]["image"], stick_id.as_str(), "{v}");
    assert_eq!(v["stick"]["entry"], "phase-local", "{v}");
    // Again as the one line: the same AK now.
    let (ok, out, err) = tc::attest_verify(
        lan.node(0),
        &p.root,
        &peer,
        &store,
        &["--stick", stick],
        within,
    );
    assert!(ok, "phase attest verify failed the second time:\n{err}");
    assert!(
        out.contains(" booted stable/x86_64 targets v")
            && out.contains(&format!(
                "firmware log replays PCRs 4, 7, 9; stick image {stick_id} entry phase-local; AK "
            ))
            && out.trim_end().ends_with("as first seen"),
        "{out}"
    );
    // The PCRs the guest read are the host's replay of the firmware log.
    let answer = d.join("attest.json");
    let st = testkit::netns::command(lan.node(0), "curl")
        .args(["-fsS", "--max-time", "60", "-o"])
        .arg(&answer)
        .arg(format!("{peer}/attest?nonce={}", "5a".repeat(32)))
        .status()
        .expect("run curl");
    assert!(st.success(), "GET /attest of the node failed ({st})");
    let body = std::fs::read(&answer).expect("read the answer");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-wasm-attest.json"),
        &body,
    );
    let a: serde_json::Value = serde_json::from_slice(&body).expect("the answer is JSON");
    let firmware = a["firmware_log"]
        .as_str()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .unwrap_or_else(|| panic!("the node sends no firmware log: {a}"))
        .expect("the firmware log is base64");
    let flog = measure::FirmwareLog::parse(&firmware).unwrap_or_else(|e| panic!("{e}"));
    let mut checked = Vec::new();
    for q in a["pcrs"].as_array().expect("pcrs") {
        let pcr = q["pcr"].as_u64().expect("pcr") as u32;
        let value = q["sha256"].as_str().expect("sha256");
        if measure::FIRMWARE_PCRS.contains(&pcr) {
            assert_eq!(
                value,
                hex::encode(flog.replay(pcr)),
                "PCR {pcr} read in the guest is not the replay of its {} firmware log records",
                flog.count(pcr)
            );
            checked.push(pcr);
        } else if pcr == measure::PHASE_PCR {
            assert_eq!(value, stage2, "PCR 23 read in the guest");
        }
    }
    assert_eq!(checked, measure::FIRMWARE_PCRS, "{a}");
    for pcr in [4, 7] {
        assert!(
            flog.count(pcr) > 0,
            "the firmware measured nothing into PCR {pcr}"
        );
    }
    eprintln!(
        "boot_wasm: firmware log {} bytes, {} records; PCR 4: {}, PCR 7: {}, PCR 9: {} records",
        firmware.len(),
        flog.events.len(),
        flog.count(4),
        flog.count(7),
        flog.count(9)
    );
    drop(vm);

    // The same stick with one byte more of stage-1 initramfs (a NUL the
    // kernel skips as padding; published as release 2, so the node boots
    // it directly), and its loader entry edited: checked against the
    // first stick's manifest, PCR 9 names both.
    let edited = d.join("initramfs-edited.img");
    let mut bytes = std::fs::read(&p.initramfs).expect("read the initramfs");
    let published = sha256_hex(&bytes);
    bytes.push(0);
    std::fs::write(&edited, &bytes).expect("write the edited initramfs");
    let edited_sha = sha256_hex(&bytes);
    p.release_with(&edited, "2");
    let disk2 = d.join("disk-edited.img");
    let mut extra = tc::os(["--append-cmdline", &peers, "--initramfs"]);
    extra.push(edited.clone().into());
    p.disk_with(&disk2, false, &extra);
    let mut vm = Qemu::image(&disk2)
        .append("attest.edited=1")
        .memory_mib(768)
        .name("boot-wasm-edited")
        .tap(&tap)
        .timeout(BOOT_TIMEOUT)
        .secure_boot()
        .usb_stick()
        .tpm()
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let route = expect(&mut vm, "route    ok");
    assert!(
        route.contains("direct, no second kernel"),
        "{route}\n{}",
        vm.log()
    );
    let net = expect(&mut vm, "net: phase-node-");
    let ip = tc::net_ipv4(&net).unwrap_or_else(|| panic!("no IPv4 lease in {net:?}"));
    let (ok, out, err) = tc::attest_verify(
        lan.node(0),
        &p.root,
        &format!("http://{ip}:7070"),
        &d.join("aks-edited.json"),
        &["--stick", stick],
        within,
    );
    assert!(!ok, "the edited stick passed as the first one: {out}");
    assert!(!out.contains("booted"), "a verdict was printed: {out}");
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
    for what in [
        format!("PCR 9 is not a boot of stick image {stick_id}: "),
        format!("the initramfs is sha256 {edited_sha} on the node, {published} on the stick; "),
        format!(
            "the command line is \"initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local {peers} attest.edited=1\" on the node, the stick's entry phase-local has \"initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local {peers}\""
        ),
    ] {
        assert!(err.contains(&what), "the error names {what:?}: {err}");
    }
    eprintln!("boot_wasm: the edited stick against the first one's manifest: {err}");
    assert!(dhcpd.exited().is_none(), "udhcpd died during the test");
    drop(vm);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
