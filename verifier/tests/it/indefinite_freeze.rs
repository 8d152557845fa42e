//! Freeze attacks: expired metadata of any role is refused at the fixed
//! start time, the trusted state stays, and a fresh honest update succeeds.
use super::support;
use support::*;
use verifier::{Error, Rule};

fn assert_expired(e: &Error, role: &str) {
    match e {
        Error::Rejected {
            role: r,
            rule: Rule::Expired { .. },
            ..
        } if r == role => {}
        other => panic!("expected expired {role}, got {}", chain(other)),
    }
}

#[test]
fn expired_timestamp() {
    let mut repo = Repo::new();
    let store = client(&repo);
    let before = store.snapshot();
    repo.timestamp.version += 1;
    repo.timestamp.expires = in_days(-1);
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_expired(&e, "timestamp");
    assert!(
        chain(&e).contains("timestamp metadata v2 rejected: expired at 2029-12-31T00:00:00Z"),
        "{}",
        chain(&e)
    );
    assert_eq!(store.snapshot(), before);
    repo.timestamp.version += 1;
    repo.timestamp.expires = in_days(1);
    repo.write_timestamp();
    repo.updater(&store).refresh().unwrap();
}

#[test]
fn expired_snapshot() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.snapshot.version += 1;
    repo.snapshot.expires = in_days(-1);
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let before_snap = store.snapshot().get("snapshot.json").cloned();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_expired(&e, "snapshot");
    assert_eq!(store.snapshot().get("snapshot.json").cloned(), before_snap);
    repo.snapshot.expires = in_days(10);
    repo.commit();
    repo.updater(&store).refresh().unwrap();
}

#[test]
fn expired_targets() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.targets.expires = in_days(-1);
    repo.commit();
    let before = store.snapshot().get("targets.json").cloned();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_expired(&e, "targets");
    assert_eq!(store.snapshot().get("targets.json").cloned(), before);
    repo.targets.expires = in_days(10);
    repo.commit();
    repo.updater(&store).refresh().unwrap();
}

#[test]
fn expired_root_without_newer_root() {
    let mut repo = Repo::new();
    repo.root.expires = in_days(-1);
    repo.write_root();
    let store = repo.storage_with_root(&repo.root_v1());
    let e = repo.updater(&store).refresh().unwrap_err();
    assert_expired(&e, "root");
    // A newer root fixes it.
    repo.root.expires = in_days(100);
    repo.rotate("timestamp", 1);
    repo.write_timestamp();
    repo.updater(&store).refresh().unwrap();
}

#[test]
fn expired_delegated_role() {
    let mut repo = Repo::new();
    repo.delegate("targets", "team", &["team/*"], false);
    repo.delegated.get_mut("team").unwrap().0.expires = in_days(-1);
    repo.add_delegated_target("team", "team/a", b"a");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let e = up.target("team/a").unwrap_err();
    assert_expired(&e, "team");
}

#[test]
fn expiry_uses_the_fixed_start_time() {
    // Expires one second after the start time: valid for the whole update.
    let mut repo = Repo::new();
    repo.timestamp.expires = verifier::metadata::Expires(now() + chrono::Duration::seconds(1));
    repo.write_timestamp();
    let store = repo.storage_with_root(&repo.root_v1());
    repo.updater(&store).refresh().unwrap();
    // Exactly at the start time counts as expired.
    repo.timestamp.version += 1;
    repo.timestamp.expires = verifier::metadata::Expires(now());
    repo.write_timestamp();
    assert_expired(&repo.updater(&store).refresh().unwrap_err(), "timestamp");
}
