//! The content-addressed store: `<cache>/cas/sha256/<2 hex>/<64 hex>`.
//!
//! An object appears under its final name only after its length and SHA-256
//! matched (temp file in the same directory, fsync, rename, fsync of the
//! directory). Writers of one object serialise on an advisory `flock` of
//! `<cache>/cas/locks/<64 hex>`, which works between threads of one process
//! (each lock holder opens its own file description) and between processes.
//!
//! A download in progress lives in `<hex>.partial` (space reserved up front)
//! with a sidecar `<hex>.partial.json` listing the verified chunk indices.
//! A chunk's bytes may be written as they arrive, before they are verified
//! ([`PartialObject::write_piece`]); only the sidecar's chunks are ever
//! read, and a chunk is sealed (no more pieces) once a verified copy is
//! being written. The sidecar is a
//! claim that is re-checked (re-hashed) when a writer resumes after a crash,
//! and a peer server serves a partial's chunks only while a writer holds the
//! object lock, so bytes lost in a power cut are never re-shared.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{FallocateFlags, FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Sha256Digest;
use crate::object::ObjectSpec;

pub mod layout;

/// Block size of [`PartialObject::read_chunk_blocks`].
pub const READ_BLOCK: usize = 256 << 10;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// A file system operation failed.
    #[error("cache I/O failed on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cache file system is out of space.
    #[error("not enough space in the cache for {length} bytes at {path}")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// Bytes needed.
        length: u64,
        /// The cause (ENOSPC / EDQUOT).
        #[source]
        source: io::Error,
    },
    /// Data did not match the digest or length it was stored under.
    #[error("object {expected} does not match: got {actual_len} bytes with SHA-256 {actual}, expected {expected_len} bytes")]
    Mismatch {
        /// Expected digest.
        expected: Sha256Digest,
        /// Expected length.
        expected_len: u64,
        /// Digest of what was there.
        actual: Sha256Digest,
        /// Length of what was there.
        actual_len: u64,
    },
    /// A piece of a chunk reaches past the chunk's end.
    #[error(
        "a piece of {len} bytes at offset {offset} does not fit chunk {chunk} of object {object}"
    )]
    PieceOutOfRange {
        /// The object.
        object: Sha256Digest,
        /// The chunk.
        chunk: usize,
        /// The piece's offset in the chunk.
        offset: u64,
        /// The piece's length.
        len: usize,
    },
    /// A partial object was finished before all its chunks were verified.
    #[error("object {0} is incomplete: {1} chunks still missing")]
    Incomplete(Sha256Digest, usize),
    /// The object description is inconsistent.
    #[error("invalid object description for {0}")]
    Spec(Sha256Digest, #[source] crate::object::SpecError),
    /// The refs file could not be parsed.
    #[error("cannot parse {path}")]
    Refs {
        /// The refs file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CasError + '_ {
    move |source| {
        if is_no_space(&source) {
            CasError::NoSpace {
                path: path.to_path_buf(),
                length: 0,
                source,
            }
        } else {
            CasError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    )
}

/// `statfs` magic of tmpfs (`linux/magic.h`).
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Makes a new partial file `length` bytes long, with the space for them
/// (a full disk is [`CasError::NoSpace`] before the first byte is fetched).
/// On disks, `fallocate` reserves the blocks. On tmpfs it would also
/// allocate and zero every page on this one thread before any chunk is
/// asked for (about 0.1 s per GiB), pages the chunk writes allocate anyway
/// while the next chunks arrive; there the free space is checked instead
/// and the file is sparse. A write that still finds no space (another
/// writer took it meanwhile) is a `NoSpace` error too.
fn reserve(file: &File, path: &Path, length: u64) -> Result<(), CasError> {
    let no_space = |source: io::Error| CasError::NoSpace {
        path: path.to_path_buf(),
        length,
        source,
    };
    let tmpfs = rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type as u64 == TMPFS_MAGIC);
    if tmpfs {
        if let Ok(v) = rustix::fs::fstatvfs(file) {
            if v.f_bavail.saturating_mul(v.f_frsize) < length {
                return Err(no_space(io::Error::from(rustix::io::Errno::NOSPC)));
            }
        }
        return file.set_len(length).map_err(io_err(path));
    }
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, length) {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = io::Error::from(e);
            if is_no_space(&e) {
                return Err(no_space(e));
            }
            // File systems without fallocate: a sparse file.
            file.set_len(length).map_err(io_err(path))
        }
    }
}

/// A cache directory holding the CAS (`cas/`) and TUF metadata (`tuf/`).
#[derive(Debug, Clone)]
pub struct Cas {
    dir: PathBuf,
}

/// Exclusive right to write one object (an advisory `flock`).
#[derive(Debug)]
pub struct ObjectLock {
    file: File,
    path: PathBuf,
}

