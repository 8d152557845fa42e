//! Trusted state persists in a directory: a rollback is refused across
//! restarts (new client, same directory), and a failed update leaves the
//! files as they were.
use super::support;
use support::*;
use verifier::{DirStorage, Error, Rule, Updater};

fn dir_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn rollback_refused_across_restarts() {
    let mut repo = Repo::new();
    repo.commit();
    repo.commit();
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = DirStorage::new(tmp.path()).unwrap();
        verifier::install_root(&store, &repo.root_v1(), now()).unwrap();
        Updater::new(store, &repo, now()).refresh().unwrap();
    }
    let names: Vec<String> = dir_files(tmp.path()).into_iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );
    let before = dir_files(tmp.path());
    // "Reboot", then a mirror serves the old timestamp v1.
    let old = Repo::new();
    let store = DirStorage::new(tmp.path()).unwrap();
    let e = Updater::new(store, &old, now()).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Rollback {
                    trusted: 3,
                    found: 1
                },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
    assert_eq!(dir_files(tmp.path()), before);
}

#[test]
fn install_root_keeps_a_newer_stored_root() {
    let mut repo = Repo::new();
    let v1 = repo.root_v1();
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStorage::new(tmp.path()).unwrap();
    verifier::install_root(&store, &v1, now()).unwrap();
    repo.rotate("root", 1);
    Updater::new(&store, &repo, now()).refresh().unwrap();
    assert_eq!(verifier::install_root(&store, &v1, now()).unwrap(), 2);
}

#[test]
fn memory_storage_for_private_mode() {
    let repo = Repo::new();
    let store = repo.storage_with_root(&repo.root_v1());
    repo.updater(&store).refresh().unwrap();
    assert_eq!(store.snapshot().len(), 4);
}
