//! The stage-1 initramfs: the exact layout `phase-init` expects.
//!
//! | path | what |
//! |---|---|
//! | `/init` | `phase-init`, 0755 |
//! | `/lib64/ld-linux-x86-64.so.2`, `/lib/<multiarch>/*.so*` | the dynamic loader and shared libraries `/init` and busybox need, if they are dynamic ([`crate::libs`]) |
//! | `/etc/phase/root.json` | the trusted TUF root |
//! | `/etc/phase/kernel-release` | `<kver>` and a newline |
//! | `/etc/phase/modules.order` | every module, one per line, relative to `/lib/modules/<kver>/`, dependencies first |
//! | `/etc/phase/modules.dep` | `<module>: <dep> <dep>...`, every module with all its dependencies (transitive, in load order) |
//! | `/etc/phase/modules.alias` | `alias <pattern> <name>`, the `alias=` lines of every module |
//! | `/etc/phase/modules.always` | the modules loaded at every boot (the list's `[always]` section) |
//! | `/lib/modules/<kver>/...` | the modules (`.ko`, decompressed) |
//! | `/lib/firmware/...` | every firmware file a module names (`firmware=`) |
//! | `/bin/busybox`, `/bin/sh -> busybox` | rescue shell only |
//! | `/dev /proc /sys /run /tmp /mnt` | empty mount points |
//! | `/dev/console` | char device 5,1 |
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, Compression, CpioError};
use std::collections::BTreeMap;