impl ObjectLock {
    /// Releases the lock and removes the lock file (while still holding it,
    /// so a waiter notices the file was replaced and locks anew).
    fn release_and_remove(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// What a partial object's sidecar records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialStatus {
    /// Object digest.
    pub sha256: Sha256Digest,
    /// Object length.
    pub length: u64,
    /// Chunk size.
    pub chunk_size: u64,
    /// Indices of the chunks whose bytes matched their signed digest.
    pub verified: Vec<u64>,
}

/// An object being downloaded, owned by the holder of its lock.
#[derive(Debug)]
pub struct PartialObject {
    spec: ObjectSpec,
    path: PathBuf,
    sidecar: PathBuf,
    final_path: PathBuf,
    file: File,
    verified: Mutex<Vec<bool>>,
    /// Per chunk: whether its bytes are final (a verified copy is being,
    /// or has been, written). Held across every write into the chunk, so
    /// a piece written as it arrives and a verified copy's commit never
    /// interleave, and no piece lands once a commit has begun.
    sealed: Vec<Mutex<bool>>,
    resumed: usize,
    lock: Option<ObjectLock>,
}

/// On what strength a complete object was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Its bytes were hashed whole and matched its name (no record).
    Whole,
    /// Every chunk matched a signed chunk list whose digest
    /// ([`crate::ChunkList::digest`]) is recorded in `<hex>.chunks`: the
    /// bytes are those that list describes. The same signature bound that
    /// list to the object's SHA-256, so the bytes are the object; a
    /// description with another chunk list first hashes it whole
    /// ([`Cas::confirm_whole`]).
    Chunks(Sha256Digest),
    /// A record that cannot be read: hash it whole before trusting it.
    Unknown,
}

/// What `gc` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Objects kept.
    pub kept: usize,
    /// Objects removed.
    pub removed: Vec<Sha256Digest>,
    /// Stale partial downloads and temp files removed.
    pub removed_partials: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// One recorded version of a target (newest last in [`Refs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    /// The target's release version (custom metadata `version`).
    pub version: String,
    /// Its object.
    pub sha256: Sha256Digest,
    /// When it was recorded (seconds since the epoch).
    pub recorded: u64,
}

/// `<cache>/refs.json`: the versions of each target this cache has held.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Refs {
    /// Target name -> versions, oldest first.
    pub targets: std::collections::BTreeMap<String, Vec<RefEntry>>,
}

fn is_hex64(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `O_NOFOLLOW` for `OpenOptions::custom_flags`: the last component of the
/// path must not be a symbolic link (ELOOP if it is).
fn nofollow() -> i32 {
    // The flag's bit pattern fits an i32 (0o400000 on Linux).
    OFlags::NOFOLLOW.bits() as i32
}

/// Creates `path` as a new regular file for writing (and reading): whatever
/// was at the name (a symbolic link planted in a shared cache, a stale
/// file) is unlinked first, then the file is created with `O_EXCL` and
/// `O_NOFOLLOW`, so a write never goes through a link to a file outside the
/// cache and never truncates one.
fn create_fresh(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(nofollow())
        .mode(0o644)
        .open(path)
}

/// Opens `path` for reading and writing only if it is a regular file
/// itself (not a symbolic link to one).
fn open_regular_rw(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nofollow())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Opens `base/<rel...>` read-only without following any symbolic link
/// below `base` (each directory with `O_DIRECTORY | O_NOFOLLOW`, the file
/// with `O_NOFOLLOW`), and only if it is a regular file: what is served
/// from a cache is always a file inside it.
pub fn open_beneath(base: &Path, rel: &[&str]) -> io::Result<File> {
    let Some((last, dirs)) = rel.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(base, dir_flags, Mode::empty())?;
    for d in dirs {
        if d.is_empty() || *d == "." || *d == ".." || d.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad path element",
            ));
        }
        dir = rustix::fs::openat(&dir, *d, dir_flags | OFlags::NOFOLLOW, Mode::empty())?;
    }
    if last.is_empty() || *last == "." || *last == ".." || last.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad path element",
        ));
    }
    let fd = rustix::fs::openat(
        &dir,
        *last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Whether `path` is a regular file itself (a symbolic link is not).
fn is_plain_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Creates `dir` (and its parents) and checks that it is a directory, not
/// a symbolic link to one elsewhere.
fn plain_dir(dir: &Path) -> Result<(), CasError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let m = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if m.file_type().is_dir() {
        Ok(())
    } else {
        Err(io_err(dir)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory (a symbolic link in the cache?)",
        )))
    }
}

