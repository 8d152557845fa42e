//! The signing side: key directories (`phase keygen`, `phase rotate`) and a
//! repository publisher (`phase publish`) that writes consistent-snapshot
//! metadata and hash-prefixed target files, so a plain static web server
//! serving the repository directory is a valid TUF repository.
//!
//! Key directory layout: `N.root.json` (every root version), `root.json`
//! (copy of the newest), `<role>-<keyid prefix>.key` (PKCS#8 PEM Ed25519,
//! mode 0600), and `retired/` for keys rotated out. Which role a key serves
//! is read from the newest root, never from the file name.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::crypto::{KeyError, SigningKey};
use crate::metadata::{
    Envelope, MetaFile, RoleKeys, Root, Snapshot, TargetFile, Targets, Timestamp, ROOT, SNAPSHOT,
    SPEC_VERSION, TARGETS, TIMESTAMP, TOP_LEVEL_ROLES,
};
use crate::target::{check_target_name, Chunks, Kind, DEFAULT_CHUNK_SIZE};

/// Why keygen, rotate or publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// File system error on a path.
    #[error("I/O on {path} failed")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A private key file could not be read.
    #[error("reading private key {path} failed")]
    Key {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: KeyError,
    },
    /// A metadata file could not be parsed.
    #[error("parsing {path} failed")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Metadata could not be canonicalized or serialized.
    #[error("serializing {what} failed")]
    Serialize {
        /// Which metadata.
        what: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Not enough private keys for a role.
    #[error("{dir} holds {have} of the {need} {role} keys that root v{root_version} requires")]
    MissingKeys {
        /// Key directory.
        dir: PathBuf,
        /// Role.
        role: String,
        /// Keys found.
        have: usize,
        /// Threshold.
        need: u64,
        /// Root version.
        root_version: u64,
    },
    /// Would overwrite existing keys.
    #[error("{0} already holds a root; refusing to overwrite keys")]
    Exists(PathBuf),
    /// No root in the key directory.
    #[error("{0} holds no N.root.json; run `phase keygen` first")]
    NoRoot(PathBuf),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sign `signed` with `keys` and return the envelope as pretty JSON (the
/// signatures cover the canonical form of `signed`).
pub fn sign_metadata<T: Serialize>(
    signed: &T,
    keys: &[&SigningKey],
) -> Result<Vec<u8>, PublishError> {
    let what = || {
        std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("metadata")
            .to_string()
    };
    let value = serde_json::to_value(signed).map_err(|source| PublishError::Serialize {
        what: what(),
        source,
    })?;
    let canonical = crate::cjson::to_canonical(&value)
        .map_err(|e| PublishError::Invalid(format!("{} has no canonical form: {e}", what())))?;
    let signatures = keys.iter().map(|k| k.sign(&canonical)).collect();
    let env = Envelope {
        signatures,
        signed: value,
    };
    let mut out = serde_json::to_vec_pretty(&env).map_err(|source| PublishError::Serialize {
        what: what(),
        source,
    })?;
    out.push(b'\n');
    Ok(out)
}

/// Write `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PublishError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PublishError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| PublishError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn read_signed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PublishError> {
    let env: Envelope = read_json(path)?;
    serde_json::from_value(env.signed).map_err(|source| PublishError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Versions `N` of the `N.<suffix>` files in `dir`, sorted.
fn versions(dir: &Path, suffix: &str) -> Result<Vec<u64>, PublishError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(v) = name.strip_suffix(suffix).and_then(|n| n.strip_suffix('.')) {
            if let Ok(v) = v.parse::<u64>() {
                out.push(v);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Options for `generate_keys`.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    /// Number of root keys.
    pub root_keys: u32,
    /// Root threshold.
    pub root_threshold: u64,
    /// Root expiry.
    pub root_expires: DateTime<Utc>,
    /// Write `consistent_snapshot: true` (the default and what the layout expects).
    pub consistent_snapshot: bool,
}

/// What keygen or rotate produced.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The new root file.
    pub root_file: PathBuf,
    /// Its version.
    pub root_version: u64,
    /// Key ids per role.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Root key fingerprint (`root_fingerprint`).
    pub fingerprint: String,
}

fn report(dir: &Path, root: &Root) -> KeyReport {
    KeyReport {
        root_file: dir.join(format!("{}.root.json", root.version)),
        root_version: root.version,
        roles: root
            .roles
            .iter()
            .map(|(r, k)| (r.clone(), k.keyids.clone()))
            .collect(),
        fingerprint: crate::updater::root_fingerprint(root),
    }
}

fn write_key(dir: &Path, role: &str, key: &SigningKey) -> Result<(), PublishError> {
    let id = key.key_id();
    let path = dir.join(format!("{role}-{}.key", &id[..16]));
    let pem = key.to_pkcs8_pem().map_err(|source| PublishError::Key {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, pem.as_bytes(), 0o600)
}

/// Generate keys for every top-level role and a signed `1.root.json` in `dir`.
pub fn generate_keys(dir: &Path, opts: &KeygenOptions) -> Result<KeyReport, PublishError> {
    if opts.root_keys == 0
        || opts.root_threshold == 0
        || opts.root_threshold > u64::from(opts.root_keys)
    {
        return Err(PublishError::Invalid(format!(
            "root threshold {} must be between 1 and the number of root keys ({})",
            opts.root_threshold, opts.root_keys
        )));
    }
    if !versions(dir, "root.json")?.is_empty() {
        return Err(PublishError::Exists(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut root = Root {
        type_: ROOT.into(),
        spec_version: SPEC_VERSION.into(),
        version: 1,
        expires: crate::metadata::Expires(opts.root_expires),
        consistent_snapshot: opts.consistent_snapshot,
        keys: BTreeMap::new(),
        roles: BTreeMap::new(),
    };
    let mut root_signers = Vec::new();
    for role in TOP_LEVEL_ROLES {
        let (count, threshold) = if role == ROOT {
            (opts.root_keys, opts.root_threshold)
        } else {
            (1, 1)
        };
        let mut ids = Vec::new();
        for _ in 0..count {
            let k = SigningKey::generate();
            write_key(dir, role, &k)?;
            root.keys.insert(k.key_id(), k.public_key());
            ids.push(k.key_id());
            if role == ROOT {
                root_signers.push(k);
            }
        }
        root.roles.insert(
            role.into(),
            RoleKeys {
                keyids: ids,
                threshold,
            },
        );
    }
    let signers: Vec<&SigningKey> = root_signers.iter().collect();
    let bytes = sign_metadata(&root, &signers)?;
    write_atomic(&dir.join("1.root.json"), &bytes, 0o644)?;
    write_atomic(&dir.join("root.json"), &bytes, 0o644)?;
    Ok(report(dir, &root))
}

/// A key directory: the newest root and the private keys present.
#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    root: Root,
    keys: Vec<SigningKey>,
}

impl KeyDir {
    /// Load `dir`.
    pub fn open(dir: &Path) -> Result<Self, PublishError> {
        let latest = *versions(dir, "root.json")?
            .last()
            .ok_or_else(|| PublishError::NoRoot(dir.to_path_buf()))?;
        let root: Root = read_signed(&dir.join(format!("{latest}.root.json")))?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("key") {
                continue;
            }
            let pem = fs::read_to_string(&path).map_err(io(&path))?;
            let key = SigningKey::from_pkcs8_pem(&pem)
                .map_err(|source| PublishError::Key { path, source })?;
            keys.push(key);
        }
        Ok(KeyDir {
            dir: dir.to_path_buf(),
            root,
            keys,
        })
    }

    /// The newest root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The private keys of `role` under `root`, at least its threshold.
    pub fn signers_for(&self, root: &Root, role: &str) -> Result<Vec<&SigningKey>, PublishError> {
        let rk = root
            .role(role)
            .ok_or_else(|| PublishError::Invalid(format!("root has no {role} role")))?;
        let found: Vec<&SigningKey> = self
            .keys
            .iter()
            .filter(|k| rk.keyids.contains(&k.key_id()))
            .collect();
        if (found.len() as u64) < rk.threshold {
            return Err(PublishError::MissingKeys {
                dir: self.dir.clone(),
                role: role.into(),
                have: found.len(),
                need: rk.threshold,
                root_version: root.version,
            });
        }
        Ok(found)
    }
}

/// Options for `rotate_keys`.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Role whose keys are replaced.
    pub role: String,
    /// New key count (default: the current count).
    pub keys: Option<u32>,
    /// New threshold (default: the current threshold, capped at the count).
    pub threshold: Option<u64>,
    /// Expiry of the new root.
    pub root_expires: DateTime<Utc>,
}

/// Replace `role`'s keys with new ones and write root `N+1`, signed by a
/// threshold of the old root keys and of the new root keys. Keys no longer
/// used move to `retired/`.
pub fn rotate_keys(dir: &Path, opts: &RotateOptions) -> Result<KeyReport, PublishError> {
    let kd = KeyDir::open(dir)?;
    let old = kd.root.clone();
    let role = opts.role.as_str();
    let current = old
        .role(role)
        .ok_or_else(|| PublishError::Invalid(format!("{role:?} is not a top-level role")))?
        .clone();
    let count = opts.keys.unwrap_or(current.keyids.len() as u32).max(1);
    let threshold = opts
        .threshold
        .unwrap_or(current.threshold)
        .min(u64::from(count));
    if threshold == 0 {
        return Err(PublishError::Invalid("threshold must be at least 1".into()));
    }
    let old_signers = kd.signers_for(&old, ROOT)?;
    let mut new = old.clone();
    new.version = old.version + 1;
    new.expires = crate::metadata::Expires(opts.root_expires);
    let fresh: Vec<SigningKey> = (0..count).map(|_| SigningKey::generate()).collect();
    for k in &fresh {
        new.keys.insert(k.key_id(), k.public_key());
    }
    new.roles.insert(
        role.into(),
        RoleKeys {
            keyids: fresh.iter().map(SigningKey::key_id).collect(),
            threshold,
        },
    );
    let in_use: Vec<String> = new.roles.values().flat_map(|r| r.keyids.clone()).collect();
    new.keys.retain(|id, _| in_use.contains(id));

    let mut signers: Vec<&SigningKey> = old_signers;
    if role == ROOT {
        signers.extend(fresh.iter());
    }
    let bytes = sign_metadata(&new, &signers)?;
    for k in &fresh {
        write_key(dir, role, k)?;
    }
    let file = dir.join(format!("{}.root.json", new.version));
    write_atomic(&file, &bytes, 0o644)?;
    write_atomic(&dir.join("root.json"), &bytes, 0o644)?;
    // Retire keys the new root no longer lists (kept, not deleted).
    let retired = dir.join("retired");
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("key") {
            continue;
        }
        let pem = fs::read_to_string(&path).map_err(io(&path))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|source| PublishError::Key {
            path: path.clone(),
            source,
        })?;
        if !in_use.contains(&key.key_id()) {
            fs::create_dir_all(&retired).map_err(io(&retired))?;
            let to = retired.join(path.file_name().unwrap_or_default());
            fs::rename(&path, &to).map_err(io(&to))?;
        }
    }
    Ok(report(dir, &new))
}

/// Custom metadata given for a new target (chunks are computed).
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Target path (`stable/x86_64/kernel`, `jobs/hello.wasm`).
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Release version.
    pub version: String,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// File to publish.
    pub source: PathBuf,
}

/// One published target, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedTarget {
    /// Target path.
    pub name: String,
    /// SHA-256 hex.
    pub sha256: String,
    /// Length.
    pub length: u64,
    /// File written under `targets/`.
    pub file: PathBuf,
}

