#![cfg(feature = "quic")]
//! The DHT over QUIC alone: three nodes on loopback listening only on
//! `/udp/0/quic-v1` bootstrap, publish a provider record, find it, and get
//! the provider's HTTP address.
use std::time::Duration;

use discovery::dht::{Dht, DhtConfig, Identity};

fn config(bootstrap: Vec<libp2p::Multiaddr>, http_port: u16) -> DhtConfig {
    DhtConfig {
        identity: Identity::Ephemeral,
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        http_port: Some(http_port),
        query_timeout: Duration::from_secs(5),
        allow_loopback: true,
        ..DhtConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_record_over_quic() {
    let boot = Dht::start(config(vec![], 1)).await.unwrap();
    let addr = boot.listen_addrs().await.unwrap()[0].clone();
    assert!(addr.to_string().contains("/quic-v1"), "{addr}");
    let addr = addr.with(libp2p::multiaddr::Protocol::P2p(boot.peer_id()));
    let seed = Dht::start(config(vec![addr.clone()], 8088)).await.unwrap();
    let finder = Dht::start(config(vec![addr], 2)).await.unwrap();
    seed.bootstrap().await.unwrap();
    finder.bootstrap().await.unwrap();
    let digest = [0x51; 32];
    seed.provide(digest).await.unwrap();
    let mut found = finder
        .find_providers(digest, Duration::from_secs(5))
        .await
        .unwrap();
    let p = found.next().await.expect("provider over QUIC");
    assert_eq!(p.id, seed.peer_id().to_string());
    assert_eq!(p.addrs, vec!["127.0.0.1:8088".parse().unwrap()]);
    assert!(found.next().await.is_none());
    seed.shutdown().await;
    finder.shutdown().await;
    boot.shutdown().await;
}
