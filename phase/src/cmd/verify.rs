//! `phase verify`: run the whole TUF client workflow against a repository
//! (directory or URL) from a given trusted root, download every selected
//! target through the verifier (length cap, hashes), check that its signed
//! chunk list describes the same bytes as its signed SHA-256, and list
//! them. Exit status 0 only if everything verified.
//!
//! The chunk check is what lets `phase fetch` store an object whose every
//! chunk matched the chunk list without hashing it whole again: one
//! signature binds both, `phase publish` computes both from the same
//! bytes, and this command shows that they agree (docs/fetcher.md).
//!
//! A rootfs must carry dm-verity metadata: its tree is recomputed from the
//! downloaded rootfs and must give the signed root hash and, byte for byte,
//! the signed tree target (docs/verity.md).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use verifier::{Chunks, DirStorage, Kind, Target, Updater, Verity};

use super::common::{check_component, print_json, time_arg, RepoLocation};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository: a directory with metadata/ and targets/, or its http:// URL.
    #[arg(long)]
    pub repo: String,
    /// Trusted root metadata (e.g. the 1.root.json from `phase keygen`).
    #[arg(long)]
    pub root: PathBuf,
    /// Only targets of this channel (<channel>/<arch>/*).
    #[arg(long, requires = "arch")]
    pub channel: Option<String>,
    /// Only targets of this architecture (with --channel).
    #[arg(long, requires = "channel")]
    pub arch: Option<String>,
    /// Keep trusted state here across runs (rollback protection between
    /// runs); default: a fresh temporary directory.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Check metadata only; do not download and hash the targets.
    #[arg(long)]
    pub no_download: bool,
    /// Reference time for expiry checks, RFC 3339 (default: now).
    #[arg(long, value_parser = time_arg)]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    sha256: String,
    length: u64,
    version: Option<String>,
    kind: Option<String>,
    cmdline: Option<String>,
    /// dm-verity root hash of a rootfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    verity_root_hash: Option<String>,
    downloaded: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    root_version: u64,
    root_fingerprint: String,
    timestamp_version: u64,
    snapshot_version: u64,
    targets_version: u64,
    targets: Vec<Listed>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let (Some(c), Some(a)) = (&args.channel, &args.arch) {
        check_component("channel", c)?;
        check_component("arch", a)?;
    }
    let now = args.time.unwrap_or_else(chrono::Utc::now);
    let root = std::fs::read(&args.root)
        .with_context(|| format!("reading trusted root {} failed", args.root.display()))?;
    let tmp;
    let state_dir = match &args.state {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary state directory failed")?;
            tmp.path().to_path_buf()
        }
    };
    let storage =
        DirStorage::new(&state_dir).context("opening the trusted state directory failed")?;
    verifier::install_root(&storage, &root, now)
        .with_context(|| format!("trusted root {} is not valid", args.root.display()))?;
    let location = RepoLocation::parse(&args.repo);
    let transport = location.transport()?;
    let mut up = Updater::new(storage, transport, now);
    up.refresh()
        .with_context(|| format!("verifying repository {} failed", args.repo))?;
    let mut targets = up.all_targets().context("resolving targets failed")?;
    if let (Some(c), Some(a)) = (&args.channel, &args.arch) {
        let prefix = format!("{c}/{a}/");
        targets.retain(|t| t.name.starts_with(&prefix));
        if targets.is_empty() {
            anyhow::bail!("repository {} lists no targets for {c}/{a}", args.repo);
        }
    }
    let mut listed = Vec::new();
    for t in &targets {
        if t.custom.is_some() && t.kind().is_some() {
            t.phase()
                .with_context(|| format!("target {} has invalid Phase Boot metadata", t.name))?;
        }
        let verity = if t.kind() == Some(Kind::Rootfs) {
            Some(rootfs_verity(&mut up, t)?)
        } else {
            None
        };
        if !args.no_download {
            let mut check = t.chunks().map(ChunkCheck::new);
            let mut tree = verity
                .as_ref()
                .map(|(v, _)| verity_builder(t, v))
                .transpose()?;
            let mut sink = std::io::sink();
            let mut out = Tee {
                chunks: match &mut check {
                    Some(c) => c,
                    None => &mut sink,
                },
                tree: tree.as_mut(),
            };
            up.download(t, &mut out)
                .with_context(|| format!("verifying target {} failed", t.name))?;
            if let (Some(b), Some((v, tree_target))) = (tree, &verity) {
                check_tree(&up, t, v, tree_target, b)?;
            }
            if let Some(c) = check {
                c.finish().with_context(|| {
                    format!(
                        "target {}: its signed chunk list and SHA-256 describe different bytes",
                        t.name
                    )
                })?;
            }
        }
        listed.push(Listed {
            name: t.name.clone(),
            sha256: t.sha256().unwrap_or("-").to_string(),
            length: t.length,
            version: t.version().map(str::to_string),
            kind: t.kind().map(|k| k.as_str().to_string()),
            cmdline: t.cmdline().map(str::to_string),
            verity_root_hash: verity.map(|(v, _)| v.root_hex()),
            downloaded: !args.no_download,
        });
    }
    let set = up.trusted()?;
    let report = Report {
        root_version: set.root().version,
        root_fingerprint: up.root_fingerprint()?,
        timestamp_version: set.timestamp().map(|t| t.version).unwrap_or(0),
        snapshot_version: set.snapshot().map(|s| s.version).unwrap_or(0),
        targets_version: set.targets("targets").map(|t| t.version).unwrap_or(0),
        targets: listed,
    };
    if args.json {
        return print_json(&report);
    }
    for t in &report.targets {
        println!(
            "{:<28} {} {:>12} {}",
            t.name,
            t.sha256,
            t.length,
            t.version.as_deref().unwrap_or("-")
        );
    }
    println!(
        "verified: root v{} (fingerprint {}), timestamp v{}, snapshot v{}, targets v{}; {} target(s){}",
        report.root_version,
        &report.root_fingerprint[..16],
        report.timestamp_version,
        report.snapshot_version,
        report.targets_version,
        report.targets.len(),
        if args.no_download { " (metadata only)" } else { " downloaded and hash-checked" }
    );
    Ok(())
}

