//! Seed the cache partition from a TUF repository: the verified metadata in
//! `tuf/` (the client's trusted state, as `verifier::DirStorage` writes it)
//! and, in `cas/sha256/<2 hex>/<64 hex>`, the (channel, arch) boot set plus
//! the fleet's WASM jobs (`jobs/`), so a seeded node can run its jobs and
//! re-share them without a peer. Only
//! bytes whose length and SHA-256 match the signed targets metadata are
//! written; the refresh runs against the same trusted root the initramfs
//! carries.
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use verifier::{DirStorage, DirTransport, Updater};

/// Where the fleet's WASM jobs live in the targets namespace (plasmd).
const JOBS_PREFIX: &str = "jobs/";

/// Returns the seeded target names.
pub fn seed(
    repo: &Path,
    root_json: &[u8],
    channel: &str,
    arch: &str,
    staging: &Path,
) -> anyhow::Result<Vec<String>> {
    let now = chrono::Utc::now();
    let storage =
        DirStorage::new(staging.join(fetcher::cas::layout::TUF)).context("cannot create tuf/")?;
    verifier::install_root(&storage, root_json, now).context("the trusted root does not verify")?;
    let mut up = Updater::new(storage, DirTransport::new(repo), now);
    up.refresh()
        .context("TUF refresh against the seed repository failed")?;
    let prefix = format!("{channel}/{arch}/");
    let targets: Vec<_> = up
        .all_targets()
        .context("cannot list the repository's targets")?
        .into_iter()
        .filter(|t| t.name.starts_with(&prefix) || t.name.starts_with(JOBS_PREFIX))
        .collect();
    if !targets.iter().any(|t| t.name.starts_with(&prefix)) {
        bail!("the repository signs no targets under {prefix}");
    }
    let mut names = Vec::new();
    for t in &targets {
        let Some(sha) = t.sha256().map(str::to_owned) else {
            bail!(
                "target {} has no sha256 hash; the CAS is keyed by sha256",
                t.name
            );
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("target {} has a malformed sha256 {sha:?}", t.name);
        }
        let sha = sha.to_ascii_lowercase();
        let dir = staging.join(fetcher::cas::layout::shard(&sha));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dest = dir.join(&sha);
        if dest.exists() {
            names.push(t.name.clone());
            continue;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        // `download` bounds the length and checks every listed hash before
        // returning Ok; on error the temporary file is dropped unseen.
        let n = up
            .download(t, tmp.as_file_mut())
            .with_context(|| format!("target {} failed verification", t.name))?;
        tmp.as_file_mut().flush()?;
        tmp.as_file().sync_all()?;
        tmp.persist(&dest)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        tracing::info!(target_name = %t.name, bytes = n, %sha, "seeded");
        names.push(t.name.clone());
    }
    Ok(names)
}
