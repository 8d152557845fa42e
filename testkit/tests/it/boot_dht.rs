//! Stage 1 in `internet` mode finds its peer through the Kademlia DHT
//! (with `discovery::dht`).
//!
//! A test LAN (bridge in a hub namespace, node 0 at 198.18.0.10/24 running
//! busybox `udhcpd`), `phase serve --dht` in node 0 serving a published
//! repository (it provides the fleet key and every target's digest), and a
//! UEFI VM on a tap with an EMPTY cache and one NIC (in the first test an
//! Intel 82576, `igb`), booted in `internet` mode with only
//! the serve node's multiaddr in `phase.peers`: no HTTP URL and no mDNS
//! (internet mode never browses, and the server does not advertise). The
//! serial log must show the peer found through the DHT's fleet key, the
//! per-artifact provider lookup, the verified fetch from the DHT peer's HTTP
//! address, kexec, stage 2 and the marker from the overlay root, and
//! boot.json must record that the peer was found by `dht`.
//!
//! Prerequisites (built by `make test`): the kernel, `x86_64/phase-init`
//! and OVMF under `$PHASE_BUILD`; a static `/bin/busybox`; `PHASE_BIN`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

use testkit::fixtures::{dhcpd_in, serve_phase};
use testkit::netns::{Daemon, Lan};
use testkit::qemu::{NicModel, Qemu};

use super::boot_from_peer_common as common;

/// HTTP port of `phase serve` in node 0.
const HTTP_PORT: u16 = 7070;
/// libp2p (TCP) port of its DHT node.
const DHT_PORT: u16 = 4001;

/// `phase serve --dht` (no `--mdns`) in node `i` at its IPv4 address,
/// serving `repo` with an empty cache. Waits (20 s at most) for its
/// multiaddr, what it provides and its listening line; returns the guard
/// and its DHT multiaddr
/// (`/ip4/198.18.0.1x/tcp/4001/p2p/12D3...`).
fn serve_dht(lan: &Lan, i: usize, repo: &Path, work: &Path) -> (Daemon, String) {
    let cache = work.join(format!("serve-cache-{i}"));
    std::fs::create_dir_all(&cache).expect("mkdir cache");
    let ip = lan.ipv4(i);
    let (d, lines) = serve_phase(
        Some(lan.node(i)),
        [
            OsStr::new("--cache"),
            cache.as_os_str(),
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--listen"),
            OsStr::new(&format!("{ip}:{HTTP_PORT}")),
            OsStr::new("--dht"),
            OsStr::new("--dht-listen"),
            OsStr::new(&format!("/ip4/{ip}/tcp/{DHT_PORT}")),
        ],
        &[
            "phase serve: DHT /ip4/",
            "phase serve: DHT providing",
            "phase serve: listening on",
        ],
        20,
    );
    let addr = lines[0]
        .strip_prefix("phase serve: DHT ")
        .expect("matched prefix")
        .trim()
        .to_owned();
    (d, addr)
}

/// Everything a test here runs against: the published repository and
/// image, the LAN with its tap, udhcpd and `phase serve --dht` in node 0.
struct Setup {
    pubd: common::Published,
    lan: Lan,
    tap: testkit::netns::Tap,
    dhcpd: Daemon,
    serve: Daemon,
    /// The serve node's DHT multiaddr, `/ip4/198.18.0.10/tcp/4001/p2p/<id>`.
    bootstrap: String,
    /// Its libp2p peer id.
    peer_id: String,
}

fn setup(tag: &str) -> Setup {
    let pubd = common::publish(tag);
    let mut lan = Lan::new(1, true).unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let dhcp_dir = pubd.dir.path().join("dhcp");
    std::fs::create_dir_all(&dhcp_dir).expect("mkdir dhcp");
    let dhcpd = dhcpd_in(lan.node(0), &dhcp_dir);
    let (serve, bootstrap) = serve_dht(&lan, 0, &pubd.repo, pubd.dir.path());
    let peer_id = bootstrap
        .rsplit("/p2p/")
        .next()
        .expect("peer id")
        .to_owned();
    assert!(
        bootstrap.starts_with(&format!("/ip4/{}/tcp/{DHT_PORT}/p2p/12D3", lan.ipv4(0))),
        "{bootstrap}"
    );
    Setup {
        pubd,
        lan,
        tap,
        dhcpd,
        serve,
        bootstrap,
        peer_id,
    }
}

