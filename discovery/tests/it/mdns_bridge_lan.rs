//! Two and five network namespaces on one bridge find each other by mDNS
//! (`_phase._tcp`), over IPv4, and over IPv6 link-local alone (a LAN with no
//! DHCP server), and reach each other over TCP at the addresses found.
use super::common;

use std::time::Instant;

use common::*;

fn check_full_mesh(n: usize, ipv4: bool) {
    let lan = lan(n, ipv4);
    let start = Instant::now();
    let seen = run_mdns_nodes(lan_nodes(&lan, ipv4));
    eprintln!("{n} nodes: full mesh in {:?}", start.elapsed());
    for s in &seen {
        let mut ids: Vec<_> = s.peers.iter().map(|p| p.id.clone()).collect();
        ids.sort();
        let want: Vec<_> = (0..n)
            .map(|i| format!("node-{i}"))
            .filter(|id| *id != s.id)
            .collect();
        assert_eq!(ids, want, "{} found {:?} (stats {:?})", s.id, ids, s.stats);
        for p in &s.peers {
            assert_eq!(p.source, discovery::Source::Mdns);
            assert_eq!(p.root, Some(root(1)));
            assert_eq!(p.channel.as_deref(), Some("stable"));
            assert_eq!(p.timestamp_version, Some(7));
            let i: usize = p.id["node-".len()..].parse().unwrap();
            if ipv4 {
                assert_eq!(
                    p.addrs[0],
                    std::net::SocketAddr::from((lan.ipv4(i), 8080)),
                    "{p:?}"
                );
            }
            if !ipv4 {
                assert!(
                    p.addrs
                        .iter()
                        .all(|a| matches!(a, std::net::SocketAddr::V6(v6)
                        if v6.ip().segments()[0] == 0xfe80 && v6.scope_id() != 0)),
                    "want only scoped IPv6 link-local addresses for {}: {:?}",
                    p.id,
                    p.addrs
                );
            }
            assert!(p.found_after < std::time::Duration::from_secs(15));
        }
        let mut greetings = s.greetings.clone();
        greetings.sort();
        let want: Vec<_> = want_ids(n, &s.id)
            .iter()
            .map(|id| format!("phase {id}"))
            .collect();
        assert_eq!(
            greetings, want,
            "{} could not reach every peer it found",
            s.id
        );
    }
    let first = seen
        .iter()
        .flat_map(|s| s.peers.iter())
        .map(|p| p.found_after)
        .min()
        .unwrap();
    eprintln!("{n} nodes: time to first peer {first:?}");
}

fn want_ids(n: usize, me: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("node-{i}"))
        .filter(|id| id != me)
        .collect()
}

#[test]
fn two_namespaces_on_a_bridge_find_each_other() {
    check_full_mesh(2, true);
}

#[test]
fn five_namespaces_on_a_bridge_find_each_other() {
    check_full_mesh(5, true);
}

#[test]
fn ipv6_link_local_only_lan_finds_and_reaches_peers() {
    check_full_mesh(3, false);
}
