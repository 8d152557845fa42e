//! The only peer is honest but slow: its egress is shaped to 1 Mbit/s
//! (~122 KiB/s, shared by its two connections) with a `tbf` qdisc inside
//! its own network namespace, below the 128 KiB/s throughput floor. Being
//! the only source it must not be dropped: slow requests are abandoned and
//! resumed with a lower floor, and the object completes and verifies.
use super::common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, FetchOptions, Fetcher, ServerConfig, Source};
use testkit::netns::{exec, in_ns, Lan};

#[test]
fn only_slow_peer_still_delivers() {
    let lan = Lan::new(2, true).expect("network namespaces (root, iproute2)");
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(512 << 10, 128 << 10, 77);
    let slow_ns = lan.node(1).to_string();
    exec(
        &slow_ns,
        &[
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "16kbit",
            "latency", "200ms",
        ],
    )
    .expect("tc tbf");
    let addr = format!("{}:7070", lan.ipv4(1)).parse().unwrap();
    let _peer = Peer::start_in(
        Some(slow_ns),
        addr,
        ServerConfig::new(seeded_cache(tmp.path(), "slow", &data)),
    );
    let client_cache = tmp.path().join("client");
    let spec2 = spec.clone();
    let opts = FetchOptions {
        deadline: Duration::from_secs(30),
        min_throughput: 128 * 1024,
        throughput_grace: Duration::from_millis(500),
        ..quick_options()
    };
    let start = Instant::now();
    let h = in_ns(lan.node(0), 2, move || async move {
        let f = Fetcher::new(Cas::open(&client_cache).unwrap(), opts).unwrap();
        let src =
            Source::phase_peer(&format!("http://{addr}").parse().unwrap(), &spec2.sha256).unwrap();
        tokio::time::timeout(Duration::from_secs(40), f.fetch(&spec2, vec![src], None))
            .await
            .expect("bounded")
    });
    let report = h.join().expect("client thread").expect("fetch");
    let elapsed = start.elapsed();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert_eq!(report.peers.len(), 1, "{report:?}");
    let peer = &report.peers[0];
    assert!(
        peer.dropped.is_none() && !peer.bad,
        "slow but honest: {report:?}"
    );
    assert_eq!(peer.bytes, data.len() as u64, "{report:?}");
    // 512 KiB at ~122 KiB/s is ~4.3 s; the slow verdicts cost a little
    // more, but nowhere near the deadline.
    assert!(
        elapsed > Duration::from_secs(3),
        "the shaping did not apply: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}: {report:?}"
    );
    eprintln!("only slow peer: {} bytes in {elapsed:?}", data.len());
}
