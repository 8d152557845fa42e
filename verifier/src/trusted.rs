//! The pure core of the client workflow (TUF 1.0 section 5): a set of
//! trusted metadata that only grows through checked updates. Bytes and a fixed
//! start time in, verified metadata or a typed error out; no I/O here. A
//! failed update leaves the set exactly as it was.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::crypto::count_signatures;
use crate::digest::verify_length_and_hashes;
use crate::error::{Error, Rule};
use crate::metadata::{
    Envelope, Key, Metadata, Root, Snapshot, Targets, Timestamp, ROOT, SNAPSHOT, TARGETS, TIMESTAMP,
};

/// Result of offering a new timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUpdate {
    /// The new timestamp is now trusted.
    Updated,
    /// Same version as the trusted one: the trusted one is kept.
    Unchanged,
}

/// A parsed metadata file whose signatures are not checked yet.
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    /// The typed `signed` part.
    pub signed: T,
    /// The canonical bytes of `signed` (what the signatures cover).
    pub canonical: Vec<u8>,
    /// The signatures.
    pub signatures: Vec<crate::metadata::Signature>,
}

fn reject(role: &str, version: Option<u64>, rule: Rule) -> Error {
    Error::Rejected {
        role: role.to_string(),
        version,
        rule,
    }
}

/// Parse and shape-check metadata of type `T` for role `role`.
pub fn parse<T: Metadata>(role: &str, bytes: &[u8]) -> Result<Parsed<T>, Error> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|source| {
        reject(
            role,
            None,
            Rule::Malformed {
                expected: T::TYPE,
                source,
            },
        )
    })?;
    let version = envelope.signed.get("version").and_then(Value::as_u64);
    let r = |rule| reject(role, version, rule);
    let mut seen = std::collections::BTreeSet::new();
    for sig in &envelope.signatures {
        if !seen.insert(sig.keyid.as_str()) {
            return Err(r(Rule::DuplicateSignature {
                keyid: sig.keyid.clone(),
            }));
        }
    }
    let canonical =
        crate::cjson::to_canonical(&envelope.signed).map_err(|e| r(Rule::Canonical(e)))?;
    if let Some(found) = envelope.signed.get("_type").and_then(Value::as_str) {
        if found != T::TYPE {
            return Err(r(Rule::WrongType {
                expected: T::TYPE,
                found: found.to_string(),
            }));
        }
    }
    let signed: T = serde_json::from_value(envelope.signed).map_err(|source| {
        r(Rule::Malformed {
            expected: T::TYPE,
            source,
        })
    })?;
    if signed.type_field() != T::TYPE {
        return Err(r(Rule::WrongType {
            expected: T::TYPE,
            found: signed.type_field().to_string(),
        }));
    }
    let spec = signed.spec_version();
    if spec.split('.').next() != Some("1") {
        return Err(r(Rule::SpecVersion(spec.to_string())));
    }
    if signed.version() < 1 {
        return Err(r(Rule::Invalid("version must be at least 1".into())));
    }
    signed.check_shape().map_err(|e| r(Rule::Invalid(e)))?;
    Ok(Parsed {
        signed,
        canonical,
        signatures: envelope.signatures,
    })
}

/// Check that `parsed` is signed by `threshold` distinct keys among `keyids`.
#[allow(clippy::too_many_arguments)]
fn verify_signatures<T: Metadata>(
    role: &str,
    parsed: &Parsed<T>,
    keys: &BTreeMap<String, Key>,
    keyids: &[String],
    threshold: u64,
    signer: impl FnOnce() -> String,
) -> Result<(), Error> {
    let count = count_signatures(
        &parsed.canonical,
        &parsed.signatures,
        keys,
        keyids,
        threshold,
    );
    if threshold < 1 || count.valid < threshold {
        return Err(reject(
            role,
            Some(parsed.signed.version()),
            Rule::Threshold {
                signer: signer(),
                valid: count.valid,
                threshold,
                problems: Box::new(crate::crypto::SigProblems(count.problems)),
            },
        ));
    }
    for p in &count.problems {
        tracing::warn!(role, keyid = %p.keyid, problem = %p.problem, "signature did not count; threshold met without it");
    }
    Ok(())
}

