//! Resolved targets: name, length, hashes and Phase Boot's signed custom
//! metadata (kind, release version, kernel cmdline, chunk hashes), plus the
//! checks on downloaded bytes (whole, streamed, or chunk by chunk).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::StreamDigest;
use crate::error::{Error, HashMismatch, TargetRule};
use crate::metadata::TargetFile;

/// Default chunk size of the signed chunk list: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// Refuse target paths that could leave a directory or a URL prefix: empty,
/// absolute, `.`/`..`/empty segments, backslashes, NUL or control characters.
pub fn check_target_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty path");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('\\') {
        return Err("backslash in path");
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("control character in path");
    }
    for seg in name.split('/') {
        match seg {
            "" => return Err("empty path segment"),
            "." | ".." => return Err("`.` or `..` path segment"),
            _ => {}
        }
    }
    Ok(())
}

/// What kind of artifact a Phase Boot target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Linux kernel image.
    Kernel,
    /// Initramfs (cpio).
    Initramfs,
    /// Squashfs root filesystem.
    Rootfs,
    /// WASM job.
    Job,
    /// dm-verity hash tree of a rootfs (the rootfs target's
    /// `custom.verity.tree` names it).
    Verity,
}

impl Kind {
    /// The lowercase name, also the last element of `<channel>/<arch>/<kind>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Initramfs => "initramfs",
            Kind::Rootfs => "rootfs",
            Kind::Job => "job",
            Kind::Verity => "verity",
        }
    }
}

/// The signed chunk list: SHA-256 of every `size`-byte chunk, the last one
/// shorter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunks {
    /// Chunk size in bytes.
    pub size: u64,
    /// Hex SHA-256 of each chunk, in order.
    pub sha256: Vec<String>,
}

impl Chunks {
    /// Compute the chunk list of `bytes`.
    pub fn of(bytes: &[u8], size: u64) -> Chunks {
        let size_usize = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
        let sha256 = bytes
            .chunks(size_usize)
            .map(crate::digest::sha256_hex)
            .collect();
        Chunks { size, sha256 }
    }

    /// Compute the chunk list while reading `r`; returns it with the total
    /// length and the whole-file SHA-256.
    pub fn of_reader(mut r: impl Read, size: u64) -> std::io::Result<(Chunks, u64, String)> {
        use sha2::{Digest, Sha256};
        let size_usize = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
        let mut whole = Sha256::new();
        let mut list = Vec::new();
        let mut buf = vec![0u8; size_usize.min(DEFAULT_CHUNK_SIZE as usize)];
        let mut total = 0u64;
        let mut chunk = Sha256::new();
        let mut in_chunk = 0usize;
        loop {
            let want = (size_usize - in_chunk).min(buf.len());
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            chunk.update(&buf[..n]);
            in_chunk += n;
            total += n as u64;
            if in_chunk == size_usize {
                list.push(hex::encode(std::mem::take(&mut chunk).finalize()));
                in_chunk = 0;
            }
        }
        if in_chunk > 0 {
            list.push(hex::encode(chunk.finalize()));
        }
        Ok((
            Chunks { size, sha256: list },
            total,
            hex::encode(whole.finalize()),
        ))
    }

    /// Number of chunks expected for a target of `length` bytes.
    pub fn expected_count(length: u64, size: u64) -> u64 {
        if size == 0 {
            0
        } else {
            length.div_ceil(size)
        }
    }

    /// Byte range `(offset, len)` of chunk `index` in a target of `length` bytes.
    pub fn range(&self, index: usize, length: u64) -> Option<(u64, u64)> {
        if index >= self.sha256.len() {
            return None;
        }
        let offset = self.size.checked_mul(index as u64)?;
        if offset >= length {
            return None;
        }
        Some((offset, self.size.min(length - offset)))
    }

    /// Whether `bytes` is chunk `index` of the target.
    pub fn verify_chunk(&self, index: usize, bytes: &[u8]) -> bool {
        self.sha256
            .get(index)
            .is_some_and(|h| *h == crate::digest::sha256_hex(bytes))
    }
}

/// Phase Boot's custom metadata on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCustom {
    /// Artifact kind.
    pub kind: Kind,
    /// Release version string.
    pub version: String,
    /// Kernel command line (kernels only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Signed chunk list.
    pub chunks: Chunks,
}

