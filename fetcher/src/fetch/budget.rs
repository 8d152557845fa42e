//! The engine's memory bound: chunk bytes in memory, counted in bytes and
//! shared by every connection of every fetch of one [`super::Fetcher`].
//!
//! Most chunks never come here: a chunk's first request writes its bytes
//! into the partial file as they arrive. A chunk is kept in memory when it
//! must not be written before it is verified (an endgame duplicate, whose
//! range another request is writing) or when the whole-object hash takes
//! chunks in order (`verify_whole`).
//!
//! A connection takes a share of the budget ([`Grant`]) before it asks for
//! such a chunk, and the share stays with the chunk's bytes ([`ChunkBuf`])
//! while they are in memory: while they arrive, while a slow request's
//! bytes wait for the rest, while they are written, and while the
//! whole-object hash holds them. A share is one chunk (the whole budget
//! when a chunk is larger), so the chunk bytes in memory never exceed the
//! budget (one chunk, when a chunk is larger than the budget), however
//! many peers and connections there are.
//!
//! Chunks held for the whole-object hash (`verify_whole`) are written
//! already, so memory for them is only a saving: they are kept here, take
//! at most half the budget, and are dropped (read back from the partial
//! file later) when a share of more than half the budget is wanted, so a
//! held chunk never keeps a connection from receiving the chunk the hash
//! waits for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Chunk bytes in memory, as a [`super::Fetcher`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMemory {
    /// The budget in bytes (`FetchOptions::chunk_memory`, at least 1).
    pub budget: u64,
    /// Bytes of chunks in memory now.
    pub live: u64,
    /// The most in memory at once since the fetcher was made.
    pub peak: u64,
}

#[derive(Debug)]
pub(super) struct Budget {
    /// Bytes, as semaphore permits (at most `u32::MAX`, what one
    /// `acquire_many` takes).
    limit: u32,
    sem: Arc<Semaphore>,
    /// Bytes received under grants that are not dropped yet.
    live: AtomicU64,
    peak: AtomicU64,
    holds: Mutex<Holds>,
    next_owner: AtomicU64,
    pool: Mutex<Pool>,
}

/// Chunk buffers to reuse: no allocation, page fault or free per chunk,
/// and memory that stays what the budget allows.
#[derive(Debug, Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    /// Capacity of every buffer, in use or free.
    allocated: u64,
}

/// Chunks the whole-object hashes hold, by (owner, chunk index).
#[derive(Debug, Default)]
struct Holds {
    chunks: HashMap<(u64, usize), ChunkBuf>,
    bytes: u64,
    /// Reservations of more than half the budget waiting: no new holds.
    big_waiters: usize,
}

impl Budget {
    pub(super) fn new(bytes: u64) -> Arc<Self> {
        let limit = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        Arc::new(Self {
            limit,
            sem: Arc::new(Semaphore::new(limit as usize)),
            live: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            holds: Mutex::new(Holds::default()),
            next_owner: AtomicU64::new(0),
            pool: Mutex::new(Pool::default()),
        })
    }