fn verify_by_root<T: Metadata>(
    role: &str,
    parsed: &Parsed<T>,
    root: &Root,
    which: &str,
) -> Result<(), Error> {
    // `Root::check_shape` guarantees every top-level role is present.
    let Some(r) = root.role(role) else {
        return Err(reject(
            role,
            Some(parsed.signed.version()),
            Rule::Invalid(format!("root has no {role} role")),
        ));
    };
    verify_signatures(role, parsed, &root.keys, &r.keyids, r.threshold, || {
        format!("{which} root v{} {role}", root.version)
    })
}

/// Targets metadata of one role that passed every check of `update_targets`,
/// kept with its signatures so it can be verified again when the delegation
/// search reaches the same role through another delegator.
#[derive(Debug, Clone)]
struct HeldTargets {
    parsed: Parsed<Targets>,
    /// The delegators whose current delegation of this role was verified
    /// against these exact bytes.
    verified_by: BTreeSet<String>,
}

/// The trusted metadata of one update, with the fixed start time.
#[derive(Debug, Clone)]
pub struct TrustedSet {
    now: DateTime<Utc>,
    root: Root,
    timestamp: Option<Timestamp>,
    snapshot: Option<Snapshot>,
    targets: BTreeMap<String, HeldTargets>,
}

impl TrustedSet {
    /// Start from a trusted root. It must be signed by a threshold of its
    /// own root keys; its expiry is checked later (`check_final_root`), after
    /// rotation had its chance to replace it.
    pub fn new(root_bytes: &[u8], now: DateTime<Utc>) -> Result<Self, Error> {
        let parsed: Parsed<Root> = parse(ROOT, root_bytes)?;
        verify_by_root(ROOT, &parsed, &parsed.signed, "trusted")?;
        Ok(TrustedSet {
            now,
            root: parsed.signed,
            timestamp: None,
            snapshot: None,
            targets: BTreeMap::new(),
        })
    }

    /// The fixed start time used for every expiry check.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }
    /// Trusted root.
    pub fn root(&self) -> &Root {
        &self.root
    }
    /// Trusted timestamp, if loaded.
    pub fn timestamp(&self) -> Option<&Timestamp> {
        self.timestamp.as_ref()
    }
    /// Trusted snapshot, if loaded.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
    /// Trusted targets metadata of `role`, if loaded. A delegated role is
    /// trusted only through the delegators that `delegated_by` names; before
    /// using it through another one, call `verify_held_targets`.
    pub fn targets(&self, role: &str) -> Option<&Targets> {
        self.targets.get(role).map(|h| &h.parsed.signed)
    }

    /// Whether the held targets metadata of `role` was verified against the
    /// current delegation of `delegator`.
    pub fn delegated_by(&self, role: &str, delegator: &str) -> bool {
        self.targets
            .get(role)
            .is_some_and(|h| h.verified_by.contains(delegator))
    }

    /// 5.6.3 for a role already held: verify its signatures, keys and
    /// threshold again against the current delegation of `delegator` (a role
    /// reached on another search path does not inherit the authority of the
    /// path that loaded it). `Ok(false)` when `role` is not held. On success
    /// `delegator` is recorded; on error the set is unchanged and the held
    /// copy stays trusted only through the delegators that verified it.
    pub fn verify_held_targets(&mut self, role: &str, delegator: &str) -> Result<bool, Error> {
        let Some(held) = self.targets.get(role) else {
            return Ok(false);
        };
        if held.verified_by.contains(delegator) {
            return Ok(true);
        }
        self.verify_delegation(role, delegator, &held.parsed)?;
        if let Some(held) = self.targets.get_mut(role) {
            held.verified_by.insert(delegator.to_string());
        }
        Ok(true)
    }

