//! Length and hash checks, on whole buffers and while streaming with a size
//! bound (the listed length is the cap; one byte more is an error).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256, Sha512};

use crate::error::HashMismatch;

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Streaming length + hash verifier for bytes described by TUF metadata.
pub struct StreamDigest {
    expected_len: Option<u64>,
    hashers: Vec<(String, String, Hasher)>,
    seen: u64,
}

impl std::fmt::Debug for StreamDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDigest")
            .field("expected_len", &self.expected_len)
            .field("seen", &self.seen)
            .finish()
    }
}

impl StreamDigest {
    /// A verifier for the listed `length` and `hashes` (hex by algorithm).
    /// `require_hash`: targets must list at least one hash; metadata may not.
    pub fn new(
        length: Option<u64>,
        hashes: Option<&BTreeMap<String, String>>,
        require_hash: bool,
    ) -> Result<Self, HashMismatch> {
        let mut hashers = Vec::new();
        for (alg, hex_digest) in hashes.into_iter().flatten() {
            let h = match alg.as_str() {
                "sha256" => Hasher::Sha256(Sha256::new()),
                "sha512" => Hasher::Sha512(Sha512::new()),
                other => return Err(HashMismatch::UnsupportedAlgorithm(other.to_string())),
            };
            hashers.push((alg.clone(), hex_digest.to_ascii_lowercase(), h));
        }
        if require_hash && hashers.is_empty() {
            return Err(HashMismatch::NoHashes);
        }
        Ok(StreamDigest {
            expected_len: length,
            hashers,
            seen: 0,
        })
    }

    /// Feed bytes; fails as soon as more than the listed length arrived.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), HashMismatch> {
        self.seen += bytes.len() as u64;
        if let Some(expected) = self.expected_len {
            if self.seen > expected {
                return Err(HashMismatch::Length {
                    expected,
                    found: self.seen,
                });
            }
        }
        for (_, _, h) in &mut self.hashers {
            match h {
                Hasher::Sha256(h) => h.update(bytes),
                Hasher::Sha512(h) => h.update(bytes),
            }
        }
        Ok(())
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Check the final length and every hash.
    pub fn finish(self) -> Result<(), HashMismatch> {
        if let Some(expected) = self.expected_len {
            if self.seen != expected {
                return Err(HashMismatch::Length {
                    expected,
                    found: self.seen,
                });
            }
        }
        for (alg, expected, h) in self.hashers {
            let found = match h {
                Hasher::Sha256(h) => hex::encode(h.finalize()),
                Hasher::Sha512(h) => hex::encode(h.finalize()),
            };
            if found != expected {
                return Err(HashMismatch::Hash {
                    algorithm: alg,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Check a whole buffer against a listed length and hashes.
pub fn verify_length_and_hashes(
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
    require_hash: bool,
) -> Result<(), HashMismatch> {
    let mut d = StreamDigest::new(length, hashes, require_hash)?;
    d.update(bytes)?;
    d.finish()
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_length_and_hash() {
        let h: BTreeMap<String, String> = [("sha256".to_string(), sha256_hex(b"abc"))].into();
        assert!(verify_length_and_hashes(b"abc", Some(3), Some(&h), true).is_ok());
        assert!(matches!(
            verify_length_and_hashes(b"abcd", Some(3), Some(&h), true),
            Err(HashMismatch::Length { .. })
        ));
        assert!(matches!(
            verify_length_and_hashes(b"abd", Some(3), Some(&h), true),
            Err(HashMismatch::Hash { .. })
        ));
        assert_eq!(
            verify_length_and_hashes(b"abd", None, None, true),
            Err(HashMismatch::NoHashes)
        );
        let md5: BTreeMap<String, String> = [("md5".to_string(), "00".to_string())].into();
        assert!(matches!(
            verify_length_and_hashes(b"abd", None, Some(&md5), false),
            Err(HashMismatch::UnsupportedAlgorithm(_))
        ));
    }
}
