//! Objects a booted node did not hash whole (its rootfs, read through
//! dm-verity) are hashed by the server before it re-shares them: an intact
//! one is served once hashed, one whose bytes changed on the disk is never
//! served, on any path, while the objects that were hashed are served at
//! once.
use super::common;

use std::time::{Duration, Instant};

use super::raw_http::{get, raw};
use common::*;
use fetcher::{Cas, ServerConfig, Sha256Digest};

#[test]
fn an_unhashed_object_is_served_only_after_its_bytes_matched() {
    let tmp = tempfile::tempdir().unwrap();
    let intact = data(3 << 20, 11);
    let altered = data(2 << 20, 12);
    let hashed = data(1 << 20, 13);
    let cache = seeded_cache(tmp.path(), "cache", &intact);
    let cas = Cas::open(&cache).unwrap();
    for d in [&altered, &hashed] {
        cas.insert_bytes(d).unwrap();
    }
    let (di, da, dh) = (
        Sha256Digest::of(&intact),
        Sha256Digest::of(&altered),
        Sha256Digest::of(&hashed),
    );
    // One byte of the stored object changes after it was verified (a
    // stick edited while the machine was off).
    let path = cas.object_path(&da);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let mut cfg = ServerConfig::new(&cache);
    // The altered object first: once the intact one is served, both
    // were hashed.
    cfg.unhashed = vec![da, di];
    let peer = Peer::start(cfg);
    let a = peer.addr;

    let ans = get(a, &format!("/cas/sha256/{dh}"), "");
    assert_eq!(
        ans.status, 200,
        "an object the boot hashed is served at once"
    );
    assert_eq!(ans.body, hashed);

    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        let ans = get(a, &format!("/cas/sha256/{di}"), "");
        if ans.status == 200 {
            break ans.body;
        }
        assert_eq!(ans.status, 404, "withheld means not found: {}", ans.head);
        assert!(
            Instant::now() < deadline,
            "the intact object was not served within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(served, intact);

    for path in [
        format!("/cas/sha256/{da}"),
        format!("/cas/sha256/{da}/chunks"),
        format!("/tuf/targets/stable/x86_64/{da}.rootfs"),
    ] {
        let ans = get(a, &path, "Range: bytes=0-65535\r\n");
        assert_eq!(
            ans.status, 404,
            "{path} of the altered object: {}",
            ans.head
        );
        assert!(
            !ans.body.windows(64).any(|w| w == &bytes[..64]),
            "{path}: the altered bytes were sent"
        );
    }
    let head = raw(
        a,
        format!("HEAD /cas/sha256/{da} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(head.status, 404, "HEAD of the altered object");
    // The chunk list of the intact one says it is complete.
    let ans = get(a, &format!("/cas/sha256/{di}/chunks"), "");
    assert_eq!(ans.status, 200);
    assert!(String::from_utf8_lossy(&ans.body).contains("\"complete\":true"));
}