    fn holds(&self) -> MutexGuard<'_, Holds> {
        // Plain data; a panic while holding the lock leaves it usable.
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A share for one chunk of at most `chunk` bytes (the whole budget
    /// when the chunk is larger), once that much is free; waiters are
    /// served in order. A share of more than half the budget first drops
    /// the held chunks (they are on disk) and keeps new ones from being
    /// held while it waits: otherwise held chunks could keep it waiting
    /// for ever, and everyone queued behind it.
    pub(super) async fn reserve(self: &Arc<Self>, chunk: u64) -> Grant {
        let n = self.share(chunk);
        let _big = (n > self.limit / 2).then(|| BigWaiter::new(self));
        let permit = Arc::clone(&self.sem)
            .acquire_many_owned(n)
            .await
            .unwrap_or_else(|_| unreachable!("the chunk budget's semaphore is never closed"));
        self.grant(permit, chunk)
    }

    /// A share for one chunk of at most `chunk` bytes if that much is
    /// free now (an endgame duplicate, which is worth starting only then).
    pub(super) fn try_reserve(self: &Arc<Self>, chunk: u64) -> Option<Grant> {
        let permit = Arc::clone(&self.sem)
            .try_acquire_many_owned(self.share(chunk))
            .ok()?;
        Some(self.grant(permit, chunk))
    }

    fn grant(self: &Arc<Self>, permit: OwnedSemaphorePermit, chunk: u64) -> Grant {
        Grant {
            _permit: permit,
            budget: Arc::clone(self),
            bytes: 0,
            chunk,
        }
    }

    /// The permits a chunk of `chunk` bytes takes.
    fn share(&self, chunk: u64) -> u32 {
        u32::try_from(chunk.max(1))
            .unwrap_or(u32::MAX)
            .min(self.limit)
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer for a chunk of `chunk` bytes, reused if one is free.
    fn buffer(&self, chunk: u64) -> Vec<u8> {
        let cap = usize::try_from(chunk).unwrap_or(usize::MAX);
        let mut pool = self.pool();
        while let Some(v) = pool.free.pop() {
            if v.capacity() >= cap {
                return v;
            }
            pool.allocated -= v.capacity() as u64;
        }
        let v = Vec::with_capacity(cap);
        pool.allocated += v.capacity() as u64;
        v
    }

    /// Takes back a chunk's buffer: kept for the next chunk while every
    /// buffer fits in the budget, else freed.
    fn give_back(&self, mut v: Vec<u8>) {
        v.clear();
        let mut pool = self.pool();
        if pool.allocated <= u64::from(self.limit) {
            pool.free.push(v);
        } else {
            pool.allocated -= v.capacity() as u64;
            drop(pool);
            drop(v);
        }
    }

    pub(super) fn memory(&self) -> ChunkMemory {
        ChunkMemory {
            budget: u64::from(self.limit),
            live: self.live.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
        }
    }

    /// A new owner of held chunks (one whole-object hash).
    pub(super) fn owner(&self) -> u64 {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps the written chunk `i` of `owner` in memory for its
    /// whole-object hash when held chunks stay within half the budget and
    /// no big share is waiting; else drops it (`false`: read it back
    /// later).
    pub(super) fn hold(&self, owner: u64, i: usize, buf: ChunkBuf) -> bool {
        let mut h = self.holds();
        let after = h.bytes + buf.len();
        if h.big_waiters > 0 || after > u64::from(self.limit) / 2 {
            drop(h);
            drop(buf);
            return false;
        }
        h.bytes = after;
        let old = h.chunks.insert((owner, i), buf);
        drop(h);
        drop(old);
        true
    }

    /// Takes back held chunk `i` of `owner`; `None` when it was dropped.
    pub(super) fn take(&self, owner: u64, i: usize) -> Option<ChunkBuf> {
        let mut h = self.holds();
        let buf = h.chunks.remove(&(owner, i))?;
        h.bytes -= buf.len();
        Some(buf)
    }

    /// Drops every chunk `owner` holds.
    pub(super) fn release(&self, owner: u64) {
        let mut h = self.holds();
        let keys: Vec<_> = h.chunks.keys().filter(|k| k.0 == owner).copied().collect();
        let mut gone = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(buf) = h.chunks.remove(&k) {
                h.bytes -= buf.len();
                gone.push(buf);
            }
        }
        drop(h);
        drop(gone);
    }
}

/// A waiting reservation of more than half the budget (see
/// [`Budget::reserve`]); counted until it is granted or cancelled.
struct BigWaiter<'a>(&'a Budget);

impl<'a> BigWaiter<'a> {
    fn new(budget: &'a Budget) -> Self {
        let mut h = budget.holds();
        h.big_waiters += 1;
        h.bytes = 0;
        let spilled = std::mem::take(&mut h.chunks);
        drop(h);
        drop(spilled);
        Self(budget)
    }
}

impl Drop for BigWaiter<'_> {
    fn drop(&mut self) {
        self.0.holds().big_waiters -= 1;
    }
}

/// A share of the budget for one chunk, and the bytes received under it.
#[derive(Debug)]
pub(super) struct Grant {
    _permit: OwnedSemaphorePermit,
    budget: Arc<Budget>,
    /// Bytes counted in `live` for this grant.
    bytes: u64,
    /// The chunk size it was reserved for.
    chunk: u64,
}

