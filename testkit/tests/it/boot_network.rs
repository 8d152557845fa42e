//! Boot tests of stage 1's network bring-up (issue 6): a virtio NIC gets a
//! DHCPv4 lease and an IPv6 link-local address; a NIC on a LAN without a
//! DHCP server still comes up with IPv6 link-local only (local mode), after
//! a bounded wait and one clear warning.
//!
//! The networks live entirely inside QEMU: user-mode networking with
//! `restrict=on` (its built-in DHCP server on 198.18.64.0/24; nothing is
//! routed to the host or beyond), and a hub with no other port.
//!
//! Prerequisites (built by `make test`): `$PHASE_BUILD/kernel/current`, the
//! kernel, and `$PHASE_BUILD/x86_64/initramfs.img`.

use std::time::Duration;

use testkit::fixtures::{self, build_dir, need};
use testkit::qemu::{Qemu, Vm};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn boot(netdev: &str, name: &str) -> Vm {
    let (_, kernel) = fixtures::kernel();
    let initrd = build_dir().join("x86_64/initramfs.img");
    need(&initrd, "run `make initramfs`");
    Qemu::direct_kernel(
        &kernel,
        &initrd,
        "console=ttyS0,115200 phase.mode=local phase.test=poweroff",
    )
    .name(name)
    .args([
        "-netdev",
        netdev,
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
    ])
    .timeout(BOOT_TIMEOUT)
    .start()
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"))
}

fn powers_off(mut vm: Vm) -> String {
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    vm.log()
}

#[test]
fn a_nic_gets_a_dhcp_lease_and_an_ipv6_link_local_address() {
    let mut vm = boot("user,id=n0,net=198.18.64.0/24,restrict=on", "dhcp");
    vm.wait_for("network  ok").unwrap_or_else(|e| panic!("{e}"));
    // QEMU's DHCP server hands out .15 first; the link-local address is
    // derived from the MAC (EUI-64).
    vm.wait_for("eth0 198.18.64.15/24")
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("fe80::5054:ff:fe12:3456")
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("phase-init: ready mode=local")
        .unwrap_or_else(|e| panic!("{e}"));
    let log = powers_off(vm);
    assert!(!log.contains("no DHCPv4 lease"), "{log}");
}

#[test]
fn without_a_dhcp_server_the_nic_comes_up_link_local_only() {
    let mut vm = boot("hubport,id=n0,hubid=7", "no-dhcp");
    vm.wait_for("network  warn")
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("eth0 fe80::5054:ff:fe12:3456")
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("warning: eth0: no DHCPv4 lease within 10 s; IPv6 link-local only")
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("phase-init: ready mode=local")
        .unwrap_or_else(|e| panic!("{e}"));
    powers_off(vm);
}
