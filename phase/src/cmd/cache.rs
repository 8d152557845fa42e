//! `phase cache gc`: remove objects the cache no longer needs, keeping what
//! the current trusted targets (`<cache>/tuf/targets.json`, written only
//! after verification) reference, the newest N recorded versions of every
//! target, and the objects of the last release that booted from the cache
//! (`<cache>/last-boot.json`, the boot's fallback).
//!
//! `phase cache verify`: hash every complete object again and compare it
//! with its name; a bad one is named, moved to `<cache>/cas/quarantine/`
//! (never deleted) and makes the command fail.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fetcher::{Cas, CasError, Sha256Digest};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Remove unreferenced objects and stale partial downloads.
    Gc(GcArgs),
    /// Re-hash every object against its name; move bad ones to quarantine/.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Cache directory.
    #[arg(long)]
    pub cache: PathBuf,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
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

/// The objects of the last release that booted from this cache (its
/// `last-boot.json`, the fallback when a new release's kernel is refused),
/// none when there is no record. A record that cannot be read stops the
/// collection: its objects cannot be told apart.
fn last_boot_digests(cas: &Cas) -> anyhow::Result<Vec<Sha256Digest>> {
    let path = cas.dir().join(handover::LAST_BOOT);
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Ok(m) if m.len() > handover::MAX_LAST_BOOT => anyhow::bail!(
            "{}: larger than {} bytes, not a record of a release; nothing collected",
            path.display(),
            handover::MAX_LAST_BOOT
        ),
        _ => std::fs::read(&path)
            .with_context(|| format!("cannot read {}; nothing collected", path.display()))?,
    };
    let record: handover::LastBoot = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a record of a release; nothing collected",
            path.display()
        )
    })?;
    record
        .artifacts
        .iter()
        .map(|a| {
            Sha256Digest::from_hex(&a.sha256).with_context(|| {
                format!(
                    "{}: {} digest {:?} is not a SHA-256; nothing collected",
                    path.display(),
                    a.kind,
                    a.sha256
                )
            })
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Sub::Verify(a) => verify(&a),
        Sub::Gc(a) => {
            let cas = Cas::open(&a.cache)
                .with_context(|| format!("cannot open cache {}", a.cache.display()))?;
            let current = trusted_digests(&cas)?;
            let last_boot = last_boot_digests(&cas)?;
            let keep = cas.keep_set(current.iter().chain(&last_boot).copied(), a.keep_versions)?;
            let r = cas.gc(&keep).context("garbage collection failed")?;
            println!(
                "phase cache gc: kept {} objects ({} referenced by trusted targets, {} by {}), removed {} objects and {} partial files, freed {} bytes",
                r.kept,
                current.len(),
                last_boot.len(),
                handover::LAST_BOOT,
                r.removed.len(),
                r.removed_partials,
                r.freed_bytes
            );
            Ok(())
        }
    }
}

/// One object that failed `phase cache verify`.
#[derive(Debug, Serialize)]
struct BadObject {
    sha256: String,
    /// SHA-256 of what is stored, when it could be read.
    actual: Option<String>,
    /// Bytes read.
    length: u64,
    /// Why it could not be read, if it could not.
    error: Option<String>,
    /// Where it was moved (absent if the move failed).
    moved_to: Option<PathBuf>,
    /// Why it could not be moved, if it could not.
    move_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct VerifyReport {
    cache: PathBuf,
    /// Objects hashed.
    checked: usize,
    /// Bytes hashed.
    bytes: u64,
    good: usize,
    bad: Vec<BadObject>,
}

fn verify(a: &VerifyArgs) -> anyhow::Result<()> {
    let cas =
        Cas::open(&a.cache).with_context(|| format!("cannot open cache {}", a.cache.display()))?;
    let objects = cas.list().context("cannot list the cache's objects")?;
    let total: u64 = objects
        .iter()
        .filter_map(|d| std::fs::symlink_metadata(cas.object_path(d)).ok())
        .map(|m| m.len())
        .sum();
    // Drawn on stderr only when it is a terminal (indicatif's default).
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verify {msg:16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut report = VerifyReport {
        cache: a.cache.clone(),
        checked: 0,
        bytes: 0,
        good: 0,
        bad: Vec::new(),
    };
    for d in &objects {
        bar.set_message(d.to_hex()[..12].to_string());
        let hashed = cas.hash_object(d, |n| bar.inc(n));
        let bad = match hashed {
            Ok((actual, len)) => {
                report.checked += 1;
                report.bytes += len;
                if actual == *d {
                    report.good += 1;
                    continue;
                }
                BadObject {
                    sha256: d.to_hex(),
                    actual: Some(actual.to_hex()),
                    length: len,
                    error: None,
                    moved_to: None,
                    move_error: None,
                }
            }
            // Removed meanwhile (`phase cache gc`): nothing to check.
            Err(CasError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => {
                report.checked += 1;
                BadObject {
                    sha256: d.to_hex(),
                    actual: None,
                    length: 0,
                    error: Some(verifier::error_chain(&e)),
                    moved_to: None,
                    move_error: None,
                }
            }
        };
        let bad = move_aside(&cas, d, bad);
        bar.suspend(|| {
            if !a.json {
                println!("{}", bad_line(&bad));
            }
        });
        report.bad.push(bad);
    }
    bar.finish_and_clear();
    if a.json {
        super::common::print_json(&report)?;
    } else {
        println!(
            "phase cache verify: {} objects, {} bytes checked: {} good, {} bad{}",
            report.checked,
            report.bytes,
            report.good,
            report.bad.len(),
            if report.bad.is_empty() {
                String::new()
            } else {
                format!(" (moved to {})", cas.quarantine_dir().display())
            }
        );
    }
    if !report.bad.is_empty() {
        anyhow::bail!(
            "{} of {} objects in {} do not match their names",
            report.bad.len(),
            report.checked,
            a.cache.display()
        );
    }
    Ok(())
}

/// Moves a bad object to the quarantine under its lock (a writer of the
/// same object finishes first).
fn move_aside(cas: &Cas, d: &Sha256Digest, mut bad: BadObject) -> BadObject {
    let moved = cas
        .lock_blocking(d, Duration::from_secs(30))
        .and_then(|lock| match lock {
            None => Err(CasError::Io {
                path: cas.object_path(d),
                source: std::io::Error::other("a writer held the object's lock for 30 s"),
            }),
            Some(lock) => {
                let r = cas.quarantine(d);
                drop(lock);
                r
            }
        });
    match moved {
        Ok(to) => bad.moved_to = Some(to),
        Err(e) => bad.move_error = Some(verifier::error_chain(&e)),
    }
    bad
}

/// `bad  sha256:<hex>  <what is wrong>  <where it went>`.
fn bad_line(b: &BadObject) -> String {
    let what = match (&b.actual, &b.error) {
        (Some(actual), _) => format!("{} bytes with SHA-256 {actual}", b.length),
        (None, Some(e)) => format!("unreadable: {e}"),
        (None, None) => "unreadable".to_string(),
    };
    let whereto = match (&b.moved_to, &b.move_error) {
        (Some(p), _) => format!("moved to {}", p.display()),
        (None, Some(e)) => format!("NOT moved: {e}"),
        (None, None) => "NOT moved".to_string(),
    };
    format!("bad  sha256:{}  {what}  {whereto}", b.sha256)
}
