//! Stage 1 on a test LAN: QEMU guests join a network-namespace
//! bridge through tap devices (`testkit::netns::Lan::add_tap`,
//! `testkit::qemu::Qemu::tap`), next to host-side nodes.
//!
//! * `a_guest_on_a_tap_gets_a_lease_from_a_node`: the harness itself — a
//!   node runs busybox `udhcpd` on 198.18.0.0/24; the guest's NIC on the tap
//!   gets a lease from it (a broadcast and a reply across the bridge) and
//!   its EUI-64 link-local address.
//! * `boot_from_peer_over_mdns_and_ipv6_link_local`: the end-to-end boot
//!   from a `phase serve --mdns` peer (below).
//!
//! Prerequisites (built by `make test`): `$PHASE_BUILD/kernel/current` with
//! the kernel, `$PHASE_BUILD/x86_64/initramfs.img`; a static `/bin/busybox`.

use std::path::Path;
use std::time::Duration;

use testkit::fixtures::{self, build_dir, need};
use testkit::netns::Lan;
use testkit::qemu::{NicModel, Qemu};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn a_guest_on_a_tap_gets_a_lease_from_a_node() {
    let (_, kernel) = fixtures::kernel();
    let initrd = build_dir().join("x86_64/initramfs.img");
    need(&initrd, "run `make initramfs`");
    need(Path::new("/bin/busybox"), "apt-get install busybox-static");

    let mut lan = Lan::new(1, true).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dhcpd = fixtures::dhcpd_in(lan.node(0), dir.path());

    let mut vm = Qemu::direct_kernel(
        &kernel,
        &initrd,
        "console=ttyS0,115200 phase.mode=local phase.test=poweroff",
    )
    .name("tap-dhcp")
    .tap(&tap)
    .timeout(BOOT_TIMEOUT)
    .start()
    .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    vm.wait_for("network  ok").unwrap_or_else(|e| panic!("{e}"));
    // udhcpd picks an address of its pool (198.18.0.100-150).
    let pool = regex::Regex::new(r"eth0 198\.18\.0\.1([0-4][0-9]|50)/24").expect("regex");
    vm.wait_for_regex(&pool).unwrap_or_else(|e| panic!("{e}"));
    let ll = tap.guest_link_local().to_string();
    assert_eq!(ll, "fe80::5054:ff:fe18:0");
    vm.wait_for(&ll).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("phase-init: ready mode=local")
        .unwrap_or_else(|e| panic!("{e}"));
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    assert!(dhcpd.exited().is_none(), "udhcpd died during the test");
}

use super::boot_from_peer_common as common;

/// The end-to-end boot: a LAN with no DHCP server (IPv6 link-local only),
/// `phase serve --mdns` in a node serving the published repository, and a
/// UEFI VM on a tap in `local` mode with an empty cache and one NIC, an
/// Intel 82574L (`e1000e`): stage 1 finds the peer by mDNS over that NIC,
/// verifies, fetches, goes on as stage 2, which runs the marker service
/// from the overlay root.
#[test]
fn boot_from_peer_over_mdns_and_ipv6_link_local() {
    let t0 = std::time::Instant::now();
    let pubd = common::publish("peer");
    let mut lan = Lan::new(1, false).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let (_serve, id) = common::serve(&lan, 0, &pubd.repo, pubd.dir.path());
    let node_ll = lan.link_local(0).unwrap_or_else(|e| panic!("{e}"));
    let t_ready = t0.elapsed();

    let mut vm = Qemu::image(&pubd.disk)
        .mode("local")
        .nic_model(NicModel::E1000e)
        .tap(&tap)
        .memory_mib(512)
        .name("boot-from-peer")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect =
        |vm: &mut testkit::qemu::Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    // The loader booted the local entry: the kernel prints its command line.
    expect(&mut vm, "phase.mode=local");
    expect(&mut vm, "trust    ok");
    // The only interface is the e1000e, with its link-local address.
    let net = common::one_nic_line(&mut vm, NicModel::E1000e);
    assert!(net.contains(&tap.guest_link_local().to_string()), "{net}");
    expect(&mut vm, "no DHCPv4 lease");
    expect(&mut vm, "cache    ok");
    let line = common::full_line(&mut vm, "discover ok");
    assert!(line.contains("1 peers (mdns)"), "{line}");
    let host = common::host_label(&id);
    assert!(
        line.contains(&host),
        "discovery names the peer {host}: {line}"
    );
    assert!(
        line.contains(&format!("[{node_ll}%")),
        "the peer is reached at its link-local address {node_ll} with a zone: {line}"
    );
    let k = common::full_line(&mut vm, "fetch: kernel    stable/x86_64/kernel");
    assert!(k.contains("verified") && k.contains(&host), "{k}");
    expect(&mut vm, "fetch: rootfs");
    expect(&mut vm, "fetch    ok");
    expect(&mut vm, "phase-init: ready mode=local channel=stable");
    // The stick was built from the release it boots: stage 1 goes on as
    // stage 2 with the rootfs fetched from the peer (direct.rs).
    let route = common::full_line(&mut vm, "route    ok");
    assert!(route.contains("direct, no second kernel"), "{route}");
    let t_route = t0.elapsed();
    expect(&mut vm, "stage=target");
    expect(&mut vm, "switch   ok");
    expect(
        &mut vm,
        &format!("peer-marker: {} root=overlay", pubd.marker),
    );
    let bj = common::full_line(&mut vm, "boot.json: {");
    assert!(bj.contains("\"mode\":\"local\""), "{bj}");
    assert!(bj.contains(&host), "boot.json names the peer: {bj}");
    assert!(bj.contains("\"handover\":{\"path\":\"direct\""), "{bj}");
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    eprintln!(
        "boot from peer: setup {:.1} s, to the route {:.1} s, whole {:.1} s",
        t_ready.as_secs_f64(),
        t_route.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
