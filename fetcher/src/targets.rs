//! From verified TUF targets to bytes on disk: the one entry point the
//! three binaries (phase-init's stage 1, plasmd, `phase fetch`) share.
//!
//! * `ObjectSpec::try_from(&verifier::Target)`: the signed SHA-256, length
//!   and chunk list (custom metadata `chunks`) as the engine wants them;
//!   an error names the target and what is wrong.
//! * [`TargetObject`]: one target to fetch: name, release version, spec and
//!   repository path (for static mirrors).
//! * [`Lookup`]: where a target's bytes come from, in order: the local CAS
//!   (the [`Fetcher`]'s own), then read-only caches (a cache partition
//!   mounted read-only, the payload stage 1 left in `/phase`), then the
//!   peers (through the fetch engine, chunk by chunk against the signed
//!   list, into the local CAS). [`Found::origin`] says which, so callers
//!   keep their own console and log lines.
//!
//! The verifier decided the target is trusted; this module only turns its
//! description into the engine's and picks the source. An object found in
//! a cache is the caller's to hash again before use (as the engine does for
//! what it fetches): a cache partition can be tampered with.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cas::{self, CasError};
use crate::digest::Sha256Digest;
use crate::fetch::{FetchError, FetchReport, Fetcher, ProgressFn, Source, SourceFeed};
use crate::object::{ChunkList, ObjectSpec, SpecError};
use crate::peer::Peer;

/// A signed target whose metadata does not describe a fetchable object.
#[derive(Debug, thiserror::Error)]
#[error("target {name}: {problem}")]
pub struct TargetSpecError {
    /// The target's name.
    pub name: String,
    /// What is wrong with its metadata.
    pub problem: SpecProblem,
}

/// What is wrong with a target's metadata (see [`TargetSpecError`]).
#[derive(Debug, thiserror::Error)]
pub enum SpecProblem {
    /// No SHA-256 among the hashes (the CAS is keyed by it).
    #[error("no sha256 hash")]
    NoSha256,
    /// The SHA-256 is not 64 hex digits.
    #[error("sha256 {0:?} is not 64 hex digits")]
    BadSha256(String),
    /// No `chunks` in the custom metadata.
    #[error("no chunk list in the custom metadata")]
    NoChunks,
    /// `chunks` is not `{"size": N, "sha256": [...]}`.
    #[error("malformed chunk list in the custom metadata ({0})")]
    MalformedChunks(String),
    /// A chunk digest is not 64 hex digits.
    #[error("chunk {index} of the chunk list: {digest:?} is not 64 hex digits")]
    BadChunkDigest {
        /// Its index in the list.
        index: usize,
        /// The digest as listed (at most 80 characters).
        digest: String,
    },
    /// The chunk list does not fit the length.
    #[error("chunk list: {0}")]
    Chunks(SpecError),
}

impl TryFrom<&verifier::Target> for ObjectSpec {
    type Error = TargetSpecError;

    /// The target's SHA-256, length and signed chunk list. Only the
    /// `chunks` field of the custom metadata is read (jobs carry their own
    /// fields beside it); the list must fit the length.
    fn try_from(t: &verifier::Target) -> Result<Self, Self::Error> {
        let bad = |problem| TargetSpecError {
            name: t.name.clone(),
            problem,
        };
        let hex = t.sha256().ok_or_else(|| bad(SpecProblem::NoSha256))?;
        let sha256 = Sha256Digest::from_hex(hex).map_err(|e| bad(SpecProblem::BadSha256(e.0)))?;
        let listed = t
            .custom
            .as_ref()
            .and_then(|c| c.get("chunks"))
            .ok_or_else(|| bad(SpecProblem::NoChunks))?;
        let listed: verifier::Chunks = serde_json::from_value(listed.clone())
            .map_err(|e| bad(SpecProblem::MalformedChunks(e.to_string())))?;
        let mut digests = Vec::with_capacity(listed.sha256.len());
        for (index, h) in listed.sha256.iter().enumerate() {
            let d = Sha256Digest::from_hex(h)
                .map_err(|e| bad(SpecProblem::BadChunkDigest { index, digest: e.0 }))?;
            digests.push(d);
        }
        let spec = ObjectSpec {
            sha256,
            length: t.length,
            chunks: ChunkList {
                size: listed.size,
                sha256: digests,
            },
        };
        spec.validate().map_err(|e| bad(SpecProblem::Chunks(e)))?;
        Ok(spec)
    }
}

