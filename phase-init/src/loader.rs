//! What the boot loader told us through EFI variables (the Boot Loader
//! Interface that systemd-boot implements): which entry was booted.

use std::path::Path;

use crate::step::Status;

/// The vendor GUID of the Boot Loader Interface variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Reads a Boot Loader Interface string variable (UTF-16LE after the 4-byte
/// attribute header) from an efivarfs directory.
pub fn variable(efivars: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(efivars.join(format!("{name}-{LOADER_GUID}"))).ok()?;
    decode_utf16le(bytes.get(4..)?)
}

fn decode_utf16le(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// `entry phase-local.conf (systemd-boot 252.39-1~deb12u1)`, or `None` when the
/// machine did not boot through a Boot Loader Interface loader (e.g. QEMU
/// `-kernel`).
pub fn describe(efivars: &Path) -> Option<String> {
    let entry = variable(efivars, "LoaderEntrySelected")?;
    match variable(efivars, "LoaderInfo") {
        Some(info) => Some(format!("entry {entry} ({info})")),
        None => Some(format!("entry {entry}")),
    }
}

/// The `loader` boot step: the mounts that wait for the modules
/// ([`crate::mounts::AFTER_MODULES`], efivarfs), then the boot loader entry.
pub fn step() -> ((), Status) {
    let r = crate::mounts::mount_all(crate::mounts::AFTER_MODULES);
    let efi = Path::new(crate::platform::EFIVARS);
    let detail = match describe(efi) {
        Some(entry) => entry,
        None if !r.skipped.is_empty() => {
            "no UEFI variables (direct kernel boot or BIOS)".to_owned()
        }
        None => "no boot loader entry in the UEFI variables".to_owned(),
    };
    let problems = r
        .failed
        .iter()
        .map(|(target, e)| format!("mount {target}: {e} (is efivarfs.ko in the module list?)"))
        .collect();
    ((), Status::with_problems(detail, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utf16_variables() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![6, 0, 0, 0];
        for u in "phase-local.conf".encode_utf16().chain([0]) {
            bytes.extend(u.to_le_bytes());
        }
        std::fs::write(
            dir.path()
                .join(format!("LoaderEntrySelected-{LOADER_GUID}")),
            bytes,
        )
        .unwrap();
        assert_eq!(
            describe(dir.path()).as_deref(),
            Some("entry phase-local.conf")
        );
        assert_eq!(variable(dir.path(), "LoaderInfo"), None);
    }
}
