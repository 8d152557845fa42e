//! `phase rotate`: replace one role's keys, write root N+1 signed by the old
//! and (for root) the new root keys, and with `--repo` re-sign the
//! repository so clients can follow the rotation at once. `--new-key` puts
//! keys held outside the machine into the role; `--signer` signs with them;
//! `--stage` writes `staged/N+1.root.json` for threshold signing with
//! `phase sign`.

use std::path::PathBuf;

use anyhow::Context;
use verifier::publish::{read_public_key, rotate_keys_with, Publisher, RotateOptions};

use super::common::{duration_arg, print_json};
use super::signer::SignerArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key directory written by `phase keygen`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Role whose keys are replaced: root, targets, snapshot or timestamp.
    #[arg(long, value_parser = ["root", "targets", "snapshot", "timestamp"])]
    pub role: String,
    /// Public key (PEM or TUF key JSON) held outside this machine that
    /// becomes one of the role's keys (repeatable; replaces generating
    /// Ed25519 keys).
    #[arg(long = "new-key", value_name = "PUBKEY")]
    pub new_keys: Vec<PathBuf>,
    /// Write the new root to KEYS/staged/N.root.json with the signatures
    /// available now; add the others with `phase sign`; `phase publish`
    /// makes it current once both thresholds are met.
    #[arg(long, conflicts_with = "repo")]
    pub stage: bool,
    #[command(flatten)]
    pub signer: SignerArgs,
    /// Number of new keys (default: as many as now).
    #[arg(long)]
    pub key_count: Option<u32>,
    /// New threshold (default: as now, at most the key count).
    #[arg(long)]
    pub threshold: Option<u64>,
    /// How long the new root stays valid.
    #[arg(long, default_value = "365d", value_parser = duration_arg)]
    pub expires: chrono::Duration,
    /// Repository to re-sign with the new root (new targets, snapshot, timestamp).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Validity of the re-signed targets, snapshot and timestamp.
    #[arg(long, default_value = "30d", value_parser = duration_arg)]
    pub metadata_expires: chrono::Duration,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = RotateOptions {
        role: args.role.clone(),
        keys: args.key_count,
        threshold: args.threshold,
        root_expires: chrono::Utc::now() + args.expires,
        new_keys: args
            .new_keys
            .iter()
            .map(|p| read_public_key(p))
            .collect::<Result<_, _>>()?,
        stage: args.stage,
    };
    let report = rotate_keys_with(&args.keys, &opts, args.signer.load()?).with_context(|| {
        format!(
            "rotating {} keys in {} failed",
            args.role,
            args.keys.display()
        )
    })?;
    let published = match &args.repo {
        Some(repo) => {
            let p = Publisher::open_with(repo, &args.keys, args.signer.load()?)
                .with_context(|| format!("opening repository {} failed", repo.display()))?;
            Some(
                p.commit(args.metadata_expires)
                    .context("re-signing the repository failed")?,
            )
        }
        None => None,
    };
    if args.json {
        return print_json(&serde_json::json!({ "root": report, "repository": published }));
    }
    if report.staged {
        println!(
            "staged root v{} for new {} keys: {} (add signatures with `phase sign --keys {} --file {}`; `phase publish` makes it current)",
            report.root_version,
            args.role,
            report.root_file.display(),
            args.keys.display(),
            report.root_file.display()
        );
        return Ok(());
    }
    println!(
        "rotated {} keys: wrote {} (root v{})",
        args.role,
        report.root_file.display(),
        report.root_version
    );
    println!("root fingerprint {}", report.fingerprint);
    if let (Some(repo), Some(p)) = (&args.repo, published) {
        println!(
            "re-signed {}: targets v{}, snapshot v{}, timestamp v{}",
            repo.display(),
            p.targets_version,
            p.snapshot_version,
            p.timestamp_version
        );
    }
    Ok(())
}
