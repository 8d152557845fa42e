//! The swarm: a client takes chunks from another client that is itself
//! still downloading. Four namespaces on a bridge: seed S1 (egress shaped
//! to 8 Mbit/s with tbf), seed S2 (32 Mbit/s), client A and client B (not
//! shaped). A fetches from S1 only (slow), and serves its cache like
//! `phase serve` on the same cache does. Once A holds a few verified
//! chunks, B starts a fetch from S2 and A joins it through the feed (as a
//! peer found by discovery during the fetch). B must take chunks from A
//! (bytes from the non-seed peer > 0) while A's own download is still
//! running (B finishes first), and end with the verified object; A
//! finishes afterwards.
//! Bounded: every wait and fetch has a timeout; the test takes ~15 s.
use super::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, Fetcher, ServerConfig, Sha256Digest, Source};
use testkit::netns::{exec, in_ns, Lan};

fn shape(ns: &str, rate: &str) {
    exec(
        ns,
        &[
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "32kbit",
            "latency", "400ms",
        ],
    )
    .expect("tc tbf");
}

fn src(a: std::net::SocketAddr, d: &Sha256Digest) -> Source {
    Source::phase_peer(&format!("http://{a}").parse().unwrap(), d).unwrap()
}

#[test]
fn client_fetches_from_a_client_still_downloading() {
    let lan = Lan::new(4, true).expect("network namespaces (root, iproute2)");
    let tmp = tempfile::tempdir().unwrap();
    // 12 MiB in 512 KiB chunks: A needs ~13 s from S1 at 8 Mbit/s.
    let (data, spec) = object(12 << 20, 512 << 10, 4242);
    let n = spec.chunk_count();
    shape(lan.node(0), "8mbit");
    shape(lan.node(1), "32mbit");
    let s1: std::net::SocketAddr = format!("{}:7070", lan.ipv4(0)).parse().unwrap();
    let s2: std::net::SocketAddr = format!("{}:7070", lan.ipv4(1)).parse().unwrap();
    let a_addr: std::net::SocketAddr = format!("{}:7070", lan.ipv4(2)).parse().unwrap();
    let _s1 = Peer::start_in(
        Some(lan.node(0).to_string()),
        s1,
        ServerConfig::new(seeded_cache(tmp.path(), "s1", &data)),
    );
    let _s2 = Peer::start_in(
        Some(lan.node(1).to_string()),
        s2,
        ServerConfig::new(seeded_cache(tmp.path(), "s2", &data)),
    );
    // Client A: its server shares its cache, including the download in
    // progress.
    let a_cache = tmp.path().join("a");
    let a_cas = Cas::open(&a_cache).unwrap();
    let _a_server = Peer::start_in(
        Some(lan.node(2).to_string()),
        a_addr,
        ServerConfig::new(&a_cache),
    );
    let a_finished = Arc::new(AtomicBool::new(false));
    let a_thread = {
        let (spec, cas, done) = (spec.clone(), a_cas.clone(), Arc::clone(&a_finished));
        let s1 = src(s1, &spec.sha256);
        in_ns(lan.node(2), 2, move || async move {
            let f = Fetcher::new(cas, quick_options()).unwrap();
            let r = tokio::time::timeout(Duration::from_secs(60), f.fetch(&spec, vec![s1], None))
                .await
                .expect("A: bounded");
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // Wait (bounded) until A has verified a few chunks.
    let t0 = Instant::now();
    loop {
        let have = a_cas
            .partial_status(&spec.sha256)
            .map_or(0, |s| s.verified.len());
        if have >= 4 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "A verified only {have} chunks in 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!a_finished.load(Ordering::SeqCst));

    // Client B: S2 from the start, A joins through the feed.
    let b_cache = tmp.path().join("b");
    let b_thread = {
        let spec = spec.clone();
        let (s2, a) = (src(s2, &spec.sha256), src(a_addr, &spec.sha256));
        let a_done = Arc::clone(&a_finished);
        in_ns(lan.node(3), 2, move || async move {
            let f = Fetcher::new(Cas::open(&b_cache).unwrap(), quick_options()).unwrap();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let feeder = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(a);
                // Keep the feed open a while, as discovery does.
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(tx);
            });
            let r = tokio::time::timeout(
                Duration::from_secs(40),
                f.fetch_with_feed(&spec, vec![s2], Some(rx), None),
            )
            .await
            .expect("B: bounded");
            feeder.abort();
            (r, a_done.load(Ordering::SeqCst))
        })
    };
    let (b, a_done_when_b_ended) = b_thread.join().expect("B thread");
    let b = b.expect("B's fetch");
    assert_eq!(std::fs::read(&b.path).unwrap(), data);
    let from_a = b
        .peers
        .iter()
        .find(|p| p.label.contains(&a_addr.to_string()))
        .expect("A in B's report");
    let from_s2 = &b.peers[0];
    assert!(
        !a_done_when_b_ended,
        "A finished before B; the test shows nothing about partial peers: {b:?}"
    );
    assert!(
        from_a.bytes > 0 && !from_a.bad && from_a.dropped.is_none(),
        "no bytes from the client still downloading: {b:?}"
    );
    assert_eq!(from_a.chunks + from_s2.chunks, n as u64, "{b:?}");
    eprintln!(
        "B: {} chunks from A (still downloading), {} from S2, {:.2} s",
        from_a.chunks,
        from_s2.chunks,
        b.elapsed.as_secs_f64()
    );
    let a = a_thread.join().expect("A thread").expect("A's fetch");
    assert_eq!(std::fs::read(&a.path).unwrap(), data);
}
