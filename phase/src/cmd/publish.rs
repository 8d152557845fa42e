//! `phase publish`: copy artifacts into a TUF repository directory under
//! content-addressed names and sign new targets, snapshot and timestamp
//! metadata (consistent snapshots). Serving the directory with any static
//! web server makes it a repository.
//!
//! A rootfs also gets its dm-verity hash tree, published as the sibling
//! target `<channel>/<arch>/rootfs.verity`, with the parameters and root
//! hash in the rootfs target's signed `custom.verity` (docs/verity.md).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest as _, Sha256};
use verifier::publish::{Publisher, TargetSpec};
use verifier::{Kind, Verity};

use super::common::{check_component, duration_arg, print_json};
use super::signer::SignerArgs;

mod kernel_signature;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository directory (metadata/ and targets/ are created inside).
    #[arg(long)]
    pub repo: PathBuf,
    /// Key directory written by `phase keygen` (its newest root, its
    /// private keys, and a staged root that is made current first if it
    /// has its signatures).
    #[arg(long)]
    pub keys: PathBuf,
    #[command(flatten)]
    pub signer: SignerArgs,
    /// Channel name, e.g. stable.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// Architecture, e.g. x86_64.
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Kernel image, published as <channel>/<arch>/kernel. Its
    /// Authenticode signature is read first: a kernel without one (or not
    /// a PE/EFI image at all) is published with a warning, because
    /// machines with Secure Boot on refuse to kexec it.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Refuse to publish a --kernel that has no Authenticode signature (or
    /// is not a PE/EFI image): an error naming the file, and nothing is
    /// published. Without --kernel it has nothing to check.
    #[arg(long)]
    pub require_signed_kernel: bool,
    /// Initramfs, published as <channel>/<arch>/initramfs.
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Root filesystem image, published as <channel>/<arch>/rootfs.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// WASM job FILE (`NAME.wasm`), published as jobs/NAME.wasm
    /// (repeatable). The --job-* options below apply to a single --job.
    #[arg(long)]
    pub job: Vec<PathBuf>,
    /// Argument passed to the job after argv[0] (repeatable, in order).
    #[arg(long = "job-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub job_args: Vec<String>,
    /// Environment variable KEY=VALUE for the job (repeatable).
    #[arg(long = "job-env", value_name = "KEY=VALUE")]
    pub job_env: Vec<String>,
    /// Memory limit of the job in MiB (default: the node's, 64 MiB).
    #[arg(long, value_name = "MIB")]
    pub job_memory_mib: Option<u64>,
    /// CPU limit of the job in wasmtime fuel units, about one per WASM
    /// instruction (default: the node's, 10^10).
    #[arg(long, value_name = "FUEL")]
    pub job_fuel: Option<u64>,
    /// Wall-clock deadline of the job in seconds (default: the node's, 60).
    #[arg(long, value_name = "SECONDS")]
    pub job_deadline_s: Option<u64>,
    /// Salt of the rootfs's dm-verity hash tree, in hex (at most 256 bytes;
    /// "" for none). Default: 32 random bytes, as `veritysetup format` uses.
    #[arg(long, value_name = "HEX", requires = "rootfs")]
    pub verity_salt: Option<String>,
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
    /// Chunk size in KiB of the signed chunk lists (a power of two from 64
    /// KiB to 64 MiB). Default: 512 KiB for artifacts up to 64 MiB, growing
    /// with the largest artifact of this publish so it has at most 128
    /// chunks, at most 4 MiB (docs/fetcher.md "Chunk size").
    #[arg(long, value_name = "KIB")]
    pub chunk_kib: Option<u64>,
    /// Re-sign only snapshot and timestamp with new versions and --expires
    /// (no artifacts; needs only the snapshot and timestamp keys): the
    /// scheduled job of an offline-root setup.
    #[arg(long, conflicts_with_all = ["kernel", "initramfs", "rootfs", "job", "cmdline", "release_version", "verity_salt"])]
    pub refresh: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Smallest and largest automatic chunk size, and the chunk count the
