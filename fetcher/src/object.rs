//! What the fetch engine is asked for: an object's digest, length and signed
//! chunk list (the `chunks` field of a target's custom metadata).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;

/// Default chunk size of the `verifier` publisher (library use, e.g.
/// `phase image`): 4 MiB. `phase publish` picks its own per publish, 512 KiB
/// to 4 MiB (docs/fetcher.md "Chunk size").
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// The signed list of chunk digests: `{"size": 4194304, "sha256": [...]}`.
/// Chunk `i` covers bytes `[i*size, min((i+1)*size, length))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
    /// Chunk size in bytes (the last chunk may be shorter).
    pub size: u64,
    /// SHA-256 of each chunk, in order.
    pub sha256: Vec<Sha256Digest>,
}

/// A whole object: what to fetch and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// SHA-256 of the whole object (its CAS name).
    pub sha256: Sha256Digest,
    /// Length in bytes.
    pub length: u64,
    /// Per-chunk digests.
    pub chunks: ChunkList,
}

/// An object description that cannot be right.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A zero chunk size.
    #[error("chunk size is 0")]
    ZeroChunkSize,
    /// The chunk count does not fit the length and chunk size.
    #[error("{got} chunk digests for {length} bytes in chunks of {size} (expected {expected})")]
    ChunkCount {
        /// Object length.
        length: u64,
        /// Chunk size.
        size: u64,
        /// Count that fits.
        expected: u64,
        /// Count given.
        got: usize,
    },
}

impl ChunkList {
    /// Computes the chunk list of `data` (what `phase publish` signs).
    pub fn compute(data: &[u8], size: u64) -> Self {
        let step = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
        Self {
            size,
            sha256: data.chunks(step).map(Sha256Digest::of).collect(),
        }
    }

    /// One SHA-256 naming this exact list: over the chunk size (8 bytes,
    /// big-endian) followed by every chunk digest in order. The CAS records
    /// it beside an object stored on the strength of its chunks alone.
    pub fn digest(&self) -> Sha256Digest {
        let mut h = Sha256::new();
        h.update(self.size.to_be_bytes());
        for d in &self.sha256 {
            h.update(d.0);
        }
        h.finalize().into()
    }
}

impl ObjectSpec {
    /// Spec of in-memory data (publishing and tests).
    pub fn of_bytes(data: &[u8], chunk_size: u64) -> Self {
        Self {
            sha256: Sha256Digest::of(data),
            length: data.len() as u64,
            chunks: ChunkList::compute(data, chunk_size),
        }
    }

    /// Checks that the chunk list fits the length.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.chunks.size == 0 {
            return Err(SpecError::ZeroChunkSize);
        }
        let expected = self.length.div_ceil(self.chunks.size);
        if expected != self.chunks.sha256.len() as u64 {
            return Err(SpecError::ChunkCount {
                length: self.length,
                size: self.chunks.size,
                expected,
                got: self.chunks.sha256.len(),
            });
        }
        Ok(())
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.chunks.sha256.len()
    }

    /// Byte range `[start, end)` of chunk `i`.
    pub fn chunk_range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.chunks.size;
        let end = (start + self.chunks.size).min(self.length);
        (start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ranges_and_validation() {
        let data = vec![7u8; 10];
        let spec = ObjectSpec::of_bytes(&data, 4);
        assert_eq!(spec.chunk_count(), 3);
        assert_eq!(spec.chunk_range(2), (8, 10));
        spec.validate().unwrap();
        let mut bad = spec.clone();
        bad.chunks.sha256.pop();
        assert!(bad.validate().is_err());
        let mut other = spec.chunks.clone();
        other.size = 5;
        assert_ne!(other.digest(), spec.chunks.digest());
        assert_eq!(spec.chunks.clone().digest(), spec.chunks.digest());
        let empty = ObjectSpec::of_bytes(&[], 4);
        assert_eq!(empty.chunk_count(), 0);
        empty.validate().unwrap();
    }
}
