//! An object is visible under its final name only once complete and
//! verified: never during a download, never after a failed one, and the
//! final check refuses bytes whose whole digest does not match.
use super::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use fetcher::{Cas, CasError, Fetcher, ObjectSpec, Progress, Sha256Digest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_name_appears_only_after_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(32 << 20, 1 << 20, 11);
    let peer = Peer::serve_cache(&seeded_cache(tmp.path(), "peer", &data));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let final_path = cas.object_path(&spec.sha256);
    let seen_early = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let (s, c, fp) = (
        Arc::clone(&seen_early),
        Arc::clone(&checks),
        final_path.clone(),
    );
    let cb: fetcher::ProgressFn = Arc::new(move |p: &Progress| {
        if p.done < p.total {
            c.fetch_add(1, Ordering::Relaxed);
            if fp.exists() {
                s.store(true, Ordering::Relaxed);
            }
        }
    });
    let mut opts = quick_options();
    opts.connections_per_peer = 1;
    let f = Fetcher::new(cas.clone(), opts).unwrap();
    let report = f
        .fetch(&spec, vec![peer.source(&spec)], Some(cb))
        .await
        .unwrap();
    assert!(
        !seen_early.load(Ordering::Relaxed),
        "final name visible before the end"
    );
    assert_eq!(report.path, final_path);
    assert_eq!(std::fs::read(&final_path).unwrap(), data);
    assert!(files_ending(tmp.path().join("client").as_path(), ".partial").is_empty());
    assert!(files_ending(tmp.path().join("client").as_path(), ".partial.json").is_empty());
    // A second fetch finds it present and moves nothing.
    let again = f
        .fetch(&spec, vec![peer.source(&spec)], None)
        .await
        .unwrap();
    assert!(again.already_present);
}

#[test]
fn finish_refuses_a_wrong_whole_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path()).unwrap();
    let data = data(3 << 20, 12);
    // A chunk list that matches the bytes but a whole digest that does not:
    // an inconsistent description must not produce a visible object.
    let mut spec = ObjectSpec::of_bytes(&data, 1 << 20);
    spec.sha256 = Sha256Digest::of(b"something else");
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&spec, lock).unwrap();
    for i in 0..spec.chunk_count() {
        let (a, b) = spec.chunk_range(i);
        let chunk = &data[a as usize..b as usize];
        partial
            .write_chunk(i, chunk, &Sha256Digest::of(chunk))
            .unwrap();
    }
    let whole = partial.hash_all().unwrap();
    let err = partial.finish(&whole).unwrap_err();
    assert!(matches!(err, CasError::Mismatch { .. }), "{err}");
    assert!(!cas.contains(&spec.sha256));
}

#[test]
fn write_chunk_refuses_unverified_bytes_and_insert_is_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path()).unwrap();
    let data = data(2 << 20, 13);
    let spec = ObjectSpec::of_bytes(&data, 1 << 20);
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&spec, lock).unwrap();
    let junk = vec![0u8; 1 << 20];
    assert!(partial
        .write_chunk(0, &junk, &Sha256Digest::of(&junk))
        .is_err());
    assert_eq!(partial.missing(), vec![0, 1]);
    partial.discard();
    let d = cas.insert_bytes(&data).unwrap();
    assert_eq!(d, spec.sha256);
    assert_eq!(std::fs::read(cas.object_path(&d)).unwrap(), data);
    assert_eq!(cas.list().unwrap(), vec![d]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_object_needs_no_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path()).unwrap();
    let spec = ObjectSpec::of_bytes(&[], 1 << 20);
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let r = f.fetch(&spec, Vec::new(), None).await.unwrap();
    assert_eq!(std::fs::metadata(&r.path).unwrap().len(), 0);
    assert!(cas.contains(&spec.sha256));
    // A non-empty object with no peers is a clear error.
    let (_, other) = object(10, 4, 14);
    let err = f.fetch(&other, Vec::new(), None).await.unwrap_err();
    assert!(err.to_string().contains("no peers"), "{err}");
}

#[test]
fn finish_by_chunks_needs_every_chunk_and_leaves_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path()).unwrap();
    let data = data(3 << 20, 14);
    let spec = ObjectSpec::of_bytes(&data, 1 << 20);
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&spec, lock).unwrap();
    for i in [0, 2] {
        let (a, b) = spec.chunk_range(i);
        let chunk = &data[a as usize..b as usize];
        partial
            .write_chunk(i, chunk, &Sha256Digest::of(chunk))
            .unwrap();
    }
    // Chunk 1 was never verified: nothing gets the final name.
    let err = partial.finish_by_chunks().unwrap_err();
    assert!(matches!(err, CasError::Incomplete(_, 1)), "{err}");
    assert!(!cas.contains(&spec.sha256));

    // Resumed: chunks 0 and 2 are re-hashed, chunk 1 is written, done.
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&spec, lock).unwrap();
    assert_eq!(partial.missing(), vec![1]);
    let (a, b) = spec.chunk_range(1);
    let chunk = &data[a as usize..b as usize];
    partial
        .write_chunk(1, chunk, &Sha256Digest::of(chunk))
        .unwrap();
    let path = partial.finish_by_chunks().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(
        cas.stored(&spec.sha256),
        fetcher::Stored::Chunks(spec.chunks.digest())
    );
    // Hashed whole, it is known by content from then on.
    assert!(cas.confirm_whole(&spec.sha256, spec.length).unwrap());
    assert_eq!(cas.stored(&spec.sha256), fetcher::Stored::Whole);
}
