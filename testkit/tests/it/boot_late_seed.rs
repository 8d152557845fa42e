//! A fleet powers on in any order: a node whose seed is not up yet keeps
//! trying (`phase.retry=forever`, the default) with a growing backoff and a
//! console countdown, looks for peers again before each attempt, and boots
//! without anyone touching it once the seed appears, here 60 s after the
//! VM started. The node's one NIC is a USB CDC Ethernet device (`usb-net`
//! on its own xHCI controller, `cdc_ether`): the seed is found and the
//! boot set fetched over USB.
//!
//! The key press that stops the retries for the rescue shell is tested in
//! `boot_fail.rs` (case 3b), on a cheaper direct-kernel boot.
//!
//! Prerequisites as for `boot_from_peer` (built by `make test`).

use std::time::{Duration, Instant};

use testkit::netns::Lan;
use testkit::qemu::{NicModel, Qemu, Vm};

use super::boot_from_peer_common as common;

/// How long after the VM's start the seed comes up.
const SEED_DELAY: Duration = Duration::from_secs(60);

fn expect(vm: &mut Vm, s: &str) -> String {
    vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_node_that_powers_on_before_its_seed_boots_once_the_seed_is_up() {
    let pubd = common::publish("late-seed");
    let mut lan = Lan::new(1, false).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    let mut vm = Qemu::image(&pubd.disk)
        .mode("local")
        .nic_model(NicModel::UsbNet)
        .tap(&tap)
        .memory_mib(512)
        .name("late-seed")
        // The kexec route under Secure Boot (boot_wasm takes the direct one).
        .append("phase.kexec=always phase.dhcp_timeout=0")
        .secure_boot()
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));

    expect(&mut vm, "secureboot on, lockdown integrity");
    // The only interface is the USB one, link-local only (no DHCP here).
    let net = common::one_nic_line(&mut vm, NicModel::UsbNet);
    // (QEMU's usb-net gives the guest's CDC function a MAC of its own, so
    // the address is not the tap MAC's EUI-64.)
    assert!(net.contains(" fe80::"), "{net}");
    // No peer yet: the first attempt finds nobody and the retries begin.
    let first = common::full_line(&mut vm, "discover ");
    assert!(first.contains("0 peers (mdns)"), "{first}");
    expect(&mut vm, "fetch    FAIL");
    let retry = expect(&mut vm, "fetch: attempt 1 failed; retrying in 2 s");
    assert!(retry.contains("press any key"), "{retry}");

    // The seed comes up a minute after power-on.
    let left = SEED_DELAY.saturating_sub(started.elapsed());
    std::thread::sleep(left);
    let attempts_before = vm.log().matches("failed; retrying in").count();
    let (_seed, seed_id) = common::serve(&lan, 0, &pubd.repo, pubd.dir.path());
    let seed_up = started.elapsed();
    let seed_host = common::host_label(&seed_id);

    // The next attempt looks again, finds the seed and boots from it.
    let found = common::full_line(&mut vm, "1 peers (mdns)");
    assert!(found.contains(&seed_host), "{found}");
    let kernel = common::full_line(&mut vm, "fetch: kernel    stable/x86_64/kernel");
    assert!(
        kernel.contains("verified") && kernel.contains(&seed_host),
        "the kernel came from the seed: {kernel}"
    );
    expect(&mut vm, "fetch    ok");
    let route = expect(&mut vm, "route    ok");
    assert!(route.contains("kexec: phase.kexec=always"), "{route}");
    expect(&mut vm, "kexec_file_load accepted the target kernel");
    expect(&mut vm, "kexec: starting the target kernel");
    expect(
        &mut vm,
        &format!("peer-marker: {} root=overlay", pubd.marker),
    );
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");

    let log = vm.log();
    assert!(
        attempts_before >= 2,
        "the node retried while its seed was down ({attempts_before} retries):\n{log}"
    );
    // Waits of 16 s and more say how long is left every 10 s.
    if log.contains("retrying in 16 s") {
        assert!(log.contains("fetch: retrying in "), "no countdown:\n{log}");
    }
    assert!(!log.contains("rescue: shell"), "{log}");
    assert!(!log.contains("no verified boot set"), "{log}");
    eprintln!(
        "late seed: {attempts_before} retries before the seed came up at {:.0} s; target at {:.0} s",
        seed_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
