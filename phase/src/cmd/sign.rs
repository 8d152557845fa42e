//! `phase sign`: add signatures to a staged root (`KEYS/staged/N.root.json`)
//! one signer at a time, so root keys held by several people on separate
//! machines or tokens can reach the threshold. `phase publish` (or `phase
//! rotate`) makes the staged root current once the thresholds of the
//! previous root and of the staged root itself are met.

use std::path::PathBuf;

use anyhow::Context;
use verifier::publish::{sign_staged, MetadataSigner};
use verifier::SigningKey;

use super::common::print_json;
use super::signer::SignerArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Key directory holding the current root (N-1.root.json).
    #[arg(long)]
    pub keys: PathBuf,
    /// The staged metadata file, e.g. KEYS/staged/2.root.json.
    #[arg(long)]
    pub file: PathBuf,
    /// Local private key file (PKCS#8 PEM Ed25519, repeatable).
    #[arg(long = "key", value_name = "FILE")]
    pub local_keys: Vec<PathBuf>,
    #[command(flatten)]
    pub signer: SignerArgs,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut local = Vec::new();
    for path in &args.local_keys {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} failed", path.display()))?;
        local.push(
            SigningKey::from_pkcs8_pem(&pem)
                .with_context(|| format!("reading private key {} failed", path.display()))?,
        );
    }
    let external = args.signer.load()?;
    if local.is_empty() && external.is_empty() {
        anyhow::bail!("give at least one --key or --signer");
    }
    let signers: Vec<&dyn MetadataSigner> = local
        .iter()
        .map(|k| k as &dyn MetadataSigner)
        .chain(external.iter().map(|s| s.as_ref()))
        .collect();
    let report = sign_staged(&args.keys, &args.file, &signers)
        .with_context(|| format!("signing {} failed", args.file.display()))?;
    if args.json {
        return print_json(&report);
    }
    for id in &report.signed_by {
        println!("signed {} with key {id}", report.file.display());
    }
    let mut done = true;
    for (label, st) in [
        (
            format!("root v{} keys", report.version.saturating_sub(1)),
            report.previous.as_ref(),
        ),
        (format!("root v{} keys", report.version), Some(&report.own)),
    ] {
        let Some(st) = st else { continue };
        if st.met() {
            println!(
                "{label}: {} of {} signatures (threshold met)",
                st.have, st.need
            );
        } else {
            done = false;
            println!(
                "{label}: {} of {} signatures; missing keys: {}",
                st.have,
                st.need,
                st.missing.join(", ")
            );
        }
    }
    if done {
        println!(
            "thresholds met: the next `phase publish --keys {}` makes it current",
            args.keys.display()
        );
    }
    Ok(())
}
