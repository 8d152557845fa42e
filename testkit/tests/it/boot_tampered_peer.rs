//! A peer serving bad bytes: its repository copy has one flipped byte in
//! every chunk of the kernel object (metadata untouched, so only the hash
//! check can tell). Stage 1 finds it by mDNS like any peer.
//!
//! * The only peer is the tampered one: the boot refuses with a line naming
//!   the artifact and the peer, the console names the bad peer as dropped
//!   for a bad chunk (the fetcher's tracing event), and nothing is kexec'd.
//! * With an honest second peer on the LAN: the boot (its one NIC an
//!   RTL8139C+, `8139cp`) succeeds with bytes from the honest peer only,
//!   the console names the bad peer as dropped,
//!   the honest one is never dropped, and the target's marker runs.
//! * A fake peer (the right root tag, garbage metadata) next to the honest
//!   one: the TUF refresh drops it, names it on the console, and the boot
//!   goes on from the honest peer.
//!
//! Prerequisites as for `boot_from_peer` (built by `make test`).

use testkit::netns::Lan;
use testkit::qemu::{NicModel, Qemu, Vm};

use super::boot_from_peer_common as common;

fn expect(vm: &mut Vm, s: &str) -> String {
    vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"))
}

/// The fetcher's tracing warning that drops `host` for a bad chunk is on
/// the console.
fn assert_dropped_for_a_bad_chunk(log: &str, host: &str) {
    let dropped = log
        .lines()
        .find(|l| l.contains("dropping peer") && l.contains(host))
        .unwrap_or_else(|| panic!("no console line drops the bad peer {host}:\n{log}"));
    assert!(
        dropped.contains("WARN") && dropped.contains("bad chunk"),
        "{dropped}"
    );
}