use crate::elf;
use crate::firmware::{self, AllowList, FirmwareError, FirmwareSet};
use crate::kernel::Kernel;
use crate::libs::{self, Contents, SharedObject};
use crate::modules::{self, Module, ModuleError, ModuleIndex};

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
    #[error("cannot collect the shared libraries of {what} {path}")]
    Libraries {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: crate::libs::LibError,
    },
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
    #[error("firmware")]
    Firmware(#[from] FirmwareError),
    #[error("initramfs archive")]
    Archive(#[from] CpioError),
}

/// Inputs of the stage-1 initramfs.
#[derive(Debug, Clone)]
pub struct Stage1Spec {
    /// The `phase-init` binary (static, or dynamic: its loader and
    /// libraries are carried along).
    pub init: PathBuf,
    /// The trusted root metadata.
    pub root_json: PathBuf,
    /// The rescue busybox (Debian `busybox-static`: `/bin/busybox`).
    pub busybox: PathBuf,
    /// The kernel whose modules go in.
    pub kernel: Kernel,
    /// The module list (`kernel/modules-<arch>.list`).
    pub module_list: PathBuf,
    /// The firmware files the modules may name ([`crate::firmware`]).
    pub firmware: FirmwareSet,
    /// The firmware files allowed to be missing, with reasons
    /// (`kernel/firmware-missing-<arch>.list`).
    pub firmware_allow: PathBuf,
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
    /// `modules.always` lines.
    pub always: Vec<String>,
    /// `modules.alias` entries.
    pub aliases: usize,
    /// The firmware files carried (relative to `/lib/firmware`).
    pub firmware: Vec<String>,
    /// The dynamic loader and shared libraries carried (absolute paths).
    pub libraries: Vec<String>,
    pub compression: Compression,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Stage1Error> {
    std::fs::read(path).map_err(|source| Stage1Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// An executable for the archive, with the shared objects it needs.
fn read_executable(
    what: &'static str,
    path: &Path,
) -> Result<(Vec<u8>, Vec<SharedObject>), Stage1Error> {
    let bytes = read(what, path)?;
    let linking = elf::linking(&bytes).map_err(|source| Stage1Error::NotElf {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let objects = libs::closure(path, &linking).map_err(|source| Stage1Error::Libraries {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    Ok((bytes, objects))
}

/// The mount points and device node every stage-1 carries.
const DIRS: [&str; 6] = ["dev", "proc", "sys", "run", "tmp", "mnt"];

impl Stage1 {
    /// Assemble the archive (no compression yet).
    pub fn build(spec: &Stage1Spec) -> Result<Stage1, Stage1Error> {
        let (init, init_libs) = read_executable("init binary", &spec.init)?;
        let (busybox, busybox_libs) = read_executable("busybox", &spec.busybox)?;
        let root = read("trusted root", &spec.root_json)?;
        serde_json::from_slice::<serde_json::Value>(&root).map_err(|source| {
            Stage1Error::RootNotJson {
                path: spec.root_json.clone(),
                source,
            }
        })?;
        let compression = spec.kernel.initramfs_compression()?;

        let list = modules::read_list(&spec.module_list)?;
        let index = ModuleIndex::scan(&spec.kernel.modules_dir)?;
        let closure = index.closure(&list.all())?;
        let tables = Tables::new(&closure, &list)?;
        let allow = AllowList::read(&spec.firmware_allow)?;
        let wanted: Vec<(String, Vec<String>)> = closure
            .iter()
            .map(|m| (m.name.clone(), m.firmware.clone()))
            .collect();
        let firmware = firmware::select(&spec.firmware, &allow, &wanted)?;

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
        // Both executables may need the same library: the archive takes an
        // identical entry twice as one.
        let mut libraries = Vec::new();
        for object in init_libs.into_iter().chain(busybox_libs) {
            match object.contents {
                Contents::File(bytes) => a.file(&object.path, bytes, 0o755)?,
                Contents::SameAs(first) => a.symlink(&object.path, &first)?,
            }
            if !libraries.contains(&object.path) {
                libraries.push(object.path);
            }
        }
        a.file("etc/phase/root.json", root, 0o644)?;
        // Who uid/gid 0 are: the embedded Tor client's directory checks
        // (arti's fs-mistrust) look the running user up; the C library
        // reads these files (glibc's built-in `files` source, as there is
        // no nsswitch.conf).
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
        for Module {
            rel_path, bytes, ..
        } in closure
        {
            order.push_str(&rel_path);
            order.push('\n');
            a.file(&format!("lib/modules/{kver}/{rel_path}"), bytes, 0o644)?;
            names.push(rel_path);
        }
        a.file("etc/phase/modules.order", order.into_bytes(), 0o644)?;
        a.file("etc/phase/modules.dep", tables.dep.into_bytes(), 0o644)?;
        a.file("etc/phase/modules.alias", tables.alias.into_bytes(), 0o644)?;
        let always_text: String = tables.always.iter().map(|r| format!("{r}\n")).collect();
        a.file("etc/phase/modules.always", always_text.into_bytes(), 0o644)?;
        let firmware_names: Vec<String> = firmware.keys().cloned().collect();
        for (name, bytes) in firmware {
            a.file(&format!("lib/firmware/{name}"), bytes, 0o644)?;
        }
        tracing::info!(
            modules = names.len(),
            aliases = tables.aliases,
            firmware = firmware_names.len(),
            bytes = a.content_bytes(),
            "stage-1 initramfs assembled"
        );
        Ok(Stage1 {
            archive: a,
            modules: names,
            always: tables.always,
            aliases: tables.aliases,
            firmware: firmware_names,
            libraries,
            compression,
        })
    }

    /// The compressed archive bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Stage1Error> {
        Ok(self.archive.to_bytes(self.compression)?)
    }
}

/// The text of `modules.dep`, `modules.alias` and the `modules.always` lines.
struct Tables {
    dep: String,
    alias: String,
    aliases: usize,
    always: Vec<String>,
}

impl Tables {
    /// From the closure (dependencies first) and the list it came from.
    fn new(closure: &[Module], list: &modules::ModuleList) -> Result<Tables, ModuleError> {
        let by_name: BTreeMap<&str, (usize, &Module)> = closure
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), (i, m)))
            .collect();
        for name in &list.by_device {
            let name = modules::canonical_name(name);
            // A built-in driver is not in the closure: nothing to match.
            if let Some((_, m)) = by_name.get(name.as_str()) {
                if m.aliases.is_empty() {
                    return Err(ModuleError::NoAliases { name });
                }
            }
        }
        // Every module's dependencies, transitively, as closure positions:
        // the closure lists a module after its dependencies, so theirs are
        // known when it comes.
        let mut all_deps: Vec<std::collections::BTreeSet<usize>> = Vec::new();
        let mut dep = String::new();
        let mut alias = String::new();
        let mut aliases = 0;
        for m in closure {
            let mut deps = std::collections::BTreeSet::new();
            for d in &m.depends {
                if let Some((i, _)) = by_name.get(d.as_str()) {
                    deps.insert(*i);
                    deps.extend(all_deps[*i].iter().copied());
                }
            }
            dep.push_str(&m.rel_path);
            dep.push(':');
            for i in &deps {
                dep.push(' ');
                dep.push_str(&closure[*i].rel_path);
            }
            dep.push('\n');
            all_deps.push(deps);
            for a in &m.aliases {
                alias.push_str(&format!("alias {a} {}\n", m.name));
                aliases += 1;
            }
        }
        let always = list
            .always
            .iter()
            .filter_map(|n| by_name.get(modules::canonical_name(n).as_str()))
            .map(|(_, m)| m.rel_path.clone())
            .collect();
        Ok(Tables {
            dep,
            alias,
            aliases,
            always,
        })
    }
}
