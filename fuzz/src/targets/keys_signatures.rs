//! Keys and signatures (the verifier's crypto.rs): PKCS#8 PEM private keys
//! as `phase publish` reads them from a keys directory, public keys as
//! root and delegations list them, signatures as envelopes carry them.
//! Input byte 0 picks the parser:
//!
//! * 0: PEM private key text. Oracle: what parses writes back to PEM that
//!   parses to the same key.
//! * 1: a public key object (JSON). Oracle: a key id exists and a
//!   signature from the fixture key verifies under it only if it is the
//!   fixture's public key.
//! * 2: raw signature bytes (hex-encoded into the envelope) over a fixed
//!   message, for the fixture key. Oracle: only the fixture's own
//!   signature verifies (strict Ed25519: no malleable variant).
//! * 3: the signature's hex text as sent. Same oracle.
//! * 4 to 7: an ECDSA P-256, ECDSA P-384, RSA-PSS or RSA PKCS#1 v1.5 key:
//!   PEM text, then after a 0xFF byte the signature's hex text. Oracle: the
//!   DER and signature parsers return (a key id, a yes or a no) on any input.
//!
//! `PHASE_FUZZ_WRITE_SEEDS=<dir>` writes a seed of each kind (mk/fuzz.mk).

use std::path::Path;

use verifier::crypto::{key_id, verify_one};
use verifier::metadata::{Key, Signature};
use verifier::SigningKey;

const MESSAGE: &[u8] = br#"{"_type":"timestamp","version":1}"#;

fn fixture_key() -> SigningKey {
    SigningKey::from_seed([7; 32])
}

/// Writes one seed per mode into `dir`.
pub fn write_seeds(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let k = fixture_key();
    let pem = k.to_pkcs8_pem().map_err(std::io::Error::other)?;
    let public = serde_json::to_vec(&k.public_key()).map_err(std::io::Error::other)?;
    let sig = k.sign(MESSAGE);
    let raw = hex::decode(&sig.sig).map_err(std::io::Error::other)?;
    for (mode, name, body) in [
        (0u8, "pem", pem.into_bytes()),
        (1, "public-key", public),
        (2, "signature-raw", raw),
        (3, "signature-hex", sig.sig.into_bytes()),
    ] {
        let mut seed = vec![mode];
        seed.extend_from_slice(&body);
        std::fs::write(dir.join(name), seed)?;
    }
    // Modes 4 to 7: the verifier's securesystemslib test vectors.
    let vectors: serde_json::Value =
        serde_json::from_str(SSLIB_VECTORS).map_err(std::io::Error::other)?;
    for case in vectors["cases"].as_array().into_iter().flatten() {
        let scheme = case["key"]["scheme"].as_str().unwrap_or_default();
        let Some(i) = PEM_SCHEMES.iter().position(|(_, s)| *s == scheme) else {
            continue;
        };
        let mut seed = vec![4 + i as u8];
        seed.extend_from_slice(
            case["key"]["keyval"]["public"]
                .as_str()
                .unwrap_or_default()
                .as_bytes(),
        );
        seed.push(0xff);
        seed.extend_from_slice(case["sig"].as_str().unwrap_or_default().as_bytes());
        let name = case["name"].as_str().unwrap_or("vector");
        std::fs::write(dir.join(format!("pem-{name}")), seed)?;
    }
    Ok(())
}

/// Public keys and signatures made by securesystemslib (seeds of modes 4 to 7).
const SSLIB_VECTORS: &str = include_str!("../../../verifier/tests/data/sslib-vectors.json");

/// Writes the seeds when `PHASE_FUZZ_WRITE_SEEDS` names a directory.
pub fn init() {
    if let Some(dir) = std::env::var_os("PHASE_FUZZ_WRITE_SEEDS") {
        write_seeds(Path::new(&dir)).expect("write the keys_signatures seeds");
    }
}

/// Checks a signature text from the fixture key over [`MESSAGE`].
fn check_signature(sig_text: String) {
    let k = fixture_key();
    let good = k.sign(MESSAGE);
    let sig = Signature {
        keyid: k.key_id(),
        sig: sig_text,
    };
    if verify_one(&k.public_key(), MESSAGE, &sig) {
        assert_eq!(
            sig.sig.to_ascii_lowercase(),
            good.sig,
            "a second signature verified"
        );
    }
}

/// One input.
pub fn run(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        0 => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            if let Ok(k) = SigningKey::from_pkcs8_pem(text) {
                let pem = k.to_pkcs8_pem().expect("a parsed key encodes");
                let again = SigningKey::from_pkcs8_pem(&pem).expect("its own PEM parses");
                assert_eq!(again.key_id(), k.key_id());
            }
        }
        1 => {
            let Ok(key) = serde_json::from_slice::<Key>(body) else {
                return;
            };
            let _ = key_id(&key);
            let k = fixture_key();
            let sig = k.sign(MESSAGE);
            if verify_one(&key, MESSAGE, &sig) {
                let ours = k.public_key();
                assert_eq!(
                    (key.keytype.as_str(), key.scheme.as_str()),
                    (ours.keytype.as_str(), ours.scheme.as_str())
                );
                assert_eq!(
                    hex::decode(&key.keyval.public).ok(),
                    hex::decode(&ours.keyval.public).ok(),
                    "another key verified the fixture's signature"
                );
            }
        }
        2 => check_signature(hex::encode(body)),
        3 => {
            if let Ok(text) = std::str::from_utf8(body) {
                check_signature(text.to_owned());
            }
        }
        m => {
            let (keytype, scheme) = PEM_SCHEMES[usize::from(m - 4)];
            let parts = crate::split_parts(body, 2);
            let text = |i: usize| std::str::from_utf8(parts.get(i).copied().unwrap_or_default());
            let (Ok(pem), Ok(sig)) = (text(0), text(1)) else {
                return;
            };
            let key = Key {
                keytype: keytype.to_owned(),
                scheme: scheme.to_owned(),
                keyval: verifier::metadata::KeyVal {
                    public: pem.to_owned(),
                    extra: Default::default(),
                },
                extra: Default::default(),
            };
            let _ = key_id(&key);
            let sig = Signature {
                keyid: String::new(),
                sig: sig.to_owned(),
            };
            let _ = verify_one(&key, MESSAGE, &sig);
        }
    }
}

/// The PEM key types of modes 4 to 7.
const PEM_SCHEMES: [(&str, &str); 4] = [
    ("ecdsa", "ecdsa-sha2-nistp256"),
    ("ecdsa", "ecdsa-sha2-nistp384"),
    ("rsa", "rsassa-pss-sha256"),
    ("rsa", "rsa-pkcs1v15-sha256"),
];
