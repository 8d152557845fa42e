//! A deterministic cpio "newc" archive writer (the format the kernel unpacks
//! into its initramfs).
//!
//! The archive is an in-memory table of entries keyed by path. Writing it
//! sorts the paths (a parent always sorts before its children), numbers the
//! inodes in that order, and gives every entry uid/gid 0 and one fixed mtime,
//! so the same table always gives the same bytes. The header encoding itself
//! is the maintained `cpio` crate's.
use std::collections::BTreeMap;
use std::io::{self, Write};

/// What an archive path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device node (written as a header only: no root needed).
    CharDev {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    perm: u32,
    node: Node,
}

/// Errors while filling the archive table.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error(
        "invalid archive path {0:?} (must be relative-or-absolute without `.`/`..` or empty parts)"
    )]
    BadPath(String),
    #[error("archive path {0:?} added twice with different contents")]
    Duplicate(String),
    #[error("archive path {path:?} needs {parent:?} to be a directory, but it is not")]
    ParentNotDir { path: String, parent: String },
    #[error("archive entry {path:?} is {size} bytes, more than newc's 4 GiB limit")]
    TooLarge { path: String, size: usize },
    #[error("cannot compress the archive with zstd")]
    Compress(#[source] io::Error),
}

/// Compression of the written archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at this level (single-threaded, so deterministic).
    Zstd(i32),
}

/// An in-memory, deterministic newc archive.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
    mtime: u32,
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(CpioError::BadPath(path.to_owned()));
    }
    Ok(trimmed.to_owned())
}

impl Archive {
    /// An empty archive whose entries all carry `mtime` (seconds since the epoch).
    pub fn new(mtime: u32) -> Self {
        Archive {
            entries: BTreeMap::new(),
            mtime,
        }
    }

