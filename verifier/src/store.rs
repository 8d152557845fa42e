//! Where trusted metadata persists between updates (`Storage`) and where
//! metadata and targets come from (`Transport`). Both are small traits so the
//! host CLI, the fetcher (HTTP peers) and PID 1 (cache partition, or RAM in
//! private mode) plug in their own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{StorageError, TransportError};

/// Persistent trusted state: a flat namespace of metadata files named
/// `root.json`, `timestamp.json`, `snapshot.json`, `targets.json` and
/// `<url-encoded role>.json` (the TUF conformance client layout).
pub trait Storage {
    /// The stored bytes of `name`, or `None` if absent.
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Replace `name` atomically.
    fn store(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError>;
    /// Remove `name` (absent is fine).
    fn remove(&self, name: &str) -> Result<(), StorageError>;
}

/// Delivers repository files. Implementations must not return more than
/// `max_len` bytes: return `TooLarge` (or cut the body at `max_len + 1` bytes,
/// which the client then rejects).
pub trait Transport {
    /// A metadata file by name (`timestamp.json`, `3.root.json`,
    /// `7.snapshot.json`, `2.role%2Fname.json`).
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError>;
    /// A target file by its repository path (`stable/x86_64/<sha256>.kernel`
    /// with consistent snapshots). The reader is read up to `max_len + 1`
    /// bytes at most.
    fn fetch_target(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, TransportError>;
}

impl<S: Storage + ?Sized> Storage for &S {
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).load(name)
    }
    fn store(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        (**self).store(name, bytes)
    }
    fn remove(&self, name: &str) -> Result<(), StorageError> {
        (**self).remove(name)
    }
}

impl<T: Transport + ?Sized> Transport for &T {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        (**self).fetch_metadata(name, max_len)
    }
    fn fetch_target(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, TransportError> {
        (**self).fetch_target(path, max_len)
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).load(name)
    }
    fn store(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        (**self).store(name, bytes)
    }
    fn remove(&self, name: &str) -> Result<(), StorageError> {
        (**self).remove(name)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        (**self).fetch_metadata(name, max_len)
    }
    fn fetch_target(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, TransportError> {
        (**self).fetch_target(path, max_len)
    }
}

fn check_name(name: &str) -> Result<(), StorageError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(StorageError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Trusted state in a directory on disk (the cache partition, or the
/// `--metadata-dir` of the conformance client). Writes go to a temporary
/// file that is synced and renamed over the old one.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Use `dir`, creating it if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(StorageError::Io)?;
        Ok(DirStorage { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for DirStorage {
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_name(name)?;
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::Io(e)),
        }
    }

    fn store(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        check_name(name)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name))?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(StorageError::Io)
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        check_name(name)?;
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io(e)),
            _ => Ok(()),
        }
    }
}

/// Trusted state in RAM only (private mode; tests).
#[derive(Debug, Default)]
pub struct MemoryStorage {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything stored (tests compare state before and after).
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // whole Vec; the map itself is still consistent.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_name(name)?;
        Ok(self.lock().get(name).cloned())
    }
    fn store(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        check_name(name)?;
        self.lock().insert(name.to_string(), bytes.to_vec());
        Ok(())
    }
    fn remove(&self, name: &str) -> Result<(), StorageError> {
        check_name(name)?;
        self.lock().remove(name);
        Ok(())
    }
}

/// A repository in a local directory (`metadata/` and `targets/` inside, as
/// `phase publish` and python-tuf write it). Not network: a USB stick, the
/// cache partition, or a test fixture.
#[derive(Debug, Clone)]
pub struct DirTransport {
    metadata: PathBuf,
    targets: PathBuf,
}

impl DirTransport {
    /// A repository rooted at `repo` (`repo/metadata`, `repo/targets`).
    pub fn new(repo: impl AsRef<Path>) -> Self {
        let repo = repo.as_ref();
        DirTransport {
            metadata: repo.join("metadata"),
            targets: repo.join("targets"),
        }
    }

    /// Explicit metadata and targets directories.
    pub fn with_dirs(metadata: impl Into<PathBuf>, targets: impl Into<PathBuf>) -> Self {
        DirTransport {
            metadata: metadata.into(),
            targets: targets.into(),
        }
    }
}

fn open_bounded(path: &Path, max_len: u64) -> Result<std::fs::File, TransportError> {
    let f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TransportError::NotFound,
        _ => TransportError::other(e),
    })?;
    let len = f.metadata().map_err(TransportError::other)?.len();
    if len > max_len {
        return Err(TransportError::TooLarge { max: max_len });
    }
    Ok(f)
}

fn safe_relative(path: &str) -> Result<(), TransportError> {
    if crate::target::check_target_name(path).is_err() {
        return Err(TransportError::other(format!(
            "refusing unsafe repository path {path:?}"
        )));
    }
    Ok(())
}

impl Transport for DirTransport {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        if check_name(name).is_err() {
            return Err(TransportError::other(format!(
                "refusing unsafe metadata name {name:?}"
            )));
        }
        read_capped(open_bounded(&self.metadata.join(name), max_len)?, max_len)
    }

    fn fetch_target(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, TransportError> {
        safe_relative(path)?;
        let f = open_bounded(&self.targets.join(path), max_len)?;
        Ok(Box::new(f.take(max_len + 1)))
    }
}

/// Reads all of `reader`, but never more than `max_len` bytes: one byte more
/// is [`TransportError::TooLarge`] (the endless-data rule every transport
/// shares).
pub fn read_capped(reader: impl Read, max_len: u64) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::new();
    reader
        .take(max_len.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(TransportError::other)?;
    if out.len() as u64 > max_len {
        return Err(TransportError::TooLarge { max: max_len });
    }
    Ok(out)
}
