//! `phase keygen`: Ed25519 keys for root, targets, snapshot and timestamp,
//! and a signed `1.root.json` (plus a `root.json` copy) in one directory.
//! Private keys are PKCS#8 PEM files with mode 0600.

use std::path::PathBuf;

use anyhow::Context;
use verifier::publish::{generate_keys, KeygenOptions};

use super::common::{duration_arg, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the keys and 1.root.json (created; must hold no root yet).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of root keys.
    #[arg(long, default_value_t = 1)]
    pub root_keys: u32,
    /// Root keys needed to sign a root (1..=root-keys).
    #[arg(long, default_value_t = 1)]
    pub root_threshold: u64,
    /// How long the root stays valid (e.g. 365d, 2y).
    #[arg(long, default_value = "365d", value_parser = duration_arg)]
    pub expires: chrono::Duration,
    /// Write `consistent_snapshot: false` (plain metadata and target names).
    #[arg(long)]
    pub no_consistent_snapshot: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = KeygenOptions {
        root_keys: args.root_keys,
        root_threshold: args.root_threshold,
        root_expires: chrono::Utc::now() + args.expires,
        consistent_snapshot: !args.no_consistent_snapshot,
    };
    let report = generate_keys(&args.out, &opts)
        .with_context(|| format!("generating keys in {} failed", args.out.display()))?;
    if args.json {
        return print_json(&report);
    }
    println!(
        "wrote {} (root v{})",
        report.root_file.display(),
        report.root_version
    );
    for (role, ids) in &report.roles {
        let short: Vec<&str> = ids.iter().map(|i| &i[..16]).collect();
        println!("  {role:<9} {} key(s): {}", ids.len(), short.join(" "));
    }
    println!(
        "root fingerprint {} (short {})",
        report.fingerprint,
        &report.fingerprint[..16]
    );
    println!(
        "private keys: {}/*.key (mode 0600) - keep them offline",
        args.out.display()
    );
    Ok(())
}
