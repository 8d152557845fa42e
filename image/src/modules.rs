//! Kernel modules: the list the initramfs carries, their dependency closure
//! (from each module's ELF `.modinfo` `depends=`, because Debian's kernel
//! package ships no `modules.dep`), and the load order.
//!
//! Modules may be packaged as `.ko`, `.ko.xz` or `.ko.zst`; they are always
//! returned decompressed (`.ko`), so the initramfs needs no
//! `CONFIG_MODULE_DECOMPRESS` and `finit_module` gets plain ELF.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::elf::{self, ElfError};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module list {list}: line {line}: {text:?} is not a module name")]
    BadListLine {
        list: PathBuf,
        line: usize,
        text: String,
    },
    #[error("module {name:?} (from the module list) is not in {dir} nor built into the kernel")]
    Unknown { name: String, dir: PathBuf },
    #[error("module {name:?}, needed by {needed_by:?}, is not in {dir} nor built into the kernel")]
    MissingDependency {
        name: String,
        needed_by: String,
        dir: PathBuf,
    },
    #[error(
        "module list {list}: line {line}: {text:?} is before any section ([always] or [by-device])"
    )]
    NoSection {
        list: PathBuf,
        line: usize,
        text: String,
    },
    #[error("module list {list}: line {line}: unknown section {text:?} (expected [always] or [by-device])")]
    BadSection {
        list: PathBuf,
        line: usize,
        text: String,
    },
    #[error("module {name:?} is listed under [by-device] but has no device aliases (alias= in its .modinfo), so no device would ever load it; list it under [always]")]
    NoAliases { name: String },
    #[error("module dependency cycle: {0}")]
    Cycle(String),
    #[error("cannot read the .modinfo of {path}")]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("cannot decompress module {path}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot walk the module directory {dir}")]
    Walk {
        dir: PathBuf,
        #[source]
        source: walkdir::Error,
    },
}

/// Canonical module name: `usb-storage` and `usb_storage` are the same module.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

const SUFFIXES: [&str; 3] = [".ko", ".ko.xz", ".ko.zst"];

/// Split `dir/name.ko.xz` into (`name`, `dir/name.ko`).
fn module_file(rel: &str) -> Option<(String, String)> {
    let file = rel.rsplit('/').next()?;
    for s in SUFFIXES {
        if let Some(stem) = file.strip_suffix(s) {
            let dir_len = rel.len() - file.len();
            return Some((stem.to_owned(), format!("{}{stem}.ko", &rel[..dir_len])));
        }
    }
    None
}

/// The modules of one kernel release, found on disk.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// canonical name -> (path relative to `dir` as packaged, path as `.ko`)
    by_name: BTreeMap<String, (String, String)>,
    builtin: BTreeSet<String>,
}

/// One module of the closure, decompressed.
#[derive(Debug, Clone)]
pub struct Module {
    /// Canonical name (`usb_storage`).
    pub name: String,
    /// Path relative to `/lib/modules/<kver>/`, always ending in `.ko`.
    pub rel_path: String,
    /// The plain ELF bytes.
    pub bytes: Vec<u8>,
    /// Its hard dependencies (canonical names, `depends=`).
    pub depends: Vec<String>,
    /// The device patterns it drives (`alias=`, e.g. `pci:v000010ECd00008168sv*sd*bc*sc*i*`).
    pub aliases: Vec<String>,
    /// The firmware files it may request (`firmware=`, relative to `/lib/firmware`).
    pub firmware: Vec<String>,
}