/// automatic choice aims for at least.
const AUTO_CHUNK_MIN: u64 = 512 << 10;
const AUTO_CHUNK_MAX: u64 = 4 << 20;
const AUTO_CHUNKS: u64 = 128;

/// The automatic chunk size for artifacts whose largest is `largest` bytes:
/// the smallest power of two from [`AUTO_CHUNK_MIN`] giving at most
/// [`AUTO_CHUNKS`] chunks, capped at [`AUTO_CHUNK_MAX`]. Small chunks let a
/// fleet re-share an artifact sooner (a chunk is re-shared only once it is
/// complete and verified); the cap bounds the chunk list in targets.json
/// (about 70 bytes a chunk) and the requests per object.
pub fn auto_chunk_size(largest: u64) -> u64 {
    let want = largest.div_ceil(AUTO_CHUNKS).max(1);
    want.next_power_of_two()
        .clamp(AUTO_CHUNK_MIN, AUTO_CHUNK_MAX)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    check_component("channel", &args.channel)?;
    check_component("arch", &args.arch)?;
    if args.cmdline.is_some() && args.kernel.is_none() {
        anyhow::bail!("--cmdline belongs to a kernel: give --kernel too");
    }
    let kernel_finding = args
        .kernel
        .as_deref()
        .map(|k| kernel_signature::check(k, args.require_signed_kernel))
        .transpose()?;
    let chunk_size = match args.chunk_kib {
        Some(k) => {
            anyhow::ensure!(
                k.is_power_of_two() && (64..=65536).contains(&k),
                "--chunk-kib {k}: must be a power of two from 64 to 65536"
            );
            k << 10
        }
        None => {
            let mut largest = 0;
            for f in [&args.kernel, &args.initramfs, &args.rootfs]
                .into_iter()
                .flatten()
                .chain(&args.job)
            {
                let len = std::fs::metadata(f)
                    .with_context(|| format!("reading {} failed", f.display()))?
                    .len();
                largest = largest.max(len);
            }
            auto_chunk_size(largest)
        }
    };
    // The tree is built before anything is written, so a rootfs it cannot
    // cover fails the publish early.
    let verity = match &args.rootfs {
        Some(f) => {
            let salt = match &args.verity_salt {
                Some(hex) => hex.clone(),
                None => hex::encode(rand::random::<[u8; verity::DEFAULT_SALT_SIZE]>()),
            };
            let params = verity::Params::with_hex_salt(
                verity::DEFAULT_BLOCK_SIZE,
                verity::DEFAULT_BLOCK_SIZE,
                &salt,
            )
            .context("--verity-salt")?;
            let tree_name = format!("{}/{}/rootfs.verity", args.channel, args.arch);
            Some(RootfsVerity::build(f, params, tree_name)?)
        }
        None => None,
    };
    let external = args.signer.load()?;
    let mut publisher = Publisher::open_with(&args.repo, &args.keys, external)
        .with_context(|| format!("opening repository {} failed", args.repo.display()))?
        .chunk_size(chunk_size);
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
    let job_meta = job_metadata(&args)?;
    if !job_meta.is_empty() && args.job.len() != 1 {
        anyhow::bail!(
            "--job-arg, --job-env, --job-memory-mib, --job-fuel and --job-deadline-s describe one job: give exactly one --job (got {})",
            args.job.len()
        );
    }
    let mut job_specs = Vec::new();
    for job in &args.job {
        let file = job
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("job {} has no UTF-8 file name", job.display()))?;
        check_component("job file name", file)?;
        let stem = file.strip_suffix(".wasm").unwrap_or("");
        if stem.is_empty() || stem.starts_with('.') {
            anyhow::bail!("job file name {file:?} must be NAME.wasm (the job is jobs/NAME.wasm)");
        }
        job_specs.push(TargetSpec {
            name: format!("jobs/{file}"),
            kind: Kind::Job,
            version: version.clone(),
            cmdline: None,
            source: job.clone(),
        });
    }
    for spec in &job_specs {
        publisher
            .add_target_with(spec, job_meta.clone())
            .with_context(|| {
                format!(
                    "publishing {} from {} failed",
                    spec.name,
                    spec.source.display()
                )
            })?;
    }
    for spec in &specs {
        let failed = || {
            format!(
                "publishing {} from {} failed",
                spec.name,
                spec.source.display()
            )
        };
        match (&verity, spec.kind) {
            (Some(v), Kind::Rootfs) => {
                let mut extra = serde_json::Map::new();
                extra.insert("verity".into(), v.meta.to_json());
                publisher
                    .add_target_with(spec, extra)
                    .with_context(failed)?;
                let published = publisher.added().last().map(|t| t.sha256.as_str());
                anyhow::ensure!(
                    published == Some(v.data_sha256.as_str()),
                    "{} changed while it was being published (its dm-verity tree covers other bytes)",
                    spec.source.display()
                );
                let tree = TargetSpec {
                    name: v.meta.tree.clone(),
                    kind: Kind::Verity,
                    version: version.clone(),
                    cmdline: None,
                    source: v.file.path().to_path_buf(),
                };
                publisher
                    .add_target(&tree)
                    .with_context(|| format!("publishing {} failed", tree.name))?;
            }
            _ => publisher.add_target(spec).with_context(failed)?,
        }
    }
    let report = if args.refresh {
        publisher.refresh(args.expires)
    } else {
        publisher.commit(args.expires)
    }
    .context("signing the repository metadata failed")?;
    if let Some(warning) = kernel_finding.as_ref().and_then(|f| f.warning.as_ref()) {
        eprintln!("phase: warning: {warning}");
    }
    if args.json {
        let mut json = serde_json::to_value(&report).context("serializing the report failed")?;
        if let (Some(found), Some(obj)) = (&kernel_finding, json.as_object_mut()) {
            obj.insert(
                "kernel_signature".into(),
                serde_json::to_value(found.signature)?,
            );
        }
        return print_json(&json);
    }
    for t in &report.targets {
        println!("{:<28} {} {:>12} bytes", t.name, t.sha256, t.length);
    }
    if let Some(v) = &verity {
        let salt = if v.meta.salt.is_empty() {
            "-".to_string()
        } else {
            v.meta.salt_hex()
        };
        println!(
            "{base}/rootfs dm-verity root hash {}, salt {salt}, tree {}",
            v.meta.root_hex(),
            v.meta.tree
        );
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

/// A rootfs's dm-verity hash tree, ready to publish.
struct RootfsVerity {
    /// The signed parameters (`custom.verity` of the rootfs target).
    meta: Verity,
    /// The hash device: superblock, then the tree.
    file: tempfile::NamedTempFile,
    /// SHA-256 of the bytes the tree was built from.
    data_sha256: String,
}

impl RootfsVerity {
    /// Reads `rootfs` once, building its tree and its SHA-256.
    fn build(rootfs: &Path, params: verity::Params, tree: String) -> anyhow::Result<Self> {
        let block = params.data_block_size();
        let len = std::fs::metadata(rootfs)
            .with_context(|| format!("reading {} failed", rootfs.display()))?
            .len();
        if len == 0 || len % u64::from(block) != 0 {
            anyhow::bail!(
                "--rootfs {}: {len} bytes is not a whole, nonzero number of {block}-byte \
                 dm-verity data blocks; pad the image (mksquashfs pads to 4 KiB by default; \
                 truncate -s %{block} FILE pads with zeros)",
                rootfs.display()
            );
        }
        let mut src = std::fs::File::open(rootfs)
            .with_context(|| format!("reading {} failed", rootfs.display()))?;
        let mut builder = verity::Builder::new(params);
        let mut whole = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src
                .read(&mut buf)
                .with_context(|| format!("reading {} failed", rootfs.display()))?;
            if n == 0 {
                break;
            }
            builder.update(&buf[..n]);
            whole.update(&buf[..n]);
        }
        let tree_built = builder.finish().with_context(|| {
            format!("building the dm-verity tree of {} failed", rootfs.display())
        })?;
        let uuid = tree_uuid(&tree_built);
        let mut file = tempfile::NamedTempFile::new()
            .context("creating a temporary file for the dm-verity tree failed")?;
        {
            let mut out = std::io::BufWriter::new(file.as_file_mut());
            tree_built
                .write(&mut out, verity::Layout::Superblock { uuid })
                .and_then(|_| out.flush())
                .context("writing the dm-verity tree failed")?;
        }
        let p = tree_built.params();
        let meta = Verity {
            version: verity::VERSION,
            hash_algorithm: verity::HASH_ALGORITHM.into(),
            data_block_size: p.data_block_size(),
            hash_block_size: p.hash_block_size(),
            data_blocks: tree_built.data_blocks(),
            salt: p.salt().to_vec(),
            root_hash: *tree_built.root_hash(),
            tree,
        };
        Ok(RootfsVerity {
            meta,
            file,
            data_sha256: hex::encode(whole.finalize()),
        })
    }
}

