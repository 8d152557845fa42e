//! TUF 1.0 metadata types (root, timestamp, snapshot, targets with
//! delegations) and the signed envelope. Parsing keeps the `signed` object as
//! a JSON value so signatures are checked over the canonical form of exactly
//! what the repository sent, unknown fields included.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The specification version this implementation writes.
pub const SPEC_VERSION: &str = "1.0.31";

/// Top-level role names.
pub const ROOT: &str = "root";
/// Top-level role names.
pub const TIMESTAMP: &str = "timestamp";
/// Top-level role names.
pub const SNAPSHOT: &str = "snapshot";
/// Top-level role names.
pub const TARGETS: &str = "targets";
/// All four top-level roles.
pub const TOP_LEVEL_ROLES: [&str; 4] = [ROOT, TIMESTAMP, SNAPSHOT, TARGETS];

/// Expiry time, written as `YYYY-MM-DDTHH:MM:SSZ` (what python-tuf writes);
/// any RFC 3339 time is accepted when reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expires(pub DateTime<Utc>);

impl Serialize for Expires {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl<'de> Deserialize<'de> for Expires {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%SZ") {
            return Ok(Expires(t.and_utc()));
        }
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Expires(t.with_timezone(&Utc)))
            .map_err(|_| {
                serde::de::Error::custom(format!("expires {s:?} is not an ISO 8601 UTC time"))
            })
    }
}

impl std::fmt::Display for Expires {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// One signature in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id of the signing key.
    pub keyid: String,
    /// Hex-encoded signature over the canonical JSON of `signed`.
    pub sig: String,
}

/// The raw envelope `{"signatures": [...], "signed": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Signatures over the canonical form of `signed`.
    pub signatures: Vec<Signature>,
    /// The signed object as sent.
    pub signed: Value,
}

/// Public key material (`keyval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVal {
    /// The public key: hex for `ed25519`, PEM SubjectPublicKeyInfo for
    /// ECDSA and RSA.
    pub public: String,
    /// Any other members, kept so key ids and signatures stay stable.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A public key as listed in root or in delegations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// `ed25519`, `ecdsa` (or `ecdsa-sha2-nistp256`/`-nistp384`) or `rsa`
    /// verify (docs/trust.md, Key types); keys of other types count toward
    /// no threshold.
    pub keytype: String,
    /// `ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`,
    /// `rsassa-pss-sha256` or `rsa-pkcs1v15-sha256`.
    pub scheme: String,
    /// Public material.
    pub keyval: KeyVal,
    /// Any other members.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A role's key ids and threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// Key ids allowed to sign for the role.
    pub keyids: Vec<String>,
    /// Signatures from distinct keys needed (at least 1).
    pub threshold: u64,
}

/// Root metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// Always `root`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version, `1.x`.
    pub spec_version: String,
    /// Metadata version, from 1.
    pub version: u64,
    /// Expiry.
    pub expires: Expires,
    /// Whether the repository uses consistent snapshots.
    #[serde(default)]
    pub consistent_snapshot: bool,
    /// All keys by key id.
    pub keys: BTreeMap<String, Key>,
    /// The four top-level roles.
    pub roles: BTreeMap<String, RoleKeys>,
}

/// What snapshot and timestamp say about another metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    /// Version of the listed metadata.
    pub version: u64,
    /// Length in bytes, when listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Hashes by algorithm (hex), when listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
}

/// Timestamp metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timestamp {
    /// Always `timestamp`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version.
    pub spec_version: String,
    /// Metadata version.
    pub version: u64,
    /// Expiry.
    pub expires: Expires,
    /// Exactly one entry, `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
}

impl Timestamp {
    /// The `snapshot.json` entry (present: checked when parsed).
    pub fn snapshot_meta(&self) -> &MetaFile {
        // Parsing rejects timestamps without this entry (`check_shape`).
        &self.meta["snapshot.json"]
    }
}

/// Snapshot metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always `snapshot`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version.
    pub spec_version: String,
    /// Metadata version.
    pub version: u64,
    /// Expiry.
    pub expires: Expires,
    /// Every targets metadata file (`targets.json`, `<role>.json`).
    pub meta: BTreeMap<String, MetaFile>,
}

/// One target file entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    /// Exact length in bytes.
    pub length: u64,
    /// Hashes by algorithm (hex); at least one.
    pub hashes: BTreeMap<String, String>,
    /// Application-specific signed data (Phase Boot: kind, version, cmdline, chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

/// A role delegated by a targets role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    /// Role name (also its metadata file name, URL-encoded).
    pub name: String,
    /// Key ids allowed to sign.
    pub keyids: Vec<String>,
    /// Signatures from distinct keys needed (at least 1).
    pub threshold: u64,
    /// Stop the search after this role when it matches a path.
    #[serde(default)]
    pub terminating: bool,
    /// Shell-style patterns (per path segment) of delegated target paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Hex prefixes of the SHA-256 of delegated target paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
}

/// Delegations of a targets role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegations {
    /// Keys of the delegated roles by key id.
    pub keys: BTreeMap<String, Key>,
    /// Delegated roles in priority order.
    pub roles: Vec<DelegatedRole>,
}

