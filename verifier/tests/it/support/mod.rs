//! A repository simulator for scenario tests (the model is python-tuf's
//! `RepositorySimulator`): real keys, real signatures, metadata served from
//! memory through the `Transport` trait so a test can tamper with any byte.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use chrono::{DateTime, Duration, TimeZone, Utc};
use verifier::metadata::{
    DelegatedRole, Delegations, Expires, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets,
    Timestamp,
};
use verifier::publish::sign_metadata;
use verifier::{MemoryStorage, SigningKey, Transport, TransportError, Updater};

/// The fixed start time of every simulated update.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// Expiry `days` after `now()` (negative: already expired).
pub fn in_days(days: i64) -> Expires {
    Expires(now() + Duration::days(days))
}

fn sha256_hex(b: &[u8]) -> String {
    verifier::digest::sha256_hex(b)
}

/// Deterministic key from a label.
pub fn key(label: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    let h = sha256_hex(label.as_bytes());
    hex::decode_to_slice(&h[..64], &mut seed).expect("64 hex chars");
    SigningKey::from_seed(seed)
}

pub struct Repo {
    pub root: Root,
    pub timestamp: Timestamp,
    pub snapshot: Snapshot,
    pub targets: Targets,
    /// Keys used to sign each role (tests may put wrong keys here).
    pub signers: BTreeMap<String, Vec<SigningKey>>,
    /// Delegated roles: metadata and signing keys.
    pub delegated: BTreeMap<String, (Targets, Vec<SigningKey>)>,
    /// Served metadata files by name.
    pub meta: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Served target files by repository path.
    pub blobs: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Every fetch, in order.
    pub fetches: Mutex<Vec<String>>,
    key_counter: u32,
}

impl Repo {
    /// A repository with consistent snapshots, one key per role, everything
    /// at version 1 and served.
    pub fn new() -> Self {
        Self::with_consistent(true)
    }

    pub fn with_consistent(consistent: bool) -> Self {
        let mut signers = BTreeMap::new();
        let mut keys = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for role in ["root", "timestamp", "snapshot", "targets"] {
            let k = key(&format!("{role}-0"));
            keys.insert(k.key_id(), k.public_key());
            roles.insert(
                role.to_string(),
                RoleKeys {
                    keyids: vec![k.key_id()],
                    threshold: 1,
                },
            );
            signers.insert(role.to_string(), vec![k]);
        }
        let root = Root {
            type_: "root".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires: in_days(365),
            consistent_snapshot: consistent,
            keys,
            roles,
        };
        let targets = Targets {
            type_: "targets".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires: in_days(30),
            targets: BTreeMap::new(),
            delegations: None,
        };
        let snapshot = Snapshot {
            type_: "snapshot".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires: in_days(30),
            meta: [(
                "targets.json".to_string(),
                MetaFile {
                    version: 1,
                    length: None,
                    hashes: None,
                },
            )]
            .into(),
        };
        let timestamp = Timestamp {
            type_: "timestamp".into(),
            spec_version: "1.0.31".into(),
            version: 1,
            expires: in_days(1),
            meta: [(
                "snapshot.json".to_string(),
                MetaFile {
                    version: 1,
                    length: None,
                    hashes: None,
                },
            )]
            .into(),
        };
        let mut repo = Repo {
            root,
            timestamp,
            snapshot,
            targets,
            signers,
            delegated: BTreeMap::new(),
            meta: Mutex::new(BTreeMap::new()),
            blobs: Mutex::new(BTreeMap::new()),
            fetches: Mutex::new(Vec::new()),
            key_counter: 1,
        };
        repo.write_root();
        repo.write_targets();
        repo.write_snapshot();
        repo.write_timestamp();
        repo
    }

    pub fn consistent(&self) -> bool {
        self.root.consistent_snapshot
    }

    pub fn signer_refs(&self, role: &str) -> Vec<&SigningKey> {
        self.signers
            .get(role)
            .map(|v| v.iter().collect())
            .unwrap_or_default()
    }

    pub fn serve(&self, name: &str, bytes: Vec<u8>) {
        self.meta.lock().unwrap().insert(name.to_string(), bytes);
    }

