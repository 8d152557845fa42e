//! The client update workflow (TUF 1.0 section 5) over a `Storage` and a
//! `Transport`: root rotation, timestamp, snapshot, targets, delegated
//! targets (pre-order depth-first), and verified target download.

use std::collections::BTreeSet;
use std::io::Write;

use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::error::{Error, Rule, TargetRule, TransportError};
use crate::metadata::{RoleKeys, Root, ROOT, SNAPSHOT, TARGETS, TIMESTAMP};
use crate::store::{Storage, Transport};
use crate::target::{check_target_name, Target};
use crate::trusted::{TimestampUpdate, TrustedSet};

/// Caps that bound every download and walk. The defaults match python-tuf's
/// `UpdaterConfig` so both clients accept the same repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes read for one `N.root.json`.
    pub root_max_bytes: u64,
    /// Most bytes read for `timestamp.json`.
    pub timestamp_max_bytes: u64,
    /// Most bytes read for snapshot when timestamp lists no length.
    pub snapshot_max_bytes: u64,
    /// Most bytes read for a targets role when snapshot lists no length.
    pub targets_max_bytes: u64,
    /// Most root versions accepted in one refresh.
    pub max_root_rotations: u32,
    /// Most targets roles visited in one target lookup.
    pub max_delegations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            root_max_bytes: 512_000,
            timestamp_max_bytes: 16_384,
            snapshot_max_bytes: 2_000_000,
            targets_max_bytes: 5_000_000,
            max_root_rotations: 256,
            max_delegations: 32,
        }
    }
}

/// Characters python-tuf leaves unencoded in role file names (`quote(s, "")`).
const ROLE_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// URL-encode `name` as python-tuf's `quote(name, "")` does (everything but
/// ASCII letters, digits and `_.-~`), so it is one safe file name.
pub fn encode_name(name: &str) -> String {
    utf8_percent_encode(name, ROLE_ENCODE).to_string()
}

/// The unversioned file name of a role's metadata: `<url-encoded role>.json`.
pub fn role_file(role: &str) -> String {
    format!("{}.json", encode_name(role))
}

