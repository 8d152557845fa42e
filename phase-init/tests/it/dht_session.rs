//! Stage 1's DHT client (`phase_init::discover::DhtSession`) against a real
//! Kademlia server node in another network namespace: the providers of a
//! digest come back with their HTTP address probed and a `.dht.phase` host
//! name, and a provider already known (by peer id) is counted but not
//! returned again — the rule of the per-artifact lookups after the TUF
//! refresh. The namespaces are made and deleted by the test
//! (`testkit::netns::Lan`, 198.18.0.0/24).

use std::net::SocketAddr;
use std::time::Duration;

use discovery::dht::{Dht, DhtConfig, Identity};
use phase_init::discover::DhtSession;
use testkit::netns::{self, Lan};

#[test]
fn providers_of_a_digest_are_found_once_and_known_ones_are_not_repeated() {
    let lan = Lan::new(2, true).unwrap_or_else(|e| panic!("{e}"));
    let ip = lan.ipv4(0);
    let http: SocketAddr = SocketAddr::new(ip.into(), 7070);
    let digest = [0x5au8; 32];
    let (id_tx, id_rx) = std::sync::mpsc::channel::<String>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Node 0: a Kademlia server providing `digest`, announcing `http`, and
    // a TCP listener there (stage 1 probes the address before using it).
    let server = netns::in_ns(lan.node(0), 1, move || async move {
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .expect("bind http");
        let accept = tokio::spawn(async move {
            for _ in 0..64 {
                if listener.accept().await.is_err() {
                    break;
                }
            }
        });
        let config = DhtConfig {
            identity: Identity::Ephemeral,
            listen: vec![format!("/ip4/{ip}/tcp/4001").parse().expect("multiaddr")],
            http_addrs: vec![http],
            ..DhtConfig::default()
        };
        let dht = Dht::start(config).await.expect("DHT server");
        // No other node yet: the record is stored locally, which is what
        // the server answers lookups from.
        let _ = tokio::time::timeout(Duration::from_secs(5), dht.provide(digest)).await;
        id_tx.send(dht.peer_id().to_string()).expect("send id");
        let _ = tokio::time::timeout(Duration::from_secs(60), stop_rx).await;
        accept.abort();
        dht.shutdown().await;
    });
    let id = id_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server node did not start");
    let bootstrap = format!("/ip4/{ip}/tcp/4001/p2p/{id}");

    // Node 1: stage 1's client, synchronous as in phase-init.
    let client_id = id.clone();
    let client = netns::in_ns(lan.node(1), 0, move || async move {
        std::thread::spawn(move || {
            let addr = phase_init::discover::bootstrap_addr(&bootstrap).expect("bootstrap");
            let session = DhtSession::start(vec![addr], Duration::from_secs(5)).expect("start");
            let first = session.providers(&[digest], &[], 3);
            let again = session.providers(&[digest], &[client_id], 0);
            let nothing = session.providers(&[[0xa5u8; 32]], &[], 0);
            session.close();
            (first, again, nothing)
        })
        .join()
        .expect("client thread")
    });
    let (first, again, nothing) = client.join().expect("client");
    let _ = stop_tx.send(());
    server.join().expect("server");

    assert_eq!(first.providers, 1, "{first:?}");
    assert_eq!(first.new.len(), 1, "{first:?}");
    let p = &first.new[0];
    assert_eq!(p.id, id);
    assert_eq!(p.addr, http);
    assert_eq!(p.source, "dht");
    assert_eq!(p.host, phase_init::discover::dht_host_name(&id, 3));
    assert!(first.problems.is_empty(), "{first:?}");

    assert_eq!(again.providers, 1, "{again:?}");
    assert!(
        again.new.is_empty(),
        "a known provider is not new: {again:?}"
    );

    assert_eq!(nothing.providers, 0, "{nothing:?}");
    assert!(nothing.new.is_empty(), "{nothing:?}");
}
