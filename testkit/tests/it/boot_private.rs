//! Private mode at boot (docs/threat-model.md).
//!
//! A SEEDED disk image (the cache partition holds the signed boot set and
//! the demo job, as `phase image --seed-repo` writes it) boots with
//! `phase.mode=private` on a test LAN whose only host-side node runs a DHCP
//! server (busybox udhcpd) and no peer. QEMU writes the image file itself
//! ([`Qemu::writable`]: no snapshot, no overlay), and tcpdump captures
//! everything on the VM's tap for the whole boot.
//!
//! * `a_private_boot_writes_no_byte_and_sends_no_mdns`: the boot reaches
//!   the target (plasmd runs the verified job: the WASM greeting); the
//!   target did not start its peer service and nothing answers on its port;
//!   the image's SHA-256 is the same after the boot as before; the capture
//!   saw the VM's DHCP (so it worked) and not one mDNS packet (UDP 5353,
//!   224.0.0.251, ff02::fb). Then the contrast: the same image booted in
//!   local mode DOES change (the cache partition is mounted read-write), so
//!   the hash check is not vacuous.
//! * `two_private_boots_present_different_identities`: two boots of the
//!   same VM, each up to its DHCP lease, show different ephemeral peer ids
//!   on the console and different random MACs and DHCP client identifiers
//!   on the wire, none of them the NIC's own MAC, and no DHCP host name.
//! * `a_private_boot_whose_tor_cannot_bootstrap_never_connects_directly`:
//!   an empty stick, `phase.peers` naming a live peer, no `phase.socks5`,
//!   and no way to the public Tor network: the embedded Tor client's
//!   bootstrap fails within `phase.tor_timeout`, the boot stops with one
//!   line and the VM opens no TCP connection at all.
//! * `a_private_boot_fetches_through_a_tor_network_and_nothing_else`: an
//!   empty stick whose image carries the test Tor network
//!   (`testkit::tornet`, `phase image --tor-network`): stage 1's embedded
//!   arti bootstraps, fetches everything from the peer through the exit,
//!   the target starts; every IPv4 packet the VM sent (DHCP aside) went to
//!   a Tor relay, none to the peer, no mDNS.
//!
//! Prerequisites (built by `make test`): `$PHASE_BIN`, `$PHASE_BUILD` with
//! the kernel, `x86_64/phase-init`, `x86_64/rootfs.squashfs`,
//! `jobs/hello.wasm`; busybox-static, mtools, tcpdump; root (network
//! namespaces).

use super::target_common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use target_common as tc;
use testkit::netns::{self, Daemon, Lan, Tap};
use testkit::qemu::{self, Qemu, Vm};
use testkit::tornet::TorNet;

/// UEFI + stage 1 + kexec + the target's services under TCG on a loaded
/// 2-core host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

/// The mDNS packets the capture must not contain.
const MDNS_FILTER: &str = "udp port 5353 or dst host 224.0.0.251 or dst host ff02::fb";

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open image");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    // Bounded by the file's size.
    loop {
        let n = f.read(&mut buf).expect("read image");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("{:x}", h.finalize())
}

