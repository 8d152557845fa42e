//! A delegated role reached on a second search path: one role ("release") is
//! delegated by two parents for disjoint paths, with a different key each.
//! Its metadata is signed only with parent A's key. The copy loaded (and
//! trusted) through A must not inherit A's authority when a later lookup
//! reaches it through B: it is verified again against B's current keys and
//! threshold, found wanting, a fresh copy is fetched and must pass through B
//! itself, and the lookup through B fails naming the role and the delegator.
use super::support;
use support::*;
use verifier::Error;

/// targets -> parent-a (team-a/*) -> release (team-a/*)
/// targets -> parent-b (team-b/*) -> release (team-b/*)
/// `release` is signed by parent A's release key, and by parent B's when
/// `signed_for_b`.
fn diamond(signed_for_b: bool) -> Repo {
    let mut repo = Repo::new();
    repo.delegate("targets", "parent-a", &["team-a/*"], false);
    repo.delegate("targets", "parent-b", &["team-b/*"], false);
    repo.delegate("parent-a", "release", &["team-a/*"], false);
    repo.delegate("parent-b", "release", &["team-b/*"], false);
    let keys = &mut repo.delegated.get_mut("release").unwrap().1;
    assert_eq!(keys.len(), 2, "one release key per parent");
    if !signed_for_b {
        keys.truncate(1);
    }
    repo.add_delegated_target("release", "team-a/trusted_root.json", b"trusted A");
    repo.add_delegated_target("release", "team-b/trusted_root.json", b"malicious B");
    repo.commit();
    repo
}

fn release_fetches(repo: &Repo) -> usize {
    repo.fetched()
        .iter()
        .filter(|f| f.ends_with(".release.json"))
        .count()
}

#[test]
fn role_trusted_through_one_delegator_is_verified_again_through_the_other() {
    let repo = diamond(false);
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();

    let a = up.target("team-a/trusted_root.json").unwrap();
    assert_eq!(a.role, "release");
    assert_eq!(up.download_bytes(&a).unwrap(), b"trusted A");
    assert_eq!(release_fetches(&repo), 1);

    let e = up.target("team-b/trusted_root.json").unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, .. } if role == "release"),
        "{}",
        chain(&e)
    );
    let line = chain(&e);
    assert!(
        line.contains("0 of 1 required distinct parent-b v2 -> release keys signed"),
        "{line}"
    );
    assert!(!line.contains('\n'), "one line: {line}");
    // The held copy failed through parent-b, so a fresh one was fetched
    // (and failed the same way): nothing was taken on A's word.
    assert_eq!(release_fetches(&repo), 2, "{:?}", repo.fetched());

    // The set is as it was: release stays trusted through parent-a only.
    let set = up.trusted().unwrap();
    assert!(set.delegated_by("release", "parent-a"));
    assert!(!set.delegated_by("release", "parent-b"));
    assert_eq!(
        up.target("team-a/trusted_root.json").unwrap().role,
        "release"
    );
}

#[test]
fn the_other_order_fails_the_same_way() {
    let repo = diamond(false);
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let e = up.target("team-b/trusted_root.json").unwrap_err();
    assert!(
        chain(&e).contains("parent-b v2 -> release keys signed"),
        "{}",
        chain(&e)
    );
    let a = up.target("team-a/trusted_root.json").unwrap();
    assert_eq!(up.download_bytes(&a).unwrap(), b"trusted A");
}

#[test]
fn a_copy_stored_by_an_earlier_run_is_verified_through_the_current_delegator() {
    let repo = diamond(false);
    let store = client(&repo);
    // First run: release loaded through parent-a and persisted.
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    up.target("team-a/trusted_root.json").unwrap();
    assert!(store.snapshot().contains_key("release.json"));
    // Second run reaches the stored copy through parent-b first.
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let e = up.target("team-b/trusted_root.json").unwrap_err();
    assert!(
        chain(&e).contains("parent-b v2 -> release keys signed"),
        "{}",
        chain(&e)
    );
}

#[test]
fn signed_for_both_delegators_it_is_verified_twice_and_fetched_once() {
    let repo = diamond(true);
    let store = client(&repo);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let a = up.target("team-a/trusted_root.json").unwrap();
    assert_eq!(up.download_bytes(&a).unwrap(), b"trusted A");
    let b = up.target("team-b/trusted_root.json").unwrap();
    assert_eq!(up.download_bytes(&b).unwrap(), b"malicious B");
    assert_eq!(release_fetches(&repo), 1, "{:?}", repo.fetched());
    let set = up.trusted().unwrap();
    assert!(set.delegated_by("release", "parent-a"));
    assert!(set.delegated_by("release", "parent-b"));
}
