//! A peer answers the chunk-map query (`/cas/sha256/<hex>/chunks`) with an
//! endless body (chunked encoding, no length; here bounded at 768 MiB so
//! the test itself stays bounded). The map is refused once it passes its
//! 1 MiB cap while it is read, the fetch's peak memory stays far below the
//! bomb, and the object comes from the honest peer.
mod common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, Fetcher, Source};
use tokio::io::AsyncWriteExt;

/// Bytes the bomb sends at most.
const BOMB: usize = 768 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_chunk_map_is_cut_at_its_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(4 << 20, 1 << 20, 7);
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let bomb = hostile_peer(16, move |mut s, line| {
        let counter = counter.clone();
        async move {
            if !line.contains("/chunks") {
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let block = vec![b' '; 1 << 20];
            let mut frame = format!("{:x}\r\n", block.len()).into_bytes();
            frame.extend_from_slice(&block);
            frame.extend_from_slice(b"\r\n");
            for _ in 0..BOMB / block.len() {
                if s.write_all(&frame).await.is_err() {
                    return;
                }
                counter.fetch_add(block.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let bomb_url: url::Url = format!("http://{bomb}").parse().unwrap();
    let before = peak_rss();
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas, quick_options()).unwrap();
    let start = Instant::now();
    let report = f
        .fetch(
            &spec,
            vec![
                Source::phase_peer(&bomb_url, &spec.sha256).unwrap(),
                good.source(&spec),
            ],
            None,
        )
        .await
        .expect("fetch");
    let took = start.elapsed();
    let after = peak_rss();
    let grew = after.saturating_sub(before);
    eprintln!(
        "peak RSS {} MiB -> {} MiB (+{} MiB) in {took:?}; the bomb sent {} MiB",
        before >> 20,
        after >> 20,
        grew >> 20,
        sent.load(std::sync::atomic::Ordering::Relaxed) >> 20
    );
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    // The cap is 1 MiB; the object is 4 MiB; allow the allocator and the
    // runtimes their share, far below what the bomb offers.
    assert!(
        grew < 64 << 20,
        "peak RSS grew by {} MiB while a peer sent an endless chunk map",
        grew >> 20
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}
