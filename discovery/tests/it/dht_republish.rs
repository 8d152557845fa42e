//! Provider records are re-published on schedule: with a 2 s record TTL and
//! a 500 ms re-publish interval, a record is still found well after its TTL;
//! once the provider stops providing (no more re-publishing) it expires.
//! Three nodes on loopback only.
use std::time::{Duration, Instant};

use discovery::dht::{Dht, DhtConfig, Identity};

fn config(bootstrap: Vec<libp2p::Multiaddr>) -> DhtConfig {
    DhtConfig {
        identity: Identity::Ephemeral,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        http_port: Some(8080),
        republish_interval: Duration::from_millis(500),
        record_ttl: Duration::from_secs(2),
        query_timeout: Duration::from_secs(5),
        allow_loopback: true,
        ..DhtConfig::default()
    }
}

async fn providers(dht: &Dht, digest: [u8; 32]) -> Vec<String> {
    let mut s = dht
        .find_providers(digest, Duration::from_secs(5))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(p) = s.next().await {
        out.push(p.id);
    }
    out
}

/// Looks up `digest` from `dht` (every 100 ms) until `done` holds for the
/// providers found, at most `within`: what was found last and how long it
/// took.
async fn look_until(
    dht: &Dht,
    digest: [u8; 32],
    done: impl Fn(&[String]) -> bool,
    within: Duration,
) -> (Vec<String>, Duration) {
    let start = Instant::now();
    loop {
        let found = providers(dht, digest).await;
        if done(&found) {
            return (found, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "still {found:?} after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_record_is_republished_then_expires_after_stop() {
    let boot = Dht::start(config(vec![])).await.unwrap();
    let addr = boot.listen_addrs().await.unwrap()[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(boot.peer_id()));
    let seed = Dht::start(config(vec![addr.clone()])).await.unwrap();
    let finder = Dht::start(config(vec![addr])).await.unwrap();
    seed.bootstrap().await.unwrap();
    finder.bootstrap().await.unwrap();
    let digest = [0x42; 32];
    seed.provide(digest).await.unwrap();
    let seed_id = seed.peer_id().to_string();
    // `provide` returns once ADD_PROVIDER has gone out to the closest
    // nodes; it is a one-way message, so a store may take it a moment
    // later (and the finder may learn of the seed a moment later too).
    // The first lookup therefore looks again, for at most 5 s.
    let (found, _) = look_until(&finder, digest, |f| !f.is_empty(), Duration::from_secs(5)).await;
    assert_eq!(found, vec![seed_id.clone()]);
    // The record is now stored; from here on a single lookup must find it.

    // Past the TTL, alive only because it is re-published.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        providers(&finder, digest).await,
        vec![seed_id.clone()],
        "record not re-published"
    );

    // The seed stops; the remote copies expire within the TTL. The seed
    // keeps running (so the lookup would still reach it), but no longer
    // lists itself as a provider.
    seed.stop_providing(digest).await.unwrap();
    let (_, took) = look_until(&finder, digest, |f| f.is_empty(), Duration::from_secs(8)).await;
    eprintln!("record gone {took:?} after stop_providing");
    seed.shutdown().await;
    finder.shutdown().await;
    boot.shutdown().await;
}
