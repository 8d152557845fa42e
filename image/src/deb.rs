//! Debian packages into the build cache: `apt-get download` into a
//! temporary directory inside the cache, `dpkg-deb -x` (never installed on
//! the host), a check by the caller, a rename into place, and a `current`
//! marker naming what is in use. The kernel ([`crate::kernel`]), the signed
//! boot loaders ([`crate::signed`]) and the firmware ([`crate::firmware`])
//! are all fetched this way.
//!
//! Packages the machine's apt sources do not offer (another suite, another
//! component) come through an [`AptConfig`]: its own `sources.list`,
//! package lists and cache under the build directory, passed to apt with
//! `-o Dir::...` options. The machine's apt sources are never changed.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot download {package} with apt-get")]
    Download {
        package: String,
        #[source]
        source: CommandError,
    },
    #[error("cannot update the package lists of the separate apt configuration in {dir}")]
    Update {
        dir: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("apt-get download left no {package}_*.deb in {dir}")]
    NoDeb { package: String, dir: PathBuf },
    #[error("cannot unpack {deb}")]
    Unpack {
        deb: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `map_err` adapter for an I/O error on `path`, for any error type of
/// this crate that has a `From<DebError>`.
pub(crate) fn io<E: From<DebError>>(path: &Path) -> impl FnOnce(std::io::Error) -> E + '_ {
    move |source| {
        E::from(DebError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A separate apt configuration: its own source list, package lists and
/// cache under `dir`, so the machine's apt state is not touched.
#[derive(Debug, Clone)]
pub struct AptConfig {
    dir: PathBuf,
}

impl AptConfig {
    /// Prepares `dir` with `sources` as its whole `sources.list` (rewritten
    /// only when it changes).
    pub fn new(dir: &Path, sources: &str) -> Result<AptConfig, DebError> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io::<DebError>(&d))?;
        }
        let list = dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources) {
            std::fs::write(&list, sources).map_err(io::<DebError>(&list))?;
        }
        Ok(AptConfig {
            dir: dir.to_path_buf(),
        })
    }

    /// The `-o` options that point apt at this configuration.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    /// `apt-get update` of this configuration's package lists.
    pub fn update(&self) -> Result<(), DebError> {
        run(Command::new("apt-get")
            .args(self.options())
            .args(["update", "-q"]))
        .map(drop)
        .map_err(|source| DebError::Update {
            dir: self.dir.clone(),
            source,
        })
    }
}

/// Which apt configuration a package comes from.
#[derive(Debug, Clone, Copy)]
pub enum Apt<'a> {
    /// The machine's own apt sources.
    Host,
    /// A separate configuration under the build directory.
    Separate(&'a AptConfig),
}

/// A package downloaded and unpacked in a [`Staging`] directory.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The unpacked tree.
    pub root: PathBuf,
    /// `name=version` from the `.deb` file name.
    pub name_version: String,
}

/// A temporary directory inside a cache directory: packages are unpacked
/// here, checked, and only then renamed into place, so a half-made tree
/// never becomes visible. Removed on drop.
#[derive(Debug)]
pub struct Staging {
    cache: PathBuf,
    work: tempfile::TempDir,
}

impl Staging {
    /// A fresh staging directory in `cache` (created if missing).
    pub fn new(cache: &Path) -> Result<Staging, DebError> {
        std::fs::create_dir_all(cache).map_err(io::<DebError>(cache))?;
        let work = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(cache)
            .map_err(io::<DebError>(cache))?;
        Ok(Staging {
            cache: cache.to_path_buf(),
            work,
        })
    }

    /// The staging directory itself (for trees the caller assembles).
    pub fn path(&self) -> &Path {
        self.work.path()
    }

