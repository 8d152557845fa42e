//! Interop with the reference implementation, python-tuf (`tuf==7.0.1` in
//! the venv at $PHASE_VENV, default /work/main/build/venv): a repository
//! written by python-tuf verifies with `phase verify` and `phase tuf-client`,
//! and a repository written by `phase publish` (with rotated roots) is
//! accepted by python-tuf's `ngclient.Updater`.
mod trust_support;

use std::path::PathBuf;
use std::process::Command;

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
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("pyrepo");
    let out = Command::new(&py)
        .arg(script("make_python_repo.py"))
        .arg(&repo)
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