/// Removes `path` unless it is already gone.
fn remove_if_present(path: &Path) -> Result<(), CasError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), CasError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Where the object `d` is (or would be) in the cache directory `dir`,
/// `<dir>/cas/sha256/<2 hex>/<64 hex>`: for caches that are only read (a
/// read-only cache partition, the payload stage 1 left in `/phase`), which
/// [`Cas::open`] cannot open because it creates its directories.
pub fn object_in(dir: &Path, d: &Sha256Digest) -> PathBuf {
    dir.join(layout::object(&d.to_hex()))
}

/// [`Cas::stored`] for an object in a cache that is only read (`dir` as
/// in [`object_in`]).
pub fn stored_in(dir: &Path, d: &Sha256Digest) -> Stored {
    stored_at(&dir.join(layout::record(&d.to_hex())))
}

/// What the chunk-list record at `path` says (no record: hashed whole).
fn stored_at(path: &Path) -> Stored {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Stored::Whole,
        Err(_) => return Stored::Unknown,
    };
    let text = verifier::read_capped(file, 128).unwrap_or_default();
    match std::str::from_utf8(&text).map(|t| Sha256Digest::from_hex(t.trim())) {
        Ok(Ok(list)) => Stored::Chunks(list),
        _ => Stored::Unknown,
    }
}

