//! A download cut short (the only peer dies) leaves a partial object with
//! its verified chunks; the next fetch resumes from them, re-checking what
//! the sidecar claims (a chunk damaged on disk is fetched again).
use super::common;

use common::*;
use fetcher::{Cas, FetchOptions, Fetcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_peer_death_and_disk_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(24 << 20, 1 << 20, 31);
    let dir = seeded_cache(tmp.path(), "peer", &data);
    let peer = Peer::serve_cache(&dir);
    // The peer dies after relaying ~9.5 MiB.
    let dying = DyingProxy::start(peer.addr, 19 << 19).await;
    let src = fetcher::Source::phase_peer(&dying.url(), &spec.sha256).unwrap();
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let opts = FetchOptions {
        max_failures: 2,
        ..quick_options()
    };
    let f = Fetcher::new(cas.clone(), opts).unwrap();
    let err = f.fetch(&spec, vec![src], None).await.unwrap_err();
    assert!(
        !cas.contains(&spec.sha256),
        "nothing at the final name: {err}"
    );
    let partials = files_ending(&tmp.path().join("client"), ".partial");
    assert_eq!(partials.len(), 1, "partial kept for resume");

    // Damage one verified chunk on disk behind the sidecar's back.
    let status: fetcher::cas::PartialStatus =
        serde_json::from_slice(&std::fs::read(format!("{}.json", partials[0].display())).unwrap())
            .unwrap();
    assert!(status.verified.len() >= 4, "{status:?}");
    let victim = status.verified[1];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&partials[0])
            .unwrap();
        f.write_all_at(b"garbage", victim * spec.chunks.size + 5)
            .unwrap();
    }

    let peer2 = Peer::serve_cache(&seeded_cache(tmp.path(), "peer2", &data));
    let report = f
        .fetch(&spec, vec![peer2.source(&spec)], None)
        .await
        .unwrap();
    assert_eq!(report.resumed_chunks, status.verified.len() - 1);
    let fetched_chunks = spec.chunk_count() as u64 - report.resumed_chunks as u64;
    assert_eq!(report.peers[0].chunks, fetched_chunks);
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(files_ending(&tmp.path().join("client"), ".partial").is_empty());
}
