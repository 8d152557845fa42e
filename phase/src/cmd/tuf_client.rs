//! `phase tuf-client`: the TUF conformance client protocol, so external
//! conformance suites can drive this client.
//!
//! ```text
//! phase tuf-client --metadata-dir D init ROOT
//! phase tuf-client --metadata-dir D --metadata-url URL refresh
//! phase tuf-client --metadata-dir D --metadata-url URL --target-name P [--target-name P2]
//!                  --target-base-url URL --target-dir DIR download
//! ```
//!
//! Metadata in D uses unversioned names (`root.json`, `timestamp.json`,
//! `snapshot.json`, `targets.json`, `<url-encoded role>.json`). Targets land
//! in DIR as their URL-encoded path. Exit 0 on full success, 1 otherwise.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use verifier::{DirStorage, Storage, Updater};

use super::common::HttpTransport;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of the client's trusted metadata.
    #[arg(long)]
    pub metadata_dir: PathBuf,
    /// Base URL of the repository metadata.
    #[arg(long)]
    pub metadata_url: Option<String>,
    /// Target path to download (repeatable; in order, stop at first failure).
    #[arg(long)]
    pub target_name: Vec<String>,
    /// Base URL of the repository targets.
    #[arg(long)]
    pub target_base_url: Option<String>,
    /// Directory the targets are written to.
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Copy ROOT into the metadata directory as the trusted root (no network).
    Init {
        /// Trusted root metadata file.
        root: PathBuf,
    },
    /// Run the client workflow: root, timestamp, snapshot, targets.
    Refresh,
    /// Refresh, then download the --target-name targets into --target-dir.
    Download,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let storage = DirStorage::new(&args.metadata_dir).with_context(|| {
        format!(
            "opening metadata dir {} failed",
            args.metadata_dir.display()
        )
    })?;
    match &args.action {
        Action::Init { root } => {
            let bytes = std::fs::read(root)
                .with_context(|| format!("reading {} failed", root.display()))?;
            verifier::TrustedSet::new(&bytes, now)
                .with_context(|| format!("{} is not a valid self-signed root", root.display()))?;
            storage
                .store("root.json", &bytes)
                .context("storing the trusted root failed")?;
            Ok(())
        }
        Action::Refresh => {
            let url = args
                .metadata_url
                .as_deref()
                .context("refresh needs --metadata-url")?;
            let mut up = Updater::new(storage, HttpTransport::new(url, None)?, now);
            up.refresh().context("refresh failed")?;
            Ok(())
        }
        Action::Download => download(&args, storage, now),
    }
}

fn download(
    args: &Args,
    storage: DirStorage,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let url = args
        .metadata_url
        .as_deref()
        .context("download needs --metadata-url")?;
    let base = args
        .target_base_url
        .as_deref()
        .context("download needs --target-base-url")?;
    let dir = args
        .target_dir
        .as_ref()
        .context("download needs --target-dir")?;
    if args.target_name.is_empty() {
        bail!("download needs at least one --target-name");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} failed", dir.display()))?;
    let mut up = Updater::new(storage, HttpTransport::new(url, Some(base))?, now);
    up.refresh().context("refresh failed")?;
    for name in &args.target_name {
        let target = up
            .target(name)
            .with_context(|| format!("looking up target {name:?} failed"))?;
        let path = dir.join(verifier::encode_name(name));
        if let Ok(existing) = std::fs::read(&path) {
            if target.verify_bytes(&existing).is_ok() {
                continue;
            }
        }
        let tmp = dir.join(format!(".{}.part", verifier::encode_name(name)));
        let result = (|| -> anyhow::Result<()> {
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {} failed", tmp.display()))?;
            up.download(&target, &mut f)
                .with_context(|| format!("downloading target {name:?} failed"))?;
            f.flush()?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("writing {} failed", path.display()))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
    }
    Ok(())
}