impl Grant {
    /// Counts `n` more bytes in memory under this grant.
    fn count(&mut self, n: u64) {
        self.bytes += n;
        let now = self.budget.live.fetch_add(n, Ordering::Relaxed) + n;
        self.budget.peak.fetch_max(now, Ordering::Relaxed);
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The bytes of one chunk in memory, in a buffer of the budget's pool,
/// with the grant that lets them be there: the buffer goes back to the
/// pool and the grant to the budget together.
///
/// The body's pieces are copied in as they arrive (just hashed, so still
/// in the CPU cache) and dropped at once: the HTTP client then reuses its
/// read buffer instead of allocating a new one per read, whereas keeping
/// the pieces would keep alive the whole allocation each piece was read
/// into, which can be many times the piece, beyond any count of bytes.
#[derive(Debug)]
pub(super) struct ChunkBuf {
    data: Vec<u8>,
    grant: Grant,
}

impl ChunkBuf {
    pub(super) fn new(grant: Grant) -> Self {
        Self {
            data: grant.budget.buffer(grant.chunk),
            grant,
        }
    }

    /// Takes the next piece of the chunk.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.grant.count(bytes.len() as u64);
        self.data.extend_from_slice(bytes);
    }

    /// The chunk's bytes, as parts to write in order.
    pub(super) fn parts(&self) -> &[Vec<u8>] {
        std::slice::from_ref(&self.data)
    }

    pub(super) fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        self.grant.budget.give_back(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn chunk(b: &Arc<Budget>, n: usize) -> ChunkBuf {
        let mut c = ChunkBuf::new(b.reserve(n as u64).await);
        c.push(&vec![0u8; n]);
        c
    }

    #[tokio::test]
    async fn grants_count_bytes_until_dropped() {
        let b = Budget::new(10);
        let mut g = ChunkBuf::new(b.reserve(4).await);
        g.push(b"abc");
        g.push(b"");
        assert_eq!(g.len(), 3);
        assert_eq!(b.memory().live, 3);
        // A chunk larger than the budget waits for all of it.
        let big = tokio::time::timeout(Duration::from_millis(50), b.reserve(100));
        assert!(big.await.is_err(), "only 6 of 10 bytes are free");
        drop(g);
        assert_eq!(
            b.memory(),
            ChunkMemory {
                budget: 10,
                live: 0,
                peak: 3
            }
        );
        let all = b.reserve(100).await;
        assert_eq!(b.sem.available_permits(), 0);
        drop(all);
        assert_eq!(b.sem.available_permits(), 10);
    }

    #[tokio::test]
    async fn holds_take_at_most_half_the_budget() {
        let b = Budget::new(16);
        let o = b.owner();
        assert!(b.hold(o, 0, chunk(&b, 4).await));
        assert!(b.hold(o, 1, chunk(&b, 4).await));
        // 12 > 16 / 2: dropped, its share back.
        assert!(!b.hold(o, 2, chunk(&b, 4).await));
        assert_eq!(b.memory().live, 8);
        assert_eq!(b.sem.available_permits(), 8);
        assert_eq!(b.take(o, 0).map(|c| c.len()), Some(4));
        assert!(b.take(o, 2).is_none());
        let other = b.owner();
        assert!(b.hold(other, 0, chunk(&b, 4).await));
        b.release(o);
        assert_eq!(b.memory().live, 4);
        assert!(b.take(other, 0).is_some());
        assert_eq!(b.memory().live, 0);
    }

    /// A share of more than half the budget drops the held chunks and
    /// blocks new holds while it waits, so held chunks cannot keep it (and
    /// everyone behind it) waiting.
    #[tokio::test]
    async fn a_big_share_drops_the_held_chunks() {
        let b = Budget::new(16);
        let o = b.owner();
        assert!(b.hold(o, 0, chunk(&b, 4).await));
        assert!(b.hold(o, 1, chunk(&b, 4).await));
        let receiving = chunk(&b, 4).await;
        let b2 = Arc::clone(&b);
        let big = tokio::spawn(async move { b2.reserve(13).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!big.is_finished(), "4 bytes are still received");
        assert_eq!(b.memory().live, 4, "the held chunks were dropped");
        assert!(!b.hold(o, 2, receiving), "no hold while a big share waits");
        let g = tokio::time::timeout(Duration::from_secs(5), big)
            .await
            .expect("granted")
            .unwrap();
        drop(g);
        assert!(b.hold(o, 3, chunk(&b, 4).await));
    }
}
