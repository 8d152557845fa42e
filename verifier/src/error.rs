//! Typed errors. A rejected piece of metadata always names the role, the
//! version (when it could be read) and the rule that failed; the binaries
//! print the chain as one line, e.g.
//! `snapshot metadata v3 rejected: version 3 is lower than the trusted version 4 (rollback)`.

use chrono::{DateTime, Utc};

use crate::metadata::Expires;

/// Any failure of the client workflow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metadata file failed a rule of the specification.
    #[error("{role} metadata {} rejected", version_label(*.version))]
    Rejected {
        /// Role name.
        role: String,
        /// Version read from the file, if it could be read.
        version: Option<u64>,
        /// The rule that failed.
        #[source]
        rule: Rule,
    },
    /// The transport could not deliver a file.
    #[error("fetching {file} failed")]
    Fetch {
        /// Metadata file name or target path.
        file: String,
        /// Cause.
        #[source]
        source: TransportError,
    },
    /// Reading or writing trusted state failed.
    #[error("trusted state storage failed for {file}")]
    Storage {
        /// Storage entry name.
        file: String,
        /// Cause.
        #[source]
        source: StorageError,
    },
    /// Storage holds no trusted root and none was given.
    #[error("no trusted root.json in the trusted state storage")]
    NoTrustedRoot,
    /// `refresh()` has not succeeded yet.
    #[error("metadata has not been refreshed; call refresh() first")]
    NotRefreshed,
    /// No trusted targets role lists the target.
    #[error("target {name:?} is not listed by any trusted targets role")]
    TargetNotFound {
        /// Target path.
        name: String,
    },
    /// A target (its name or its bytes) failed a rule.
    #[error("target {name:?} rejected")]
    Target {
        /// Target path.
        name: String,
        /// The rule that failed.
        #[source]
        rule: TargetRule,
    },
}

/// An error and its causes on one line, `a: b: c`: the one printer every
/// crate and binary uses. A cause whose text the line already holds (a
/// wrapper that prints its source) is not repeated, and line breaks become
/// spaces.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}

fn version_label(v: Option<u64>) -> String {
    match v {
        Some(v) => format!("v{v}"),
        None => "(version unreadable)".to_string(),
    }
}

impl Error {
    /// The failed metadata rule, if this is a metadata rejection.
    pub fn rule(&self) -> Option<&Rule> {
        match self {
            Error::Rejected { rule, .. } => Some(rule),
            _ => None,
        }
    }

    /// The failed target rule, if this is a target rejection.
    pub fn target_rule(&self) -> Option<&TargetRule> {
        match self {
            Error::Target { rule, .. } => Some(rule),
            _ => None,
        }
    }
}

