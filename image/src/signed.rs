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

use crate::deb::{self, io, Apt, AptConfig, DebError, Staging};
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
    #[error(transparent)]
    Deb(#[from] DebError),
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
            packages: std::fs::read_to_string(&packages_path)
                .map_err(io::<SignedError>(&packages_path))?,
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
    match deb::read_current(&dir)? {
        Some(name) => SignedLoaders::open(&dir.join(name)),
        None => Err(SignedError::NoCurrent(dir)),
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
    let staging = Staging::new(&dir)?;
    let set = staging.path().join("set");
    std::fs::create_dir(&set).map_err(io::<SignedError>(&set))?;
    let apt = AptConfig::new(&dir.join("apt"), TRIXIE_SOURCE)?;
    if PARTS.iter().any(|p| p.suite == Suite::Trixie) {
        apt.update()?;
    }
    let mut packages = String::new();
    for part in &PARTS {
        let from = match part.suite {
            Suite::Host => Apt::Host,
            Suite::Trixie => Apt::Separate(&apt),
        };
        let unpacked = staging.fetch(part.package, from)?;
        let src = unpacked.root.join(part.file);
        let to = set.join(part.name);
        std::fs::copy(&src, &to).map_err(io::<SignedError>(&src))?;
        check_signature(&to, part)?;
        packages.push_str(&format!("{}\n", unpacked.name_version));
    }
    let packages_path = set.join("packages");
    std::fs::write(&packages_path, &packages).map_err(io::<SignedError>(&packages_path))?;
    // The set is named by its packages' versions; a half-made set never
    // becomes visible (checked, then renamed into place).
    let name = deb::set_name(&packages);
    let dest = staging.publish(&set, &name)?;
    let loaders = SignedLoaders::open(&dest)?;
    deb::write_current(&dir, &name)?;
    tracing::info!(dir = %dest.display(), "signed boot loaders ready");
    Ok(loaders)
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
