//! `phase image --sign-key --sign-cert` (the MOK path): the written ESP's
//! systemd-boot and kernel verify with the site certificate, the
//! certificate is on the ESP in DER for `mokutil --import`, and a site key
//! without shim (`--no-secure-boot`) is refused before any work.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::trust_support::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_dir() -> PathBuf {
    std::env::var_os("PHASE_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build"))
}

fn sh(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mcopy(fat: &Path, path: &str, out: &Path) {
    sh(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(fat)
        .arg(format!("::/{path}"))
        .arg(out));
}

#[test]
fn phase_image_signs_the_esp_with_the_site_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, cert) = (dir.join("site.key"), dir.join("site.crt"));
    sh(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=Phase CLI Test Site", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let kernel = image::kernel::current(&build_dir())
        .unwrap_or_else(|e| panic!("test prerequisite missing: {e} (run `make kernel`)"));
    // A prebuilt initramfs: the ESP carries it, nothing reads it here.
    let initramfs = dir.join("initramfs.img");
    std::fs::write(&initramfs, b"initramfs bytes").unwrap();
    let esp = dir.join("esp.img");
    let stdout = ok(&[
        "image",
        "--stage",
        "esp",
        "--out",
        s(&esp),
        "--initramfs",
        s(&initramfs),
        "--kernel-version",
        &kernel.release,
        "--build-dir",
        s(&build_dir()),
        "--templates",
        s(&repo_root().join("esp")),
        "--esp-size",
        "64M",
        "--sign-key",
        s(&key),
        "--sign-cert",
        s(&cert),
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["site_cert"], image::mok::CERT_PATH, "{summary}");
    assert_eq!(
        summary["site_key_signed"],
        serde_json::json!(image::mok::SIGNED_PATHS),
        "{summary}"
    );

    for (i, path) in image::mok::SIGNED_PATHS.iter().enumerate() {
        let file = dir.join(format!("signed-{i}.efi"));
        mcopy(&esp, path, &file);
        sh(Command::new("sbverify").arg("--cert").arg(&cert).arg(&file));
    }
    let cer = dir.join("site.cer");
    mcopy(&esp, image::mok::CERT_PATH, &cer);
    let der = sh(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert));
    assert_eq!(std::fs::read(&cer).unwrap(), der);
}

#[test]
fn a_site_key_needs_shim() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run(&[
        "image",
        "--stage",
        "esp",
        "--out",
        s(&dir.join("esp.img")),
        "--initramfs",
        s(&dir.join("initramfs.img")),
        "--no-secure-boot",
        "--sign-key",
        s(&dir.join("site.key")),
        "--sign-cert",
        s(&dir.join("site.crt")),
    ]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--no-secure-boot") && stderr.contains("--sign-key"),
        "{stderr}"
    );
    assert!(!dir.join("esp.img").exists());
}
