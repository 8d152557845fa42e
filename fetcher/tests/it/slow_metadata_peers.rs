//! Two bad metadata peers listed before an honest one: one accepts the
//! connection and never answers (silent), one answers and trickles
//! `timestamp.json` one byte every 2 s. Each costs at most its budget
//! (here 3 s per peer, `TransportLimits::peer_budget`), then the honest
//! peer is used: the refresh ends well within the sum of the budgets
//! instead of waiting on the tricklers.
use super::common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::{Peer as PeerUrl, PeerTransport, TransportLimits};
use tokio::io::AsyncWriteExt;
use verifier::{MemoryStorage, Storage, Updater};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_peers_cost_at_most_their_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = signed_repo(tmp.path(), 50_000);
    let honest = repo_peer(tmp.path(), &repo);
    let silent = hostile_peer(16, |s, _| async move {
        // Hold the socket, say nothing (bounded: 60 s).
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    })
    .await;
    let trickle = hostile_peer(16, |mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n{")
            .await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if s.write_all(b" ").await.is_err() {
                return;
            }
        }
    })
    .await;
    let peers = vec![
        PeerUrl::parse(&format!("http://{silent}")).unwrap(),
        PeerUrl::parse(&format!("http://{trickle}")).unwrap(),
        PeerUrl::parse(honest.url().as_str()).unwrap(),
    ];
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let budget = Duration::from_secs(3);
    let t = PeerTransport::new(client, tokio::runtime::Handle::current(), peers, None).with_limits(
        TransportLimits {
            peer_budget: budget,
            min_rate: 4096,
            silence: Duration::from_secs(10),
        },
    );
    let start = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let storage = MemoryStorage::new();
        storage.store("root.json", &root).unwrap();
        let mut up = Updater::new(&storage, &t, chrono::Utc::now());
        t.refresh_with(|_| up.refresh())
    })
    .await
    .unwrap();
    let took = start.elapsed();
    eprintln!("refresh took {took:?}: {result:?}");
    let report = result.expect("refresh from the honest peer");
    assert_eq!(report.used.as_deref(), Some(honest.url().as_str()));
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(report.dropped.is_empty(), "slow is not invalid: {report:?}");
    assert!(
        took < budget * 2 + Duration::from_secs(3),
        "two bad peers cost {took:?}, more than their budgets"
    );
}
