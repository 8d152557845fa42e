//! A peer whose cache holds a corrupted copy (one flipped bit per chunk it
//! serves) next to an honest peer: the download succeeds from the honest
//! one, the bad peer is evicted at its first bad chunk and reported.
use super::common;

use std::time::Duration;

use common::*;
use fetcher::{Cas, FetchError, Fetcher};

fn corrupt_cache(
    root: &std::path::Path,
    data: &[u8],
    spec: &fetcher::ObjectSpec,
) -> std::path::PathBuf {
    let dir = root.join("bad");
    let cas = Cas::open(&dir).unwrap();
    let mut bad = data.to_vec();
    for i in (0..bad.len()).step_by(spec.chunks.size as usize) {
        bad[i + 7] ^= 0x10;
    }
    // Stored under the honest digest, as a corrupted disk or a liar would.
    let path = cas.object_path(&spec.sha256);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bad).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_peer_wins_and_bad_peer_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(24 << 20, 1 << 20, 1);
    let bad = Peer::serve_cache(&corrupt_cache(tmp.path(), &data, &spec));
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        f.fetch(&spec, vec![bad.source(&spec), good.source(&spec)], None),
    )
    .await
    .expect("bounded")
    .expect("fetch succeeds from the honest peer");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let b = &report.peers[0];
    assert!(b.bad, "bad peer flagged: {report:?}");
    assert_eq!(b.bytes, 0, "no byte of the bad peer was kept");
    assert!(b.dropped.as_deref().unwrap().contains("bad chunk"), "{b:?}");
    assert_eq!(report.peers[1].bytes, spec.length);
    assert!(!report.peers[1].bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_bad_peers_fail_clearly_and_leave_nothing_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(6 << 20, 1 << 20, 2);
    let bad = Peer::serve_cache(&corrupt_cache(tmp.path(), &data, &spec));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let err = f
        .fetch(&spec, vec![bad.source(&spec)], None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Exhausted { .. }), "{msg}");
    assert!(msg.contains("bad chunk"), "{msg}");
    assert!(
        msg.contains(&bad.url().to_string()),
        "names the peer: {msg}"
    );
    assert!(!cas.contains(&spec.sha256));
}
