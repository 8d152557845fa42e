//! dm-verity hash trees in the on-disk format of cryptsetup's
//! `veritysetup format`: hash format version 1, SHA-256, a salt, data and
//! hash block sizes (4096 bytes by default), and the 512-byte superblock
//! that `veritysetup` writes at the start of the hash device by default.
//!
//! What it owns: building the tree while the data streams through a
//! [`Builder`] (memory: the tree itself, about 1/127 of the data, 8 MiB per
//! GiB with the default block sizes), writing the hash device image
//! ([`Tree::write`]), the [`Superblock`] encoding, and the device-mapper
//! table line that opens the data through dm-verity ([`Table`]).
//!
//! What it does not own: where the parameters come from (the signed TUF
//! metadata, read by the `verifier` crate), device-mapper ioctls, loop
//! devices, files.
//!
//! The format (the kernel's `Documentation/admin-guide/device-mapper/verity.rst`
//! and cryptsetup's `lib/verity/verity_hash.c`):
//! * every data block is hashed as SHA-256(salt || block) (version 1);
//! * the digests, in block order, are packed into hash blocks of
//!   `hash_block_size / 32` digests each, the last block padded with zeros:
//!   that is level 0; each level is hashed the same way into the next until
//!   a level is a single hash block, whose salted hash is the root hash. One
//!   data block has no levels at all: its salted hash is the root hash;
//! * on the hash device the top level (one block) comes first and level 0
//!   last; with a superblock, the tree starts at the first hash block after
//!   it ([`Layout::hash_start_block`]).
//!
//! ```
//! let params = verity::Params::new(4096, 4096, vec![0x5a; 32]).unwrap();
//! let mut b = verity::Builder::new(params);
//! std::io::Write::write_all(&mut b, &vec![7u8; 3 * 4096]).unwrap();
//! let tree = b.finish().unwrap();
//! let mut dev = Vec::new();
//! tree.write(&mut dev, verity::Layout::Superblock { uuid: [1; 16] }).unwrap();
//! assert_eq!(dev.len(), 2 * 4096); // superblock + one level of one block
//! assert_eq!(tree.root_hex().len(), 64);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

mod superblock;
mod table;

pub use superblock::{Superblock, SuperblockError, SUPERBLOCK_SIZE};
pub use table::Table;

/// The only hash format version this crate writes: SHA-256(salt || block).
pub const VERSION: u32 = 1;
/// The only hash algorithm this crate writes, as the kernel and
/// `veritysetup` name it.
pub const HASH_ALGORITHM: &str = "sha256";
/// Bytes of a SHA-256 digest (a power of two: digests fill hash blocks
/// without gaps).
pub const DIGEST_SIZE: usize = 32;
/// Default data and hash block size, `veritysetup`'s.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Default salt length, `veritysetup`'s.
pub const DEFAULT_SALT_SIZE: usize = 32;
/// Longest salt the superblock can hold.
pub const MAX_SALT_SIZE: usize = 256;
/// Smallest block size (one sector).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted here. The kernel also needs a block size no
/// larger than its page size (4096 on x86_64).
pub const MAX_BLOCK_SIZE: u32 = 65536;

/// What is wrong with parameters or data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block size outside the format's range.
    #[error(
        "{what} block size {size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
    )]
    BlockSize {
        /// `data` or `hash`.
        what: &'static str,
        /// The size given.
        size: u32,
    },
    /// The salt does not fit the superblock.
    #[error("salt is {len} bytes, at most {MAX_SALT_SIZE} fit the superblock")]
    SaltTooLong {
        /// Its length.
        len: usize,
    },
    /// The salt is not hexadecimal.
    #[error("salt {0:?} is not an even number of hex digits")]
    SaltHex(String),
    /// The data ends inside a block (dm-verity maps whole blocks only, and
    /// `veritysetup format` silently leaves such a tail unhashed).
    #[error("data is {len} bytes, not a whole number of {block}-byte data blocks")]
    PartialBlock {
        /// Data length.
        len: u64,
        /// Data block size.
        block: u32,
    },
    /// No data at all.
    #[error("data is empty: a verity tree covers at least one data block")]
    Empty,
    /// More levels than the kernel supports (63).
    #[error("{data_blocks} data blocks need {levels} tree levels, more than the kernel's 63")]
    TooManyLevels {
        /// Data blocks.
        data_blocks: u64,
        /// Levels needed.
        levels: usize,
    },
    /// A device name a table line cannot carry.
    #[error("{what} device {dev:?} is empty or has whitespace")]
    Device {
        /// `data` or `hash`.
        what: &'static str,
        /// The name given.
        dev: String,
    },
    /// An optional table parameter a table line cannot carry.
    #[error("optional parameter {0:?} is empty or has whitespace")]
    Option(String),
    /// Reading the data failed.
    #[error("reading the data failed")]
    Read(#[source] io::Error),
}

