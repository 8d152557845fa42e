//! Signatures count once per distinct key: a key id listed twice in
//! `signatures` is refused outright (even when the threshold is met), and the
//! same key listed under two key ids never meets a threshold of 2.
use super::support;
use support::*;
use verifier::metadata::{Envelope, Signature};
use verifier::{Error, Rule, Storage};

fn duplicate_sigs(bytes: &[u8], extra: Vec<Signature>) -> Vec<u8> {
    let mut env: Envelope = serde_json::from_slice(bytes).unwrap();
    env.signatures.extend(extra);
    serde_json::to_vec(&env).unwrap()
}

#[test]
fn same_signature_twice_is_refused() {
    let mut repo = Repo::new();
    let k2 = key("timestamp-second");
    repo.root.keys.insert(k2.key_id(), k2.public_key());
    let r = repo.root.roles.get_mut("timestamp").unwrap();
    r.keyids.push(k2.key_id());
    r.threshold = 2;
    repo.write_root();
    let store = repo.storage_with_root(&repo.root_v1());
    let ts = repo.write_timestamp();
    let env: Envelope = serde_json::from_slice(&ts).unwrap();
    let dup = duplicate_sigs(&ts, env.signatures.clone());
    repo.serve("timestamp.json", dup);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::DuplicateSignature { keyid }, .. } if role == "timestamp" && *keyid == env.signatures[0].keyid),
        "{}",
        chain(&e)
    );
}

#[test]
fn duplicate_key_id_refused_even_when_threshold_is_met() {
    let mut repo = Repo::new();
    let store = client(&repo);
    let before = store.load("snapshot.json").unwrap();
    repo.snapshot.version += 1;
    let snap = repo.write_snapshot();
    let env: Envelope = serde_json::from_slice(&snap).unwrap();
    let dup = duplicate_sigs(&snap, env.signatures.clone());
    repo.serve("2.snapshot.json", dup.clone());
    repo.timestamp
        .meta
        .get_mut("snapshot.json")
        .unwrap()
        .version = 2;
    repo.timestamp.meta.get_mut("snapshot.json").unwrap().length = Some(dup.len() as u64);
    repo.timestamp.meta.get_mut("snapshot.json").unwrap().hashes =
        Some([("sha256".to_string(), verifier::digest::sha256_hex(&dup))].into());
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    let line = chain(&e);
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::DuplicateSignature { .. }, .. } if role == "snapshot"),
        "{line}"
    );
    assert!(line.contains(&env.signatures[0].keyid), "{line}");
    assert!(!line.contains('\n'), "{line}");
    // The trusted snapshot is unchanged...
    assert_eq!(store.load("snapshot.json").unwrap(), before);
    // ...and the next honest snapshot is accepted.
    repo.commit();
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert_eq!(up.trusted().unwrap().snapshot().unwrap().version, 3);
}

#[test]
fn same_key_under_two_key_ids_counts_once() {
    let mut repo = Repo::new();
    let k = &repo.signers["targets"][0];
    let mut alias = k.public_key();
    // Same public key, different key id (an extra member changes the id).
    alias.extra.insert("x-alias".into(), serde_json::json!("1"));
    let alias_id = verifier::crypto::key_id(&alias).unwrap();
    repo.root.keys.insert(alias_id.clone(), alias);
    let r = repo.root.roles.get_mut("targets").unwrap();
    r.keyids.push(alias_id.clone());
    r.threshold = 2;
    repo.write_root();
    let store = repo.storage_with_root(&repo.root_v1());
    repo.targets.version += 1;
    let t = repo.write_targets();
    let env: Envelope = serde_json::from_slice(&t).unwrap();
    let sig = env.signatures[0].sig.clone();
    let doubled = duplicate_sigs(
        &t,
        vec![Signature {
            keyid: alias_id,
            sig,
        }],
    );
    repo.serve("2.targets.json", doubled.clone());
    repo.snapshot.meta.get_mut("targets.json").unwrap().length = Some(doubled.len() as u64);
    repo.snapshot.meta.get_mut("targets.json").unwrap().hashes =
        Some([("sha256".to_string(), verifier::digest::sha256_hex(&doubled))].into());
    repo.snapshot.version += 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Threshold { valid: 1, threshold: 2, .. }, .. } if role == "targets"),
        "{}",
        chain(&e)
    );
}

#[test]
fn duplicate_key_id_in_role_is_invalid() {
    let mut repo = Repo::new();
    let id = repo.root.roles["snapshot"].keyids[0].clone();
    repo.root.roles.get_mut("snapshot").unwrap().keyids.push(id);
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
        "{}",
        chain(&e)
    );
    assert!(chain(&e).contains("twice"), "{}", chain(&e));
}
