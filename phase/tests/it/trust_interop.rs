//! Interop with the reference implementation, python-tuf (`tuf==7.0.1` in
//! the venv at $PHASE_VENV, default /work/main/build/venv): a repository
//! written by python-tuf verifies with `phase verify` and `phase tuf-client`,
//! and a repository written by `phase publish` (with rotated roots) is
//! accepted by python-tuf's `ngclient.Updater`. Both ways with Ed25519,
//! ECDSA and RSA keys: python-tuf's own generated keys one way, openssl
//! keys driven through `phase publish --signer` the other.
use super::signer_support;
use super::trust_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use signer_support::{KeyType, OpensslKey};
use trust_support::*;

fn python() -> PathBuf {
    let venv = std::env::var("PHASE_VENV").unwrap_or_else(|_| "/work/main/build/venv".to_string());
    let py = PathBuf::from(&venv).join("bin/python");
    assert!(
        py.is_file(),
        "python venv with python-tuf missing at {venv} (set PHASE_VENV, or run `make deps` which \
         installs scripts/requirements-test.txt into build/venv)"
    );
    let check = Command::new(&py)
        .args(["-c", "import tuf.ngclient, securesystemslib.signer"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "python-tuf is not importable in {venv}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    py
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

#[test]
fn python_tuf_repository_verifies_with_phase() {
    python_repository_verifies_with_phase("ed25519");
}

#[test]
fn python_tuf_ecdsa_repository_verifies_with_phase() {
    python_repository_verifies_with_phase("ecdsa");
}

#[test]
fn python_tuf_rsa_repository_verifies_with_phase() {
    python_repository_verifies_with_phase("rsa");
}

/// `phase serve` of a cache and a repository; killed on drop.
struct PhaseServe {
    child: std::process::Child,
    url: String,
}

impl Drop for PhaseServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn phase_serve(cache: &Path, repo: &Path) -> PhaseServe {
    let mut child = phase()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cache",
            s(cache),
            "--repo",
            s(repo),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn phase serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("serve banner");
    let url = line.trim().rsplit(' ').next().unwrap_or("").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "banner: {line:?}");
    PhaseServe { child, url }
}

fn python_repository_verifies_with_phase(keytype: &str) {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("pyrepo");
    let out = Command::new(&py)
        .arg(script("make_python_repo.py"))
        .arg(&repo)
        .arg(keytype)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_python_repo.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root1 = repo.join("metadata/1.root.json");
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root1),
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        v["root_version"], 2,
        "root rotation written by python-tuf is followed"
    );
    let listed = v["targets"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{v}");
    for t in listed {
        let name = t["name"].as_str().unwrap();
        assert_eq!(t["sha256"], manifest[name]["sha256"], "{name}");
        assert_eq!(t["length"], manifest[name]["length"], "{name}");
    }
    // Same repository over HTTP through the conformance client, including
    // the delegated target.
    let server = Server::start(&repo);
    let md = tmp.path().join("md");
    let td = tmp.path().join("td");
    ok(&["tuf-client", "--metadata-dir", s(&md), "init", s(&root1)]);
    ok(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "--metadata-url",
        &server.url("metadata"),
        "--target-name",
        "team/file2.txt",
        "--target-name",
        "file1.txt",
        "--target-base-url",
        &server.url("targets"),
        "--target-dir",
        s(&td),
        "download",
    ]);
    assert_eq!(
        std::fs::read(td.join("team%2Ffile2.txt")).unwrap(),
        b"delegated file\n"
    );
    assert_eq!(
        std::fs::read(td.join("file1.txt")).unwrap(),
        b"hello from python-tuf\n"
    );
    assert!(md.join("team.json").is_file());

    // The keys really are of the type asked for.
    let root2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata/2.root.json")).unwrap()).unwrap();
    let keys = root2["signed"]["keys"].as_object().unwrap();
    assert!(!keys.is_empty());
    for (id, k) in keys {
        assert_eq!(k["keytype"], keytype, "key {id}");
    }

    // `phase fetch` through a peer serving the repository.
    let origin = phase_serve(&tmp.path().join("srv-cache"), &repo);
    let out = ok(&[
        "fetch",
        "--root",
        s(&root1),
        "--peer",
        &origin.url,
        "--cache",
        s(&tmp.path().join("cache")),
        "--target",
        "stable/x86_64/kernel",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let item = &report.as_array().unwrap()[0];
    assert_eq!(item["name"], "stable/x86_64/kernel", "{out}");
    let got = std::fs::read(item["path"].as_str().unwrap()).unwrap();
    assert_eq!(
        verifier::digest::sha256_hex(&got),
        manifest["stable/x86_64/kernel"]["sha256"].as_str().unwrap()
    );
}

#[test]
fn phase_repository_accepted_by_python_ngclient() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "root",
        "--key-count",
        "2",
        "--threshold",
        "2",
        "--repo",
        s(&repo),
    ]);
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "timestamp",
        "--repo",
        s(&repo),
    ]);
    let server = Server::start(&repo);
    let out = Command::new(&py)
        .arg(script("ngclient_download.py"))
        .arg(server.url("metadata/"))
        .arg(server.url("targets/"))
        .arg(keys.join("1.root.json"))
        .arg(tmp.path().join("ng"))
        .args([
            "stable/x86_64/kernel",
            "stable/x86_64/initramfs",
            "jobs/hello.wasm",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf ngclient refused our repository: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kernel = std::fs::read(tmp.path().join("vmlinuz")).unwrap();
    assert_eq!(
        got["stable/x86_64/kernel"]["sha256"],
        verifier::digest::sha256_hex(&kernel).as_str()
    );
    assert_eq!(
        got["stable/x86_64/kernel"]["custom"]["cmdline"],
        "console=ttyS0 quiet"
    );
    assert_eq!(
        got["jobs/hello.wasm"]["sha256"],
        verifier::digest::sha256_hex(b"\0asm wasm job").as_str()
    );
    assert!(
        server
            .requests()
            .contains(&"/metadata/3.root.json".to_string()),
        "{:?}",
        server.requests()
    );
}

/// A repository whose four roles are openssl keys of `kind`, driven through
/// `phase rotate --new-key --signer` and `phase publish --signer`, is
/// accepted by python-tuf's ngclient from root v1.
fn external_signer_repository_accepted_by_python(kind: KeyType) {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let root = OpensslKey::generate(dir, "root", kind);
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "root",
        "--new-key",
        s(&root.public),
        "--signer",
        &root.signer("root"),
    ]);
    let mut signers = Vec::new();
    for role in ["targets", "snapshot", "timestamp"] {
        let k = OpensslKey::generate(dir, role, kind);
        ok(&[
            "rotate",
            "--keys",
            s(&keys),
            "--role",
            role,
            "--new-key",
            s(&k.public),
            "--signer",
            &root.signer("root"),
        ]);
        signers.push(k.signer(role));
    }
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, b"kernel signed by an external signer").unwrap();
    let mut args = vec![
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--kernel",
        s(&kernel),
    ];
    for sg in &signers {
        args.extend(["--signer", sg.as_str()]);
    }
    ok(&args);

    let server = Server::start(&repo);
    let out = Command::new(&py)
        .arg(script("ngclient_download.py"))
        .arg(server.url("metadata/"))
        .arg(server.url("targets/"))
        .arg(keys.join("1.root.json"))
        .arg(dir.join("ng"))
        .arg("stable/x86_64/kernel")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-tuf ngclient refused the {} repository: {}",
        kind.scheme(),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got["stable/x86_64/kernel"]["sha256"],
        verifier::digest::sha256_hex(b"kernel signed by an external signer").as_str()
    );
    assert!(
        server
            .requests()
            .contains(&"/metadata/5.root.json".to_string()),
        "{:?}",
        server.requests()
    );
}

#[test]
fn external_ecdsa_p256_signer_repository_accepted_by_python_ngclient() {
    external_signer_repository_accepted_by_python(KeyType::EcdsaP256);
}

#[test]
fn external_ecdsa_p384_signer_repository_accepted_by_python_ngclient() {
    external_signer_repository_accepted_by_python(KeyType::EcdsaP384);
}

#[test]
fn external_rsa_pss_signer_repository_accepted_by_python_ngclient() {
    external_signer_repository_accepted_by_python(KeyType::RsaPss);
}

#[test]
fn external_rsa_pkcs1v15_signer_repository_accepted_by_python_ngclient() {
    external_signer_repository_accepted_by_python(KeyType::RsaPkcs1);
}

#[test]
fn external_ed25519_signer_repository_accepted_by_python_ngclient() {
    external_signer_repository_accepted_by_python(KeyType::Ed25519);
}
