//! CLI round trips of the trust subcommands with the real `phase` binary:
//! keygen -> publish -> verify (directory and HTTP), rotation end to end,
//! rollback across runs, tampering, expiry, and bad input.
use super::trust_support;

use std::os::unix::fs::PermissionsExt;

use trust_support::*;

#[test]
fn every_trust_subcommand_has_help() {
    for sub in ["keygen", "publish", "rotate", "verify", "tuf-client"] {
        let out = ok(&[sub, "--help"]);
        assert!(out.contains("Usage: phase"), "{sub}: {out}");
    }
}

#[test]
fn keygen_writes_root_and_private_keys_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("k");
    let out = ok(&[
        "keygen",
        "--out",
        s(&keys),
        "--root-keys",
        "3",
        "--root-threshold",
        "2",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["root_version"], 1);
    assert_eq!(report["roles"]["root"].as_array().unwrap().len(), 3);
    assert!(keys.join("1.root.json").is_file() && keys.join("root.json").is_file());
    let mut n = 0;
    for e in std::fs::read_dir(&keys).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "key") {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
            assert!(std::fs::read_to_string(&p)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----"));
            n += 1;
        }
    }
    assert_eq!(n, 6);
    // The root verifies as a self-signed root with threshold 2.
    let root = std::fs::read(keys.join("1.root.json")).unwrap();
    let set = verifier::TrustedSet::new(&root, chrono::Utc::now()).unwrap();
    assert_eq!(set.root().roles["root"].threshold, 2);
    let err = fails(&["keygen", "--out", s(&keys)]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let err = fails(&[
        "keygen",
        "--out",
        s(&tmp.path().join("x")),
        "--root-keys",
        "1",
        "--root-threshold",
        "2",
    ]);
    assert!(err.contains("root threshold 2"), "{err}");
}

#[test]
fn publish_then_verify_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    // Layout: consistent snapshots, hash-prefixed targets.
    for f in [
        "1.root.json",
        "root.json",
        "1.targets.json",
        "1.snapshot.json",
        "timestamp.json",
    ] {
        assert!(repo.join("metadata").join(f).is_file(), "{f}");
    }
    let kernel = std::fs::read(tmp.path().join("vmlinuz")).unwrap();
    let sha = verifier::digest::sha256_hex(&kernel);
    assert!(repo
        .join(format!("targets/stable/x86_64/{sha}.kernel"))
        .is_file());
    let out = ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("1.root.json")),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let targets = v["targets"].as_array().unwrap();
    let names: Vec<&str> = targets
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "jobs/hello.wasm",
            "stable/x86_64/initramfs",
            "stable/x86_64/kernel"
        ]
    );
    let k = &targets[2];
    assert_eq!(k["sha256"], sha.as_str());
    assert_eq!(k["length"], kernel.len() as u64);
    assert_eq!(k["version"], "2030.1");
    assert_eq!(k["cmdline"], "console=ttyS0 quiet");
    assert_eq!(k["downloaded"], true);
    // Signed custom metadata: 512 KiB chunks (the automatic size for
    // artifacts up to 64 MiB), last one shorter.
    let tj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata/1.targets.json")).unwrap())
            .unwrap();
    let custom = &tj["signed"]["targets"]["stable/x86_64/kernel"]["custom"];
    assert_eq!(custom["kind"], "kernel");
    let size = 512usize << 10;
    assert_eq!(custom["chunks"]["size"], size as u64);
    let chunks: Vec<&str> = custom["chunks"]["sha256"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(chunks.len(), kernel.len().div_ceil(size));
    assert_eq!(chunks[0], verifier::digest::sha256_hex(&kernel[..size]));
    let last = (chunks.len() - 1) * size;
    assert_eq!(
        chunks[chunks.len() - 1],
        verifier::digest::sha256_hex(&kernel[last..])
    );
    assert_eq!(
        tj["signed"]["targets"]["jobs/hello.wasm"]["custom"]["kind"],
        "job"
    );
    // Channel filter, human output.
    let out = ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("root.json")),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
    ]);
    assert!(
        out.contains("stable/x86_64/kernel") && !out.contains("jobs/hello.wasm"),
        "{out}"
    );
    assert!(out.contains("verified: root v1"), "{out}");
    let err = fails(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("root.json")),
        "--channel",
        "testing",
        "--arch",
        "x86_64",
    ]);
    assert!(err.contains("lists no targets for testing/x86_64"), "{err}");
}

