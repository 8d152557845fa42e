//! Firmware for the modules the initramfs carries: every file a module
//! names in its `.modinfo` `firmware=` lines goes to `/lib/firmware/` in
//! the initramfs, so a NIC whose driver loads firmware at probe time (a
//! Realtek r8169, a Broadcom tg3, a Realtek USB r8152) works in stage 1.
//!
//! The files come from Debian's firmware packages ([`PACKAGES`]), which
//! live in bookworm's `non-free-firmware` component. The machine's apt
//! sources may not have that component, so the packages are fetched
//! through a separate apt configuration in `<build>/firmware/apt/`
//! ([`crate::deb::AptConfig`]) and unpacked, merged, into
//! `<build>/firmware/<set>/` (the set named by the packages' versions).
//! `<build>/firmware/current` names the set in use; once made, a set is
//! used offline, as the kernel is.
//!
//! A file that a module names and no package provides is a build error,
//! unless the allow-list (`kernel/firmware-missing-<arch>.list`) names it
//! with the reason it may be absent.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::deb::{self, io, Apt, AptConfig, DebError, Staging};

/// The Debian packages the firmware set is made of.
pub const PACKAGES: [&str; 2] = [
    // rtl_nic/*: r8169, r8152.
    "firmware-realtek",
    // tigon/*: tg3 (and many other vendors' files, which are not carried).
    "firmware-misc-nonfree",
];

/// The source line of the separate apt configuration.
const SOURCES: &str = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main non-free-firmware\n";

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("no firmware set under {0} (`phase image` fetches one)")]
    NoCurrent(PathBuf),
    #[error("{dir} does not hold a complete firmware set: {what}")]
    Incomplete { dir: PathBuf, what: String },
    #[error("firmware allow-list {list}: line {line}: {why}")]
    BadAllowLine {
        list: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error(
        "module {module} names firmware {file}, which no package of the firmware set ({packages}) provides; \
         add the package to image::firmware::PACKAGES, or list the file with the reason in {allow_list}"
    )]
    Missing {
        module: String,
        file: String,
        packages: String,
        allow_list: PathBuf,
    },
    #[error("firmware allow-list {list}: {file} is listed, but {why}; remove the line")]
    StaleAllow {
        list: PathBuf,
        file: String,
        why: &'static str,
    },
    #[error(transparent)]
    Deb(#[from] DebError),
}

/// An unpacked firmware set.
#[derive(Debug, Clone)]
pub struct FirmwareSet {
    /// `<build>/firmware/<set>`.
    pub dir: PathBuf,
    /// The merged `lib/firmware` tree.
    pub root: PathBuf,
    /// `package=version`, one per line.
    pub packages: String,
}

impl FirmwareSet {
    /// Opens the set in `dir`: its `packages` file names every package of
    /// [`PACKAGES`], and its `lib/firmware` tree is there.
    pub fn open(dir: &Path) -> Result<FirmwareSet, FirmwareError> {
        let incomplete = |what: String| FirmwareError::Incomplete {
            dir: dir.to_path_buf(),
            what,
        };
        let packages_path = dir.join("packages");
        let packages = match std::fs::read_to_string(&packages_path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(incomplete("no packages file".into()))
            }
            Err(e) => return Err(io::<FirmwareError>(&packages_path)(e)),
        };
        for want in PACKAGES {
            if !packages
                .lines()
                .any(|l| l.split_once('=').is_some_and(|(n, _)| n == want))
            {
                return Err(incomplete(format!("package {want} is not in it")));
            }
        }
        let root = dir.join("lib/firmware");
        if !root.is_dir() {
            return Err(incomplete("no lib/firmware".into()));
        }
        Ok(FirmwareSet {
            dir: dir.to_path_buf(),
            root,
            packages,
        })
    }

    /// The bytes of firmware file `name` (a path relative to
    /// `/lib/firmware`, symbolic links followed), `None` if the set lacks it.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, FirmwareError> {
        if name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Ok(None);
        }
        let path = crate::util::path_join(&self.root, name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::<FirmwareError>(&path)(e)),
        }
    }
}

/// `<build>/firmware`.
pub fn cache_dir(build: &Path) -> PathBuf {
    build.join("firmware")
}

