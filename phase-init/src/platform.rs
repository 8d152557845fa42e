//! Where this boot runs, as the firmware and the kernel report it: the UEFI
//! Secure Boot state (efivarfs) and the kernel's lockdown level
//! (securityfs). Under lockdown the kernel accepts only `kexec_file_load`
//! of a kernel signed by a key it trusts (see [`crate::kexec`]).
//!
//! The state itself is the `boot.json` schema's ([`Platform`], from the
//! `handover` crate): stage 1 records it for the target.

use std::path::Path;

pub use handover::{Lockdown, Platform, SecureBoot};

use crate::step::Status;

/// The EFI global variable vendor GUID (SecureBoot, SetupMode).
const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// securityfs's lockdown file.
pub const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

/// The efivarfs mount point.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Reads the running machine's state from `efivars` and `lockdown`.
pub fn read(efivars: &Path, lockdown: &Path) -> Platform {
    Platform {
        secureboot: secure_boot(efivars),
        lockdown: std::fs::read_to_string(lockdown)
            .map(|t| parse_lockdown(&t))
            .unwrap_or(Lockdown::Unknown),
    }
}

/// The running machine (efivarfs at [`EFIVARS`]).
pub fn current() -> Platform {
    read(Path::new(EFIVARS), Path::new(LOCKDOWN))
}

/// Whether the kernel refuses unsigned code (and so `kexec_load`).
pub fn locked_down(p: &Platform) -> bool {
    matches!(p.lockdown, Lockdown::Integrity | Lockdown::Confidentiality)
}

/// A one-byte EFI global variable's value (after the 4-byte attributes).
fn efi_byte(efivars: &Path, name: &str) -> Option<u8> {
    let bytes = std::fs::read(efivars.join(format!("{name}-{EFI_GLOBAL}"))).ok()?;
    bytes.get(4).copied()
}

fn secure_boot(efivars: &Path) -> SecureBoot {
    if !efivars.is_dir() {
        return SecureBoot::Unknown;
    }
    match (
        efi_byte(efivars, "SecureBoot"),
        efi_byte(efivars, "SetupMode"),
    ) {
        (_, Some(1)) => SecureBoot::Setup,
        (Some(1), _) => SecureBoot::On,
        (Some(_), _) | (None, Some(_)) => SecureBoot::Off,
        // efivarfs mounted but neither variable: firmware without Secure
        // Boot support.
        (None, None) => SecureBoot::Off,
    }
}

/// `none [integrity] confidentiality`: the bracketed word.
pub fn parse_lockdown(text: &str) -> Lockdown {
    let chosen = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')));
    match chosen {
        Some("none") => Lockdown::None,
        Some("integrity") => Lockdown::Integrity,
        Some("confidentiality") => Lockdown::Confidentiality,
        _ => Lockdown::Unknown,
    }
}

/// The `platform` boot step: [`current`], one line.
pub fn step() -> ((), Status) {
    ((), Status::ok(current().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(dir: &Path, name: &str, value: u8) {
        std::fs::write(
            dir.join(format!("{name}-{EFI_GLOBAL}")),
            [6, 0, 0, 0, value],
        )
        .expect("write variable");
    }

    #[test]
    fn the_lockdown_level_is_the_bracketed_word() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n"),
            Lockdown::Integrity
        );
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality"),
            Lockdown::None
        );
        assert_eq!(
            parse_lockdown("none integrity [confidentiality]"),
            Lockdown::Confidentiality
        );
        assert_eq!(parse_lockdown(""), Lockdown::Unknown);
        assert_eq!(parse_lockdown("[é]"), Lockdown::Unknown);
    }

    #[test]
    fn secure_boot_comes_from_the_global_variables() {
        let d = tempfile::tempdir().expect("tempdir");
        let lockdown = d.path().join("lockdown");
        std::fs::write(&lockdown, "none [integrity] confidentiality\n").expect("write");
        let efi = d.path().join("efivars");
        // Not a UEFI boot: no efivarfs directory.
        let p = read(&efi, &lockdown);
        assert_eq!(p.secureboot, SecureBoot::Unknown);
        assert!(locked_down(&p));
        std::fs::create_dir(&efi).expect("mkdir");
        assert_eq!(read(&efi, &lockdown).secureboot, SecureBoot::Off);
        var(&efi, "SecureBoot", 1);
        var(&efi, "SetupMode", 0);
        let p = read(&efi, &lockdown);
        assert_eq!(p.secureboot, SecureBoot::On);
        assert_eq!(p.to_string(), "secureboot on, lockdown integrity");
        var(&efi, "SecureBoot", 0);
        assert_eq!(read(&efi, &lockdown).secureboot, SecureBoot::Off);
        var(&efi, "SetupMode", 1);
        assert_eq!(read(&efi, &lockdown).secureboot, SecureBoot::Setup);
        // A truncated variable says nothing.
        std::fs::write(efi.join(format!("SecureBoot-{EFI_GLOBAL}")), [6, 0]).expect("write");
        var(&efi, "SetupMode", 0);
        assert_eq!(read(&efi, &lockdown).secureboot, SecureBoot::Off);
        let none = read(&efi, &d.path().join("missing"));
        assert_eq!(none.lockdown, Lockdown::Unknown);
        assert!(!locked_down(&none));
    }
}
