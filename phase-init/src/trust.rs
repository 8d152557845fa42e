//! The trusted root baked into the initramfs.
//!
//! For now the console shows the SHA-256 of `/etc/phase/root.json`; once the
//! boot flow verifies metadata, the verifier's key fingerprint replaces it.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where the image builder puts the trusted root, relative to the root.
pub const ROOT_FILE: &str = "etc/phase/root.json";

#[derive(Debug, thiserror::Error)]
#[error("cannot read the trusted root {path}")]
pub struct RootError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// SHA-256 (hex) of the trusted root file below `root`.
pub fn root_file_sha256(root: &Path) -> Result<String, RootError> {
    let path = root.join(ROOT_FILE);
    let bytes = std::fs::read(&path).map_err(|source| RootError { path, source })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_root_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/phase")).unwrap();
        std::fs::write(dir.path().join(ROOT_FILE), "abc").unwrap();
        assert_eq!(
            root_file_sha256(dir.path()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_file(dir.path().join(ROOT_FILE)).unwrap();
        let err = root_file_sha256(dir.path()).unwrap_err();
        assert!(err.to_string().ends_with("etc/phase/root.json"), "{err}");
    }
}