/// A rootfs's signed dm-verity parameters and its tree target, which must
/// be listed with kind `verity`.
fn rootfs_verity<T: verifier::Transport, S: verifier::Storage>(
    up: &mut Updater<S, T>,
    rootfs: &Target,
) -> anyhow::Result<(Verity, Target)> {
    let v = rootfs
        .verity()
        .with_context(|| format!("target {} has no valid dm-verity metadata", rootfs.name))?;
    let tree = up.target(&v.tree).with_context(|| {
        format!(
            "target {}: its dm-verity tree target {} is not listed",
            rootfs.name, v.tree
        )
    })?;
    anyhow::ensure!(
        tree.kind() == Some(Kind::Verity),
        "target {}: its dm-verity tree target {} is not of kind verity",
        rootfs.name,
        v.tree
    );
    Ok((v, tree))
}

/// A tree builder with the signed parameters.
fn verity_builder(rootfs: &Target, v: &Verity) -> anyhow::Result<verity::Builder> {
    let params = verity::Params::new(v.data_block_size, v.hash_block_size, v.salt.clone())
        .with_context(|| format!("target {}: dm-verity parameters", rootfs.name))?;
    Ok(verity::Builder::new(params))
}

/// Whether the tree recomputed from the rootfs's bytes has the signed root
/// hash and is, with the superblock's UUID, the signed tree target.
fn check_tree<T: verifier::Transport, S: verifier::Storage>(
    up: &Updater<S, T>,
    rootfs: &Target,
    v: &Verity,
    tree_target: &Target,
    built: verity::Builder,
) -> anyhow::Result<()> {
    let name = &rootfs.name;
    let ours = built
        .finish()
        .with_context(|| format!("target {name}: recomputing its dm-verity tree failed"))?;
    anyhow::ensure!(
        ours.root_hash() == &v.root_hash,
        "target {name}: the signed dm-verity root hash {} does not match the tree of its bytes ({})",
        v.root_hex(),
        ours.root_hex()
    );
    let mut published = Vec::new();
    up.download(tree_target, &mut published)
        .with_context(|| format!("verifying target {} failed", tree_target.name))?;
    let sb = verity::Superblock::parse(&published).with_context(|| {
        format!(
            "target {}: no dm-verity superblock at its start",
            tree_target.name
        )
    })?;
    let mut expected = Vec::new();
    ours.write(&mut expected, verity::Layout::Superblock { uuid: sb.uuid })
        .context("rendering the dm-verity tree failed")?;
    if published != expected {
        let at = published
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(published.len().min(expected.len()));
        anyhow::bail!(
            "target {}: the dm-verity tree of {name} differs from the one recomputed from its bytes (first at byte {at}; {} bytes published, {} expected)",
            tree_target.name,
            published.len(),
            expected.len()
        );
    }
    Ok(())
}

