//! The signing side: key directories (`phase keygen`, `phase rotate`) and a
//! repository publisher (`phase publish`) that writes consistent-snapshot
//! metadata and hash-prefixed target files, so a plain static web server
//! serving the repository directory is a valid TUF repository.
//!
//! Key directory layout: `N.root.json` (every root version), `root.json`
//! (copy of the newest), `<role>-<keyid prefix>.key` (PKCS#8 PEM Ed25519,
//! mode 0600), `retired/` for keys rotated out, and `staged/N.root.json`
//! for a root that is still collecting signatures. Which role a key serves
//! is read from the newest root, never from the file name.
//!
//! Keys held elsewhere (hardware tokens, KMS) sign through
//! [`MetadataSigner`]: this module hands it the canonical bytes and checks
//! the signature it returns against the declared public key before it is
//! written anywhere. Running the external command is the caller's I/O
//! edge (the `phase` binary); this crate stays free of process spawning.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::crypto::{KeyError, SigningKey};
use crate::metadata::{
    Envelope, Key, KeyVal, MetaFile, RoleKeys, Root, Signature, Snapshot, TargetFile, Targets,
    Timestamp, ROOT, SNAPSHOT, SPEC_VERSION, TARGETS, TIMESTAMP, TOP_LEVEL_ROLES,
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
    #[error(
        "{dir} holds {have} of the {need} {role} keys that root v{root_version} requires; \
         missing keys: {} (give each as a .key file or --signer {role}=PUBKEY:CMD)",
        missing.join(", ")
    )]
    MissingKeys {
        /// Key ids of the role with no signer.
        missing: Vec<String>,
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
    /// A signer (local or external) failed or returned a bad signature.
    #[error("signing {role} with key {keyid} failed: {reason}")]
    Signer {
        /// Role being signed.
        role: String,
        /// Key id of the signer.
        keyid: String,
        /// What went wrong.
        reason: String,
    },
    /// Metadata lacks a threshold of valid signatures.
    #[error(
        "{what} has {have} of the {need} {role} signatures it needs{under}; missing keys: {}",
        missing.join(", ")
    )]
    BelowThreshold {
        /// File or metadata named.
        what: String,
        /// Role whose keys count.
        role: String,
        /// Which root's keys (", counting root vN keys").
        under: String,
        /// Valid distinct signatures.
        have: usize,
        /// Threshold.
        need: u64,
        /// Key ids of the role without a valid signature.
        missing: Vec<String>,
    },
    /// A public key file could not be turned into a TUF key.
    #[error("public key {path}: {reason}")]
    PublicKey {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A key that signs metadata: a local [`SigningKey`] or an external signer
/// (a command driving a hardware token or KMS, run by the caller).
pub trait MetadataSigner: std::fmt::Debug {
    /// The TUF public key the signature must verify with.
    fn public_key(&self) -> Key;
    /// Its key id.
    fn key_id(&self) -> String;
    /// The raw signature bytes over `message` (Ed25519: 64 bytes; ECDSA:
    /// DER; RSA: the modulus-sized block). `Err` is a one-line reason.
    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, String>;
    /// Whether this signer is held to the role named (`None`: any role its
    /// key is listed for).
    fn role(&self) -> Option<&str> {
        None
    }
}

impl MetadataSigner for SigningKey {
    fn public_key(&self) -> Key {
        SigningKey::public_key(self)
    }
    fn key_id(&self) -> String {
        SigningKey::key_id(self)
    }
    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        hex::decode(self.sign(message).sig).map_err(|e| e.to_string())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn type_label<T>() -> String {
    std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("metadata")
        .to_string()
}

/// The JSON value of `signed` and its canonical bytes.
fn canonical_form<T: Serialize>(signed: &T) -> Result<(serde_json::Value, Vec<u8>), PublishError> {
    let value = serde_json::to_value(signed).map_err(|source| PublishError::Serialize {
        what: type_label::<T>(),
        source,
    })?;
    let canonical = crate::cjson::to_canonical(&value).map_err(|e| {
        PublishError::Invalid(format!("{} has no canonical form: {e}", type_label::<T>()))
    })?;
    Ok((value, canonical))
}

fn envelope_bytes(
    signatures: Vec<Signature>,
    signed: serde_json::Value,
) -> Result<Vec<u8>, PublishError> {
    let env = Envelope { signatures, signed };
    let mut out = serde_json::to_vec_pretty(&env).map_err(|source| PublishError::Serialize {
        what: "envelope".into(),
        source,
    })?;
    out.push(b'\n');
    Ok(out)
}

/// Sign `signed` with `keys` and return the envelope as pretty JSON (the
/// signatures cover the canonical form of `signed`).
pub fn sign_metadata<T: Serialize>(
    signed: &T,
    keys: &[&SigningKey],
) -> Result<Vec<u8>, PublishError> {
    let (value, canonical) = canonical_form(signed)?;
    let signatures = keys.iter().map(|k| k.sign(&canonical)).collect();
    envelope_bytes(signatures, value)
}

/// Sign `signed` (metadata of `role`) with any signers. Every signature is
/// checked against its signer's public key before it is kept, so a signer
/// that prints garbage or signs with another key fails here, naming the
/// role and key id, and nothing is written.
pub fn sign_metadata_with<T: Serialize>(
    role: &str,
    signed: &T,
    signers: &[&dyn MetadataSigner],
) -> Result<Vec<u8>, PublishError> {
    let (value, canonical) = canonical_form(signed)?;
    let mut signatures = Vec::with_capacity(signers.len());
    for s in signers {
        signatures.push(sign_checked(role, *s, &canonical)?);
    }
    envelope_bytes(signatures, value)
}

/// One signature over `canonical` from `signer`, verified with its key.
pub fn sign_checked(
    role: &str,
    signer: &dyn MetadataSigner,
    canonical: &[u8],
) -> Result<Signature, PublishError> {
    let keyid = signer.key_id();
    let err = |reason: String| PublishError::Signer {
        role: role.to_string(),
        keyid: keyid.clone(),
        reason,
    };
    let raw = signer.sign_bytes(canonical).map_err(err)?;
    if raw.is_empty() {
        return Err(err("the signer returned an empty signature".into()));
    }
    let sig = Signature {
        keyid: keyid.clone(),
        sig: hex::encode(&raw),
    };
    let key = signer.public_key();
    if !crate::crypto::verify_one(&key, canonical, &sig) {
        return Err(err(format!(
            "the {}-byte signature it returned does not verify with the declared {} key \
             (wrong key, wrong output format, or not a signature)",
            raw.len(),
            key.scheme
        )));
    }
    tracing::debug!(role, keyid = %keyid, scheme = %key.scheme, "signature checked");
    Ok(sig)
}

/// How many distinct keys of a role validly signed, and which are missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThresholdStatus {
    /// Distinct valid signatures of the role's keys.
    pub have: usize,
    /// The role's threshold.
    pub need: u64,
    /// Key ids of the role with no valid signature.
    pub missing: Vec<String>,
}

impl ThresholdStatus {
    /// Whether the threshold is met.
    pub fn met(&self) -> bool {
        self.have as u64 >= self.need
    }
}

/// Check `signatures` over `canonical` against `role` of `root`.
pub fn threshold_status(
    canonical: &[u8],
    signatures: &[Signature],
    root: &Root,
    role: &str,
) -> Result<ThresholdStatus, PublishError> {
    let rk = root.role(role).ok_or_else(|| {
        PublishError::Invalid(format!("root v{} has no {role} role", root.version))
    })?;
    let count = crate::crypto::count_signatures(
        canonical,
        signatures,
        &root.keys,
        &rk.keyids,
        rk.threshold,
    );
    let missing = rk
        .keyids
        .iter()
        .filter(|id| {
            let valid = root.keys.get(*id).is_some_and(|key| {
                signatures
                    .iter()
                    .filter(|s| &s.keyid == *id)
                    .any(|s| crate::crypto::verify_one(key, canonical, s))
            });
            !valid
        })
        .cloned()
        .collect();
    Ok(ThresholdStatus {
        have: count.valid as usize,
        need: rk.threshold,
        missing,
    })
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
    /// Written to `staged/` (not current until its thresholds are met).
    pub staged: bool,
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
        staged: false,
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

/// A key directory: the newest root, the private keys present, and the
/// external signers given by the caller.
#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    root: Root,
    keys: Vec<SigningKey>,
    external: Vec<Box<dyn MetadataSigner>>,
}

fn read_private_keys(dir: &Path) -> Result<Vec<(PathBuf, SigningKey)>, PublishError> {
    let mut keys = Vec::new();
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
        keys.push((path, key));
    }
    Ok(keys)
}