/// The parameters a tree is built with (version 1 and SHA-256 are fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    data_block_size: u32,
    hash_block_size: u32,
    salt: Vec<u8>,
}

impl Params {
    /// Checked parameters: block sizes powers of two from 512 to 65536
    /// bytes, salt at most 256 bytes (it may be empty).
    pub fn new(data_block_size: u32, hash_block_size: u32, salt: Vec<u8>) -> Result<Self, Error> {
        for (what, size) in [("data", data_block_size), ("hash", hash_block_size)] {
            if !size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
                return Err(Error::BlockSize { what, size });
            }
        }
        if salt.len() > MAX_SALT_SIZE {
            return Err(Error::SaltTooLong { len: salt.len() });
        }
        Ok(Params {
            data_block_size,
            hash_block_size,
            salt,
        })
    }

    /// [`Params::new`] with the salt as hex (upper or lower case).
    pub fn with_hex_salt(
        data_block_size: u32,
        hash_block_size: u32,
        salt_hex: &str,
    ) -> Result<Self, Error> {
        let salt = hex::decode(salt_hex).map_err(|_| Error::SaltHex(salt_hex.to_string()))?;
        Params::new(data_block_size, hash_block_size, salt)
    }

    /// Data block size in bytes.
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }

    /// Hash block size in bytes.
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Digests per hash block.
    fn hashes_per_block(&self) -> usize {
        self.hash_block_size as usize / DIGEST_SIZE
    }

    /// A SHA-256 state that has already taken the salt.
    fn salted(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(&self.salt);
        h
    }
}

/// Where the tree sits on the hash device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `veritysetup format`'s default: a [`Superblock`] with this UUID,
    /// zero-padded to whole hash blocks, then the tree.
    Superblock {
        /// The hash device's UUID, recorded in the superblock.
        uuid: [u8; 16],
    },
    /// `veritysetup format --no-superblock`: the tree from byte 0.
    NoSuperblock,
}

impl Layout {
    /// The hash block where the tree starts: the dm-verity table's
    /// `<hash_start_block>`.
    pub fn hash_start_block(self, hash_block_size: u32) -> u64 {
        match self {
            Layout::Superblock { .. } => (SUPERBLOCK_SIZE as u64).div_ceil(hash_block_size.into()),
            Layout::NoSuperblock => 0,
        }
    }
}

/// Builds a tree from data written to it in any pieces: level 0 grows as
/// each data block completes, so only the tree is held in memory.
#[derive(Debug, Clone)]
pub struct Builder {
    params: Params,
    salted: Sha256,
    /// Hash of the data block being written.
    block: Sha256,
    /// Bytes of that block so far.
    filled: u32,
    /// Level 0 digests, in data block order.
    digests: Vec<u8>,
    /// Complete data blocks.
    data_blocks: u64,
}

impl Builder {
    /// An empty builder.
    pub fn new(params: Params) -> Self {
        let salted = params.salted();
        Builder {
            block: salted.clone(),
            salted,
            params,
            filled: 0,
            digests: Vec::new(),
            data_blocks: 0,
        }
    }

    /// Adds data.
    pub fn update(&mut self, mut data: &[u8]) {
        let bs = self.params.data_block_size;
        while !data.is_empty() {
            let take = ((bs - self.filled) as usize).min(data.len());
            self.block.update(&data[..take]);
            // `take` is at most `bs - filled`, a u32.
            self.filled += take as u32;
            data = &data[take..];
            if self.filled == bs {
                let done = std::mem::replace(&mut self.block, self.salted.clone());
                self.digests.extend_from_slice(&done.finalize());
                self.filled = 0;
                self.data_blocks += 1;
            }
        }
    }

    /// Bytes taken so far.
    pub fn len(&self) -> u64 {
        self.data_blocks * u64::from(self.params.data_block_size) + u64::from(self.filled)
    }

