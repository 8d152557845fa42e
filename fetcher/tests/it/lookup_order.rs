//! `fetcher::Lookup` finds a verified target in order: the local CAS, then
//! the read-only caches, then the peers (a real peer server on loopback);
//! what ends in the local CAS has its version recorded; with no cache
//! holding it and no peer, the lookup fails with `NoPeers` and leaves no
//! partial download behind.
use super::common;

use common::*;
use fetcher::{Cas, FetchError, Fetcher, Lookup, Origin, Peer as PeerUrl, TargetObject};

fn target(data: &[u8], chunk: u64) -> TargetObject {
    let t = verifier::Target {
        name: "jobs/hello.wasm".into(),
        length: data.len() as u64,
        hashes: [("sha256".to_owned(), verifier::digest::sha256_hex(data))].into(),
        custom: Some(serde_json::json!({
            "version": "7",
            "chunks": verifier::Chunks::of(data, chunk),
        })),
        role: "targets".into(),
    };
    TargetObject::new(&t, true).unwrap()
}

fn lookup(local: &Cas) -> Lookup {
    Lookup::new(Fetcher::new(local.clone(), quick_options()).unwrap())
}

fn recorded(cas: &Cas, name: &str) -> Vec<String> {
    cas.refs()
        .unwrap()
        .targets
        .get(name)
        .map(|v| v.iter().map(|e| e.version.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cas_first_then_cache_then_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = object(3 << 20, 1 << 20, 16);
    let t = target(&data, 1 << 20);
    let cache = seeded_cache(tmp.path(), "stick", &data);
    let seed = Peer::serve_cache(&seeded_cache(tmp.path(), "seed", &data));
    let peers = vec![PeerUrl::parse(seed.url().as_str()).unwrap()];

    // Not local, in the read-only cache: the cache, although a peer has it.
    let local = Cas::open(tmp.path().join("local")).unwrap();
    let l = lookup(&local)
        .with_caches([tmp.path().join("empty"), cache.clone()])
        .with_peers(peers.clone());
    let found = l.find(&t, None, None).await.unwrap();
    assert!(matches!(&found.origin, Origin::Cache(dir) if *dir == cache));
    assert_eq!(found.path, fetcher::cas::object_in(&cache, &t.spec.sha256));
    assert!(found.was_held());
    assert!(
        !local.contains(&t.spec.sha256),
        "a cache hit copies nothing"
    );
    assert!(recorded(&local, &t.name).is_empty());

    // In neither: fetched from the peer into the local CAS, version kept.
    let l = lookup(&local).with_peers(peers.clone());
    let found = l.find(&t, None, None).await.unwrap();
    let Origin::Peers(report) = &found.origin else {
        panic!("expected a fetch, got {:?}", found.origin);
    };
    assert_eq!(report.peers.iter().map(|p| p.bytes).sum::<u64>(), 3 << 20);
    assert_eq!(found.path, local.object_path(&t.spec.sha256));
    assert_eq!(std::fs::read(&found.path).unwrap(), data);
    assert!(found.ref_error.is_none());
    assert_eq!(recorded(&local, &t.name), ["7"]);

    // Now local: the local CAS wins over the cache and the peer.
    let l = lookup(&local)
        .with_caches([cache.clone()])
        .with_peers(peers);
    let found = l.find(&t, None, None).await.unwrap();
    assert!(matches!(found.origin, Origin::Local), "{:?}", found.origin);
    assert_eq!(found.path, local.object_path(&t.spec.sha256));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nowhere_and_no_peer_is_no_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = object(100_000, 64 << 10, 17);
    let t = target(&data, 64 << 10);
    let local = Cas::open(tmp.path().join("local")).unwrap();
    let l = lookup(&local).with_caches([tmp.path().join("missing")]);
    assert!(l.held(&t.spec).is_none());
    let err = l.find(&t, None, None).await.unwrap_err();
    assert!(matches!(err, FetchError::NoPeers(d) if d == t.spec.sha256));
    assert!(local.partial_status(&t.spec.sha256).is_none());
    let shard = local.object_path(&t.spec.sha256);
    let shard = shard.parent().unwrap();
    assert!(
        !shard.exists() || std::fs::read_dir(shard).unwrap().next().is_none(),
        "no partial file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_are_not_recorded_when_told_not_to() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = object(10_000, 64 << 10, 18);
    let t = target(&data, 64 << 10);
    let local = Cas::open(tmp.path().join("local")).unwrap();
    local.insert_bytes(&data).unwrap();
    let found = lookup(&local)
        .record_refs(false)
        .find(&t, None, None)
        .await
        .unwrap();
    assert!(matches!(found.origin, Origin::Local));
    assert!(recorded(&local, &t.name).is_empty());
}
