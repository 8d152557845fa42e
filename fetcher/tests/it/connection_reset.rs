//! A peer whose connections are reset after ~3 MB each (an nftables rule in
//! the peer's own network namespace, on its input hook, so the RST goes to
//! the client: `tcp dport 7070 ct bytes > N reject with tcp reset`).
//! The client keeps the chunks verified before each reset, retries with
//! backoff on new connections, and completes; nothing unverified is kept.
use super::common;

use std::time::Duration;

use common::*;
use fetcher::{Cas, Fetcher, ServerConfig, Source};
use testkit::netns::{exec, in_ns, Lan};

#[test]
fn resets_after_n_bytes_are_survived() {
    let lan = Lan::new(2, true).expect("network namespaces (root, iproute2)");
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(24 << 20, 1 << 20, 91);
    let cache = seeded_cache(tmp.path(), "peer", &data);
    let peer_ns = lan.node(1).to_string();
    let nft = |args: &[&str]| {
        let mut v = vec!["nft"];
        v.extend_from_slice(args);
        exec(&peer_ns, &v).expect("nft (nftables is a test prerequisite)");
    };
    nft(&["add", "table", "inet", "phase"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "phase",
        "out",
        "{ type filter hook input priority 0 ; }",
    ]);
    nft(&[
        "add", "rule", "inet", "phase", "out", "tcp", "dport", "7070", "ct", "bytes", "gt",
        "3000000", "counter", "reject", "with", "tcp", "reset",
    ]);
    let addr = format!("{}:7070", lan.ipv4(1)).parse().unwrap();
    let _peer = Peer::start_in(Some(peer_ns.clone()), addr, ServerConfig::new(&cache));
    let url: url::Url = format!("http://{addr}").parse().unwrap();
    let client_cache = tmp.path().join("client");
    let spec2 = spec.clone();
    let h = in_ns(lan.node(0), 2, move || async move {
        let mut opts = quick_options();
        opts.max_failures = 6;
        opts.connections_per_peer = 1;
        let f = Fetcher::new(Cas::open(&client_cache).unwrap(), opts).unwrap();
        tokio::time::timeout(
            Duration::from_secs(60),
            f.fetch(
                &spec2,
                vec![Source::phase_peer(&url, &spec2.sha256).unwrap()],
                None,
            ),
        )
        .await
        .expect("bounded")
    });
    let report = h
        .join()
        .expect("client thread")
        .expect("fetch survives resets");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let rules = exec(&peer_ns, &["nft", "list", "table", "inet", "phase"]).unwrap();
    let text = String::from_utf8_lossy(&rules.stdout);
    let packets: u64 = text
        .split("counter packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("counter in ruleset");
    assert!(packets > 0, "the reset rule never fired:\n{text}");
}