    /// Whether no byte was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tree over everything written. The data must be a whole, nonzero
    /// number of data blocks.
    pub fn finish(self) -> Result<Tree, Error> {
        if self.filled != 0 {
            return Err(Error::PartialBlock {
                len: self.len(),
                block: self.params.data_block_size,
            });
        }
        if self.data_blocks == 0 {
            return Err(Error::Empty);
        }
        let hbs = self.params.hash_block_size as usize;
        let per_block = self.params.hashes_per_block();
        // Levels bottom-up while building; written top-down.
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut digests = self.digests;
        let root = loop {
            let count = digests.len() / DIGEST_SIZE;
            if count == 1 && levels.is_empty() {
                // One data block: no tree, its own hash is the root.
                break first_digest(&digests);
            }
            let blocks = count.div_ceil(per_block);
            let mut level = vec![0u8; blocks * hbs];
            let mut next = Vec::with_capacity(blocks * DIGEST_SIZE);
            for (i, hashes) in digests.chunks(per_block * DIGEST_SIZE).enumerate() {
                let block = &mut level[i * hbs..(i + 1) * hbs];
                block[..hashes.len()].copy_from_slice(hashes);
                let mut h = self.salted.clone();
                h.update(&*block);
                next.extend_from_slice(&h.finalize());
            }
            levels.push(level);
            if blocks == 1 {
                break first_digest(&next);
            }
            digests = next;
        };
        if levels.len() > 63 {
            return Err(Error::TooManyLevels {
                data_blocks: self.data_blocks,
                levels: levels.len(),
            });
        }
        levels.reverse();
        Ok(Tree {
            params: self.params,
            data_blocks: self.data_blocks,
            root,
            levels,
        })
    }
}

fn first_digest(digests: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut d = [0u8; DIGEST_SIZE];
    d.copy_from_slice(&digests[..DIGEST_SIZE]);
    d
}

impl Write for Builder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Builds the tree of everything `data` yields (read in 1 MiB pieces).
pub fn build(mut data: impl Read, params: Params) -> Result<Tree, Error> {
    let mut b = Builder::new(params);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => b.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Read(e)),
        }
    }
    b.finish()
}

/// A finished hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    params: Params,
    data_blocks: u64,
    root: [u8; DIGEST_SIZE],
    /// Hash blocks of each level, the top level first.
    levels: Vec<Vec<u8>>,
}

impl Tree {
    /// The parameters it was built with.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The root hash.
    pub fn root_hash(&self) -> &[u8; DIGEST_SIZE] {
        &self.root
    }

    /// The root hash in lowercase hex, as `veritysetup` prints it.
    pub fn root_hex(&self) -> String {
        hex::encode(self.root)
    }

    /// Data blocks covered.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Tree levels (0 for a single data block).
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Hash blocks of the tree, without the superblock.
    pub fn hash_blocks(&self) -> u64 {
        let bytes: usize = self.levels.iter().map(Vec::len).sum();
        bytes as u64 / u64::from(self.params.hash_block_size)
    }

    /// Length of the hash device image [`Tree::write`] writes.
    pub fn device_len(&self, layout: Layout) -> u64 {
        (layout.hash_start_block(self.params.hash_block_size) + self.hash_blocks())
            * u64::from(self.params.hash_block_size)
    }

    /// The superblock `veritysetup format` would write for this tree.
    pub fn superblock(&self, uuid: [u8; 16]) -> Superblock {
        Superblock {
            uuid,
            data_block_size: self.params.data_block_size,
            hash_block_size: self.params.hash_block_size,
            data_blocks: self.data_blocks,
            salt: self.params.salt.clone(),
        }
    }

    /// Writes the hash device image: the superblock (if any) padded to whole
    /// hash blocks, then the levels, top first. Returns the bytes written.
    pub fn write(&self, mut out: impl Write, layout: Layout) -> io::Result<u64> {
        if let Layout::Superblock { uuid } = layout {
            let start = layout.hash_start_block(self.params.hash_block_size) as usize
                * self.params.hash_block_size as usize;
            let mut head = vec![0u8; start];
            head[..SUPERBLOCK_SIZE].copy_from_slice(&self.superblock(uuid).to_bytes());
            out.write_all(&head)?;
        }
        for level in &self.levels {
            out.write_all(level)?;
        }
        Ok(self.device_len(layout))
    }
}

#[cfg(test)]
mod tests;
