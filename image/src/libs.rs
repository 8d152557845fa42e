//! The dynamic loader and shared libraries a dynamically linked executable
//! needs, so an initramfs can carry them next to it.
//!
//! They are found the way the loader finds them when there is no
//! `/etc/ld.so.cache` (the initramfs has none): a `DT_NEEDED` name with a
//! slash is a path; any other name is looked up in the machine's multiarch
//! directory, then the generic ones ([`library_dirs`]). Each library's own
//! `DT_NEEDED` names are followed, so the result is the whole closure, the
//! set `ldd` prints. `DT_RPATH`/`DT_RUNPATH` are not read: the binaries we
//! carry (phase-init, busybox) have none.
//!
//! A file reached under two names (Debian's `/lib64/ld-linux-x86-64.so.2`
//! is a symlink to the multiarch copy, which libc names as a dependency) is
//! carried once; the second name becomes a symlink to the first.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::elf::{self, ElfError, Linking};

#[derive(Debug, thiserror::Error)]
pub enum LibError {
    #[error("cannot read shared library {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shared library {path} is not a readable ELF file")]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("{needed_by} needs {name}, which is in none of {dirs}")]
    NotFound {
        name: String,
        needed_by: String,
        dirs: String,
    },
    #[error("{path} is built for ELF machine {machine}, whose library directories are not known (x86_64 and aarch64 are)")]
    Machine { path: PathBuf, machine: u16 },
}

/// One file the loader opens, at the absolute path it opens it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedObject {
    pub path: String,
    pub contents: Contents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    File(Vec<u8>),
    /// The same file as the [`SharedObject`] at this absolute path.
    SameAs(String),
}

/// Where the loader looks for a library name, in order, for an `e_machine`.
pub fn library_dirs(machine: u16) -> Option<Vec<String>> {
    let triplet = match machine {
        object::elf::EM_X86_64 => "x86_64-linux-gnu",
        object::elf::EM_AARCH64 => "aarch64-linux-gnu",
        _ => return None,
    };
    Some(vec![
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
        "/lib64".to_owned(),
        "/usr/lib64".to_owned(),
        "/lib".to_owned(),
        "/usr/lib".to_owned(),
    ])
}

/// Everything the executable at `exe` (already read as `linking`) needs at
/// run time: its loader first, then the libraries in the order they were
/// found. Empty for a static executable.
pub fn closure(exe: &Path, linking: &Linking) -> Result<Vec<SharedObject>, LibError> {
    if linking.is_static() {
        return Ok(Vec::new());
    }
    let dirs = library_dirs(linking.machine).ok_or_else(|| LibError::Machine {
        path: exe.to_path_buf(),
        machine: linking.machine,
    })?;
    let mut found = Found::default();
    if let Some(interp) = &linking.interpreter {
        found.add(interp)?;
    }
    let mut queue: VecDeque<(String, String)> = linking
        .needed
        .iter()
        .map(|n| (n.clone(), exe.display().to_string()))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((name, needed_by)) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let path = locate(&name, &dirs).ok_or_else(|| LibError::NotFound {
            name: name.clone(),
            needed_by: needed_by.clone(),
            dirs: dirs.join(", "),
        })?;
        if let Some(needs) = found.add(&path)? {
            queue.extend(needs.into_iter().map(|n| (n, path.clone())));
        }
    }
    Ok(found.objects)
}

fn locate(name: &str, dirs: &[String]) -> Option<String> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| name.to_owned());
    }
    dirs.iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).is_file())
}

#[derive(Default)]
struct Found {
    objects: Vec<SharedObject>,
    /// Canonical file → the first path it was carried under.
    by_file: BTreeMap<PathBuf, String>,
}

impl Found {
    /// Carry `path`; returns the names it needs in turn, or `None` when the
    /// file is already carried (under this or another name).
    fn add(&mut self, path: &str) -> Result<Option<Vec<String>>, LibError> {
        let read_err = |source| LibError::Read {
            path: PathBuf::from(path),
            source,
        };
        let canonical = std::fs::canonicalize(path).map_err(read_err)?;
        if let Some(first) = self.by_file.get(&canonical) {
            if first != path {
                self.objects.push(SharedObject {
                    path: path.to_owned(),
                    contents: Contents::SameAs(first.clone()),
                });
            }
            return Ok(None);
        }
        let bytes = std::fs::read(&canonical).map_err(read_err)?;
        let linking = elf::linking(&bytes).map_err(|source| LibError::Elf {
            path: PathBuf::from(path),
            source,
        })?;
        self.by_file.insert(canonical, path.to_owned());
        self.objects.push(SharedObject {
            path: path.to_owned(),
            contents: Contents::File(bytes),
        });
        Ok(Some(linking.needed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(objects: &[SharedObject]) -> Vec<&str> {
        objects.iter().map(|o| o.path.as_str()).collect()
    }

    /// The closure of /bin/ls is what `ldd /bin/ls` resolves (the reference:
    /// glibc's own loader), plus the loader's second name.
    #[test]
    fn closure_of_ls_is_what_ldd_prints() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let linking = elf::linking(&bytes).unwrap();
        let objects = closure(Path::new("/bin/ls"), &linking).unwrap();
        let out = std::process::Command::new("ldd")
            .arg("/bin/ls")
            .output()
            .expect("ldd runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut want: BTreeSet<String> = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
            let path = match line.split_once(" => ") {
                Some((_, rest)) => rest.split(' ').next().unwrap(),
                None => line.split(' ').next().unwrap(),
            };
            if path.starts_with('/') {
                want.insert(path.to_owned());
            }
        }
        let files: BTreeSet<String> = objects
            .iter()
            .filter(|o| matches!(o.contents, Contents::File(_)))
            .map(|o| o.path.clone())
            .collect();
        assert_eq!(files, want, "ldd said:\n{text}");
        assert_eq!(objects[0].path, "/lib64/ld-linux-x86-64.so.2");
        // libc names the loader by its multiarch path: the same file, linked.
        let second = objects
            .iter()
            .find(|o| o.path == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
            .unwrap_or_else(|| panic!("{:?}", paths(&objects)));
        assert_eq!(
            second.contents,
            Contents::SameAs("/lib64/ld-linux-x86-64.so.2".into())
        );
    }

    #[test]
    fn a_static_executable_needs_nothing() {
        let bytes = std::fs::read("/bin/busybox").unwrap();
        let linking = elf::linking(&bytes).unwrap();
        assert!(closure(Path::new("/bin/busybox"), &linking)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_missing_library_is_named_with_who_needs_it() {
        let linking = Linking {
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: vec!["libc.so.6".into(), "libphase-missing.so.7".into()],
            machine: object::elf::EM_X86_64,
        };
        let err = closure(Path::new("/x/init"), &linking)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "/x/init needs libphase-missing.so.7, which is in none of /lib/x86_64-linux-gnu"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_machine_is_an_error_naming_it() {
        let linking = Linking {
            interpreter: Some("/lib/ld.so.1".into()),
            needed: vec![],
            machine: object::elf::EM_PPC64,
        };
        let err = closure(Path::new("/x/init"), &linking)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/init") && err.contains("machine 21"),
            "{err}"
        );
    }
}
