//! Arbitrary software installation: targets whose bytes do not match the
//! signed length and hashes, and metadata signed by keys the role does not
//! trust, are refused.
use super::support;
use support::*;
use verifier::{Error, HashMismatch, Rule, TargetRule};

#[test]
fn target_with_bad_hash() {
    let mut repo = Repo::new();
    repo.add_target("a/file", b"hello");
    repo.commit();
    let store = client(&repo);
    let path = format!("a/{}.file", verifier::digest::sha256_hex(b"hello"));
    repo.blobs.lock().unwrap().insert(path, b"hellO".to_vec());
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let t = up.target("a/file").unwrap();
    let e = up.download_bytes(&t).unwrap_err();
    assert!(
        matches!(
            e.target_rule(),
            Some(TargetRule::Mismatch(HashMismatch::Hash { .. }))
        ),
        "{}",
        chain(&e)
    );
    assert!(t.verify_bytes(b"hello").is_ok());
}

#[test]
fn target_with_wrong_length() {
    let mut repo = Repo::new();
    repo.add_target("a/file", b"hello");
    repo.commit();
    let store = client(&repo);
    let path = format!("a/{}.file", verifier::digest::sha256_hex(b"hello"));
    repo.blobs.lock().unwrap().insert(path, b"hell".to_vec());
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let t = up.target("a/file").unwrap();
    let e = up.download_bytes(&t).unwrap_err();
    assert!(
        matches!(
            e.target_rule(),
            Some(TargetRule::Mismatch(HashMismatch::Length {
                expected: 5,
                found: 4
            }))
        ),
        "{}",
        chain(&e)
    );
}

#[test]
fn targets_signed_by_an_untrusted_key() {
    let mut repo = Repo::new();
    let store = client(&repo);
    let before = store.snapshot();
    repo.signers.insert("targets".into(), vec![key("attacker")]);
    repo.add_target("a/evil", b"evil");
    repo.commit();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Threshold { valid: 0, threshold: 1, .. }, .. } if role == "targets"),
        "{}",
        chain(&e)
    );
    assert_eq!(
        store.snapshot().get("targets.json"),
        before.get("targets.json")
    );
}

#[test]
fn tampered_signed_content() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.timestamp.version += 1;
    let ts = repo.write_timestamp();
    let tampered = String::from_utf8(ts)
        .unwrap()
        .replace("\"version\": 2", "\"version\": 3");
    repo.serve("timestamp.json", tampered.into_bytes());
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Threshold { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}

#[test]
fn wrong_type_and_spec_version() {
    let mut repo = Repo::new();
    let store = client(&repo);
    // Snapshot bytes served as timestamp.
    let snap = repo.served("1.snapshot.json");
    repo.serve("timestamp.json", snap);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::WrongType { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
    repo.timestamp.version += 1;
    repo.timestamp.spec_version = "2.0.0".into();
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::SpecVersion(_),
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}
