//! `phase publish`: copy artifacts into a TUF repository directory under
//! content-addressed names and sign new targets, snapshot and timestamp
//! metadata (consistent snapshots). Serving the directory with any static
//! web server makes it a repository.

use std::path::PathBuf;

use anyhow::Context;
use verifier::publish::{Publisher, TargetSpec};
use verifier::Kind;

use super::common::{check_component, duration_arg, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (metadata/ and targets/ are created inside).
    #[arg(long)]
    pub repo: PathBuf,
    /// Key directory written by `phase keygen`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Channel name, e.g. stable.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// Architecture, e.g. x86_64.
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Kernel image, published as <channel>/<arch>/kernel.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs, published as <channel>/<arch>/initramfs.
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Root filesystem image, published as <channel>/<arch>/rootfs.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// WASM job, published as jobs/<file name> (repeatable).
    #[arg(long)]
    pub job: Vec<PathBuf>,
    /// Kernel command line of the target (stored on the kernel target).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Release version recorded on every published target (default: the new
    /// targets metadata version).
    #[arg(long)]
    pub release_version: Option<String>,
    /// How long targets, snapshot and timestamp stay valid (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = duration_arg)]
    pub expires: chrono::Duration,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    check_component("channel", &args.channel)?;
    check_component("arch", &args.arch)?;
    if args.cmdline.is_some() && args.kernel.is_none() {
        anyhow::bail!("--cmdline belongs to a kernel: give --kernel too");
    }
    let mut publisher = Publisher::open(&args.repo, &args.keys)
        .with_context(|| format!("opening repository {} failed", args.repo.display()))?;
    let version = args
        .release_version
        .clone()
        .unwrap_or_else(|| publisher.next_targets_version().to_string());
    let mut specs = Vec::new();
    let base = format!("{}/{}", args.channel, args.arch);
    for (kind, file) in [
        (Kind::Kernel, &args.kernel),
        (Kind::Initramfs, &args.initramfs),
        (Kind::Rootfs, &args.rootfs),
    ] {
        if let Some(f) = file {
            specs.push(TargetSpec {
                name: format!("{base}/{}", kind.as_str()),
                kind,
                version: version.clone(),
                cmdline: if kind == Kind::Kernel {
                    args.cmdline.clone()
                } else {
                    None
                },
                source: f.clone(),
            });
        }
    }
    for job in &args.job {
        let file = job
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("job {} has no UTF-8 file name", job.display()))?;
        check_component("job file name", file)?;
        specs.push(TargetSpec {
            name: format!("jobs/{file}"),
            kind: Kind::Job,
            version: version.clone(),
            cmdline: None,
            source: job.clone(),
        });
    }
    for spec in &specs {
        publisher.add_target(spec).with_context(|| {
            format!(
                "publishing {} from {} failed",
                spec.name,
                spec.source.display()
            )
        })?;
    }
    let report = publisher
        .commit(args.expires)
        .context("signing the repository metadata failed")?;
    if args.json {
        return print_json(&report);
    }
    for t in &report.targets {
        println!("{:<28} {} {:>12} bytes", t.name, t.sha256, t.length);
    }
    println!(
        "published {} target(s) to {}: root v{}, targets v{}, snapshot v{}, timestamp v{}",
        report.targets.len(),
        args.repo.display(),
        report.root_version,
        report.targets_version,
        report.snapshot_version,
        report.timestamp_version
    );
    Ok(())
}
