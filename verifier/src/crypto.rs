//! Key ids, threshold signature counting over every supported key type
//! ([`crate::keys`]), and the Ed25519 signing key used by the publishing
//! side (PKCS#8 PEM on disk).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::Signer;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cjson::to_canonical;
use crate::keys::{KeyError as PublicKeyError, SignatureError, VerifyingKey};
use crate::metadata::{Key, KeyVal, Signature};

/// The key type and scheme of the keys this module signs with.
pub const ED25519: &str = "ed25519";

/// Key id of a key: hex SHA-256 of the key's canonical JSON (TUF spec).
pub fn key_id(key: &Key) -> Result<String, crate::cjson::CanonicalError> {
    Ok(hex::encode(Sha256::digest(to_canonical(key)?)))
}

/// The verifying key of an Ed25519 TUF key, or `None` for any other type or
/// malformed material. [`crate::keys::VerifyingKey`] handles every type.
pub fn ed25519_public(key: &Key) -> Option<ed25519_dalek::VerifyingKey> {
    if key.keytype != ED25519 || key.scheme != ED25519 {
        return None;
    }
    let bytes: [u8; 32] = hex::decode(&key.keyval.public).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

/// Why one signature did not count toward a threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The role lists the key id but no key with that id is listed.
    #[error("no key is listed for this key id")]
    NoKey,
    /// The key cannot verify (unsupported type, malformed PEM, wrong curve,
    /// RSA key too short...).
    #[error(transparent)]
    Key(#[from] PublicKeyError),
    /// The signature is malformed or does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// One signature by a key of the role that did not count, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key {keyid}: {problem}")]
pub struct SigProblem {
    /// Key id the signature names.
    pub keyid: String,
    /// What is wrong.
    pub problem: Problem,
}

/// Signatures by keys of a role that did not count, in array order; shows as
/// `; <keyid>: <problem>` for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigProblems(pub Vec<SigProblem>);

impl std::fmt::Display for SigProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|p| write!(f, "; {p}"))
    }
}

/// Outcome of counting signatures for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// Distinct keys with a valid signature.
    pub valid: u64,
    /// Threshold required.
    pub threshold: u64,
    /// Signatures by keys of the role that did not count, in array order.
    pub problems: Vec<SigProblem>,
}

/// Count valid signatures over `message` from distinct keys of a role. A key
/// counts once however many key ids name it (its identity is the key
/// material, see [`VerifyingKey::identity`]). Signatures by key ids outside
/// `keyids` are ignored; signatures by keys of the role that cannot count
/// (no such key, unsupported or malformed key, bad signature) are returned
/// in `problems`. Duplicate key ids in `signatures` are refused earlier, when
/// the envelope is parsed.
pub fn count_signatures(
    message: &[u8],
    signatures: &[Signature],
    keys: &BTreeMap<String, Key>,
    keyids: &[String],
    threshold: u64,
) -> Count {
    let mut counted: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut problems = Vec::new();
    let mut problem = |keyid: &str, problem: Problem| {
        problems.push(SigProblem {
            keyid: keyid.to_string(),
            problem,
        })
    };
    for sig in signatures {
        if !keyids.iter().any(|k| k == &sig.keyid) {
            continue;
        }
        let Some(key) = keys.get(&sig.keyid) else {
            problem(&sig.keyid, Problem::NoKey);
            continue;
        };
        let public = match VerifyingKey::from_key(key) {
            Ok(p) => p,
            Err(e) => {
                problem(&sig.keyid, Problem::Key(e));
                continue;
            }
        };
        let identity = public.identity();
        if counted.contains(&identity) {
            continue;
        }
        match public.verify(message, &sig.sig) {
            Ok(()) => {
                counted.insert(identity);
            }
            Err(e) => problem(&sig.keyid, Problem::Signature(e)),
        }
    }
    Count {
        valid: counted.len() as u64,
        threshold,
        problems,
    }
}

