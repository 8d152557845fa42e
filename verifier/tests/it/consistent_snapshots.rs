//! Consistent snapshots on (versioned metadata names, hash-prefixed target
//! files) and off (plain names) both work.
use super::support;
use support::*;

#[test]
fn consistent_snapshots_on() {
    let mut repo = Repo::with_consistent(true);
    repo.add_target("stable/x86_64/kernel", b"kernel bytes");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let t = up.target("stable/x86_64/kernel").unwrap();
    assert_eq!(up.download_bytes(&t).unwrap(), b"kernel bytes");
    let f = repo.fetched();
    assert!(f.contains(&"2.snapshot.json".to_string()), "{f:?}");
    assert!(f.contains(&"2.targets.json".to_string()), "{f:?}");
    let hashed = format!(
        "targets/stable/x86_64/{}.kernel",
        verifier::digest::sha256_hex(b"kernel bytes")
    );
    assert!(f.contains(&hashed), "{f:?}");
}

#[test]
fn consistent_snapshots_off() {
    let mut repo = Repo::with_consistent(false);
    repo.add_target("stable/x86_64/kernel", b"kernel bytes");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let t = up.target("stable/x86_64/kernel").unwrap();
    assert_eq!(up.download_bytes(&t).unwrap(), b"kernel bytes");
    let f = repo.fetched();
    assert!(f.contains(&"snapshot.json".to_string()), "{f:?}");
    assert!(f.contains(&"targets.json".to_string()), "{f:?}");
    assert!(
        f.contains(&"targets/stable/x86_64/kernel".to_string()),
        "{f:?}"
    );
}

#[test]
fn unchanged_metadata_is_not_downloaded_again() {
    let mut repo = Repo::new();
    repo.add_target("a", b"a");
    repo.commit();
    let store = client(&repo);
    repo.fetches.lock().unwrap().clear();
    repo.updater(&store).refresh().unwrap();
    let f = repo.fetched();
    assert_eq!(
        f,
        vec!["2.root.json".to_string(), "timestamp.json".to_string()],
        "{f:?}"
    );
}
