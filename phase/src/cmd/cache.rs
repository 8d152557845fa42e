//! `phase cache gc`: remove objects the cache no longer needs, keeping what
//! the current trusted targets (`<cache>/tuf/targets.json`, written only
//! after verification) reference plus the newest N recorded versions of
//! every target.

use std::path::PathBuf;

use anyhow::Context;
use fetcher::{Cas, Sha256Digest};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Remove unreferenced objects and stale partial downloads.
    Gc(GcArgs),
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Cache directory.
    #[arg(long)]
    pub cache: PathBuf,
    /// Recorded versions to keep per target (besides the current ones).
    #[arg(long, default_value_t = 2)]
    pub keep_versions: usize,
}

/// Digests listed by the trusted top-level targets metadata in the cache.
fn trusted_digests(cas: &Cas) -> anyhow::Result<Vec<Sha256Digest>> {
    let path = cas.tuf_dir().join("targets.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("cannot parse {}", path.display()))?;
    let mut out = Vec::new();
    if let Some(targets) = v.pointer("/signed/targets").and_then(|t| t.as_object()) {
        for (name, t) in targets {
            let hex = t
                .pointer("/hashes/sha256")
                .and_then(|h| h.as_str())
                .unwrap_or("");
            let d = Sha256Digest::from_hex(hex).with_context(|| {
                format!("{}: target {name} has no usable sha256", path.display())
            })?;
            out.push(d);
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Sub::Gc(a) => {
            let cas = Cas::open(&a.cache)
                .with_context(|| format!("cannot open cache {}", a.cache.display()))?;
            let current = trusted_digests(&cas)?;
            let keep = cas.keep_set(current.iter().copied(), a.keep_versions)?;
            let r = cas.gc(&keep).context("garbage collection failed")?;
            println!(
                "phase cache gc: kept {} objects ({} referenced by trusted targets), removed {} objects and {} partial files, freed {} bytes",
                r.kept,
                current.len(),
                r.removed.len(),
                r.removed_partials,
                r.freed_bytes
            );
            Ok(())
        }
    }
}