#[test]
fn the_only_peer_serves_a_flipped_byte_and_the_boot_refuses() {
    let t0 = std::time::Instant::now();
    let pubd = common::publish("tampered");
    let bad_repo = common::tampered_copy(&pubd.repo, &pubd.dir.path().join("bad-repo"));
    let mut lan = Lan::new(1, false).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let (_bad, bad_id) = common::serve(&lan, 0, &bad_repo, pubd.dir.path());
    let bad_host = common::host_label(&bad_id);

    // Three attempts, not the default forever: the refusal is final here.
    let mut vm = Qemu::image(&pubd.disk)
        .mode("local")
        .append("phase.retry=3 phase.kexec=always phase.dhcp_timeout=0")
        .tap(&tap)
        .memory_mib(512)
        .name("tampered-only")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let line = common::full_line(&mut vm, "discover ok");
    assert!(
        line.contains("1 peers (mdns)") && line.contains(&bad_host),
        "{line}"
    );
    // Every attempt refuses the kernel, naming it and the peer.
    let refusal = expect(&mut vm, "fetch    FAIL");
    let why = common::full_line(&mut vm, "stable/x86_64/kernel");
    assert!(
        why.contains(&bad_host),
        "the refusal names the peer {bad_host}: {why} (after {refusal})"
    );
    expect(&mut vm, "boot: no verified boot set; nothing was kexec'd");
    let log = vm.log();
    // The fetcher's own word on the bad peer reaches the console (PID 1's
    // tracing subscriber): which peer, which chunk, why it was dropped.
    assert_dropped_for_a_bad_chunk(&log, &bad_host);
    assert!(!log.contains("kexec: starting"), "{log}");
    assert!(!log.contains("kexec    ok"), "{log}");
    assert!(!log.contains("phase-init: ready"), "{log}");
    assert!(!log.contains("fetch    ok"), "{log}");
    eprintln!(
        "tampered-only boot: refused after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn with_an_honest_second_peer_the_boot_succeeds_from_it() {
    let t0 = std::time::Instant::now();
    let pubd = common::publish("honest");
    let bad_repo = common::tampered_copy(&pubd.repo, &pubd.dir.path().join("bad-repo"));
    let mut lan = Lan::new(2, false).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let (_bad, bad_id) = common::serve(&lan, 0, &bad_repo, pubd.dir.path());
    let (_good, good_id) = common::serve(&lan, 1, &pubd.repo, pubd.dir.path());
    let (bad_host, good_host) = (common::host_label(&bad_id), common::host_label(&good_id));

    let mut vm = Qemu::image(&pubd.disk)
        .mode("local")
        .nic_model(NicModel::Rtl8139)
        .tap(&tap)
        .memory_mib(512)
        .name("tampered-and-honest")
        .append("phase.kexec=always phase.dhcp_timeout=0")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    // The only interface is the RTL8139, link-local only: no DHCP here,
    // and phase.dhcp_timeout=0 asks for none, so no wait and no warning.
    let net = common::one_nic_line(&mut vm, NicModel::Rtl8139);
    assert!(net.contains(&tap.guest_link_local().to_string()), "{net}");
    assert!(net.contains("network  ok "), "{net}");
    let line = common::full_line(&mut vm, "discover ok");
    assert!(
        line.contains("2 peers (mdns)") && line.contains(&bad_host) && line.contains(&good_host),
        "{line}"
    );
    let k = common::full_line(&mut vm, "fetch: kernel    stable/x86_64/kernel");
    assert!(k.contains("verified"), "{k}");
    // The kernel's bytes: all the honest peer's. Every chunk of the bad
    // copy is tampered, so the bad peer's first chunk fails its hash and
    // the fetcher drops it, saying so on the console.
    let from = k.split(" from ").nth(1).unwrap_or("");
    let bytes_of = |host: &str| -> Option<u64> {
        let part = from.split(", ").find(|p| p.contains(host))?;
        let n = part.rsplit_once('=')?.1.split_whitespace().next()?;
        n.parse().ok()
    };
    assert!(
        bytes_of(&good_host).is_some_and(|n| n > 0) && bytes_of(&bad_host).unwrap_or(0) == 0,
        "kernel bytes from the honest peer only: {k}"
    );
    let log = vm.log();
    assert_dropped_for_a_bad_chunk(&log, &bad_host);
    assert!(
        !log.lines()
            .any(|l| l.contains("dropping peer") && l.contains(&good_host)),
        "the honest peer was dropped:\n{log}"
    );
    expect(&mut vm, "fetch    ok");
    expect(&mut vm, "kexec: starting the target kernel");
    expect(&mut vm, "switch   ok");
    expect(
        &mut vm,
        &format!("peer-marker: {} root=overlay", pubd.marker),
    );
    let bj = common::full_line(&mut vm, "boot.json: {");
    assert!(
        bj.contains(&good_host),
        "boot.json names the honest peer: {bj}"
    );
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    eprintln!(
        "tampered+honest boot: whole {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A copy of `repo` whose current metadata (`timestamp.json` and every
/// versioned snapshot and targets file) is garbage, with the root metadata
/// intact: its `phase serve --mdns` announces the right root tag, as a fake
/// LAN host that read the tag off the air would, and claims the newest
/// timestamp.
fn garbage_metadata_copy(repo: &std::path::Path, out: &std::path::Path) -> std::path::PathBuf {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo)
        .arg(out)
        .status()
        .expect("cp -a");
    assert!(st.success(), "cp -a {} {}", repo.display(), out.display());
    let meta = out.join("metadata");
    let mut spoiled = 0;
    for e in std::fs::read_dir(&meta)
        .expect("read_dir metadata")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "timestamp.json"
            || name.ends_with(".snapshot.json")
            || name.ends_with(".targets.json")
        {
            let p = e.path();
            let _ = std::fs::remove_file(&p);
            // A huge version, so `phase serve` announces `ts=999999` and
            // the node, preferring the newest metadata, asks it first.
            std::fs::write(
                &p,
                b"{\"signed\": {\"version\": 999999}, \"garbage\": true}\n",
            )
            .expect("write garbage");
            spoiled += 1;
        }
    }
    assert!(
        spoiled >= 3,
        "spoiled only {spoiled} files in {}",
        meta.display()
    );
    out.to_owned()
}

/// A hostile LAN host announces a `_phase._tcp` peer with the fleet's root
/// tag and serves garbage metadata, next to the honest peer. The node boots
/// from the honest one, and its console names the fake peer as dropped.
#[test]
fn a_fake_peer_serving_garbage_metadata_is_dropped_and_named() {
    let t0 = std::time::Instant::now();
    let pubd = common::publish("fake-meta");
    let fake_repo = garbage_metadata_copy(&pubd.repo, &pubd.dir.path().join("fake-repo"));
    let mut lan = Lan::new(2, false).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let (_fake, fake_id) = common::serve(&lan, 0, &fake_repo, pubd.dir.path());
    let (_good, good_id) = common::serve(&lan, 1, &pubd.repo, pubd.dir.path());
    let (fake_host, good_host) = (common::host_label(&fake_id), common::host_label(&good_id));

    let mut vm = Qemu::image(&pubd.disk)
        .mode("local")
        .tap(&tap)
        .memory_mib(512)
        .name("fake-metadata")
        .append("phase.kexec=always phase.dhcp_timeout=0")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let line = common::full_line(&mut vm, "discover ok");
    assert!(
        line.contains("2 peers (mdns)") && line.contains(&fake_host) && line.contains(&good_host),
        "{line}"
    );
    expect(&mut vm, "fetch    ok");
    expect(&mut vm, "kexec: starting the target kernel");
    expect(
        &mut vm,
        &format!("peer-marker: {} root=overlay", pubd.marker),
    );
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    let named = log
        .lines()
        .find(|l| l.contains("served invalid metadata") && l.contains(&fake_host))
        .unwrap_or_else(|| panic!("the console does not name the fake peer {fake_host}:\n{log}"));
    assert!(named.contains("dropped"), "{named}");
    assert!(
        !log.lines()
            .any(|l| l.contains("served invalid metadata") && l.contains(&good_host)),
        "the honest peer was dropped:\n{log}"
    );
    assert!(!log.contains("fetch    FAIL"), "{log}");
    eprintln!(
        "fake metadata peer + honest peer: whole {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
