//! An offline root with online timestamp and snapshot keys: the publishing
//! server holds only the roots (public) and the snapshot and timestamp
//! private keys. `phase publish --refresh` re-signs snapshot and timestamp
//! there on a schedule; publishing new targets needs the targets key, which
//! it does not have, and fails naming it; the offline side publishes a
//! release and the server keeps refreshing it.
use super::signer_support;
use super::trust_support;

use signer_support::*;
use trust_support::*;

#[test]
fn online_server_refreshes_timestamp_without_root_or_targets_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let offline = tmp.path().join("offline");
    let online = tmp.path().join("online");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&offline)]);
    let kernel = tmp.path().join("vmlinuz");
    std::fs::write(&kernel, b"release 1").unwrap();
    publish(&offline, &repo, &kernel, &[]);

    // The online key directory: roots and the two online keys only.
    std::fs::create_dir_all(&online).unwrap();
    let mut targets_id = String::new();
    for e in std::fs::read_dir(&offline).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let online_key = name.starts_with("snapshot-") || name.starts_with("timestamp-");
        if name.ends_with("root.json") || online_key {
            std::fs::copy(&p, online.join(&name)).unwrap();
        }
    }
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(offline.join("root.json")).unwrap()).unwrap();
    targets_id.push_str(
        root["signed"]["roles"]["targets"]["keyids"][0]
            .as_str()
            .unwrap(),
    );

    // Scheduled refresh on the server.
    for round in 2..=3 {
        ok(&[
            "publish",
            "--repo",
            s(&repo),
            "--keys",
            s(&online),
            "--refresh",
            "--expires",
            "1d",
        ]);
        let v = verify(&offline, &repo);
        assert_eq!(v["timestamp_version"], round, "{v}");
        assert_eq!(v["snapshot_version"], round, "{v}");
        assert_eq!(v["targets_version"], 1, "{v}");
    }

    // New targets need the targets key, which is not online.
    std::fs::write(&kernel, b"release 2").unwrap();
    let before = snapshot_dir(&repo.join("metadata"));
    let err = fails(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&online),
        "--kernel",
        s(&kernel),
    ]);
    assert!(
        err.contains("targets") && err.contains(&targets_id),
        "{err}"
    );
    assert_eq!(snapshot_dir(&repo.join("metadata")), before);

    // The offline side publishes the release; the server refreshes it.
    publish(&offline, &repo, &kernel, &[]);
    ok(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&online),
        "--refresh",
    ]);
    let v = verify(&offline, &repo);
    assert_eq!(v["targets_version"], 2, "{v}");
    assert_eq!(v["timestamp_version"], 5, "{v}");
    assert_eq!(v["targets"][0]["version"], "2", "{v}");

    // A refresh with artifacts is refused by the CLI.
    let out = run(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&online),
        "--refresh",
        "--kernel",
        s(&kernel),
    ]);
    assert!(!out.status.success());
}