/// The dm-verity parameters signed on a rootfs target (`custom.verity`):
/// the rootfs is the data device, the hash device is the target named
/// `tree`, in the format `veritysetup format` writes by default (a
/// superblock in the first hash block, then the tree). docs/verity.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verity {
    /// Hash format version; always 1 (SHA-256(salt || block)).
    pub version: u32,
    /// Hash algorithm; always `sha256`.
    pub hash_algorithm: String,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Data blocks: the target's length over the data block size.
    pub data_blocks: u64,
    /// The salt (hex in the metadata; may be empty).
    pub salt: Vec<u8>,
    /// The root hash (hex in the metadata).
    pub root_hash: [u8; 32],
    /// Name of the target holding the hash device.
    pub tree: String,
}

/// The JSON shape of [`Verity`].
#[derive(Serialize, Deserialize)]
struct VerityJson {
    version: u32,
    hash_algorithm: String,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    salt: String,
    root_hash: String,
    tree: String,
}

impl Verity {
    /// The hash block where the tree starts in the tree target (after the
    /// superblock): the dm-verity table's `<hash_start_block>`.
    pub fn hash_start_block(&self) -> u64 {
        512u64.div_ceil(self.hash_block_size.max(1).into())
    }

    /// The root hash in lowercase hex.
    pub fn root_hex(&self) -> String {
        hex::encode(self.root_hash)
    }

    /// The salt in lowercase hex.
    pub fn salt_hex(&self) -> String {
        hex::encode(&self.salt)
    }

    /// The `custom.verity` value.
    pub fn to_json(&self) -> Value {
        let j = VerityJson {
            version: self.version,
            hash_algorithm: self.hash_algorithm.clone(),
            data_block_size: self.data_block_size,
            hash_block_size: self.hash_block_size,
            data_blocks: self.data_blocks,
            salt: self.salt_hex(),
            root_hash: self.root_hex(),
            tree: self.tree.clone(),
        };
        // A struct of numbers and strings always serializes.
        serde_json::to_value(j).unwrap_or(Value::Null)
    }

    /// Parses and checks a `custom.verity` value; the message names the
    /// first field that is wrong.
    pub fn from_json(v: &Value) -> Result<Verity, String> {
        let j: VerityJson = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if j.version != 1 {
            return Err(format!("version {} (only 1 is supported)", j.version));
        }
        if j.hash_algorithm != "sha256" {
            return Err(format!(
                "hash_algorithm {:?} (only sha256 is supported)",
                j.hash_algorithm
            ));
        }
        for (what, size) in [
            ("data_block_size", j.data_block_size),
            ("hash_block_size", j.hash_block_size),
        ] {
            if !size.is_power_of_two() || !(512..=65536).contains(&size) {
                return Err(format!(
                    "{what} {size} is not a power of two from 512 to 65536"
                ));
            }
        }
        let salt = hex::decode(&j.salt).map_err(|_| format!("salt {:?} is not hex", j.salt))?;
        if salt.len() > 256 {
            return Err(format!("salt is {} bytes, at most 256", salt.len()));
        }
        let root_hash: [u8; 32] = hex::decode(&j.root_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("root_hash {:?} is not 64 hex digits", j.root_hash))?;
        check_target_name(&j.tree).map_err(|why| format!("tree {:?}: {why}", j.tree))?;
        Ok(Verity {
            version: j.version,
            hash_algorithm: j.hash_algorithm,
            data_block_size: j.data_block_size,
            hash_block_size: j.hash_block_size,
            data_blocks: j.data_blocks,
            salt,
            root_hash,
            tree: j.tree,
        })
    }
}

/// A target resolved through trusted metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Target path, e.g. `stable/x86_64/kernel`.
    pub name: String,
    /// Exact length.
    pub length: u64,
    /// Hashes by algorithm (hex).
    pub hashes: BTreeMap<String, String>,
    /// Custom metadata, as signed.
    pub custom: Option<Value>,
    /// The targets role that listed it.
    pub role: String,
}

impl Target {
    pub(crate) fn new(name: &str, file: &TargetFile, role: &str) -> Self {
        Target {
            name: name.to_string(),
            length: file.length,
            hashes: file.hashes.clone(),
            custom: file.custom.clone(),
            role: role.to_string(),
        }
    }

    /// Hex SHA-256, when listed.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }

    /// Phase Boot custom metadata, validated: known kind, chunk list whose
    /// count fits the length.
    pub fn phase(&self) -> Result<PhaseCustom, Error> {
        let bad = |m: String| Error::Target {
            name: self.name.clone(),
            rule: TargetRule::Custom(m),
        };
        let custom = self
            .custom
            .clone()
            .ok_or_else(|| bad("no custom metadata".into()))?;
        let c: PhaseCustom = serde_json::from_value(custom).map_err(|e| bad(e.to_string()))?;
        if c.chunks.size == 0 {
            return Err(bad("chunk size 0".into()));
        }
        let want = Chunks::expected_count(self.length, c.chunks.size);
        if c.chunks.sha256.len() as u64 != want {
            return Err(bad(format!(
                "{} chunk hashes listed, {want} expected for {} bytes",
                c.chunks.sha256.len(),
                self.length
            )));
        }
        Ok(c)
    }