/// Targets metadata (top-level or delegated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Always `targets`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// TUF specification version.
    pub spec_version: String,
    /// Metadata version.
    pub version: u64,
    /// Expiry.
    pub expires: Expires,
    /// Target files by target path.
    pub targets: BTreeMap<String, TargetFile>,
    /// Delegations, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
}

impl DelegatedRole {
    /// Whether this role is trusted for `target` (paths or hash prefixes).
    pub fn matches(&self, target: &str) -> bool {
        if let Some(paths) = &self.paths {
            return paths
                .iter()
                .any(|p| crate::fnmatch::path_matches(target, p));
        }
        if let Some(prefixes) = &self.path_hash_prefixes {
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(target.as_bytes()));
            return prefixes.iter().any(|p| digest.starts_with(p.as_str()));
        }
        false
    }
}

/// Metadata of one of the four kinds, with the checks every kind shares.
pub trait Metadata: serde::de::DeserializeOwned + Serialize {
    /// The `_type` value.
    const TYPE: &'static str;
    /// `version`.
    fn version(&self) -> u64;
    /// `expires`.
    fn expires(&self) -> Expires;
    /// `_type` as sent.
    fn type_field(&self) -> &str;
    /// `spec_version` as sent.
    fn spec_version(&self) -> &str;
    /// Rules beyond serde's: thresholds, required entries, names.
    fn check_shape(&self) -> Result<(), String>;
}

fn check_role_keys(role: &str, keyids: &[String], threshold: u64) -> Result<(), String> {
    if threshold < 1 {
        return Err(format!(
            "role {role:?} has threshold {threshold}, at least 1 is required"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for k in keyids {
        if !seen.insert(k) {
            return Err(format!("role {role:?} lists key id {k} twice"));
        }
    }
    Ok(())
}

macro_rules! common_fields {
    ($t:ty, $name:expr) => {
        impl Metadata for $t {
            const TYPE: &'static str = $name;
            fn version(&self) -> u64 {
                self.version
            }
            fn expires(&self) -> Expires {
                self.expires
            }
            fn type_field(&self) -> &str {
                &self.type_
            }
            fn spec_version(&self) -> &str {
                &self.spec_version
            }
            fn check_shape(&self) -> Result<(), String> {
                self.shape()
            }
        }
    };
}

common_fields!(Root, ROOT);
common_fields!(Timestamp, TIMESTAMP);
common_fields!(Snapshot, SNAPSHOT);
common_fields!(Targets, TARGETS);

impl Root {
    fn shape(&self) -> Result<(), String> {
        for role in TOP_LEVEL_ROLES {
            let r = self
                .roles
                .get(role)
                .ok_or_else(|| format!("role {role:?} is missing"))?;
            check_role_keys(role, &r.keyids, r.threshold)?;
        }
        if let Some(extra) = self
            .roles
            .keys()
            .find(|r| !TOP_LEVEL_ROLES.contains(&r.as_str()))
        {
            return Err(format!("unknown top-level role {extra:?}"));
        }
        Ok(())
    }

    /// The keys and threshold of a top-level role (present: checked when parsed).
    pub fn role(&self, role: &str) -> Option<&RoleKeys> {
        self.roles.get(role)
    }
}

impl Timestamp {
    fn shape(&self) -> Result<(), String> {
        if self.meta.len() != 1 || !self.meta.contains_key("snapshot.json") {
            return Err("meta must list exactly snapshot.json".into());
        }
        check_meta(&self.meta)
    }
}

impl Snapshot {
    fn shape(&self) -> Result<(), String> {
        if !self.meta.contains_key("targets.json") {
            return Err("meta does not list targets.json".into());
        }
        check_meta(&self.meta)
    }
}

fn check_meta(meta: &BTreeMap<String, MetaFile>) -> Result<(), String> {
    for (name, m) in meta {
        if m.version < 1 {
            return Err(format!("{name} has version 0"));
        }
        if let Some(h) = &m.hashes {
            if h.is_empty() {
                return Err(format!("{name} lists an empty hashes object"));
            }
        }
    }
    Ok(())
}

impl Targets {
    fn shape(&self) -> Result<(), String> {
        for (name, t) in &self.targets {
            if t.hashes.is_empty() {
                return Err(format!("target {name:?} lists no hashes"));
            }
        }
        if let Some(d) = &self.delegations {
            let mut names = std::collections::BTreeSet::new();
            for r in &d.roles {
                check_role_keys(&r.name, &r.keyids, r.threshold)?;
                if r.name.is_empty() || r.name == "." || r.name == ".." {
                    return Err(format!("delegated role name {:?} is not allowed", r.name));
                }
                if TOP_LEVEL_ROLES.contains(&r.name.as_str()) {
                    return Err(format!("delegated role uses top-level name {:?}", r.name));
                }
                if !names.insert(&r.name) {
                    return Err(format!("delegated role {:?} is listed twice", r.name));
                }
                match (&r.paths, &r.path_hash_prefixes) {
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "delegated role {:?} sets both paths and path_hash_prefixes",
                            r.name
                        ))
                    }
                    (None, None) => {
                        return Err(format!(
                            "delegated role {:?} sets neither paths nor path_hash_prefixes",
                            r.name
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