#[test]
fn verify_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let server = Server::start(&repo);
    let out = ok(&[
        "verify",
        "--repo",
        &server.url(""),
        "--root",
        s(&keys.join("1.root.json")),
    ]);
    assert!(
        out.contains("3 target(s) downloaded and hash-checked"),
        "{out}"
    );
    let reqs = server.requests();
    assert!(
        reqs.contains(&"/metadata/timestamp.json".to_string()),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/targets/stable/x86_64/") && r.ends_with(".kernel")),
        "{reqs:?}"
    );
}

#[test]
fn tampered_target_fails_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let sha = verifier::digest::sha256_hex(b"initramfs bytes");
    std::fs::write(
        repo.join(format!("targets/stable/x86_64/{sha}.initramfs")),
        b"initramfs bytez",
    )
    .unwrap();
    let err = fails(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("1.root.json")),
    ]);
    assert!(
        err.contains("verifying target stable/x86_64/initramfs failed"),
        "{err}"
    );
    assert!(err.contains("sha256 hash"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Metadata-only verification still passes.
    ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("1.root.json")),
        "--no-download",
    ]);
}

#[test]
fn expired_metadata_fails_with_role_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let later = (chrono::Utc::now() + chrono::Duration::days(60)).to_rfc3339();
    let err = fails(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("1.root.json")),
        "--time",
        &later,
    ]);
    assert!(
        err.contains("timestamp metadata v1 rejected: expired at"),
        "{err}"
    );
}

#[test]
fn rotation_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let root1 = keys.join("1.root.json");
    let state = tmp.path().join("state");
    ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root1),
        "--state",
        s(&state),
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
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "snapshot",
        "--repo",
        s(&repo),
    ]);
    ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "targets",
        "--repo",
        s(&repo),
    ]);
    let out = ok(&[
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
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["root"]["root_version"], 5);
    assert!(keys.join("retired").read_dir().unwrap().count() >= 4);
    // A client holding only root v1 follows the chain; so does the stateful one.
    let out = ok(&["verify", "--repo", s(&repo), "--root", s(&root1), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["root_version"], 5);
    ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root1),
        "--state",
        s(&state),
    ]);
    // Publishing after rotation uses the new keys.
    // One 4 KiB block: a rootfs gets a dm-verity tree of whole blocks.
    std::fs::write(tmp.path().join("rootfs"), [b's'; 4096]).unwrap();
    ok(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
        "--rootfs",
        s(&tmp.path().join("rootfs")),
    ]);
    let out = ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root1),
        "--state",
        s(&state),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
    ]);
    assert!(out.contains("stable/x86_64/rootfs"), "{out}");
}

#[test]
fn rollback_refused_across_runs_with_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let root1 = keys.join("1.root.json");
    let state = tmp.path().join("state");
    let old_ts = std::fs::read(repo.join("metadata/timestamp.json")).unwrap();
    std::fs::write(tmp.path().join("more.wasm"), b"more").unwrap();
    ok(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--job",
        s(&tmp.path().join("more.wasm")),
    ]);
    ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root1),
        "--state",
        s(&state),
    ]);
    let trusted = std::fs::read(state.join("timestamp.json")).unwrap();
    std::fs::write(repo.join("metadata/timestamp.json"), &old_ts).unwrap();
    let err = fails(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root1),
        "--state",
        s(&state),
    ]);
    assert!(err.contains("timestamp metadata v1 rejected: version 1 is lower than the trusted version 2 (rollback)"), "{err}");
    assert_eq!(
        std::fs::read(state.join("timestamp.json")).unwrap(),
        trusted,
        "trusted state changed"
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let err = fails(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--channel",
        "../x",
        "--kernel",
        s(&tmp.path().join("vmlinuz")),
    ]);
    assert!(err.contains("channel \"../x\""), "{err}");
    let err = fails(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&tmp.path().join("nokeys")),
        "--kernel",
        s(&tmp.path().join("vmlinuz")),
    ]);
    assert!(err.contains("no N.root.json"), "{err}");
    let err = fails(&[
        "verify",
        "--repo",
        s(&tmp.path().join("nothing")),
        "--root",
        s(&keys.join("1.root.json")),
    ]);
    assert!(err.contains("not a repository"), "{err}");
    std::fs::write(tmp.path().join("garbage.json"), b"{not json").unwrap();
    let err = fails(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&tmp.path().join("garbage.json")),
    ]);
    assert!(
        err.contains("root metadata (version unreadable) rejected: not valid root metadata JSON"),
        "{err}"
    );
    std::fs::write(repo.join("metadata/timestamp.json"), b"\xff\xfe garbage").unwrap();
    let err = fails(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&keys.join("1.root.json")),
    ]);
    assert!(
        err.contains("timestamp metadata (version unreadable) rejected"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
