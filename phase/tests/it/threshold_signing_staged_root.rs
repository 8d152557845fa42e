//! Threshold signing by several people: root moves to three keys held
//! outside the machine (openssl keys standing in for three tokens) with a
//! threshold of two. `phase rotate --stage` writes staged/2.root.json signed
//! by the current root key; each `phase sign` adds one signature; `phase
//! publish` refuses to make the new root current while it is below its
//! threshold and names the missing keys, and makes it current once two of
//! the three have signed. Clients that trust root v1 follow it.
use super::signer_support;
use super::trust_support;

use signer_support::*;
use trust_support::*;

#[test]
fn staged_root_becomes_current_only_at_its_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let kernel = tmp.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel v1").unwrap();
    publish(&keys, &repo, &kernel, &[]);

    let people: Vec<OpensslKey> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| OpensslKey::generate(tmp.path(), n, KeyType::Ed25519))
        .collect();
    let ids: Vec<String> = people.iter().map(|p| key_id(&p.public)).collect();
    let mut rotate = vec![
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "root",
        "--threshold",
        "2",
    ];
    for p in &people {
        rotate.extend(["--new-key", s(&p.public)]);
    }
    rotate.push("--stage");
    ok(&rotate);
    let staged = keys.join("staged/2.root.json");
    assert!(staged.is_file());
    assert!(
        !keys.join("2.root.json").exists(),
        "staged root made current too early"
    );

    // Below threshold: publish fails naming all three missing keys and
    // changes nothing.
    let before = snapshot_dir(&repo.join("metadata"));
    let err = fails(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--kernel",
        s(&kernel),
    ]);
    for id in &ids {
        assert!(
            err.contains(id.as_str()),
            "missing key {id} not named: {err}"
        );
    }
    assert!(err.contains("0 of the 2 root signatures"), "{err}");
    assert!(!err.trim_end().contains('\n'), "{err}");
    assert_eq!(snapshot_dir(&repo.join("metadata")), before);

    // Alice signs: one of two; publish names bob and carol only.
    let out = ok(&[
        "sign",
        "--keys",
        s(&keys),
        "--file",
        s(&staged),
        "--signer",
        &people[0].signer("root"),
    ]);
    assert!(out.contains("1 of 2 signatures"), "{out}");
    let err = fails(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--kernel",
        s(&kernel),
    ]);
    assert!(err.contains("1 of the 2 root signatures"), "{err}");
    assert!(!err.contains(ids[0].as_str()), "{err}");
    assert!(
        err.contains(ids[1].as_str()) && err.contains(ids[2].as_str()),
        "{err}"
    );
    assert_eq!(snapshot_dir(&repo.join("metadata")), before);
    assert_eq!(verify(&keys, &repo)["root_version"], 1);

    // Signing again with the same key does not count twice.
    ok(&[
        "sign",
        "--keys",
        s(&keys),
        "--file",
        s(&staged),
        "--signer",
        &people[0].signer("root"),
    ]);
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(&staged).unwrap()).unwrap();
    assert_eq!(env["signatures"].as_array().unwrap().len(), 2, "{env}");

    // A key that is no root key is refused, naming it.
    let mallory = OpensslKey::generate(tmp.path(), "mallory", KeyType::Ed25519);
    let err = fails(&[
        "sign",
        "--keys",
        s(&keys),
        "--file",
        s(&staged),
        "--signer",
        &mallory.signer("root"),
    ]);
    one_line_naming(&err, "root", &key_id(&mallory.public));
    assert!(err.contains("not a root key"), "{err}");

    // Carol signs on her machine: threshold met; publish makes root v2
    // current and signs the rest with the online keys.
    let out = ok(&[
        "sign",
        "--keys",
        s(&keys),
        "--file",
        s(&staged),
        "--signer",
        &people[2].signer("root"),
    ]);
    assert!(out.contains("thresholds met"), "{out}");
    std::fs::write(&kernel, b"kernel v2").unwrap();
    publish(&keys, &repo, &kernel, &[]);
    assert!(!staged.exists());
    assert!(keys.join("2.root.json").is_file());
    assert!(
        std::fs::read_dir(keys.join("retired")).unwrap().count() == 1,
        "the old root key is retired"
    );
    let v = verify(&keys, &repo);
    assert_eq!(v["root_version"], 2, "{v}");
    assert_eq!(v["targets_version"], 2, "{v}");
    let root2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata/2.root.json")).unwrap()).unwrap();
    assert_eq!(root2["signed"]["roles"]["root"]["threshold"], 2);
    assert_eq!(
        root2["signed"]["roles"]["root"]["keyids"],
        serde_json::json!(ids)
    );
}
