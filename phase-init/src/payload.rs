//! The payload stage 1 hands to the target: the target initramfs bytes, then
//! an uncompressed newc cpio with
//!
//! | path | what |
//! |---|---|
//! | `/phase/rootfs.squashfs` | the verified root filesystem (not in the archive when `rootfs.verity.json` says `in_cache`: stage 2 then binds it here from the cache partition) |
//! | `/phase/rootfs.verity` | its dm-verity hash tree (a release with verity metadata; a hard link to its CAS name) |
//! | `/phase/rootfs.verity.json` | the tree's signed parameters, the rootfs's target name and whether it stays on the cache partition ([`VerityParams`]): what stage 2 opens the rootfs through dm-verity with |
//! | `/phase/cas/sha256/<2>/<64>` | every verified object: kernel, target initramfs, rootfs (a hard link to `/phase/rootfs.squashfs`, no second copy) and the jobs stage 1 fetched |
//! | `/phase/cas/locks/` | empty; `fetcher::Cas::open` expects it |
//! | `/phase/tuf/{root,timestamp,snapshot,targets}.json` | the trusted TUF state stage 1 verified (`verifier::DirStorage` layout) |
//! | `/phase/tuf/metadata/<name>` | the same metadata under the repository's names (`N.root.json`, `timestamp.json`, `N.snapshot.json`, `N.targets.json`) |
//! | `/phase/boot.json` | [`BootJson`] (the `handover` crate): the provenance of this boot |
//!
//! `/phase` is therefore a cache in the layout `phase serve --cache` reads,
//! holding only bytes stage 1 verified: the booted target re-shares exactly
//! what it booted from, and the next node verifies it all again.
//!
//! The kernel unpacks concatenated cpio archives (compressed or not) into
//! the same rootfs, so the target sees one tree. Files are streamed from
//! disk into the output: the rootfs is never held in memory. The rootfs's
//! CAS name is a newc hard link (same inode number, `nlink` 2, the data in
//! the first entry): the kernel's unpacker links the second name to the
//! first, so the rootfs occupies RAM once.
//!
//! The header encoding is the `cpio` crate's (as in the image crate's
//! writer); the image crate's `Archive` keeps whole files in memory, which
//! is right for a 10 MB initramfs and wrong for a rootfs, so this module
//! streams with the same crate instead.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cas_layout;
/// The `boot.json` schema, for what fills the record in (`handoff`, the
/// verified fetch).
pub use handover::{
    ArtifactRecord, BootJson, PeerBytes, StepTiming, TufVersions, BOOT_JSON, BOOT_JSON_VERSION,
};

/// Where the payload lands in the target's initramfs.
pub const ROOTFS: &str = "/phase/rootfs.squashfs";
/// The rootfs's dm-verity hash tree, and its signed parameters.
pub const ROOTFS_VERITY: &str = "/phase/rootfs.verity";
pub const ROOTFS_VERITY_PARAMS: &str = "/phase/rootfs.verity.json";
pub const CAS_DIR: &str = "/phase/cas";
pub const TUF_DIR: &str = "/phase/tuf";

/// Errors while writing the payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot read the {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {path} is {len} bytes, more than a newc cpio entry can hold (4 GiB)")]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        len: u64,
    },
    #[error("the {what} {path} changed while it was being copied ({expected} bytes expected)")]
    Changed {
        what: &'static str,
        path: PathBuf,
        expected: u64,
    },
    #[error("cannot write the payload")]
    Write(#[source] io::Error),
    #[error("TUF metadata name {0:?} is not a plain relative path (a-z A-Z 0-9 . _ - segments)")]
    MetaName(String),
}

/// A verified TUF metadata file the target re-shares, at
/// `/phase/tuf/<name>` (`root.json`, `metadata/3.targets.json`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl MetaFile {
    /// Whether `name` is one or two plain segments (`x.json`,
    /// `metadata/x.json`): no `..`, no leading dot or `/`.
    pub fn valid_name(name: &str) -> bool {
        let segs: Vec<&str> = name.split('/').collect();
        segs.len() <= 2
            && (segs.len() == 1 || segs[0] == "metadata")
            && segs.iter().all(|s| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            })
    }
}

/// A file that goes into the payload, with its digest and length.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    pub length: u64,
}

