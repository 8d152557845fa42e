//! Authenticode, the signature format of PE images (EFI binaries and
//! EFI-stub kernels): whether an image carries a signature, read from its
//! PE header with the `object` crate, and signing an image with a key of
//! one's own through `sbsign` (Debian `sbsigntool`).
//!
//! Who made a signature is not decided here: the firmware, shim or the
//! running kernel's keyrings decide that at boot. `sbverify` (same
//! package) lists and checks signatures where a build needs to know
//! ([`crate::signed`]).
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run, CommandError};

/// Why [`authenticode_signed`] could not tell.
#[derive(Debug, thiserror::Error)]
#[error("not a PE image (an EFI binary or an EFI-stub kernel): {0}")]
pub struct NotPe(String);

/// Whether the PE image `bytes` (an EFI binary, or an x86 bzImage with its
/// EFI stub) carries an Authenticode signature: a certificate table (data
/// directory 4, whose "address" is a file offset) that lies inside the file
/// and holds at least one `WIN_CERTIFICATE` header. This says a signature
/// is there, not who made it: the firmware, shim or the kernel's keyring
/// decides that at boot.
pub fn authenticode_signed(bytes: &[u8]) -> Result<bool, NotPe> {
    use object::read::pe::{PeFile32, PeFile64};
    let dir = match PeFile64::parse(bytes) {
        Ok(pe) => pe
            .data_directory(object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY)
            .copied(),
        Err(e64) => match PeFile32::parse(bytes) {
            Ok(pe) => pe
                .data_directory(object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY)
                .copied(),
            Err(_) => return Err(NotPe(e64.to_string())),
        },
    };
    let Some(dir) = dir else {
        return Ok(false);
    };
    let (offset, size) = dir.address_range();
    // WIN_CERTIFICATE: dwLength (4), wRevision (2), wCertificateType (2).
    const HEADER: u64 = 8;
    let end = u64::from(offset) + u64::from(size);
    Ok(offset != 0 && u64::from(size) >= HEADER && end <= bytes.len() as u64)
}

/// A signing key and its X.509 certificate, both PEM files (what
/// `sbsign --key --cert` takes).
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Why [`sign`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot sign with {key} and {cert} (sbsign, Debian package sbsigntool)")]
    Sbsign {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: CommandError,
    },
}

/// `image` signed with `signing`: the same PE image with one more
/// Authenticode signature in its certificate table (a signature already
/// there stays). `sbsign` works on files, so the bytes pass through a
/// temporary directory.
pub fn sign(image: &[u8], signing: &SigningKey) -> Result<Vec<u8>, SignError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SignError::Io { path, source }
    };
    let dir = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let input = dir.path().join("in.efi");
    let output = dir.path().join("out.efi");
    std::fs::write(&input, image).map_err(io(&input))?;
    run(Command::new("sbsign")
        .arg("--key")
        .arg(&signing.key)
        .arg("--cert")
        .arg(&signing.cert)
        .arg("--output")
        .arg(&output)
        .arg(&input))
    .map_err(|source| SignError::Sbsign {
        key: signing.key.clone(),
        cert: signing.cert.clone(),
        source,
    })?;
    std::fs::read(&output).map_err(io(&output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticode_presence_is_read_from_the_pe_header() {
        let unsigned = std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
            .expect("Debian's unsigned systemd-boot (package systemd-boot-efi)");
        assert!(!authenticode_signed(&unsigned).unwrap());
        // The same image with a certificate table appended and pointed at.
        let mut signed = unsigned.clone();
        let table = signed.len() as u32;
        signed.extend_from_slice(&16u32.to_le_bytes());
        signed.extend_from_slice(&0x0200u16.to_le_bytes());
        signed.extend_from_slice(&0x0002u16.to_le_bytes());
        signed.extend_from_slice(&[0; 8]);
        let entry = security_directory_entry(&signed);
        signed[entry..entry + 4].copy_from_slice(&table.to_le_bytes());
        signed[entry + 4..entry + 8].copy_from_slice(&16u32.to_le_bytes());
        assert!(authenticode_signed(&signed).unwrap());
        // A table that points past the end of the file is not a signature.
        signed.truncate(signed.len() - 4);
        assert!(!authenticode_signed(&signed).unwrap());
        let e = authenticode_signed(b"MZ not really").unwrap_err();
        assert!(e.to_string().contains("not a PE image"), "{e}");
    }

    /// The file offset of the security data directory entry of a PE32+ image.
    fn security_directory_entry(pe: &[u8]) -> usize {
        let nt = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
        let optional = nt + 4 + 20;
        assert_eq!(
            &pe[optional..optional + 2],
            &0x20bu16.to_le_bytes(),
            "PE32+"
        );
        optional + 112 + 4 * 8
    }
}
