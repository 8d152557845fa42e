//! The boot kernel: Debian's `linux-image-<flavour>` package, downloaded
//! with `apt-get download`, unpacked with `dpkg-deb -x` under
//! `<build>/kernel/<release>/` (never installed on the host), one directory
//! per kernel release side by side. `<build>/kernel/current` names the
//! release the last acquisition resolved to (what `make kernel` prepared).
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Compression;
use crate::deb::{self, io, Apt, DebError, Staging};
use crate::util::run;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("architecture {0:?} is not supported yet (only x86_64)")]
    UnsupportedArch(String),
    #[error("kernel release {release:?} is not unpacked under {dir} (run `make kernel` or pass a version apt can download)")]
    NotCached { release: String, dir: PathBuf },
    #[error("no kernel has been prepared under {0} (run `make kernel`)")]
    NoCurrent(PathBuf),
    #[error("cannot resolve the Debian package {package} to a versioned kernel package")]
    Resolve {
        package: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{package} depends on no linux-image-* package (Depends: {depends:?})")]
    NoVersionedDepends { package: String, depends: String },
    #[error("{dir} does not hold an unpacked kernel: missing {what}")]
    Incomplete { dir: PathBuf, what: String },
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(
        "kernel {release} cannot unpack a zstd initramfs (CONFIG_RD_ZSTD is not set in {config})"
    )]
    NoZstd { release: String, config: PathBuf },
}

/// An unpacked kernel release.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of this kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The unpacked package root (`<build>/kernel/<release>`).
    pub root: PathBuf,
    /// The EFI-stub bzImage.
    pub vmlinuz: PathBuf,
    /// The kernel's `.config`.
    pub config: PathBuf,
    /// `.../lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

/// Debian's kernel flavour for an architecture name as the project spells it.
pub fn debian_flavour(arch: &str) -> Result<&'static str, KernelError> {
    match arch {
        "x86_64" | "amd64" => Ok("amd64"),
        other => Err(KernelError::UnsupportedArch(other.to_owned())),
    }
}

/// The directory holding every cached release.
pub fn cache_dir(build: &Path) -> PathBuf {
    build.join("kernel")
}

impl Kernel {
    /// Open the kernel unpacked in `root` for `release`.
    pub fn open(root: &Path, release: &str) -> Result<Kernel, KernelError> {
        let incomplete = |what: &str| KernelError::Incomplete {
            dir: root.to_path_buf(),
            what: what.to_owned(),
        };
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
        let config = root.join("boot").join(format!("config-{release}"));
        if !vmlinuz.is_file() {
            return Err(incomplete(&format!("boot/vmlinuz-{release}")));
        }
        if !config.is_file() {
            return Err(incomplete(&format!("boot/config-{release}")));
        }
        // Debian up to bookworm: /lib/modules; later: /usr/lib/modules.
        let modules_dir = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| root.join(d).join(release))
            .find(|d| d.is_dir())
            .ok_or_else(|| incomplete(&format!("lib/modules/{release}")))?;
        Ok(Kernel {
            release: release.to_owned(),
            root: root.to_path_buf(),
            vmlinuz,
            config,
            modules_dir,
        })
    }

    /// The value of `CONFIG_<key>` (`y`, `m`, a string...), `None` if unset.
    pub fn config_value(&self, key: &str) -> Result<Option<String>, KernelError> {
        let text =
            std::fs::read_to_string(&self.config).map_err(io::<KernelError>(&self.config))?;
        let prefix = format!("{key}=");
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim_matches('"').to_owned()))
    }

    /// The initramfs compression this kernel can unpack: zstd, required.
    pub fn initramfs_compression(&self) -> Result<Compression, KernelError> {
        match self.config_value("CONFIG_RD_ZSTD")?.as_deref() {
            Some("y") => Ok(Compression::Zstd(INITRAMFS_ZSTD_LEVEL)),
            _ => Err(KernelError::NoZstd {
                release: self.release.clone(),
                config: self.config.clone(),
            }),
        }
    }
}

/// zstd level for the initramfs: the knee of size against time (measured
/// on the stage-1 cpio in docs/image.md: level 9 takes 0.8 s, 19 about 20 s
/// for 12 % less); the kernel decompresses any level equally fast.
pub const INITRAMFS_ZSTD_LEVEL: i32 = 9;

/// The cached kernel `release` under `build`, without touching the network.
pub fn cached(build: &Path, release: &str) -> Result<Kernel, KernelError> {
    let root = cache_dir(build).join(release);
    if !root.is_dir() {
        return Err(KernelError::NotCached {
            release: release.to_owned(),
            dir: cache_dir(build),
        });
    }
    Kernel::open(&root, release)
}

/// The release `make kernel` (or the last [`acquire`]) prepared.
pub fn current(build: &Path) -> Result<Kernel, KernelError> {
    match deb::read_current(&cache_dir(build))? {
        Some(release) => cached(build, &release),
        None => Err(KernelError::NoCurrent(cache_dir(build))),
    }
}

/// The versioned package the meta package `linux-image-<flavour>` points at,
/// as apt's candidate (from the local package lists: no network).
pub fn resolve_default(flavour: &str) -> Result<String, KernelError> {
    let package = format!("linux-image-{flavour}");
    let out = run(Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .arg(&package))
    .map_err(|e| KernelError::Resolve {
        package: package.clone(),
        source: Box::new(e),
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    versioned_from_depends(&depends).ok_or(KernelError::NoVersionedDepends { package, depends })
}

/// `linux-image-6.1.0-56-amd64 (= 6.1.192-2)` -> `linux-image-6.1.0-56-amd64`.
fn versioned_from_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_owned)
}

/// Get kernel `release` (or apt's default for `arch` when `None`): from the
/// cache when present, otherwise download the meta and versioned packages
/// with `apt-get download` and unpack the versioned one. Records the result
/// in `<build>/kernel/current`.
pub fn acquire(build: &Path, arch: &str, release: Option<&str>) -> Result<Kernel, KernelError> {
    let flavour = debian_flavour(arch)?;
    let dir = cache_dir(build);
    let (package, release) = match release {
        Some(r) => (format!("linux-image-{r}"), r.to_owned()),
        None => {
            let package = resolve_default(flavour)?;
            let release = package["linux-image-".len()..].to_owned();
            (package, release)
        }
    };
    let root = dir.join(&release);
    if !root.is_dir() {
        let staging = Staging::new(&dir)?;
        let unpacked = staging.fetch(&package, Apt::Host)?;
        // Check before publishing: a half-unpacked tree never becomes visible.
        Kernel::open(&unpacked.root, &release)?;
        staging.publish(&unpacked.root, &release)?;
        tracing::info!(%release, dir = %root.display(), "kernel unpacked");
    }
    let kernel = Kernel::open(&root, &release)?;
    deb::write_current(&dir, &release)?;
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_resolution() {
        assert_eq!(
            versioned_from_depends("linux-image-6.1.0-56-amd64 (= 6.1.192-2)").as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            versioned_from_depends("foo, linux-image-6.12.48+deb13-amd64 (= 6.12.48-1)").as_deref(),
            Some("linux-image-6.12.48+deb13-amd64")
        );
        assert_eq!(versioned_from_depends(""), None);
    }

    #[test]
    fn arm64_is_named_and_refused() {
        let e = debian_flavour("arm64").unwrap_err();
        assert!(e.to_string().contains("arm64"), "{e}");
    }
}
