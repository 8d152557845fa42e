//! Fast-forward recovery: after an attacker pushed huge versions with a
//! compromised timestamp or snapshot key, rotating that key in root lets
//! clients accept the repository's real (lower) versions again.
use super::support;
use support::*;
use verifier::{Error, Rule};

#[test]
fn timestamp_key_rotation_recovers() {
    let mut repo = Repo::new();
    let store = client(&repo);
    // Attacker with the timestamp key: version 1000.
    let honest_version = repo.timestamp.version;
    repo.timestamp.version = 1000;
    repo.write_timestamp();
    repo.updater(&store).refresh().unwrap();
    // Repository back to honest versions: refused as rollback until rotation.
    repo.timestamp.version = honest_version + 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Rollback { trusted: 1000, .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
    repo.rotate("timestamp", 1);
    repo.write_timestamp();
    repo.updater(&store)
        .refresh()
        .expect("recovered after timestamp key rotation");
}

#[test]
fn snapshot_key_rotation_recovers() {
    let mut repo = Repo::new();
    let store = client(&repo);
    // Attacker with snapshot + timestamp keys: snapshot version 1000.
    repo.snapshot.version = 1000;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    repo.updater(&store).refresh().unwrap();
    // Honest snapshot v2: refused until the snapshot key rotates.
    repo.snapshot.version = 2;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::MetaRollback { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
    repo.rotate("snapshot", 1);
    repo.rotate("timestamp", 1);
    repo.write_snapshot();
    repo.timestamp.version = 1;
    repo.write_timestamp();
    repo.updater(&store)
        .refresh()
        .expect("recovered after snapshot key rotation");
}

#[test]
fn targets_version_fast_forward_recovers_with_snapshot_rotation() {
    let mut repo = Repo::new();
    let store = client(&repo);
    // Attacker lists targets v1000 in snapshot.
    repo.targets.version = 1000;
    repo.write_targets();
    repo.snapshot.version += 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    repo.updater(&store).refresh().unwrap();
    repo.targets.version = 2;
    repo.rotate("snapshot", 1);
    repo.commit();
    repo.updater(&store).refresh().expect("recovered");
}
