//! A chunk's first request writes its bytes into the partial file as they
//! arrive, before they are verified; an endgame duplicate writes only once
//! verified. Whatever order they finish in, a verified chunk is never
//! overwritten by a piece of another request, and unverified bytes never
//! count.
use super::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fetcher::{Cas, Fetcher, Sha256Digest};
use tokio::io::AsyncWriteExt;

/// The partial file's API directly: pieces land only while the chunk is
/// not sealed, a commit of written pieces needs the signed digest, and a
/// verified copy seals the chunk before it is written.
#[test]
fn a_sealed_chunk_takes_no_more_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Cas::open(dir.path()).unwrap();
    let (data, spec) = object(3000, 1000, 11);
    let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&spec, lock).unwrap();
    let junk = vec![0xAAu8; 1000];
    let chunk = |i: usize| &data[i * 1000..(i + 1) * 1000];

    // Chunk 1: junk written in place, then the verified copy over it.
    assert!(partial.write_piece(1, 0, &junk[..500]).unwrap());
    let err = partial.write_piece(1, 500, &junk[..600]).unwrap_err();
    assert!(err.to_string().contains("does not fit chunk 1"), "{err}");
    let wrong = Sha256Digest::of(&junk);
    assert!(partial.commit_written(1, &wrong).is_err(), "junk's digest");
    assert!(!partial.is_verified(1));
    partial
        .write_chunk(1, chunk(1), &Sha256Digest::of(chunk(1)))
        .unwrap();
    assert!(
        !partial.write_piece(1, 0, &junk[..500]).unwrap(),
        "a piece after the verified copy is refused"
    );

    // Chunk 2: written in pieces, then committed; then sealed too.
    assert!(partial.write_piece(2, 0, &chunk(2)[..300]).unwrap());
    assert!(partial.write_piece(2, 300, &chunk(2)[300..]).unwrap());
    partial
        .commit_written(2, &Sha256Digest::of(chunk(2)))
        .unwrap();
    assert!(partial.is_verified(2));
    assert!(!partial.write_piece(2, 0, &junk).unwrap());

    // Chunk 0 the old way; the object is exactly the data.
    partial
        .write_chunk(0, chunk(0), &Sha256Digest::of(chunk(0)))
        .unwrap();
    let path = partial.finish_by_chunks().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

/// A liar that answers every range request with a well-formed 206 head
/// and junk: the first 256 KiB at once, then 64 KiB every 50 ms
/// (1.25 MiB/s, above the tests' 256 KiB/s floor, and far slower than the
/// honest peer). `sent` counts the junk written.
async fn liar(length: u64, sent: Arc<AtomicU64>) -> std::net::SocketAddr {
    range_peer(length, move |mut s, a, b| {
        let sent = Arc::clone(&sent);
        async move {
            let mut left = (b - a + 1) as usize;
            let mut piece = 256 << 10;
            while left > 0 {
                let n = piece.min(left);
                if s.write_all(&vec![0xAA; n]).await.is_err() {
                    return;
                }
                sent.fetch_add(n as u64, Ordering::Relaxed);
                left -= n;
                piece = 64 << 10;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await
}

/// The liar is listed first, so it is the first request on some chunks:
/// its junk goes into the partial file in place. The honest peer finishes
/// its own chunks, then duplicates the liar's; the first verified copy
/// wins and the liar's requests are cancelled. The stored object is the
/// data, every byte credited to the honest peer, and the liar is not
/// called bad (it never finished a chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_writing_in_place_never_lands_over_a_verified_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(8 << 20, 1 << 20, 12);
    let sent = Arc::new(AtomicU64::new(0));
    let liar = liar(spec.length, Arc::clone(&sent)).await;
    let liar_url: url::Url = format!("http://{liar}").parse().unwrap();
    let good = Peer::serve_cache(&seeded_cache(tmp.path(), "good", &data));
    let cas = Cas::open(tmp.path().join("client")).unwrap();
    let f = Fetcher::new(cas.clone(), quick_options()).unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        f.fetch(
            &spec,
            vec![
                fetcher::Source::phase_peer(&liar_url, &spec.sha256).unwrap(),
                good.source(&spec),
            ],
            None,
        ),
    )
    .await
    .expect("bounded")
    .expect("fetch");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    assert!(
        sent.load(Ordering::Relaxed) >= 256 << 10,
        "the liar was first on a chunk and sent junk"
    );
    let l = &report.peers[0];
    assert_eq!(l.bytes, 0, "{report:?}");
    assert!(!l.bad, "{report:?}");
    assert_eq!(report.peers[1].bytes, spec.length);
}