impl Artifact {
    /// Reads `path` once to learn its SHA-256 and length (the fetcher knows
    /// both already for what it fetched; this is for local files).
    pub fn hash_file(what: &'static str, path: &Path) -> Result<Artifact, PayloadError> {
        let read_err = |source| PayloadError::Read {
            what,
            path: path.to_path_buf(),
            source,
        };
        let mut f = File::open(path).map_err(read_err)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut length = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            length += n as u64;
        }
        Ok(Artifact {
            path: path.to_path_buf(),
            sha256: hex::encode(h.finalize()),
            length,
        })
    }
}

/// The rootfs's dm-verity tree, verified against its own signed SHA-256,
/// and the signed parameters of the rootfs target (`custom.verity`).
#[derive(Debug, Clone)]
pub struct RootVerity {
    pub tree: Artifact,
    pub params: VerityParams,
}

/// What `/phase/rootfs.verity.json` holds: the rootfs's TUF target name
/// (for the lines that name it), its signed `verity` metadata in the
/// metadata's own JSON form, and, when the kexec initrd leaves the rootfs
/// on the cache partition, its SHA-256 there (`in_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    pub target: String,
    pub verity: verifier::Verity,
    /// The rootfs's SHA-256 (64 lowercase hex) when stage 2 reads it in
    /// place from the cache partition's CAS (`cas/sha256/<2>/<64>`)
    /// instead of from the payload: the kexec route with a writable cache
    /// (docs/verity.md, "Booting with it").
    pub in_cache: Option<String>,
}

impl VerityParams {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::json!({
            "target": self.target,
            "verity": self.verity.to_json(),
        });
        if let Some(d) = &self.in_cache {
            v["in_cache"] = d.as_str().into();
        }
        // Serializing a Value built from strings and numbers cannot fail.
        serde_json::to_vec_pretty(&v).unwrap_or_default()
    }

    /// Parses and checks the parameters as the verifier checks signed
    /// metadata (the same `verifier::Verity::from_json`).
    pub fn from_json(bytes: &[u8]) -> Result<VerityParams, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let target = v["target"].as_str().ok_or("no \"target\" name")?.to_owned();
        let verity = verifier::Verity::from_json(&v["verity"])?;
        let in_cache = match &v["in_cache"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(d)
                if d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Some(d.clone())
            }
            other => return Err(format!("in_cache {other} is not a SHA-256 in hex")),
        };
        Ok(VerityParams {
            target,
            verity,
            in_cache,
        })
    }

    /// Where the rootfs is when [`VerityParams::in_cache`] says so: below
    /// the cache partition's mount point `cache`.
    pub fn cache_object(&self, cache: &Path) -> Option<PathBuf> {
        self.in_cache
            .as_deref()
            .map(|d| cache.join(cas_layout::object(d)))
    }
}

/// What goes into the target's initrd.
#[derive(Debug, Clone)]
pub struct Payload<'a> {
    pub kernel: &'a Artifact,
    pub initramfs: &'a Artifact,
    pub rootfs: &'a Artifact,
    /// Further verified objects for the CAS only (the jobs).
    pub extra: &'a [Artifact],
    /// The rootfs's dm-verity tree and parameters, when the release has
    /// them.
    pub verity: Option<&'a RootVerity>,
    /// The verified TUF metadata, under `/phase/tuf/`.
    pub tuf: &'a [MetaFile],
    pub boot: &'a BootJson,
}

/// `/phase` is a cache directory: `phase/<name>` for a name inside it
/// ([`cas_layout`]), without the leading `/`.
fn in_cache(name: &str) -> String {
    format!("phase/{name}")
}

/// `/phase/cas/sha256/<2>/<64>` for a digest (without the leading `/`).
pub fn cas_path(sha256: &str) -> String {
    in_cache(&cas_layout::object(sha256))
}

