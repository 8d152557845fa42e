//! A peer that is itself still downloading (a live writer holding chunks 0
//! and 2 of 5) is used for exactly the chunks it has: next to a complete
//! peer the fetch takes what it can from each; alone, the fetch fails
//! within its stall limit instead of waiting for the whole deadline.
use super::common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, FetchOptions, Fetcher, ObjectSpec, Sha256Digest};

fn half_done(
    root: &std::path::Path,
    data: &[u8],
    spec: &ObjectSpec,
) -> (Cas, fetcher::cas::PartialObject) {
    let cas = Cas::open(root.join("partial-node")).unwrap();
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(spec, lock).unwrap();
    for i in [0usize, 2] {
        let (a, b) = spec.chunk_range(i);
        let c = &data[a as usize..b as usize];
        partial.write_chunk(i, c, &Sha256Digest::of(c)).unwrap();
    }
    (cas, partial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_peer_serves_its_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(5 << 20, 1 << 20, 111);
    let (pcas, _writer) = half_done(tmp.path(), &data, &spec);
    let partial_peer = Peer::serve_cache(pcas.dir());
    let full = Peer::serve_cache(&seeded_cache(tmp.path(), "full", &data));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(
        cas,
        FetchOptions {
            connections_per_peer: 1,
            ..quick_options()
        },
    )
    .unwrap();
    let r = f
        .fetch(
            &spec,
            vec![partial_peer.source(&spec), full.source(&spec)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), data);
    assert!(r.peers[0].chunks <= 2, "{r:?}");
    assert!(r.peers[0].dropped.is_none() && !r.peers[0].bad, "{r:?}");
    assert_eq!(r.peers[0].chunks + r.peers[1].chunks, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_peer_alone_fails_within_the_stall_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(5 << 20, 1 << 20, 112);
    let (pcas, _writer) = half_done(tmp.path(), &data, &spec);
    let partial_peer = Peer::serve_cache(pcas.dir());
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let opts = FetchOptions {
        read_timeout: Duration::from_secs(1),
        ..quick_options()
    };
    let f = Fetcher::new(cas.clone(), opts).unwrap();
    let start = Instant::now();
    let err = f
        .fetch(&spec, vec![partial_peer.source(&spec)], None)
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("3 of 5 chunks"), "{err}");
    // What it did get is kept for a later resume; nothing is visible.
    assert!(!cas.contains(&spec.sha256));
    let again = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let full = Peer::serve_cache(&seeded_cache(tmp.path(), "full", &data));
    let r = again
        .fetch(&spec, vec![full.source(&spec)], None)
        .await
        .unwrap();
    assert_eq!(r.resumed_chunks, 2);
}
