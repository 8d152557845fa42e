//! The trusted root baked into the initramfs (`/etc/phase/root.json`).
//!
//! The console shows the root key fingerprint the verifier computes (hex
//! SHA-256 over the root role's key ids, as `phase keygen` prints it), after
//! the root verified against its own keys at the boot time.

use std::io;
use std::path::{Path, PathBuf};

use crate::step::Status;

/// Where the image builder puts the trusted root, relative to the root.
pub const ROOT_FILE: &str = "etc/phase/root.json";

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot read the trusted root {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the trusted root {path} does not verify (rebuild the image with a valid root)")]
    Invalid {
        path: PathBuf,
        #[source]
        source: verifier::Error,
    },
}

/// The baked root: its bytes, version and key fingerprint.
#[derive(Debug, Clone)]
pub struct BakedRoot {
    pub bytes: Vec<u8>,
    pub version: u64,
    pub fingerprint: String,
}

/// Reads and verifies the trusted root below `root` (self-signed by a
/// threshold of its root keys, not expired at `now`).
pub fn load(root: &Path, now: chrono::DateTime<chrono::Utc>) -> Result<BakedRoot, RootError> {
    let path = root.join(ROOT_FILE);
    let bytes = std::fs::read(&path).map_err(|source| RootError::Read {
        path: path.clone(),
        source,
    })?;
    let set = verifier::TrustedSet::new(&bytes, now)
        .map_err(|source| RootError::Invalid { path, source })?;
    Ok(BakedRoot {
        version: set.root().version,
        fingerprint: verifier::root_fingerprint(set.root()),
        bytes,
    })
}

/// Trusted state that also keeps every root it stores under its versioned
/// name (`N.root.json`), so a later boot can walk the rotation chain from
/// the baked root again (see [`reconcile_root`]).
#[derive(Debug)]
pub struct ChainStorage<S>(pub S);

impl<S: verifier::Storage> verifier::Storage for ChainStorage<S> {
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, verifier::StorageError> {
        self.0.load(name)
    }

    fn store(&self, name: &str, bytes: &[u8]) -> Result<(), verifier::StorageError> {
        if name == "root.json" {
            if let Some(v) = root_version(bytes) {
                self.0.store(&format!("{v}.root.json"), bytes)?;
            }
        }
        self.0.store(name, bytes)
    }

    fn remove(&self, name: &str) -> Result<(), verifier::StorageError> {
        self.0.remove(name)
    }
}

/// `signed.version` of a root file, without verifying anything.
pub fn root_version(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get("signed")?
        .get("version")?
        .as_u64()
}

/// What [`reconcile_root`] found in the trusted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCheck {
    /// No stored root: the baked one was installed.
    Installed,
    /// The stored root is the baked root.
    Same,
    /// The stored root is version N, reached from the baked root by a chain
    /// of stored `N.root.json` files that each verified.
    Rotated(u64),
    /// The stored root was not the baked root nor reached from it (another
    /// fleet's stick, a tampered cache, or a chain whose links are missing):
    /// replaced by the baked root. The string says why.
    Replaced(String),
}