impl Cas {
    /// Opens (creating if needed) the cache at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CasError> {
        let cas = Self { dir: dir.into() };
        for d in [cas.objects_dir(), cas.locks_dir(), cas.tuf_dir()] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(cas)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<cache>/tuf`: TUF metadata kept beside the store.
    pub fn tuf_dir(&self) -> PathBuf {
        self.dir.join(layout::TUF)
    }

    /// `<cache>/tuf/metadata`: verified metadata under the repository's
    /// names, re-shared by the peer server.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join(layout::METADATA)
    }

    fn objects_dir(&self) -> PathBuf {
        self.dir.join(layout::OBJECTS)
    }

    fn locks_dir(&self) -> PathBuf {
        self.dir.join(layout::LOCKS)
    }

    fn shard_dir(&self, d: &Sha256Digest) -> PathBuf {
        self.dir.join(layout::shard(&d.to_hex()))
    }

    /// Final path of an object (whether or not it exists).
    pub fn object_path(&self, d: &Sha256Digest) -> PathBuf {
        object_in(&self.dir, d)
    }

    fn partial_path(&self, d: &Sha256Digest) -> PathBuf {
        self.shard_dir(d).join(format!("{}.partial", d.to_hex()))
    }

    /// `<hex>.chunks`: the record of an object stored on the strength of
    /// its chunks (see [`Stored`]).
    fn record_path(&self, d: &Sha256Digest) -> PathBuf {
        self.dir.join(layout::record(&d.to_hex()))
    }

    /// `<cache>/cas/quarantine`: objects that failed a check, moved aside.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.join(layout::QUARANTINE)
    }

    fn sidecar_path(&self, d: &Sha256Digest) -> PathBuf {
        self.shard_dir(d)
            .join(format!("{}.partial.json", d.to_hex()))
    }

    /// Whether the object is present (and therefore verified).
    pub fn contains(&self, d: &Sha256Digest) -> bool {
        is_plain_file(&self.object_path(d))
    }

    /// On what strength the object `d` was stored (call when it is
    /// present; see [`Stored`]).
    pub fn stored(&self, d: &Sha256Digest) -> Stored {
        stored_at(&self.record_path(d))
    }

    /// Hashes the stored object `d` in 1 MiB blocks (never a whole-file
    /// buffer), calling `on_bytes` with each block's length: its SHA-256
    /// and length.
    pub fn hash_object(
        &self,
        d: &Sha256Digest,
        mut on_bytes: impl FnMut(u64),
    ) -> Result<(Sha256Digest, u64), CasError> {
        let path = self.object_path(d);
        let mut file = open_beneath(&self.dir, &Self::beneath(&layout::object(&d.to_hex())))
            .map_err(io_err(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            hasher.update(&buf[..n]);
            len += n as u64;
            on_bytes(n as u64);
        }
        Ok((hasher.finalize().into(), len))
    }

    /// Hashes the stored object `d` whole; when it is `d` with `length`
    /// bytes, drops its chunk-list record (it is now known by content) and
    /// returns `true`. The caller holds the object's lock.
    pub fn confirm_whole(&self, d: &Sha256Digest, length: u64) -> Result<bool, CasError> {
        let (actual, len) = self.hash_object(d, |_| {})?;
        if actual != *d || len != length {
            return Ok(false);
        }
        remove_if_present(&self.record_path(d))?;
        fsync_dir(&self.shard_dir(d))?;
        Ok(true)
    }

    /// Moves the object `d` (which failed a check) into
    /// `<cache>/cas/quarantine/` under its hex name (`.1`, `.2`, ... when
    /// that is taken), never deleting it, and drops its chunk-list record.
    /// The caller holds the object's lock. Returns where it went.
    pub fn quarantine(&self, d: &Sha256Digest) -> Result<PathBuf, CasError> {
        let qdir = self.quarantine_dir();
        plain_dir(&qdir)?;
        let hex = d.to_hex();
        let mut dest = qdir.join(&hex);
        let mut n = 0;
        while fs::symlink_metadata(&dest).is_ok() {
            n += 1;
            dest = qdir.join(format!("{hex}.{n}"));
        }
        let from = self.object_path(d);
        fs::rename(&from, &dest).map_err(io_err(&from))?;
        remove_if_present(&self.record_path(d))?;
        fsync_dir(&self.shard_dir(d))?;
        fsync_dir(&qdir)?;
        Ok(dest)
    }

    /// Opens a complete object for reading, without following symbolic
    /// links inside the cache; `None` unless it is a regular file there.
    pub fn open_object(&self, d: &Sha256Digest) -> Option<File> {
        let hex = d.to_hex();
        open_beneath(&self.dir, &Self::beneath(&layout::object(&hex))).ok()
    }

    /// Opens the partial file of a download in progress the same way.
    pub fn open_partial_data(&self, d: &Sha256Digest) -> Option<File> {
        let hex = d.to_hex();
        let name = format!("{}.partial", layout::object(&hex));
        open_beneath(&self.dir, &Self::beneath(&name)).ok()
    }

    /// The components of a [`layout`] name, for [`open_beneath`].
    fn beneath(name: &str) -> Vec<&str> {
        name.split('/').collect()
    }

    /// Tries to take the write lock of an object; `None` if another writer
    /// holds it.
    pub fn try_lock(&self, d: &Sha256Digest) -> Result<Option<ObjectLock>, CasError> {
        let path = self.locks_dir().join(d.to_hex());
        // Bounded: each round only repeats when the lock file was replaced
        // between our open and our flock.
        for _ in 0..8 {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .custom_flags(nofollow())
                .open(&path)
                .map_err(io_err(&path))?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(None),
                Err(e) => return Err(io_err(&path)(e.into())),
            }
            let ours = file.metadata().map_err(io_err(&path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                    return Ok(Some(ObjectLock { file, path }));
                }
                _ => continue,
            }
        }
        Ok(None)
    }

    /// Takes the write lock, polling until `timeout`.
    pub fn lock_blocking(
        &self,
        d: &Sha256Digest,
        timeout: Duration,
    ) -> Result<Option<ObjectLock>, CasError> {
        let start = std::time::Instant::now();
        loop {
            if let Some(l) = self.try_lock(d)? {
                return Ok(Some(l));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether some writer currently holds the object's lock.
    pub fn writer_active(&self, d: &Sha256Digest) -> bool {
        let path = self.locks_dir().join(d.to_hex());
        let Ok(file) = File::open(&path) else {
            return false;
        };
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => false, // released when `file` drops
            Err(_) => true,
        }
    }

    /// The verified chunks of an object being downloaded right now, if any.
    /// `None` when there is no partial or no live writer behind it.
    pub fn partial_status(&self, d: &Sha256Digest) -> Option<PartialStatus> {
        let bytes = fs::read(self.sidecar_path(d)).ok()?;
        let status: PartialStatus = serde_json::from_slice(&bytes).ok()?;
        if status.sha256 != *d || !self.writer_active(d) {
            return None;
        }
        Some(status)
    }

    /// Path of the partial file (for the peer server; use with
    /// [`Cas::partial_status`]).
    pub fn partial_data_path(&self, d: &Sha256Digest) -> PathBuf {
        self.partial_path(d)
    }

    /// Stores `data` under its digest (atomically); returns the digest.
    pub fn insert_bytes(&self, data: &[u8]) -> Result<Sha256Digest, CasError> {
        let d = Sha256Digest::of(data);
        if self.contains(&d) {
            return Ok(d);
        }
        let shard = self.shard_dir(&d);
        plain_dir(&shard)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&shard)
            .map_err(io_err(&shard))?;
        tmp.write_all(data).map_err(io_err(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err(&shard))?;
        let dest = self.object_path(&d);
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        fsync_dir(&shard)?;
        Ok(d)
    }

    /// Copies a file into the store after checking its length and digest.
    pub fn import_file(
        &self,
        src: &Path,
        expected: &Sha256Digest,
        expected_len: u64,
    ) -> Result<PathBuf, CasError> {
        let dest = self.object_path(expected);
        if is_plain_file(&dest) {
            return Ok(dest);
        }
        let shard = self.shard_dir(expected);
        plain_dir(&shard)?;
        let mut input = File::open(src).map_err(io_err(src))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&shard)
            .map_err(io_err(&shard))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(io_err(src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_err(&dest))?;
            len += n as u64;
        }
        let actual = Sha256Digest::from(hasher.finalize());
        if actual != *expected || len != expected_len {
            return Err(CasError::Mismatch {
                expected: *expected,
                expected_len,
                actual,
                actual_len: len,
            });
        }
        tmp.as_file().sync_all().map_err(io_err(&dest))?;
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        fsync_dir(&shard)?;
        Ok(dest)
    }

    /// Opens (resuming) or creates the partial file of `spec`; the caller
    /// holds the object lock, which the partial keeps until it is finished.
    pub fn open_partial(
        &self,
        spec: &ObjectSpec,
        lock: ObjectLock,
    ) -> Result<PartialObject, CasError> {
        spec.validate()
            .map_err(|e| CasError::Spec(spec.sha256, e))?;
        let d = spec.sha256;
        let shard = self.shard_dir(&d);
        plain_dir(&shard)?;
        let path = self.partial_path(&d);
        let sidecar = self.sidecar_path(&d);
        let n = spec.chunk_count();
        let mut verified = vec![false; n];

        let claimed: Option<PartialStatus> = open_regular_rw(&sidecar)
            .ok()
            .and_then(|f| verifier::read_capped(f, 64 << 20).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &PartialStatus| {
                s.sha256 == d && s.length == spec.length && s.chunk_size == spec.chunks.size
            });
        // The old claim is withdrawn before its chunks are re-hashed: while
        // we hold the lock a peer server reads the sidecar, and must not
        // serve chunks nobody has re-checked yet.
        match fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&sidecar)(e)),
        }
        // Only a regular file is resumed (never a symbolic link).
        let existing_len = fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| m.len());
        let file;
        let mut resumed = 0;
        if let (Some(claimed), Some(len)) = (claimed, existing_len.filter(|l| *l == spec.length)) {
            file = open_regular_rw(&path).map_err(io_err(&path))?;
            // Re-check every claimed chunk: the sidecar is not fsynced with
            // the data, so after a power cut it may claim lost bytes.
            let mut buf = Vec::new();
            for i in claimed.verified {
                let Ok(i) = usize::try_from(i) else { continue };
                if i >= n || verified[i] {
                    continue;
                }
                let (start, end) = spec.chunk_range(i);
                buf.resize((end - start) as usize, 0);
                if end <= len
                    && file.read_exact_at(&mut buf, start).is_ok()
                    && Sha256Digest::of(&buf) == spec.chunks.sha256[i]
                {
                    verified[i] = true;
                    resumed += 1;
                }
            }
            tracing::debug!(object = %d, resumed, "resuming partial object");
        } else {
            file = create_fresh(&path).map_err(io_err(&path))?;
            if spec.length > 0 {
                if let Err(e) = reserve(&file, &path, spec.length) {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
        let partial = PartialObject {
            spec: spec.clone(),
            path,
            sidecar,
            final_path: self.object_path(&d),
            file,
            sealed: verified.iter().map(|&v| Mutex::new(v)).collect(),
            verified: Mutex::new(verified),
            resumed,
            lock: Some(lock),
        };
        partial.write_sidecar()?;
        Ok(partial)
    }

    /// Every complete object in the store.
    pub fn list(&self) -> Result<Vec<Sha256Digest>, CasError> {
        let mut out = Vec::new();
        let root = self.objects_dir();
        for shard in fs::read_dir(&root).map_err(io_err(&root))? {
            let shard = shard.map_err(io_err(&root))?;
            // `file_type` does not follow a symbolic link: a linked shard
            // (pointing outside the cache) is never walked.
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let shard = shard.path();
            for entry in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let entry = entry.map_err(io_err(&shard))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if is_hex64(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
                    if let Ok(d) = Sha256Digest::from_hex(&name) {
                        out.push(d);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes every object not in `keep`, and partial downloads and temp
    /// files that no live writer holds (unless their object is in `keep`).
    pub fn gc(&self, keep: &HashSet<Sha256Digest>) -> Result<GcReport, CasError> {
        let mut report = GcReport::default();
        let root = self.objects_dir();
        for shard in fs::read_dir(&root).map_err(io_err(&root))? {
            let shard = shard.map_err(io_err(&root))?;
            // `file_type` does not follow a symbolic link: a linked shard
            // (pointing outside the cache) is never walked.
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let shard = shard.path();
            for entry in fs::read_dir(&shard).map_err(io_err(&shard))? {
                let entry = entry.map_err(io_err(&shard))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if is_hex64(&name) {
                    let Ok(d) = Sha256Digest::from_hex(&name) else {
                        continue;
                    };
                    if keep.contains(&d) {
                        report.kept += 1;
                        continue;
                    }
                    // Take the lock so a concurrent fetch of the same object
                    // does not see it vanish half-way through a check.
                    let Some(lock) = self.try_lock(&d)? else {
                        report.kept += 1;
                        continue;
                    };
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    remove_if_present(&self.record_path(&d))?;
                    lock.release_and_remove();
                    report.removed.push(d);
                    report.freed_bytes += size;
                } else if let Some(hex) = name
                    .strip_suffix(".partial.json")
                    .or_else(|| name.strip_suffix(".partial"))
                {
                    let Ok(d) = Sha256Digest::from_hex(hex) else {
                        continue;
                    };
                    if keep.contains(&d) {
                        continue;
                    }
                    if let Some(lock) = self.try_lock(&d)? {
                        fs::remove_file(&path).map_err(io_err(&path))?;
                        drop(lock);
                        report.removed_partials += 1;
                        report.freed_bytes += size;
                    }
                } else if let Some((hex, tmp)) = name
                    .strip_suffix(layout::RECORD_SUFFIX)
                    .map(|h| (h, false))
                    .or_else(|| {
                        name.strip_suffix(".tmp")
                            .and_then(|n| n.strip_suffix(layout::RECORD_SUFFIX))
                            .map(|h| (h, true))
                    })
                {
                    // A record whose object is gone (removed above, or a
                    // writer died between the record and the rename), or
                    // the temp file of a writer that died.
                    let Ok(d) = Sha256Digest::from_hex(hex) else {
                        continue;
                    };
                    let orphan = |cas: &Self| tmp || !is_plain_file(&cas.object_path(&d));
                    if !orphan(self) {
                        continue;
                    }
                    if let Some(lock) = self.try_lock(&d)? {
                        if orphan(self) {
                            remove_if_present(&path)?;
                        }
                        drop(lock);
                    }
                } else if name.starts_with(".tmp-") {
                    // A temp file of a writer that died; live ones are young.
                    let old = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(3600));
                    if old {
                        fs::remove_file(&path).map_err(io_err(&path))?;
                        report.removed_partials += 1;
                        report.freed_bytes += size;
                    }
                }
            }
        }
        report.removed.sort();
        fsync_dir(&root)?;
        Ok(report)
    }

    fn refs_path(&self) -> PathBuf {
        self.dir.join("refs.json")
    }

    /// Reads `<cache>/refs.json` (empty when absent).
    pub fn refs(&self) -> Result<Refs, CasError> {
        let path = self.refs_path();
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| CasError::Refs { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Refs::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Records that `target` version `version` is object `d` (newest last).
    pub fn record_ref(
        &self,
        target: &str,
        version: &str,
        d: &Sha256Digest,
    ) -> Result<(), CasError> {
        let lock_path = self.dir.join("refs.lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        rustix::fs::flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| io_err(&lock_path)(e.into()))?;
        let mut refs = self.refs()?;
        let list = refs.targets.entry(target.to_string()).or_default();
        list.retain(|e| e.sha256 != *d);
        list.push(RefEntry {
            version: version.to_string(),
            sha256: *d,
            recorded: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|t| t.as_secs())
                .unwrap_or(0),
        });
        let path = self.refs_path();
        let mut tmp = tempfile::Builder::new()
            .prefix(".refs-")
            .tempfile_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        // Serialising plain strings and numbers cannot fail.
        let bytes = serde_json::to_vec_pretty(&refs).unwrap_or_default();
        tmp.write_all(&bytes).map_err(io_err(&path))?;
        tmp.as_file().sync_all().map_err(io_err(&path))?;
        tmp.persist(&path).map_err(|e| io_err(&path)(e.error))?;
        fsync_dir(&self.dir)
    }

    /// The keep set of `phase cache gc`: the objects the current trusted
    /// targets reference plus the newest `versions` recorded objects of every
    /// target name.
    pub fn keep_set(
        &self,
        current: impl IntoIterator<Item = Sha256Digest>,
        versions: usize,
    ) -> Result<HashSet<Sha256Digest>, CasError> {
        let mut keep: HashSet<Sha256Digest> = current.into_iter().collect();
        let refs = self.refs()?;
        for list in refs.targets.values() {
            keep.extend(list.iter().rev().take(versions).map(|e| e.sha256));
        }
        Ok(keep)
    }
}

impl PartialObject {
    /// The object being written.
    pub fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    /// Chunks found verified when the partial was opened (resume).
    pub fn resumed_chunks(&self) -> usize {
        self.resumed
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        // A poisoned lock only means a writer thread panicked; the bitmap
        // itself is always consistent (plain bool stores).
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether chunk `i` is verified.
    pub fn is_verified(&self, i: usize) -> bool {
        self.verified().get(i).copied().unwrap_or(false)
    }

    /// Indices of the chunks still missing.
    pub fn missing(&self) -> Vec<usize> {
        self.verified()
            .iter()
            .enumerate()
            .filter(|(_, v)| !**v)
            .map(|(i, _)| i)
            .collect()
    }

    fn write_sidecar(&self) -> Result<(), CasError> {
        let v = self.verified();
        self.write_sidecar_locked(&v)
    }

    /// Writes the sidecar; the caller holds the bitmap lock, which also
    /// serialises the temp-file-and-rename.
    fn write_sidecar_locked(&self, verified: &[bool]) -> Result<(), CasError> {
        let status = PartialStatus {
            sha256: self.spec.sha256,
            length: self.spec.length,
            chunk_size: self.spec.chunks.size,
            verified: verified
                .iter()
                .enumerate()
                .filter(|(_, v)| **v)
                .map(|(i, _)| i as u64)
                .collect(),
        };
        // Serialising plain numbers cannot fail.
        let bytes = serde_json::to_vec(&status).unwrap_or_default();
        let tmp = self.sidecar.with_extension("json.tmp");
        let mut f = create_fresh(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &self.sidecar).map_err(io_err(&self.sidecar))
    }

    /// Writes chunk `i` whose bytes the caller hashed to `digest`; refuses
    /// bytes that do not match the signed chunk digest.
    pub fn write_chunk(
        &self,
        i: usize,
        data: &[u8],
        digest: &Sha256Digest,
    ) -> Result<(), CasError> {
        self.write_chunk_parts(i, &[data], digest, |_| {})
    }

    /// [`PartialObject::write_chunk`] for a chunk received in `parts` (in
    /// order; no copy into one buffer): each part is written at its offset
    /// and then handed to `after` while it is still in the CPU cache (the
    /// fetch engine feeds the whole-object hash from there). The chunk is
    /// sealed before the first part is written (no piece from
    /// [`PartialObject::write_piece`] lands after that) and marked verified
    /// after the last.
    pub fn write_chunk_parts<B: AsRef<[u8]>>(
        &self,
        i: usize,
        parts: &[B],
        digest: &Sha256Digest,
        mut after: impl FnMut(&[u8]),
    ) -> Result<(), CasError> {
        let len: u64 = parts.iter().map(|p| p.as_ref().len() as u64).sum();
        let (start, _) = self.check_chunk(i, digest, len)?;
        let mut sealed = self.seal(i);
        *sealed = true;
        let mut at = start;
        for part in parts {
            let part = part.as_ref();
            self.file
                .write_all_at(part, at)
                .map_err(io_err(&self.path))?;
            after(part);
            at += part.len() as u64;
        }
        drop(sealed);
        self.mark_verified(i)
    }

    /// Writes `piece` of chunk `i` at `offset` bytes into the chunk, as it
    /// arrives and before the chunk is verified: the bytes count only once the
    /// whole chunk matched its signed digest
    /// ([`PartialObject::commit_written`]). `Ok(false)` (nothing
    /// written) when the chunk is sealed: a verified copy is written, or
    /// being written, from elsewhere. The caller must be the only one
    /// writing pieces of this chunk.
    pub fn write_piece(&self, i: usize, offset: u64, piece: &[u8]) -> Result<bool, CasError> {
        let (start, end) = self.spec.chunk_range(i);
        let at = start + offset;
        if at + piece.len() as u64 > end {
            return Err(CasError::PieceOutOfRange {
                object: self.spec.sha256,
                chunk: i,
                offset,
                len: piece.len(),
            });
        }
        let sealed = self.seal(i);
        if *sealed {
            return Ok(false);
        }
        self.file
            .write_all_at(piece, at)
            .map_err(io_err(&self.path))?;
        Ok(true)
    }

    /// Marks chunk `i` verified: every byte of it was written by
    /// [`PartialObject::write_piece`] and hashed to `digest` on the way,
    /// and the caller won the chunk's claim, so no other copy is written.
    /// Refuses a digest that is not the signed one. The chunk is sealed
    /// first: no piece lands after this.
    pub fn commit_written(&self, i: usize, digest: &Sha256Digest) -> Result<(), CasError> {
        let (start, end) = self.spec.chunk_range(i);
        self.check_chunk(i, digest, end - start)?;
        *self.seal(i) = true;
        self.mark_verified(i)
    }

    /// Chunk `i`'s range, when `digest` and `len` are the signed ones.
    fn check_chunk(
        &self,
        i: usize,
        digest: &Sha256Digest,
        len: u64,
    ) -> Result<(u64, u64), CasError> {
        let (start, end) = self.spec.chunk_range(i);
        if *digest != self.spec.chunks.sha256[i] || len != end - start {
            return Err(CasError::Mismatch {
                expected: self.spec.chunks.sha256[i],
                expected_len: end - start,
                actual: *digest,
                actual_len: len,
            });
        }
        Ok((start, end))
    }

    /// Chunk `i`'s seal, locked.
    fn seal(&self, i: usize) -> std::sync::MutexGuard<'_, bool> {
        // A plain flag: a panic while holding the lock leaves it usable.
        self.sealed[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records chunk `i` as verified, in memory and in the sidecar.
    fn mark_verified(&self, i: usize) -> Result<(), CasError> {
        let mut v = self.verified();
        v[i] = true;
        self.write_sidecar_locked(&v)
    }

    /// Reads chunk `i` back block by block (`buf` is one block, of
    /// [`READ_BLOCK`] bytes) and hands each block to `f`, so no buffer of a
    /// whole chunk is needed.
    pub fn read_chunk_blocks(
        &self,
        i: usize,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), CasError> {
        let (mut at, end) = self.spec.chunk_range(i);
        buf.resize(READ_BLOCK, 0);
        while at < end {
            let n = (end - at).min(READ_BLOCK as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(io_err(&self.path))?;
            f(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }

    /// Hashes the whole partial file (when no streaming hash is at hand).
    pub fn hash_all(&self) -> Result<Sha256Digest, CasError> {
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        for i in 0..self.spec.chunk_count() {
            self.read_chunk_blocks(i, &mut buf, |b| hasher.update(b))?;
        }
        Ok(hasher.finalize().into())
    }

    /// Makes the object visible: checks that every chunk is verified, that
    /// `whole` (the SHA-256 of all bytes in order) and the length match,
    /// then fsync, rename to the final name, fsync the directory. A stale
    /// chunk-list record of the name is removed first: the object is known
    /// by its content.
    pub fn finish(self, whole: &Sha256Digest) -> Result<PathBuf, CasError> {
        self.check_complete()?;
        let len = self.file.metadata().map_err(io_err(&self.path))?.len();
        if *whole != self.spec.sha256 || len != self.spec.length {
            return Err(CasError::Mismatch {
                expected: self.spec.sha256,
                expected_len: self.spec.length,
                actual: *whole,
                actual_len: len,
            });
        }
        let record = self.record_path();
        remove_if_present(&record)?;
        self.publish()
    }

    /// Makes the object visible on the strength of its chunks alone, with
    /// no pass over the whole object: every chunk matched the signed chunk
    /// list in this run (written by [`PartialObject::write_chunk_parts`]
    /// after its digest matched, or re-hashed when the partial was
    /// resumed) and the length matches. Records the chunk list's digest in
    /// `<hex>.chunks` (fsynced before the rename; see [`Stored::Chunks`]),
    /// then fsync, rename, fsync of the directory.
    pub fn finish_by_chunks(self) -> Result<PathBuf, CasError> {
        self.check_complete()?;
        let len = self.file.metadata().map_err(io_err(&self.path))?.len();
        if len != self.spec.length {
            return Err(CasError::Mismatch {
                expected: self.spec.sha256,
                expected_len: self.spec.length,
                actual: self.spec.sha256,
                actual_len: len,
            });
        }
        let record = self.record_path();
        let tmp = record.with_extension("chunks.tmp");
        let mut f = create_fresh(&tmp).map_err(io_err(&tmp))?;
        let line = format!("{}\n", self.spec.chunks.digest().to_hex());
        f.write_all(line.as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &record).map_err(io_err(&record))?;
        self.publish()
    }

    fn record_path(&self) -> PathBuf {
        let mut name = self.final_path.clone().into_os_string();
        name.push(layout::RECORD_SUFFIX);
        PathBuf::from(name)
    }

    fn check_complete(&self) -> Result<(), CasError> {
        let missing = self.missing().len();
        if missing > 0 {
            return Err(CasError::Incomplete(self.spec.sha256, missing));
        }
        Ok(())
    }

    /// fsync, rename to the final name, fsync the directory, release.
    fn publish(mut self) -> Result<PathBuf, CasError> {
        self.file.sync_all().map_err(io_err(&self.path))?;
        fs::rename(&self.path, &self.final_path).map_err(io_err(&self.final_path))?;
        let shard = self
            .final_path
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        fsync_dir(&shard)?;
        let _ = fs::remove_file(&self.sidecar);
        if let Some(lock) = self.lock.take() {
            lock.release_and_remove();
        }
        Ok(self.final_path.clone())
    }

    /// Deletes the partial (its bytes can never become the object, e.g. the
    /// signed chunk list and whole digest disagree).
    pub fn discard(mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.sidecar);
        if let Some(lock) = self.lock.take() {
            lock.release_and_remove();
        }
    }
}
