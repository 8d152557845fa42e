//! The Secure Boot chain's signed binaries, from Debian's packages: shim
//! (signed by Microsoft's UEFI CA, so firmware with only the stock keys
//! runs it), its MOK manager, and systemd-boot (signed by Debian's Secure
//! Boot CA, which shim trusts). The Debian kernel is signed by Debian too,
//! so the chain firmware → shim → systemd-boot → kernel holds with the
//! stock keys (docs/image.md, "Secure Boot").
//!
//! Like the kernel ([`crate::kernel`]), the packages are downloaded with
//! `apt-get download` and unpacked with `dpkg-deb -x` under
//! `<build>/signed/<set>/`, never installed on the host. Bookworm has no
//! signed systemd-boot; trixie's `systemd-boot-efi-amd64-signed` is
//! fetched under a separate apt configuration in `<build>/signed/apt/`
//! (its own source list, package lists and cache), so the machine's apt
//! sources are never changed. Each file's Authenticode signature is checked
//! when the set is made (`sbverify --list`: present, and issued by the
//! expected CA). `<build>/signed/current` names the set in use; once made,
//! a set is used offline, as the kernel is.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run, CommandError};

/// Where a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// The machine's own apt sources (the build host's Debian release).
    Host,
    /// Debian trixie, through the separate apt configuration.
    Trixie,
}

/// One signed file of the chain.
#[derive(Debug)]
struct Part {
    package: &'static str,
    suite: Suite,
    /// The file inside the package.
    file: &'static str,
    /// Its name in the set.
    name: &'static str,
    /// A word every signature issuer line of the file must contain.
    issuer: &'static str,
}

const PARTS: [Part; 3] = [
    Part {
        package: "shim-signed",
        suite: Suite::Host,
        file: "usr/lib/shim/shimx64.efi.signed",
        name: SHIM,
        issuer: "Microsoft",
    },
    Part {
        package: "shim-helpers-amd64-signed",
        suite: Suite::Host,
        file: "usr/lib/shim/mmx64.efi.signed",
        name: MOK_MANAGER,
        issuer: "Debian Secure Boot CA",
    },
    Part {
        package: "systemd-boot-efi-amd64-signed",
        suite: Suite::Trixie,
        file: "usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed",
        name: SYSTEMD_BOOT,
        issuer: "Debian Secure Boot CA",
    },
];

/// File names inside a set.
pub const SHIM: &str = "shimx64.efi";
pub const MOK_MANAGER: &str = "mmx64.efi";
pub const SYSTEMD_BOOT: &str = "systemd-bootx64.efi";

/// The source line of the separate apt configuration.
const TRIXIE_SOURCE: &str =
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n";

#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    #[error("architecture {0:?}: signed boot loaders are only fetched for x86_64")]
    UnsupportedArch(String),
    #[error("no signed boot loaders under {0} (`make signed`, or `phase image` without --no-secure-boot, fetches them)")]
    NoCurrent(PathBuf),
    #[error("{dir} does not hold a complete signed set: missing {name}")]
    Incomplete { dir: PathBuf, name: String },
    #[error("cannot download {package} with apt-get")]
    Download {
        package: String,
        #[source]
        source: CommandError,
    },
    #[error("cannot update the package lists of the separate trixie apt configuration in {dir}")]
    Update {
        dir: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("cannot unpack {deb}")]
    Unpack {
        deb: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("cannot read the signatures of {path} (sbverify, Debian package sbsigntool)")]
    Sbverify {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("{path} ({package}) is not signed: no Authenticode signature")]
    Unsigned { path: PathBuf, package: String },
    #[error("{path} ({package}) is signed by {issuers:?}, not by a {expected} key")]
    WrongIssuer {
        path: PathBuf,
        package: String,
        issuers: Vec<String>,
        expected: String,
    },
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignedError + '_ {
    move |source| SignedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A checked set of signed binaries.
#[derive(Debug, Clone)]
pub struct SignedLoaders {
    /// The set's directory (`<build>/signed/<set>`).
    pub dir: PathBuf,
    /// shim, the removable-media loader (`EFI/BOOT/BOOTX64.EFI`).
    pub shim: PathBuf,
    /// shim's MOK manager (`EFI/BOOT/mmx64.efi`).
    pub mok_manager: PathBuf,
    /// Debian-signed systemd-boot, which shim starts (`EFI/BOOT/grubx64.efi`).
    pub systemd_boot: PathBuf,
    /// `package=version` of each part, one per line (`<set>/packages`).
    pub packages: String,
}

