//! A site's own Secure Boot key (a Machine Owner Key, MOK): the ESP's
//! second stage (systemd-boot, which shim starts) and its kernel get one
//! more Authenticode signature made with the site's key, and the site's
//! certificate goes on the ESP in DER ([`CERT_PATH`]) for
//! `mokutil --import`. Once a machine has enrolled it, shim trusts the
//! site key beside Debian's, so a site-built systemd-boot or kernel (one
//! that carries the site's signature only) boots with Secure Boot on.
//! The Debian signatures stay, so a machine that has not enrolled the key
//! boots the stick as before.
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::authenticode::{self, SignError, SigningKey};
use crate::esp::{EspFiles, KERNEL_PATH, SHIM_NEXT_PATH};

/// ESP path of the site certificate (DER), for `mokutil --import` or
/// MokManager's "Enroll key from disk".
pub const CERT_PATH: &str = "EFI/phase/site-mok.cer";

/// The ESP files signed with the site key.
pub const SIGNED_PATHS: [&str; 2] = [SHIM_NEXT_PATH, KERNEL_PATH];

#[derive(Debug, thiserror::Error)]
pub enum MokError {
    #[error("cannot read the site certificate {path}")]
    ReadCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM certificate (expected one -----BEGIN CERTIFICATE----- block)")]
    NotPem { path: PathBuf },
    #[error("the ESP has no {0} to sign (a site key needs the Secure Boot loaders)")]
    Missing(&'static str),
    #[error("cannot sign the ESP's {path} with the site key")]
    Sign {
        path: &'static str,
        #[source]
        source: SignError,
    },
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM file.
pub fn cert_der(path: &Path) -> Result<Vec<u8>, MokError> {
    let text = std::fs::read_to_string(path).map_err(|source| MokError::ReadCert {
        path: path.to_path_buf(),
        source,
    })?;
    let not_pem = || MokError::NotPem {
        path: path.to_path_buf(),
    };
    let (_, rest) = text
        .split_once("-----BEGIN CERTIFICATE-----")
        .ok_or_else(not_pem)?;
    let (body, _) = rest
        .split_once("-----END CERTIFICATE-----")
        .ok_or_else(not_pem)?;
    let b64: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|der| !der.is_empty())
        .ok_or_else(not_pem)
}

/// Signs the ESP's systemd-boot and kernel with `site` and adds the site
/// certificate at [`CERT_PATH`].
pub fn sign_esp(files: &mut EspFiles, site: &SigningKey) -> Result<(), MokError> {
    let der = cert_der(&site.cert)?;
    for path in SIGNED_PATHS {
        let bytes = files.files.get(path).ok_or(MokError::Missing(path))?;
        let signed =
            authenticode::sign(bytes, site).map_err(|source| MokError::Sign { path, source })?;
        files.files.insert(path.to_owned(), signed);
    }
    files.files.insert(CERT_PATH.to_owned(), der);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_block_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = cert_der(&path).unwrap_err();
        assert!(matches!(e, MokError::NotPem { .. }), "{e}");
        assert!(e.to_string().contains("site.pem"), "{e}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(cert_der(&path), Err(MokError::NotPem { .. })));
    }

    #[test]
    fn an_esp_without_the_secure_boot_loaders_cannot_be_signed() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut files = EspFiles::default();
        files.files.insert(KERNEL_PATH.to_owned(), vec![0; 16]);
        let site = SigningKey {
            key: dir.path().join("k.pem"),
            cert,
        };
        let e = sign_esp(&mut files, &site).unwrap_err();
        assert!(e.to_string().contains(SHIM_NEXT_PATH), "{e}");
    }
}
