//! Fleet of three: three QEMU VMs on one test bridge; only the
//! first has a seeded stick. It boots offline from its cache (local mode),
//! and its target re-shares the verified payload with `phase serve --mdns`.
//! VMs two and three have sticks with the same trusted root and EMPTY cache
//! partitions: they boot from the first node's re-shared artifacts (named
//! with `phase.peers=`). No `phase serve` runs on the host: the LAN's only
//! host-side process is a DHCP server. Each VM must fetch its boot set from
//! node one, verify it, kexec and print the WASM job's greeting. Node one
//! itself needs no second kernel (its stick is the release): it goes on as
//! stage 2 with the rootfs in place and re-shares from there.
//!
//! Node one has no TPM: `phase attest verify` against it must say `no
//! TPM` and print no verdict.
//!
//! Slow under TCG (three UEFI boots, two of them fetching ~60 MB over the
//! bridge).
//!
//! Prerequisites: as `boot_wasm`.

use super::target_common;

use std::time::{Duration, Instant};

use target_common as tc;
use testkit::qemu::{Qemu, Vm};

const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

#[test]
fn two_nodes_boot_from_the_first_nodes_re_shared_payload() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = tc::publish(d);
    let seeded = d.join("seeded.img");
    p.disk(&seeded, true);
    let empty = d.join("empty.img");
    p.disk(&empty, false);

    let (mut lan, mut dhcpd) = tc::lan_with_dhcp(d);
    let taps: Vec<_> = (0..3)
        .map(|_| lan.add_tap().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let expect = |vm: &mut Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));

    let mut first = Qemu::image(&seeded)
        .mode("local")
        .memory_mib(768)
        .name("fleet-1")
        .tap(&taps[0])
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    expect(&mut first, "cache    ok");
    // Its stick was built from the release it boots: no second kernel,
    // the rootfs used in place from the cache partition, and that is what
    // it re-shares.
    let route = expect(&mut first, "route    ok");
    assert!(
        route.contains("direct, no second kernel"),
        "{route}\n{}",
        first.log()
    );
    let net = expect(&mut first, "net: phase-node-");
    let ip = tc::net_ipv4(&net).unwrap_or_else(|| panic!("node 1 has no IPv4 lease: {net:?}"));
    expect(&mut first, tc::GREETING);
    // Node one has no TPM: asked to attest, it says so, and the verifier
    // prints no verdict.
    let (ok, out, err) = tc::attest_verify(
        lan.node(0),
        &p.root,
        &format!("http://{ip}:7070"),
        &d.join("aks.json"),
        &[],
        Duration::from_secs(60),
    );
    assert!(
        !ok && !out.contains("booted"),
        "a verdict without a TPM: {out}"
    );
    assert!(
        err.contains("HTTP 404") && err.contains("no TPM: /dev/tpmrm0 does not exist"),
        "{err}"
    );
    let t_first = t0.elapsed();
    eprintln!("fleet: node 1 up at {ip} after {t_first:?}");

    let peer = format!("http://{ip}:7070");
    let mut others: Vec<Vm> = taps[1..]
        .iter()
        .enumerate()
        .map(|(i, tap)| {
            Qemu::image(&empty)
                .mode("local")
                // The kexec route, from re-shared bytes.
                .append(format!("phase.peers={peer} phase.kexec=always"))
                .memory_mib(768)
                .name(format!("fleet-{}", i + 2))
                .tap(tap)
                .timeout(BOOT_TIMEOUT)
                .start()
                .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"))
        })
        .collect();
    for vm in &mut others {
        expect(vm, "cache    ok");
        let line = expect(vm, "fetch: rootfs    stable/x86_64/rootfs");
        // Node one is the only node serving while these two boot; it is
        // named by its address (phase.peers) or its mDNS peer name.
        assert!(
            line.contains("verified, from ")
                && !line.contains("from the cache")
                && (line.contains(&ip) || line.contains(".mdns.phase")),
            "the rootfs did not come from node 1 ({peer}): {line}"
        );
        expect(vm, "fetch: job       jobs/hello.wasm");
        expect(vm, "kexec: starting the target kernel");
        expect(vm, "switch   ok");
        let greeting = expect(vm, tc::GREETING);
        eprintln!("fleet: {greeting} after {:?}", t0.elapsed());
    }
    // Node one is still serving; nothing on the host but DHCP.
    assert!(dhcpd.exited().is_none(), "udhcpd died during the test");
    let log = first.log();
    assert!(
        !log.contains("service peer: exited"),
        "node 1's peer service failed:\n{log}"
    );
    eprintln!("fleet: three nodes up after {:?}", t0.elapsed());
}