/// The superblock's UUID, derived from the salt and root hash so the same
/// rootfs and salt always give the same tree target (an RFC 9562 version 8
/// UUID).
fn tree_uuid(tree: &verity::Tree) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"phase-boot dm-verity uuid\0");
    h.update(tree.params().salt());
    h.update(tree.root_hash());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// The signed custom metadata the --job-* options ask for (`args`, `env`,
/// `limits`; the format plasmd reads, docs/plasmd.md). Empty when none is
/// given.
fn job_metadata(args: &Args) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for a in &args.job_args {
        if a.contains('\0') {
            anyhow::bail!("--job-arg {a:?} contains a NUL byte");
        }
    }
    if !args.job_args.is_empty() {
        m.insert("args".into(), serde_json::json!(args.job_args));
    }
    let mut env = serde_json::Map::new();
    for kv in &args.job_env {
        let Some((k, v)) = kv.split_once('=') else {
            anyhow::bail!("--job-env {kv:?} must be KEY=VALUE");
        };
        let key_ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            anyhow::bail!(
                "--job-env key {k:?} must be letters, digits and '_', not starting with a digit"
            );
        }
        if k.starts_with("PHASE_") {
            anyhow::bail!(
                "--job-env key {k:?}: PHASE_* variables are set by plasmd, not by the job"
            );
        }
        if v.contains('\0') {
            anyhow::bail!("--job-env {k}: the value contains a NUL byte");
        }
        if env.insert(k.to_string(), v.into()).is_some() {
            anyhow::bail!("--job-env key {k:?} is given twice");
        }
    }
    if !env.is_empty() {
        m.insert("env".into(), serde_json::Value::Object(env));
    }
    let mut limits = serde_json::Map::new();
    if let Some(mib) = args.job_memory_mib {
        let bytes = mib
            .checked_mul(1 << 20)
            .filter(|&b| b > 0)
            .with_context(|| format!("--job-memory-mib {mib} is out of range"))?;
        limits.insert("memory_bytes".into(), bytes.into());
    }
    if let Some(fuel) = args.job_fuel {
        anyhow::ensure!(fuel > 0, "--job-fuel must be at least 1");
        limits.insert("fuel".into(), fuel.into());
    }
    if let Some(s) = args.job_deadline_s {
        let ms = s
            .checked_mul(1000)
            .filter(|&ms| ms > 0)
            .with_context(|| format!("--job-deadline-s {s} is out of range"))?;
        limits.insert("deadline_ms".into(), ms.into());
    }
    if !limits.is_empty() {
        m.insert("limits".into(), serde_json::Value::Object(limits));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::auto_chunk_size;

    #[test]
    fn auto_chunk_size_aims_for_128_chunks_between_512_kib_and_4_mib() {
        const MIB: u64 = 1 << 20;
        assert_eq!(auto_chunk_size(0), MIB / 2);
        assert_eq!(auto_chunk_size(5 * MIB), MIB / 2);
        assert_eq!(auto_chunk_size(64 * MIB), MIB / 2);
        assert_eq!(auto_chunk_size(64 * MIB + 1), MIB);
        assert_eq!(auto_chunk_size(128 * MIB), MIB);
        assert_eq!(auto_chunk_size(200 * MIB), 2 * MIB);
        assert_eq!(auto_chunk_size(512 * MIB), 4 * MIB);
        assert_eq!(auto_chunk_size(1 << 40), 4 * MIB);
    }
}