    /// `apt-get download` of `package` and `dpkg-deb -x` into
    /// `<staging>/<package>`.
    pub fn fetch(&self, package: &str, apt: Apt<'_>) -> Result<Unpacked, DebError> {
        let debs = self.work.path().join("debs");
        std::fs::create_dir_all(&debs).map_err(io::<DebError>(&debs))?;
        tracing::info!(%package, "downloading with apt-get");
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(&debs);
        if let Apt::Separate(config) = apt {
            cmd.args(config.options());
        }
        run(cmd.args(["download", "-q", package])).map_err(|source| DebError::Download {
            package: package.to_owned(),
            source,
        })?;
        let prefix = format!("{package}_");
        let deb = std::fs::read_dir(&debs)
            .map_err(io::<DebError>(&debs))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .ok_or_else(|| DebError::NoDeb {
                package: package.to_owned(),
                dir: debs.clone(),
            })?;
        let root = self.work.path().join(package);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root)).map_err(|source| {
            DebError::Unpack {
                deb: deb.clone(),
                source,
            }
        })?;
        let file_name = deb.file_name().unwrap_or_default().to_string_lossy();
        Ok(Unpacked {
            root,
            name_version: deb_name_version(&file_name),
        })
    }

    /// Renames the checked tree `from` (inside the staging directory) to
    /// `<cache>/<name>`, unless that exists already; returns the final path.
    pub fn publish(&self, from: &Path, name: &str) -> Result<PathBuf, DebError> {
        let dest = self.cache.join(name);
        if !dest.is_dir() {
            std::fs::rename(from, &dest).map_err(io::<DebError>(&dest))?;
        }
        Ok(dest)
    }
}

/// The name `<cache>/current` records, `None` when there is none yet.
pub fn read_current(cache: &Path) -> Result<Option<String>, DebError> {
    let marker = cache.join("current");
    match std::fs::read_to_string(&marker) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::<DebError>(&marker)(e)),
    }
}

/// Records `name` in `<cache>/current`, rewritten only on change (the
/// Makefile keys rebuilds on its mtime).
pub fn write_current(cache: &Path, name: &str) -> Result<(), DebError> {
    let marker = cache.join("current");
    let line = format!("{name}\n");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(line.as_str()) {
        std::fs::write(&marker, line).map_err(io::<DebError>(&marker))?;
    }
    Ok(())
}

/// `name_version_arch.deb` → `name=version` (`%3a` is apt's escaped epoch colon).
pub fn deb_name_version(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".deb").unwrap_or(file_name);
    let mut it = stem.splitn(3, '_');
    let name = it.next().unwrap_or_default();
    let version = it.next().unwrap_or_default().replace("%3a", ":");
    format!("{name}={version}")
}

/// A directory name for a set of packages: their versions (from
/// `name=version` lines), joined by `_`, with the characters a path should
/// not carry replaced.
pub fn set_name(packages: &str) -> String {
    let versions: Vec<String> = packages
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v))
        .map(|v| {
            v.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "+.-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        })
        .collect();
    versions.join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_come_from_package_versions() {
        assert_eq!(
            deb_name_version("shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64.deb"),
            "shim-signed=1.51~1+deb12u1+16.1-2~deb12u1"
        );
        assert_eq!(deb_name_version("x_1%3a2.0_amd64.deb"), "x=1:2.0");
        assert_eq!(set_name("a=1:2~b\nc=3+d\n"), "1-2-b_3+d");
    }

    #[test]
    fn a_separate_configuration_keeps_its_state_under_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let apt = AptConfig::new(dir.path(), "deb http://example.invalid x main\n").unwrap();
        let opts = apt.options();
        assert_eq!(opts.len(), 8);
        for pair in opts.chunks(2) {
            assert_eq!(pair[0], "-o");
            assert!(pair[1].contains(&*dir.path().to_string_lossy()), "{opts:?}");
        }
        assert!(dir.path().join("lists/partial").is_dir());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sources.list")).unwrap(),
            "deb http://example.invalid x main\n"
        );
    }

    #[test]
    fn current_is_rewritten_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), None);
        write_current(dir.path(), "a").unwrap();
        let marker = dir.path().join("current");
        let t = std::fs::metadata(&marker).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_current(dir.path(), "a").unwrap();
        assert_eq!(std::fs::metadata(&marker).unwrap().modified().unwrap(), t);
        assert_eq!(read_current(dir.path()).unwrap().as_deref(), Some("a"));
    }
}
