//! A peer listed first answers 404 to every metadata request (withholding
//! the repository's new version), and the cache holds an older, still
//! valid copy. The refresh does not settle for the cache's copy on that
//! peer's behalf: it asks the honest peer after it and gets the new
//! version.
use super::common;

use common::*;
use fetcher::{Peer as PeerUrl, PeerTransport};
use tokio::io::AsyncWriteExt;
use verifier::{MemoryStorage, Storage, Updater};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withholding_peer_does_not_pin_the_old_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = signed_repo(tmp.path(), 10_000);
    // The cache: a copy of version 1 of the metadata.
    let cached = tmp.path().join("cache-metadata");
    std::fs::create_dir_all(&cached).unwrap();
    for e in std::fs::read_dir(repo.join("metadata")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), cached.join(e.file_name())).unwrap();
    }
    // The repository moves on: a new release (timestamp version 2).
    let mut p = verifier::publish::Publisher::open(&repo, &tmp.path().join("keys")).unwrap();
    let src = tmp.path().join("kernel2.bin");
    std::fs::write(&src, data(20_000, 12)).unwrap();
    p.add_target(&verifier::publish::TargetSpec {
        name: "stable/x86_64/kernel".into(),
        kind: verifier::Kind::Kernel,
        version: "2".into(),
        cmdline: None,
        source: src,
    })
    .unwrap();
    p.commit(chrono::Duration::days(7)).unwrap();
    let honest = repo_peer(tmp.path(), &repo);
    let withholding = hostile_peer(64, |mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    })
    .await;
    let peers = vec![
        PeerUrl::parse(&format!("http://{withholding}")).unwrap(),
        PeerUrl::parse(honest.url().as_str()).unwrap(),
    ];
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let t = PeerTransport::new(
        client,
        tokio::runtime::Handle::current(),
        peers,
        Some(cached),
    );
    let (result, ts) = tokio::task::spawn_blocking(move || {
        let storage = MemoryStorage::new();
        storage.store("root.json", &root).unwrap();
        let mut up = Updater::new(&storage, &t, chrono::Utc::now());
        let r = t.refresh_with(|_| up.refresh());
        (r, storage.load("timestamp.json").unwrap())
    })
    .await
    .unwrap();
    let report = result.expect("refresh");
    assert_eq!(
        report.used.as_deref(),
        Some(honest.url().as_str()),
        "{report:?}"
    );
    let ts: serde_json::Value = serde_json::from_slice(&ts.expect("timestamp")).unwrap();
    assert_eq!(
        ts["signed"]["version"], 2,
        "the old cached version was used"
    );
}
