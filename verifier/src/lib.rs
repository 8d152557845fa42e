//! Phase Boot's trust core: a TUF 1.0 client and the signing side of a
//! repository, Ed25519 only, canonical JSON as the specification requires.
//!
//! What it owns: metadata types ([`metadata`]), canonical JSON ([`cjson`]),
//! signature counting over distinct keys ([`crypto`]), the pure verification
//! core ([`TrustedSet`]: bytes + a fixed start time in, verified metadata or
//! a typed [`Error`] out), the update workflow ([`Updater`]) over a
//! [`Storage`] for trusted state and a [`Transport`] for repository files,
//! verified targets with Phase Boot's custom metadata ([`Target`],
//! [`PhaseCustom`], [`Chunks`], a rootfs's dm-verity parameters [`Verity`])
//! and the publishing side ([`publish`]).
//!
//! What it does not own: the network (transports live in the fetcher and the
//! CLI), the clock policy (callers pass the start time), printing.
//!
//! ```no_run
//! use verifier::{DirStorage, DirTransport, Updater};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = DirStorage::new("/cache/tuf")?;
//! verifier::install_root(&storage, &std::fs::read("/etc/phase/root.json")?, chrono::Utc::now())?;
//! let mut up = Updater::new(storage, DirTransport::new("/mnt/repo"), chrono::Utc::now());
//! up.refresh()?;
//! let kernel = up.target("stable/x86_64/kernel")?;
//! let custom = kernel.phase()?; // kind, version, cmdline, chunks
//! let bytes = up.download_bytes(&kernel)?; // length-bounded, hash-checked
//! # let _ = (custom, bytes); Ok(()) }
//! ```
//!
//! Root key fingerprint ([`root_fingerprint`]): hex SHA-256 over the root
//! role's key ids, sorted, lowercase, each followed by `\n`; its first 16 hex
//! characters go into mDNS TXT `root=`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cjson;
pub mod crypto;
pub mod digest;
pub mod error;
mod fnmatch;
pub mod keys;
pub mod metadata;
pub mod publish;
pub mod store;
pub mod target;
pub mod trusted;
pub mod updater;

pub use crypto::SigningKey;
pub use digest::StreamDigest;
pub use error::{error_chain, Error, HashMismatch, Rule, StorageError, TargetRule, TransportError};
pub use store::{read_capped, DirStorage, DirTransport, MemoryStorage, Storage, Transport};
pub use target::{
    check_target_name, Chunks, Kind, PhaseCustom, Target, Verity, DEFAULT_CHUNK_SIZE,
};
pub use trusted::{verify_kept_release, KeptRelease, TrustedSet};
pub use updater::{encode_name, install_root, role_file, root_fingerprint, Limits, Updater};
