//! The peer server refuses what it must: path traversal (plain, encoded,
//! symlinks out), listings, writes, bad ranges, huge headers, clients that
//! never finish their headers; and answers HEAD and ranges by the book.
//! A node still downloading serves exactly its verified chunks.
use super::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::raw_http::{get, raw};
use common::*;
use fetcher::{Cas, ObjectSpec, ServerConfig, Sha256Digest};

struct Setup {
    _tmp: tempfile::TempDir,
    peer: Peer,
    data: Vec<u8>,
    digest: Sha256Digest,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(100_000, 71);
    let cache = seeded_cache(tmp.path(), "cache", &data);
    let digest = Sha256Digest::of(&data);
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("metadata")).unwrap();
    std::fs::create_dir_all(repo.join("targets/stable")).unwrap();
    std::fs::write(repo.join("metadata/timestamp.json"), b"{\"signed\":{}}").unwrap();
    std::fs::write(tmp.path().join("secret"), b"do not serve").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), repo.join("targets/stable/evil"))
        .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.join("metadata/passwd.json")).unwrap();
    let mut cfg = ServerConfig::new(&cache);
    cfg.repo = Some(repo);
    cfg.header_timeout = Duration::from_secs(1);
    let peer = Peer::start(cfg);
    Setup {
        _tmp: tmp,
        peer,
        data,
        digest,
    }
}

#[test]
fn traversal_listing_and_methods_are_refused() {
    let s = setup();
    let a = s.peer.addr;
    for path in [
        "/tuf/targets/../../secret",
        "/tuf/targets/%2e%2e/%2e%2e/secret",
        "/tuf/targets/stable%2f..%2f..%2fsecret",
        "/tuf/metadata/..%2f..%2fsecret",
        "/tuf/metadata/%2e%2e",
        "/tuf/targets/stable/evil",
        "/tuf/metadata/passwd.json",
        "/tuf/metadata/",
        "/tuf/targets/",
        "/cas/sha256/",
        "/cas/",
        "/",
        "/cas/sha256/../../secret",
        "/tuf/metadata/.hidden",
        "/tuf/metadata/timestamp.json%00",
    ] {
        let ans = get(a, path, "");
        assert_eq!(ans.status, 404, "{path}: {}", ans.head);
        assert!(!String::from_utf8_lossy(&ans.body).contains("do not serve"));
        assert!(!String::from_utf8_lossy(&ans.body).contains("root:"));
    }
    assert_eq!(get(a, "/tuf/metadata/timestamp.json", "").status, 200);
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let ans = raw(
            a,
            format!("{m} /cas/sha256/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", s.digest).as_bytes(),
        );
        assert_eq!(ans.status, 405, "{m}");
        assert_eq!(ans.header("allow").as_deref(), Some("GET, HEAD"));
    }
}

#[test]
fn head_and_ranges() {
    let s = setup();
    let a = s.peer.addr;
    let path = format!("/cas/sha256/{}", s.digest);
    let len = s.data.len();
    let h = raw(
        a,
        format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some(len.to_string()));
    assert_eq!(h.header("etag"), Some(format!("\"{}\"", s.digest)));
    assert_eq!(h.header("accept-ranges").as_deref(), Some("bytes"));
    assert!(h.body.is_empty());

    let r = get(a, &path, "Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{len}"))
    );
    assert_eq!(r.body, &s.data[10..20]);
    let r = get(a, &path, "Range: bytes=-5\r\n");
    assert_eq!(r.body, &s.data[len - 5..]);
    let r = get(a, &path, &format!("Range: bytes={len}-\r\n"));
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{len}")));
    // Invalid or multiple ranges are ignored: the whole object.
    for bad in ["bytes=9-1", "bytes=0-1,5-6", "lines=1-2", "bytes=x-"] {
        let r = get(a, &path, &format!("Range: {bad}\r\n"));
        assert_eq!(r.status, 200, "{bad}");
        assert_eq!(r.body, s.data, "{bad}");
    }
    let r = get(a, &path, &format!("If-None-Match: \"{}\"\r\n", s.digest));
    assert_eq!(r.status, 304);
    // Uppercase or short digests are not names.
    assert_eq!(
        get(
            a,
            &path.to_uppercase().replace("/CAS/SHA256/", "/cas/sha256/"),
            ""
        )
        .status,
        404
    );
    assert_eq!(get(a, "/cas/sha256/abcd", "").status, 404);
    // The repository's consistent target path maps onto the CAS by digest.
    let t = get(
        a,
        &format!("/tuf/targets/stable/{}.kernel", s.digest),
        "Range: bytes=0-3\r\n",
    );
    assert_eq!(t.status, 206);
    assert_eq!(t.body, &s.data[..4]);
}

#[test]
fn huge_headers_and_slow_headers_are_cut_off() {
    let s = setup();
    let a = s.peer.addr;
    let big = format!("X-Junk: {}\r\n", "a".repeat(64 * 1024));
    let ans = get(a, "/tuf/metadata/timestamp.json", &big);
    assert!(ans.status == 431 || ans.status == 0, "{}", ans.head);

    // Slowloris: half a request line, then silence.
    let start = Instant::now();
    let mut c = TcpStream::connect(a).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"GET /tuf/metadata/timestamp.json HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "slow client held the connection for {waited:?}"
    );
}

