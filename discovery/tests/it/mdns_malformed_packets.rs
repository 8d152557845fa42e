//! Hostile traffic on the link: hand-made mDNS answers for `_phase._tcp`
//! with malformed TXT records, truncated and mutated packets (a
//! deterministic fuzz of a valid answer), and oversized datagrams. None of it
//! may crash the responder or yield a peer; an honest peer on the same LAN is
//! still found, during and after the flood.
use super::common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use discovery::mdns::{BrowseFilter, Mdns, MdnsConfig, Rejection};

fn name(out: &mut Vec<u8>, n: &str) {
    for label in n.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn record(out: &mut Vec<u8>, owner: &str, rtype: u16, class: u16, rdata: &[u8]) {
    name(out, owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&120u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// A complete unsolicited mDNS answer: PTR, SRV, TXT (raw strings) and A.
fn answer(instance: &str, txt: &[Vec<u8>], ip: Ipv4Addr) -> Vec<u8> {
    let full = format!("{instance}._phase._tcp.local.");
    let host = format!("{instance}.local.");
    let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let mut ptr = Vec::new();
    name(&mut ptr, &full);
    record(&mut p, "_phase._tcp.local.", 12, 1, &ptr);
    let mut srv = vec![0, 0, 0, 0, 0x1f, 0x90];
    name(&mut srv, &host);
    record(&mut p, &full, 33, 0x8001, &srv);
    let mut t = Vec::new();
    for s in txt {
        t.push(s.len() as u8);
        t.extend_from_slice(s);
    }
    record(&mut p, &full, 16, 0x8001, &t);
    record(&mut p, &host, 1, 0x8001, &ip.octets());
    p
}

fn txt_with_root(id: &str, root: discovery::RootTag) -> Vec<Vec<u8>> {
    let root = root.to_string();
    vec![
        b"v=1".to_vec(),
        format!("id={id}").into_bytes(),
        format!("root={root}").into_bytes(),
        b"ts=3".to_vec(),
        b"ch=stable".to_vec(),
    ]
}

fn good_txt(id: &str) -> Vec<Vec<u8>> {
    txt_with_root(id, root(1))
}

/// Malformed TXT variants, each under its own instance name.
fn malformed() -> Vec<(String, Vec<Vec<u8>>)> {
    let mut cases = Vec::new();
    let mut with = |tag: &str, edit: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let mut t = good_txt(&format!("evil-{tag}"));
        edit(&mut t);
        cases.push((format!("evil-{tag}"), t));
    };
    with("badroot", &|t| t[2] = b"root=zzzzzzzzzzzzzzzz".to_vec());
    with("shortroot", &|t| t[2] = b"root=abc".to_vec());
    with("noroot", &|t| {
        t.remove(2);
    });
    with("badver", &|t| t[0] = b"v=99".to_vec());
    with("badts", &|t| t[3] = b"ts=-5".to_vec());
    with("hugets", &|t| t[3] = b"ts=184467440737095516150".to_vec());
    with("badch", &|t| t[4] = b"ch=../../etc".to_vec());
    with("badport", &|t| t.push(b"port=70000".to_vec()));
    with("nonutf8", &|t| {
        t[1] = vec![b'i', b'd', b'=', 0xff, 0xfe, 0x00]
    });
    with("spaceid", &|t| t[1] = b"id=a b".to_vec());
    with("longid", &|t| {
        t[1] = [b"id=".as_slice(), &[b'x'; 250]].concat()
    });
    with("manykeys", &|t| {
        for i in 0..40 {
            t.push(format!("k{i}=v").into_bytes());
        }
    });
    with("noval", &|t| t[1] = b"id".to_vec());
    cases
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn flood(sock: &UdpSocket, to: SocketAddr) -> usize {
    let mut sent = 0;
    let mut send = |p: &[u8]| {
        // A full send buffer just drops a packet; that is fine here.
        if sock.send_to(p, to).is_ok() {
            sent += 1;
        }
    };
    let evil_ip = Ipv4Addr::new(198, 18, 0, 99);
    for (inst, txt) in malformed() {
        send(&answer(&inst, &txt, evil_ip));
    }
    // Let the malformed answers be processed before the fuzz noise.
    std::thread::sleep(Duration::from_millis(200));
    // Deterministic fuzz: a valid answer, truncated and mutated. It names
    // another fleet's root: mDNS is unauthenticated, so a mutation that still
    // parses is a well-formed (forged) peer, which the root check drops.
    let base = answer("evil-fuzz", &txt_with_root("evil-fuzz", root(3)), evil_ip);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for i in 0..600 {
        let mut p = base.clone();
        match i % 3 {
            0 => p.truncate((rng.next() as usize) % base.len()),
            1 => {
                for _ in 0..1 + rng.next() % 8 {
                    let at = (rng.next() as usize) % p.len();
                    p[at] = rng.next() as u8;
                }
            }
            _ => {
                // Compression pointers aimed anywhere, including loops.
                let at = 12 + (rng.next() as usize) % (p.len() - 13);
                p[at] = 0xc0;
                p[at + 1] = rng.next() as u8;
            }
        }
        send(&p);
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Oversized: a 9000-byte answer with a giant TXT, and a 60 KiB datagram
    // of garbage (both fragmented on a 1500-byte link).
    let mut big_txt = good_txt("evil-big");
    for _ in 0..35 {
        big_txt.push([b"x=".as_slice(), &[b'y'; 250]].concat());
    }
    send(&answer("evil-big", &big_txt, evil_ip));
    let junk: Vec<u8> = (0..60_000).map(|_| rng.next() as u8).collect();
    send(&junk);
    let mut header_lies = base.clone();
    header_lies[7] = 0xff; // 255 answers announced, 4 present
    header_lies[5] = 0xff; // and 255 questions
    send(&header_lies);
    sent
}

#[test]
fn malformed_txt_and_oversized_packets_are_ignored() {
    let lan = lan(3, true);
    let attacker_ns = lan.nodes[2].clone();
    let honest = lan_nodes(&lan, true).remove(1);
    // The honest peer advertises and browses too (so it is also under fire).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let honest = spawn_mdns_node(
        MdnsNode {
            want: usize::MAX,
            deadline: Duration::from_secs(6),
            ..honest
        },
        done.clone(),
        2,
    );

    let (browsing_tx, browsing_rx) = std::sync::mpsc::channel::<()>();
    let attacker = in_ns(&attacker_ns, move || async move {
        // Start once the browser listens, so every round reaches it.
        browsing_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("browser did not start");
        let sock = UdpSocket::bind("0.0.0.0:5353").expect("bind 5353 in the attacker namespace");
        sock.set_multicast_ttl_v4(255).unwrap();
        let to: SocketAddr = "224.0.0.251:5353".parse().unwrap();
        let mut sent = 0;
        // Three rounds over ~3 s, so the browse below sees them while it runs.
        for _ in 0..3 {
            sent += flood(&sock, to);
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        sent
    });

    let browser = in_ns(&lan.nodes[0].clone(), || async move {
        let config = MdnsConfig {
            interfaces: vec!["eth0".into()],
            ..MdnsConfig::default()
        };
        let mdns = Mdns::new(&config).expect("mdns");
        let filter = BrowseFilter {
            root: Some(root(1)),
            channel: None,
            self_id: Some("node-0".into()),
        };
        let mut first = mdns
            .browse(filter.clone(), Duration::from_secs(5))
            .expect("browse");
        browsing_tx.send(()).unwrap();
        let mut peers = Vec::new();
        while let Some(p) = first.next().await {
            peers.push(p);
        }
        let stats = first.stats().clone();
        drop(first);
        // The responder survived: a second browse still works and finds the
        // honest peer.
        let mut again = mdns
            .browse(filter, Duration::from_secs(5))
            .expect("browse again");
        let second = again.next().await;
        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (peers, stats, second)
    });

    let sent = join("attacker", attacker);
    let (peers, stats, second) = join("browser", browser);
    let honest = join("honest", honest);
    eprintln!(
        "attacker sent {sent} packets; browser stats: resolved {} rejected {} accepted {}",
        stats.resolved, stats.rejected, stats.accepted
    );

    let ids: Vec<_> = peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["node-1"], "only the honest peer may be yielded");
    assert_eq!(
        second.map(|p| p.id).as_deref(),
        Some("node-1"),
        "responder did not survive the flood"
    );
    assert!(
        honest.peers.is_empty(),
        "honest node found {:?}",
        honest.peers
    );
    assert!(sent > 1000, "attacker only sent {sent} packets");
    // The malformed answers did reach the browser and were rejected by our
    // TXT validation (not just dropped by the network).
    let txt_rejections: Vec<_> = stats
        .rejections
        .iter()
        .filter(|(n, why)| n.starts_with("evil-") && matches!(why, Rejection::Txt(_)))
        .map(|(n, _)| n.split('.').next().unwrap_or_default().to_owned())
        .collect();
    for want in [
        "evil-badroot",
        "evil-noroot",
        "evil-badver",
        "evil-badts",
        "evil-badch",
        "evil-badport",
        "evil-nonutf8",
    ] {
        assert!(
            txt_rejections.iter().any(|n| n == want),
            "{want} not rejected; rejections: {:?}",
            stats.rejections
        );
    }
}