/// What a publish produced.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// Targets added or updated.
    pub targets: Vec<PublishedTarget>,
    /// New targets version.
    pub targets_version: u64,
    /// New snapshot version.
    pub snapshot_version: u64,
    /// New timestamp version.
    pub timestamp_version: u64,
    /// Root version in the repository.
    pub root_version: u64,
}

/// Publishes into a repository directory (`metadata/`, `targets/`).
#[derive(Debug)]
pub struct Publisher {
    repo: PathBuf,
    keys: KeyDir,
    targets: Targets,
    snapshot: Option<Snapshot>,
    timestamp: Option<Timestamp>,
    added: Vec<PublishedTarget>,
    chunk_size: u64,
}

impl Publisher {
    /// Open `repo` (created if absent) with the keys in `keys_dir`. Every
    /// root version in the key directory missing from the repository is
    /// copied in, and `metadata/root.json` is the newest.
    pub fn open(repo: &Path, keys_dir: &Path) -> Result<Self, PublishError> {
        let keys = KeyDir::open(keys_dir)?;
        let meta = repo.join("metadata");
        fs::create_dir_all(&meta).map_err(io(&meta))?;
        fs::create_dir_all(repo.join("targets")).map_err(io(repo))?;
        let have = versions(&meta, "root.json")?;
        for v in versions(keys_dir, "root.json")? {
            if !have.contains(&v) {
                let from = keys_dir.join(format!("{v}.root.json"));
                let bytes = fs::read(&from).map_err(io(&from))?;
                write_atomic(&meta.join(format!("{v}.root.json")), &bytes, 0o644)?;
            }
        }
        let latest = keys.root.version;
        let from = meta.join(format!("{latest}.root.json"));
        let bytes = fs::read(&from).map_err(io(&from))?;
        write_atomic(&meta.join("root.json"), &bytes, 0o644)?;

        let consistent = keys.root.consistent_snapshot;
        let ts_path = meta.join("timestamp.json");
        let (timestamp, snapshot, targets) = if ts_path.exists() {
            let ts: Timestamp = read_signed(&ts_path)?;
            let sv = ts.meta.get("snapshot.json").map(|m| m.version).unwrap_or(0);
            let sp = if consistent {
                meta.join(format!("{sv}.snapshot.json"))
            } else {
                meta.join("snapshot.json")
            };
            let snap: Snapshot = read_signed(&sp)?;
            let tv = snap
                .meta
                .get("targets.json")
                .map(|m| m.version)
                .unwrap_or(0);
            let tp = if consistent {
                meta.join(format!("{tv}.targets.json"))
            } else {
                meta.join("targets.json")
            };
            let targets: Targets = read_signed(&tp)?;
            (Some(ts), Some(snap), targets)
        } else {
            let targets = Targets {
                type_: TARGETS.into(),
                spec_version: SPEC_VERSION.into(),
                version: 0,
                expires: crate::metadata::Expires(Utc::now()),
                targets: BTreeMap::new(),
                delegations: None,
            };
            (None, None, targets)
        };
        Ok(Publisher {
            repo: repo.to_path_buf(),
            keys,
            targets,
            snapshot,
            timestamp,
            added: Vec::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
        })
    }

