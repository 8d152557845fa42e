//! The stage-1 initramfs: the exact layout `phase-init` expects.
//!
//! | path | what |
//! |---|---|
//! | `/init` | `phase-init`, static, 0755 |
//! | `/etc/phase/root.json` | the trusted TUF root |
//! | `/etc/phase/kernel-release` | `<kver>` and a newline |
//! | `/etc/phase/modules.order` | one module per line, relative to `/lib/modules/<kver>/`, dependencies first |
//! | `/lib/modules/<kver>/...` | the modules (`.ko`, decompressed) |
//! | `/bin/busybox`, `/bin/sh -> busybox` | rescue shell only |
//! | `/dev /proc /sys /run /tmp /mnt` | empty mount points |
//! | `/dev/console` | char device 5,1 |
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, Compression, CpioError};
use crate::elf;
use crate::kernel::Kernel;
use crate::modules::{self, ModuleError, ModuleIndex};

#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not an ELF executable")]
    NotElf {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("{what} {path} is dynamically linked; the initramfs has no shared libraries (build it static, e.g. for x86_64-unknown-linux-musl)")]
    Dynamic { what: &'static str, path: PathBuf },
    #[error("trusted root {path} is not JSON")]
    RootNotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("kernel")]
    Kernel(#[from] crate::kernel::KernelError),
    #[error("kernel modules")]
    Modules(#[from] ModuleError),
    #[error("initramfs archive")]
    Archive(#[from] CpioError),
}

/// Inputs of the stage-1 initramfs.
#[derive(Debug, Clone)]
pub struct Stage1Spec {
    /// The `phase-init` binary (must be static).
    pub init: PathBuf,
    /// The trusted root metadata.
    pub root_json: PathBuf,
    /// A static busybox (Debian `busybox-static`: `/bin/busybox`).
    pub busybox: PathBuf,
    /// The kernel whose modules go in.
    pub kernel: Kernel,
    /// The module list (`kernel/modules-<arch>.list`).
    pub module_list: PathBuf,
    /// The mtime of every entry.
    pub mtime: u32,
    /// An arti configuration fragment for private mode's embedded Tor
    /// client (a private network, bridges), baked as
    /// `/etc/phase/tor-network.toml`; `None`: the public Tor network. The
    /// caller checks it (this crate does not link arti).
    pub tor_network: Option<Vec<u8>>,
}

/// What went into an initramfs.
#[derive(Debug, Clone)]
pub struct Stage1 {
    pub archive: Archive,
    /// `modules.order` lines (dependencies first).
    pub modules: Vec<String>,
    pub compression: Compression,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Stage1Error> {
    std::fs::read(path).map_err(|source| Stage1Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_static(what: &'static str, path: &Path) -> Result<Vec<u8>, Stage1Error> {
    let bytes = read(what, path)?;
    let is_static = elf::is_static_executable(&bytes).map_err(|source| Stage1Error::NotElf {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !is_static {
        return Err(Stage1Error::Dynamic {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// The mount points and device node every stage-1 carries.
const DIRS: [&str; 6] = ["dev", "proc", "sys", "run", "tmp", "mnt"];

impl Stage1 {
    /// Assemble the archive (no compression yet).
    pub fn build(spec: &Stage1Spec) -> Result<Stage1, Stage1Error> {
        let init = read_static("init binary", &spec.init)?;
        let busybox = read_static("busybox", &spec.busybox)?;
        let root = read("trusted root", &spec.root_json)?;
        serde_json::from_slice::<serde_json::Value>(&root).map_err(|source| {
            Stage1Error::RootNotJson {
                path: spec.root_json.clone(),
                source,
            }
        })?;
        let compression = spec.kernel.initramfs_compression()?;

        let wanted = modules::read_list(&spec.module_list)?;
        let index = ModuleIndex::scan(&spec.kernel.modules_dir)?;
        let closure = index.closure(&wanted)?;

        let kver = &spec.kernel.release;
        let mut a = Archive::new(spec.mtime);
        for d in DIRS {
            a.dir(d, 0o755)?;
        }
        a.dir("tmp", 0o1777)?;
        a.char_dev("dev/console", 5, 1, 0o600)?;
        a.file("init", init, 0o755)?;
        a.file("bin/busybox", busybox, 0o755)?;
        a.symlink("bin/sh", "busybox")?;
        a.file("etc/phase/root.json", root, 0o644)?;
        // Who uid/gid 0 are: the embedded Tor client's directory checks
        // (arti's fs-mistrust) look the running user up, and musl reads
        // these files directly.
        a.file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
        )?;
        a.file("etc/group", b"root:x:0:\n".to_vec(), 0o644)?;
        if let Some(net) = &spec.tor_network {
            a.file("etc/phase/tor-network.toml", net.clone(), 0o644)?;
        }
        a.file(
            "etc/phase/kernel-release",
            format!("{kver}\n").into_bytes(),
            0o644,
        )?;
        let mut order = String::new();
        let mut names = Vec::new();
        for m in closure {
            order.push_str(&m.rel_path);
            order.push('\n');
            names.push(m.rel_path.clone());
            a.file(
                &format!("lib/modules/{kver}/{}", m.rel_path),
                m.bytes,
                0o644,
            )?;
        }
        a.file("etc/phase/modules.order", order.into_bytes(), 0o644)?;
        tracing::info!(
            modules = names.len(),
            bytes = a.content_bytes(),
            "stage-1 initramfs assembled"
        );
        Ok(Stage1 {
            archive: a,
            modules: names,
            compression,
        })
    }

    /// The compressed archive bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Stage1Error> {
        Ok(self.archive.to_bytes(self.compression)?)
    }
}
