//! A threshold below 1 makes metadata invalid (root roles and delegations).
use super::support;
use support::*;
use verifier::{Error, Rule};

#[test]
fn root_role_threshold_zero() {
    for role in ["root", "timestamp", "snapshot", "targets"] {
        let mut repo = Repo::new();
        repo.root.roles.get_mut(role).unwrap().threshold = 0;
        let b = repo.write_root();
        let e = verifier::install_root(&verifier::MemoryStorage::new(), &b, now()).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Rejected {
                    rule: Rule::Invalid(_),
                    ..
                }
            ),
            "{role}: {}",
            chain(&e)
        );
        assert!(chain(&e).contains("threshold 0"), "{}", chain(&e));
    }
}

#[test]
fn rotated_root_with_threshold_zero() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.root.roles.get_mut("timestamp").unwrap().threshold = 0;
    repo.root.version = 2;
    repo.write_root();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Invalid(_), .. } if role == "root"),
        "{}",
        chain(&e)
    );
    assert_eq!(store.load_root_version(), 1);
}

#[test]
fn delegation_threshold_zero() {
    let mut repo = Repo::new();
    repo.delegate("targets", "team", &["team/*"], false);
    repo.targets.delegations.as_mut().unwrap().roles[0].threshold = 0;
    repo.commit();
    let store = repo.storage_with_root(&repo.root_v1());
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Invalid(_), .. } if role == "targets"),
        "{}",
        chain(&e)
    );
}

trait RootVersion {
    fn load_root_version(&self) -> u64;
}

impl RootVersion for verifier::MemoryStorage {
    fn load_root_version(&self) -> u64 {
        use verifier::Storage;
        let b = self.load("root.json").unwrap().unwrap();
        let env: verifier::metadata::Envelope = serde_json::from_slice(&b).unwrap();
        env.signed["version"].as_u64().unwrap()
    }
}