/// A rule of the TUF client workflow that metadata failed.
#[derive(Debug, thiserror::Error)]
pub enum Rule {
    /// Not JSON, or not the shape of this role's metadata.
    #[error("not valid {expected} metadata JSON")]
    Malformed {
        /// Expected `_type`.
        expected: &'static str,
        /// Parser error.
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON that breaks a structural rule (threshold 0, missing role...).
    #[error("invalid metadata: {0}")]
    Invalid(String),
    /// `_type` differs from the role expected.
    #[error("_type is {found:?}, expected {expected:?}")]
    WrongType {
        /// Expected.
        expected: &'static str,
        /// Found.
        found: String,
    },
    /// `spec_version` is not 1.x.
    #[error("unsupported spec_version {0:?} (this client implements 1.x)")]
    SpecVersion(String),
    /// The signed object cannot be put in canonical form (e.g. floats).
    #[error("signed object has no canonical JSON form")]
    Canonical(#[source] crate::cjson::CanonicalError),
    /// Not enough valid signatures from distinct keys. The display names
    /// every signature by a key of the role that did not count, with its key
    /// id and what is wrong with the key or the signature.
    #[error("signature threshold not met: {valid} of {threshold} required distinct {signer} keys signed{problems}")]
    Threshold {
        /// Whose keys: e.g. `trusted root v1 root`, `new root v2 root`, `targets -> role`.
        signer: String,
        /// Distinct keys with a valid signature.
        valid: u64,
        /// Required.
        threshold: u64,
        /// Signatures by keys of the role that did not count, and why.
        /// (Boxed: keeps `Error` small.)
        problems: Box<crate::crypto::SigProblems>,
    },
    /// The `signatures` array names one key id twice (the specification
    /// says the key id MUST be unique there, even if the threshold is met).
    #[error("signatures list key id {keyid} more than once")]
    DuplicateSignature {
        /// The repeated key id.
        keyid: String,
    },
    /// A new root must be exactly one version above the trusted one.
    #[error(
        "version {found} found where {expected} was expected (root versions increase by exactly 1)"
    )]
    RootVersion {
        /// Expected version.
        expected: u64,
        /// Version in the file.
        found: u64,
    },
    /// A version went backwards.
    #[error("version {found} is lower than the trusted version {trusted} (rollback)")]
    Rollback {
        /// Trusted version.
        trusted: u64,
        /// Version in the file.
        found: u64,
    },
    /// A listed metadata version went backwards.
    #[error("lists {file} at version {found}, lower than the trusted {trusted} (rollback)")]
    MetaRollback {
        /// Listed file.
        file: String,
        /// Trusted version.
        trusted: u64,
        /// New version.
        found: u64,
    },
    /// A file listed by trusted snapshot is missing from the new one.
    #[error("does not list {file}, which the trusted snapshot lists")]
    MetaMissing {
        /// Missing file.
        file: String,
    },
    /// The version differs from the one the referring metadata lists.
    #[error("version {found} differs from version {listed} listed by {lister} (mix-and-match)")]
    VersionMismatch {
        /// Referring role.
        lister: &'static str,
        /// Listed version.
        listed: u64,
        /// Version in the file.
        found: u64,
    },
    /// The referring metadata does not list this file at all.
    #[error("{file} is not listed by {lister}")]
    NotListed {
        /// File.
        file: String,
        /// Referring role.
        lister: &'static str,
    },
    /// Expired relative to the fixed start time of the update.
    #[error("expired at {expires} (update started at {now}; freeze attack or stale repository)")]
    Expired {
        /// Expiry.
        expires: Expires,
        /// Fixed start time of the update.
        now: DateTime<Utc>,
    },
    /// Larger than its cap.
    #[error("larger than the {max}-byte limit (endless data)")]
    TooLarge {
        /// Cap.
        max: u64,
    },
    /// Length or hash differs from what the referring metadata lists.
    #[error("does not match what {lister} lists")]
    Mismatch {
        /// Referring role.
        lister: &'static str,
        /// Which check (boxed: keeps `Error` small).
        #[source]
        source: Box<HashMismatch>,
    },
}

/// A length or hash check failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashMismatch {
    /// Wrong length.
    #[error("length is {found} bytes, {expected} listed")]
    Length {
        /// Listed.
        expected: u64,
        /// Actual (or at least this many bytes).
        found: u64,
    },
    /// Wrong digest.
    #[error("{algorithm} hash {found} differs from the listed {expected}")]
    Hash {
        /// Algorithm.
        algorithm: String,
        /// Listed hex.
        expected: String,
        /// Actual hex.
        found: String,
    },
    /// Algorithm this client does not implement.
    #[error("hash algorithm {0:?} is not supported (sha256, sha512 are)")]
    UnsupportedAlgorithm(String),
    /// No hash listed.
    #[error("no hash is listed")]
    NoHashes,
}

/// A rule a target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetRule {
    /// The target path could escape a directory or URL prefix.
    #[error("unsafe target path: {0}")]
    UnsafeName(&'static str),
    /// More bytes than the listed length arrived.
    #[error("more than the listed {max} bytes were sent (endless data)")]
    TooLong {
        /// Listed length.
        max: u64,
    },
    /// Length or hash mismatch.
    #[error("downloaded bytes do not match the signed target metadata")]
    Mismatch(#[source] HashMismatch),
    /// Reading or writing the bytes failed.
    #[error("reading or writing the target bytes failed")]
    Io(#[source] std::io::Error),
    /// Phase Boot custom metadata is missing or malformed.
    #[error("custom metadata invalid: {0}")]
    Custom(String),
    /// The target has no dm-verity metadata (`custom.verity`).
    #[error("no dm-verity metadata (custom.verity)")]
    NoVerity,
    /// The dm-verity metadata is malformed.
    #[error("dm-verity metadata invalid: {0}")]
    Verity(String),
}

/// Why a transport could not deliver a file.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The file does not exist (HTTP 403/404, missing file). For `N.root.json`
    /// this ends root rotation normally.
    #[error("not found")]
    NotFound,
    /// The file is larger than the cap the caller asked for.
    #[error("response exceeds the {max}-byte limit (endless data)")]
    TooLarge {
        /// Cap.
        max: u64,
    },
    /// Any other failure.
    #[error("transport failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TransportError {
    /// Wrap any error as `Other`.
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TransportError::Other(e.into())
    }
}

/// Why trusted-state storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Name is not a plain file name.
    #[error("entry name {0:?} is not a plain file name")]
    InvalidName(String),
    /// I/O failed.
    #[error("I/O on the trusted state failed")]
    Io(#[source] std::io::Error),
}