/// The set `<build>/firmware/current` names, without touching the network.
pub fn current(build: &Path) -> Result<FirmwareSet, FirmwareError> {
    let dir = cache_dir(build);
    match deb::read_current(&dir)? {
        Some(name) => FirmwareSet::open(&dir.join(name)),
        None => Err(FirmwareError::NoCurrent(dir)),
    }
}

/// The current set, or a new one downloaded and unpacked when there is none
/// (or when [`PACKAGES`] changed).
pub fn acquire(build: &Path) -> Result<FirmwareSet, FirmwareError> {
    match current(build) {
        Err(FirmwareError::NoCurrent(_)) | Err(FirmwareError::Incomplete { .. }) => {}
        other => return other,
    }
    let dir = cache_dir(build);
    let staging = Staging::new(&dir)?;
    let apt = AptConfig::new(&dir.join("apt"), SOURCES)?;
    apt.update()?;
    let set = staging.path().join("set");
    let merged = set.join("lib/firmware");
    std::fs::create_dir_all(&merged).map_err(io::<FirmwareError>(&merged))?;
    let mut packages = String::new();
    for package in PACKAGES {
        let unpacked = staging.fetch(package, Apt::Separate(&apt))?;
        // bookworm: /lib/firmware; later releases: /usr/lib/firmware.
        let from = ["lib/firmware", "usr/lib/firmware"]
            .iter()
            .map(|d| unpacked.root.join(d))
            .find(|d| d.is_dir())
            .ok_or_else(|| FirmwareError::Incomplete {
                dir: unpacked.root.clone(),
                what: format!("{package} has no lib/firmware"),
            })?;
        merge(&from, &merged)?;
        packages.push_str(&format!("{}\n", unpacked.name_version));
    }
    let packages_path = set.join("packages");
    std::fs::write(&packages_path, &packages).map_err(io::<FirmwareError>(&packages_path))?;
    let name = deb::set_name(&packages);
    let dest = staging.publish(&set, &name)?;
    let firmware = FirmwareSet::open(&dest)?;
    deb::write_current(&dir, &name)?;
    tracing::info!(dir = %dest.display(), "firmware set ready");
    Ok(firmware)
}

/// Moves every entry of `from` into `to` (directories merged; symbolic
/// links kept as links, they are relative inside the tree).
fn merge(from: &Path, to: &Path) -> Result<(), FirmwareError> {
    let entries = std::fs::read_dir(from).map_err(io::<FirmwareError>(from))?;
    for e in entries {
        let e = e.map_err(io::<FirmwareError>(from))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let kind = e.file_type().map_err(io::<FirmwareError>(&src))?;
        if kind.is_dir() && dst.is_dir() {
            merge(&src, &dst)?;
        } else if !dst.exists() {
            std::fs::rename(&src, &dst).map_err(io::<FirmwareError>(&dst))?;
        }
    }
    Ok(())
}

/// The allow-list: firmware files that may be missing, each with its reason.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    pub path: PathBuf,
    /// file -> reason
    pub files: BTreeMap<String, String>,
}

