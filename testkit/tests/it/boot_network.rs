//! Boot tests of stage 1's network bring-up: NICs of five models
//! in one VM (virtio, e1000e, igb, rtl8139 and a USB CDC Ethernet behind
//! xHCI, each loaded by coldplug only because its device is there) each get
//! a DHCPv4 lease and an IPv6 link-local address, and the network line
//! names the driver of each; a NIC on a LAN without a DHCP server still
//! comes up with IPv6 link-local only (local mode), after a bounded wait
//! and one clear warning.
//!
//! The networks live entirely inside QEMU: user-mode networking with
//! `restrict=on` (its built-in DHCP server, one network per NIC on
//! 198.18.64.0/24, 198.18.65.0/24, ...; nothing is routed to the host or
//! beyond), and a hub with no other port.
//!
//! Prerequisites (built by `make test`): `$PHASE_BUILD/kernel/current`, the
//! kernel, and `$PHASE_BUILD/x86_64/initramfs.img`.

use std::time::Duration;

use testkit::fixtures::{self, build_dir, need};
use testkit::qemu::{NicModel, Qemu, Vm};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn vm(name: &str) -> Qemu {
    let (_, kernel) = fixtures::kernel();
    let initrd = build_dir().join("x86_64/initramfs.img");
    need(&initrd, "run `make initramfs`");
    Qemu::direct_kernel(
        &kernel,
        &initrd,
        "console=ttyS0,115200 phase.mode=local phase.test=poweroff",
    )
    .name(name)
    .timeout(BOOT_TIMEOUT)
}

fn start(q: Qemu) -> Vm {
    q.start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"))
}

/// The NIC models of the matrix, in the order of their networks
/// (198.18.64.0/24 for the first, ...).
const MATRIX: [NicModel; 5] = [
    NicModel::VirtioNet,
    NicModel::E1000e,
    NicModel::Igb,
    NicModel::Rtl8139,
    NicModel::UsbNet,
];

fn powers_off(mut vm: Vm) -> String {
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    vm.log()
}

#[test]
fn every_nic_model_gets_a_dhcp_lease_with_its_driver() {
    let mut q = vm("nic-matrix");
    for (i, model) in MATRIX.iter().enumerate() {
        q = q
            .nic_model(*model)
            .user_nic(&format!("198.18.{}.0/24", 64 + i));
    }
    let mut vm = start(q);
    let modules = vm.wait_for("modules  ").unwrap_or_else(|e| panic!("{e}"));
    let line = vm.wait_for("network  ok").unwrap_or_else(|e| panic!("{e}"));
    // One entry per interface: `eth0 198.18.64.15/24 gw ... fe80::... [driver]`.
    for (i, model) in MATRIX.iter().enumerate() {
        let lease = format!(" 198.18.{}.15/24 ", 64 + i);
        let driver = format!("[{}]", model.driver());
        assert!(
            line.split(", ")
                .any(|entry| entry.contains(&lease) && entry.contains(&driver)),
            "{} ({}) has no lease {lease} with driver {driver}: {line}\n{modules}",
            model.device(),
            model.driver()
        );
    }
    // QEMU's DHCP server hands out .15 first; the first NIC's link-local
    // address is derived from its MAC (EUI-64).
    assert!(line.contains("fe80::5054:ff:fe12:3456"), "{line}");
    vm.wait_for("phase-init: ready mode=local")
        .unwrap_or_else(|e| panic!("{e}"));
    let log = powers_off(vm);
    assert!(!log.contains("no DHCPv4 lease"), "{log}");
    eprintln!("nic matrix: {modules}");
}

#[test]
fn without_a_dhcp_server_the_nic_comes_up_link_local_only() {
    let mut vm = start(vm("no-dhcp").args([
        "-netdev",
        "hubport,id=n0,hubid=7",
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
    ]));
    let modules = vm.wait_for("modules  ").unwrap_or_else(|e| panic!("{e}"));
    eprintln!("one virtio NIC: {modules}");
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