    /// Use another chunk size (tests).
    pub fn chunk_size(mut self, size: u64) -> Self {
        self.chunk_size = size.max(1);
        self
    }

    /// The version the next commit will give targets metadata.
    pub fn next_targets_version(&self) -> u64 {
        self.targets.version + 1
    }

    /// Copy a file into `targets/` (hash-prefixed with consistent
    /// snapshots) and list it with its custom metadata.
    pub fn add_target(&mut self, spec: &TargetSpec) -> Result<(), PublishError> {
        self.add_target_with(spec, serde_json::Map::new())
    }

    /// [`Publisher::add_target`] with more signed custom metadata: `extra`
    /// keys are added beside `kind`, `version`, `chunks` and `cmdline`
    /// (a job's `args`, `env`, `limits`). An `extra` key naming one of those
    /// four is refused, so what the publisher computes cannot be overridden.
    pub fn add_target_with(
        &mut self,
        spec: &TargetSpec,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), PublishError> {
        if let Some(k) = extra
            .keys()
            .find(|k| ["kind", "version", "chunks", "cmdline"].contains(&k.as_str()))
        {
            return Err(PublishError::Invalid(format!(
                "target {:?}: custom metadata key {k:?} is set by the publisher",
                spec.name
            )));
        }
        check_target_name(&spec.name)
            .map_err(|why| PublishError::Invalid(format!("target name {:?}: {why}", spec.name)))?;
        let src = fs::File::open(&spec.source).map_err(io(&spec.source))?;
        let (chunks, length, sha256) =
            Chunks::of_reader(std::io::BufReader::new(src), self.chunk_size)
                .map_err(io(&spec.source))?;
        let rel = if self.keys.root.consistent_snapshot {
            match spec.name.rsplit_once('/') {
                Some((d, b)) => format!("{d}/{sha256}.{b}"),
                None => format!("{sha256}.{}", spec.name),
            }
        } else {
            spec.name.clone()
        };
        let dest = self.repo.join("targets").join(&rel);
        let parent = dest.parent().unwrap_or(&self.repo);
        fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = parent.join(format!(".{sha256}.tmp"));
        fs::copy(&spec.source, &tmp).map_err(io(&tmp))?;
        let check = fs::read(&tmp).map_err(io(&tmp))?;
        if crate::digest::sha256_hex(&check) != sha256 {
            return Err(PublishError::Invalid(format!(
                "{} changed while it was being published",
                spec.source.display()
            )));
        }
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        let mut custom = serde_json::json!({
            "kind": spec.kind.as_str(),
            "version": spec.version,
            "chunks": chunks,
        });
        if let Some(c) = &spec.cmdline {
            custom["cmdline"] = serde_json::Value::String(c.clone());
        }
        for (k, v) in extra {
            custom[k] = v;
        }
        self.targets.targets.insert(
            spec.name.clone(),
            TargetFile {
                length,
                hashes: [("sha256".to_string(), sha256.clone())].into(),
                custom: Some(custom),
            },
        );
        self.added.push(PublishedTarget {
            name: spec.name.clone(),
            sha256,
            length,
            file: dest,
        });
        Ok(())
    }

