//! Two peers; one dies mid-transfer (connections cut, port closed). The
//! download completes from the other, and nothing partial is ever visible
//! at the final name.
use super::common;

use std::time::Duration;

use common::*;
use fetcher::{Cas, Fetcher, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_finishes_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(32 << 20, 1 << 20, 61);
    let a = Peer::serve_cache(&seeded_cache(tmp.path(), "a", &data));
    let b = Peer::serve_cache(&seeded_cache(tmp.path(), "b", &data));
    let dying = DyingProxy::start(a.addr, 5 << 20).await;
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        f.fetch(
            &spec,
            vec![
                Source::phase_peer(&dying.url(), &spec.sha256).unwrap(),
                b.source(&spec),
            ],
            None,
        ),
    )
    .await
    .expect("bounded")
    .expect("fetch completes from the survivor");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let (d, s) = (&report.peers[0], &report.peers[1]);
    // The dead peer is either dropped or simply outpaced; what it delivered
    // before dying is kept (verified), the rest came from the survivor.
    assert!(d.bytes < 5 << 20, "{report:?}");
    assert!(s.bytes >= spec.length - (5 << 20), "{report:?}");
    assert_eq!(d.bytes + s.bytes, spec.length);
    assert!(!d.bad, "a dead peer is not a liar");
}
