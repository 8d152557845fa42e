//! The 512-byte superblock at the start of a `veritysetup` hash device
//! (cryptsetup's `struct verity_sb`, little-endian, packed):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | signature `verity\0\0` |
//! | 8 | 4 | superblock version, 1 |
//! | 12 | 4 | hash type (format version), 1 |
//! | 16 | 16 | UUID |
//! | 32 | 32 | hash algorithm name, NUL-padded |
//! | 64 | 4 | data block size |
//! | 68 | 4 | hash block size |
//! | 72 | 8 | data blocks |
//! | 80 | 2 | salt size |
//! | 82 | 6 | zero |
//! | 88 | 256 | salt, zero-padded |
//! | 344 | 168 | zero |

use crate::{Error, HASH_ALGORITHM, VERSION};

/// Bytes of the superblock.
pub const SUPERBLOCK_SIZE: usize = 512;

const SIGNATURE: &[u8; 8] = b"verity\0\0";
const SB_VERSION: u32 = 1;

/// Why bytes are not a superblock this crate understands.
#[derive(Debug, thiserror::Error)]
pub enum SuperblockError {
    /// Fewer than 512 bytes.
    #[error("superblock is {0} bytes, 512 expected")]
    Short(usize),
    /// No `verity` signature.
    #[error("no verity superblock signature")]
    Signature,
    /// A version, hash type or algorithm other than 1, 1, sha256.
    #[error("unsupported superblock: {0}")]
    Unsupported(String),
    /// Block sizes or salt out of range.
    #[error("superblock parameters are invalid")]
    Params(#[source] Error),
}

/// The parameters a hash device records about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The hash device's UUID.
    pub uuid: [u8; 16],
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Data blocks the tree covers.
    pub data_blocks: u64,
    /// The salt.
    pub salt: Vec<u8>,
}

impl Superblock {
    /// The 512 bytes `veritysetup format` writes. The salt must be at most
    /// 256 bytes (as [`crate::Params`] ensures); a longer one is cut there.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&SB_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&VERSION.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..32 + HASH_ALGORITHM.len()].copy_from_slice(HASH_ALGORITHM.as_bytes());
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt = &self.salt[..self.salt.len().min(crate::MAX_SALT_SIZE)];
        // At most 256: fits a u16.
        b[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        b[88..88 + salt.len()].copy_from_slice(salt);
        b
    }

    /// Reads a superblock of format version 1 with SHA-256.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let b = bytes
            .get(..SUPERBLOCK_SIZE)
            .ok_or(SuperblockError::Short(bytes.len()))?;
        if &b[0..8] != SIGNATURE {
            return Err(SuperblockError::Signature);
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let (sb_version, hash_type) = (u32_at(8), u32_at(12));
        if sb_version != SB_VERSION || hash_type != VERSION {
            return Err(SuperblockError::Unsupported(format!(
                "superblock version {sb_version}, hash type {hash_type} (1 and 1 supported)"
            )));
        }
        let alg = &b[32..64];
        let alg_len = alg.iter().position(|&c| c == 0).unwrap_or(alg.len());
        if &alg[..alg_len] != HASH_ALGORITHM.as_bytes() {
            return Err(SuperblockError::Unsupported(format!(
                "hash algorithm {:?} ({HASH_ALGORITHM} supported)",
                String::from_utf8_lossy(&alg[..alg_len])
            )));
        }
        let salt_len = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_len > crate::MAX_SALT_SIZE {
            return Err(SuperblockError::Params(Error::SaltTooLong {
                len: salt_len,
            }));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let mut data_blocks = [0u8; 8];
        data_blocks.copy_from_slice(&b[72..80]);
        let sb = Superblock {
            uuid,
            data_block_size: u32_at(64),
            hash_block_size: u32_at(68),
            data_blocks: u64::from_le_bytes(data_blocks),
            salt: b[88..88 + salt_len].to_vec(),
        };
        sb.params().map_err(SuperblockError::Params)?;
        Ok(sb)
    }

    /// The tree parameters it records.
    pub fn params(&self) -> Result<crate::Params, Error> {
        crate::Params::new(
            self.data_block_size,
            self.hash_block_size,
            self.salt.clone(),
        )
    }
}