/// Makes the trusted state's `root.json` one the baked root vouches for.
///
/// The cache partition is not signed: whatever root it carries must be the
/// baked root or a rotation the baked root's keys started (each `N+1` signed
/// by a threshold of version `N`'s keys and its own). A stored root that is
/// neither is replaced by the baked one, so metadata signed by other keys
/// fails verification with the key named, instead of being trusted because
/// the stick says so.
pub fn reconcile_root<S: verifier::Storage>(
    storage: &S,
    baked: &BakedRoot,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RootCheck, verifier::Error> {
    let storage_err = |source| verifier::Error::Storage {
        file: "root.json".into(),
        source,
    };
    let Some(stored) = storage.load("root.json").map_err(storage_err)? else {
        verifier::install_root(storage, &baked.bytes, now)?;
        return Ok(RootCheck::Installed);
    };
    if stored == baked.bytes {
        return Ok(RootCheck::Same);
    }
    let why = match root_version(&stored) {
        None => "it is not a root file".to_owned(),
        Some(v) if v <= baked.version => format!(
            "it is version {v}, not newer than the baked version {} and not the same file",
            baked.version
        ),
        Some(v) => match walk_chain(storage, baked, v, &stored, now) {
            Ok(()) => return Ok(RootCheck::Rotated(v)),
            Err(e) => format!("version {v} does not chain from the baked root: {e}"),
        },
    };
    storage
        .store("root.json", &baked.bytes)
        .map_err(storage_err)?;
    Ok(RootCheck::Replaced(why))
}

fn walk_chain<S: verifier::Storage>(
    storage: &S,
    baked: &BakedRoot,
    to: u64,
    stored: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let mut set = verifier::TrustedSet::new(&baked.bytes, now).map_err(|e| e.to_string())?;
    let mut last = baked.bytes.clone();
    for v in baked.version + 1..=to {
        let name = format!("{v}.root.json");
        let bytes = storage
            .load(&name)
            .ok()
            .flatten()
            .ok_or_else(|| format!("{name} is not in the trusted state"))?;
        set.update_root(&bytes)
            .map_err(|e| format!("{name}: {}", crate::step::chain(&e)))?;
        last = bytes;
    }
    if last != stored {
        return Err(format!(
            "root.json differs from the verified {to}.root.json"
        ));
    }
    Ok(())
}

/// The `trust` boot step: the baked root below `root`, verified at `now`.
pub fn step(root: &Path, now: chrono::DateTime<chrono::Utc>) -> (Option<BakedRoot>, Status) {
    match load(root, now) {
        Ok(r) => {
            let detail = format!("root v{} fingerprint {}", r.version, r.fingerprint);
            (Some(r), Status::ok(detail))
        }
        Err(e) => (None, Status::fail(crate::step::chain(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_invalid_root_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now();
        let err = load(dir.path(), now).unwrap_err();
        assert!(err.to_string().ends_with("etc/phase/root.json"), "{err}");
        std::fs::create_dir_all(dir.path().join("etc/phase")).unwrap();
        std::fs::write(dir.path().join(ROOT_FILE), "{}").unwrap();
        let err = load(dir.path(), now).unwrap_err();
        assert!(matches!(err, RootError::Invalid { .. }), "{err}");
    }

    #[test]
    fn a_generated_root_gives_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let now = chrono::Utc::now();
        let opts = verifier::publish::KeygenOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires: now + chrono::Duration::days(30),
            consistent_snapshot: true,
        };
        verifier::publish::generate_keys(&keys, &opts).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/phase")).unwrap();
        std::fs::copy(keys.join("1.root.json"), dir.path().join(ROOT_FILE)).unwrap();
        let r = load(dir.path(), now).unwrap();
        assert_eq!(r.version, 1);
        assert_eq!(r.fingerprint.len(), 64);
    }

    fn keys(dir: &Path, now: chrono::DateTime<chrono::Utc>) -> BakedRoot {
        let opts = verifier::publish::KeygenOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires: now + chrono::Duration::days(30),
            consistent_snapshot: true,
        };
        verifier::publish::generate_keys(dir, &opts).unwrap();
        let bytes = std::fs::read(dir.join("1.root.json")).unwrap();
        BakedRoot {
            version: 1,
            fingerprint: String::new(),
            bytes,
        }
    }

    #[test]
    fn a_stored_root_of_another_fleet_is_replaced_by_the_baked_one() {
        use verifier::Storage;
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now();
        let ours = keys(&dir.path().join("a"), now);
        let theirs = keys(&dir.path().join("b"), now);
        let state = ChainStorage(verifier::MemoryStorage::new());
        assert_eq!(
            reconcile_root(&state, &ours, now).unwrap(),
            RootCheck::Installed
        );
        assert_eq!(state.load("1.root.json").unwrap(), Some(ours.bytes.clone()));
        assert_eq!(reconcile_root(&state, &ours, now).unwrap(), RootCheck::Same);
        // The stick says "trust these keys instead".
        state.0.store("root.json", &theirs.bytes).unwrap();
        match reconcile_root(&state, &ours, now).unwrap() {
            RootCheck::Replaced(why) => assert!(why.contains("version 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(state.load("root.json").unwrap(), Some(ours.bytes.clone()));
        // A "version 2" without a chain from ours is refused too.
        let mut v: serde_json::Value = serde_json::from_slice(&theirs.bytes).unwrap();
        v["signed"]["version"] = 2.into();
        state
            .0
            .store("root.json", &serde_json::to_vec(&v).unwrap())
            .unwrap();
        match reconcile_root(&state, &ours, now).unwrap() {
            RootCheck::Replaced(why) => {
                assert!(
                    why.contains("2.root.json is not in the trusted state"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        state
            .0
            .store("2.root.json", &serde_json::to_vec(&v).unwrap())
            .unwrap();
        state
            .0
            .store("root.json", &serde_json::to_vec(&v).unwrap())
            .unwrap();
        match reconcile_root(&state, &ours, now).unwrap() {
            RootCheck::Replaced(why) => assert!(why.contains("2.root.json: "), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rotation_from_the_baked_root_is_kept() {
        use verifier::Storage;
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now();
        let kd = dir.path().join("a");
        let ours = keys(&kd, now);
        verifier::publish::rotate_keys(
            &kd,
            &verifier::publish::RotateOptions {
                role: "root".into(),
                keys: None,
                threshold: None,
                root_expires: now + chrono::Duration::days(30),
                new_keys: Vec::new(),
                stage: false,
            },
        )
        .unwrap();
        let v2 = std::fs::read(kd.join("2.root.json")).unwrap();
        let state = ChainStorage(verifier::MemoryStorage::new());
        reconcile_root(&state, &ours, now).unwrap();
        // What the updater does when a peer serves 2.root.json.
        state.store("root.json", &v2).unwrap();
        assert_eq!(state.load("2.root.json").unwrap(), Some(v2.clone()));
        assert_eq!(
            reconcile_root(&state, &ours, now).unwrap(),
            RootCheck::Rotated(2)
        );
        assert_eq!(state.load("root.json").unwrap(), Some(v2));
    }

    #[test]
    fn root_versions_are_read_without_verifying() {
        assert_eq!(root_version(br#"{"signed":{"version":7}}"#), Some(7));
        assert_eq!(root_version(b"junk"), None);
    }
}