#[test]
fn connection_limit_holds_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(1000, 72);
    let cache = seeded_cache(tmp.path(), "cache", &data);
    let mut cfg = ServerConfig::new(&cache);
    cfg.max_connections = 2;
    cfg.header_timeout = Duration::from_secs(1);
    let peer = Peer::start(cfg);
    // Two idle connections take both slots...
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(peer.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    // ...so a third request is answered only once they are cut off.
    let ans = get(
        peer.addr,
        &format!("/cas/sha256/{}", Sha256Digest::of(&data)),
        "",
    );
    assert_eq!(ans.status, 200);
    assert_eq!(ans.body, data);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "limit not enforced ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(8),
        "idle clients pinned the server ({waited:?})"
    );
    drop(idle);
}

#[test]
fn a_downloading_node_serves_exactly_its_verified_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cas = Cas::open(&cache).unwrap();
    let data = data(5 << 20, 73);
    let spec = ObjectSpec::of_bytes(&data, 1 << 20);
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&spec, lock).unwrap();
    for i in [0usize, 2] {
        let (x, y) = spec.chunk_range(i);
        let c = &data[x as usize..y as usize];
        partial.write_chunk(i, c, &Sha256Digest::of(c)).unwrap();
    }
    let peer = Peer::serve_cache(&cache);
    let a = peer.addr;
    let path = format!("/cas/sha256/{}", spec.sha256);
    let ch = get(a, &format!("{path}/chunks"), "");
    assert_eq!(ch.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&ch.body).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(v["verified"], serde_json::json!([0, 2]));
    assert_eq!(v["chunk_size"], 1 << 20);
    let mb = 1usize << 20;
    let r = get(
        a,
        &path,
        &format!("Range: bytes={}-{}\r\n", 2 * mb, 3 * mb - 1),
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[2 * mb..3 * mb]);
    // Any byte of an unverified chunk: refused.
    assert_eq!(
        get(a, &path, &format!("Range: bytes={}-{}\r\n", mb - 1, mb)).status,
        416
    );
    assert_eq!(
        get(a, &path, &format!("Range: bytes={}-{}\r\n", mb, mb)).status,
        416
    );
    assert_eq!(get(a, &path, "").status, 404, "no whole object yet");
    // Once no writer holds it (a crashed download), nothing is served.
    drop(partial);
    assert_eq!(get(a, &format!("{path}/chunks"), "").status, 404);
    assert_eq!(get(a, &path, "Range: bytes=0-9\r\n").status, 404);
}

/// The server's own HTTP/1.1 connection: pipelined keep-alive requests are
/// answered in order on one connection, HTTP/1.0 closes after its answer, a
/// request with a body is answered and the connection closed (the body is
/// never read as a request), and a garbled head is a 400.
#[test]
fn keep_alive_pipelining_and_connection_rules() {
    let s = setup();
    let a = s.peer.addr;
    let path = format!("/cas/sha256/{}", s.digest);
    // Two requests in one write; the second asks to close.
    let start = Instant::now();
    let both = raw(
        a,
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n\
             HEAD /tuf/metadata/timestamp.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "not closed after the second answer"
    );
    assert_eq!(both.status, 206, "{}", both.head);
    assert_eq!(both.header("connection").as_deref(), Some("keep-alive"));
    let (first, rest) = both.body.split_at(100);
    assert_eq!(first, &s.data[..100]);
    let rest = String::from_utf8_lossy(rest);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(
        rest.to_ascii_lowercase().contains("connection: close"),
        "{rest}"
    );
    assert!(
        rest.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {rest}"
    );

    // HTTP/1.0 without keep-alive: the answer, then the server closes.
    let start = Instant::now();
    let old = raw(a, b"GET /tuf/metadata/timestamp.json HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200);
    assert_eq!(old.body, b"{\"signed\":{}}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "HTTP/1.0 connection left open"
    );

    // A body is not read as the next request.
    let smuggled = raw(
        a,
        format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(smuggled.status, 405);
    assert_eq!(smuggled.header("connection").as_deref(), Some("close"));
    assert!(
        !smuggled.body.windows(4).any(|w| w == b"HTTP"),
        "answered the body as a request"
    );

    // A large body after the head: one answer, whole, and nothing in the
    // body is taken for a request.
    let mut req = b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".to_vec();
    req.resize(req.len() + 200_000, b'z');
    let put = raw(a, &req);
    assert_eq!(put.status, 405, "{}", put.head);
    assert_eq!(put.body, b"method not allowed\n");

    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let ans = raw(a, bad);
        assert_eq!(ans.status, 400, "{}", String::from_utf8_lossy(bad));
    }
}

/// File bodies go out with sendfile in pieces of at most `block_size`
/// bytes: a large object, whole and as a range across piece boundaries, is
/// byte for byte the file.
#[test]
fn large_bodies_span_many_sendfile_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data((5 << 20) + 12_345, 74);
    let cache = seeded_cache(tmp.path(), "cache", &data);
    let mut cfg = ServerConfig::new(&cache);
    cfg.block_size = 64 * 1024;
    let peer = Peer::start(cfg);
    let path = format!("/cas/sha256/{}", Sha256Digest::of(&data));
    let whole = get(peer.addr, &path, "");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some(data.len().to_string()));
    assert!(whole.body == data, "whole body differs");
    let (x, y) = (65_535usize, 3 * 1024 * 1024 + 7);
    let part = get(peer.addr, &path, &format!("Range: bytes={x}-{y}\r\n"));
    assert_eq!(part.status, 206);
    assert!(part.body == data[x..=y], "ranged body differs");
}
