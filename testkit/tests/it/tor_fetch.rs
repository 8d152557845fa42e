//! `phase fetch` over a private Tor network (testkit::tornet), with the
//! real `phase` binary (PHASE_BIN) in network namespaces:
//!
//! (a) `--tor` (embedded arti pointed at the network with `--tor-network`)
//!     from a `phase serve` peer on the same LAN: the bytes verify, and an
//!     nftables counter in the client's namespace shows zero packets to
//!     anything but the Tor relays (the peer is directly reachable, and
//!     never contacted);
//! (b) the same through a Debian `tor` client's SOCKS port (`--socks5`);
//! (c) `phase serve --onion` in front of a peer that listens on loopback
//!     only, fetched by its `.onion` name with `--tor`: the bytes verify,
//!     and again nothing but the relays is contacted.
//!
//! The network takes ~10-30 s to vote its first consensus; the parts share
//! it, in one test, so it is built once and torn down at the end.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::fixtures::{phase_bin, serve_phase};
use testkit::netns;
use testkit::tornet::{TorNet, RELAYS};

const CLIENT: usize = 0;
const PEER: usize = 1;

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

fn random_file(path: &Path, len: usize, seed: u8) {
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, data).expect("write test file");
}

/// Runs `phase args` inside `ns`, killed after `secs`: (success, stdout, stderr).
fn phase_in(ns: &str, secs: u64, args: &[String]) -> (bool, String, String) {
    let out = netns::command(ns, "timeout")
        .args(["-s", "KILL", &secs.to_string()])
        .arg(phase_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run phase");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The client namespace's output filter: loopback and the relays are
/// accepted and counted; everything else is counted (and accepted, so a
/// leak shows up as a number instead of a timeout).
fn install_counters(ns: &str, relays: &[std::net::Ipv4Addr], peer: std::net::Ipv4Addr) {
    let set: Vec<String> = relays.iter().map(|r| r.to_string()).collect();
    let rules = format!(
        "table inet phase_tor {{\n\
           chain out {{\n\
             type filter hook output priority 0; policy accept;\n\
             oif \"lo\" accept\n\
             ip daddr {{ {} }} counter accept comment \"relays\"\n\
             ip6 nexthdr icmpv6 ip6 saddr fe80::/10 counter accept comment \"nd\"\n\
             ip daddr {peer} counter comment \"peer\"\n\
             counter comment \"other\"\n\
           }}\n\
         }}\n",
        set.join(", ")
    );
    let path = std::env::temp_dir().join(format!("phase-tor-nft-{}.nft", std::process::id()));
    std::fs::write(&path, rules).expect("write nft rules");
    netns::exec(ns, &["nft", "-f", path.to_str().unwrap_or("")]).expect("nft rules");
    let _ = std::fs::remove_file(path);
}

/// Packets counted by the rule with `comment`.
fn counter(ns: &str, comment: &str) -> u64 {
    let out =
        netns::exec(ns, &["nft", "list", "chain", "inet", "phase_tor", "out"]).expect("nft list");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment} in {text}"));
    line.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {line}"))
}

fn reset_counters(ns: &str) {
    netns::exec(
        ns,
        &["nft", "reset", "counters", "table", "inet", "phase_tor"],
    )
    .expect("nft reset counters");
}

/// Checks a `--json` fetch report against the published files.
fn check_report(json: &str, t: &Path) {
    let report: serde_json::Value = serde_json::from_str(json).expect("fetch --json output");
    let items = report.as_array().expect("array");
    assert_eq!(items.len(), 4, "{json}");
    for it in items {
        let name = it["name"].as_str().expect("name");
        let kind = name.rsplit('/').next().unwrap_or("");
        let path = it["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} failed: {it}"));
        let got = std::fs::read(path).expect("fetched object");
        assert_eq!(
            got,
            std::fs::read(t.join(kind)).expect("published file"),
            "{name}"
        );
    }
}

struct Leak {
    relays: u64,
    peer: u64,
    other: u64,
}

fn leak(ns: &str) -> Leak {
    Leak {
        relays: counter(ns, "relays"),
        peer: counter(ns, "peer"),
        other: counter(ns, "other"),
    }
}

