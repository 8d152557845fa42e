//! A slow peer (egress shaped to 8 Mbit/s with a `tbf` qdisc inside its own
//! network namespace) next to a fast one: the fast peer does most of the
//! work, the download finishes far sooner than the slow peer alone could
//! deliver it, and the slow-but-honest peer is not evicted.
use super::common;

use std::time::{Duration, Instant};

use common::*;
use fetcher::{Cas, Fetcher, ServerConfig, Source};
use testkit::netns::{exec, in_ns, Lan};

#[test]
fn fast_peer_does_most_of_the_work() {
    let lan = Lan::new(3, true).expect("network namespaces (root, iproute2)");
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(32 << 20, 1 << 20, 92);
    let slow_ns = lan.node(1).to_string();
    exec(
        &slow_ns,
        &[
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "8mbit", "burst", "32kbit",
            "latency", "400ms",
        ],
    )
    .expect("tc tbf");
    let slow_addr = format!("{}:7070", lan.ipv4(1)).parse().unwrap();
    let fast_addr = format!("{}:7070", lan.ipv4(2)).parse().unwrap();
    let _slow = Peer::start_in(
        Some(slow_ns),
        slow_addr,
        ServerConfig::new(seeded_cache(tmp.path(), "slow", &data)),
    );
    let _fast = Peer::start_in(
        Some(lan.node(2).to_string()),
        fast_addr,
        ServerConfig::new(seeded_cache(tmp.path(), "fast", &data)),
    );
    let client_cache = tmp.path().join("client");
    let spec2 = spec.clone();
    let start = Instant::now();
    let h = in_ns(lan.node(0), 2, move || async move {
        let f = Fetcher::new(Cas::open(&client_cache).unwrap(), quick_options()).unwrap();
        let src = |a: std::net::SocketAddr| {
            Source::phase_peer(&format!("http://{a}").parse().unwrap(), &spec2.sha256).unwrap()
        };
        tokio::time::timeout(
            Duration::from_secs(60),
            f.fetch(&spec2, vec![src(slow_addr), src(fast_addr)], None),
        )
        .await
        .expect("bounded")
    });
    let report = h.join().expect("client thread").expect("fetch");
    let elapsed = start.elapsed();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let (slow, fast) = (&report.peers[0], &report.peers[1]);
    // 32 MiB at 1 MB/s would take ~33 s from the slow peer alone.
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}: {report:?}"
    );
    assert!(
        fast.bytes > 3 * slow.bytes,
        "fast peer should dominate: {report:?}"
    );
    assert!(
        slow.dropped.is_none() && !slow.bad,
        "slow but honest: {report:?}"
    );
}
