//! A peer listed first answers every metadata request with garbage (200,
//! not JSON), as a fake `_phase._tcp` peer on the LAN could. The refresh
//! drops it, names it, and succeeds from the honest peer listed after it;
//! the trusted state holds only the honest metadata, and the dropped peer
//! is not asked again.
use super::common;

use common::*;
use fetcher::{Attempt, Peer as PeerUrl, PeerTransport};
use tokio::io::AsyncWriteExt;
use verifier::{MemoryStorage, Storage, Updater};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_peer_first_is_dropped_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = signed_repo(tmp.path(), 100_000);
    let honest = repo_peer(tmp.path(), &repo);
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    let garbage = hostile_peer(64, move |mut s, _line| {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let body = b"this is not metadata";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body).await;
        }
    })
    .await;
    let bad_label = PeerUrl::parse(&format!("http://{garbage}"))
        .unwrap()
        .label();
    let peers = vec![
        PeerUrl::parse(&format!("http://{garbage}")).unwrap(),
        PeerUrl::parse(honest.url().as_str()).unwrap(),
    ];
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let t = PeerTransport::new(client, tokio::runtime::Handle::current(), peers, None);
    let (result, attempts, targets, second, stored_ts) = tokio::task::spawn_blocking(move || {
        let storage = MemoryStorage::new();
        storage.store("root.json", &root).unwrap();
        let mut up = Updater::new(&storage, &t, chrono::Utc::now());
        let mut attempts = Vec::new();
        let result = t.refresh_with(|a| {
            attempts.push(match a {
                Attempt::Peer(l) => l.to_string(),
                Attempt::Cache => "cache".into(),
            });
            up.refresh()
        });
        let targets = up.all_targets().map(|v| v.len());
        // A second refresh (a retry later in the boot) skips the dropped
        // peer.
        let mut second = Vec::new();
        let r2 = t.refresh_with(|a| {
            second.push(format!("{a:?}"));
            up.refresh()
        });
        assert!(r2.is_ok(), "{r2:?}");
        let ts = storage.load("timestamp.json").unwrap();
        (result, attempts, targets, second, ts)
    })
    .await
    .unwrap();
    let report = result.expect("refresh from the honest peer");
    assert_eq!(report.used.as_deref(), Some(honest.url().as_str()));
    assert_eq!(report.dropped.len(), 1, "{report:?}");
    assert_eq!(report.dropped[0].label, bad_label);
    assert!(
        report.dropped[0].reason.contains("timestamp") || report.dropped[0].reason.contains("root"),
        "the reason names the file: {}",
        report.dropped[0].reason
    );
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(targets.expect("targets"), 1);
    assert_eq!(
        second.len(),
        1,
        "only the honest peer is asked again: {second:?}"
    );
    let honest_ts = std::fs::read(repo.join("metadata/timestamp.json")).unwrap();
    assert_eq!(stored_ts.as_deref(), Some(&honest_ts[..]));
    assert!(asked.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