/// Fingerprint of a root: hex SHA-256 over the root role's key ids, sorted,
/// lowercase, each followed by `\n`. The first 16 hex characters identify a
/// fleet's trust root (mDNS TXT `root=`).
pub fn root_fingerprint(root: &Root) -> String {
    let mut ids: Vec<String> = root
        .roles
        .get(ROOT)
        .map(|r| r.keyids.iter().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    ids.sort();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Verify `root_bytes` as a self-signed root and make it the trusted root in
/// `storage`, unless storage already holds a valid root of the same or a
/// higher version (a root learnt through rotation earlier). Returns the
/// version that is trusted now.
pub fn install_root<S: Storage>(
    storage: &S,
    root_bytes: &[u8],
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    let given = TrustedSet::new(root_bytes, now)?;
    let file = "root.json";
    let stored = storage
        .load(file)
        .map_err(|source| Error::Storage {
            file: file.into(),
            source,
        })?
        .and_then(|b| TrustedSet::new(&b, now).ok());
    if let Some(s) = stored {
        if s.root().version >= given.root().version {
            return Ok(s.root().version);
        }
    }
    storage
        .store(file, root_bytes)
        .map_err(|source| Error::Storage {
            file: file.into(),
            source,
        })?;
    Ok(given.root().version)
}

/// The TUF client: trusted state in `S`, repository behind `T`, one fixed
/// start time for every expiry check.
#[derive(Debug)]
pub struct Updater<S, T> {
    storage: S,
    transport: T,
    now: DateTime<Utc>,
    limits: Limits,
    set: Option<TrustedSet>,
}

fn fetch_err(file: &str) -> impl FnOnce(TransportError) -> Error + '_ {
    move |source| Error::Fetch {
        file: file.to_string(),
        source,
    }
}

impl<S: Storage, T: Transport> Updater<S, T> {
    /// A client whose trusted root is `root.json` in `storage` (see
    /// `install_root`), reading from `transport`, judging expiry at `now`.
    pub fn new(storage: S, transport: T, now: DateTime<Utc>) -> Self {
        Updater {
            storage,
            transport,
            now,
            limits: Limits::default(),
            set: None,
        }
    }

    /// Replace the default caps.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The fixed start time.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    fn load(&self, file: &str) -> Result<Option<Vec<u8>>, Error> {
        self.storage.load(file).map_err(|source| Error::Storage {
            file: file.into(),
            source,
        })
    }

    fn persist(&self, file: &str, bytes: &[u8]) -> Result<(), Error> {
        self.storage
            .store(file, bytes)
            .map_err(|source| Error::Storage {
                file: file.into(),
                source,
            })
    }

    fn remove(&self, file: &str) -> Result<(), Error> {
        self.storage.remove(file).map_err(|source| Error::Storage {
            file: file.into(),
            source,
        })
    }

    /// Run the whole workflow: root rotation, timestamp, snapshot, top-level
    /// targets. Each file is persisted only after it passed every check, so a
    /// failure leaves the stored trusted state as it was (rotated roots that
    /// were fully verified stay, as the specification requires).
    pub fn refresh(&mut self) -> Result<(), Error> {
        self.set = None;
        let root_bytes = self.load("root.json")?.ok_or(Error::NoTrustedRoot)?;
        let mut set = TrustedSet::new(&root_bytes, self.now)?;
        let start_root = set.root().clone();

        // 5.3: root rotation, bounded in count and bytes.
        let mut rotations = 0u32;
        loop {
            if rotations >= self.limits.max_root_rotations {
                tracing::warn!(
                    max = self.limits.max_root_rotations,
                    "root rotation limit reached"
                );
                break;
            }
            let name = format!("{}.root.json", set.root().version + 1);
            match self
                .transport
                .fetch_metadata(&name, self.limits.root_max_bytes)
            {
                Ok(bytes) => {
                    if bytes.len() as u64 > self.limits.root_max_bytes {
                        return Err(too_large(ROOT, self.limits.root_max_bytes));
                    }
                    set.update_root(&bytes)?;
                    self.persist("root.json", &bytes)?;
                    tracing::info!(role = "root", version = set.root().version, "root rotated");
                    rotations += 1;
                }
                Err(TransportError::NotFound) => break,
                Err(TransportError::TooLarge { max }) => return Err(too_large(ROOT, max)),
                Err(e) => return Err(fetch_err(&name)(e)),
            }
        }
        set.check_final_root()?;

        // 5.3.11: timestamp/snapshot keys rotated -> forget both, so a
        // fast-forwarded version cannot lock the client out.
        let changed = |role: &str| start_root.role(role) != set.root().role(role);
        if changed(TIMESTAMP) || changed(SNAPSHOT) {
            tracing::info!(
                "timestamp or snapshot keys rotated: discarding trusted timestamp and snapshot"
            );
            self.remove("timestamp.json")?;
            self.remove("snapshot.json")?;
        }

        // 5.4: timestamp. A stored one that no longer verifies is ignored.
        if let Some(local) = self.load("timestamp.json")? {
            if let Err(e) = set.update_timestamp(&local) {
                tracing::debug!(error = %e, "stored timestamp not valid as final");
            }
        }
        let bytes =
            self.fetch_meta("timestamp.json", TIMESTAMP, self.limits.timestamp_max_bytes)?;
        if set.update_timestamp(&bytes)? == TimestampUpdate::Updated {
            self.persist("timestamp.json", &bytes)?;
        }

        // 5.5: snapshot; reuse the stored one if it is the listed version.
        let mut have_snapshot = false;
        if let Some(local) = self.load("snapshot.json")? {
            match set.update_snapshot(&local, true) {
                Ok(()) => have_snapshot = true,
                Err(e) => tracing::debug!(error = %e, "stored snapshot not valid as final"),
            }
        }
        if !have_snapshot {
            let ts = set.timestamp().ok_or(Error::NotRefreshed)?;
            let meta = ts.snapshot_meta();
            let cap = meta.length.unwrap_or(self.limits.snapshot_max_bytes);
            let name = if set.root().consistent_snapshot {
                format!("{}.snapshot.json", meta.version)
            } else {
                "snapshot.json".to_string()
            };
            let bytes = self.fetch_meta(&name, SNAPSHOT, cap)?;
            set.update_snapshot(&bytes, false)?;
            self.persist("snapshot.json", &bytes)?;
        }

        self.set = Some(set);
        // 5.6: top-level targets.
        self.load_targets(TARGETS, ROOT)?;
        Ok(())
    }

    fn fetch_meta(&self, name: &str, role: &str, cap: u64) -> Result<Vec<u8>, Error> {
        match self.transport.fetch_metadata(name, cap) {
            Ok(b) if b.len() as u64 > cap => Err(too_large(role, cap)),
            Ok(b) => Ok(b),
            Err(TransportError::TooLarge { max }) => Err(too_large(role, max)),
            Err(e) => Err(fetch_err(name)(e)),
        }
    }

    /// Make the targets metadata of `role` trusted through `delegator`. A
    /// copy already held (loaded on another search path) is verified again
    /// against this delegator's current keys and threshold; if it fails, it
    /// is not used and a fresh copy is loaded, which must pass every check
    /// through this delegator.
    fn load_targets(&mut self, role: &str, delegator: &str) -> Result<(), Error> {
        let set = self.set.as_mut().ok_or(Error::NotRefreshed)?;
        match set.verify_held_targets(role, delegator) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                role,
                delegator,
                error = %e,
                "held targets metadata not valid through this delegator; loading a fresh copy"
            ),
        }
        let file = role_file(role);
        if let Some(local) = self.load(&file)? {
            let set = self.set.as_mut().ok_or(Error::NotRefreshed)?;
            match set.update_targets(role, delegator, &local) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(role, error = %e, "stored targets metadata not valid"),
            }
        }
        let set = self.set.as_ref().ok_or(Error::NotRefreshed)?;
        let snap = set.snapshot().ok_or(Error::NotRefreshed)?;
        let meta = snap
            .meta
            .get(&format!("{role}.json"))
            .ok_or_else(|| Error::Rejected {
                role: role.to_string(),
                version: None,
                rule: Rule::NotListed {
                    file: format!("{role}.json"),
                    lister: SNAPSHOT,
                },
            })?;
        let cap = meta.length.unwrap_or(self.limits.targets_max_bytes);
        let name = if set.root().consistent_snapshot {
            format!("{}.{file}", meta.version)
        } else {
            file.clone()
        };
        let bytes = self.fetch_meta(&name, role, cap)?;
        let set = self.set.as_mut().ok_or(Error::NotRefreshed)?;
        set.update_targets(role, delegator, &bytes)?;
        self.persist(&file, &bytes)?;
        Ok(())
    }

    /// The trusted metadata after a successful `refresh()`.
    pub fn trusted(&self) -> Result<&TrustedSet, Error> {
        self.set.as_ref().ok_or(Error::NotRefreshed)
    }

    /// The trusted root.
    pub fn root(&self) -> Result<&Root, Error> {
        Ok(self.trusted()?.root())
    }

    /// Fingerprint of the trusted root (see `root_fingerprint`).
    pub fn root_fingerprint(&self) -> Result<String, Error> {
        Ok(root_fingerprint(self.root()?))
    }

    /// Look a target up by path: pre-order depth-first through delegations,
    /// each role visited once, at most `max_delegations` roles, stopping at
    /// a terminating delegation that matches.
    pub fn target(&mut self, name: &str) -> Result<Target, Error> {
        check_target_name(name).map_err(|why| Error::Target {
            name: name.to_string(),
            rule: TargetRule::UnsafeName(why),
        })?;
        let mut stack: Vec<(String, String)> = vec![(TARGETS.to_string(), ROOT.to_string())];
        let mut visited: BTreeSet<String> = BTreeSet::new();
        let mut budget = self.limits.max_delegations;
        while budget > 0 {
            let Some((role, parent)) = stack.pop() else {
                break;
            };
            if visited.contains(&role) {
                continue;
            }
            self.load_targets(&role, &parent)?;
            let set = self.trusted()?;
            let Some(meta) = set.targets(&role) else {
                return Err(Error::NotRefreshed);
            };
            if let Some(file) = meta.targets.get(name) {
                return Ok(Target::new(name, file, &role));
            }
            visited.insert(role.clone());
            budget -= 1;
            if let Some(d) = &meta.delegations {
                let mut children = Vec::new();
                for r in &d.roles {
                    if r.matches(name) {
                        children.push((r.name.clone(), role.clone()));
                        if r.terminating {
                            stack.clear();
                            break;
                        }
                    }
                }
                children.reverse();
                stack.extend(children);
            }
        }
        if budget == 0 && !stack.is_empty() {
            tracing::warn!(
                target_name = name,
                max = self.limits.max_delegations,
                "delegation limit reached"
            );
        }
        Err(Error::TargetNotFound {
            name: name.to_string(),
        })
    }

    /// Every target the trusted metadata resolves: names collected from the
    /// roles reachable within `max_delegations`, each then resolved with
    /// `target()` so only names a role is actually trusted for appear.
    pub fn all_targets(&mut self) -> Result<Vec<Target>, Error> {
        let mut names = BTreeSet::new();
        let mut stack: Vec<(String, String)> = vec![(TARGETS.to_string(), ROOT.to_string())];
        let mut visited = BTreeSet::new();
        while let Some((role, parent)) = stack.pop() {
            if visited.len() as u32 >= self.limits.max_delegations || !visited.insert(role.clone())
            {
                continue;
            }
            self.load_targets(&role, &parent)?;
            let Some(meta) = self.trusted()?.targets(&role) else {
                return Err(Error::NotRefreshed);
            };
            names.extend(meta.targets.keys().cloned());
            if let Some(d) = &meta.delegations {
                for r in d.roles.iter().rev() {
                    stack.push((r.name.clone(), role.clone()));
                }
            }
        }
        let mut out = Vec::new();
        for n in names {
            if let Err(why) = check_target_name(&n) {
                tracing::warn!(target_name = %n, why, "skipping unsafe target path");
                continue;
            }
            match self.target(&n) {
                Ok(t) => out.push(t),
                Err(Error::TargetNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Download `target` into `out`, reading at most its listed length (one
    /// byte more is an error) and checking its hashes. On error, discard what
    /// was written.
    pub fn download(&self, target: &Target, out: &mut dyn Write) -> Result<u64, Error> {
        check_target_name(&target.name).map_err(|why| Error::Target {
            name: target.name.clone(),
            rule: TargetRule::UnsafeName(why),
        })?;
        let path = target.repository_path(self.root()?.consistent_snapshot);
        let mut reader = match self.transport.fetch_target(&path, target.length) {
            Ok(r) => r,
            Err(TransportError::TooLarge { max }) => {
                return Err(Error::Target {
                    name: target.name.clone(),
                    rule: TargetRule::TooLong { max },
                })
            }
            Err(e) => return Err(fetch_err(&path)(e)),
        };
        target.copy_verified(&mut reader, out)
    }

    /// Download `target` into memory (small targets, tests).
    pub fn download_bytes(&self, target: &Target) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.download(target, &mut out)?;
        Ok(out)
    }
}

fn too_large(role: &str, max: u64) -> Error {
    Error::Rejected {
        role: role.to_string(),
        version: None,
        rule: Rule::TooLarge { max },
    }
}

/// Keys and threshold of a top-level role, for callers that show them.
pub fn role_keys<'a>(root: &'a Root, role: &str) -> Option<&'a RoleKeys> {
    root.role(role)
}