    /// Sign and write new targets, snapshot and timestamp metadata.
    pub fn commit(mut self, expires: Duration) -> Result<PublishReport, PublishError> {
        let root = self.keys.root.clone();
        let consistent = root.consistent_snapshot;
        let until = crate::metadata::Expires(Utc::now() + expires);
        let meta_dir = self.repo.join("metadata");

        self.targets.version += 1;
        self.targets.expires = until;
        let tbytes = sign_metadata(&self.targets, &self.keys.signers_for(&root, TARGETS)?)?;
        let tname = if consistent {
            format!("{}.targets.json", self.targets.version)
        } else {
            "targets.json".into()
        };
        write_atomic(&meta_dir.join(&tname), &tbytes, 0o644)?;

        let mut snap = self.snapshot.take().unwrap_or(Snapshot {
            type_: SNAPSHOT.into(),
            spec_version: SPEC_VERSION.into(),
            version: 0,
            expires: until,
            meta: BTreeMap::new(),
        });
        snap.version += 1;
        snap.expires = until;
        snap.spec_version = SPEC_VERSION.into();
        snap.meta.insert(
            "targets.json".into(),
            meta_file(self.targets.version, &tbytes),
        );
        let sbytes = sign_metadata(&snap, &self.keys.signers_for(&root, SNAPSHOT)?)?;
        let sname = if consistent {
            format!("{}.snapshot.json", snap.version)
        } else {
            "snapshot.json".into()
        };
        write_atomic(&meta_dir.join(&sname), &sbytes, 0o644)?;

        let mut ts = self.timestamp.take().unwrap_or(Timestamp {
            type_: TIMESTAMP.into(),
            spec_version: SPEC_VERSION.into(),
            version: 0,
            expires: until,
            meta: BTreeMap::new(),
        });
        ts.version += 1;
        ts.expires = until;
        ts.spec_version = SPEC_VERSION.into();
        ts.meta = [(
            "snapshot.json".to_string(),
            meta_file(snap.version, &sbytes),
        )]
        .into();
        let tsbytes = sign_metadata(&ts, &self.keys.signers_for(&root, TIMESTAMP)?)?;
        write_atomic(&meta_dir.join("timestamp.json"), &tsbytes, 0o644)?;

        Ok(PublishReport {
            targets: self.added,
            targets_version: self.targets.version,
            snapshot_version: snap.version,
            timestamp_version: ts.version,
            root_version: root.version,
        })
    }
}

fn meta_file(version: u64, bytes: &[u8]) -> MetaFile {
    MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some([("sha256".to_string(), crate::digest::sha256_hex(bytes))].into()),
    }
}
