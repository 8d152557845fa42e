//! Redirects: a peer answers every request with `302` to another host (a
//! second loopback address standing for any host off the LAN); the client
//! does not follow (the other host sees no request) and takes the object
//! from the honest peer. As a web mirror's answer the same redirect is not
//! followed either, nor one to another port of the same address (another
//! origin): a mirror may only move its files on its own origin.
use super::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use fetcher::{Cas, Fetcher, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_other_hosts_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(2 << 20, 1 << 20, 9);
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));

    // "Another host": 127.0.0.2, counting what reaches it.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let other = elsewhere.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let r2 = reached.clone();
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((mut s, _)) = elsewhere.accept().await else {
                return;
            };
            r2.fetch_add(1, Ordering::Relaxed);
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let redirector = hostile_peer(64, move |mut s, line| async move {
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{other}{path}\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let red_url: url::Url = format!("http://{redirector}").parse().unwrap();
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas, quick_options()).unwrap();
    let report = f
        .fetch(
            &spec,
            vec![
                Source::phase_peer(&red_url, &spec.sha256).unwrap(),
                good.source(&spec),
            ],
            None,
        )
        .await
        .expect("fetch from the honest peer");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert_eq!(
        reached.load(Ordering::Relaxed),
        0,
        "a redirect to another host was followed"
    );

    // The same redirect, as a web mirror's: still not followed.
    let cas2 = Cas::open(tmp.path().join("client2")).unwrap();
    let f2 = Fetcher::new(cas2, quick_options()).unwrap();
    let r = f2
        .fetch(
            &spec,
            vec![Source::mirror(&red_url, "x/y.bin").unwrap()],
            None,
        )
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(reached.load(Ordering::Relaxed), 0);

    // A mirror redirecting to another port (another origin).
    let moved = good.url();
    let same_host = hostile_peer(64, move |mut s, line| {
        let moved = moved.clone();
        async move {
            let _ = line;
            let to = format!("{}cas/sha256/{}", moved, spec_hex());
            let head = format!("HTTP/1.1 301 Moved\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
        }
    })
    .await;
    let cas3 = Cas::open(tmp.path().join("client3")).unwrap();
    let f3 = Fetcher::new(cas3, quick_options()).unwrap();
    let mirror: url::Url = format!("http://{same_host}").parse().unwrap();
    let r = f3
        .fetch(&spec, vec![Source::mirror(&mirror, "k.bin").unwrap()], None)
        .await;
    assert!(r.is_err(), "a redirect to another port was followed: {r:?}");
}

fn spec_hex() -> String {
    object(2 << 20, 1 << 20, 9).1.sha256.to_hex()
}
