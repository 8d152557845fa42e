//! The trusted root baked into the initramfs (`/etc/phase/root.json`).
//!
//! The console shows the root key fingerprint the verifier computes (hex
//! SHA-256 over the root role's key ids, as `phase keygen` prints it), after
//! the root verified against its own keys at the boot time.

use std::io;
use std::path::{Path, PathBuf};

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
}