    pub fn served(&self, name: &str) -> Vec<u8> {
        self.meta
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub fn unserve(&self, name: &str) {
        self.meta.lock().unwrap().remove(name);
    }

    /// The signed bytes of the current root (root keys in `signers`).
    pub fn root_bytes(&self) -> Vec<u8> {
        sign_metadata(&self.root, &self.signer_refs("root")).unwrap()
    }

    /// Serve the current root as `N.root.json`.
    pub fn write_root(&mut self) -> Vec<u8> {
        let b = self.root_bytes();
        self.serve(&format!("{}.root.json", self.root.version), b.clone());
        b
    }

    fn meta_entry(version: u64, bytes: &[u8]) -> MetaFile {
        MetaFile {
            version,
            length: Some(bytes.len() as u64),
            hashes: Some([("sha256".to_string(), sha256_hex(bytes))].into()),
        }
    }

    fn versioned(&self, version: u64, file: &str) -> String {
        if self.consistent() {
            format!("{version}.{file}")
        } else {
            file.to_string()
        }
    }

    /// Sign and serve targets; update snapshot's entry (not re-signed).
    pub fn write_targets(&mut self) -> Vec<u8> {
        let b = sign_metadata(&self.targets, &self.signer_refs("targets")).unwrap();
        self.serve(
            &self.versioned(self.targets.version, "targets.json"),
            b.clone(),
        );
        self.snapshot.meta.insert(
            "targets.json".into(),
            Self::meta_entry(self.targets.version, &b),
        );
        b
    }

    /// Sign and serve a delegated role; update snapshot's entry.
    pub fn write_delegated(&mut self, role: &str) -> Vec<u8> {
        let (t, keys) = &self.delegated[role];
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let b = sign_metadata(t, &refs).unwrap();
        let v = t.version;
        let file = verifier::role_file(role);
        self.serve(&self.versioned(v, &file), b.clone());
        self.snapshot
            .meta
            .insert(format!("{role}.json"), Self::meta_entry(v, &b));
        b
    }

    /// Sign and serve snapshot; update timestamp's entry.
    pub fn write_snapshot(&mut self) -> Vec<u8> {
        let b = sign_metadata(&self.snapshot, &self.signer_refs("snapshot")).unwrap();
        self.serve(
            &self.versioned(self.snapshot.version, "snapshot.json"),
            b.clone(),
        );
        self.timestamp.meta.insert(
            "snapshot.json".into(),
            Self::meta_entry(self.snapshot.version, &b),
        );
        b
    }

    /// Sign and serve timestamp.
    pub fn write_timestamp(&mut self) -> Vec<u8> {
        let b = sign_metadata(&self.timestamp, &self.signer_refs("timestamp")).unwrap();
        self.serve("timestamp.json", b.clone());
        b
    }

    /// New versions of targets (and every delegated role), snapshot and
    /// timestamp, all signed and served: an honest publish.
    pub fn commit(&mut self) {
        self.targets.version += 1;
        self.write_targets();
        let roles: Vec<String> = self.delegated.keys().cloned().collect();
        for r in roles {
            self.delegated.get_mut(&r).unwrap().0.version += 1;
            self.write_delegated(&r);
        }
        self.snapshot.version += 1;
        self.write_snapshot();
        self.timestamp.version += 1;
        self.write_timestamp();
    }

    /// Add a target (bytes served under the right path); call `commit` after.
    pub fn add_target(&mut self, name: &str, bytes: &[u8]) {
        let file = TargetFile {
            length: bytes.len() as u64,
            hashes: [("sha256".to_string(), sha256_hex(bytes))].into(),
            custom: None,
        };
        self.targets.targets.insert(name.into(), file);
        self.serve_blob(name, bytes);
    }

    pub fn serve_blob(&self, name: &str, bytes: &[u8]) {
        let path = if self.consistent() {
            match name.rsplit_once('/') {
                Some((d, b)) => format!("{d}/{}.{b}", sha256_hex(bytes)),
                None => format!("{}.{name}", sha256_hex(bytes)),
            }
        } else {
            name.to_string()
        };
        self.blobs.lock().unwrap().insert(path, bytes.to_vec());
    }

    pub fn fresh_key(&mut self, role: &str) -> SigningKey {
        self.key_counter += 1;
        key(&format!("{role}-{}", self.key_counter))
    }

    /// Replace `role`'s keys with `n` new keys in root N+1, signed by the
    /// old root keys and (for root) the new ones; serve it. Returns new keys' ids.
    pub fn rotate(&mut self, role: &str, n: usize) {
        let old_root_signers = std::mem::take(self.signers.get_mut("root").unwrap());
        let fresh: Vec<SigningKey> = (0..n).map(|_| self.fresh_key(role)).collect();
        for k in &fresh {
            self.root.keys.insert(k.key_id(), k.public_key());
        }
        let rk = self.root.roles.get_mut(role).unwrap();
        rk.keyids = fresh.iter().map(|k| k.key_id()).collect();
        self.root.version += 1;
        let mut signers: Vec<&SigningKey> = old_root_signers.iter().collect();
        if role == "root" {
            signers.extend(fresh.iter());
        }
        let b = sign_metadata(&self.root, &signers).unwrap();
        self.serve(&format!("{}.root.json", self.root.version), b);
        if role == "root" {
            self.signers.insert("root".into(), fresh);
        } else {
            self.signers.insert("root".into(), old_root_signers);
            self.signers.insert(role.into(), fresh);
        }
    }

    /// Delegate `child` from `parent` ("targets" or a delegated role).
    pub fn delegate(&mut self, parent: &str, child: &str, paths: &[&str], terminating: bool) {
        let k = self.fresh_key(child);
        let role = DelegatedRole {
            name: child.into(),
            keyids: vec![k.key_id()],
            threshold: 1,
            terminating,
            paths: Some(paths.iter().map(|s| s.to_string()).collect()),
            path_hash_prefixes: None,
        };
        let pk = (k.key_id(), k.public_key());
        let parent_meta = if parent == "targets" {
            &mut self.targets
        } else {
            &mut self.delegated.get_mut(parent).unwrap().0
        };
        let d = parent_meta.delegations.get_or_insert(Delegations {
            keys: BTreeMap::new(),
            roles: vec![],
        });
        d.keys.insert(pk.0, pk.1);
        d.roles.push(role);
        if !self.delegated.contains_key(child) {
            let t = Targets {
                type_: "targets".into(),
                spec_version: "1.0.31".into(),
                version: 1,
                expires: in_days(30),
                targets: BTreeMap::new(),
                delegations: None,
            };
            self.delegated.insert(child.into(), (t, vec![k]));
        } else {
            self.delegated.get_mut(child).unwrap().1.push(k);
        }
    }

    /// Add a target to a delegated role.
    pub fn add_delegated_target(&mut self, role: &str, name: &str, bytes: &[u8]) {
        let file = TargetFile {
            length: bytes.len() as u64,
            hashes: [("sha256".to_string(), sha256_hex(bytes))].into(),
            custom: None,
        };
        self.delegated
            .get_mut(role)
            .unwrap()
            .0
            .targets
            .insert(name.into(), file);
        self.serve_blob(name, bytes);
    }

    /// A client storage holding this repository's root v1 as trusted root.
    pub fn storage_with_root(&self, root_v1: &[u8]) -> MemoryStorage {
        let s = MemoryStorage::new();
        verifier::install_root(&s, root_v1, now()).unwrap();
        s
    }

    /// Root v1 bytes as served.
    pub fn root_v1(&self) -> Vec<u8> {
        self.served("1.root.json")
    }

    pub fn updater<'a>(
        &'a self,
        storage: &'a MemoryStorage,
    ) -> Updater<&'a MemoryStorage, &'a Repo> {
        Updater::new(storage, self, now())
    }

    pub fn fetched(&self) -> Vec<String> {
        self.fetches.lock().unwrap().clone()
    }
}

impl Transport for Repo {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        self.fetches.lock().unwrap().push(name.to_string());
        let m = self.meta.lock().unwrap();
        let b = m.get(name).ok_or(TransportError::NotFound)?;
        // Like a well-behaved HTTP transport: cut at max_len + 1.
        Ok(b[..b.len().min(max_len as usize + 1)].to_vec())
    }

    fn fetch_target(
        &self,
        path: &str,
        _max_len: u64,
    ) -> Result<Box<dyn Read + '_>, TransportError> {
        self.fetches.lock().unwrap().push(format!("targets/{path}"));
        let b = self
            .blobs
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .ok_or(TransportError::NotFound)?;
        Ok(Box::new(std::io::Cursor::new(b)))
    }
}

/// A fresh client that trusts root v1 of `repo` and has refreshed once.
pub fn client(repo: &Repo) -> MemoryStorage {
    let s = repo.storage_with_root(&repo.root_v1());
    repo.updater(&s).refresh().expect("honest first refresh");
    s
}

/// The chain of an error as one line (what the CLI prints).
#[allow(unused_imports)] // not every scenario prints a chain
pub use verifier::error_chain as chain;
