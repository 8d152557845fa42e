//! `phase image`: build the bootable GPT disk image (ESP + PHASE-CACHE), and
//! optionally a qcow2 copy. `--stage initramfs|esp` stops after writing that
//! part to `--out` (the Makefile's `initramfs` and `esp` targets).
//!
//! Steps: kernel (apt, cached under the build dir) -> stage-1 initramfs
//! (phase-init, trusted root, modules, busybox) -> ESP files (systemd-boot
//! and kernel signed with the site key when asked) -> cache directory
//! (seeded from a TUF repository when asked) -> GPT image -> qcow2.
//!
//! The ESP and disk outputs get a stick manifest beside them,
//! `<out>.manifest.json`: the initramfs, the kernel and each loader entry's
//! command line as a boot from the stick measures them into PCR 9
//! ([`super::attest::stick`], docs/attestation.md "The stick").
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use image::authenticode::SigningKey;
use image::disk::{self, DiskSpec, Qcow2Options};
use image::{esp, firmware, kernel, mok, signed, stage1};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::attest::stick::StickManifest;

mod seed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Write only the compressed stage-1 initramfs to --out.
    Initramfs,
    /// Write only the ESP (a FAT32 partition image) to --out.
    Esp,
    /// Write the whole GPT disk image to --out (default).
    Disk,
}

/// The options, boxed: `main.rs`'s command enum stays small.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    opts: Box<Opts>,
}

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Output file (disk image, or the --stage output). The ESP and disk
    /// outputs also get the stick manifest, <out>.manifest.json.
    #[arg(long)]
    out: PathBuf,
    /// The trusted TUF root baked into the initramfs as /etc/phase/root.json.
    #[arg(long, required_unless_present = "initramfs")]
    root: Option<PathBuf>,
    /// Stop after this stage.
    #[arg(long, value_enum, default_value = "disk")]
    stage: Stage,
    /// Architecture of the image (and of the seeded targets).
    #[arg(long, env = "ARCH", default_value = "x86_64")]
    arch: String,
    /// Kernel release (`uname -r`, e.g. 6.1.0-56-amd64); default: apt's
    /// candidate of Debian's linux-image-<flavour>.
    #[arg(long)]
    kernel_version: Option<String>,
    /// Build directory holding the kernel cache (`<build>/kernel/<release>`).
    #[arg(long, env = "PHASE_BUILD", default_value = "build")]
    build_dir: PathBuf,
    /// The phase-init binary that becomes /init (static, or dynamic: its
    /// loader and shared libraries go in with it).
    #[arg(long, env = "INIT_BIN", required_unless_present = "initramfs")]
    init: Option<PathBuf>,
    /// Use this prebuilt initramfs instead of building one.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Private mode's Tor network: an arti configuration fragment
    /// (`[tor_network]` authorities and fallbacks, `[bridges]`, ...) baked
    /// into the initramfs as /etc/phase/tor-network.toml. Default: the
    /// public Tor network. See docs/tor.md.
    #[arg(long, conflicts_with = "initramfs")]
    tor_network: Option<PathBuf>,
    /// Static busybox for the rescue shell (Debian busybox-static).
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// Module list (default kernel/modules-<arch>.list).
    #[arg(long)]
    modules_list: Option<PathBuf>,
    /// Firmware files the modules name that may be missing, each with its
    /// reason (default kernel/firmware-missing-<arch>.list).
    #[arg(long)]
    firmware_allow_list: Option<PathBuf>,
    /// ESP templates directory (loader.conf, entries, grub.cfg).
    #[arg(long, default_value = "esp")]
    templates: PathBuf,
    /// Write systemd-boot alone as the removable-media loader, without shim
    /// (for custom kernels; such a stick boots only with Secure Boot off).
    /// Default: Microsoft-signed shim, Debian-signed systemd-boot, fetched
    /// from Debian's packages into `<build>/signed` (docs/image.md).
    #[arg(long)]
    no_secure_boot: bool,
    /// With --no-secure-boot: the systemd-boot EFI binary.
    #[arg(
        long,
        requires = "no_secure_boot",
        default_value = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
    )]
    systemd_boot: PathBuf,
    /// The site's Secure Boot signing key (PEM): systemd-boot and the
    /// kernel on the ESP get a second signature with it, beside Debian's
    /// (`sbsign`), for machines that enrolled the site certificate as a
    /// MOK (docs/image.md, "A site's own key").
    #[arg(long, requires = "sign_cert", conflicts_with = "no_secure_boot")]
    sign_key: Option<PathBuf>,
    /// The site key's X.509 certificate (PEM); written to the ESP in DER as
    /// EFI/phase/site-mok.cer, for `mokutil --import`.
    #[arg(long, requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// Seed the cache partition from this TUF repository (metadata/ + targets/).
    #[arg(long, requires = "channel")]
    seed_repo: Option<PathBuf>,
    /// Channel whose targets are seeded.
    #[arg(long)]
    channel: Option<String>,
    /// Mode booted when nobody picks one in the menu.
    #[arg(long, default_value = "internet")]
    default_mode: String,
    /// Extra kernel parameters appended to every boot entry (e.g.
    /// "phase.debug=true").
    #[arg(long, env = "CMDLINE_EXTRA")]
    append_cmdline: Option<String>,
    /// Image size (bytes or K/M/G suffix).
    #[arg(long, env = "IMAGE_SIZE", default_value = "512M")]
    size: String,
    /// ESP size (at least 64M).
    #[arg(long, default_value = "128M")]
    esp_size: String,
    /// Also write a qcow2 copy here.
    #[arg(long)]
    qcow2: Option<PathBuf>,
    /// Compress the qcow2 clusters.
    #[arg(long, requires = "qcow2")]
    compress: bool,
    /// qcow2 preallocation: off, metadata, falloc, full.
    #[arg(long, requires = "qcow2")]
    prealloc: Option<String>,
    /// qcow2 cluster size in bytes (power of two, 512..2M).
    #[arg(long, requires = "qcow2")]
    cluster_size: Option<String>,
    /// Timestamp recorded in the archive and filesystems (default:
    /// SOURCE_DATE_EPOCH, else 2020-01-01), so builds are reproducible.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value = "1577836800")]
    epoch: u32,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