/// tcpdump on the VM's tap (in the hub namespace) into `pcap`, started
/// before the VM, packet-buffered (`-U`) so a kill loses nothing written.
fn capture(tap: &Tap, pcap: &Path) -> Daemon {
    testkit::fixtures::need(Path::new("/usr/bin/tcpdump"), "apt-get install tcpdump");
    let log = pcap.with_extension("log");
    let err = std::fs::File::create(&log).expect("tcpdump log");
    let d = netns::spawn(
        netns::command(&tap.ns, "tcpdump")
            .args([
                "-i",
                &tap.ifname,
                "-U",
                "-n",
                "-Z",
                "root",
                "-s",
                "512",
                "-w",
            ])
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(err),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on")) {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "tcpdump did not start on {}: {}",
        tap.ifname,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// The capture as text (`tcpdump -r`), link-level headers and options
/// decoded, restricted to `filter` if not empty.
fn read_pcap(pcap: &Path, filter: &str) -> String {
    let mut cmd = std::process::Command::new("tcpdump");
    cmd.args(["-r"]).arg(pcap).args(["-nn", "-e", "-vv"]);
    if !filter.is_empty() {
        cmd.arg(filter);
    }
    let out = cmd.output().expect("run tcpdump -r");
    assert!(
        out.status.success(),
        "tcpdump -r {} failed: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The capture's packets as (source MAC, the whole line), in order.
fn sources(pcap: &Path) -> Vec<(String, String)> {
    read_pcap(pcap, "")
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| Some((l.split_whitespace().nth(1)?.to_owned(), l.to_owned())))
        .collect()
}

/// The NIC's own MAC may be on the wire only before the first packet from
/// the random one: phase-init sets the random MAC before it brings the link
/// up, and nothing in Linux brings a link up before phase-init. What comes
/// earlier is the firmware (OVMF's IPv6 stack sends DAD and MLD from the
/// burnt-in MAC while it probes the NIC): outside what an OS can hide, see
/// docs/threat-model.md. Returns the firmware's packets.
fn own_mac_only_before(pcap: &Path, own: &str, random: &str, what: &str) -> Vec<String> {
    let all = sources(pcap);
    let first = all
        .iter()
        .position(|(src, _)| src == random)
        .unwrap_or_else(|| panic!("{what}: no packet from {random} in the capture"));
    let after: Vec<&String> = all[first..]
        .iter()
        .filter(|(src, _)| src == own)
        .map(|(_, l)| l)
        .collect();
    assert!(
        after.is_empty(),
        "{what}: the NIC's own MAC {own} was on the wire after phase-init set {random}:\n{after:#?}"
    );
    let before: Vec<String> = all[..first]
        .iter()
        .filter(|(src, _)| src == own)
        .map(|(_, l)| l.clone())
        .collect();
    for l in &before {
        assert!(
            !l.contains("BOOTP") && !l.contains("IPv4"),
            "{what}: IPv4 from the NIC's own MAC before phase-init: {l}"
        );
    }
    before
}

/// `identity  ok  ephemeral <32 hex>` -> the id.
fn ephemeral_id(line: &str) -> String {
    let id = line
        .split_whitespace()
        .skip_while(|w| *w != "ephemeral")
        .nth(1)
        .unwrap_or_else(|| panic!("no ephemeral id in {line:?}"))
        .to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line:?}"
    );
    id
}

/// `... eth0 mac 02:..:.. (random) ...` -> the MAC.
fn random_mac(line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w
        .iter()
        .position(|x| *x == "mac")
        .unwrap_or_else(|| panic!("no random MAC in {line:?}"));
    assert_eq!(w.get(i + 2), Some(&"(random)"), "{line:?}");
    let mac = w[i + 1].to_owned();
    let first = u8::from_str_radix(&mac[..2], 16).expect("hex");
    assert_eq!(first & 0x03, 0x02, "locally administered unicast: {mac}");
    mac
}

/// A seeded image and the LAN with a DHCP server, shared by both tests.
struct Setup {
    _dir: tempfile::TempDir,
    d: PathBuf,
    disk: PathBuf,
    lan: Lan,
    dhcpd: Daemon,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_owned();
    let p = tc::publish(&d);
    let disk = d.join("disk.img");
    p.disk(&disk, true);
    let (lan, dhcpd) = tc::lan_with_dhcp(&d);
    Setup {
        _dir: dir,
        d,
        disk,
        lan,
        dhcpd,
    }
}

fn expect(vm: &mut Vm, s: &str) -> String {
    vm.wait_for(s).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_private_boot_writes_no_byte_and_sends_no_mdns() {
    let mut s = setup();
    qemu::edit_entry_in_place(&s.disk, Some("private"), "phase.kexec=always")
        .unwrap_or_else(|e| panic!("{e}"));
    let before = sha256_file(&s.disk);
    let tap = s.lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let pcap = s.d.join("private.pcap");
    let tcpdump = capture(&tap, &pcap);
    let mut vm = Qemu::image(&s.disk)
        .writable()
        .memory_mib(768)
        .name("boot-private")
        .tap(&tap)
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let id = ephemeral_id(&expect(&mut vm, "ephemeral "));
    let net = expect(&mut vm, "network  ");
    let mac = random_mac(&net);
    assert_ne!(mac, tap.mac, "the NIC kept its own MAC: {net}");
    let cache = expect(&mut vm, "cache    ");
    assert!(cache.contains("read-only"), "{cache}");
    expect(&mut vm, "private mode, no network peers");
    expect(&mut vm, "fetch    ok");
    let check = expect(&mut vm, "private  ");
    assert!(
        check.contains("ok") && check.contains("no listening sockets"),
        "stage 1's own check before kexec: {check}"
    );
    expect(&mut vm, "kexec: starting the target kernel");
    expect(&mut vm, "stage=target");
    let target_id = expect(&mut vm, "from boot.json");
    assert!(
        target_id.contains(&id) && target_id.contains(&mac),
        "the target keeps stage 1's identity and MAC: {target_id}"
    );
    let skipped = expect(&mut vm, "service peer: not started in private mode");
    let tnet = expect(&mut vm, "net: phase-node-");
    let plasmd = expect(&mut vm, "plasmd: private mode: no peers");
    expect(&mut vm, tc::GREETING);
    let log = vm.log();
    assert!(
        !log.contains("service peer: started"),
        "the peer service ran in private mode ({skipped}, {plasmd})"
    );
    // Nothing answers on the peer port from the LAN.
    let ip = tc::net_ipv4(&tnet).unwrap_or_else(|| panic!("no IPv4 lease in {tnet:?}"));
    let probe = netns::command(s.lan.node(0), "curl")
        .args(["-sS", "--max-time", "5", &format!("http://{ip}:7070/")])
        .output()
        .expect("run curl");
    assert!(
        !probe.status.success(),
        "something answers on {ip}:7070 in private mode"
    );
    // Whatever the target's services would announce, they do it right
    // after they start: give them a few seconds on the wire.
    std::thread::sleep(Duration::from_secs(5));
    drop(vm);
    drop(tcpdump);
    assert_eq!(
        sha256_file(&s.disk),
        before,
        "a private boot changed the image's bytes"
    );

    let from_vm = read_pcap(&pcap, &format!("ether src {mac}"));
    assert!(
        from_vm.contains("BOOTP/DHCP, Request"),
        "the capture saw no DHCP from the VM ({mac}): is it capturing?\n{from_vm}"
    );
    let mdns = read_pcap(&pcap, MDNS_FILTER);
    assert!(
        mdns.trim().is_empty(),
        "mDNS left the VM in private mode:\n{mdns}"
    );
    let firmware = own_mac_only_before(&pcap, &tap.mac, &mac, "private boot");
    eprintln!(
        "private boot: {} packet(s) from the NIC's own MAC before phase-init (firmware)",
        firmware.len()
    );
    assert!(s.dhcpd.exited().is_none(), "udhcpd died during the test");

    // The contrast: the same image in local mode mounts its cache
    // read-write, and the image changes.
    qemu::edit_entry_in_place(&s.disk, Some("local"), "phase.kexec=always")
        .unwrap_or_else(|e| panic!("{e}"));
    let before = sha256_file(&s.disk);
    let tap = s.lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let mut vm = Qemu::image(&s.disk)
        .writable()
        .memory_mib(768)
        .name("boot-local-contrast")
        .tap(&tap)
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let cache = expect(&mut vm, "cache    ");
    assert!(cache.contains("read-write"), "{cache}");
    expect(&mut vm, "fetch    ok");
    drop(vm);
    assert_ne!(
        sha256_file(&s.disk),
        before,
        "a local-mode boot left the image unchanged: the hash check above proves nothing"
    );
}

#[test]
fn two_private_boots_present_different_identities() {
    let mut s = setup();
    let tap = s.lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    for n in 0..2 {
        let pcap = s.d.join(format!("boot{n}.pcap"));
        let tcpdump = capture(&tap, &pcap);
        let mut vm = Qemu::image(&s.disk)
            .mode("private")
            .memory_mib(512)
            .name(format!("private-identity-{n}"))
            .append("phase.kexec=always")
            .tap(&tap)
            .timeout(BOOT_TIMEOUT)
            .start()
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
        let id = ephemeral_id(&expect(&mut vm, "ephemeral "));
        let net = expect(&mut vm, "network  ");
        let mac = random_mac(&net);
        assert!(net.contains("198.18.0."), "boot {n}: no DHCP lease: {net}");
        drop(vm);
        drop(tcpdump);
        let dhcp = read_pcap(&pcap, "udp port 67 or udp port 68");
        let from_vm = read_pcap(&pcap, &format!("ether src {mac} and udp port 68"));
        assert!(
            from_vm.contains("BOOTP/DHCP, Request"),
            "boot {n}: no DHCP from {mac} on the wire:\n{dhcp}"
        );
        // Every client identifier on the wire is this boot's random MAC.
        let ids: Vec<&str> = from_vm
            .lines()
            .filter(|l| l.contains("Client-ID"))
            .collect();
        assert!(
            !ids.is_empty(),
            "boot {n}: no client identifier:\n{from_vm}"
        );
        for l in &ids {
            assert!(l.contains(&mac), "boot {n}: client id is not {mac}: {l}");
        }
        assert!(
            !from_vm.contains("Hostname"),
            "boot {n}: a DHCP host name left the VM:\n{from_vm}"
        );
        own_mac_only_before(&pcap, &tap.mac, &mac, &format!("boot {n}"));
        seen.push((id, mac));
    }
    assert_ne!(seen[0].0, seen[1].0, "the same ephemeral peer id twice");
    assert_ne!(seen[0].1, seen[1].1, "the same random MAC twice");
    assert!(s.dhcpd.exited().is_none(), "udhcpd died during the test");
}

#[test]
fn a_private_boot_whose_tor_cannot_bootstrap_never_connects_directly() {
    // An EMPTY stick and a live peer on the LAN: local mode would fetch
    // from it. Private mode starts the embedded Tor client for the public
    // network, which this LAN cannot reach (the DHCP lease names no
    // router): the bootstrap fails within phase.tor_timeout, the boot stops
    // with one line, and the VM never opened a connection, to the peer or
    // anywhere else.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = tc::publish(d);
    let disk = d.join("disk.img");
    p.disk(&disk, false);
    let (mut lan, mut dhcpd) = tc::lan_with_dhcp(d);
    let peer = format!("http://{}:7070", lan.ipv4(0));
    let _serve = netns::spawn(
        netns::command(lan.node(0), testkit::fixtures::phase_bin())
            .args(["serve", "--repo"])
            .arg(&p.repo)
            .arg("--cache")
            .arg(d.join("peer-cache"))
            .args(["--listen", "[::]:7070"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tap = lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let pcap = d.join("refuse.pcap");
    let tcpdump = capture(&tap, &pcap);
    let mut vm = Qemu::image(&disk)
        .mode("private")
        .append(format!(
            "phase.peers={peer} phase.tor_timeout=20 phase.kexec=always"
        ))
        .memory_mib(512)
        .name("private-no-tor")
        .tap(&tap)
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let net = expect(&mut vm, "network  ");
    let mac = random_mac(&net);
    expect(
        &mut vm,
        "every request through Tor (the embedded client, arti)",
    );
    let step = expect(&mut vm, "tor      ");
    assert!(step.contains("FAIL"), "the tor step fails: {step}");
    expect(&mut vm, "Tor failed to bootstrap: not done within 20 s");
    let line = expect(&mut vm, "fetch: the embedded Tor client did not bootstrap");
    assert!(line.contains("never connects directly"), "{line}");
    expect(&mut vm, "rescue");
    let log = vm.log();
    assert!(
        !log.contains("fetch    "),
        "a fetch step ran without Tor:\n{log}"
    );
    drop(vm);
    drop(tcpdump);
    assert!(
        !read_pcap(&pcap, &format!("ether src {mac}"))
            .trim()
            .is_empty(),
        "the capture saw nothing from the VM ({mac}): is it capturing?"
    );
    let tcp = read_pcap(&pcap, &format!("ether src {mac} and tcp"));
    assert!(
        tcp.trim().is_empty(),
        "a private boot without Tor opened a TCP connection:\n{tcp}"
    );
    assert!(dhcpd.exited().is_none(), "udhcpd died during the test");
}

#[test]
fn a_private_boot_fetches_through_a_tor_network_and_nothing_else() {
    // An EMPTY stick whose image carries the test Tor network (`phase image
    // --tor-network`), and a live peer on the same LAN, directly reachable:
    // a leak would work. Stage 1's embedded arti bootstraps from the
    // network's authorities, fetches the TUF metadata and the boot set
    // from the peer through the exit, and kexecs into the target.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = tc::publish(d);
    let mut net = TorNet::start(2).unwrap_or_else(|e| panic!("Tor test network: {e}"));
    let netfile = d.join("tor-network.toml");
    net.write_arti_config(&netfile)
        .unwrap_or_else(|e| panic!("{e}"));
    let disk = d.join("disk.img");
    p.disk_with(
        &disk,
        false,
        &tc::os([OsStr::new("--tor-network"), netfile.as_os_str()]),
    );
    let peer_ip = net.node_ip(0);
    let _serve = netns::spawn(
        netns::command(net.node(0), testkit::fixtures::phase_bin())
            .args(["serve", "--repo"])
            .arg(&p.repo)
            .arg("--cache")
            .arg(d.join("peer-cache"))
            .args(["--listen", &format!("{peer_ip}:7070")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut dhcpd = testkit::fixtures::dhcpd_in(net.node(1), d);
    let consensus = net
        .wait_consensus(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("boot_private: Tor consensus after {consensus:?}");
    let tap = net.lan.add_tap().unwrap_or_else(|e| panic!("{e}"));
    let pcap = d.join("tor.pcap");
    let tcpdump = capture(&tap, &pcap);
    let started = Instant::now();
    let mut vm = Qemu::image(&disk)
        .mode("private")
        .append(format!(
            "phase.peers=http://{peer_ip}:7070 phase.kexec=always"
        ))
        .memory_mib(1024)
        .name("private-tor")
        .tap(&tap)
        .timeout(BOOT_TIMEOUT)
        .start()
        .unwrap_or_else(|e| panic!("cannot start QEMU: {e}"));
    let net_line = expect(&mut vm, "network  ");
    let mac = random_mac(&net_line);
    expect(
        &mut vm,
        "every request through Tor (the embedded client, arti)",
    );
    let boot = expect(&mut vm, "tor: bootstrapped in");
    let step = expect(&mut vm, "tor      ");
    assert!(
        step.contains("ok") && step.contains("tor-network.toml"),
        "the tor step bootstraps on the baked network: {step}"
    );
    let first = expect(&mut vm, &format!("tor: first byte from {peer_ip}:7070"));
    let fetched = expect(&mut vm, "fetch    ok");
    assert!(
        fetched.contains(&peer_ip.to_string()),
        "the boot set came from the peer: {fetched}"
    );
    let check = expect(&mut vm, "private  ");
    assert!(
        check.contains("ok"),
        "stage 1's check before kexec: {check}"
    );
    expect(&mut vm, "kexec: starting the target kernel");
    expect(&mut vm, "stage=target");
    expect(&mut vm, "plasmd: private mode: no peers");
    eprintln!(
        "boot_private: Tor boot to the target in {:?}; {boot}; {first}",
        started.elapsed()
    );
    drop(vm);
    drop(tcpdump);

    // Every IPv4 packet the VM sent, DHCP aside, went to a Tor relay; not
    // one to the peer, and no DNS and no mDNS.
    let relays: Vec<String> = net.relay_ips().iter().map(ToString::to_string).collect();
    let sent = read_pcap(
        &pcap,
        &format!("ether src {mac} and ip and not (udp port 67 or udp port 68)"),
    );
    let mut to_relays = 0;
    for line in sent.lines().filter(|l| l.contains(" > ")) {
        let dst = line
            .split(" > ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|a| a.rsplit_once('.').map(|(ip, _port)| ip.to_string()));
        let Some(dst) = dst else { continue };
        assert!(
            relays.contains(&dst),
            "the VM sent a packet to {dst}, not a Tor relay ({relays:?}):\n{line}"
        );
        to_relays += 1;
    }
    assert!(
        to_relays > 0,
        "the capture saw no Tor traffic from {mac}:\n{sent}"
    );
    let peer_pkts = read_pcap(&pcap, &format!("ether src {mac} and dst host {peer_ip}"));
    assert!(
        peer_pkts.trim().is_empty(),
        "the VM talked to the peer directly:\n{peer_pkts}"
    );
    let mdns = read_pcap(&pcap, MDNS_FILTER);
    assert!(mdns.trim().is_empty(), "mDNS left the VM:\n{mdns}");
    assert!(dhcpd.exited().is_none(), "udhcpd died during the test");
}