/// Counts what goes through, to pad to cpio's 4-byte alignment.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the target initramfs followed by the payload cpio into `out`, and
/// returns the number of bytes written.
pub fn write_initrd<W: Write>(out: W, p: &Payload<'_>) -> Result<u64, PayloadError> {
    let mut w = Counting { inner: out, n: 0 };
    copy_exact(&mut w, "target initramfs", p.initramfs)?;
    // The kernel looks for the next archive at a 4-byte boundary and skips
    // zero padding.
    let pad = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 4][..pad]).map_err(PayloadError::Write)?;

    for m in p.tuf {
        if !MetaFile::valid_name(&m.name) {
            return Err(PayloadError::MetaName(m.name.clone()));
        }
    }
    let mut ino = 0u32;
    let mut next_ino = || {
        ino += 1;
        ino
    };
    let shard = |a: &Artifact| in_cache(&cas_layout::shard(&a.sha256));
    let tree = p.verity.map(|v| &v.tree);
    let objects: Vec<&Artifact> = [p.kernel, p.initramfs, p.rootfs]
        .into_iter()
        .chain(tree)
        .chain(p.extra.iter())
        .collect();
    let mut dirs: Vec<String> = std::iter::once("phase".to_owned())
        .chain(cas_layout::DIRS.iter().map(|d| in_cache(d)))
        .collect();
    for a in &objects {
        let d = shard(a);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    for d in &dirs {
        let wr = header(d, 0o040755, next_ino()).write(&mut w, 0);
        wr.finish().map_err(PayloadError::Write)?;
    }
    let file = |w: &mut Counting<W>,
                name: &str,
                what: &'static str,
                a: &Artifact,
                ino: u32,
                nlink: u32| {
        let len = u32::try_from(a.length).map_err(|_| PayloadError::TooLarge {
            what,
            path: a.path.clone(),
            len: a.length,
        })?;
        let mut wr = header(name, 0o100644, ino).nlink(nlink).write(&mut *w, len);
        copy_exact(&mut wr, what, a)?;
        wr.finish().map_err(PayloadError::Write)?;
        Ok::<(), PayloadError>(())
    };
    // The rootfs (and its tree) first, with its data; its CAS name is a
    // second link to the same inode (unless an object written before has
    // the same digest).
    let mut written: Vec<&str> = Vec::new();
    // A rootfs that stage 2 reads in place from the cache partition
    // (`in_cache`) is not in the archive at all.
    let in_cache = p.verity.is_some_and(|v| v.params.in_cache.is_some());
    let named = [
        (ROOTFS, "rootfs", (!in_cache).then_some(p.rootfs)),
        (ROOTFS_VERITY, "dm-verity tree", tree),
    ];
    for (path, what, a) in named {
        let Some(a) = a else { continue };
        let ino = next_ino();
        let link = a.sha256 != p.kernel.sha256
            && a.sha256 != p.initramfs.sha256
            && !written.contains(&a.sha256.as_str());
        file(
            &mut w,
            path.trim_start_matches('/'),
            what,
            a,
            ino,
            if link { 2 } else { 1 },
        )?;
        if link {
            let wr = header(&cas_path(&a.sha256), 0o100644, ino)
                .nlink(2)
                .write(&mut w, 0);
            wr.finish().map_err(PayloadError::Write)?;
            written.push(&a.sha256);
        }
    }
    let whats = ["kernel", "target initramfs"];
    for (i, a) in [p.kernel, p.initramfs]
        .into_iter()
        .chain(p.extra.iter())
        .enumerate()
    {
        if written.contains(&a.sha256.as_str()) {
            continue;
        }
        let what = whats.get(i).copied().unwrap_or("job");
        file(&mut w, &cas_path(&a.sha256), what, a, next_ino(), 1)?;
        written.push(&a.sha256);
    }
    let files = p
        .tuf
        .iter()
        .map(|m| {
            (
                format!("{}/{}", TUF_DIR.trim_start_matches('/'), m.name),
                m.bytes.clone(),
            )
        })
        .chain(p.verity.map(|v| {
            (
                ROOTFS_VERITY_PARAMS.trim_start_matches('/').to_owned(),
                v.params.to_json(),
            )
        }));
    for (name, bytes) in files {
        let mut wr = header(&name, 0o100644, next_ino()).write(&mut w, bytes.len() as u32);
        wr.write_all(&bytes).map_err(PayloadError::Write)?;
        wr.finish().map_err(PayloadError::Write)?;
    }
    let json = p.boot.to_json();
    let mut wr = header(BOOT_JSON.trim_start_matches('/'), 0o100644, next_ino())
        .write(&mut w, json.len() as u32);
    wr.write_all(&json).map_err(PayloadError::Write)?;
    wr.finish().map_err(PayloadError::Write)?;
    let mut w = cpio::newc::trailer(w).map_err(PayloadError::Write)?;
    w.flush().map_err(PayloadError::Write)?;
    Ok(w.n)
}

