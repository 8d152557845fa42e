//! A node boots from a repository that python-tuf (the reference
//! implementation, 7.0 in the venv at `$PHASE_VENV`, default
//! `$PHASE_BUILD/venv`) wrote and signed with ECDSA P-256 keys.
//!
//! `phase publish` makes the test target as in `boot_from_peer` (Debian's
//! kernel, phase-init as the target initramfs, a busybox squashfs printing
//! a marker). `interop/python_repo_from_targets.py` then checks phase's
//! metadata with python-tuf and writes a NEW repository: fresh ECDSA P-256
//! root, targets, snapshot and timestamp keys made by securesystemslib,
//! consistent snapshots, the same target entries (length, hashes, Phase's
//! signed custom metadata) and the target files under their consistent
//! names. The stage-1 image trusts only python-tuf's `1.root.json`;
//! `phase serve --mdns` serves the python repository on a LAN without
//! DHCP. The node finds it (the mDNS root tag is the python root's), runs
//! the TUF refresh against python-tuf's metadata, fetches and verifies the
//! artifacts, kexecs, and the target's marker service runs from the
//! overlay root. (The target initramfs was built before python-tuf's keys
//! existed, so it bakes phase's root; stage 2 fetches and verifies nothing,
//! its `trust` line just shows that root.)
//!
//! Prerequisites as for `boot_from_peer` (built by `make test`), and the
//! venv (`make deps`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use testkit::fixtures::build_dir;
use testkit::netns::Lan;
use testkit::qemu::{Qemu, Vm};

use super::boot_from_peer_common as common;

fn expect(vm: &mut Vm, s: &str) -> String {
    vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"))
}

/// The venv's python with python-tuf importable; fails the test otherwise.
fn python() -> PathBuf {
    let venv = std::env::var_os("PHASE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| build_dir().join("venv"));
    let py = venv.join("bin/python");
    assert!(
        py.is_file(),
        "python venv with python-tuf missing at {} (set PHASE_VENV, or run `make deps`, which \
         installs scripts/requirements-test.txt into build/venv)",
        venv.display()
    );
    let check = Command::new(&py)
        .args(["-c", "import tuf.api.metadata, securesystemslib.signer"])
        .output()
        .expect("run the venv's python");
    assert!(
        check.status.success(),
        "python-tuf is not importable in {}: {}",
        venv.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    py
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The root key fingerprint the console shows (`verifier::root_fingerprint`):
/// SHA-256 over the root role's key ids, lowercase, sorted, each followed
/// by a newline, in hex.
fn root_fingerprint(root: &serde_json::Value) -> String {
    let mut ids: Vec<String> = root["signed"]["roles"]["root"]["keyids"]
        .as_array()
        .expect("roles.root.keyids")
        .iter()
        .map(|k| k.as_str().expect("key id").to_ascii_lowercase())
        .collect();
    ids.sort();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_repository_python_tuf_signed_with_ecdsa_p256_boots_from_a_peer() {
    let t0 = std::time::Instant::now();
    let py = python();
    let target = common::publish_target("python-ecdsa");
    let d = target.dir.path();
    let py_repo = d.join("python-repo");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python_repo_from_targets.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(&target.repo)
        .arg(&py_repo)
        .arg("ecdsa")
        .output()
        .expect("run python_repo_from_targets.py");
    assert!(
        out.status.success(),
        "python_repo_from_targets.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every key python-tuf put in its root is ECDSA P-256; the root is not
    // phase's.
    let py_root_file = py_repo.join("metadata/1.root.json");
    let py_root = read_json(&py_root_file);
    let keys = py_root["signed"]["keys"].as_object().expect("root keys");
    assert_eq!(keys.len(), 4, "one key per top-level role: {keys:?}");
    for (id, k) in keys {
        assert_eq!(k["keytype"], "ecdsa", "key {id}: {k}");
        assert_eq!(k["scheme"], "ecdsa-sha2-nistp256", "key {id}: {k}");
    }
    assert_eq!(py_root["signed"]["consistent_snapshot"], true);
    let py_fp = root_fingerprint(&py_root);
    let phase_fp = root_fingerprint(&read_json(&target.keys.join("1.root.json")));
    assert_ne!(py_fp, phase_fp, "python-tuf's root has its own keys");
    // The same target entries, signed by python-tuf's targets key.
    let entries = |p: &Path| read_json(p)["signed"]["targets"].clone();
    let py_targets = entries(&py_repo.join("metadata/1.targets.json"));
    assert_eq!(
        py_targets,
        entries(&target.repo.join("metadata/1.targets.json")),
        "python-tuf's targets list phase's entries unchanged"
    );
    for name in ["kernel", "initramfs", "rootfs"] {
        let custom = &py_targets[format!("stable/x86_64/{name}")]["custom"];
        assert_eq!(custom["kind"], name, "{custom}");
    }

    let disk = d.join("python-disk.img");
    common::stage1_disk(&py_root_file, &disk);
    let mut lan = Lan::new(1, false).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let (_serve, id) = common::serve(&lan, 0, &py_repo, d);
    let host = common::host_label(&id);
    let t_ready = t0.elapsed();

    let mut vm = Qemu::image(&disk)
        .mode("local")
        .tap(&tap)
        .memory_mib(512)
        .name("python-ecdsa")
        .append("phase.kexec=always phase.dhcp_timeout=0")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    // The loader booted the local entry: the kernel prints its command line.
    expect(&mut vm, "phase.mode=local");
    // Stage 1 trusts python-tuf's root (its fingerprint, not phase's).
    let trust = common::full_line(&mut vm, "trust    ok");
    assert!(
        trust.contains(&format!("root v1 fingerprint {py_fp}")),
        "stage 1 trusts python-tuf's root {py_fp}: {trust}"
    );
    // Only a peer announcing that root's tag is taken.
    let line = common::full_line(&mut vm, "discover ok");
    assert!(
        line.contains("1 peers (mdns)") && line.contains(&host),
        "{line}"
    );
    expect(&mut vm, "fetch    ok");
    // Each artifact verified against python-tuf's targets, from the peer
    // (in whatever order the fetches ended).
    let log = vm.log();
    for name in ["kernel", "initramfs", "rootfs"] {
        let start = format!("fetch: {name:9} stable/x86_64/{name} ");
        let l = log
            .lines()
            .find(|l| l.contains(&start))
            .unwrap_or_else(|| panic!("no console line {start:?}:\n{log}"));
        assert!(l.contains("verified, from") && l.contains(&host), "{l}");
    }
    expect(&mut vm, "phase-init: ready mode=local channel=stable");
    expect(&mut vm, "kexec: starting the target kernel");
    let t_kexec = t0.elapsed();
    expect(&mut vm, "kexec_core: Starting new kernel");
    expect(&mut vm, "stage=target");
    expect(&mut vm, "switch   ok");
    expect(
        &mut vm,
        &format!("peer-marker: {} root=overlay", target.marker),
    );
    let bj = common::full_line(&mut vm, "boot.json: {");
    assert!(bj.contains(&host), "boot.json names the peer: {bj}");
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    assert!(!log.contains("fetch    FAIL"), "{log}");
    eprintln!(
        "python-tuf ECDSA repository boot: setup {:.1} s, to kexec {:.1} s, whole {:.1} s",
        t_ready.as_secs_f64(),
        t_kexec.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