impl SignedLoaders {
    /// Opens the set in `dir` (every part present).
    pub fn open(dir: &Path) -> Result<SignedLoaders, SignedError> {
        let part = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(SignedError::Incomplete {
                    dir: dir.to_path_buf(),
                    name: name.to_owned(),
                })
            }
        };
        let packages_path = part("packages")?;
        Ok(SignedLoaders {
            dir: dir.to_path_buf(),
            shim: part(SHIM)?,
            mok_manager: part(MOK_MANAGER)?,
            systemd_boot: part(SYSTEMD_BOOT)?,
            packages: std::fs::read_to_string(&packages_path).map_err(io(&packages_path))?,
        })
    }
}

/// `<build>/signed`.
pub fn cache_dir(build: &Path) -> PathBuf {
    build.join("signed")
}

/// The set `<build>/signed/current` names, without touching the network.
pub fn current(build: &Path) -> Result<SignedLoaders, SignedError> {
    let dir = cache_dir(build);
    let marker = dir.join("current");
    match std::fs::read_to_string(&marker) {
        Ok(name) => SignedLoaders::open(&dir.join(name.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SignedError::NoCurrent(dir)),
        Err(e) => Err(io(&marker)(e)),
    }
}

/// The current set, or a new one downloaded, unpacked and checked when
/// there is none.
pub fn acquire(build: &Path, arch: &str) -> Result<SignedLoaders, SignedError> {
    if arch != "x86_64" && arch != "amd64" {
        return Err(SignedError::UnsupportedArch(arch.to_owned()));
    }
    match current(build) {
        Err(SignedError::NoCurrent(_)) | Err(SignedError::Incomplete { .. }) => {}
        other => return other,
    }
    let dir = cache_dir(build);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&dir)
        .map_err(io(&dir))?;
    let set = work.path().join("set");
    std::fs::create_dir(&set).map_err(io(&set))?;
    let apt = AptConfig::trixie(&dir.join("apt"))?;
    if PARTS.iter().any(|p| p.suite == Suite::Trixie) {
        apt.update()?;
    }
    let mut packages = String::new();
    for part in &PARTS {
        tracing::info!(package = part.package, "downloading with apt-get");
        let deb = download(work.path(), part, &apt)?;
        let unpack = work.path().join(part.package);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack)).map_err(|source| {
            SignedError::Unpack {
                deb: deb.clone(),
                source,
            }
        })?;
        let from = unpack.join(part.file);
        let to = set.join(part.name);
        std::fs::copy(&from, &to).map_err(io(&from))?;
        check_signature(&to, part)?;
        let file_name = deb.file_name().unwrap_or_default().to_string_lossy();
        packages.push_str(&format!("{}\n", deb_name_version(&file_name)));
    }
    let packages_path = set.join("packages");
    std::fs::write(&packages_path, &packages).map_err(io(&packages_path))?;
    // The set is named by its packages' versions; a half-made set never
    // becomes visible (checked, then renamed into place).
    let name = set_name(&packages);
    let dest = dir.join(&name);
    if !dest.is_dir() {
        std::fs::rename(&set, &dest).map_err(io(&dest))?;
    }
    let loaders = SignedLoaders::open(&dest)?;
    let marker = dir.join("current");
    std::fs::write(&marker, format!("{name}\n")).map_err(io(&marker))?;
    tracing::info!(dir = %dest.display(), "signed boot loaders ready");
    Ok(loaders)
}

/// `name_version_arch.deb` → `name=version` (`%3a` is apt's escaped epoch colon).
fn deb_name_version(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".deb").unwrap_or(file_name);
    let mut it = stem.splitn(3, '_');
    let name = it.next().unwrap_or_default();
    let version = it.next().unwrap_or_default().replace("%3a", ":");
    format!("{name}={version}")
}

/// A directory name for a set: the packages' versions, with the characters
/// a path should not carry replaced.
fn set_name(packages: &str) -> String {
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

/// The separate apt configuration for trixie: its own source list, lists
/// and cache under `dir`, so the machine's apt state is not touched.
struct AptConfig {
    dir: PathBuf,
}

impl AptConfig {
    fn trixie(dir: &Path) -> Result<AptConfig, SignedError> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let list = dir.join("sources.list");
        std::fs::write(&list, TRIXIE_SOURCE).map_err(io(&list))?;
        Ok(AptConfig {
            dir: dir.to_path_buf(),
        })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "-o".into(),
            format!("Dir::State::Lists={d}/lists"),
            "-o".into(),
            format!("Dir::Cache={d}/cache"),
            "-o".into(),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "-o".into(),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
        ]
    }

    fn update(&self) -> Result<(), SignedError> {
        run(Command::new("apt-get")
            .args(self.options())
            .args(["update", "-q"]))
        .map(drop)
        .map_err(|source| SignedError::Update {
            dir: self.dir.clone(),
            source,
        })
    }
}

