//! The same peer listed twice (or three times) is used once: one entry in
//! the report and no more connections than `connections_per_peer`.
use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use fetcher::{Cas, Fetcher};
use tokio::io::copy_bidirectional;

/// A loopback TCP relay in front of `to` that counts accepted connections.
async fn counting_relay(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    tokio::spawn(async move {
        // Bounded: far more than the fetch may open.
        for _ in 0..64 {
            let Ok((mut a, _)) = l.accept().await else {
                return;
            };
            n2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                    let _ = copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
    (addr, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_peer_listed_twice_is_used_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(8 << 20, 256 << 10, 12);
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));
    let target = format!(
        "{}:{}",
        good.url().host_str().unwrap(),
        good.url().port().unwrap()
    )
    .parse()
    .unwrap();
    let (relay, conns) = counting_relay(target).await;
    let url: url::Url = format!("http://{relay}").parse().unwrap();
    // The same URL spelled with and without a trailing slash.
    let url2: url::Url = format!("http://{relay}/").parse().unwrap();
    let src = fetcher::Source::phase_peer(&url, &spec.sha256).unwrap();
    let src2 = fetcher::Source::phase_peer(&url2, &spec.sha256).unwrap();
    let opts = quick_options();
    let per_peer = opts.connections_per_peer;
    let f = Fetcher::new(Cas::open(tmp.path().join("client")).unwrap(), opts).unwrap();
    let report = f
        .fetch(&spec, vec![src.clone(), src2, src], None)
        .await
        .expect("fetch");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert_eq!(report.peers.len(), 1, "{report:?}");
    assert_eq!(report.peers[0].bytes, data.len() as u64);
    // One connection for the chunk list plus the workers' pool; three
    // copies of the source would open about three times as many.
    let opened = conns.load(Ordering::SeqCst);
    assert!(
        opened <= per_peer + 1,
        "{opened} connections for {per_peer} per peer"
    );
}
