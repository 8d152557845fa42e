//! Several fetches of the same object at once, in one process (tasks and
//! separate runtimes) and from a second process (this test binary re-run
//! as a child), share one cache without corrupting or duplicating it.
use super::common;

use std::time::Duration;

use common::*;
use fetcher::{Cas, Fetcher, ObjectSpec};

const CHILD_ENV: &str = "PHASE_FETCH_TEST_CHILD";

fn spec_and_data() -> (Vec<u8>, ObjectSpec) {
    object(16 << 20, 1 << 20, 21)
}

/// Run by the child process: fetch into the shared cache from the peer.
#[test]
fn child_process_writer() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        // Not a child: still exercise two writers on one lock in-process.
        let tmp = tempfile::tempdir().unwrap();
        let cas = Cas::open(tmp.path()).unwrap();
        let d = fetcher::Sha256Digest::of(b"x");
        let a = cas.try_lock(&d).unwrap().expect("first lock");
        assert!(
            cas.try_lock(&d).unwrap().is_none(),
            "second writer must wait"
        );
        assert!(cas.writer_active(&d));
        drop(a);
        assert!(cas.try_lock(&d).unwrap().is_some());
        return;
    };
    let (cache, url) = args.split_once(' ').expect("args");
    let (_, spec) = spec_and_data();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = Fetcher::new(Cas::open(cache).unwrap(), quick_options()).unwrap();
    let src = fetcher::Source::phase_peer(&url.parse().unwrap(), &spec.sha256).unwrap();
    rt.block_on(f.fetch(&spec, vec![src], None))
        .expect("child fetch");
}

#[test]
fn many_writers_one_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = spec_and_data();
    let peer = Peer::serve_cache(&seeded_cache(tmp.path(), "peer", &data));
    let cache = tmp.path().join("shared");
    Cas::open(&cache).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "child_process_writer", "--test-threads=1"])
        .env(CHILD_ENV, format!("{} {}", cache.display(), peer.url()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child writer");
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (cache, spec, src) = (cache.clone(), spec.clone(), peer.source(&spec));
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let f = Fetcher::new(Cas::open(&cache).unwrap(), quick_options()).unwrap();
            rt.block_on(async {
                // Two tasks in one runtime as well.
                let (a, b) = tokio::join!(
                    f.fetch(&spec, vec![src.clone()], None),
                    f.fetch(&spec, vec![src.clone()], None)
                );
                (a.expect("fetch a"), b.expect("fetch b"))
            })
        }));
    }
    let mut fetched = 0;
    for t in threads {
        let (a, b) = t.join().unwrap();
        fetched += [a, b].iter().filter(|r| !r.already_present).count();
    }
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child writer hung"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "child writer failed");
    assert!(
        fetched <= 1,
        "object downloaded {fetched} times in this process"
    );
    let cas = Cas::open(&cache).unwrap();
    assert_eq!(cas.list().unwrap(), vec![spec.sha256]);
    assert_eq!(std::fs::read(cas.object_path(&spec.sha256)).unwrap(), data);
    assert!(files_ending(&cache, ".partial").is_empty());
    assert!(files_ending(&cache, ".tmp").is_empty());
}