    /// Check that `parsed` (metadata of `role`) is signed by a threshold of
    /// the keys that `delegator` currently names for `role`.
    fn verify_delegation(
        &self,
        role: &str,
        delegator: &str,
        parsed: &Parsed<Targets>,
    ) -> Result<(), Error> {
        if delegator == ROOT {
            if role != TARGETS {
                return Err(reject(
                    role,
                    None,
                    Rule::Invalid("root delegates only the targets role".into()),
                ));
            }
            return verify_by_root(TARGETS, parsed, &self.root, "trusted");
        }
        let parent = self.targets(delegator).ok_or(Error::NotRefreshed)?;
        let delegations = parent.delegations.as_ref();
        let entry = delegations
            .and_then(|d| d.roles.iter().find(|r| r.name == role))
            .ok_or_else(|| {
                reject(
                    role,
                    Some(parsed.signed.version),
                    Rule::Invalid(format!("{delegator} does not delegate {role}")),
                )
            })?;
        let keys = &delegations.map(|d| &d.keys).ok_or(Error::NotRefreshed)?;
        verify_signatures(role, parsed, keys, &entry.keyids, entry.threshold, || {
            format!("{delegator} v{} -> {role}", parent.version)
        })
    }

    fn expired<T: Metadata>(&self, role: &str, m: &T) -> Result<(), Error> {
        if m.expires().0 <= self.now {
            return Err(reject(
                role,
                Some(m.version()),
                Rule::Expired {
                    expires: m.expires(),
                    now: self.now,
                },
            ));
        }
        Ok(())
    }

    /// 5.3.3-5.3.6: accept `N+1.root.json` signed by a threshold of the
    /// trusted root keys and of its own root keys, with version exactly N+1.
    pub fn update_root(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.timestamp.is_some() {
            return Err(reject(
                ROOT,
                None,
                Rule::Invalid("root cannot change after timestamp was loaded".into()),
            ));
        }
        let parsed: Parsed<Root> = parse(ROOT, bytes)?;
        verify_by_root(ROOT, &parsed, &self.root, "trusted")?;
        let expected = self.root.version + 1;
        if parsed.signed.version != expected {
            return Err(reject(
                ROOT,
                Some(parsed.signed.version),
                Rule::RootVersion {
                    expected,
                    found: parsed.signed.version,
                },
            ));
        }
        verify_by_root(ROOT, &parsed, &parsed.signed, "new")?;
        self.root = parsed.signed;
        Ok(())
    }

    /// 5.3.10: the final root must not be expired.
    pub fn check_final_root(&self) -> Result<(), Error> {
        self.expired(ROOT, &self.root)
    }

    /// 5.4: offer a timestamp. Rollback of its version or of the snapshot
    /// version it lists is refused. If it is accepted but expired, it stays
    /// trusted (for rollback protection of the next one) and `Expired` is
    /// returned; callers must not persist it then.
    pub fn update_timestamp(&mut self, bytes: &[u8]) -> Result<TimestampUpdate, Error> {
        if self.snapshot.is_some() {
            return Err(reject(
                TIMESTAMP,
                None,
                Rule::Invalid("timestamp cannot change after snapshot was loaded".into()),
            ));
        }
        self.check_final_root()?;
        let parsed: Parsed<Timestamp> = parse(TIMESTAMP, bytes)?;
        verify_by_root(TIMESTAMP, &parsed, &self.root, "trusted")?;
        let new = parsed.signed;
        if let Some(old) = &self.timestamp {
            if new.version < old.version {
                return Err(reject(
                    TIMESTAMP,
                    Some(new.version),
                    Rule::Rollback {
                        trusted: old.version,
                        found: new.version,
                    },
                ));
            }
            if new.version == old.version {
                return Ok(TimestampUpdate::Unchanged);
            }
            let (o, n) = (old.snapshot_meta().version, new.snapshot_meta().version);
            if n < o {
                return Err(reject(
                    TIMESTAMP,
                    Some(new.version),
                    Rule::MetaRollback {
                        file: "snapshot.json".into(),
                        trusted: o,
                        found: n,
                    },
                ));
            }
        }
        self.timestamp = Some(new);
        self.check_final_timestamp()?;
        Ok(TimestampUpdate::Updated)
    }

