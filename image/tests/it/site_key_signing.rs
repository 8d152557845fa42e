//! A site's own key (MOK): on the written ESP, systemd-boot (shim's second
//! stage) and the kernel verify with the site certificate (`sbverify
//! --cert`) and still carry Debian's signature, shim is untouched, and
//! `EFI/phase/site-mok.cer` is the certificate in DER.
use super::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::run_ok;
use image::authenticode::SigningKey;

/// A fresh RSA key and self-signed certificate (PEM), as a site makes them.
pub fn site_key(dir: &Path, name: &str) -> SigningKey {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    SigningKey { key, cert }
}

fn sbverify(cert: &Path, file: &Path) -> std::process::Output {
    Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .expect("sbverify (Debian package sbsigntool)")
}

fn mcopy(fat: &Path, path: &str, out: &Path) -> Vec<u8> {
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(fat)
            .arg(format!("::/{path}"))
            .arg(out),
    );
    std::fs::read(out).unwrap()
}

#[test]
fn systemd_boot_and_the_kernel_verify_with_the_site_certificate() {
    let work = tempfile::tempdir().unwrap();
    let site = site_key(work.path(), "Phase Test Site");
    let other = site_key(work.path(), "Another Site");
    let set = image::signed::current(&common::build_dir()).unwrap_or_else(|e| panic!("{e}"));
    let kernel = common::kernel();
    let mut esp = image::esp::assemble(&image::esp::EspSpec {
        templates: common::repo().join("esp"),
        loaders: image::esp::Loaders::SecureBoot(set.clone()),
        kernel: kernel.vmlinuz.clone(),
        kernel_release: kernel.release.clone(),
        initramfs: vec![1, 2, 3],
        default_mode: "internet".into(),
        cmdline_extra: String::new(),
    })
    .unwrap();
    image::mok::sign_esp(&mut esp, &site).unwrap();
    let fat = work.path().join("esp.img");
    let spec = image::DiskSpec {
        size: 0,
        esp_size: 64 << 20,
        seed: [3; 32],
        mtime: 1_577_836_800,
    };
    image::disk::write_esp_image(&fat, &spec, &esp).unwrap();

    let originals: [(&str, PathBuf); 2] = [
        (image::esp::SHIM_NEXT_PATH, set.systemd_boot.clone()),
        (image::esp::KERNEL_PATH, kernel.vmlinuz.clone()),
    ];
    for (i, (path, original)) in originals.iter().enumerate() {
        let copied = work.path().join(format!("signed-{i}.efi"));
        mcopy(&fat, path, &copied);
        let out = sbverify(&site.cert, &copied);
        assert!(
            out.status.success(),
            "{path} does not verify with the site certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Not vacuous: another key's certificate does not verify it, and
        // the Debian-signed original does not verify with the site's.
        assert!(!sbverify(&other.cert, &copied).status.success(), "{path}");
        assert!(
            !sbverify(&site.cert, original).status.success(),
            "{}",
            original.display()
        );
        // Debian's signature stays beside the site's.
        let issuers = image::signed::signature_issuers(&copied).unwrap();
        assert!(
            issuers.iter().any(|i| i.contains("Debian Secure Boot CA"))
                && issuers.iter().any(|i| i.contains("Phase Test Site")),
            "{path}: {issuers:?}"
        );
    }
    // shim, the one binary the firmware checks, is Microsoft's as it came.
    let shim = mcopy(&fat, image::esp::LOADER_PATH, &work.path().join("shim"));
    assert!(shim == std::fs::read(&set.shim).unwrap());

    let cer = mcopy(&fat, image::mok::CERT_PATH, &work.path().join("site.cer"));
    let der = work.path().join("openssl.der");
    run_ok(
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&site.cert)
            .arg("-out")
            .arg(&der),
    );
    assert_eq!(cer, std::fs::read(&der).unwrap());
}

#[test]
fn a_key_that_does_not_match_its_certificate_fails_naming_the_file() {
    let work = tempfile::tempdir().unwrap();
    let site = site_key(work.path(), "Site A");
    let other = site_key(work.path(), "Site B");
    let mismatched = SigningKey {
        key: other.key.clone(),
        cert: site.cert.clone(),
    };
    let mut esp = image::esp::EspFiles::default();
    let systemd_boot = Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    esp.files.insert(
        image::esp::SHIM_NEXT_PATH.to_owned(),
        std::fs::read(systemd_boot).unwrap(),
    );
    esp.files.insert(
        image::esp::KERNEL_PATH.to_owned(),
        std::fs::read(common::kernel().vmlinuz).unwrap(),
    );
    let e = image::mok::sign_esp(&mut esp, &mismatched).unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains(image::esp::SHIM_NEXT_PATH), "{chain}");
    assert!(chain.contains("Site B.key"), "{chain}");
}
