//! Root rotation through `N+1.root.json`: a good chain is followed; a
//! skipped version, a root signed only by the new keys or only by the old
//! keys is refused; rotation is bounded in count and bytes.
use super::support;
use support::*;
use verifier::{Error, Limits, Rule, Storage};

fn stored_root_version(store: &verifier::MemoryStorage) -> u64 {
    let b = store.load("root.json").unwrap().unwrap();
    let env: verifier::metadata::Envelope = serde_json::from_slice(&b).unwrap();
    env.signed["version"].as_u64().unwrap()
}

#[test]
fn good_chain_is_followed() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.rotate("root", 2);
    repo.rotate("root", 1);
    repo.rotate("targets", 1);
    repo.commit();
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert_eq!(up.root().unwrap().version, 4);
    assert_eq!(stored_root_version(&store), 4);
    let f = up.root_fingerprint().unwrap();
    assert_eq!(f.len(), 64);
    assert_eq!(f, verifier::root_fingerprint(&repo.root));
}

#[test]
fn skipped_version_is_refused() {
    let mut repo = Repo::new();
    let store = client(&repo);
    // Same keys, version 3 served as 2.root.json: properly signed, wrong version.
    repo.root.version = 3;
    let v3 = repo.root_bytes();
    repo.serve("2.root.json", v3);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::RootVersion { expected: 2, found: 3 }, .. } if role == "root"),
        "{}",
        chain(&e)
    );
    assert_eq!(stored_root_version(&store), 1);
    repo.root.version = 2;
    repo.write_root();
    repo.updater(&store).refresh().expect("honest chain");
    assert_eq!(stored_root_version(&store), 2);
}

#[test]
fn signed_only_by_new_keys_is_refused() {
    let mut repo = Repo::new();
    let store = client(&repo);
    let fresh = repo.fresh_key("root");
    repo.root.keys.insert(fresh.key_id(), fresh.public_key());
    repo.root.roles.get_mut("root").unwrap().keyids = vec![fresh.key_id()];
    repo.root.version = 2;
    repo.signers.insert("root".into(), vec![fresh]);
    repo.write_root();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Threshold { signer, .. }, .. } if role == "root" && signer.starts_with("trusted root v1")),
        "{}",
        chain(&e)
    );
    assert_eq!(stored_root_version(&store), 1);
}

#[test]
fn signed_only_by_old_keys_is_refused() {
    let mut repo = Repo::new();
    let store = client(&repo);
    let fresh = repo.fresh_key("root");
    repo.root.keys.insert(fresh.key_id(), fresh.public_key());
    repo.root.roles.get_mut("root").unwrap().keyids = vec![fresh.key_id()];
    repo.root.version = 2;
    repo.write_root(); // signed with the old key only
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Threshold { signer, .. }, .. } if role == "root" && signer.starts_with("new root v2")),
        "{}",
        chain(&e)
    );
    assert_eq!(stored_root_version(&store), 1);
}

#[test]
fn rotation_count_is_bounded() {
    let mut repo = Repo::new();
    let store = client(&repo);
    for _ in 0..5 {
        repo.rotate("root", 1);
    }
    let limits = Limits {
        max_root_rotations: 2,
        ..Limits::default()
    };
    repo.updater(&store).with_limits(limits).refresh().unwrap();
    assert_eq!(stored_root_version(&store), 3);
    repo.updater(&store).with_limits(limits).refresh().unwrap();
    assert_eq!(stored_root_version(&store), 5);
    repo.updater(&store).refresh().unwrap();
    assert_eq!(stored_root_version(&store), 6);
}

#[test]
fn intermediate_expired_root_is_fine_final_expired_is_not() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.root.expires = in_days(-5);
    repo.rotate("root", 1); // v2 expired
    repo.root.expires = in_days(50);
    repo.rotate("root", 1); // v3 valid
    repo.updater(&store).refresh().unwrap();
    assert_eq!(stored_root_version(&store), 3);
}