/// Downloads `part`'s package into `dir`; returns the `.deb`.
fn download(dir: &Path, part: &Part, apt: &AptConfig) -> Result<PathBuf, SignedError> {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir);
    if part.suite == Suite::Trixie {
        cmd.args(apt.options());
    }
    run(cmd.args(["download", "-q", part.package])).map_err(|source| SignedError::Download {
        package: part.package.to_owned(),
        source,
    })?;
    let prefix = format!("{}_", part.package);
    std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| SignedError::Incomplete {
            dir: dir.to_path_buf(),
            name: format!("{}_*.deb after apt-get download", part.package),
        })
}

/// The issuers `sbverify --list` names for `path`'s signatures.
pub fn signature_issuers(path: &Path) -> Result<Vec<String>, CommandError> {
    let out = run(Command::new("sbverify").arg("--list").arg(path))?;
    Ok(parse_issuers(&String::from_utf8_lossy(&out.stdout)))
}

/// The lines under each "image signature issuers:" heading.
fn parse_issuers(text: &str) -> Vec<String> {
    let mut issuers = Vec::new();
    let mut in_issuers = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "image signature issuers:" {
            in_issuers = true;
        } else if in_issuers && t.starts_with("- ") {
            issuers.push(t[2..].to_owned());
        } else {
            in_issuers = false;
        }
    }
    issuers
}

fn check_signature(path: &Path, part: &Part) -> Result<(), SignedError> {
    let issuers = signature_issuers(path).map_err(|source| SignedError::Sbverify {
        path: path.to_path_buf(),
        source,
    })?;
    if issuers.is_empty() {
        return Err(SignedError::Unsigned {
            path: path.to_path_buf(),
            package: part.package.to_owned(),
        });
    }
    if !issuers.iter().all(|i| i.contains(part.issuer)) {
        return Err(SignedError::WrongIssuer {
            path: path.to_path_buf(),
            package: part.package.to_owned(),
            issuers,
            expected: part.issuer.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sbverify --list` prints for Debian's shim (two signatures).
    const SHIM_LIST: &str = "signature 1
image signature issuers:
 - /C=US/ST=Washington/L=Redmond/O=Microsoft Corporation/CN=Microsoft Corporation UEFI CA 2011
image signature certificates:
 - subject: /C=US/ST=Washington/L=Redmond/O=Microsoft Corporation/CN=Microsoft Windows UEFI Driver Publisher
   issuer:  /C=US/ST=Washington/L=Redmond/O=Microsoft Corporation/CN=Microsoft Corporation UEFI CA 2011
signature 2
image signature issuers:
 - /C=US/O=Microsoft Corporation/CN=Microsoft UEFI CA 2023
image signature certificates:
 - subject: /C=US/O=Microsoft Corporation/CN=Microsoft UEFI CA 2023 signer
   issuer:  /C=US/O=Microsoft Corporation/CN=Microsoft UEFI CA 2023
";

    #[test]
    fn issuers_are_read_from_every_signature() {
        let issuers = parse_issuers(SHIM_LIST);
        assert_eq!(issuers.len(), 2, "{issuers:?}");
        assert!(issuers[0].ends_with("CN=Microsoft Corporation UEFI CA 2011"));
        assert!(issuers[1].ends_with("CN=Microsoft UEFI CA 2023"));
        assert!(parse_issuers("No signature table present\n").is_empty());
    }

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
    fn an_unsigned_binary_or_a_non_pe_file_is_refused_by_name() {
        // Debian's unsigned systemd-boot (package systemd-boot-efi, a
        // prerequisite of `make test`): a real PE image with no signature.
        let unsigned = Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi");
        assert!(
            unsigned.is_file(),
            "test prerequisite missing: {} (scripts/deps-check.sh --install)",
            unsigned.display()
        );
        let e = check_signature(unsigned, &PARTS[2]).unwrap_err();
        assert!(matches!(e, SignedError::Unsigned { .. }), "{e}");
        assert!(e.to_string().contains("systemd-bootx64.efi"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.efi");
        std::fs::write(&path, b"not a PE image").unwrap();
        let e = check_signature(&path, &PARTS[0]).unwrap_err();
        assert!(e.to_string().contains("plain.efi"), "{e}");
    }

    #[test]
    fn a_missing_set_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = current(dir.path()).unwrap_err();
        assert!(matches!(e, SignedError::NoCurrent(_)), "{e}");
        assert!(e.to_string().contains("make signed"), "{e}");
    }
}