/// One verified target to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetObject {
    /// The target's name (`stable/x86_64/kernel`, `jobs/hello.wasm`).
    pub name: String,
    /// Its release version (custom metadata `version`; empty if none),
    /// recorded in `refs.json`.
    pub version: String,
    /// What to fetch and how to check it.
    pub spec: ObjectSpec,
    /// Its path below a repository's `targets/` (what a static mirror
    /// serves; hash-prefixed with consistent snapshots).
    pub path: String,
}

impl TargetObject {
    /// The object of a verified target; `consistent_snapshot` is the
    /// trusted root's.
    pub fn new(t: &verifier::Target, consistent_snapshot: bool) -> Result<Self, TargetSpecError> {
        Ok(Self {
            name: t.name.clone(),
            version: t.version().unwrap_or_default().to_owned(),
            spec: ObjectSpec::try_from(t)?,
            path: t.repository_path(consistent_snapshot),
        })
    }
}

/// Where a target's bytes were found.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Already in the local CAS (nothing fetched).
    Local,
    /// In the read-only cache at this directory.
    Cache(PathBuf),
    /// Fetched from peers into the local CAS.
    Peers(FetchReport),
}

/// A target's bytes on disk.
#[derive(Debug)]
pub struct Found {
    /// The object file.
    pub path: PathBuf,
    /// Where it came from.
    pub origin: Origin,
    /// Time the lookup took.
    pub elapsed: Duration,
    /// Set when the version could not be recorded in the local CAS's
    /// `refs.json` ([`Lookup::record_refs`]); the object is there anyway.
    pub ref_error: Option<CasError>,
}

/// Finds verified targets: local CAS, then read-only caches, then peers.
#[derive(Debug, Clone)]
pub struct Lookup {
    fetcher: Fetcher,
    caches: Vec<PathBuf>,
    peers: Vec<Peer>,
    record_refs: bool,
}

impl Lookup {
    /// Looks in `fetcher`'s CAS only, until caches and peers are added.
    /// Records versions in `refs.json` unless told otherwise.
    pub fn new(fetcher: Fetcher) -> Self {
        Self {
            fetcher,
            caches: Vec::new(),
            peers: Vec::new(),
            record_refs: true,
        }
    }

    /// Read-only caches (directories in the CAS layout), looked at in order
    /// after the local CAS.
    pub fn with_caches(mut self, caches: impl IntoIterator<Item = PathBuf>) -> Self {
        self.caches = caches.into_iter().collect();
        self
    }

    /// The peers asked, in order, for what no cache holds.
    pub fn with_peers(mut self, peers: Vec<Peer>) -> Self {
        self.peers = peers;
        self
    }

    /// Whether an object that ends in the local CAS has its target's
    /// version recorded in `refs.json` (which `phase cache gc` keeps).
    /// Off for a CAS that is thrown away (a RAM CAS).
    pub fn record_refs(mut self, record: bool) -> Self {
        self.record_refs = record;
        self
    }

    /// The engine (its CAS is the local one, its HTTP client is shared
    /// with the metadata transport).
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The peers.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Where `d` is without asking the network: the local CAS, then the
    /// read-only caches.
    pub fn held(&self, spec: &ObjectSpec) -> Option<(PathBuf, Origin)> {
        let (cas, d) = (self.fetcher.cas(), &spec.sha256);
        // An object stored for another chunk list is not taken as it is:
        // the fetch hashes it whole first (and moves it aside if it is not
        // the object).
        if cas.contains(d) {
            return self
                .fetcher
                .stored_fits(spec)
                .then(|| (cas.object_path(d), Origin::Local));
        }
        self.caches.iter().find_map(|dir| {
            let path = cas::object_in(dir, d);
            (path.is_file() && self.fetcher.fits(spec, cas::stored_in(dir, d)))
                .then(|| (path, Origin::Cache(dir.clone())))
        })
    }

    /// Where each peer serves `t` (peers whose URL cannot name it are
    /// left out).
    pub fn sources(&self, t: &TargetObject) -> Vec<Source> {
        self.peers
            .iter()
            .filter_map(|p| p.source(&t.spec.sha256, &t.path).ok())
            .collect()
    }