impl ModuleIndex {
    /// Index `dir` (= `.../lib/modules/<kver>`): every `*.ko[.xz|.zst]` file and
    /// the names in `modules.builtin`.
    pub fn scan(dir: &Path) -> Result<ModuleIndex, ModuleError> {
        let mut by_name = BTreeMap::new();
        let kernel_dir = dir.join("kernel");
        for entry in walkdir::WalkDir::new(&kernel_dir).sort_by_file_name() {
            let entry = entry.map_err(|source| ModuleError::Walk {
                dir: kernel_dir.clone(),
                source,
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Some(rel) = entry
                .path()
                .strip_prefix(dir)
                .ok()
                .and_then(crate::util::relative_slash_path)
            else {
                continue;
            };
            if let Some((stem, ko)) = module_file(&rel) {
                by_name.insert(canonical_name(&stem), (rel, ko));
            }
        }
        let builtin_path = dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(text) => text
                .lines()
                .filter_map(module_file)
                .map(|(stem, _)| canonical_name(&stem))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => {
                return Err(ModuleError::Io {
                    path: builtin_path,
                    source,
                })
            }
        };
        tracing::debug!(dir = %dir.display(), modules = by_name.len(), builtin = builtin.len(), "indexed kernel modules");
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            by_name,
            builtin,
        })
    }

    /// Number of loadable modules found.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `name` is built into the kernel (nothing to load).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical_name(name))
    }

    /// Read one module, decompressed, with the facts of its `.modinfo`.
    fn load(&self, name: &str) -> Result<Option<Module>, ModuleError> {
        let Some((packaged, ko)) = self.by_name.get(name) else {
            return Ok(None);
        };
        let path = crate::util::path_join(&self.dir, packaged);
        let raw = std::fs::read(&path).map_err(|source| ModuleError::Io {
            path: path.clone(),
            source,
        })?;
        let bytes = decompress(&path, raw)?;
        let info = elf::modinfo(&bytes).map_err(|source| ModuleError::Elf {
            path: path.clone(),
            source,
        })?;
        Ok(Some(Module {
            name: name.to_owned(),
            rel_path: ko.clone(),
            bytes,
            depends: info.depends().iter().map(|d| canonical_name(d)).collect(),
            aliases: info.values("alias").map(str::to_owned).collect(),
            firmware: info.values("firmware").map(str::to_owned).collect(),
        }))
    }

    /// The closure of `wanted` in load order: every module after all of its
    /// `depends=`. Built-in modules are skipped; a name that is neither a
    /// module nor built in is an error naming it.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<Module>, ModuleError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            let name = canonical_name(name);
            if !self.by_name.contains_key(&name) && !self.builtin.contains(&name) {
                return Err(ModuleError::Unknown {
                    name,
                    dir: self.dir.clone(),
                });
            }
            self.visit(&name, None, &mut Vec::new(), &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: Option<&str>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_owned());
            return Err(ModuleError::Cycle(stack.join(" -> ")));
        }
        let Some(module) = self.load(name)? else {
            if self.builtin.contains(name) {
                tracing::debug!(module = name, "built into the kernel");
                done.insert(name.to_owned());
                return Ok(());
            }
            return Err(ModuleError::MissingDependency {
                name: name.to_owned(),
                needed_by: needed_by.unwrap_or("the module list").to_owned(),
                dir: self.dir.clone(),
            });
        };
        stack.push(name.to_owned());
        for dep in &module.depends {
            self.visit(dep, Some(name), stack, done, order)?;
        }
        stack.pop();
        done.insert(name.to_owned());
        order.push(module);
        Ok(())
    }
}

fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ModuleError> {
    let name = path.to_string_lossy();
    let err = |source| ModuleError::Decompress {
        path: path.to_path_buf(),
        source,
    };
    if name.ends_with(".ko.zst") {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(&raw[..])
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(err)?;
        Ok(out)
    } else if name.ends_with(".ko.xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &raw[..], &mut out).map_err(|e| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The module list: modules loaded at every boot, and modules loaded only
/// when a device they drive is present (matched by modalias).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleList {
    /// `[always]`: file systems, loop, efivarfs... (no device to match).
    pub always: Vec<String>,
    /// `[by-device]`: drivers, loaded when a device's modalias matches one
    /// of their `alias=` patterns.
    pub by_device: Vec<String>,
}

impl ModuleList {
    /// Every listed name, `[always]` first.
    pub fn all(&self) -> Vec<String> {
        self.always.iter().chain(&self.by_device).cloned().collect()
    }
}

/// Read a module list: `[always]` and `[by-device]` section headers, one
/// module name per line under them; `#` starts a comment.
pub fn read_list(path: &Path) -> Result<ModuleList, ModuleError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModuleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_list(path, &text)
}

fn parse_list(path: &Path, text: &str) -> Result<ModuleList, ModuleError> {
    let mut list = ModuleList::default();
    let mut section: Option<&mut Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = match line {
                "[always]" => Some(&mut list.always),
                "[by-device]" => Some(&mut list.by_device),
                _ => {
                    return Err(ModuleError::BadSection {
                        list: path.to_path_buf(),
                        line: i + 1,
                        text: line.to_owned(),
                    })
                }
            };
            continue;
        }
        if !line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ModuleError::BadListLine {
                list: path.to_path_buf(),
                line: i + 1,
                text: line.to_owned(),
            });
        }
        let Some(names) = section.as_mut() else {
            return Err(ModuleError::NoSection {
                list: path.to_path_buf(),
                line: i + 1,
                text: line.to_owned(),
            });
        };
        names.push(line.to_owned());
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_file_names() {
        assert_eq!(
            module_file("kernel/fs/ext4/ext4.ko.xz"),
            Some(("ext4".into(), "kernel/fs/ext4/ext4.ko".into()))
        );
        assert_eq!(
            module_file("kernel/drivers/usb/storage/usb-storage.ko"),
            Some((
                "usb-storage".into(),
                "kernel/drivers/usb/storage/usb-storage.ko".into()
            ))
        );
        assert_eq!(module_file("modules.order"), None);
        assert_eq!(canonical_name("nls_iso8859-1"), "nls_iso8859_1");
    }

    #[test]
    fn list_parsing() {
        let list = parse_list(
            Path::new("l"),
            "# x\n[by-device]\nvirtio_net\n\n[always]\n  ext4  # fs\n[by-device]\nusb-storage\n",
        )
        .unwrap();
        assert_eq!(list.always, ["ext4"]);
        assert_eq!(list.by_device, ["virtio_net", "usb-storage"]);
        assert_eq!(list.all(), ["ext4", "virtio_net", "usb-storage"]);
        let err = parse_list(Path::new("l"), "[always]\nok\nbad name\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_list(Path::new("l"), "ext4\n").unwrap_err();
        assert!(err.to_string().contains("before any section"), "{err}");
        let err = parse_list(Path::new("l"), "[sometimes]\n").unwrap_err();
        assert!(err.to_string().contains("unknown section"), "{err}");
    }
}