/// A verified file that [`lay_out`] leaves for the caller to bind-mount
/// (read-only) onto the empty file at `at`: the bytes stay where the fetch
/// verified them, neither copied nor read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub from: PathBuf,
    pub at: PathBuf,
}

/// The payload as a directory tree below `root` instead of a cpio, for
/// the boot that goes on as stage 2 without a second kernel: the same
/// paths as [`write_initrd`]'s archive, with `boot.json` and the TUF
/// metadata written, and an empty file at each object's place that the
/// returned [`Bind`]s fill.
pub fn lay_out(root: &Path, p: &Payload<'_>) -> Result<Vec<Bind>, PayloadError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: io::Error| {
            PayloadError::Write(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
    };
    for m in p.tuf {
        if !MetaFile::valid_name(&m.name) {
            return Err(PayloadError::MetaName(m.name.clone()));
        }
    }
    for d in cas_layout::DIRS {
        let dir = root.join(in_cache(d));
        std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    }
    let mut binds: Vec<Bind> = Vec::new();
    let mut place = |a: &Artifact, at: PathBuf| -> Result<(), PayloadError> {
        if binds.iter().any(|b| b.at == at) {
            return Ok(());
        }
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        }
        File::create(&at).map_err(write_err(&at))?;
        binds.push(Bind {
            from: a.path.clone(),
            at,
        });
        Ok(())
    };
    place(p.rootfs, root.join(ROOTFS.trim_start_matches('/')))?;
    let tree = p.verity.map(|v| &v.tree);
    if let Some(t) = tree {
        place(t, root.join(ROOTFS_VERITY.trim_start_matches('/')))?;
    }
    for a in [p.kernel, p.initramfs, p.rootfs]
        .into_iter()
        .chain(tree)
        .chain(p.extra.iter())
    {
        place(a, root.join(cas_path(&a.sha256)))?;
    }
    let files = p
        .tuf
        .iter()
        .map(|m| {
            (
                format!("{}/{}", TUF_DIR.trim_start_matches('/'), m.name),
                m.bytes.clone(),
            )
        })
        .chain(p.verity.map(|v| {
            (
                ROOTFS_VERITY_PARAMS.trim_start_matches('/').to_owned(),
                v.params.to_json(),
            )
        }))
        .chain(std::iter::once((
            BOOT_JSON.trim_start_matches('/').to_owned(),
            p.boot.to_json(),
        )));
    for (name, bytes) in files {
        let path = root.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        }
        std::fs::write(&path, bytes).map_err(write_err(&path))?;
    }
    Ok(binds)
}

fn header(name: &str, mode: u32, ino: u32) -> cpio::newc::Builder {
    cpio::newc::Builder::new(name)
        .ino(ino)
        .mode(mode)
        .uid(0)
        .gid(0)
        .nlink(if mode & 0o040000 != 0 { 2 } else { 1 })
        .mtime(0)
}

