//! `phase keygen`: Ed25519 keys for root, targets, snapshot and timestamp,
//! and a signed `1.root.json` (plus a `root.json` copy) in one directory.
//! Private keys are PKCS#8 PEM files with mode 0600. With `--public-key`,
//! it instead turns the PEM public key of a key held elsewhere (token, HSM,
//! KMS) into a TUF key JSON file for `--new-key` / `--signer`.

use std::path::PathBuf;

use anyhow::Context;
use verifier::publish::{generate_keys, public_key_from_pem, KeygenOptions, SCHEMES};

use super::common::{duration_arg, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the keys and 1.root.json (created; must hold no root
    /// yet); with --public-key, the TUF key JSON file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// PEM public key (SubjectPublicKeyInfo) of a key held outside this
    /// machine: write its TUF key JSON to --out and print its key id.
    #[arg(long, value_name = "PEM")]
    pub public_key: Option<PathBuf>,
    /// Scheme for --public-key (default: ed25519, ecdsa-sha2-nistp256/384
    /// by curve, rsassa-pss-sha256 for RSA).
    #[arg(long, value_parser = SCHEMES, requires = "public_key")]
    pub scheme: Option<String>,
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
    if let Some(pem_path) = &args.public_key {
        return import_public(&args, pem_path);
    }
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

fn import_public(args: &Args, pem_path: &std::path::Path) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(pem_path)
        .with_context(|| format!("reading {} failed", pem_path.display()))?;
    let key = public_key_from_pem(&pem, args.scheme.as_deref())
        .map_err(|why| anyhow::anyhow!("public key {}: {why}", pem_path.display()))?;
    let keyid = verifier::crypto::key_id(&key)?;
    let mut bytes = serde_json::to_vec_pretty(&key)?;
    bytes.push(b'\n');
    if args.out.exists() {
        anyhow::bail!("{} exists; refusing to overwrite it", args.out.display());
    }
    verifier::publish::write_atomic(&args.out, &bytes, 0o644)?;
    if args.json {
        return print_json(&serde_json::json!({ "keyid": keyid, "key": key, "file": args.out }));
    }
    println!("wrote {} ({} key {keyid})", args.out.display(), key.scheme);
    Ok(())
}
