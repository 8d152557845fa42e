//! The state of a running fetch that its tasks (connections, chunk-map
//! queries, progress) share.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::cas::PartialObject;
use crate::object::ObjectSpec;

use super::budget::Budget;
use super::sched::{ChunkState, PeerState, Pick, Sched};
use super::whole_hash::WholeHash;
use super::{FetchOptions, Fetcher, Source};

pub(super) struct Shared {
    pub(super) spec: ObjectSpec,
    pub(super) partial: Arc<PartialObject>,
    sched: Mutex<Sched>,
    /// Woken at every change a waiting connection may care about.
    pub(super) changed: Notify,
    /// Bytes verified (resumed chunks included), for progress.
    pub(super) done_bytes: AtomicU64,
    /// Bytes received, for the progress rate.
    pub(super) flow_bytes: AtomicU64,
    /// The whole-object hash, when the options ask for one
    /// (`verify_whole`); else the object is stored on the strength of its
    /// verified chunks.
    pub(super) whole: Option<Arc<WholeHash>>,
    /// The fetcher's memory budget for chunk bytes (shared by its fetches).
    pub(super) budget: Arc<Budget>,
    /// The fetch is over (deadline, failed write): connections stop.
    pub(super) stop: AtomicBool,
    pub(super) client: reqwest::Client,
    pub(super) opts: FetchOptions,
}

impl Shared {
    /// A fetch by `fetcher` (its client, options and memory budget) of
    /// `spec` into `partial`, whose `missing` chunks are still to fetch,
    /// from `sources` (`expect_swarm`: more join through a feed).
    pub(super) fn new(
        fetcher: &Fetcher,
        spec: &ObjectSpec,
        partial: Arc<PartialObject>,
        missing: &[usize],
        sources: Vec<Source>,
        expect_swarm: bool,
    ) -> Self {
        let opts = fetcher.opts.clone();
        let budget = Arc::clone(&fetcher.budget);
        // The whole-object hash advances in chunk order as chunks are
        // written (see `WholeHash::commit`); resumed chunks are read back.
        let whole = opts
            .verify_whole
            .then(|| Arc::new(WholeHash::new(Arc::clone(&budget))));
        let n = spec.chunk_count();
        let (chunks, done_bytes) = resumed(spec, missing, whole.as_deref());
        let peers = sources
            .into_iter()
            .map(|source| PeerState::new(source, false, n))
            .collect();
        Self {
            spec: spec.clone(),
            partial,
            sched: Mutex::new(Sched::new(chunks, peers, expect_swarm)),
            changed: Notify::new(),
            done_bytes: AtomicU64::new(done_bytes),
            flow_bytes: AtomicU64::new(0),
            whole,
            budget,
            stop: AtomicBool::new(false),
            client: fetcher.client.clone(),
            opts,
        }
    }

    /// The scheduler, locked.
    pub(super) fn sched(&self) -> MutexGuard<'_, Sched> {
        // Poisoning would only follow a panic in a worker while holding the
        // lock; the state is plain data and stays usable.
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next chunk for connection `k` of peer `p` (see [`Sched::pick`]).
    pub(super) fn pick(&self, p: usize, k: usize) -> Pick {
        let mut s = self.sched();
        if self.stop.load(Ordering::Relaxed) {
            return Pick::Stop;
        }
        s.pick(p, k)
    }

    /// Credits the verified chunk `i` to peer `p` unless another copy was
    /// first (see [`Sched::claim`]).
    pub(super) fn claim(&self, p: usize, i: usize) -> bool {
        let mut s = self.sched();
        let (a, b) = self.spec.chunk_range(i);
        let claimed = s.claim(p, i, b - a);
        if claimed {
            self.done_bytes.fetch_add(b - a, Ordering::Relaxed);
        }
        claimed
    }

    /// Drops peer `p` (see [`Sched::drop_peer`]) and wakes the others.
    pub(super) fn drop_peer(&self, p: usize, i: usize, reason: String, bad: bool) {
        self.sched().drop_peer(p, i, reason, bad);
        self.changed.notify_waiters();
    }
}

/// The state of each chunk when the fetch starts (those not `missing` are
/// verified on disk already, re-hashed when the partial was opened: held
/// for the whole-object hash if there is one), and the bytes they hold.
fn resumed(
    spec: &ObjectSpec,
    missing: &[usize],
    whole: Option<&WholeHash>,
) -> (Vec<ChunkState>, u64) {
    let missing: HashSet<usize> = missing.iter().copied().collect();
    let mut chunks = vec![ChunkState::Missing; spec.chunk_count()];
    let mut done_bytes = 0;
    for (i, c) in chunks.iter_mut().enumerate() {
        if !missing.contains(&i) {
            *c = ChunkState::Done;
            let (a, b) = spec.chunk_range(i);
            done_bytes += b - a;
            if let Some(w) = whole {
                w.hold_resumed(i);
            }
        }
    }
    (chunks, done_bytes)
}
