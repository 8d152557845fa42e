//! A role with threshold 2 signed by one key is refused; two distinct keys pass.
use super::support;
use support::*;
use verifier::{Error, Rule};

#[test]
fn snapshot_threshold_two_needs_two_keys() {
    let mut repo = Repo::new();
    let k2 = key("snapshot-second");
    repo.root.keys.insert(k2.key_id(), k2.public_key());
    let r = repo.root.roles.get_mut("snapshot").unwrap();
    r.keyids.push(k2.key_id());
    r.threshold = 2;
    repo.write_root(); // v1 with threshold 2
    repo.commit(); // snapshot signed by one key only
    let store = repo.storage_with_root(&repo.root_v1());
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Threshold { valid: 1, threshold: 2, .. }, .. } if role == "snapshot"),
        "{}",
        chain(&e)
    );
    assert!(
        chain(&e).contains("1 of 2 required distinct trusted root v1 snapshot keys"),
        "{}",
        chain(&e)
    );
    assert!(!store.snapshot().contains_key("snapshot.json"));
    repo.signers.get_mut("snapshot").unwrap().push(k2);
    repo.commit();
    repo.updater(&store)
        .refresh()
        .expect("two distinct keys meet the threshold");
}

#[test]
fn root_threshold_not_met_for_trusted_root() {
    let mut repo = Repo::new();
    let k2 = key("root-second");
    repo.root.keys.insert(k2.key_id(), k2.public_key());
    let r = repo.root.roles.get_mut("root").unwrap();
    r.keyids.push(k2.key_id());
    r.threshold = 2;
    let one_sig = repo.write_root();
    let e = verifier::install_root(&verifier::MemoryStorage::new(), &one_sig, now()).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::Threshold {
                    valid: 1,
                    threshold: 2,
                    ..
                },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}