/// One progress line per step: a spinner while it runs, then its time.
struct Step {
    bar: ProgressBar,
    start: Instant,
}

impl Step {
    fn start(quiet: bool, what: &str) -> Step {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Step {
            bar,
            start: Instant::now(),
        }
    }

    fn done(self, summary: String) -> f64 {
        let secs = self.start.elapsed().as_secs_f64();
        self.bar
            .finish_with_message(format!("{summary} ({secs:.1} s)"));
        secs
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let args = *args.opts;
    let quiet = args.json;
    let mut summary = serde_json::Map::new();
    let mut timings = serde_json::Map::new();

    // Cheap checks first, before minutes of work.
    let size = disk::parse_size(&args.size).context("--size / IMAGE_SIZE")?;
    let esp_size = disk::parse_size(&args.esp_size).context("--esp-size")?;
    if !esp::MODES.contains(&args.default_mode.as_str()) {
        bail!(
            "--default-mode {:?}: expected one of {}",
            args.default_mode,
            esp::MODES.join(", ")
        );
    }
    if args.stage == Stage::Disk {
        disk::DiskLayout::compute(size, esp_size).context("--size / --esp-size")?;
    }
    let site_key = match (&args.sign_key, &args.sign_cert) {
        (Some(key), Some(cert)) => {
            mok::cert_der(cert).context("--sign-cert")?;
            Some(SigningKey {
                key: key.clone(),
                cert: cert.clone(),
            })
        }
        _ => None,
    };
    let tor_network = args
        .tor_network
        .as_deref()
        .map(read_tor_network)
        .transpose()?;

    // 1. Kernel.
    let step = Step::start(quiet, "kernel");
    let kernel = kernel::acquire(&args.build_dir, &args.arch, args.kernel_version.as_deref())
        .context("cannot get the boot kernel")?;
    timings.insert(
        "kernel".into(),
        step.done(format!("kernel {}", kernel.release)).into(),
    );
    summary.insert("kernel_release".into(), kernel.release.clone().into());

    // 2. Stage-1 initramfs.
    let step = Step::start(quiet, "stage-1 initramfs");
    let (initramfs, root_bytes) = match &args.initramfs {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the initramfs {}", path.display()))?;
            step.done(format!("initramfs {} (prebuilt)", path.display()));
            let root_bytes = match &args.root {
                Some(root) => std::fs::read(root)
                    .with_context(|| format!("cannot read the trusted root {}", root.display()))?,
                None => Vec::new(),
            };
            (bytes, root_bytes)
        }
        None => {
            // clap enforces both when --initramfs is absent.
            let (Some(root), Some(init)) = (&args.root, &args.init) else {
                bail!("--root and --init are required to build an initramfs");
            };
            let module_list = args
                .modules_list
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("kernel/modules-{}.list", args.arch)));
            let firmware_allow = args.firmware_allow_list.clone().unwrap_or_else(|| {
                PathBuf::from(format!("kernel/firmware-missing-{}.list", args.arch))
            });
            let fw =
                firmware::acquire(&args.build_dir).context("cannot get the firmware packages")?;
            summary.insert(
                "firmware_packages".into(),
                fw.packages.lines().collect::<Vec<_>>().into(),
            );
            let spec = stage1::Stage1Spec {
                init: init.clone(),
                root_json: root.clone(),
                busybox: args.busybox.clone(),
                kernel: kernel.clone(),
                module_list,
                firmware: fw,
                firmware_allow,
                mtime: args.epoch,
                tor_network: tor_network.clone(),
            };
            let s1 =
                stage1::Stage1::build(&spec).context("cannot assemble the stage-1 initramfs")?;
            let bytes = s1
                .to_bytes()
                .context("cannot write the stage-1 initramfs")?;
            let secs = step.done(format!(
                "initramfs: {} modules, {} aliases, {} firmware files, {} shared libraries, {} bytes",
                s1.modules.len(),
                s1.aliases,
                s1.firmware.len(),
                s1.libraries.len(),
                bytes.len()
            ));
            timings.insert("initramfs".into(), secs.into());
            summary.insert("modules".into(), s1.modules.clone().into());
            summary.insert("firmware".into(), s1.firmware.clone().into());
            summary.insert("libraries".into(), s1.libraries.clone().into());
            let root_bytes = std::fs::read(root)
                .with_context(|| format!("cannot read the trusted root {}", root.display()))?;
            (bytes, root_bytes)
        }
    };
    summary.insert("initramfs_bytes".into(), initramfs.len().into());
    if args.stage == Stage::Initramfs {
        write_atomic(&args.out, &initramfs)?;
        return finish(&args, summary, timings);
    }

    // The boot loaders: shim and signed systemd-boot, fetched once.
    let loaders = if args.no_secure_boot {
        summary.insert("secure_boot".into(), false.into());
        esp::Loaders::Plain {
            systemd_boot: args.systemd_boot.clone(),
        }
    } else {
        let step = Step::start(quiet, "signed boot loaders");
        let set = signed::acquire(&args.build_dir, &args.arch).context(
            "cannot get the signed boot loaders (or pass --no-secure-boot for an unsigned stick)",
        )?;
        let packages: Vec<&str> = set.packages.lines().collect();
        let secs = step.done(format!("signed boot loaders: {}", packages.join(", ")));
        timings.insert("signed".into(), secs.into());
        summary.insert("secure_boot".into(), true.into());
        summary.insert("signed_packages".into(), packages.into());
        esp::Loaders::SecureBoot(set)
    };

    // 3. ESP contents.
    let mut esp_files = esp::assemble(&esp::EspSpec {
        templates: args.templates.clone(),
        loaders,
        kernel: kernel.vmlinuz.clone(),
        kernel_release: kernel.release.clone(),
        initramfs: initramfs.clone(),
        default_mode: args.default_mode.clone(),
        cmdline_extra: args.append_cmdline.clone().unwrap_or_default(),
    })
    .context("cannot assemble the ESP")?;
    if let Some(site) = &site_key {
        let step = Step::start(quiet, "signing with the site key");
        mok::sign_esp(&mut esp_files, site).context("cannot sign the ESP with the site key")?;
        let secs = step.done(format!(
            "signed {} with the site key, certificate {}",
            mok::SIGNED_PATHS.join(" and "),
            mok::CERT_PATH
        ));
        timings.insert("site_key".into(), secs.into());
        summary.insert("site_key_signed".into(), mok::SIGNED_PATHS.to_vec().into());
        summary.insert("site_cert".into(), mok::CERT_PATH.into());
    }
    summary.insert("esp_content_bytes".into(), esp_files.total_bytes().into());
    let manifest =
        StickManifest::of_esp(&esp_files.files).context("cannot make the stick manifest")?;

    // The image identity: everything that went in.
    let mut h = Sha256::new();
    for (path, data) in &esp_files.files {
        h.update(path.as_bytes());
        h.update(Sha256::digest(data));
    }
    h.update(&root_bytes);
    h.update(size.to_le_bytes());
    let seed: [u8; 32] = h.finalize().into();
    let spec = DiskSpec {
        size,
        esp_size,
        seed,
        mtime: args.epoch,
    };

    if args.stage == Stage::Esp {
        let step = Step::start(quiet, "ESP");
        disk::write_esp_image(&args.out, &spec, &esp_files)
            .context("cannot write the ESP image")?;
        timings.insert(
            "esp".into(),
            step.done(format!("ESP {}", args.out.display())).into(),
        );
        write_manifest(&args.out, &manifest, &mut summary)?;
        return finish(&args, summary, timings);
    }

    // 4. Cache partition contents.
    let staging = tempfile::Builder::new()
        .prefix(".phase-cache-")
        .tempdir_in(parent_dir(&args.out))
        .context("cannot create the cache staging directory")?;
    if let Some(repo) = &args.seed_repo {
        let step = Step::start(quiet, "seeding the cache");
        let channel = args.channel.as_deref().unwrap_or("stable");
        if root_bytes.is_empty() {
            bail!("--seed-repo needs --root (the trusted root the seed is verified against)");
        }
        let seeded = seed::seed(repo, &root_bytes, channel, &args.arch, staging.path())
            .with_context(|| format!("cannot seed the cache from {}", repo.display()))?;
        timings.insert(
            "seed".into(),
            step.done(format!("cache seeded: {} objects", seeded.len()))
                .into(),
        );
        summary.insert("seeded".into(), seeded.into());
    }

    // 5. Disk image.
    let step = Step::start(quiet, "disk image");
    let layout = disk::write_image(&args.out, &spec, &esp_files, Some(staging.path()))
        .with_context(|| format!("cannot write the disk image {}", args.out.display()))?;
    timings.insert(
        "disk".into(),
        step.done(format!(
            "disk image {} ({} bytes)",
            args.out.display(),
            size
        ))
        .into(),
    );
    summary.insert("layout".into(), serde_json::to_value(layout)?);
    write_manifest(&args.out, &manifest, &mut summary)?;

    // 6. qcow2.
    if let Some(q) = &args.qcow2 {
        let step = Step::start(quiet, "qcow2");
        let cluster_size = args
            .cluster_size
            .as_deref()
            .map(disk::parse_size)
            .transpose()
            .context("--cluster-size")?;
        let opts = Qcow2Options {
            compress: args.compress,
            prealloc: args.prealloc.clone(),
            cluster_size,
        };
        disk::convert_qcow2(&args.out, q, &opts)
            .with_context(|| format!("cannot write {}", q.display()))?;
        timings.insert(
            "qcow2".into(),
            step.done(format!("qcow2 {}", q.display())).into(),
        );
        summary.insert("qcow2".into(), q.display().to_string().into());
    }
    finish(&args, summary, timings)
}