    fn check_final_timestamp(&self) -> Result<(), Error> {
        match &self.timestamp {
            Some(t) => self.expired(TIMESTAMP, t),
            None => Err(Error::NotRefreshed),
        }
    }

    /// 5.5: offer a snapshot. `from_storage`: bytes come from trusted state
    /// (their hash was checked when first accepted), so the hash and length
    /// that timestamp lists are not checked again. Like timestamp, a snapshot
    /// that passes signatures and rollback checks stays trusted even if it is
    /// not a valid final snapshot (expired, other version than listed) and the
    /// error is returned.
    pub fn update_snapshot(&mut self, bytes: &[u8], from_storage: bool) -> Result<(), Error> {
        let Some(ts) = &self.timestamp else {
            return Err(Error::NotRefreshed);
        };
        if !self.targets.is_empty() {
            return Err(reject(
                SNAPSHOT,
                None,
                Rule::Invalid("snapshot cannot change after targets were loaded".into()),
            ));
        }
        self.check_final_timestamp()?;
        let meta = ts.snapshot_meta().clone();
        if !from_storage {
            if let Some(max) = meta.length {
                if bytes.len() as u64 > max {
                    return Err(reject(SNAPSHOT, None, Rule::TooLarge { max }));
                }
            }
            verify_length_and_hashes(bytes, meta.length, meta.hashes.as_ref(), false).map_err(
                |source| {
                    reject(
                        SNAPSHOT,
                        None,
                        Rule::Mismatch {
                            lister: TIMESTAMP,
                            source: Box::new(source),
                        },
                    )
                },
            )?;
        }
        let parsed: Parsed<Snapshot> = parse(SNAPSHOT, bytes)?;
        verify_by_root(SNAPSHOT, &parsed, &self.root, "trusted")?;
        let new = parsed.signed;
        if let Some(old) = &self.snapshot {
            for (file, old_meta) in &old.meta {
                match new.meta.get(file) {
                    None => {
                        return Err(reject(
                            SNAPSHOT,
                            Some(new.version),
                            Rule::MetaMissing { file: file.clone() },
                        ))
                    }
                    Some(m) if m.version < old_meta.version => {
                        return Err(reject(
                            SNAPSHOT,
                            Some(new.version),
                            Rule::MetaRollback {
                                file: file.clone(),
                                trusted: old_meta.version,
                                found: m.version,
                            },
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        self.snapshot = Some(new);
        self.check_final_snapshot()
    }

    fn check_final_snapshot(&self) -> Result<(), Error> {
        let (Some(ts), Some(snap)) = (&self.timestamp, &self.snapshot) else {
            return Err(Error::NotRefreshed);
        };
        self.expired(SNAPSHOT, snap)?;
        let listed = ts.snapshot_meta().version;
        if snap.version != listed {
            return Err(reject(
                SNAPSHOT,
                Some(snap.version),
                Rule::VersionMismatch {
                    lister: TIMESTAMP,
                    listed,
                    found: snap.version,
                },
            ));
        }
        Ok(())
    }

    /// 5.6 / 5.6.7: offer targets metadata for `role`, delegated by
    /// `delegator` (`root` for the top-level `targets`). Checks the snapshot
    /// listing (hash, length, exact version), the delegator's keys and
    /// threshold for this role, and expiry.
    pub fn update_targets(
        &mut self,
        role: &str,
        delegator: &str,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if self.snapshot.is_none() {
            return Err(Error::NotRefreshed);
        }
        self.check_final_snapshot()?;
        let snap = self.snapshot.as_ref().ok_or(Error::NotRefreshed)?;
        let file = format!("{role}.json");
        let meta = snap.meta.get(&file).ok_or_else(|| {
            reject(
                role,
                None,
                Rule::NotListed {
                    file: file.clone(),
                    lister: SNAPSHOT,
                },
            )
        })?;
        if let Some(max) = meta.length {
            if bytes.len() as u64 > max {
                return Err(reject(role, None, Rule::TooLarge { max }));
            }
        }
        verify_length_and_hashes(bytes, meta.length, meta.hashes.as_ref(), false).map_err(
            |source| {
                reject(
                    role,
                    None,
                    Rule::Mismatch {
                        lister: SNAPSHOT,
                        source: Box::new(source),
                    },
                )
            },
        )?;
        let parsed: Parsed<Targets> = parse(role, bytes)?;
        self.verify_delegation(role, delegator, &parsed)?;
        let new = &parsed.signed;
        if new.version != meta.version {
            return Err(reject(
                role,
                Some(new.version),
                Rule::VersionMismatch {
                    lister: SNAPSHOT,
                    listed: meta.version,
                    found: new.version,
                },
            ));
        }
        self.expired(role, new)?;
        self.targets.insert(
            role.to_string(),
            HeldTargets {
                parsed,
                verified_by: BTreeSet::from([delegator.to_string()]),
            },
        );
        Ok(())
    }
}

/// A release's snapshot and top-level targets metadata, kept from an
/// earlier refresh and verified again by [`verify_kept_release`].
#[derive(Debug, Clone)]
pub struct KeptRelease {
    /// The snapshot that listed the targets metadata.
    pub snapshot: Snapshot,
    /// The top-level targets metadata.
    pub targets: Targets,
}

impl KeptRelease {
    /// The top-level target `name` (delegated roles are not searched).
    pub fn target(&self, name: &str) -> Option<crate::Target> {
        self.targets
            .targets
            .get(name)
            .map(|f| crate::Target::new(name, f, TARGETS))
    }
}

/// Verifies a release kept from an earlier refresh against the root
/// trusted now (`root_bytes`, which must be signed by a threshold of its
/// own root keys): `snapshot` and `targets` must each be signed by a
/// threshold of that root's keys for their role, and the snapshot must
/// list `targets.json` at the targets version (and its length and hashes,
/// where listed). Keys rotated out since then no longer count, so a
/// release signed only by them is refused.
///
/// Expiry is not judged and no version is compared with a trusted one:
/// the caller keeps the release on purpose as an older one, and decides
/// when booting it is allowed (phase-init: only after the current
/// release's kernel was refused by the running kernel, loudly).
pub fn verify_kept_release(
    root_bytes: &[u8],
    snapshot: &[u8],
    targets: &[u8],
) -> Result<KeptRelease, Error> {
    let root: Parsed<Root> = parse(ROOT, root_bytes)?;
    verify_by_root(ROOT, &root, &root.signed, "trusted")?;
    let root = root.signed;
    let snap: Parsed<Snapshot> = parse(SNAPSHOT, snapshot)?;
    verify_by_root(SNAPSHOT, &snap, &root, "trusted")?;
    let file = format!("{TARGETS}.json");
    let meta = snap.signed.meta.get(&file).ok_or_else(|| {
        reject(
            TARGETS,
            None,
            Rule::NotListed {
                file: file.clone(),
                lister: SNAPSHOT,
            },
        )
    })?;
    verify_length_and_hashes(targets, meta.length, meta.hashes.as_ref(), false).map_err(
        |source| {
            reject(
                TARGETS,
                None,
                Rule::Mismatch {
                    lister: SNAPSHOT,
                    source: Box::new(source),
                },
            )
        },
    )?;
    let t: Parsed<Targets> = parse(TARGETS, targets)?;
    verify_by_root(TARGETS, &t, &root, "trusted")?;
    if t.signed.version != meta.version {
        return Err(reject(
            TARGETS,
            Some(t.signed.version),
            Rule::VersionMismatch {
                lister: SNAPSHOT,
                listed: meta.version,
                found: t.signed.version,
            },
        ));
    }
    Ok(KeptRelease {
        snapshot: snap.signed,
        targets: t.signed,
    })
}
