//! Stage 1's verified fetch on the host, against a real signed repository
//! (the verifier's publisher) and a cache laid out as `phase image
//! --seed-repo` lays it out: offline from a writable and from a read-only
//! cache, a tampered cached object, expired metadata, an empty cache.

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use phase_init::bootfetch::{self, BootFetchError, Places};
use phase_init::cachepart::Mounted;
use phase_init::cmdline::Config;
use phase_init::trust;
use verifier::publish::{generate_keys, KeygenOptions, Publisher, TargetSpec};
use verifier::{DirStorage, DirTransport, Kind, Updater};

pub struct World {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub cache: PathBuf,
    pub shas: Vec<String>,
}

pub fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let repo = dir.path().join("repo");
    let now = Utc::now();
    generate_keys(
        &keys,
        &KeygenOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires: now + Duration::days(365),
            consistent_snapshot: true,
        },
    )
    .expect("keygen");
    let mut p = Publisher::open(&repo, &keys).expect("publisher");
    let arch = std::env::consts::ARCH;
    for (kind, k, len) in [
        ("kernel", Kind::Kernel, 5_000_000usize),
        ("initramfs", Kind::Initramfs, 300_000),
        ("rootfs", Kind::Rootfs, 70_000),
    ] {
        let src = dir.path().join(kind);
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + kind.len()) as u8).collect();
        std::fs::write(&src, bytes).expect("write artifact");
        p.add_target(&TargetSpec {
            name: format!("testing/{arch}/{kind}"),
            kind: k,
            version: "1".into(),
            cmdline: (kind == "kernel").then(|| "console=ttyS0 quiet".to_owned()),
            source: src,
        })
        .expect("add target");
    }
    p.commit(Duration::days(7)).expect("commit");

    // The baked root, as the initramfs carries it.
    let root = dir.path().join("baked");
    std::fs::create_dir_all(root.join("etc/phase")).expect("mkdir");
    let root_json = std::fs::read(keys.join("1.root.json")).expect("root");
    std::fs::write(root.join(trust::ROOT_FILE), &root_json).expect("write root");

    // The cache, seeded as `phase image --seed-repo` does.
    let cache = dir.path().join("cache");
    let storage = DirStorage::new(cache.join("tuf")).expect("storage");
    verifier::install_root(&storage, &root_json, now).expect("install root");
    let mut up = Updater::new(storage, DirTransport::new(&repo), now);
    up.refresh().expect("refresh");
    let mut shas = Vec::new();
    for t in up.all_targets().expect("targets") {
        let sha = t.sha256().expect("sha256").to_owned();
        let d = cache.join("cas/sha256").join(&sha[..2]);
        std::fs::create_dir_all(&d).expect("mkdir cas");
        std::fs::write(d.join(&sha), up.download_bytes(&t).expect("download")).expect("write");
        shas.push(sha);
    }
    World {
        _dir: dir,
        root,
        cache,
        shas,
    }
}

pub fn config() -> Config {
    Config {
        channel: "testing".into(),
        ..Config::default()
    }
}

pub fn places(w: &World, writable: bool) -> Places {
    Places {
        cache: Some(Mounted {
            device: "/dev/null".into(),
            dir: w.cache.clone(),
            writable,
        }),
        ram_cas: w.cache.parent().expect("parent").join("ram-cas"),
        discovered: Default::default(),
        route: Default::default(),
    }
}

fn chain(e: &BootFetchError) -> String {
    phase_init::step::chain(e)
}

fn under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

#[test]
fn offline_from_a_writable_cache() {
    let w = world();
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    let f = bootfetch::run(&config(), &baked, &places(&w, true), now).expect("fetch");
    assert_eq!(f.artifacts.cmdline, "console=ttyS0 quiet");
    assert_eq!(f.network_peers, 0);
    for a in [
        &f.artifacts.kernel,
        &f.artifacts.initramfs,
        &f.artifacts.rootfs,
    ] {
        assert!(w.shas.contains(&a.sha256), "{a:?}");
        assert!(under(&a.path, &w.cache.join("cas")), "{a:?}");
    }
    assert_eq!(f.artifacts.kernel.length, 5_000_000);
    assert_eq!(f.tuf.root, Some(1));
    assert!(f.tuf.timestamp.is_some() && f.tuf.targets.is_some());
    assert_eq!(f.peers.len(), 1);
    assert_eq!(f.peers[0].peer, "cache");
    assert_eq!(f.peers[0].bytes, 5_370_000);
}

