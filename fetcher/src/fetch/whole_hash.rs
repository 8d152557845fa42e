//! The whole-object SHA-256 of a chunked fetch, computed while the
//! verified chunks are written.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

use crate::cas::{CasError, PartialObject};
use crate::digest::Sha256Digest;

use super::budget::{Budget, ChunkBuf};

/// The whole-object SHA-256, advanced in chunk order as chunks are
/// committed: the chunk that is next in order is hashed from its buffer
/// right after it is written (no read back); a chunk that arrives early is held in
/// memory while the chunk budget allows it (see [`Budget::hold`]), else
/// read back from the partial file, block by block, once the chunks
/// before it are in.
pub(super) struct WholeHash {
    state: Mutex<WholeState>,
    budget: Arc<Budget>,
    /// This hash's name for its held chunks in the budget.
    owner: u64,
}

struct WholeState {
    hasher: Sha256,
    /// The next chunk the hash needs.
    next: usize,
    /// Written chunks after `next` (in memory if the budget still holds
    /// them, else on disk only).
    written: BTreeSet<usize>,
    /// A write failed half-way through the chunk being hashed.
    broken: bool,
    /// One block of a chunk read back.
    buf: Vec<u8>,
}

impl WholeHash {
    pub(super) fn new(budget: Arc<Budget>) -> Self {
        Self {
            state: Mutex::new(WholeState {
                hasher: Sha256::new(),
                next: 0,
                written: BTreeSet::new(),
                broken: false,
                buf: Vec::new(),
            }),
            owner: budget.owner(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, WholeState> {
        // Poisoned only by a panic while hashing; `broken` then stays
        // false only if the state is whole, and `finish` re-hashes anyway
        // when the hash did not reach the end.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunk `i` was verified on disk when the download was resumed.
    pub(super) fn hold_resumed(&self, i: usize) {
        self.lock().written.insert(i);
    }

    /// Writes the verified chunk `i` (its parts, in order) into the
    /// partial object and advances the whole-object hash (blocking).
    pub(super) fn commit(
        &self,
        partial: &PartialObject,
        i: usize,
        buf: ChunkBuf,
        digest: &Sha256Digest,
    ) -> Result<(), CasError> {
        let mut w = self.lock();
        self.drain(&mut w, partial)?;
        if w.next == i && !w.broken {
            let r = {
                let hasher = &mut w.hasher;
                partial.write_chunk_parts(i, buf.parts(), digest, |b| hasher.update(b))
            };
            drop(buf);
            if r.is_err() {
                w.broken = true;
                return r;
            }
            w.next += 1;
            return self.drain(&mut w, partial);
        }
        drop(w);
        partial.write_chunk_parts(i, buf.parts(), digest, |_| {})?;
        let mut w = self.lock();
        if w.broken {
            return Ok(());
        }
        if w.next == i {
            for p in buf.parts() {
                w.hasher.update(p);
            }
            drop(buf);
            w.next += 1;
            self.drain(&mut w, partial)
        } else {
            w.written.insert(i);
            self.budget.hold(self.owner, i, buf);
            Ok(())
        }
    }

    /// The SHA-256 of the whole object once every chunk is committed;
    /// `None` when the hash could not follow (the caller re-hashes the
    /// file).
    pub(super) fn finish(&self, partial: &PartialObject) -> Result<Option<Sha256Digest>, CasError> {
        let mut w = self.lock();
        self.drain(&mut w, partial)?;
        if w.broken || w.next != partial.spec().chunk_count() {
            return Ok(None);
        }
        Ok(Some(w.hasher.clone().finalize().into()))
    }

    /// Hashes the written chunks that are now next in order: from memory
    /// when still held, else read back.
    fn drain(&self, w: &mut WholeState, partial: &PartialObject) -> Result<(), CasError> {
        while w.written.remove(&w.next) {
            let next = w.next;
            match self.budget.take(self.owner, next) {
                Some(buf) => {
                    for p in buf.parts() {
                        w.hasher.update(p);
                    }
                }
                None => {
                    let WholeState { hasher, buf, .. } = &mut *w;
                    partial.read_chunk_blocks(next, buf, |b| hasher.update(b))?;
                }
            }
            w.next += 1;
        }
        Ok(())
    }
}

impl Drop for WholeHash {
    fn drop(&mut self) {
        self.budget.release(self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::Cas;
    use crate::object::ObjectSpec;
    use bytes::Bytes;

    /// A chunk in memory under `budget`, in the pieces `parts`.
    async fn buf(budget: &Arc<Budget>, parts: Vec<Bytes>) -> ChunkBuf {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        let mut b = ChunkBuf::new(budget.reserve(len).await);
        for p in parts {
            b.push(&p);
        }
        b
    }

    /// Chunks committed out of order, more of them early than the budget
    /// holds (so some are read back), in several pieces, plus a chunk
    /// found on disk at the start: the whole-object hash still comes out
    /// as the SHA-256 of the object, the object finishes, and no chunk
    /// stays in memory.
    #[tokio::test]
    async fn whole_hash_follows_out_of_order_commits() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(10 * 4096 + 123))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let spec = ObjectSpec::of_bytes(&data, 4096);
        let n = spec.chunk_count();
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        // Room to hold two chunks of 4096 bytes.
        let budget = Budget::new(4 * 4096);
        let whole = WholeHash::new(Arc::clone(&budget));
        let parts = |i: usize| {
            let (a, b) = spec.chunk_range(i);
            let c = &data[a as usize..b as usize];
            let mid = c.len() / 3;
            vec![
                Bytes::copy_from_slice(&c[..mid]),
                Bytes::copy_from_slice(&c[mid..]),
            ]
        };
        // Chunk 3 as if resumed: written before, known only as verified.
        let (a, b) = spec.chunk_range(3);
        let c3 = &data[a as usize..b as usize];
        partial.write_chunk(3, c3, &Sha256Digest::of(c3)).unwrap();
        whole.hold_resumed(3);
        for i in [9, 1, 7, 10, 5, 2, 8, 0, 6, 4] {
            let b = buf(&budget, parts(i)).await;
            whole
                .commit(&partial, i, b, &spec.chunks.sha256[i])
                .unwrap();
        }
        assert_eq!(budget.memory().live, 0);
        assert!(budget.memory().peak >= 3 * 4096, "chunks were held");
        assert_eq!(whole.lock().next, n);
        let digest = whole.finish(&partial).unwrap().expect("hash followed");
        assert_eq!(digest, spec.sha256);
        let path = partial.finish(&digest).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
    }

    /// A chunk whose parts do not hash to its signed digest is refused and
    /// leaves the whole-object hash where it was.
    #[tokio::test]
    async fn commit_refuses_a_wrong_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data = vec![7u8; 3 * 1000];
        let spec = ObjectSpec::of_bytes(&data, 1000);
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        let budget = Budget::new(1 << 20);
        let whole = WholeHash::new(Arc::clone(&budget));
        let junk = buf(&budget, vec![Bytes::from(vec![8u8; 1000])]).await;
        let bad = Sha256Digest::of(&[8u8; 1000]);
        assert!(whole.commit(&partial, 0, junk, &bad).is_err());
        assert!(!partial.is_verified(0));
        // The state is marked broken: the final hash is re-done from disk.
        assert!(whole.finish(&partial).unwrap().is_none());
    }
}