#[test]
fn boot_from_a_dht_peer_in_internet_mode() {
    let t0 = Instant::now();
    let Setup {
        pubd,
        lan,
        tap,
        mut dhcpd,
        mut serve,
        bootstrap,
        peer_id,
    } = setup("dht");
    let t_ready = t0.elapsed();

    let mut vm = Qemu::image(&pubd.disk)
        .mode("internet")
        .append(format!("phase.peers={bootstrap}"))
        .nic_model(NicModel::Igb)
        .tap(&tap)
        .memory_mib(384)
        .name("boot-dht")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let expect =
        |vm: &mut testkit::qemu::Vm, s: &str| vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"));
    // The loader booted the internet entry: the kernel prints its command line.
    expect(&mut vm, "phase.mode=internet");
    expect(&mut vm, "trust    ok");
    // The only interface is the igb, with a lease from udhcpd.
    let net = common::one_nic_line(&mut vm, NicModel::Igb);
    assert!(
        net.contains("network  ok") && net.contains("eth0 198.18.0.1"),
        "a DHCP lease: {net}"
    );
    expect(&mut vm, "cache    ok");
    let line = common::full_line(&mut vm, "discover ok");
    assert!(line.contains("1 peers (dht)"), "{line}");
    let host = common::host_label(&peer_id);
    assert!(
        line.contains(&format!("{host}.dht.phase"))
            && line.contains(&format!("{}:{HTTP_PORT}", lan.ipv4(0))),
        "discovery names the DHT peer {host} at its HTTP address: {line}"
    );
    // kernel, initramfs, rootfs and the rootfs's dm-verity tree
    let lookup = common::full_line(&mut vm, "dht: providers of 4 boot object(s)");
    assert!(lookup.contains("1 peer(s), 0 new"), "{lookup}");
    let k = common::full_line(&mut vm, "fetch: kernel    stable/x86_64/kernel");
    assert!(k.contains("verified") && k.contains(&host), "{k}");
    expect(&mut vm, "fetch: rootfs");
    expect(&mut vm, "fetch    ok");
    expect(&mut vm, "phase-init: ready mode=internet channel=stable");
    // The stick was built from the release it boots: stage 1 goes on as
    // stage 2 with the rootfs fetched from the DHT peer (direct.rs).
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
    assert!(bj.contains("\"mode\":\"internet\""), "{bj}");
    assert!(
        bj.contains(&format!("{host}.dht.phase")) && bj.contains("\"found\":\"dht\""),
        "boot.json names the peer and how it was found: {bj}"
    );
    expect(&mut vm, "supervisor: powering off");
    let st = vm.wait_exit().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "QEMU exit status {st}");
    let log = vm.log();
    assert!(
        !log.contains("(mdns)") && !log.contains("mdns.phase"),
        "internet mode used mDNS"
    );
    assert!(serve.exited().is_none(), "phase serve died during the test");
    assert!(dhcpd.exited().is_none(), "udhcpd died during the test");
    eprintln!("{line}\n{lookup}\n{k}");
    eprintln!(
        "boot over the DHT: setup {:.1} s, to the route {:.1} s, whole {:.1} s",
        t_ready.as_secs_f64(),
        t_route.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// The DHT finds nobody (the bootstrap address names another peer id, so
/// the Noise handshake with the node there is refused): one warning line
/// within the deadline, and the boot goes on from the `phase.peers` HTTP
/// mirror. Stops at kexec (the target side is the test above).
#[test]
fn a_bootstrap_peer_with_another_id_is_refused_and_the_mirror_serves() {
    let s = setup("dht-wrong-id");
    let wrong = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    assert_ne!(s.peer_id, wrong);
    let ip = s.lan.ipv4(0);
    let mirror = format!("http://{ip}:{HTTP_PORT}");
    let mut vm = Qemu::image(&s.pubd.disk)
        .mode("internet")
        .append(format!(
            "phase.peers=/ip4/{ip}/tcp/{DHT_PORT}/p2p/{wrong},{mirror}"
        ))
        .tap(&s.tap)
        .memory_mib(384)
        .name("boot-dht-wrong-id")
        .timeout(common::BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let line = common::full_line(&mut vm, "discover warn");
    assert!(line.contains("0 peers (dht)"), "{line}");
    let why = common::full_line(&mut vm, "no DHT provider of this fleet");
    assert!(
        why.contains("through 1 bootstrap peer(s)") && why.contains("phase.peers URLs only"),
        "{why}"
    );
    let k = common::full_line(&mut vm, "fetch: kernel    stable/x86_64/kernel");
    assert!(
        k.contains("verified") && k.contains(&format!("from {mirror}/=")),
        "{k}"
    );
    vm.wait_for("phase-init: ready mode=internet")
        .unwrap_or_else(|e| panic!("{e}"));
    let route = common::full_line(&mut vm, "route    ok");
    assert!(route.contains("direct, no second kernel"), "{route}");
    let log = vm.log();
    assert!(!log.contains(".dht.phase"), "no DHT peer was used");
    eprintln!("{line}\n{why}\n{k}");
}