    /// Finds `t`: local CAS, read-only caches, then the peers (and every
    /// source arriving on `feed` while the fetch runs). Without a peer and
    /// a feed, an object no cache holds is [`FetchError::NoPeers`].
    pub async fn find(
        &self,
        t: &TargetObject,
        feed: Option<SourceFeed>,
        progress: Option<ProgressFn>,
    ) -> Result<Found, FetchError> {
        let start = Instant::now();
        let d = t.spec.sha256;
        let (path, origin) = match self.held(&t.spec) {
            Some(found) => found,
            None => {
                let sources = self.sources(t);
                if sources.is_empty() && feed.is_none() && !self.fetcher.cas().contains(&d) {
                    return Err(FetchError::NoPeers(d));
                }
                let report = self
                    .fetcher
                    .fetch_with_feed(&t.spec, sources, feed, progress)
                    .await?;
                // Another writer may have finished it while this one waited.
                let origin = if report.already_present {
                    Origin::Local
                } else {
                    Origin::Peers(report.clone())
                };
                (report.path, origin)
            }
        };
        let ref_error = match &origin {
            Origin::Local | Origin::Peers(_) if self.record_refs => {
                self.fetcher.cas().record_ref(&t.name, &t.version, &d).err()
            }
            _ => None,
        };
        Ok(Found {
            path,
            origin,
            elapsed: start.elapsed(),
            ref_error,
        })
    }
}

impl Found {
    /// Whether the bytes were already on this node (local CAS or a cache).
    pub fn was_held(&self) -> bool {
        !matches!(self.origin, Origin::Peers(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(custom: serde_json::Value, data: &[u8]) -> verifier::Target {
        verifier::Target {
            name: "stable/x86_64/kernel".into(),
            length: data.len() as u64,
            hashes: [("sha256".to_owned(), verifier::digest::sha256_hex(data))].into(),
            custom: Some(custom),
            role: "targets".into(),
        }
    }

    fn custom(data: &[u8], size: u64) -> serde_json::Value {
        serde_json::json!({
            "kind": "kernel",
            "version": "1.2.3",
            "chunks": verifier::Chunks::of(data, size),
        })
    }

    #[test]
    fn spec_of_a_good_target() {
        let data = b"0123456789";
        let t = target(custom(data, 4), data);
        let spec = ObjectSpec::try_from(&t).unwrap();
        assert_eq!(spec, ObjectSpec::of_bytes(data, 4));
        let o = TargetObject::new(&t, true).unwrap();
        assert_eq!(o.version, "1.2.3");
        assert_eq!(
            o.path,
            format!("stable/x86_64/{}.kernel", spec.sha256.to_hex())
        );
    }

    #[test]
    fn malformed_chunk_lists_name_the_target() {
        let data = b"0123456789";
        let one_line = |custom: serde_json::Value| {
            let e = ObjectSpec::try_from(&target(custom, data)).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("target stable/x86_64/kernel: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            assert!(std::error::Error::source(&e).is_none(), "{msg}");
            msg
        };
        let mut bad_digest = custom(data, 4);
        bad_digest["chunks"]["sha256"][1] = "zz".into();
        let msg = one_line(bad_digest);
        assert!(msg.contains("chunk 1 of the chunk list"), "{msg}");

        let mut short = custom(data, 4);
        short["chunks"]["sha256"].as_array_mut().unwrap().pop();
        let msg = one_line(short);
        assert!(msg.contains("2 chunk digests for 10 bytes"), "{msg}");

        let mut not_a_list = custom(data, 4);
        not_a_list["chunks"] = "every 4 bytes".into();
        assert!(one_line(not_a_list).contains("malformed chunk list"));

        let mut zero = custom(data, 4);
        zero["chunks"]["size"] = 0.into();
        assert!(one_line(zero).contains("chunk size is 0"));

        let msg = one_line(serde_json::json!({"kind": "kernel"}));
        assert!(msg.contains("no chunk list"), "{msg}");

        let mut no_sha = target(custom(data, 4), data);
        no_sha.hashes.clear();
        let msg = ObjectSpec::try_from(&no_sha).unwrap_err().to_string();
        assert_eq!(msg, "target stable/x86_64/kernel: no sha256 hash");
    }
}
