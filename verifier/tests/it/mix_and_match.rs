//! Mix-and-match: metadata that does not match what the referring role lists
//! (version, hash, length) is refused.
use super::support;
use support::*;
use verifier::{Error, Rule};

#[test]
fn targets_version_differs_from_snapshot_listing() {
    let mut repo = Repo::new();
    let store = client(&repo);
    // Serve targets v1 bytes under the name of v2 that snapshot lists by version only.
    let t1 = repo.served("1.targets.json");
    repo.serve("2.targets.json", t1);
    repo.snapshot.meta.insert(
        "targets.json".into(),
        verifier::metadata::MetaFile {
            version: 2,
            length: None,
            hashes: None,
        },
    );
    repo.snapshot.version += 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::VersionMismatch { listed: 2, found: 1, .. }, .. } if role == "targets"),
        "{}",
        chain(&e)
    );
}

#[test]
fn snapshot_hash_differs_from_timestamp_listing() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.snapshot.version += 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    // Same version, other content (re-signed with an extra field change).
    repo.snapshot.expires = in_days(20);
    let other =
        verifier::publish::sign_metadata(&repo.snapshot, &repo.signer_refs("snapshot")).unwrap();
    repo.serve("2.snapshot.json", other);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Mismatch { lister: "timestamp", .. }, .. } if role == "snapshot"),
        "{}",
        chain(&e)
    );
}

#[test]
fn snapshot_version_differs_from_timestamp_listing() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.snapshot.version = 5;
    let s5 = repo.write_snapshot();
    // Timestamp lists v2, but the file at 2.snapshot.json is v5.
    repo.serve("2.snapshot.json", s5.clone());
    let entry = repo.timestamp.meta.get_mut("snapshot.json").unwrap();
    entry.version = 2;
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::VersionMismatch { lister: "timestamp", .. }, .. } if role == "snapshot"),
        "{}",
        chain(&e)
    );
}

#[test]
fn delegated_role_missing_from_snapshot() {
    let mut repo = Repo::new();
    repo.delegate("targets", "team", &["team/*"], false);
    repo.add_delegated_target("team", "team/a", b"a");
    repo.commit();
    repo.snapshot.meta.remove("team.json");
    repo.snapshot.version += 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let store = repo.storage_with_root(&repo.root_v1());
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let e = up.target("team/a").unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::NotListed { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}