#[test]
fn fetch_over_a_private_tor_network() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let phase = |args: &[&str]| {
        let out = Command::new(phase_bin())
            .args(args)
            .output()
            .expect("run phase");
        assert!(
            out.status.success(),
            "phase {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    phase(&["keygen", "--out", &s(&t.join("keys"))]);
    random_file(&t.join("kernel"), 1 << 20, 1);
    random_file(&t.join("initramfs"), 300 << 10, 2);
    random_file(&t.join("rootfs"), 2 << 20, 3);
    phase(&[
        "publish",
        "--repo",
        &s(&t.join("repo")),
        "--keys",
        &s(&t.join("keys")),
        "--kernel",
        &s(&t.join("kernel")),
        "--initramfs",
        &s(&t.join("initramfs")),
        "--rootfs",
        &s(&t.join("rootfs")),
        "--cmdline",
        "console=ttyS0",
    ]);
    // The rootfs's dm-verity hash tree is published as a fourth target,
    // stable/x86_64/rootfs.verity: a copy beside the other files, for the
    // comparisons below.
    let tree = std::fs::read_dir(t.join("repo/targets/stable/x86_64"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rootfs.verity"))
        .expect("published rootfs.verity");
    std::fs::copy(tree, t.join("rootfs.verity")).unwrap();
    let root = s(&t.join("keys/1.root.json"));

    let mut net = TorNet::start(2).expect("start the Tor test network");
    let client = net.node(CLIENT).to_string();
    let peer_ip = net.node_ip(PEER);
    let (_peer, _) = serve_phase(
        Some(net.node(PEER)),
        &[
            "--listen".into(),
            format!("{peer_ip}:7070"),
            "--cache".into(),
            s(&t.join("peer-cache")),
            "--repo".into(),
            s(&t.join("repo")),
        ],
        &["phase serve: listening on"],
        20,
    );
    let peer_url = format!("http://{peer_ip}:7070");
    // The peer is directly reachable from the client: a leak would work.
    let (ok, _, err) = phase_in(
        &client,
        60,
        &[
            "fetch".into(),
            "--root".into(),
            root.clone(),
            "--peer".into(),
            peer_url.clone(),
            "--cache".into(),
            s(&t.join("direct")),
            "--quiet".into(),
        ],
    );
    assert!(ok, "direct fetch (control) failed: {err}");

    let consensus = net
        .wait_consensus(Duration::from_secs(120))
        .expect("consensus");
    eprintln!("tor_fetch: consensus after {consensus:?}");
    let netfile = t.join("tor-network.toml");
    net.write_arti_config(&netfile).expect("arti config");
    install_counters(&client, &net.relay_ips(), peer_ip);

    // (a) embedded arti. A network this young may still lack a usable
    // exit in the consensus a client gets: bounded retries.
    let t0 = Instant::now();
    // `phase fetch --tor` through the test network from `peer` into the
    // cache `t/<cache>`, then `more`.
    let tor_fetch = |peer: &str, cache: &str, more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["fetch", "--tor", "--tor-network"].map(String::from).into();
        a.extend([s(&netfile), "--root".into(), root.clone(), "--peer".into()]);
        a.extend([peer.to_owned(), "--cache".into(), s(&t.join(cache))]);
        a.extend(more.iter().map(|m| m.to_string()));
        a
    };
    let arti_args = tor_fetch(&peer_url, "c-arti", &["--tor-timeout", "150", "--json"]);
    let mut attempt = 0;
    let (out, err) = loop {
        attempt += 1;
        let (ok, out, err) = phase_in(&client, 180, &arti_args);
        if ok {
            break (out, err);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120) && attempt < 20,
            "phase fetch --tor failed ({attempt} attempts): {err}\nauth0: {}\nexit: {}",
            net.log_tail(0, 1500),
            net.log_tail(RELAYS - 1, 1500)
        );
        eprintln!(
            "tor_fetch: attempt {attempt} failed, retrying: {}",
            err.lines()
                .rev()
                .find(|l| l.contains("cannot reach"))
                .or(err.lines().next_back())
                .unwrap_or("")
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    eprintln!(
        "tor_fetch: (a) arti fetch in {:?}; stderr:\n{err}",
        t0.elapsed()
    );
    assert!(err.contains("tor: ready after"), "{err}");
    assert!(err.contains("tor: first byte from"), "{err}");
    check_report(&out, t);
    let l = leak(&client);
    assert!(
        l.relays > 0,
        "no packets to the relays: was Tor used at all?"
    );
    assert_eq!(l.peer, 0, "packets went straight to the peer");
    assert_eq!(l.other, 0, "packets to something that is not a Tor relay");

    // A failure through Tor is an error naming Tor, never a direct retry.
    reset_counters(&client);
    let (ok, _, err) = phase_in(
        &client,
        120,
        &tor_fetch(&format!("http://{peer_ip}:7071"), "c-fail", &["--quiet"]),
    );
    assert!(!ok, "a fetch from a closed port succeeded");
    assert!(err.contains("through Tor"), "{err}");
    let l = leak(&client);
    assert_eq!((l.peer, l.other), (0, 0), "a failed Tor fetch went direct");

    // (b) Debian tor's SOCKS port.
    reset_counters(&client);
    let _socks = net
        .socks_client(CLIENT, Duration::from_secs(90))
        .expect("tor SOCKS client");
    let (ok, out, err) = phase_in(
        &client,
        120,
        &[
            "fetch".into(),
            "--socks5".into(),
            "127.0.0.1:9050".into(),
            "--root".into(),
            root.clone(),
            "--peer".into(),
            peer_url.clone(),
            "--cache".into(),
            s(&t.join("c-socks")),
            "--json".into(),
        ],
    );
    assert!(ok, "phase fetch --socks5 failed: {err}");
    check_report(&out, t);
    let l = leak(&client);
    assert!(l.relays > 0, "no packets to the relays");
    assert_eq!(l.peer, 0, "packets went straight to the peer");
    assert_eq!(l.other, 0, "packets to something that is not a Tor relay");
    eprintln!("tor_fetch: (b) done at {:?}", started.elapsed());

    // (c) `phase serve --onion`: a peer reachable ONLY as an onion service
    // (its server listens on loopback), fetched by name through arti.
    reset_counters(&client);
    let (_onion_peer, lines) = serve_phase(
        Some(net.node(PEER)),
        &[
            "--listen".into(),
            "127.0.0.1:7072".into(),
            "--cache".into(),
            s(&t.join("onion-peer-cache")),
            "--repo".into(),
            s(&t.join("repo")),
            "--onion".into(),
            "--tor-network".into(),
            s(&netfile),
            "--tor-dir".into(),
            s(&t.join("onion-tor")),
        ],
        &["phase serve: onion service http://"],
        180,
    );
    let onion = lines[0].rsplit(' ').next().unwrap_or_default().to_string();
    assert!(onion.ends_with(".onion"), "{}", lines[0]);
    // The descriptor is published once the introduction points are up:
    // bounded retries.
    let t1 = Instant::now();
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let (ok, out, err) = phase_in(
            &client,
            150,
            &tor_fetch(&onion, &format!("c-onion-{attempt}"), &["--json"]),
        );
        if ok {
            break out;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(150) && attempt < 15,
            "no fetch from {onion} in {attempt} attempts: {err}"
        );
        eprintln!(
            "tor_fetch: (c) attempt {attempt}: {}",
            err.lines()
                .rev()
                .find(|l| l.contains("cannot reach"))
                .unwrap_or("")
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    eprintln!(
        "tor_fetch: (c) onion fetch after {:?} ({attempt} attempt(s))",
        t1.elapsed()
    );
    check_report(&out, t);
    let l = leak(&client);
    assert!(l.relays > 0, "no packets to the relays");
    assert_eq!(l.peer, 0, "packets went straight to the peer");
    assert_eq!(l.other, 0, "packets to something that is not a Tor relay");

    eprintln!("tor_fetch: all done in {:?}", started.elapsed());
    drop(net);
}