#[test]
fn offline_from_a_read_only_cache_uses_it_in_place_and_writes_nothing() {
    let w = world();
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    let before = std::fs::read(w.cache.join("tuf/timestamp.json")).expect("ts");
    let f = bootfetch::run(&config(), &baked, &places(&w, false), now).expect("fetch");
    assert!(under(&f.artifacts.rootfs.path, &w.cache.join("cas")));
    assert!(
        !w.cache.join("refs.json").exists(),
        "refs written read-only"
    );
    assert_eq!(
        std::fs::read(w.cache.join("tuf/timestamp.json")).expect("ts"),
        before
    );
}

#[test]
fn a_tampered_cached_object_is_refused() {
    let w = world();
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    for sha in &w.shas {
        let p = w.cache.join("cas/sha256").join(&sha[..2]).join(sha);
        let mut b = std::fs::read(&p).expect("read");
        b[100] ^= 1;
        std::fs::write(&p, b).expect("write");
    }
    let e = bootfetch::run(&config(), &baked, &places(&w, true), now).expect_err("tampered");
    let text = chain(&e);
    assert!(matches!(e, BootFetchError::Mismatch { .. }), "{text}");
    assert!(text.contains("does not match its signed digest"), "{text}");
}

#[test]
fn expired_metadata_offline_is_refused_with_a_clear_line() {
    let w = world();
    let later = Utc::now() + Duration::days(30);
    let baked = trust::load(&w.root, Utc::now()).expect("baked root");
    let e = bootfetch::run(&config(), &baked, &places(&w, true), later).expect_err("expired");
    let text = chain(&e);
    assert!(matches!(e, BootFetchError::RefreshOffline(_)), "{text}");
    assert!(text.contains("expired"), "{text}");
    assert!(text.contains("phase.peers="), "{text}");
}

#[test]
fn an_empty_cache_without_peers_says_so() {
    let w = world();
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    std::fs::remove_dir_all(&w.cache).expect("rm cache");
    let p = Places {
        cache: None,
        ram_cas: w.cache.clone(),
        discovered: Default::default(),
        route: Default::default(),
    };
    let e = bootfetch::run(&config(), &baked, &p, now).expect_err("nothing");
    let text = chain(&e);
    assert!(matches!(e, BootFetchError::RefreshOffline(_)), "{text}");
    assert!(text.contains("timestamp.json"), "{text}");
}

#[test]
fn an_unsigned_channel_is_named() {
    let w = world();
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    let c = Config {
        channel: "stable".into(),
        ..Config::default()
    };
    let e = bootfetch::run(&c, &baked, &places(&w, true), now).expect_err("no such channel");
    let text = chain(&e);
    assert!(text.contains("does not sign stable/"), "{text}");
}

