//! Bad input: an external signer that exits 0 but prints something that is
//! not a valid signature for its declared key: text that is not a
//! signature, output that does not decode in the declared format, and a
//! real signature by another key. Each fails with one line naming the role
//! and key id; nothing is written (repository metadata and a staged root
//! are unchanged); the next honest signature is accepted.
use super::signer_support;
use super::trust_support;

use signer_support::*;
use trust_support::*;

#[test]
fn external_signer_printing_garbage_fails_naming_role_and_key_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ts = OpensslKey::generate(tmp.path(), "ts", KeyType::Ed25519);
    let other = OpensslKey::generate(tmp.path(), "other", KeyType::Ed25519);
    let (keys, repo) = repo_with_external_timestamp(tmp.path(), &ts);
    let id = key_id(&ts.public);
    let before = snapshot_dir(&repo.join("metadata"));
    let kernel = tmp.path().join("vmlinuz2");
    std::fs::write(&kernel, b"kernel v2").unwrap();

    // Raw output that is no signature.
    let bad = ts.signer_with("timestamp", "cat >/dev/null; printf 'Signature: OK'");
    let line = one_line_naming(
        &fails(&publish_args(&keys, &repo, &kernel, &bad)),
        "timestamp",
        &id,
    );
    assert!(line.contains("does not verify"), "{line}");

    // Nothing at all.
    let bad = ts.signer_with("timestamp", "true");
    let line = one_line_naming(
        &fails(&publish_args(&keys, &repo, &kernel, &bad)),
        "timestamp",
        &id,
    );
    assert!(line.contains("no signature printed"), "{line}");

    // Declared hex, prints something else.
    let bad = ts.signer_with("timestamp", "echo 'zz not hex'");
    let mut args = publish_args(&keys, &repo, &kernel, &bad);
    args.extend(["--signer-format", "hex"]);
    let line = one_line_naming(&fails(&args), "timestamp", &id);
    assert!(line.contains("not hex"), "{line}");

    // A genuine signature, by the wrong key.
    let bad = ts.signer_with("timestamp", &other.command());
    let line = one_line_naming(
        &fails(&publish_args(&keys, &repo, &kernel, &bad)),
        "timestamp",
        &id,
    );
    assert!(line.contains("does not verify"), "{line}");

    assert_eq!(
        snapshot_dir(&repo.join("metadata")),
        before,
        "metadata changed"
    );
    assert_eq!(verify(&keys, &repo)["timestamp_version"], 1);

    // A staged root: garbage from a root signer leaves it as it was.
    let root_key = OpensslKey::generate(tmp.path(), "root2", KeyType::Ed25519);
    let root_id = key_id(&root_key.public);
    let out = ok(&[
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "root",
        "--new-key",
        s(&root_key.public),
        "--stage",
    ]);
    let staged = keys.join("staged/3.root.json");
    assert!(staged.is_file(), "{out}");
    let staged_before = std::fs::read(&staged).unwrap();
    let garbage = root_key.signer_with("root", "head -c 64 /dev/urandom");
    let err = fails(&[
        "sign",
        "--keys",
        s(&keys),
        "--file",
        s(&staged),
        "--signer",
        &garbage,
    ]);
    one_line_naming(&err, "root", &root_id);
    assert_eq!(
        std::fs::read(&staged).unwrap(),
        staged_before,
        "staged root changed"
    );

    // The honest signers are accepted.
    ok(&[
        "sign",
        "--keys",
        s(&keys),
        "--file",
        s(&staged),
        "--signer",
        &root_key.signer("root"),
    ]);
    publish(&keys, &repo, &kernel, &[&ts.signer("timestamp")]);
    let v = verify(&keys, &repo);
    assert_eq!(v["root_version"], 3, "{v}");
    assert_eq!(v["timestamp_version"], 2, "{v}");
}