/// Why a private key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a PKCS#8 PEM Ed25519 private key.
    #[error("not an Ed25519 PKCS#8 PEM private key")]
    Decode(#[source] ed25519_dalek::pkcs8::Error),
    /// Encoding failed.
    #[error("encoding the private key failed")]
    Encode(#[source] ed25519_dalek::pkcs8::Error),
}

/// An Ed25519 private key for signing metadata.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl SigningKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        SigningKey {
            inner: ed25519_dalek::SigningKey::generate(&mut rng),
        }
    }

    /// A key from its 32-byte seed (tests and reproducible fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SigningKey {
            inner: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// Read a PKCS#8 PEM private key (what `phase keygen` writes; also what
    /// `cryptography`/securesystemslib write).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let inner = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(KeyError::Decode)?;
        Ok(SigningKey { inner })
    }

    /// The PKCS#8 PEM form of this key.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = self
            .inner
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(KeyError::Encode)?;
        Ok(pem.to_string())
    }

    /// The public key in TUF form.
    pub fn public_key(&self) -> Key {
        Key {
            keytype: ED25519.into(),
            scheme: ED25519.into(),
            keyval: KeyVal {
                public: hex::encode(self.inner.verifying_key().as_bytes()),
                extra: BTreeMap::new(),
            },
            extra: BTreeMap::new(),
        }
    }

    /// The key id of the public key: SHA-256 over its canonical JSON,
    /// `{"keytype":"ed25519","keyval":{"public":"<hex>"},"scheme":"ed25519"}`
    /// (written out here because hex needs no escaping, so this cannot fail).
    pub fn key_id(&self) -> String {
        let canonical = format!(
            r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
            hex::encode(self.inner.verifying_key().as_bytes())
        );
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Sign `message` and return the TUF signature entry.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            keyid: self.key_id(),
            sig: hex::encode(self.inner.sign(message).to_bytes()),
        }
    }
}

/// Decode an `Ed25519` signature value check helper used by tests: whether
/// `sig` verifies `message` under `key`.
pub fn verify_one(key: &Key, message: &[u8], sig: &Signature) -> bool {
    let keys: BTreeMap<String, Key> = [(sig.keyid.clone(), key.clone())].into();
    count_signatures(
        message,
        std::slice::from_ref(sig),
        &keys,
        std::slice::from_ref(&sig.keyid),
        1,
    )
    .valid
        == 1
}

/// The canonical bytes of a `signed` value.
pub fn signed_bytes(signed: &Value) -> Result<Vec<u8>, crate::cjson::CanonicalError> {
    to_canonical(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_sha256_of_canonical_key() {
        let k = SigningKey::from_seed([7; 32]);
        let pk = k.public_key();
        let expect = hex::encode(Sha256::digest(
            format!(
                r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
                pk.keyval.public
            )
            .as_bytes(),
        ));
        assert_eq!(k.key_id(), expect);
        assert_eq!(key_id(&pk).unwrap(), expect);
    }

    #[test]
    fn pem_round_trip() {
        let k = SigningKey::generate();
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.key_id(), k.key_id());
        assert!(SigningKey::from_pkcs8_pem("nope").is_err());
    }

    #[test]
    fn same_key_under_two_ids_counts_once() {
        let k = SigningKey::from_seed([1; 32]);
        let msg = b"hello";
        let s = k.sign(msg);
        let mut keys = BTreeMap::new();
        keys.insert("a".to_string(), k.public_key());
        keys.insert("b".to_string(), k.public_key());
        let sigs = vec![
            Signature {
                keyid: "a".into(),
                sig: s.sig.clone(),
            },
            Signature {
                keyid: "b".into(),
                sig: s.sig.clone(),
            },
            Signature {
                keyid: "a".into(),
                sig: s.sig.clone(),
            },
        ];
        let c = count_signatures(msg, &sigs, &keys, &["a".into(), "b".into()], 2);
        assert_eq!(c.valid, 1);
        assert!(verify_one(&k.public_key(), msg, &s));
        assert!(!verify_one(&k.public_key(), b"other", &s));
    }
}
