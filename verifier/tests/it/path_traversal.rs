//! Target and role names that could escape a directory are refused or made
//! harmless: unsafe target paths are never resolved or fetched, delegated
//! role names are URL-encoded into a single file name.
use super::support;
use support::*;
use verifier::{DirStorage, Error, TargetRule, Updater};

#[test]
fn unsafe_target_names_are_refused() {
    let mut repo = Repo::new();
    repo.add_target("../../etc/passwd", b"x");
    repo.add_target("a/../../b", b"y");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    for name in ["../../etc/passwd", "a/../../b", "/etc/passwd", "a//b"] {
        let e = up.target(name).unwrap_err();
        assert!(
            matches!(e.target_rule(), Some(TargetRule::UnsafeName(_))),
            "{name}: {}",
            chain(&e)
        );
    }
    assert!(
        up.all_targets().unwrap().is_empty(),
        "unsafe names must not be listed"
    );
}

#[test]
fn role_names_stay_inside_the_metadata_dir() {
    let mut repo = Repo::new();
    repo.delegate("targets", "../../escape", &["*"], false);
    repo.add_delegated_target("../../escape", "f", b"f");
    repo.commit();
    let tmp = tempfile::tempdir().unwrap();
    let meta = tmp.path().join("meta");
    let store = DirStorage::new(&meta).unwrap();
    verifier::install_root(&store, &repo.root_v1(), now()).unwrap();
    let mut up = Updater::new(store, &repo, now());
    up.refresh().unwrap();
    assert_eq!(up.target("f").unwrap().role, "../../escape");
    assert!(meta.join("..%2F..%2Fescape.json").is_file());
    let entries: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("meta")]);
    assert!(
        repo.fetched()
            .iter()
            .any(|f| f == "2...%2F..%2Fescape.json"),
        "{:?}",
        repo.fetched()
    );
}

#[test]
fn dot_and_top_level_role_names_are_invalid() {
    for bad in ["..", "root", "targets"] {
        let mut repo = Repo::new();
        repo.delegate("targets", bad, &["*"], false);
        // Only the delegation entry: no metadata for the role itself.
        repo.delegated.remove(bad);
        repo.commit();
        let store = repo.storage_with_root(&repo.root_v1());
        let e = repo.updater(&store).refresh().unwrap_err();
        assert!(
            matches!(&e, Error::Rejected { role, .. } if role == "targets"),
            "{bad}: {}",
            chain(&e)
        );
    }
}