impl AllowList {
    /// Reads `path`: one firmware file per line followed by `# reason`
    /// (required); lines that are only a comment are skipped.
    pub fn read(path: &Path) -> Result<AllowList, FirmwareError> {
        let text = std::fs::read_to_string(path).map_err(io::<FirmwareError>(path))?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<AllowList, FirmwareError> {
        let mut files = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |why| FirmwareError::BadAllowLine {
                list: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let (file, reason) = match line.split_once('#') {
                Some((f, r)) => (f.trim(), r.trim()),
                None => (line.trim(), ""),
            };
            if file.is_empty() {
                continue;
            }
            if file.split_whitespace().count() != 1 {
                return Err(bad("expected one firmware file name, then `# reason`"));
            }
            if reason.is_empty() {
                return Err(bad("a file without a reason (`# why it may be missing`)"));
            }
            files.insert(file.to_owned(), reason.to_owned());
        }
        Ok(AllowList {
            path: path.to_path_buf(),
            files,
        })
    }
}

/// The firmware files the initramfs carries for `wanted` (module name,
/// its `firmware=` values): path relative to `/lib/firmware` -> bytes.
/// Every file is in `set` or in `allow`; an allow-list entry that no module
/// names or that the set provides is an error too (a stale reason).
pub fn select(
    set: &FirmwareSet,
    allow: &AllowList,
    wanted: &[(String, Vec<String>)],
) -> Result<BTreeMap<String, Vec<u8>>, FirmwareError> {
    let mut out = BTreeMap::new();
    let mut named = std::collections::BTreeSet::new();
    for (module, files) in wanted {
        for file in files {
            named.insert(file.as_str());
            if out.contains_key(file) {
                continue;
            }
            match set.read(file)? {
                Some(bytes) => {
                    out.insert(file.clone(), bytes);
                }
                None if allow.files.contains_key(file) => {
                    tracing::debug!(%module, %file, "firmware allowed to be missing");
                }
                None => {
                    return Err(FirmwareError::Missing {
                        module: module.clone(),
                        file: file.clone(),
                        packages: set.packages.lines().collect::<Vec<_>>().join(", "),
                        allow_list: allow.path.clone(),
                    })
                }
            }
        }
    }
    for file in allow.files.keys() {
        let why = if !named.contains(file.as_str()) {
            "no carried module names it"
        } else if out.contains_key(file) {
            "the firmware set provides it"
        } else {
            continue;
        };
        return Err(FirmwareError::StaleAllow {
            list: allow.path.clone(),
            file: file.clone(),
            why,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_set(dir: &Path) -> FirmwareSet {
        let root = dir.join("lib/firmware");
        std::fs::create_dir_all(root.join("rtl_nic")).unwrap();
        std::fs::write(root.join("rtl_nic/a.fw"), b"A").unwrap();
        std::os::unix::fs::symlink("a.fw", root.join("rtl_nic/b.fw")).unwrap();
        let packages: String = PACKAGES.iter().map(|p| format!("{p}=1\n")).collect();
        std::fs::write(dir.join("packages"), packages).unwrap();
        FirmwareSet::open(dir).unwrap()
    }

    fn allow(text: &str) -> AllowList {
        AllowList::parse(Path::new("allow.list"), text).unwrap()
    }

    #[test]
    fn files_are_taken_from_the_set_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        let set = fake_set(dir.path());
        let wanted = vec![(
            "r8169".to_owned(),
            vec!["rtl_nic/a.fw".to_owned(), "rtl_nic/b.fw".to_owned()],
        )];
        let got = select(&set, &AllowList::default(), &wanted).unwrap();
        assert_eq!(got["rtl_nic/a.fw"], b"A");
        assert_eq!(got["rtl_nic/b.fw"], b"A");
        assert_eq!(set.read("../packages").unwrap(), None);
    }

    #[test]
    fn a_missing_file_is_an_error_unless_allowed_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let set = fake_set(dir.path());
        let wanted = vec![(
            "xhci_pci_renesas".to_owned(),
            vec!["renesas.mem".to_owned()],
        )];
        let e = select(&set, &AllowList::default(), &wanted).unwrap_err();
        assert!(
            e.to_string().contains("xhci_pci_renesas") && e.to_string().contains("renesas.mem"),
            "{e}"
        );
        let got = select(
            &set,
            &allow("# x\nrenesas.mem  # not redistributable\n"),
            &wanted,
        );
        assert!(got.unwrap().is_empty());
        // A stale entry is named.
        let e = select(&set, &allow("other.bin # gone\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("other.bin"), "{e}");
        let e = select(
            &set,
            &allow("rtl_nic/a.fw # now packaged\n"),
            &[("r8169".into(), vec!["rtl_nic/a.fw".into()])],
        )
        .unwrap_err();
        assert!(e.to_string().contains("provides it"), "{e}");
    }

    #[test]
    fn allow_lines_need_a_reason() {
        let e = AllowList::parse(Path::new("l"), "a.bin\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = AllowList::parse(Path::new("l"), "a.bin b.bin # r\n").unwrap_err();
        assert!(e.to_string().contains("one firmware file"), "{e}");
    }

    #[test]
    fn a_set_without_every_package_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib/firmware")).unwrap();
        std::fs::write(dir.path().join("packages"), "firmware-realtek=1\n").unwrap();
        let e = FirmwareSet::open(dir.path()).unwrap_err();
        assert!(matches!(e, FirmwareError::Incomplete { .. }), "{e}");
    }
}