/// Passes downloaded bytes to the chunk check and, for a rootfs, the
/// dm-verity tree builder.
struct Tee<'a> {
    chunks: &'a mut dyn Write,
    tree: Option<&'a mut verity::Builder>,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.chunks.write_all(buf)?;
        if let Some(t) = &mut self.tree {
            t.update(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.chunks.flush()
    }
}

/// Hashes the bytes written to it chunk by chunk and compares each chunk
/// with a signed chunk list (the bytes themselves are dropped).
struct ChunkCheck {
    list: Chunks,
    hasher: Sha256,
    /// Bytes of the current chunk so far.
    filled: u64,
    /// Chunks completed.
    index: usize,
    /// The first chunk that did not match.
    first_bad: Option<usize>,
}

impl ChunkCheck {
    fn new(list: Chunks) -> Self {
        Self {
            list,
            hasher: Sha256::new(),
            filled: 0,
            index: 0,
            first_bad: None,
        }
    }

    /// Ends the current chunk.
    fn close_chunk(&mut self) {
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let want = self.list.sha256.get(self.index).map(|h| h.to_lowercase());
        if self.first_bad.is_none() && want.as_deref() != Some(got.as_str()) {
            self.first_bad = Some(self.index);
        }
        self.index += 1;
        self.filled = 0;
    }

    /// Whether every chunk matched and the list has no chunk too many.
    fn finish(mut self) -> anyhow::Result<()> {
        if self.filled > 0 {
            self.close_chunk();
        }
        if let Some(i) = self.first_bad {
            anyhow::bail!("chunk {i} does not match the chunk list");
        }
        if self.index != self.list.sha256.len() {
            anyhow::bail!(
                "the target's bytes make {} chunks of {} bytes, the chunk list has {}",
                self.index,
                self.list.size,
                self.list.sha256.len()
            );
        }
        Ok(())
    }
}

impl Write for ChunkCheck {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        if self.list.size == 0 {
            // No chunk can hold a byte; `finish` reports the count.
            self.index += usize::from(n > 0);
            return Ok(n);
        }
        while !buf.is_empty() {
            let room = usize::try_from(self.list.size - self.filled).unwrap_or(usize::MAX);
            let take = room.min(buf.len());
            self.hasher.update(&buf[..take]);
            self.filled += take as u64;
            buf = &buf[take..];
            if self.filled == self.list.size {
                self.close_chunk();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// Feeds `data` in pieces of `piece` bytes.
    fn check(list: Chunks, data: &[u8], piece: usize) -> anyhow::Result<()> {
        let mut c = ChunkCheck::new(list);
        for p in data.chunks(piece) {
            c.write_all(p).unwrap();
        }
        c.finish()
    }

    #[test]
    fn agreeing_chunk_list_passes_whatever_the_write_sizes() {
        let data = bytes(10 * 1000 + 17);
        for piece in [1, 999, 1000, 1001, 4096, 20_000] {
            check(Chunks::of(&data, 1000), &data, piece).unwrap();
        }
        check(Chunks::of(&[], 1000), &[], 1).unwrap();
    }

    #[test]
    fn chunk_list_of_other_bytes_is_refused() {
        let data = bytes(5000);
        let mut other = data.clone();
        other[3500] ^= 1;
        let err = check(Chunks::of(&other, 1000), &data, 777).unwrap_err();
        assert!(err.to_string().contains("chunk 3 "), "{err}");
    }

    #[test]
    fn chunk_list_with_a_wrong_count_is_refused() {
        let data = bytes(5000);
        let mut list = Chunks::of(&data, 1000);
        list.sha256.push(list.sha256[0].clone());
        let err = check(list, &data, 1000).unwrap_err();
        assert!(err.to_string().contains("the chunk list has 6"), "{err}");
        let mut short = Chunks::of(&data, 1000);
        short.sha256.pop();
        assert!(check(short, &data, 1000).is_err());
    }
}
