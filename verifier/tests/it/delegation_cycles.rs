//! Delegations: pre-order depth-first search that visits each role once,
//! stops at terminating delegations, and visits a bounded number of roles.
use super::support;
use support::*;
use verifier::{Error, Limits};

#[test]
fn cycle_terminates() {
    let mut repo = Repo::new();
    repo.delegate("targets", "a", &["*"], false);
    repo.delegate("a", "b", &["*"], false);
    repo.delegate("b", "a", &["*"], false);
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let e = up.target("missing").unwrap_err();
    assert!(matches!(e, Error::TargetNotFound { .. }), "{}", chain(&e));
    let fetched = repo.fetched();
    assert_eq!(
        fetched.iter().filter(|f| f.ends_with(".a.json")).count(),
        1,
        "{fetched:?}"
    );
    assert_eq!(
        fetched.iter().filter(|f| f.ends_with(".b.json")).count(),
        1,
        "{fetched:?}"
    );
}

#[test]
fn preorder_depth_first_priority() {
    let mut repo = Repo::new();
    repo.delegate("targets", "a", &["x/*"], false);
    repo.delegate("targets", "b", &["x/*"], false);
    repo.delegate("a", "a-child", &["x/*"], false);
    repo.add_delegated_target("a-child", "x/f", b"from a-child");
    repo.add_delegated_target("b", "x/f", b"from b");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let t = up.target("x/f").unwrap();
    assert_eq!(t.role, "a-child");
    assert_eq!(up.download_bytes(&t).unwrap(), b"from a-child");
}

#[test]
fn terminating_delegation_stops_the_search() {
    let mut repo = Repo::new();
    repo.delegate("targets", "a", &["x/*"], true);
    repo.delegate("targets", "b", &["x/*"], false);
    repo.add_delegated_target("b", "x/f", b"from b");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert!(matches!(
        up.target("x/f"),
        Err(Error::TargetNotFound { .. })
    ));
    assert!(!repo.fetched().iter().any(|f| f.ends_with(".b.json")));
}

#[test]
fn paths_limit_what_a_role_is_trusted_for() {
    let mut repo = Repo::new();
    repo.delegate("targets", "a", &["only/*"], false);
    repo.add_delegated_target("a", "other/f", b"not allowed");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert!(matches!(
        up.target("other/f"),
        Err(Error::TargetNotFound { .. })
    ));
    assert!(up.all_targets().unwrap().is_empty());
}

#[test]
fn visited_roles_are_bounded() {
    let mut repo = Repo::new();
    let mut parent = "targets".to_string();
    for i in 0..10 {
        let child = format!("r{i}");
        repo.delegate(&parent, &child, &["*"], false);
        parent = child;
    }
    repo.add_delegated_target("r9", "deep", b"deep");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store).with_limits(Limits {
        max_delegations: 5,
        ..Limits::default()
    });
    up.refresh().unwrap();
    assert!(matches!(
        up.target("deep"),
        Err(Error::TargetNotFound { .. })
    ));
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert_eq!(up.target("deep").unwrap().role, "r9");
}

#[test]
fn hash_prefix_delegation() {
    let mut repo = Repo::new();
    repo.delegate("targets", "bin", &["*"], false);
    let name = "file";
    let prefix = verifier::digest::sha256_hex(name.as_bytes())[..2].to_string();
    let d = repo.targets.delegations.as_mut().unwrap();
    d.roles[0].paths = None;
    d.roles[0].path_hash_prefixes = Some(vec![prefix]);
    repo.add_delegated_target("bin", name, b"binned");
    repo.commit();
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert_eq!(up.target(name).unwrap().role, "bin");
}
