//! Rollback attacks: an older version of each role is refused, the trusted
//! state is left as it was, and the next honest update succeeds.
use super::support;
use support::*;
use verifier::{Error, Rule};

fn assert_rollback(e: &Error, role: &str) {
    match e {
        Error::Rejected {
            role: r,
            rule: Rule::Rollback { .. } | Rule::MetaRollback { .. },
            ..
        } => {
            assert_eq!(r, role, "{}", chain(e))
        }
        other => panic!("expected {role} rollback, got {}", chain(other)),
    }
}

#[test]
fn timestamp_rollback_is_refused() {
    let mut repo = Repo::new();
    repo.commit(); // v2 everywhere
    let store = client(&repo);
    let before = store.snapshot();
    repo.timestamp.version = 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_rollback(&e, "timestamp");
    assert!(
        chain(&e).contains("timestamp metadata v1 rejected"),
        "{}",
        chain(&e)
    );
    assert_eq!(store.snapshot(), before, "trusted state changed");
    repo.timestamp.version = 3;
    repo.write_timestamp();
    repo.updater(&store)
        .refresh()
        .expect("honest update after the attack");
}

#[test]
fn snapshot_version_rollback_in_timestamp_is_refused() {
    let mut repo = Repo::new();
    repo.commit();
    let store = client(&repo);
    let before = store.snapshot();
    // New timestamp that points at the old snapshot v1.
    let old_snapshot = repo.served("1.snapshot.json");
    repo.timestamp.version = 3;
    repo.timestamp
        .meta
        .get_mut("snapshot.json")
        .unwrap()
        .version = 1;
    repo.timestamp.meta.get_mut("snapshot.json").unwrap().hashes = Some(
        [(
            "sha256".to_string(),
            verifier::digest::sha256_hex(&old_snapshot),
        )]
        .into(),
    );
    repo.timestamp.meta.get_mut("snapshot.json").unwrap().length = Some(old_snapshot.len() as u64);
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_rollback(&e, "timestamp");
    assert_eq!(store.snapshot(), before);
    repo.commit();
    repo.updater(&store).refresh().expect("honest update");
}

#[test]
fn targets_rollback_in_snapshot_is_refused() {
    let mut repo = Repo::new();
    repo.commit();
    let store = client(&repo);
    let before = store.snapshot();
    // A new snapshot that lists the old targets v1.
    let t1 = repo.served("1.targets.json");
    repo.snapshot.version = 3;
    repo.snapshot.meta.insert(
        "targets.json".into(),
        verifier::metadata::MetaFile {
            version: 1,
            length: Some(t1.len() as u64),
            hashes: None,
        },
    );
    repo.write_snapshot();
    repo.timestamp.version = 3;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_rollback(&e, "snapshot");
    assert!(chain(&e).contains("targets.json"), "{}", chain(&e));
    // The timestamp was valid and is kept; snapshot and targets are unchanged.
    let after = store.snapshot();
    assert_eq!(after.get("snapshot.json"), before.get("snapshot.json"));
    assert_eq!(after.get("targets.json"), before.get("targets.json"));
    repo.commit();
    repo.updater(&store).refresh().expect("honest update");
}

#[test]
fn snapshot_version_lower_than_trusted_is_refused_after_restart() {
    let mut repo = Repo::new();
    repo.commit();
    repo.commit(); // v3
    let store = client(&repo);
    // Attacker replays the whole v2 set with a fresh timestamp version:
    // the timestamp lists snapshot v2 < trusted v3.
    let mut old = Repo::new();
    old.commit();
    old.timestamp.version = 10;
    old.write_timestamp();
    let e = old.updater(&store).refresh().unwrap_err();
    assert_rollback(&e, "timestamp");
}

#[test]
fn delegated_role_rollback_is_refused() {
    let mut repo = Repo::new();
    repo.delegate("targets", "team", &["team/*"], false);
    repo.add_delegated_target("team", "team/a", b"a");
    repo.commit();
    repo.commit(); // team v3
    let store = client(&repo);
    repo.updater(&store).refresh().unwrap();
    {
        let mut up = repo.updater(&store);
        up.refresh().unwrap();
        up.target("team/a").unwrap();
    }
    // Snapshot now lists team v1: snapshot rollback of a delegated role.
    repo.snapshot.version += 1;
    repo.snapshot.meta.get_mut("team.json").unwrap().version = 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_rollback(&e, "snapshot");
}