/// `local` mode never leaves the LAN: `phase.peers` URLs whose address is
/// reached through a router are skipped with a line naming them; a name is
/// kept when one of its addresses is on the LAN, and pinned to it.
#[test]
fn local_mode_keeps_only_peers_on_the_lan_and_pins_their_names() {
    // A lease 198.18.0.10/24 with a router at 198.18.0.1, in a test
    // namespace whose kernel answers the route lookups.
    let lan = testkit::netns::Lan::new(1, true).expect("netns (tests run as root)");
    testkit::netns::exec(
        lan.node(0),
        &["ip", "route", "add", "default", "via", "198.18.0.1"],
    )
    .expect("default route");
    let routes = testkit::netns::in_ns(lan.node(0), 0, || async {
        phase_init::onlink::Routes::read()
    })
    .join()
    .expect("routes");
    let peers: Vec<fetcher::Peer> = [
        "http://198.18.0.20:7070",
        "http://198.51.100.7:7070",
        "http://mirror.lan:8080/repo/",
        "http://far.example/",
        "http://nowhere.example/",
    ]
    .iter()
    .map(|u| fetcher::Peer::parse(u).expect("peer URL"))
    .collect();
    let resolve = |host: &str, port: u16| match host {
        "mirror.lan" => Ok(vec![
            std::net::SocketAddr::from(([203, 0, 113, 9], port)),
            std::net::SocketAddr::from(([198, 18, 0, 30], port)),
        ]),
        "far.example" => Ok(vec![std::net::SocketAddr::from(([203, 0, 113, 10], port))]),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such host",
        )),
    };
    let (kept, pins, lines) = bootfetch::lan_peers(peers, &routes, resolve);
    let kept: Vec<String> = kept.iter().map(|p| p.label()).collect();
    assert_eq!(
        kept,
        ["http://198.18.0.20:7070/", "http://mirror.lan:8080/repo/"]
    );
    assert_eq!(
        pins,
        [(
            "mirror.lan".to_owned(),
            std::net::SocketAddr::from(([198, 18, 0, 30], 8080))
        )]
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("http://198.51.100.7:7070/: 198.51.100.7 is not on this LAN")
            && lines[0].ends_with("local mode never leaves the LAN; skipped"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("http://far.example/: 203.0.113.10 is not on this LAN"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(
            "http://nowhere.example/: cannot resolve nowhere.example (no such host); skipped"
        ),
        "{}",
        lines[2]
    );
}

/// A fake peer listed first in `phase.peers` answers every metadata request
/// with garbage; the honest peer after it serves the repository. The fetch
/// succeeds, and the fake peer is recorded as dropped (with why) in the
/// peers that `boot.json` gets, and is not asked again in this boot.
#[test]
fn a_garbage_metadata_peer_first_is_dropped_and_named() {
    use std::io::{Read, Write};
    let w = world();
    let now = Utc::now();
    let baked = trust::load(&w.root, now).expect("baked root");
    // The fake peer: a plain thread, at most 32 connections.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake_addr = fake.local_addr().expect("addr");
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        for c in fake.incoming().take(32) {
            let Ok(mut c) = c else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut b = [0u8; 4096];
            let _ = c.read(&mut b);
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!",
            );
        }
    });
    // The honest peer: the peer server over the repository.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let honest_addr = listener.local_addr().expect("addr");
    let mut cfg = fetcher::ServerConfig::new(w.cache.parent().expect("dir").join("peer-cache"));
    cfg.repo = Some(w.cache.parent().expect("dir").join("repo"));
    rt.spawn(async move {
        let _ = fetcher::serve(listener, cfg, std::future::pending()).await;
    });
    let fake_url = format!("http://{fake_addr}");
    let c = Config {
        peers: vec![
            phase_init::cmdline::Peer::Url(fake_url.clone()),
            phase_init::cmdline::Peer::Url(format!("http://{honest_addr}")),
        ],
        ..config()
    };
    let f = bootfetch::run(&c, &baked, &places(&w, true), now).expect("fetch");
    let label = format!("{fake_url}/");
    let dropped: Vec<_> = f.peers.iter().filter(|p| p.dropped.is_some()).collect();
    assert_eq!(dropped.len(), 1, "{:?}", f.peers);
    assert_eq!(dropped[0].peer, label);
    assert!(
        dropped[0]
            .dropped
            .as_deref()
            .is_some_and(|r| r.contains("root")),
        "{:?}",
        dropped[0]
    );
    assert_eq!(bootfetch::dropped_reason(&label), dropped[0].dropped);
    // A second attempt in the same boot does not ask it again.
    let before = asked.load(std::sync::atomic::Ordering::Relaxed);
    bootfetch::run(&c, &baked, &places(&w, true), now).expect("second fetch");
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), before);
}