    fn insert(&mut self, path: &str, perm: u32, node: Node) -> Result<(), CpioError> {
        let path = normalize(path)?;
        // Parents: implicit 0755 directories.
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(CpioError::ParentNotDir {
                        path: path.clone(),
                        parent,
                    })
                }
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            perm: 0o755,
                            node: Node::Dir,
                        },
                    );
                }
            }
        }
        let entry = Entry { perm, node };
        match self.entries.get(&path) {
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
            // An explicit directory may refine an implicit one's mode.
            Some(Entry {
                node: Node::Dir, ..
            }) if entry.node == Node::Dir => {
                self.entries.insert(path, entry);
                Ok(())
            }
            Some(old) if *old == entry => Ok(()),
            Some(_) => Err(CpioError::Duplicate(path)),
        }
    }

    /// A directory with permission bits `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.insert(path, perm & 0o7777, Node::Dir)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) -> Result<(), CpioError> {
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::TooLarge {
                path: path.to_owned(),
                size: data.len(),
            });
        }
        self.insert(path, perm & 0o7777, Node::File(data))
    }

    /// A symbolic link to `target` (stored verbatim).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.insert(path, 0o777, Node::Symlink(target.to_owned()))
    }

    /// A character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        perm: u32,
    ) -> Result<(), CpioError> {
        self.insert(path, perm & 0o7777, Node::CharDev { major, minor })
    }

    /// The archive paths in write order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Total size of the file contents.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.node {
                Node::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Write the uncompressed newc archive, trailer included.
    pub fn write_newc<W: Write>(&self, mut w: W) -> io::Result<W> {
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            // Inode numbers start at 1 in path order (0 confuses some readers).
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let builder = ::cpio::newc::Builder::new(path)
                .ino(ino)
                .uid(0)
                .gid(0)
                .mtime(self.mtime);
            let (builder, body): (_, &[u8]) = match &entry.node {
                Node::Dir => (builder.mode(0o040000 | entry.perm).nlink(2), &[]),
                Node::File(data) => (builder.mode(0o100000 | entry.perm).nlink(1), data),
                Node::Symlink(target) => (
                    builder.mode(0o120000 | entry.perm).nlink(1),
                    target.as_bytes(),
                ),
                Node::CharDev { major, minor } => (
                    builder
                        .mode(0o020000 | entry.perm)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            // Sizes were checked against u32 when the entry was added.
            let size = u32::try_from(body.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))?;
            let mut writer = builder.write(w, size);
            writer.write_all(body)?;
            w = writer.finish()?;
        }
        ::cpio::newc::trailer(w)
    }

    /// The uncompressed newc bytes.
    pub fn to_newc(&self) -> Vec<u8> {
        // Writing into a Vec cannot fail.
        self.write_newc(Vec::with_capacity(self.content_bytes() as usize + 4096))
            .unwrap_or_default()
    }

    /// The archive, compressed as asked.
    pub fn to_bytes(&self, compression: Compression) -> Result<Vec<u8>, CpioError> {
        let raw = self.to_newc();
        match compression {
            Compression::None => Ok(raw),
            Compression::Zstd(level) => {
                let mut c = zstd::bulk::Compressor::new(level).map_err(CpioError::Compress)?;
                c.include_checksum(true).map_err(CpioError::Compress)?;
                c.include_contentsize(true).map_err(CpioError::Compress)?;
                c.compress(&raw).map_err(CpioError::Compress)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_implicit_and_sorted_first() {
        let mut a = Archive::new(0);
        a.file("/etc/phase/root.json", b"{}".to_vec(), 0o644)
            .unwrap();
        a.dir("dev", 0o755).unwrap();
        let paths: Vec<_> = a.paths().collect();
        assert_eq!(paths, ["dev", "etc", "etc/phase", "etc/phase/root.json"]);
    }

    #[test]
    fn bad_paths_and_conflicts_are_refused() {
        let mut a = Archive::new(0);
        assert!(matches!(a.dir("a/../b", 0o755), Err(CpioError::BadPath(_))));
        assert!(matches!(a.dir("/", 0o755), Err(CpioError::BadPath(_))));
        a.file("bin/busybox", vec![1], 0o755).unwrap();
        assert!(matches!(
            a.file("bin/busybox", vec![2], 0o755),
            Err(CpioError::Duplicate(_))
        ));
        assert!(matches!(
            a.file("bin/busybox/x", vec![2], 0o755),
            Err(CpioError::ParentNotDir { .. })
        ));
        // Same content twice is fine.
        a.file("bin/busybox", vec![1], 0o755).unwrap();
    }

    #[test]
    fn roundtrip_through_the_reader() {
        let mut a = Archive::new(7);
        a.file("init", b"hello".to_vec(), 0o755).unwrap();
        a.symlink("bin/sh", "busybox").unwrap();
        a.char_dev("dev/console", 5, 1, 0o600).unwrap();
        let bytes = a.to_newc();
        let mut rest = &bytes[..];
        let mut seen = Vec::new();
        loop {
            let r = ::cpio::newc::Reader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let e = r.entry();
            seen.push((
                e.name().to_owned(),
                e.mode(),
                e.mtime(),
                e.rdev_major(),
                e.rdev_minor(),
            ));
            rest = r.finish().unwrap();
        }
        assert_eq!(
            seen,
            [
                ("bin".into(), 0o040755, 7, 0, 0),
                ("bin/sh".into(), 0o120777, 7, 0, 0),
                ("dev".into(), 0o040755, 7, 0, 0),
                ("dev/console".into(), 0o020600, 7, 5, 1),
                ("init".into(), 0o100755, 7, 0, 0),
            ]
        );
    }

    #[test]
    fn same_table_same_bytes_whatever_the_insert_order() {
        let mut a = Archive::new(0);
        a.file("b", vec![1; 10], 0o644).unwrap();
        a.file("a/x", vec![2; 3], 0o644).unwrap();
        let mut b = Archive::new(0);
        b.file("a/x", vec![2; 3], 0o644).unwrap();
        b.file("b", vec![1; 10], 0o644).unwrap();
        assert_eq!(
            a.to_bytes(Compression::Zstd(3)).unwrap(),
            b.to_bytes(Compression::Zstd(3)).unwrap()
        );
    }
}
