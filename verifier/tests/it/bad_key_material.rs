//! Bad key material in trusted metadata: a key listed for a role that cannot
//! verify (malformed PEM, a curve other than its scheme's, an RSA key under
//! 2048 bits, DER with trailing bytes) or a signature in the wrong encoding
//! counts toward no threshold. When the threshold then fails, the one-line
//! error names the role, the key id and what is wrong; the trusted state is
//! unchanged and the next honest update is accepted. A key of a type this
//! verifier does not know is not an error by itself: it only counts toward
//! no threshold.
use super::support;
use support::*;
use verifier::metadata::{Envelope, Key, Signature};
use verifier::{Error, Rule, Storage};

/// A key and a signature made by securesystemslib (tests/data).
fn vector(name: &str) -> (Key, String) {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../data/sslib-vectors.json")).unwrap();
    let c = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    (
        serde_json::from_value(c["key"].clone()).unwrap(),
        c["sig"].as_str().unwrap().to_string(),
    )
}

/// A repository whose timestamp role has two keys, the honest Ed25519 one
/// and `extra`, with `threshold`. The served timestamp carries the honest
/// signature and `extra_sig` under `extra`'s key id. Returns the repository
/// and that key id.
fn timestamp_with_extra_key(extra: Key, extra_sig: &str, threshold: u64) -> (Repo, String) {
    let mut repo = Repo::new();
    let keyid = verifier::crypto::key_id(&extra).unwrap();
    repo.root.keys.insert(keyid.clone(), extra);
    let role = repo.root.roles.get_mut("timestamp").unwrap();
    role.keyids.push(keyid.clone());
    role.threshold = threshold;
    repo.write_root();
    let ts = repo.write_timestamp();
    let mut env: Envelope = serde_json::from_slice(&ts).unwrap();
    env.signatures.push(Signature {
        keyid: keyid.clone(),
        sig: extra_sig.to_string(),
    });
    repo.serve("timestamp.json", serde_json::to_vec(&env).unwrap());
    (repo, keyid)
}

/// The first refresh fails on timestamp with exactly `problem` for `keyid`
/// in one line; nothing is stored; after the repository drops the bad key
/// (root v2) the next refresh is accepted.
fn assert_refused(mut repo: Repo, keyid: &str, problem: &str) {
    let store = repo.storage_with_root(&repo.root_v1());
    let before = store.snapshot();
    let e = repo.updater(&store).refresh().unwrap_err();
    let line = chain(&e);
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::Threshold { .. }, .. } if role == "timestamp"),
        "{line}"
    );
    assert!(
        line.contains("1 of 2 required distinct trusted root v1 timestamp keys signed"),
        "{line}"
    );
    assert!(
        line.contains(&format!("; key {keyid}: {problem}")),
        "{line}"
    );
    assert!(!line.contains('\n'), "one line: {line}");
    assert_eq!(store.snapshot(), before, "trusted state changed");
    assert!(store.load("timestamp.json").unwrap().is_none());

    // Honest update: root v2 lists only the Ed25519 timestamp key.
    repo.root.keys.remove(keyid);
    let role = repo.root.roles.get_mut("timestamp").unwrap();
    role.keyids.retain(|k| k != keyid);
    role.threshold = 1;
    repo.root.version += 1;
    let v2 = verifier::publish::sign_metadata(&repo.root, &repo.signer_refs("root")).unwrap();
    repo.serve("2.root.json", v2);
    repo.commit();
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    assert_eq!(up.root().unwrap().version, 2);
}

#[test]
fn malformed_pem_public_key() {
    let (mut key, sig) = vector("ecdsa-p256");
    key.keyval.public = key.keyval.public.replace("-----END PUBLIC KEY-----\n", "");
    let (repo, keyid) = timestamp_with_extra_key(key, &sig, 2);
    assert_refused(
        repo,
        &keyid,
        "malformed PEM public key: PEM error in pre-encapsulation boundary",
    );
}

#[test]
fn p384_key_under_a_p256_scheme() {
    let (mut key, sig) = vector("ecdsa-p384");
    key.scheme = "ecdsa-sha2-nistp256".into();
    let (repo, keyid) = timestamp_with_extra_key(key, &sig, 2);
    assert_refused(
        repo,
        &keyid,
        "ecdsa-sha2-nistp256 needs a P-256 key, this one is on P-384",
    );
}

#[test]
fn rsa_key_under_2048_bits() {
    let (key, sig) = vector("rsa-pss-1024");
    let (repo, keyid) = timestamp_with_extra_key(key, &sig, 2);
    assert_refused(
        repo,
        &keyid,
        "RSA key has 1024 bits, at least 2048 are required",
    );
}

#[test]
fn public_key_der_with_trailing_bytes() {
    let (mut key, sig) = vector("ecdsa-p256");
    let (label, mut der) = pem_rfc7468::decode_vec(key.keyval.public.as_bytes()).unwrap();
    der.push(0);
    key.keyval.public =
        pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, &der).unwrap();
    let (repo, keyid) = timestamp_with_extra_key(key, &sig, 2);
    assert_refused(
        repo,
        &keyid,
        "PEM body is not a DER SubjectPublicKeyInfo: trailing data at end of DER message: \
         decoded 91 bytes, 1 bytes remaining at DER byte 91",
    );
}

#[test]
fn ecdsa_signature_der_with_trailing_bytes() {
    let (key, sig) = vector("ecdsa-p256");
    let (repo, keyid) = timestamp_with_extra_key(key, &format!("{sig}00"), 2);
    assert_refused(
        repo,
        &keyid,
        "ecdsa-sha2-nistp256 signature is not strict DER: 1 trailing bytes",
    );
}

#[test]
fn unknown_key_type_is_not_an_error_and_counts_toward_no_threshold() {
    let unknown: Key = serde_json::from_value(serde_json::json!({
        "keytype": "sphincs",
        "scheme": "sphincs-shake-256s",
        "keyval": {"public": "00ff"}
    }))
    .unwrap();
    // Threshold 1: the honest key meets it; the unknown key is ignored.
    let (repo, _) = timestamp_with_extra_key(unknown.clone(), "00", 1);
    let store = repo.storage_with_root(&repo.root_v1());
    repo.updater(&store).refresh().unwrap();
    assert!(store.load("timestamp.json").unwrap().is_some());
    // Threshold 2: the unknown key's signature does not make the second.
    let (repo, keyid) = timestamp_with_extra_key(unknown, "00", 2);
    assert_refused(
        repo,
        &keyid,
        "key type \"sphincs\" with scheme \"sphincs-shake-256s\" is not supported",
    );
}
