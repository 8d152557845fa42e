//! The chunk bytes a fetcher keeps in memory stay within its budget
//! (`FetchOptions::chunk_memory`) however many peers and connections it
//! runs: three peer servers on loopback with three connections each (nine
//! connections, room for four chunks), with the whole-object hash holding
//! chunks and without it (then only endgame duplicates are in memory: a
//! chunk's first request writes it in place); a budget smaller than one chunk still completes
//! (one chunk at a time); and two fetches sharing one budget, one of them
//! holding chunks for its whole-object hash and the other wanting more
//! than half the budget per chunk, both complete within the bound. (That
//! a big share drops the held chunks, which keeps such fetches from
//! waiting on each other for ever, is checked without timing in the unit
//! test `budget::tests::a_big_share_drops_the_held_chunks`: here it
//! depends on when the chunks arrive.)
use super::common;

use std::time::Duration;

use common::*;
use fetcher::{Cas, FetchOptions, Fetcher};

const CHUNK: u64 = 64 << 10;

/// Three peers serving `data`.
fn three_peers(root: &std::path::Path, data: &[u8]) -> Vec<Peer> {
    (0..3)
        .map(|k| Peer::serve_cache(&seeded_cache(root, &format!("peer{k}"), data)))
        .collect()
}

fn options(chunk_memory: u64, verify_whole: bool) -> FetchOptions {
    FetchOptions {
        connections_per_peer: 3,
        chunk_memory,
        verify_whole,
        ..quick_options()
    }
}

/// Fetches `data` (chunks of `CHUNK`) from three peers with `opts` and
/// returns what the fetcher counted.
async fn fetch_from_three(opts: FetchOptions, seed: u64) -> fetcher::ChunkMemory {
    let tmp = tempfile::tempdir().unwrap();
    let (data, spec) = object(8 << 20, CHUNK, seed);
    let peers = three_peers(tmp.path(), &data);
    let f = Fetcher::new(Cas::open(tmp.path().join("client")).unwrap(), opts).unwrap();
    let sources = peers.iter().map(|p| p.source(&spec)).collect();
    let report = f.fetch(&spec, sources, None).await.expect("fetch");
    assert_eq!(std::fs::read(&report.path).unwrap(), data);
    let used = report.peers.iter().filter(|p| p.bytes > 0).count();
    assert!(used >= 2, "several peers supplied chunks: {report:?}");
    f.chunk_memory()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_connections_stay_within_four_chunks() {
    for verify_whole in [false, true] {
        let budget = 4 * CHUNK;
        let mem = fetch_from_three(options(budget, verify_whole), 21).await;
        assert_eq!(mem.budget, budget);
        assert!(
            mem.peak <= budget,
            "verify_whole={verify_whole}: {} bytes of chunks in memory, budget {budget}",
            mem.peak
        );
        if verify_whole {
            assert!(mem.peak >= CHUNK, "chunks were counted: {mem:?}");
        }
        assert_eq!(mem.live, 0, "every chunk buffer was given back: {mem:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_below_one_chunk_fetches_one_at_a_time() {
    let mem = fetch_from_three(options(1000, true), 22).await;
    assert_eq!(mem.budget, 1000);
    assert!(mem.peak <= CHUNK, "one chunk at a time: {mem:?}");
    assert_eq!(mem.live, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_sharing_a_budget_do_not_starve_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    // Small chunks, held for the whole-object hash; and chunks of three
    // quarters of the budget, which wait for the held ones to be dropped.
    let (small, small_spec) = object(4 << 20, 16 << 10, 23);
    let (big, big_spec) = object(4 << 20, 192 << 10, 24);
    let small_peers = three_peers(&tmp.path().join("small"), &small);
    let big_peers = three_peers(&tmp.path().join("big"), &big);
    let budget = 256 << 10;
    let f = Fetcher::new(
        Cas::open(tmp.path().join("client")).unwrap(),
        options(budget, true),
    )
    .unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(50), async {
        tokio::join!(
            f.fetch(
                &small_spec,
                small_peers.iter().map(|p| p.source(&small_spec)).collect(),
                None
            ),
            f.fetch(
                &big_spec,
                big_peers.iter().map(|p| p.source(&big_spec)).collect(),
                None
            ),
        )
    })
    .await
    .expect("both fetches finish");
    assert_eq!(std::fs::read(a.expect("small").path).unwrap(), small);
    assert_eq!(std::fs::read(b.expect("big").path).unwrap(), big);
    let mem = f.chunk_memory();
    assert!(mem.peak <= budget, "{mem:?}");
    assert_eq!(mem.live, 0, "{mem:?}");
}
