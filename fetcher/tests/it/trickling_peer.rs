//! A peer that answers a range request and then trickles one byte every
//! few hundred milliseconds (a real socket, hand-written HTTP): it is dropped
//! by the minimum-throughput rule and the download finishes from the
//! honest peer well within its deadline.
use super::common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, Fetcher, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn trickler() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: a few connections, each lives at most ~20 s.
        for _ in 0..16 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                    .await;
                for _ in 0..60 {
                    if s.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_peer_is_dropped_and_honest_peer_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(8 << 20, 1 << 20, 3);
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));
    let t = trickler().await;
    let t_url: url::Url = format!("http://{t}").parse().unwrap();
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas, quick_options()).unwrap();
    let start = Instant::now();
    let report = f
        .fetch(
            &spec,
            vec![
                Source::phase_peer(&t_url, &spec.sha256).unwrap(),
                good.source(&spec),
            ],
            None,
        )
        .await
        .expect("fetch");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let tr = &report.peers[0];
    let why = tr.dropped.as_deref().expect("trickler dropped");
    assert!(
        why.contains("too slow") || why.contains("silent") || why.contains("Range"),
        "{why}"
    );
    assert_eq!(tr.bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_range_peer_alone_fails_within_bounds() {
    // This one speaks proper 206 answers, so only the throughput rule can
    // catch it.
    let (_, spec) = object(2 << 20, 1 << 20, 4);
    let addr = range_peer(spec.length, |mut s, _, _| async move {
        for _ in 0..60 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let url: url::Url = format!("http://{addr}").parse().unwrap();
    let start = Instant::now();
    let err = f
        .fetch(
            &spec,
            vec![Source::phase_peer(&url, &spec.sha256).unwrap()],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("too slow"), "{err}");
    assert!(!cas.contains(&spec.sha256));
}
