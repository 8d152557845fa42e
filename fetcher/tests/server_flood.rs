//! 500 hostile connections against the peer server from one address: half
//! idle sockets (connect, send nothing, reconnect when closed), half slow
//! readers (ask for a large object, never read). An honest client on
//! another address still gets its answer within 2 s, because one address
//! holds at most `max_per_address` slots and a connection below the
//! minimum rate is closed.
mod common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::ServerConfig;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_request_is_answered_under_a_flood() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(32 << 20, 1 << 20, 3);
    let server = Peer::start(ServerConfig::new(seeded_cache(tmp.path(), "srv", &data)));
    let addr = server.addr;
    let hex = spec.sha256.to_hex();
    let flood_until = Instant::now() + Duration::from_secs(12);
    let before = peak_rss();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let hex = hex.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded: until `flood_until`, at most 50 reconnects.
            for _ in 0..50 {
                if Instant::now() >= flood_until {
                    return;
                }
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if i % 2 == 1 {
                    let req = format!("GET /cas/sha256/{hex} HTTP/1.1\r\nHost: x\r\n\r\n");
                    if s.write_all(req.as_bytes()).await.is_err() {
                        continue;
                    }
                }
                // Hold it (reading nothing) until the server closes it or
                // the flood ends.
                let mut b = [0u8; 1];
                let left = flood_until.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, async {
                    loop {
                        // `peek` reads nothing: the receive buffer stays full.
                        match s.peek(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    }
                })
                .await;
            }
        }));
    }
    // Let the flood take whatever the server gives it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let honest = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            honest
                .get(format!("http://{addr}/cas/sha256/{hex}"))
                .header("Range", "bytes=0-65535")
                .send(),
        )
        .await
        .expect("no answer within 10 s")
        .expect("request");
        assert_eq!(r.status(), 206);
        let body = r.bytes().await.unwrap();
        assert_eq!(&body[..], &data[..65536]);
        worst = worst.max(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let grew = peak_rss().saturating_sub(before);
    eprintln!(
        "honest request under a 500-connection flood: worst {worst:?}; process peak RSS +{} MiB",
        grew >> 20
    );
    assert!(
        worst < Duration::from_secs(2),
        "honest request took {worst:?}"
    );
    for t in tasks {
        t.abort();
    }
}
