//! `phase verify`: run the whole TUF client workflow against a repository
//! (directory or URL) from a given trusted root, download every selected
//! target through the verifier (length cap, hashes), and list them. Exit
//! status 0 only if everything verified.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use verifier::{DirStorage, Updater};

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
        if !args.no_download {
            up.download(t, &mut std::io::sink())
                .with_context(|| format!("verifying target {} failed", t.name))?;
        }
        listed.push(Listed {
            name: t.name.clone(),
            sha256: t.sha256().unwrap_or("-").to_string(),
            length: t.length,
            version: t.version().map(str::to_string),
            kind: t.kind().map(|k| k.as_str().to_string()),
            cmdline: t.cmdline().map(str::to_string),
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