    /// `kind` from custom metadata, if present and known.
    pub fn kind(&self) -> Option<Kind> {
        self.custom_field("kind")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// `version` from custom metadata.
    pub fn version(&self) -> Option<&str> {
        self.custom_field("version").and_then(Value::as_str)
    }

    /// `cmdline` from custom metadata.
    pub fn cmdline(&self) -> Option<&str> {
        self.custom_field("cmdline").and_then(Value::as_str)
    }

    /// The dm-verity parameters of a rootfs (`custom.verity`), validated:
    /// version 1, sha256, block sizes powers of two from 512 to 65536 bytes,
    /// hex salt of at most 256 bytes and root hash of 32, a safe tree target
    /// name, and data blocks that cover exactly the target's length.
    /// [`TargetRule::NoVerity`] when there is none,
    /// [`TargetRule::Verity`] when it is malformed.
    pub fn verity(&self) -> Result<Verity, Error> {
        let v = self
            .custom_field("verity")
            .ok_or_else(|| self.err(TargetRule::NoVerity))?;
        let v = Verity::from_json(v).map_err(|m| self.err(TargetRule::Verity(m)))?;
        let covered = v.data_blocks.checked_mul(v.data_block_size.into());
        if covered != Some(self.length) {
            return Err(self.err(TargetRule::Verity(format!(
                "{} data blocks of {} bytes do not cover the target's {} bytes",
                v.data_blocks, v.data_block_size, self.length
            ))));
        }
        if v.tree == self.name {
            return Err(self.err(TargetRule::Verity(
                "the tree target is the target itself".into(),
            )));
        }
        Ok(v)
    }

    /// The chunk list from custom metadata.
    pub fn chunks(&self) -> Option<Chunks> {
        self.custom_field("chunks")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    fn custom_field(&self, key: &str) -> Option<&Value> {
        self.custom.as_ref().and_then(|c| c.get(key))
    }

    /// The path to fetch from the repository's `targets/`: with consistent
    /// snapshots the hash is prefixed to the last element
    /// (`stable/x86_64/<sha256>.kernel`), SHA-256 preferred.
    pub fn repository_path(&self, consistent_snapshot: bool) -> String {
        if !consistent_snapshot {
            return self.name.clone();
        }
        let hash = self
            .sha256()
            .or_else(|| self.hashes.values().next().map(String::as_str))
            .unwrap_or("");
        match self.name.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/{hash}.{base}"),
            None => format!("{hash}.{}", self.name),
        }
    }

    fn err(&self, rule: TargetRule) -> Error {
        Error::Target {
            name: self.name.clone(),
            rule,
        }
    }

    /// A streaming checker bounded by the listed length.
    pub fn digest(&self) -> Result<StreamDigest, Error> {
        StreamDigest::new(Some(self.length), Some(&self.hashes), true)
            .map_err(|e| self.err(TargetRule::Mismatch(e)))
    }

    /// Check downloaded bytes against the listed length and hashes.
    pub fn verify_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut d = self.digest()?;
        d.update(bytes)
            .map_err(|e| self.err(TargetRule::Mismatch(e)))?;
        d.finish().map_err(|e| self.err(TargetRule::Mismatch(e)))
    }

