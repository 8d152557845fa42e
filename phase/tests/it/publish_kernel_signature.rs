//! `phase publish --kernel` reads the kernel's Authenticode signature:
//! Debian's signed kernel is published without a word; the same kernel with
//! its signature removed (`sbattach --remove`) is published with a warning
//! naming it, and refused with one line by `--require-signed-kernel`, which
//! leaves the repository as it was; a file that is not a PE image is
//! reported as one that cannot be checked.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::trust_support::*;

fn build_dir() -> PathBuf {
    std::env::var_os("PHASE_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build"))
}

/// Debian's signed kernel that `make kernel` unpacked.
fn signed_kernel() -> PathBuf {
    image::kernel::current(&build_dir())
        .unwrap_or_else(|e| {
            panic!(
                "test prerequisite missing: {e} (PHASE_BUILD={}, run `make kernel`)",
                build_dir().display()
            )
        })
        .vmlinuz
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `publish --kernel KERNEL --json` plus `more`: (status, stdout, stderr).
fn publish(
    keys: &Path,
    repo: &Path,
    kernel: &Path,
    more: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let out = phase()
        .args(["publish", "--repo", s(repo), "--keys", s(keys)])
        .args(["--kernel", s(kernel), "--json"])
        .args(more)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn published_names(stdout: &str) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(stdout).unwrap();
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_signed_debian_kernel_is_published_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let kernel = signed_kernel();
    let (status, stdout, stderr) = publish(&keys, &repo, &kernel, &[]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr, "", "a signed kernel needs no word");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["kernel_signature"], "signed", "{report}");
    assert_eq!(published_names(&stdout), ["stable/x86_64/kernel"]);
    // Required, it passes as well.
    let (status, _, stderr) = publish(&keys, &repo, &kernel, &["--require-signed-kernel"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn an_unsigned_kernel_is_published_with_a_warning_and_refused_when_signatures_are_required() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    // sbattach edits in place: strip a copy.
    let unsigned = tmp.path().join("vmlinuz-unsigned");
    std::fs::copy(signed_kernel(), &unsigned).unwrap();
    let out = Command::new("sbattach")
        .arg("--remove")
        .arg(&unsigned)
        .output()
        .expect("sbattach (Debian package sbsigntool)");
    assert!(
        out.status.success(),
        "sbattach --remove: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        std::fs::read(&unsigned).unwrap(),
        std::fs::read(signed_kernel()).unwrap(),
        "sbattach removed nothing"
    );

    let (status, stdout, stderr) = publish(&keys, &repo, &unsigned, &[]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("phase: warning: kernel ")
            && stderr.contains(s(&unsigned))
            && stderr.contains("no Authenticode signature")
            && stderr.contains("Secure Boot")
            && stderr.contains("--require-signed-kernel"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["kernel_signature"], "unsigned", "{report}");
    assert_eq!(published_names(&stdout), ["stable/x86_64/kernel"]);

    // Required: one line naming the file, and the repository unchanged.
    let before = snapshot(&repo);
    let (status, stdout, stderr) = publish(
        &keys,
        &repo,
        &unsigned,
        &["--require-signed-kernel", "--release-version", "2"],
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("phase: error: kernel ")
            && stderr.contains(s(&unsigned))
            && stderr.contains("no Authenticode signature")
            && stderr.contains("nothing published"),
        "{stderr}"
    );
    assert!(snapshot(&repo) == before, "the repository changed");
}

#[test]
fn a_kernel_that_is_not_a_pe_image_is_reported_as_unchecked() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let garbage = tmp.path().join("vmlinuz");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let (status, stdout, stderr) = publish(&keys, &repo, &garbage, &[]);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.starts_with("phase: warning: kernel ")
            && stderr.contains(s(&garbage))
            && stderr.contains("not a PE image"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["kernel_signature"], "not_pe", "{report}");

    let before = snapshot(&repo);
    let (status, _, stderr) = publish(&keys, &repo, &garbage, &["--require-signed-kernel"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(s(&garbage)) && stderr.contains("not a PE image"),
        "{stderr}"
    );
    assert!(snapshot(&repo) == before, "the repository changed");
}
