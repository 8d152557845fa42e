//! An object whose every chunk matched its signed chunk list is stored
//! without a second, whole-object pass, and recorded as such
//! (`Stored::Chunks`). A bad chunk is still refused; with `verify_whole`
//! the object is hashed whole as well; an object stored for one chunk list
//! is hashed whole before it stands for a description with another list,
//! and moved to the quarantine when it is not the object its name says.
use super::common;

use std::path::{Path, PathBuf};

use common::*;
use fetcher::{Cas, CasError, ChunkList, FetchError, FetchOptions, Fetcher, ObjectSpec, Stored};

/// A cache holding `bytes` under the name `name` (a liar or a damaged disk).
fn cache_with(root: &Path, dir: &str, name: &fetcher::Sha256Digest, bytes: &[u8]) -> PathBuf {
    let dir = root.join(dir);
    let cas = Cas::open(&dir).unwrap();
    let path = cas.object_path(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    dir
}

/// A description whose SHA-256 is that of `named` but whose chunk list is
/// that of `bytes` (same length): what a signer that does not compute both
/// from the same bytes would publish.
fn inconsistent(named: &[u8], bytes: &[u8], chunk: u64) -> ObjectSpec {
    ObjectSpec {
        sha256: fetcher::Sha256Digest::of(named),
        length: named.len() as u64,
        chunks: ChunkList::compute(bytes, chunk),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_chunks_store_the_object_with_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(5 << 20, 1 << 20, 41);
    let peer = Peer::serve_cache(&seeded_cache(tmp.path(), "peer", &data));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let report = f
        .fetch(&spec, vec![peer.source(&spec)], None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert_eq!(
        cas.stored(&spec.sha256),
        Stored::Chunks(spec.chunks.digest())
    );
    // The same description again: present at once, no fetch.
    let again = f.fetch(&spec, Vec::new(), None).await.unwrap();
    assert!(again.already_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_is_still_refused_without_the_whole_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(4 << 20, 1 << 20, 42);
    // One byte flipped in chunk 2 only: three chunks are good.
    let mut bad = data.clone();
    bad[(2 << 20) + 77] ^= 0x01;
    let liar = Peer::serve_cache(&cache_with(tmp.path(), "liar", &spec.sha256, &bad));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let err = f
        .fetch(&spec, vec![liar.source(&spec)], None)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("bad chunk 2"), "{err}");
    assert!(!cas.contains(&spec.sha256), "nothing under the final name");
    assert!(!cas.object_path(&spec.sha256).exists());

    // An honest peer next: the bad chunk comes from it, the rest resumes.
    let honest = Peer::serve_cache(&seeded_cache(tmp.path(), "honest", &data));
    let report = f
        .fetch(&spec, vec![honest.source(&spec)], None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_whole_hashes_the_object_too() {
    let tmp = tempfile::tempdir().unwrap();
    let a = data(3 << 20, 43);
    let b = data(3 << 20, 44);
    let spec = inconsistent(&a, &b, 1 << 20);
    let peer = Peer::serve_cache(&cache_with(tmp.path(), "peer", &spec.sha256, &b));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let opts = FetchOptions {
        verify_whole: true,
        ..quick_options()
    };
    let f = Fetcher::new(cas.clone(), opts).unwrap();
    let err = f
        .fetch(&spec, vec![peer.source(&spec)], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Cas(_, CasError::Mismatch { .. })),
        "every chunk matched, the whole did not: {err}"
    );
    assert!(!cas.contains(&spec.sha256));

    // A consistent description with the whole pass: stored with no record.
    let (good, gspec) = object(3 << 20, 1 << 20, 45);
    let gpeer = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &good));
    let report = f
        .fetch(&gspec, vec![gpeer.source(&gspec)], None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&report.path).unwrap(), good);
    assert_eq!(cas.stored(&gspec.sha256), Stored::Whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_stored_for_another_chunk_list_is_hashed_before_use() {
    let tmp = tempfile::tempdir().unwrap();
    let a = data(3 << 20, 46);
    let b = data(3 << 20, 47);
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();

    // A description binding a's name to b's chunks is taken on its chunks.
    let lying = inconsistent(&a, &b, 1 << 20);
    let bpeer = Peer::serve_cache(&cache_with(tmp.path(), "b", &lying.sha256, &b));
    f.fetch(&lying, vec![bpeer.source(&lying)], None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(cas.object_path(&lying.sha256)).unwrap(), b);

    // The honest description of a (another chunk list, same name): the
    // stored bytes are hashed whole, found wrong, moved aside and a is
    // fetched.
    let honest = ObjectSpec::of_bytes(&a, 1 << 20);
    let apeer = Peer::serve_cache(&seeded_cache(tmp.path(), "a", &a));
    let report = f
        .fetch(&honest, vec![apeer.source(&honest)], None)
        .await
        .unwrap();
    assert!(!report.already_present);
    assert_eq!(std::fs::read(&report.path).unwrap(), a);
    let moved = cas.quarantine_dir().join(honest.sha256.to_hex());
    assert_eq!(std::fs::read(moved).unwrap(), b, "kept, not deleted");

    // The same bytes described with another chunk size: hashed whole
    // once, then known by content.
    let other = ObjectSpec::of_bytes(&a, 1 << 19);
    let r = f.fetch(&other, Vec::new(), None).await.unwrap();
    assert!(r.already_present);
    assert_eq!(cas.stored(&other.sha256), Stored::Whole);
}
