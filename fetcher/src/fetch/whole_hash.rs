//! The whole-object SHA-256 of a chunked fetch, computed while the
//! verified chunks are written.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::cas::{CasError, PartialObject};
use crate::digest::Sha256Digest;

/// Chunks whose parts the whole-object hash keeps while it waits for an
/// earlier chunk; beyond that it reads chunks back from the partial file.
const HASH_HELD: usize = 4;

/// The whole-object SHA-256, advanced in chunk order as chunks are
/// committed: the chunk that is next in order is hashed part by part right
/// after each part is written (the bytes are still in the CPU cache, no
/// second copy, no read back), chunks that arrive early are held (their
/// parts, at most [`HASH_HELD`] chunks; else read back later) until the
/// chunks before them are in.
pub(super) struct WholeHash {
    state: Mutex<WholeState>,
}

struct WholeState {
    hasher: Sha256,
    /// The next chunk the hash needs.
    next: usize,
    /// Written chunks after `next`, with their parts when kept.
    held: BTreeMap<usize, Option<Vec<Bytes>>>,
    held_parts: usize,
    /// A write failed half-way through the chunk being hashed.
    broken: bool,
    buf: Vec<u8>,
}

impl WholeHash {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(WholeState {
                hasher: Sha256::new(),
                next: 0,
                held: BTreeMap::new(),
                held_parts: 0,
                broken: false,
                buf: Vec::new(),
            }),
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
        self.lock().held.insert(i, None);
    }

    /// Writes the verified chunk `i` (its `parts`, in order) into the
    /// partial object and advances the whole-object hash (blocking).
    pub(super) fn commit(
        &self,
        partial: &PartialObject,
        i: usize,
        parts: Vec<Bytes>,
        digest: &Sha256Digest,
    ) -> Result<(), CasError> {
        let mut w = self.lock();
        w.drain(partial)?;
        if w.next == i && !w.broken {
            let r = {
                let hasher = &mut w.hasher;
                partial.write_chunk_parts(i, &parts, digest, |b| hasher.update(b))
            };
            if r.is_err() {
                w.broken = true;
                return r;
            }
            w.next += 1;
            return w.drain(partial);
        }
        drop(w);
        partial.write_chunk_parts(i, &parts, digest, |_| {})?;
        let mut w = self.lock();
        if w.broken {
            return Ok(());
        }
        if w.next == i {
            for p in &parts {
                w.hasher.update(p);
            }
            w.next += 1;
            w.drain(partial)
        } else {
            let keep = w.held_parts < HASH_HELD;
            w.held_parts += usize::from(keep);
            w.held.insert(i, keep.then_some(parts));
            Ok(())
        }
    }

    /// The SHA-256 of the whole object once every chunk is committed;
    /// `None` when the hash could not follow (the caller re-hashes the
    /// file).
    pub(super) fn finish(&self, partial: &PartialObject) -> Result<Option<Sha256Digest>, CasError> {
        let mut w = self.lock();
        w.drain(partial)?;
        if w.broken || w.next != partial.spec().chunk_count() {
            return Ok(None);
        }
        Ok(Some(w.hasher.clone().finalize().into()))
    }
}

impl WholeState {
    /// Hashes the held chunks that are now next in order.
    fn drain(&mut self, partial: &PartialObject) -> Result<(), CasError> {
        while let Some(parts) = self.held.remove(&self.next) {
            match parts {
                Some(parts) => {
                    for p in &parts {
                        self.hasher.update(p);
                    }
                    self.held_parts -= 1;
                }
                None => {
                    partial.read_chunk(self.next, &mut self.buf)?;
                    self.hasher.update(&self.buf);
                }
            }
            self.next += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::Cas;
    use crate::object::ObjectSpec;

    /// Chunks committed out of order, more of them early than
    /// [`HASH_HELD`] (so some are read back), in several pieces, plus a
    /// chunk found on disk at the start: the whole-object hash still comes
    /// out as the SHA-256 of the object, and the object finishes.
    #[test]
    fn whole_hash_follows_out_of_order_commits() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(10 * 4096 + 123))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let spec = ObjectSpec::of_bytes(&data, 4096);
        let n = spec.chunk_count();
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        let whole = WholeHash::new();
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
            whole
                .commit(&partial, i, parts(i), &spec.chunks.sha256[i])
                .unwrap();
        }
        assert_eq!(whole.lock().next, n);
        let digest = whole.finish(&partial).unwrap().expect("hash followed");
        assert_eq!(digest, spec.sha256);
        let path = partial.finish(&digest).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
    }

    /// A chunk whose parts do not hash to its signed digest is refused and
    /// leaves the whole-object hash where it was.
    #[test]
    fn commit_refuses_a_wrong_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data = vec![7u8; 3 * 1000];
        let spec = ObjectSpec::of_bytes(&data, 1000);
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        let whole = WholeHash::new();
        let junk = vec![Bytes::from(vec![8u8; 1000])];
        let bad = Sha256Digest::of(&[8u8; 1000]);
        assert!(whole.commit(&partial, 0, junk, &bad).is_err());
        assert!(!partial.is_verified(0));
        // The state is marked broken: the final hash is re-done from disk.
        assert!(whole.finish(&partial).unwrap().is_none());
    }
}