impl KeyDir {
    /// Load `dir`.
    pub fn open(dir: &Path) -> Result<Self, PublishError> {
        Self::open_with(dir, Vec::new())
    }

    /// Load `dir` and add external signers (keys held outside the machine).
    pub fn open_with(
        dir: &Path,
        external: Vec<Box<dyn MetadataSigner>>,
    ) -> Result<Self, PublishError> {
        let latest = *versions(dir, "root.json")?
            .last()
            .ok_or_else(|| PublishError::NoRoot(dir.to_path_buf()))?;
        let root: Root = read_signed(&dir.join(format!("{latest}.root.json")))?;
        let keys = read_private_keys(dir)?
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        Ok(KeyDir {
            dir: dir.to_path_buf(),
            root,
            keys,
            external,
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

    /// Every signer (local keys first) whose key `role` of `root` lists,
    /// one per key id.
    fn available(&self, root: &Root, role: &str) -> Vec<&dyn MetadataSigner> {
        let Some(rk) = root.role(role) else {
            return Vec::new();
        };
        let mut out: Vec<&dyn MetadataSigner> = Vec::new();
        let mut seen = Vec::new();
        let local = self.keys.iter().map(|k| k as &dyn MetadataSigner);
        let external = self
            .external
            .iter()
            .filter(|s| s.role().is_none_or(|r| r == role))
            .map(|s| s.as_ref());
        for s in local.chain(external) {
            let id = s.key_id();
            if rk.keyids.contains(&id) && !seen.contains(&id) {
                seen.push(id);
                out.push(s);
            }
        }
        out
    }

    /// The signers of `role` under `root`, at least its threshold.
    pub fn signers_for(
        &self,
        root: &Root,
        role: &str,
    ) -> Result<Vec<&dyn MetadataSigner>, PublishError> {
        let rk = root
            .role(role)
            .ok_or_else(|| PublishError::Invalid(format!("root has no {role} role")))?;
        let found = self.available(root, role);
        if (found.len() as u64) < rk.threshold {
            let have: Vec<String> = found.iter().map(|s| s.key_id()).collect();
            return Err(PublishError::MissingKeys {
                missing: rk
                    .keyids
                    .iter()
                    .filter(|id| !have.contains(id))
                    .cloned()
                    .collect(),
                dir: self.dir.clone(),
                role: role.into(),
                have: found.len(),
                need: rk.threshold,
                root_version: root.version,
            });
        }
        Ok(found)
    }

    /// Check that every external signer's key is listed for its role in the
    /// newest root (a typo in `--signer` fails before anything is signed).
    pub fn check_external(&self) -> Result<(), PublishError> {
        for s in &self.external {
            let id = s.key_id();
            let roles: Vec<&str> = self
                .root
                .roles
                .iter()
                .filter(|(_, rk)| rk.keyids.contains(&id))
                .map(|(r, _)| r.as_str())
                .collect();
            let ok = match s.role() {
                Some(r) => roles.contains(&r),
                None => !roles.is_empty(),
            };
            if !ok {
                return Err(PublishError::Signer {
                    role: s.role().unwrap_or("any").to_string(),
                    keyid: id,
                    reason: format!(
                        "root v{} does not list this key for the role (it is listed for: {})",
                        self.root.version,
                        if roles.is_empty() {
                            "none".to_string()
                        } else {
                            roles.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
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
    /// Public keys held outside the machine that become the role's keys
    /// (instead of generated Ed25519 keys; `keys` is then ignored).
    pub new_keys: Vec<Key>,
    /// Write `staged/N+1.root.json` with the signatures available now,
    /// instead of requiring both root thresholds and making it current.
    pub stage: bool,
}

fn staged_dir(dir: &Path) -> PathBuf {
    dir.join("staged")
}

/// Check a root's signatures: a threshold of the previous root's root keys
/// (when there is one) and of its own.
fn check_root_signatures(
    what: &str,
    prev: Option<&Root>,
    root: &Root,
    canonical: &[u8],
    signatures: &[Signature],
) -> Result<(), PublishError> {
    for under in prev.into_iter().chain(std::iter::once(root)) {
        let st = threshold_status(canonical, signatures, under, ROOT)?;
        if !st.met() {
            return Err(PublishError::BelowThreshold {
                what: what.to_string(),
                role: ROOT.into(),
                under: format!(", counting root v{} keys", under.version),
                have: st.have,
                need: st.need,
                missing: st.missing,
            });
        }
    }
    Ok(())
}

/// Move keys the root `in_use` no longer lists to `retired/` (kept, not
/// deleted).
fn retire_unused(dir: &Path, root: &Root) -> Result<(), PublishError> {
    let in_use: Vec<&String> = root.roles.values().flat_map(|r| r.keyids.iter()).collect();
    let retired = dir.join("retired");
    for (path, key) in read_private_keys(dir)? {
        if !in_use.contains(&&key.key_id()) {
            fs::create_dir_all(&retired).map_err(io(&retired))?;
            let to = retired.join(path.file_name().unwrap_or_default());
            fs::rename(&path, &to).map_err(io(&to))?;
        }
    }
    Ok(())
}

/// Replace `role`'s keys with new ones and write root `N+1`, signed by a
/// threshold of the old root keys and of the new root keys. Keys no longer
/// used move to `retired/`. With `opts.stage` the new root goes to
/// `staged/N+1.root.json` with whatever signatures the signers at hand
/// give; `phase sign` adds the others and `promote_staged` makes it current.
pub fn rotate_keys(dir: &Path, opts: &RotateOptions) -> Result<KeyReport, PublishError> {
    rotate_keys_with(dir, opts, Vec::new())
}

/// [`rotate_keys`] with external signers for old or new root keys.
pub fn rotate_keys_with(
    dir: &Path,
    opts: &RotateOptions,
    external: Vec<Box<dyn MetadataSigner>>,
) -> Result<KeyReport, PublishError> {
    promote_staged(dir)?;
    let kd = KeyDir::open_with(dir, external)?;
    let old = kd.root.clone();
    let role = opts.role.as_str();
    let current = old
        .role(role)
        .ok_or_else(|| PublishError::Invalid(format!("{role:?} is not a top-level role")))?
        .clone();
    let count = if opts.new_keys.is_empty() {
        opts.keys.unwrap_or(current.keyids.len() as u32).max(1)
    } else {
        opts.new_keys.len() as u32
    };
    let threshold = opts
        .threshold
        .unwrap_or(current.threshold)
        .min(u64::from(count));
    if threshold == 0 {
        return Err(PublishError::Invalid("threshold must be at least 1".into()));
    }
    if !opts.stage {
        // Fail before any external signer is asked when the old root
        // keys at hand cannot reach the threshold.
        kd.signers_for(&old, ROOT)?;
    }
    let mut new = old.clone();
    new.version = old.version + 1;
    new.expires = crate::metadata::Expires(opts.root_expires);
    let fresh: Vec<SigningKey> = if opts.new_keys.is_empty() {
        (0..count).map(|_| SigningKey::generate()).collect()
    } else {
        Vec::new()
    };
    let mut new_ids = Vec::new();
    for k in fresh
        .iter()
        .map(SigningKey::public_key)
        .chain(opts.new_keys.iter().cloned())
    {
        let id = crate::crypto::key_id(&k).map_err(|e| {
            PublishError::Invalid(format!("new {role} key has no canonical form: {e}"))
        })?;
        if new_ids.contains(&id) {
            return Err(PublishError::Invalid(format!(
                "new {role} key {id} is given twice"
            )));
        }
        new.keys.insert(id.clone(), k);
        new_ids.push(id);
    }
    new.roles.insert(
        role.into(),
        RoleKeys {
            keyids: new_ids,
            threshold,
        },
    );
    let in_use: Vec<String> = new.roles.values().flat_map(|r| r.keyids.clone()).collect();
    new.keys.retain(|id, _| in_use.contains(id));

    // Old root keys and new root keys at hand sign, each once.
    let mut signers: Vec<&dyn MetadataSigner> = kd.available(&old, ROOT);
    let mut ids: Vec<String> = signers.iter().map(|s| s.key_id()).collect();
    let fresh_refs = fresh.iter().map(|k| k as &dyn MetadataSigner);
    for s in kd.available(&new, ROOT).into_iter().chain(fresh_refs) {
        let id = s.key_id();
        if new.roles[ROOT].keyids.contains(&id) && !ids.contains(&id) {
            ids.push(id);
            signers.push(s);
        }
    }
    let (value, canonical) = canonical_form(&new)?;
    let mut signatures = Vec::new();
    for s in &signers {
        signatures.push(sign_checked(ROOT, *s, &canonical)?);
    }
    let name = format!("{}.root.json", new.version);
    if !opts.stage {
        check_root_signatures(&name, Some(&old), &new, &canonical, &signatures)?;
    }
    let bytes = envelope_bytes(signatures, value)?;
    for k in &fresh {
        write_key(dir, role, k)?;
    }
    if opts.stage {
        let path = staged_dir(dir).join(&name);
        write_atomic(&path, &bytes, 0o644)?;
        let mut r = report(dir, &new);
        r.root_file = path;
        r.staged = true;
        return Ok(r);
    }
    write_atomic(&dir.join(&name), &bytes, 0o644)?;
    write_atomic(&dir.join("root.json"), &bytes, 0o644)?;
    retire_unused(dir, &new)?;
    Ok(report(dir, &new))
}

/// Make staged roots current: each `staged/N.root.json` with `N` the next
/// root version is checked against a threshold of the current root's root
/// keys and of its own, then written as `N.root.json` and `root.json`. A
/// staged root below a threshold is an error naming the missing keys, and
/// nothing changes. Returns the root versions made current.
pub fn promote_staged(dir: &Path) -> Result<Vec<u64>, PublishError> {
    let staged = staged_dir(dir);
    let mut done = Vec::new();
    for v in versions(&staged, "root.json")? {
        let latest = versions(dir, "root.json")?.last().copied();
        let path = staged.join(format!("{v}.root.json"));
        let what = format!("staged root {}", path.display());
        match latest {
            Some(l) if v <= l => {
                return Err(PublishError::Invalid(format!(
                    "{what} is not newer than the current root v{l}; remove it"
                )))
            }
            Some(l) if v != l + 1 => {
                return Err(PublishError::Invalid(format!(
                    "{what} skips root v{}; stage that first",
                    l + 1
                )))
            }
            None if v != 1 => {
                return Err(PublishError::Invalid(format!(
                    "{what}: there is no root v{}",
                    v - 1
                )))
            }
            _ => {}
        }
        let bytes = fs::read(&path).map_err(io(&path))?;
        let (root, canonical, sigs) = read_staged_root(&path, &bytes, v)?;
        let prev: Option<Root> = match latest {
            Some(l) => Some(read_signed(&dir.join(format!("{l}.root.json")))?),
            None => None,
        };
        check_root_signatures(&what, prev.as_ref(), &root, &canonical, &sigs)?;
        write_atomic(&dir.join(format!("{v}.root.json")), &bytes, 0o644)?;
        write_atomic(&dir.join("root.json"), &bytes, 0o644)?;
        fs::remove_file(&path).map_err(io(&path))?;
        retire_unused(dir, &root)?;
        tracing::info!(version = v, "staged root made current");
        done.push(v);
    }
    Ok(done)
}

fn read_staged_root(
    path: &Path,
    bytes: &[u8],
    v: u64,
) -> Result<(Root, Vec<u8>, Vec<Signature>), PublishError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|source| PublishError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let root: Root =
        serde_json::from_value(env.signed.clone()).map_err(|source| PublishError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    if root.type_ != ROOT || root.version != v {
        return Err(PublishError::Invalid(format!(
            "{} holds {} v{}, not root v{v}",
            path.display(),
            root.type_,
            root.version
        )));
    }
    let canonical = crate::cjson::to_canonical(&env.signed).map_err(|e| {
        PublishError::Invalid(format!("{} has no canonical form: {e}", path.display()))
    })?;
    Ok((root, canonical, env.signatures))
}

/// What `sign_staged` did.
#[derive(Debug, Clone, Serialize)]
pub struct StagedReport {
    /// The staged file.
    pub file: PathBuf,
    /// Its root version.
    pub version: u64,
    /// Key ids whose signature was added (or replaced).
    pub signed_by: Vec<String>,
    /// Threshold status under the previous root's root keys (none for v1).
    pub previous: Option<ThresholdStatus>,
    /// Threshold status under its own root keys.
    pub own: ThresholdStatus,
}

/// Add one signature per signer to the staged root `file` (in the key
/// directory `dir`'s `staged/`). Each signer must hold a root key of the
/// staged root or of the root before it. An existing signature by the same
/// key is replaced.
pub fn sign_staged(
    dir: &Path,
    file: &Path,
    signers: &[&dyn MetadataSigner],
) -> Result<StagedReport, PublishError> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let v: u64 = name
        .strip_suffix(".root.json")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            PublishError::Invalid(format!(
                "{}: staged metadata must be named N.root.json",
                file.display()
            ))
        })?;
    let bytes = fs::read(file).map_err(io(file))?;
    let (root, canonical, mut sigs) = read_staged_root(file, &bytes, v)?;
    let prev: Option<Root> = if v > 1 {
        let p = dir.join(format!("{}.root.json", v - 1));
        if !p.exists() {
            return Err(PublishError::Invalid(format!(
                "{} is root v{v} but {} holds no root v{}",
                file.display(),
                dir.display(),
                v - 1
            )));
        }
        Some(read_signed(&p)?)
    } else {
        None
    };
    let env_value: serde_json::Value = serde_json::from_slice::<Envelope>(&bytes)
        .map(|e| e.signed)
        .map_err(|source| PublishError::Parse {
            path: file.to_path_buf(),
            source,
        })?;
    let mut signed_by = Vec::new();
    for s in signers {
        let id = s.key_id();
        let listed = std::iter::once(&root)
            .chain(prev.as_ref())
            .any(|r| r.role(ROOT).is_some_and(|rk| rk.keyids.contains(&id)));
        if !listed {
            return Err(PublishError::Signer {
                role: ROOT.into(),
                keyid: id,
                reason: format!(
                    "not a root key of root v{v}{}",
                    if v > 1 {
                        format!(" or v{}", v - 1)
                    } else {
                        String::new()
                    }
                ),
            });
        }
        let sig = sign_checked(ROOT, *s, &canonical)?;
        sigs.retain(|x| x.keyid != sig.keyid);
        sigs.push(sig);
        signed_by.push(id);
    }
    let out = envelope_bytes(sigs.clone(), env_value)?;
    write_atomic(file, &out, 0o644)?;
    Ok(StagedReport {
        file: file.to_path_buf(),
        version: v,
        signed_by,
        previous: match &prev {
            Some(p) => Some(threshold_status(&canonical, &sigs, p, ROOT)?),
            None => None,
        },
        own: threshold_status(&canonical, &sigs, &root, ROOT)?,
    })
}

/// Standard TUF key types and schemes a public key file may declare.
pub const SCHEMES: [&str; 5] = [
    "ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "rsassa-pss-sha256",
    "rsa-pkcs1v15-sha256",
];

/// The TUF public key for a PEM SubjectPublicKeyInfo (what `openssl pkey
/// -pubout`, `ykman piv keys export`, `pkcs11-tool --read-object` + openssl,
/// and cloud KMS "get public key" give). The key type follows the key;
/// `scheme` picks between the RSA schemes (default `rsassa-pss-sha256`) and
/// must match the key for the others. Ed25519 keyval is hex of the 32 raw
/// bytes; ECDSA and RSA keyval is the PEM, as securesystemslib writes it.
pub fn public_key_from_pem(pem: &str, scheme: Option<&str>) -> Result<Key, String> {
    let (schemes, public) = crate::keys::schemes_of_pem(pem).map_err(|e| e.to_string())?;
    let chosen = match scheme {
        None => schemes[0],
        Some(name) => schemes
            .iter()
            .copied()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = schemes.iter().map(|s| s.name()).collect();
                format!(
                    "scheme {name:?} does not fit this {} key (use {})",
                    schemes[0].keytype(),
                    names.join(" or ")
                )
            })?,
    };
    let key = Key {
        keytype: chosen.keytype().into(),
        scheme: chosen.name().into(),
        keyval: KeyVal {
            public,
            extra: BTreeMap::new(),
        },
        extra: BTreeMap::new(),
    };
    // The same checks a verifier makes: the curve point, the RSA size, DER.
    crate::keys::VerifyingKey::from_key(&key).map_err(|e| e.to_string())?;
    Ok(key)
}

/// Read a public key file: TUF key JSON (`{"keytype", "scheme", "keyval"}`,
/// e.g. written by `phase keygen --public-key`) or a PEM public key (default
/// scheme for its type).
pub fn read_public_key(path: &Path) -> Result<Key, PublishError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let err = |reason: String| PublishError::PublicKey {
        path: path.to_path_buf(),
        reason,
    };
    if text.trim_start().starts_with('{') {
        let key: Key =
            serde_json::from_str(&text).map_err(|e| err(format!("not a TUF key: {e}")))?;
        if !SCHEMES.contains(&key.scheme.as_str()) {
            return Err(err(format!("unknown scheme {:?}", key.scheme)));
        }
        return Ok(key);
    }
    public_key_from_pem(&text, None).map_err(err)
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
        Self::open_with(repo, keys_dir, Vec::new())
    }

    /// [`Publisher::open`] with external signers. A staged root in the key
    /// directory is made current first ([`promote_staged`]); one below its
    /// thresholds fails the publish, naming the missing keys.
    pub fn open_with(
        repo: &Path,
        keys_dir: &Path,
        external: Vec<Box<dyn MetadataSigner>>,
    ) -> Result<Self, PublishError> {
        promote_staged(keys_dir)?;
        let keys = KeyDir::open_with(keys_dir, external)?;
        keys.check_external()?;
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

    /// The targets added so far (name, SHA-256, length, file written).
    pub fn added(&self) -> &[PublishedTarget] {
        &self.added
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
    pub fn commit(self, expires: Duration) -> Result<PublishReport, PublishError> {
        self.commit_inner(expires, true)
    }

    /// Re-sign only snapshot and timestamp (new versions and expiry; the
    /// targets metadata stays as it is). This is what the online keys of an
    /// offline-root setup do on a schedule: no root or targets key is
    /// needed.
    pub fn refresh(self, expires: Duration) -> Result<PublishReport, PublishError> {
        if !self.added.is_empty() {
            return Err(PublishError::Invalid(
                "a refresh re-signs snapshot and timestamp only; publish targets without it".into(),
            ));
        }
        if self.timestamp.is_none() || self.snapshot.is_none() {
            return Err(PublishError::Invalid(format!(
                "{} has no timestamp and snapshot yet to refresh; publish first",
                self.repo.display()
            )));
        }
        self.commit_inner(expires, false)
    }

    fn commit_inner(
        mut self,
        expires: Duration,
        with_targets: bool,
    ) -> Result<PublishReport, PublishError> {
        let root = self.keys.root.clone();
        let consistent = root.consistent_snapshot;
        let until = crate::metadata::Expires(Utc::now() + expires);
        let meta_dir = self.repo.join("metadata");

        let tname = if consistent {
            format!("{}.targets.json", self.targets.version + 1)
        } else {
            "targets.json".into()
        };
        let tbytes = if with_targets {
            self.targets.version += 1;
            self.targets.expires = until;
            Some(sign_metadata_with(
                TARGETS,
                &self.targets,
                &self.keys.signers_for(&root, TARGETS)?,
            )?)
        } else {
            None
        };

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
        if let Some(tbytes) = &tbytes {
            snap.meta.insert(
                "targets.json".into(),
                meta_file(self.targets.version, tbytes),
            );
        }
        let sbytes = sign_metadata_with(SNAPSHOT, &snap, &self.keys.signers_for(&root, SNAPSHOT)?)?;
        let sname = if consistent {
            format!("{}.snapshot.json", snap.version)
        } else {
            "snapshot.json".into()
        };

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
        let tsbytes =
            sign_metadata_with(TIMESTAMP, &ts, &self.keys.signers_for(&root, TIMESTAMP)?)?;
        // Everything is signed (and each signature checked) before anything
        // is written: a failing signer leaves the repository as it was.
        if let Some(tbytes) = &tbytes {
            write_atomic(&meta_dir.join(&tname), tbytes, 0o644)?;
        }
        write_atomic(&meta_dir.join(&sname), &sbytes, 0o644)?;
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