    /// Copy `reader` into `out`, reading at most `length + 1` bytes and
    /// checking length and hashes. On error the caller must discard `out`.
    pub fn copy_verified(&self, reader: &mut dyn Read, out: &mut dyn Write) -> Result<u64, Error> {
        let mut d = self.digest()?;
        let mut limited = reader.take(self.length.saturating_add(1));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| self.err(TargetRule::Io(e)))?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]).map_err(|e| match e {
                HashMismatch::Length { .. } => self.err(TargetRule::TooLong { max: self.length }),
                other => self.err(TargetRule::Mismatch(other)),
            })?;
            out.write_all(&buf[..n])
                .map_err(|e| self.err(TargetRule::Io(e)))?;
        }
        let seen = d.seen();
        d.finish().map_err(|e| self.err(TargetRule::Mismatch(e)))?;
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names() {
        for ok in ["stable/x86_64/kernel", "jobs/hello.wasm", "a", "a..b/c"] {
            assert!(check_target_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            "a\\b",
            "./a",
            "a\0b",
            "a\nb",
        ] {
            assert!(check_target_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_lists() {
        let data: Vec<u8> = (0..10u8).collect();
        let c = Chunks::of(&data, 4);
        assert_eq!(c.sha256.len(), 3);
        assert_eq!(c.range(2, 10), Some((8, 2)));
        assert!(c.verify_chunk(2, &data[8..]));
        assert!(!c.verify_chunk(1, &data[8..]));
        let (c2, len, whole) = Chunks::of_reader(&data[..], 4).unwrap();
        assert_eq!((c2, len, whole), (c, 10, crate::digest::sha256_hex(&data)));
        assert_eq!(Chunks::of(&[], 4).sha256.len(), 0);
        assert_eq!(Chunks::expected_count(8, 4), 2);
    }

    fn rootfs_with(verity: Option<Value>) -> Target {
        let mut custom = serde_json::json!({"kind": "rootfs", "version": "1"});
        if let Some(v) = verity {
            custom["verity"] = v;
        }
        Target {
            name: "stable/x86_64/rootfs".into(),
            length: 3 * 4096,
            hashes: BTreeMap::new(),
            custom: Some(custom),
            role: "targets".into(),
        }
    }

    fn good_verity() -> Value {
        serde_json::json!({
            "version": 1,
            "hash_algorithm": "sha256",
            "data_block_size": 4096,
            "hash_block_size": 4096,
            "data_blocks": 3,
            "salt": "00ff",
            "root_hash": "ab".repeat(32),
            "tree": "stable/x86_64/rootfs.verity",
        })
    }

    #[test]
    fn verity_parameters_read_typed_and_round_trip() {
        let v = rootfs_with(Some(good_verity())).verity().unwrap();
        assert_eq!(v.salt, vec![0, 255]);
        assert_eq!(v.root_hash, [0xab; 32]);
        assert_eq!(v.tree, "stable/x86_64/rootfs.verity");
        assert_eq!(v.hash_start_block(), 1);
        assert_eq!(v.to_json(), good_verity());
        assert_eq!(Verity::from_json(&v.to_json()).unwrap(), v);
    }

    #[test]
    fn missing_verity_is_not_malformed_verity() {
        let e = rootfs_with(None).verity().unwrap_err();
        assert!(matches!(e.target_rule(), Some(TargetRule::NoVerity)), "{e}");
        let mut no_custom = rootfs_with(None);
        no_custom.custom = None;
        let e = no_custom.verity().unwrap_err();
        assert!(matches!(e.target_rule(), Some(TargetRule::NoVerity)), "{e}");
    }

    #[test]
    fn malformed_verity_names_the_field() {
        for (key, value, says) in [
            ("version", serde_json::json!(0), "version 0"),
            (
                "hash_algorithm",
                serde_json::json!("sha1"),
                "hash_algorithm \"sha1\"",
            ),
            (
                "data_block_size",
                serde_json::json!(4000),
                "data_block_size 4000",
            ),
            (
                "hash_block_size",
                serde_json::json!(256),
                "hash_block_size 256",
            ),
            ("salt", serde_json::json!("xyz"), "salt \"xyz\" is not hex"),
            (
                "salt",
                serde_json::json!("00".repeat(257)),
                "salt is 257 bytes",
            ),
            ("root_hash", serde_json::json!("abcd"), "root_hash \"abcd\""),
            ("tree", serde_json::json!("../x"), "tree \"../x\""),
            (
                "tree",
                serde_json::json!("stable/x86_64/rootfs"),
                "the target itself",
            ),
            (
                "data_blocks",
                serde_json::json!(4),
                "4 data blocks of 4096 bytes",
            ),
            ("data_blocks", serde_json::json!("3"), "invalid type"),
        ] {
            let mut v = good_verity();
            v[key] = value;
            let e = rootfs_with(Some(v)).verity().unwrap_err();
            assert!(
                matches!(e.target_rule(), Some(TargetRule::Verity(m)) if m.contains(says)),
                "{key}: {e}"
            );
        }
        let mut v = good_verity();
        v.as_object_mut().unwrap().remove("root_hash");
        let e = crate::error_chain(&rootfs_with(Some(v)).verity().unwrap_err());
        assert!(e.contains("stable/x86_64/rootfs"), "{e}");
        assert!(
            e.contains("dm-verity metadata invalid: missing field `root_hash`"),
            "{e}"
        );
    }

    #[test]
    fn consistent_paths() {
        let t = Target {
            name: "stable/x86_64/kernel".into(),
            length: 1,
            hashes: [("sha256".to_string(), "ab".to_string())].into(),
            custom: None,
            role: "targets".into(),
        };
        assert_eq!(t.repository_path(true), "stable/x86_64/ab.kernel");
        assert_eq!(t.repository_path(false), "stable/x86_64/kernel");
    }
}
