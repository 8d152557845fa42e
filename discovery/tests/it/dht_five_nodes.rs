//! A Kademlia DHT of five nodes, each in its own network namespace on one
//! bridge (198.18.0.0/24). One node holds an artifact, serves it over HTTP
//! (`fetcher::serve`) and publishes a provider record for its SHA-256
//! multihash; another node looks the providers up, gets the HTTP address,
//! and fetches and verifies the artifact with `fetcher`.
use super::common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use discovery::dht::{Dht, DhtConfig, Identity};
use libp2p::Multiaddr;

fn config(lan: &Lan, i: usize, bootstrap: Vec<Multiaddr>, identity: Identity) -> DhtConfig {
    DhtConfig {
        identity,
        listen: vec![format!("/ip4/{}/tcp/4001", lan.ipv4(i)).parse().unwrap()],
        bootstrap,
        http_port: Some(8080),
        query_timeout: Duration::from_secs(10),
        ..DhtConfig::default()
    }
}

/// Waits (bounded) until the routing table holds at least `n` peers.
async fn wait_routing(dht: &Dht, n: usize) -> usize {
    let start = Instant::now();
    loop {
        let size = dht.routing_table_size().await.expect("dht alive");
        if size >= n || start.elapsed() > Duration::from_secs(10) {
            return size;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_stop(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // Bounded: the test sets it, or 60 s pass.
    let _ = tokio::time::timeout(Duration::from_secs(60), stop.wait_for(|s| *s)).await;
}

#[test]
fn five_node_dht_publish_find_and_fetch() {
    let lan = lan(5, true);
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let spec = fetcher::ObjectSpec::of_bytes(&data, 1 << 20);
    let digest = spec.sha256.0;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Node 0: the bootstrap node.
    let (boot_tx, boot_rx) = mpsc::channel();
    let cfg0 = config(&lan, 0, vec![], Identity::Ephemeral);
    let mut stop = stop_rx.clone();
    let n0 = in_ns(&lan.nodes[0], move || async move {
        let dht = Dht::start(cfg0).await.expect("start node 0");
        let addrs = dht.listen_addrs().await.unwrap();
        let addr = addrs[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(dht.peer_id()));
        boot_tx.send(addr).unwrap();
        wait_stop(&mut stop).await;
    });
    let boot = boot_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("bootstrap node did not start");

    // Nodes 1 and 3: plain DHT members.
    let mut members = Vec::new();
    for i in [1, 3] {
        let cfg = config(&lan, i, vec![boot.clone()], Identity::Ephemeral);
        let mut stop = stop_rx.clone();
        members.push(in_ns(&lan.nodes[i], move || async move {
            let dht = Dht::start(cfg).await.expect("start member");
            dht.bootstrap().await.expect("bootstrap");
            wait_stop(&mut stop).await;
        }));
    }

    // Node 2: holds the artifact, serves it, provides it.
    let cache = tmp.path().join("seed");
    fetcher::Cas::open(&cache)
        .unwrap()
        .insert_bytes(&data)
        .unwrap();
    let key_path = tmp.path().join("seed-identity.key");
    let cfg2 = config(
        &lan,
        2,
        vec![boot.clone()],
        Identity::Persistent(key_path.clone()),
    );
    let (provided_tx, provided_rx) = tokio::sync::oneshot::channel();
    let mut stop = stop_rx.clone();
    let n2 = in_ns(&lan.nodes[2], move || async move {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:8080")
            .await
            .expect("bind http");
        let (srv_stop_tx, srv_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(fetcher::serve(
            listener,
            fetcher::ServerConfig::new(cache),
            async {
                let _ = srv_stop_rx.await;
            },
        ));
        let dht = Dht::start(cfg2).await.expect("start provider");
        dht.bootstrap().await.expect("bootstrap");
        let peers = wait_routing(&dht, 2).await;
        let t = Instant::now();
        dht.provide(digest).await.expect("provide");
        eprintln!(
            "provider: routing table {peers}, record published in {:?}",
            t.elapsed()
        );
        provided_tx.send(dht.peer_id()).unwrap();
        wait_stop(&mut stop).await;
        let _ = srv_stop_tx.send(());
        let _ = server.await;
    });

    // Node 4: finds the provider and fetches through fetcher.
    let cfg4 = config(&lan, 4, vec![boot.clone()], Identity::Ephemeral);
    let client_cache = tmp.path().join("client");
    let finder = in_ns(&lan.nodes[4], move || async move {
        let dht = Dht::start(cfg4).await.expect("start finder");
        dht.bootstrap().await.expect("bootstrap");
        let provider_id = tokio::time::timeout(Duration::from_secs(30), provided_rx)
            .await
            .expect("provider did not publish within 30 s")
            .expect("provider thread failed");
        let t = Instant::now();
        let mut found = dht
            .find_providers(digest, Duration::from_secs(10))
            .await
            .expect("find");
        let peer = found.next().await.expect("no provider found");
        let lookup = t.elapsed();
        let rest: Vec<_> = {
            let mut v = Vec::new();
            while let Some(p) = found.next().await {
                v.push(p);
            }
            v
        };
        let url: url::Url = peer.http_urls()[0].parse().unwrap();
        let f = fetcher::Fetcher::new(
            fetcher::Cas::open(&client_cache).unwrap(),
            fetcher::FetchOptions::default(),
        )
        .unwrap();
        let source = fetcher::Source::phase_peer(&url, &spec.sha256).unwrap();
        let report = f
            .fetch(&spec, vec![source], None)
            .await
            .expect("fetch from the DHT provider");
        let got = std::fs::read(&report.path).unwrap();
        (provider_id, peer, rest, lookup, got)
    });

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| join("finder", finder)));
    stop_tx.send(true).unwrap();
    let (provider_id, peer, rest, lookup, got) =
        result.unwrap_or_else(|p| std::panic::resume_unwind(p));
    join("node-2", n2);
    join("node-0", n0);
    for m in members {
        join("member", m);
    }

    eprintln!(
        "finder: provider {} at {:?} found in {lookup:?}",
        peer.id, peer.addrs
    );
    assert_eq!(peer.id, provider_id.to_string());
    assert_eq!(peer.source, discovery::Source::Dht);
    assert_eq!(
        peer.addrs,
        vec![std::net::SocketAddr::from((lan.ipv4(2), 8080))]
    );
    assert!(rest.is_empty(), "only one node provides, got also {rest:?}");
    assert!(got == data, "fetched bytes differ from the artifact");
    // The provider's identity persisted to its key file.
    let key = discovery::dht::load_or_create_identity(&key_path).unwrap();
    assert_eq!(key.public().to_peer_id(), provider_id);
}
