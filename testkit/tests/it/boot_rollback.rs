//! Rollback across reboots: the trusted TUF state that stage 1
//! keeps on the stick's writable `PHASE-CACHE` survives a reboot, so a peer
//! that later offers an older release is refused.
//!
//! One fleet publishes releases 1, 2 and 3 (timestamp/snapshot/targets
//! versions 1..3, a different rootfs marker each). The disk is seeded at
//! version 2. Boot 1: a peer serves version 3; stage 1 refreshes to it,
//! fetches the new rootfs, kexecs, and the target prints the version-3
//! marker. Boot 2, the SAME disk: the only peer serves version 2; stage 1
//! refuses its metadata as a rollback (one console line naming the peer and
//! both versions, no retry: retrying cannot help) and boots the newest
//! release it trusts, version 3, from its cache; version 2 never runs.
//!
//! Prerequisites (built by `make test`): `$PHASE_BIN`, `$PHASE_BUILD/kernel/`,
//! `$PHASE_BUILD/x86_64/phase-init`; `mksquashfs`, static `/bin/busybox`.

use std::time::Instant;

use super::boot_fail_common as common;

use common::{boot, copy_dir, expect, user_net, Fleet, Peer, PEER_URL};

#[test]
fn a_peer_offering_an_older_release_after_a_reboot_is_refused() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let fleet = Fleet::new(d, "fleet");
    let repo = d.join("repo");
    let tag = format!("{}-{}", std::process::id(), t0.elapsed().as_nanos());
    for v in 1..=2 {
        fleet.publish(&repo, &format!("release{v}-{tag}"), v);
    }
    let repo_v2 = d.join("repo-v2");
    copy_dir(&repo, &repo_v2);
    fleet.publish(&repo, &format!("release3-{tag}"), 3);
    let disk = d.join("disk.img");
    fleet.disk(&repo_v2, &disk);
    let t_built = t0.elapsed();

    // Boot 1: version 3 from the peer, persisted in <cache>/tuf. A second
    // `phase.peers` URL off the LAN (no route to it) is skipped: local mode
    // never leaves the LAN.
    {
        let peer = Peer::serve(&repo, &d.join("peer3-cache"));
        let mut vm = boot(
            &fleet,
            &fleet.initramfs,
            &disk,
            &format!("phase.peers={PEER_URL},http://198.51.100.7:7070"),
            user_net(Some(peer.port)),
            "rollback-boot1",
        );
        expect(&mut vm, "cache    ok");
        expect(&mut vm, "read-write");
        expect(
            &mut vm,
            "phase.peers: http://198.51.100.7:7070/: 198.51.100.7 is not on this LAN",
        );
        expect(&mut vm, "fetch: rootfs");
        let fetched = expect(&mut vm, "fetch    ok");
        assert!(
            fetched.contains("timestamp v3 targets v3"),
            "boot 1 did not refresh to version 3: {fetched}"
        );
        expect(&mut vm, "kexec: starting the target kernel");
        expect(
            &mut vm,
            &format!("release-marker: release3-{tag} root=overlay"),
        );
        expect(&mut vm, "supervisor: powering off");
        let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
        assert!(st.success(), "QEMU exit status {st}");
    }
    let t_boot1 = t0.elapsed();

    // Boot 2: the same disk; only version 2 is offered.
    let peer = Peer::serve(&repo_v2, &d.join("peer2-cache"));
    let mut vm = boot(
        &fleet,
        &fleet.initramfs,
        &disk,
        &format!("phase.peers={PEER_URL}"),
        user_net(Some(peer.port)),
        "rollback-boot2",
    );
    expect(&mut vm, "cache    ok");
    let stale = expect(&mut vm, "served stale metadata");
    assert!(
        stale.contains(PEER_URL)
            && stale.contains("version 2 is lower than the trusted version 3 (rollback)"),
        "the refusal does not name the peer and the versions: {stale}"
    );
    let fetched = expect(&mut vm, "fetch    ok");
    assert!(
        fetched.contains("timestamp v3 targets v3") && fetched.contains("from cache"),
        "boot 2 did not keep the trusted version 3 from its cache: {fetched}"
    );
    expect(&mut vm, "kexec: starting the target kernel");
    expect(
        &mut vm,
        &format!("release-marker: release3-{tag} root=overlay"),
    );
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    assert!(
        !log.contains(&format!("release2-{tag}")),
        "boot 2 ran the older release:\n{log}"
    );
    assert!(
        !log.contains("retrying in"),
        "a rollback was retried (retrying cannot help):\n{log}"
    );
    drop(vm);
    eprintln!(
        "rollback test: build {:.1} s, boot 1 {:.1} s, boot 2 {:.1} s",
        t_built.as_secs_f64(),
        (t_boot1 - t_built).as_secs_f64(),
        (t0.elapsed() - t_boot1).as_secs_f64()
    );
}
