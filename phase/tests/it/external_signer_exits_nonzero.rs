//! Bad input: an external signer that exits non-zero (a token that is not
//! plugged in, a KMS call refused). The publish fails with one line naming
//! the role, the key id and the signer's last stderr line; the repository
//! is byte-for-byte unchanged; the next honest publish is accepted.
use super::signer_support;
use super::trust_support;

use signer_support::*;
use trust_support::*;

#[test]
fn external_signer_exiting_non_zero_fails_naming_role_and_key_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ts = OpensslKey::generate(tmp.path(), "ts", KeyType::Ed25519);
    let (keys, repo) = repo_with_external_timestamp(tmp.path(), &ts);
    let id = key_id(&ts.public);
    let before = snapshot_dir(&repo.join("metadata"));
    let keys_before = snapshot_dir(&keys);

    let kernel = tmp.path().join("vmlinuz2");
    std::fs::write(&kernel, b"kernel v2").unwrap();
    let bad = ts.signer_with("timestamp", "echo 'no token in slot 9a' >&2; exit 3");
    let err = fails(&publish_args(&keys, &repo, &kernel, &bad));
    let line = one_line_naming(&err, "timestamp", &id);
    assert!(line.contains("exit status: 3"), "{line}");
    assert!(line.contains("no token in slot 9a"), "{line}");

    assert_eq!(
        snapshot_dir(&repo.join("metadata")),
        before,
        "metadata changed"
    );
    assert_eq!(snapshot_dir(&keys), keys_before, "key directory changed");
    let v = verify(&keys, &repo);
    assert_eq!(v["timestamp_version"], 1, "{v}");
    assert_eq!(v["targets"][0]["version"], "1", "{v}");

    // The next honest update is accepted.
    publish(&keys, &repo, &kernel, &[&ts.signer("timestamp")]);
    let v = verify(&keys, &repo);
    assert_eq!(v["timestamp_version"], 2, "{v}");
    assert_eq!(v["targets_version"], 2, "{v}");
}