/// Copies exactly `a.length` bytes of `a.path` into `w`.
fn copy_exact<W: Write>(w: &mut W, what: &'static str, a: &Artifact) -> Result<(), PayloadError> {
    let f = File::open(&a.path).map_err(|source| PayloadError::Read {
        what,
        path: a.path.clone(),
        source,
    })?;
    let mut limited = f.take(a.length);
    let n = io::copy(&mut limited, w).map_err(|e| match e.kind() {
        io::ErrorKind::WriteZero => PayloadError::Write(e),
        _ => PayloadError::Read {
            what,
            path: a.path.clone(),
            source: e,
        },
    })?;
    // One more byte means the file grew; fewer means it shrank.
    let mut extra = [0u8; 1];
    let grew = limited
        .into_inner()
        .read(&mut extra)
        .map(|n| n > 0)
        .unwrap_or(false);
    if n != a.length || grew {
        return Err(PayloadError::Changed {
            what,
            path: a.path.clone(),
            expected: a.length,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot record with every optional field: the handover crate's
    /// format sample.
    fn sample_boot() -> BootJson {
        BootJson::from_json(include_bytes!(
            "../../handover/tests/data/boot-private.json"
        ))
        .expect("the handover sample parses")
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> Artifact {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        Artifact::hash_file("test file", &p).expect("hash")
    }

    /// Reads every entry of the newc archive starting at `bytes`.
    fn entries(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut r = cpio::newc::Reader::new(bytes).expect("header");
            if r.entry().is_trailer() {
                break;
            }
            let name = r.entry().name().to_owned();
            let mode = r.entry().mode();
            let mut data = Vec::new();
            r.read_to_end(&mut data).expect("body");
            out.push((name, mode, data));
            bytes = r.finish().expect("finish");
        }
        out
    }

    #[test]
    fn payload_follows_the_initramfs_with_the_layout_the_target_expects() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 7 bytes: not a multiple of 4, so padding is needed.
        let initramfs = write(dir.path(), "initrd", b"INITRD!");
        let kernel = write(dir.path(), "vmlinuz", b"kernel bytes");
        let rootfs = write(dir.path(), "rootfs", &vec![0x5a; 100_000]);
        let boot = sample_boot();
        let mut out = Vec::new();
        let n = write_initrd(
            &mut out,
            &Payload {
                kernel: &kernel,
                initramfs: &initramfs,
                rootfs: &rootfs,
                extra: &[],
                verity: None,
                tuf: &[],
                boot: &boot,
            },
        )
        .expect("write");
        assert_eq!(n, out.len() as u64);
        assert_eq!(&out[..7], b"INITRD!");
        assert_eq!(out[7], 0, "padding to 4 bytes");
        assert_eq!(&out[8..14], b"070701", "newc magic at the boundary");
        let e = entries(&out[8..]);
        let names: Vec<&str> = e.iter().map(|(n, _, _)| n.as_str()).collect();
        let kcas = cas_path(&kernel.sha256);
        let icas = cas_path(&initramfs.sha256);
        assert!(kcas.starts_with(&format!("phase/cas/sha256/{}/", &kernel.sha256[..2])));
        for want in [
            "phase",
            "phase/cas",
            "phase/cas/sha256",
            kcas.as_str(),
            icas.as_str(),
            "phase/rootfs.squashfs",
            "phase/boot.json",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        // Parents come before children.
        let pos = |n: &str| names.iter().position(|x| *x == n).expect("present");
        assert!(pos("phase/cas/sha256") < pos(&kcas));
        let body = |n: &str| e.iter().find(|(x, _, _)| x == n).map(|(_, _, d)| d.clone());
        assert_eq!(body(&kcas).as_deref(), Some(&b"kernel bytes"[..]));
        assert_eq!(body(&icas).as_deref(), Some(&b"INITRD!"[..]));
        assert_eq!(
            body("phase/rootfs.squashfs").map(|d| d.len()),
            Some(100_000)
        );
        let json = body("phase/boot.json").expect("boot.json");
        assert_eq!(BootJson::from_json(&json).expect("parse"), boot);
        let (_, mode, _) = &e[pos("phase")];
        assert_eq!(*mode, 0o040755);
    }

    #[test]
    fn laid_out_in_place_the_payload_has_the_archive_s_paths_and_binds_the_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        let kernel = write(&src, "vmlinuz", b"kernel bytes");
        let initramfs = write(&src, "initrd", b"INITRD!");
        let rootfs = write(&src, "rootfs", b"hsqs");
        let job = write(&src, "job", b"\0asm");
        let tuf = [MetaFile {
            name: "metadata/2.targets.json".into(),
            bytes: b"{}".to_vec(),
        }];
        let boot = sample_boot();
        let root = dir.path().join("root");
        let binds = lay_out(
            &root,
            &Payload {
                kernel: &kernel,
                initramfs: &initramfs,
                rootfs: &rootfs,
                extra: std::slice::from_ref(&job),
                verity: None,
                tuf: &tuf,
                boot: &boot,
            },
        )
        .expect("lay out");
        let at = |rel: &str| root.join(rel);
        let expected = [
            (&rootfs, at("phase/rootfs.squashfs")),
            (&kernel, at(&cas_path(&kernel.sha256))),
            (&initramfs, at(&cas_path(&initramfs.sha256))),
            (&rootfs, at(&cas_path(&rootfs.sha256))),
            (&job, at(&cas_path(&job.sha256))),
        ];
        assert_eq!(binds.len(), expected.len(), "{binds:?}");
        for (a, place) in expected {
            assert!(
                binds.iter().any(|b| b.from == a.path && b.at == place),
                "{} -> {} missing from {binds:?}",
                a.path.display(),
                place.display()
            );
            let m = std::fs::metadata(&place).expect("mount point");
            assert!(m.is_file() && m.len() == 0, "{}", place.display());
        }
        for d in cas_layout::DIRS {
            assert!(at(&in_cache(d)).is_dir(), "{d}");
        }
        let json = std::fs::read(at("phase/boot.json")).expect("boot.json");
        assert_eq!(BootJson::from_json(&json).expect("parse"), boot);
        assert_eq!(
            std::fs::read(at("phase/tuf/metadata/2.targets.json")).expect("tuf"),
            b"{}"
        );
        let bad = [MetaFile {
            name: "../escape.json".into(),
            bytes: vec![],
        }];
        let e = lay_out(
            &dir.path().join("other"),
            &Payload {
                kernel: &kernel,
                initramfs: &initramfs,
                rootfs: &rootfs,
                extra: &[],
                verity: None,
                tuf: &bad,
                boot: &boot,
            },
        )
        .expect_err("bad name");
        assert!(matches!(e, PayloadError::MetaName(_)), "{e}");
    }

    #[test]
    fn a_file_that_changed_since_hashing_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let initramfs = write(dir.path(), "initrd", b"1234");
        let kernel = write(dir.path(), "vmlinuz", b"k");
        let rootfs = write(dir.path(), "rootfs", b"short");
        std::fs::write(&rootfs.path, b"longer now").expect("rewrite");
        let boot = sample_boot();
        let e = write_initrd(
            Vec::new(),
            &Payload {
                kernel: &kernel,
                initramfs: &initramfs,
                rootfs: &rootfs,
                extra: &[],
                verity: None,
                tuf: &[],
                boot: &boot,
            },
        )
        .expect_err("changed");
        assert!(
            matches!(e, PayloadError::Changed { what: "rootfs", .. }),
            "{e:?}"
        );
    }

    /// Entry name -> (ino, nlink, body).
    fn by_name(bytes: &[u8]) -> std::collections::BTreeMap<String, (u32, u32, Vec<u8>)> {
        let mut out = std::collections::BTreeMap::new();
        let mut bytes = bytes;
        loop {
            let mut r = cpio::newc::Reader::new(bytes).expect("header");
            if r.entry().is_trailer() {
                break;
            }
            let (name, ino, nlink) = (
                r.entry().name().to_owned(),
                r.entry().ino(),
                r.entry().nlink(),
            );
            let mut data = Vec::new();
            r.read_to_end(&mut data).expect("body");
            out.insert(name, (ino, nlink, data));
            bytes = r.finish().expect("finish");
        }
        out
    }

    #[test]
    fn the_payload_is_a_cache_phase_serve_can_re_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let initramfs = write(dir.path(), "initrd", b"INIT");
        let kernel = write(dir.path(), "vmlinuz", b"kernel bytes");
        let rootfs = write(dir.path(), "rootfs", &vec![0x5a; 70_000]);
        let job = write(dir.path(), "hello.wasm", b"\0asm job");
        // The same bytes twice are stored once.
        let dup = write(dir.path(), "dup", b"kernel bytes");
        let tuf = vec![
            MetaFile {
                name: "root.json".into(),
                bytes: b"{\"root\":1}".to_vec(),
            },
            MetaFile {
                name: "metadata/1.root.json".into(),
                bytes: b"{\"root\":1}".to_vec(),
            },
            MetaFile {
                name: "metadata/timestamp.json".into(),
                bytes: b"{\"ts\":7}".to_vec(),
            },
        ];
        let boot = sample_boot();
        let mut out = Vec::new();
        write_initrd(
            &mut out,
            &Payload {
                kernel: &kernel,
                initramfs: &initramfs,
                rootfs: &rootfs,
                extra: &[job.clone(), dup],
                verity: None,
                tuf: &tuf,
                boot: &boot,
            },
        )
        .expect("write");
        let e = by_name(&out[4..]);
        for d in ["phase/cas/locks", "phase/tuf", "phase/tuf/metadata"] {
            assert!(e.contains_key(d), "{d} missing: {:?}", e.keys());
        }
        // The rootfs: data once, its CAS name a hard link to the same inode.
        let (r_ino, r_nlink, r_body) = &e["phase/rootfs.squashfs"];
        let (c_ino, c_nlink, c_body) = &e[&cas_path(&rootfs.sha256)];
        assert_eq!((r_ino, r_nlink, r_body.len()), (c_ino, &2, 70_000));
        assert_eq!((*c_nlink, c_body.len()), (2, 0), "the link carries no data");
        // Every object under its digest, each once.
        assert_eq!(e[&cas_path(&job.sha256)].2, b"\0asm job");
        assert_eq!(e[&cas_path(&kernel.sha256)].2, b"kernel bytes");
        let kernels = e.keys().filter(|n| n.ends_with(&kernel.sha256)).count();
        assert_eq!(kernels, 1);
        // The metadata, byte for byte, where `phase serve --cache /phase`
        // and `verifier::DirStorage` look for it.
        assert_eq!(e["phase/tuf/root.json"].2, b"{\"root\":1}");
        assert_eq!(e["phase/tuf/metadata/1.root.json"].2, b"{\"root\":1}");
        assert_eq!(e["phase/tuf/metadata/timestamp.json"].2, b"{\"ts\":7}");
        // Inode numbers are unique except for the link.
        let mut inos: Vec<u32> = e.values().map(|(i, _, _)| *i).collect();
        inos.sort_unstable();
        let n = inos.len();
        inos.dedup();
        assert_eq!(inos.len(), n - 1);
    }

    #[test]
    fn a_metadata_name_that_leaves_the_tuf_dir_is_refused() {
        for bad in [
            "../etc/passwd",
            "/root.json",
            "metadata/../../x",
            ".hidden",
            "targets/x.json",
            "metadata/",
            "a/b/c",
        ] {
            assert!(!MetaFile::valid_name(bad), "{bad}");
        }
        for good in [
            "root.json",
            "metadata/12.targets.json",
            "metadata/timestamp.json",
        ] {
            assert!(MetaFile::valid_name(good), "{good}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(dir.path(), "a", b"a");
        let boot = sample_boot();
        let e = write_initrd(
            Vec::new(),
            &Payload {
                kernel: &a,
                initramfs: &a,
                rootfs: &a,
                extra: &[],
                verity: None,
                tuf: &[MetaFile {
                    name: "../x".into(),
                    bytes: vec![],
                }],
                boot: &boot,
            },
        )
        .expect_err("bad name");
        assert_eq!(
            e.to_string(),
            "TUF metadata name \"../x\" is not a plain relative path (a-z A-Z 0-9 . _ - segments)"
        );
    }

    fn sample_verity(dir: &Path, rootfs: &Artifact) -> RootVerity {
        let tree = write(dir, "tree", &[0x77; 8192]);
        RootVerity {
            tree,
            params: VerityParams {
                target: "stable/x86_64/rootfs".into(),
                verity: verifier::Verity {
                    version: 1,
                    hash_algorithm: "sha256".into(),
                    data_block_size: 4096,
                    hash_block_size: 4096,
                    data_blocks: rootfs.length / 4096,
                    salt: vec![0x5a; 32],
                    root_hash: [0xab; 32],
                    tree: "stable/x86_64/rootfs.verity".into(),
                },
                in_cache: None,
            },
        }
    }

    #[test]
    fn verity_parameters_round_trip_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = write(dir.path(), "rootfs", &[0x5a; 8192]);
        let v = sample_verity(dir.path(), &rootfs);
        assert_eq!(
            VerityParams::from_json(&v.params.to_json()).expect("parse"),
            v.params
        );
        let mut j: serde_json::Value = serde_json::from_slice(&v.params.to_json()).expect("json");
        j["verity"]["root_hash"] = "00".into();
        let e = VerityParams::from_json(&serde_json::to_vec(&j).expect("vec"))
            .expect_err("short root hash");
        assert!(e.contains("root_hash"), "{e}");
        assert!(VerityParams::from_json(b"{}").is_err());
    }

    #[test]
    fn with_a_tree_the_payload_carries_it_and_its_parameters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let initramfs = write(dir.path(), "initrd", b"INIT");
        let kernel = write(dir.path(), "vmlinuz", b"kernel bytes");
        let rootfs = write(dir.path(), "rootfs", &[0x5a; 8192]);
        let v = sample_verity(dir.path(), &rootfs);
        let boot = sample_boot();
        let p = Payload {
            kernel: &kernel,
            initramfs: &initramfs,
            rootfs: &rootfs,
            extra: &[],
            verity: Some(&v),
            tuf: &[],
            boot: &boot,
        };
        // The kexec initrd: the tree once, its CAS name a link to it.
        let mut out = Vec::new();
        write_initrd(&mut out, &p).expect("write");
        let e = by_name(&out[4..]);
        let (t_ino, t_nlink, t_body) = &e["phase/rootfs.verity"];
        let (c_ino, c_nlink, c_body) = &e[&cas_path(&v.tree.sha256)];
        assert_eq!((t_ino, t_nlink, t_body.len()), (c_ino, &2, 8192));
        assert_eq!((*c_nlink, c_body.len()), (2, 0));
        assert_eq!(e["phase/rootfs.squashfs"].2.len(), 8192);
        let params = &e["phase/rootfs.verity.json"].2;
        assert_eq!(VerityParams::from_json(params).expect("parse"), v.params);

        // In place: the tree bound at both names, the parameters written.
        let root = dir.path().join("root");
        let binds = lay_out(&root, &p).expect("lay out");
        for at in [
            root.join("phase/rootfs.verity"),
            root.join(cas_path(&v.tree.sha256)),
        ] {
            assert!(
                binds.iter().any(|b| b.from == v.tree.path && b.at == at),
                "{} missing from {binds:?}",
                at.display()
            );
        }
        assert_eq!(binds.len(), 6, "{binds:?}");
        let params = std::fs::read(root.join("phase/rootfs.verity.json")).expect("params");
        assert_eq!(VerityParams::from_json(&params).expect("parse"), v.params);
    }

    #[test]
    fn a_rootfs_left_in_the_cache_is_not_in_the_kexec_initrd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let initramfs = write(dir.path(), "initrd", b"INIT");
        let kernel = write(dir.path(), "vmlinuz", b"kernel bytes");
        let rootfs = write(dir.path(), "rootfs", &[0x5a; 8192]);
        let mut v = sample_verity(dir.path(), &rootfs);
        v.params.in_cache = Some(rootfs.sha256.clone());
        let boot = sample_boot();
        let p = Payload {
            kernel: &kernel,
            initramfs: &initramfs,
            rootfs: &rootfs,
            extra: &[],
            verity: Some(&v),
            tuf: &[],
            boot: &boot,
        };
        let mut out = Vec::new();
        write_initrd(&mut out, &p).expect("write");
        let e = by_name(&out[4..]);
        assert!(!e.contains_key("phase/rootfs.squashfs"));
        assert!(!e.contains_key(&cas_path(&rootfs.sha256)));
        assert_eq!(e[&cas_path(&kernel.sha256)].2, b"kernel bytes");
        assert_eq!(e["phase/rootfs.verity"].2.len(), 8192);
        let params =
            VerityParams::from_json(&e["phase/rootfs.verity.json"].2).expect("parse the params");
        assert_eq!(params, v.params);
        assert_eq!(
            params.cache_object(Path::new("/run/phase/cache")),
            Some(PathBuf::from(format!(
                "/run/phase/cache/cas/sha256/{}/{}",
                &rootfs.sha256[..2],
                rootfs.sha256
            )))
        );
        // Anything but a digest is refused.
        for bad in [
            serde_json::json!("../../etc/passwd"),
            serde_json::json!("AB".repeat(32)),
            serde_json::json!(5),
        ] {
            let mut j: serde_json::Value =
                serde_json::from_slice(&v.params.to_json()).expect("json");
            j["in_cache"] = bad;
            let e = VerityParams::from_json(&serde_json::to_vec(&j).expect("vec"))
                .expect_err("not a digest");
            assert!(e.contains("in_cache"), "{e}");
        }
    }

    #[test]
    fn hash_file_names_a_missing_file() {
        let e =
            Artifact::hash_file("rootfs", Path::new("/nonexistent/rootfs")).expect_err("missing");
        assert!(e.to_string().contains("rootfs /nonexistent/rootfs"), "{e}");
    }
}
