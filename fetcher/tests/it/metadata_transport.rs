//! The TUF client's transport over peers: byte caps cut oversized
//! ("endless data") answers, a 404 on every peer is `NotFound` (ends root
//! rotation), peers are tried in order, and the cache answers when no peer
//! can.
use super::common;

use common::*;
use fetcher::{Peer as PeerUrl, PeerTransport, ServerConfig};
use verifier::{Transport, TransportError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_not_found_order_and_cache_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let peer_cache = tmp.path().join("peer");
    let meta = peer_cache.join("tuf/metadata");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(meta.join("timestamp.json"), vec![b' '; 100_000]).unwrap();
    std::fs::write(meta.join("2.root.json"), b"{\"from\":\"peer\"}").unwrap();
    let empty = Peer::start(ServerConfig::new(tmp.path().join("empty")));
    let full = Peer::start(ServerConfig::new(&peer_cache));
    let local = tmp.path().join("local-meta");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("3.root.json"), b"{\"from\":\"cache\"}").unwrap();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let peers = vec![
        PeerUrl::parse(empty.url().as_str()).unwrap(),
        PeerUrl::parse(full.url().as_str()).unwrap(),
    ];
    let t = PeerTransport::new(
        client,
        tokio::runtime::Handle::current(),
        peers,
        Some(local),
    );
    let results = tokio::task::spawn_blocking(move || {
        let capped = t.fetch_metadata("timestamp.json", 16_384);
        let second_peer = t.fetch_metadata("2.root.json", 1000);
        let from_cache = t.fetch_metadata("3.root.json", 1000);
        let missing = t.fetch_metadata("4.root.json", 1000);
        let escape = t.fetch_metadata("../secret", 1000);
        (
            capped,
            second_peer,
            from_cache,
            missing,
            escape,
            t.fetched(),
        )
    })
    .await
    .unwrap();
    let (capped, second_peer, from_cache, missing, escape, fetched) = results;
    assert!(
        matches!(capped, Err(TransportError::TooLarge { max: 16_384 })),
        "{capped:?}"
    );
    assert_eq!(second_peer.unwrap(), b"{\"from\":\"peer\"}");
    assert_eq!(from_cache.unwrap(), b"{\"from\":\"cache\"}");
    assert!(
        matches!(missing, Err(TransportError::NotFound)),
        "{missing:?}"
    );
    assert!(
        matches!(escape, Err(TransportError::NotFound)),
        "{escape:?}"
    );
    assert!(fetched.contains_key("2.root.json") && !fetched.contains_key("timestamp.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peers_are_an_error_not_not_found() {
    // A port nothing listens on: a transport failure must not look like
    // "no newer root" to the updater.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let peers = vec![PeerUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()];
    let t = PeerTransport::new(client, tokio::runtime::Handle::current(), peers, None);
    let r = tokio::task::spawn_blocking(move || t.fetch_metadata("2.root.json", 1000))
        .await
        .unwrap();
    match r {
        Err(TransportError::Other(e)) => assert!(e.to_string().contains(&port.to_string()), "{e}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
}