/// `--tor-network`: the file's bytes, once arti has accepted them as its
/// configuration (a typo fails here, not at a private boot).
fn read_tor_network(path: &Path) -> anyhow::Result<Vec<u8>> {
    // The directories are never used: only the parsed fragment is kept.
    let cfg = fetcher::tor::TorConfig::in_dir(Path::new("/nonexistent"))
        .with_network_file(path)
        .context("--tor-network")?;
    Ok(cfg.network.unwrap_or_default().into_bytes())
}

/// The stick manifest of the image `out`: `<out>.manifest.json`.
pub fn manifest_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".manifest.json");
    PathBuf::from(p)
}

/// Writes `<out>.manifest.json` and names it (and the stick image id) in
/// the summary.
fn write_manifest(
    out: &Path,
    manifest: &StickManifest,
    summary: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let path = manifest_path(out);
    let mut bytes =
        serde_json::to_vec_pretty(manifest).context("encoding the stick manifest failed")?;
    bytes.push(b'\n');
    write_atomic(&path, &bytes)?;
    summary.insert("manifest".into(), path.display().to_string().into());
    summary.insert("stick_image".into(), manifest.id.clone().into());
    Ok(())
}

fn parent_dir(p: &Path) -> &Path {
    p.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn write_atomic(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(parent_dir(out))
        .with_context(|| format!("cannot create a file next to {}", out.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("cannot write {}", out.display()))?;
    // tempfile creates 0600; an initramfs is an ordinary output file.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("cannot write {}", out.display()))?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn finish(
    args: &Opts,
    mut summary: serde_json::Map<String, serde_json::Value>,
    timings: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    summary.insert("out".into(), args.out.display().to_string().into());
    summary.insert("seconds".into(), timings.into());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("wrote {}", args.out.display());
    }
    Ok(())
}
