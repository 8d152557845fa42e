//! Public keys of every standard TUF key type, parsed from their metadata
//! form, and signature verification.
//!
//! | keytype | scheme | `keyval.public` | signature (`sig`, hex) |
//! |---|---|---|---|
//! | `ed25519` | `ed25519` | 32 bytes, hex | 64 bytes |
//! | `ecdsa` (or legacy `ecdsa-sha2-nistp256`) | `ecdsa-sha2-nistp256` | PEM SubjectPublicKeyInfo, P-256 | DER `ECDSA-Sig-Value`, SHA-256 |
//! | `ecdsa` (or legacy `ecdsa-sha2-nistp384`) | `ecdsa-sha2-nistp384` | PEM SubjectPublicKeyInfo, P-384 | DER `ECDSA-Sig-Value`, SHA-384 |
//! | `rsa` | `rsassa-pss-sha256` | PEM SubjectPublicKeyInfo, 2048 to 16384 bits | RSASSA-PSS, SHA-256, MGF1-SHA-256, any salt length |
//! | `rsa` | `rsa-pkcs1v15-sha256` | PEM SubjectPublicKeyInfo, 2048 to 16384 bits | RSASSA-PKCS1-v1_5, SHA-256 |
//!
//! This is what securesystemslib 1.x (python-tuf) writes and accepts for
//! these schemes: ECDSA signatures are strict DER (no trailing bytes, no
//! non-minimal integers) and high-S values are accepted, as OpenSSL accepts
//! them; RSA-PSS accepts every salt length (securesystemslib verifies with
//! `PSS.AUTO` and signs with a salt as long as the digest). Any other
//! keytype/scheme pair is [`KeyError::Unsupported`]: such a key counts
//! toward no threshold, and is not an error by itself.
//!
//! The two calls a caller needs: [`VerifyingKey::from_key`] (or
//! [`parse_key_json`] from raw JSON bytes) and [`VerifyingKey::verify`].

use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use spki::der::{Decode, Encode, Reader};
use spki::ObjectIdentifier;

use crate::metadata::Key;

/// `id-Ed25519` (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// `id-ecPublicKey` (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` / P-256.
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` / P-384.
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `secp521r1` / P-521 (named in errors only).
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
/// `rsaEncryption` (RFC 8017).
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds the cost of one verification).
pub const RSA_MAX_BITS: usize = 16384;
/// Longest `keyval.public` accepted, in bytes (a 16384-bit RSA SPKI PEM is ~2.8 KB).
pub const MAX_PUBLIC_LEN: usize = 8192;

/// A signature scheme this implementation verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// `ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`.
    EcdsaP384,
    /// `rsassa-pss-sha256`.
    RsaPssSha256,
    /// `rsa-pkcs1v15-sha256`.
    RsaPkcs1v15Sha256,
}

impl Scheme {
    /// The scheme for a metadata `keytype`/`scheme` pair, or `None` if this
    /// pair is not one this implementation verifies.
    pub fn from_names(keytype: &str, scheme: &str) -> Option<Scheme> {
        match (keytype, scheme) {
            ("ed25519", "ed25519") => Some(Scheme::Ed25519),
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => Some(Scheme::EcdsaP256),
            ("ecdsa" | "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384") => Some(Scheme::EcdsaP384),
            ("rsa", "rsassa-pss-sha256") => Some(Scheme::RsaPssSha256),
            ("rsa", "rsa-pkcs1v15-sha256") => Some(Scheme::RsaPkcs1v15Sha256),
            _ => None,
        }
    }

    /// The metadata `scheme` name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::EcdsaP256 => "ecdsa-sha2-nistp256",
            Scheme::EcdsaP384 => "ecdsa-sha2-nistp384",
            Scheme::RsaPssSha256 => "rsassa-pss-sha256",
            Scheme::RsaPkcs1v15Sha256 => "rsa-pkcs1v15-sha256",
        }
    }

    /// The metadata `keytype` this implementation writes for the scheme.
    pub fn keytype(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::EcdsaP256 | Scheme::EcdsaP384 => "ecdsa",
            Scheme::RsaPssSha256 | Scheme::RsaPkcs1v15Sha256 => "rsa",
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key listed in metadata cannot verify signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A keytype/scheme pair this implementation does not verify. Not an
    /// error by itself: the key counts toward no threshold.
    #[error("key type {keytype:?} with scheme {scheme:?} is not supported")]
    Unsupported {
        /// `keytype` as listed.
        keytype: String,
        /// `scheme` as listed.
        scheme: String,
    },
    /// `keyval.public` is longer than [`MAX_PUBLIC_LEN`].
    #[error("public key is {0} bytes long, more than the {MAX_PUBLIC_LEN}-byte limit")]
    TooLong(usize),
    /// An Ed25519 public key that is not 32 bytes of hex, or not a curve point.
    #[error("ed25519 public key is not 32 bytes of hex encoding a curve point")]
    Ed25519,
    /// `keyval.public` is not a PEM document.
    #[error("malformed PEM public key: {0}")]
    Pem(String),
    /// A PEM document of another kind (e.g. a private key or a certificate).
    #[error("PEM label is {0:?}, expected \"PUBLIC KEY\"")]
    PemLabel(String),
    /// Not a DER SubjectPublicKeyInfo.
    #[error("PEM body is not a DER SubjectPublicKeyInfo: {0}")]
    Spki(String),
    /// The key's algorithm does not fit the scheme.
    #[error("{scheme} needs a {expected} key, this is {found}")]
    WrongAlgorithm {
        /// Scheme listed.
        scheme: Scheme,
        /// Algorithm the scheme needs.
        expected: &'static str,
        /// Algorithm of the key.
        found: String,
    },
    /// An EC key on another curve than the scheme's.
    #[error("{scheme} needs a {expected} key, this one is on {found}")]
    WrongCurve {
        /// Scheme listed.
        scheme: Scheme,
        /// Curve the scheme needs.
        expected: &'static str,
        /// Curve of the key.
        found: String,
    },
    /// The EC point is not on the curve or badly encoded.
    #[error("{0} public key is not a valid curve point")]
    Point(Scheme),
    /// RSA modulus shorter than [`RSA_MIN_BITS`].
    #[error("RSA key has {bits} bits, at least {RSA_MIN_BITS} are required")]
    RsaTooShort {
        /// Modulus size.
        bits: usize,
    },
    /// RSA modulus longer than [`RSA_MAX_BITS`].
    #[error("RSA key has {bits} bits, at most {RSA_MAX_BITS} are accepted")]
    RsaTooLong {
        /// Modulus size.
        bits: usize,
    },
    /// Malformed RSA key (bad encoding or exponent).
    #[error("invalid RSA public key: {0}")]
    Rsa(String),
    /// A SubjectPublicKeyInfo of an algorithm (or curve) no scheme uses.
    #[error("{0} is not Ed25519, ECDSA P-256/P-384 or RSA")]
    UnsupportedAlgorithm(String),
}

/// A PEM SubjectPublicKeyInfo (what `openssl pkey -pubout`, a PIV token or a
/// cloud KMS gives) as the parts of a TUF key: the schemes its algorithm
/// fits, the default first, and its `keyval.public` (hex of the raw key for
/// Ed25519; for ECDSA and RSA the PEM again, with LF line ends, as
/// securesystemslib writes it). The key material itself is checked by
/// [`VerifyingKey::from_key`] once a scheme is chosen.
pub fn schemes_of_pem(pem: &str) -> Result<(&'static [Scheme], String), KeyError> {
    let der = pem_spki(pem)?;
    let spki = spki_ref(&der)?;
    let reencoded = || {
        pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, &der)
            .map_err(|e| KeyError::Pem(e.to_string()))
    };
    match spki.algorithm.oid {
        OID_ED25519 => {
            let raw = spki
                .subject_public_key
                .as_bytes()
                .ok_or(KeyError::Ed25519)?;
            Ok((&[Scheme::Ed25519], hex::encode(raw)))
        }
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(OID_P256) => Ok((&[Scheme::EcdsaP256], reencoded()?)),
                Some(OID_P384) => Ok((&[Scheme::EcdsaP384], reencoded()?)),
                Some(c) => Err(KeyError::UnsupportedAlgorithm(format!(
                    "an EC key on {}",
                    curve_name(c)
                ))),
                None => Err(KeyError::UnsupportedAlgorithm(
                    "an EC key without a named curve".into(),
                )),
            }
        }
        OID_RSA => Ok((
            &[Scheme::RsaPssSha256, Scheme::RsaPkcs1v15Sha256],
            reencoded()?,
        )),
        o => Err(KeyError::UnsupportedAlgorithm(algorithm_name(o))),
    }
}

impl KeyError {
    /// Whether this is only an unsupported keytype/scheme pair (which the
    /// specification says to ignore) rather than a broken key.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, KeyError::Unsupported { .. })
    }
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `sig` is empty.
    #[error("signature is empty")]
    Empty,
    /// `sig` is not hex.
    #[error("signature is not hex")]
    NotHex,
    /// Fixed-size signature of another size.
    #[error("{scheme} signature is {found} bytes, {expected} expected")]
    Length {
        /// Scheme.
        scheme: Scheme,
        /// Expected size.
        expected: usize,
        /// Size found.
        found: usize,
    },
    /// ECDSA signature that is not one strict DER `ECDSA-Sig-Value`.
    #[error("{scheme} signature is not strict DER: {detail}")]
    Der {
        /// Scheme.
        scheme: Scheme,
        /// What is wrong.
        detail: String,
    },
    /// Well-formed, but not a signature of this message by this key.
    #[error("{0} signature does not verify")]
    Mismatch(Scheme),
}

/// A public key ready to verify signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    RsaPss(rsa::RsaPublicKey),
    RsaPkcs1(rsa::RsaPublicKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("scheme", &self.scheme())
            .field("identity", &hex::encode(Sha256::digest(self.identity())))
            .finish()
    }
}

/// Parse a key from its metadata JSON (`{"keytype":..,"scheme":..,"keyval":{"public":..}}`)
/// into a verifying key. For fuzzing and tools; the workflow uses
/// [`VerifyingKey::from_key`] on already-parsed metadata.
pub fn parse_key_json(json: &[u8]) -> Result<VerifyingKey, KeyJsonError> {
    let key: Key = serde_json::from_slice(json).map_err(|e| KeyJsonError::Json(e.to_string()))?;
    Ok(VerifyingKey::from_key(&key)?)
}

/// [`parse_key_json`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyJsonError {
    /// Not a key object.
    #[error("not a TUF key object: {0}")]
    Json(String),
    /// A key object whose material cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl VerifyingKey {
    /// The verifying key of a TUF key from metadata.
    pub fn from_key(key: &Key) -> Result<Self, KeyError> {
        let scheme =
            Scheme::from_names(&key.keytype, &key.scheme).ok_or_else(|| KeyError::Unsupported {
                keytype: key.keytype.clone(),
                scheme: key.scheme.clone(),
            })?;
        Self::from_public(scheme, &key.keyval.public)
    }

    /// The verifying key for `scheme` from its `keyval.public` string: hex
    /// for Ed25519, PEM SubjectPublicKeyInfo for ECDSA and RSA.
    pub fn from_public(scheme: Scheme, public: &str) -> Result<Self, KeyError> {
        if public.len() > MAX_PUBLIC_LEN {
            return Err(KeyError::TooLong(public.len()));
        }
        let inner = match scheme {
            Scheme::Ed25519 => {
                let bytes: [u8; 32] = hex::decode(public)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(KeyError::Ed25519)?;
                Inner::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                        .map_err(|_| KeyError::Ed25519)?,
                )
            }
            Scheme::EcdsaP256 | Scheme::EcdsaP384 => {
                let der = pem_spki(public)?;
                let spki = spki_ref(&der)?;
                if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
                    return Err(KeyError::WrongAlgorithm {
                        scheme,
                        expected: "EC",
                        found: algorithm_name(spki.algorithm.oid),
                    });
                }
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
                let expected = if scheme == Scheme::EcdsaP256 {
                    (OID_P256, "P-256")
                } else {
                    (OID_P384, "P-384")
                };
                if curve != Some(expected.0) {
                    return Err(KeyError::WrongCurve {
                        scheme,
                        expected: expected.1,
                        found: curve.map_or_else(|| "no named curve".to_string(), curve_name),
                    });
                }
                let point = spki
                    .subject_public_key
                    .as_bytes()
                    .ok_or(KeyError::Point(scheme))?;
                if scheme == Scheme::EcdsaP256 {
                    Inner::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                            .map_err(|_| KeyError::Point(scheme))?,
                    )
                } else {
                    Inner::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                            .map_err(|_| KeyError::Point(scheme))?,
                    )
                }
            }
            Scheme::RsaPssSha256 | Scheme::RsaPkcs1v15Sha256 => {
                let der = pem_spki(public)?;
                let spki = spki_ref(&der)?;
                if spki.algorithm.oid != OID_RSA {
                    return Err(KeyError::WrongAlgorithm {
                        scheme,
                        expected: "RSA",
                        found: algorithm_name(spki.algorithm.oid),
                    });
                }
                let bits = spki
                    .subject_public_key
                    .as_bytes()
                    .ok_or_else(|| KeyError::Rsa("key bit string has unused bits".into()))?;
                let pkcs1 = rsa::pkcs1::RsaPublicKey::from_der(bits)
                    .map_err(|e| KeyError::Rsa(e.to_string()))?;
                let n = rsa::BigUint::from_bytes_be(pkcs1.modulus.as_bytes());
                let e = rsa::BigUint::from_bytes_be(pkcs1.public_exponent.as_bytes());
                let size = n.bits();
                if size < RSA_MIN_BITS {
                    return Err(KeyError::RsaTooShort { bits: size });
                }
                if size > RSA_MAX_BITS {
                    return Err(KeyError::RsaTooLong { bits: size });
                }
                let key = rsa::RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
                    .map_err(|e| KeyError::Rsa(e.to_string()))?;
                if scheme == Scheme::RsaPssSha256 {
                    Inner::RsaPss(key)
                } else {
                    Inner::RsaPkcs1(key)
                }
            }
        };
        Ok(VerifyingKey { inner })
    }

    /// The scheme this key verifies.
    pub fn scheme(&self) -> Scheme {
        match &self.inner {
            Inner::Ed25519(_) => Scheme::Ed25519,
            Inner::P256(_) => Scheme::EcdsaP256,
            Inner::P384(_) => Scheme::EcdsaP384,
            Inner::RsaPss(_) => Scheme::RsaPssSha256,
            Inner::RsaPkcs1(_) => Scheme::RsaPkcs1v15Sha256,
        }
    }

    /// The key material independent of its text form (hex case, PEM line
    /// breaks) and of its scheme: two key ids naming the same key have the
    /// same identity, so the key counts once toward a threshold.
    pub fn identity(&self) -> Vec<u8> {
        let (tag, body): (u8, Vec<u8>) = match &self.inner {
            Inner::Ed25519(k) => (1, k.as_bytes().to_vec()),
            Inner::P256(k) => (2, k.to_encoded_point(true).as_bytes().to_vec()),
            Inner::P384(k) => (3, k.to_encoded_point(true).as_bytes().to_vec()),
            Inner::RsaPss(k) | Inner::RsaPkcs1(k) => {
                let mut b = k.n().to_bytes_be();
                b.push(0);
                b.extend(k.e().to_bytes_be());
                (4, b)
            }
        };
        let mut out = vec![tag];
        out.extend(body);
        out
    }

    /// Verify `sig_hex` (the metadata `sig` field) over `message`.
    pub fn verify(&self, message: &[u8], sig_hex: &str) -> Result<(), SignatureError> {
        if sig_hex.is_empty() {
            return Err(SignatureError::Empty);
        }
        let sig = hex::decode(sig_hex).map_err(|_| SignatureError::NotHex)?;
        self.verify_bytes(message, &sig)
    }

    /// Verify the raw signature bytes `sig` over `message`.
    pub fn verify_bytes(&self, message: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        use ecdsa::signature::Verifier;
        let scheme = self.scheme();
        match &self.inner {
            Inner::Ed25519(k) => {
                let bytes: [u8; 64] = sig.try_into().map_err(|_| SignatureError::Length {
                    scheme,
                    expected: 64,
                    found: sig.len(),
                })?;
                k.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .map_err(|_| SignatureError::Mismatch(scheme))
            }
            Inner::P256(k) => {
                check_der_envelope(scheme, sig)?;
                let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| SignatureError::Der {
                    scheme,
                    detail: "not an ECDSA-Sig-Value of two P-256 integers".into(),
                })?;
                k.verify(message, &s)
                    .map_err(|_| SignatureError::Mismatch(scheme))
            }
            Inner::P384(k) => {
                check_der_envelope(scheme, sig)?;
                let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| SignatureError::Der {
                    scheme,
                    detail: "not an ECDSA-Sig-Value of two P-384 integers".into(),
                })?;
                k.verify(message, &s)
                    .map_err(|_| SignatureError::Mismatch(scheme))
            }
            Inner::RsaPkcs1(k) => {
                rsa_length(scheme, k, sig)?;
                let digest = Sha256::digest(message);
                k.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, sig)
                    .map_err(|_| SignatureError::Mismatch(scheme))
            }
            Inner::RsaPss(k) => {
                rsa_length(scheme, k, sig)?;
                let digest = Sha256::digest(message);
                // The salt length is not in the signature's metadata;
                // securesystemslib verifies with PSS.AUTO. Recover it from
                // the encoded message, then let the rsa crate do the whole
                // verification with it (a wrong guess only fails).
                let salt = pss_salt_len(k, sig).ok_or(SignatureError::Mismatch(scheme))?;
                k.verify(rsa::Pss::new_with_salt::<Sha256>(salt), &digest, sig)
                    .map_err(|_| SignatureError::Mismatch(scheme))
            }
        }
    }
}

fn rsa_length(scheme: Scheme, k: &rsa::RsaPublicKey, sig: &[u8]) -> Result<(), SignatureError> {
    if sig.len() != k.size() {
        return Err(SignatureError::Length {
            scheme,
            expected: k.size(),
            found: sig.len(),
        });
    }
    Ok(())
}

/// The salt length of an RSASSA-PSS (SHA-256, MGF1-SHA-256) signature:
/// RFC 8017 EMSA-PSS-VERIFY steps 4-10 up to finding the `0x01` separator.
fn pss_salt_len(k: &rsa::RsaPublicKey, sig: &[u8]) -> Option<usize> {
    const H_LEN: usize = 32;
    let s = rsa::BigUint::from_bytes_be(sig);
    if &s >= k.n() {
        return None;
    }
    let m = rsa::hazmat::rsa_encrypt(k, &s).ok()?;
    let em_bits = k.n().bits() - 1;
    let em_len = em_bits.div_ceil(8);
    let m = m.to_bytes_be();
    if m.len() > em_len || em_len < H_LEN + 2 {
        return None;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend(m);
    if em[em_len - 1] != 0xbc {
        return None;
    }
    let (masked_db, rest) = em.split_at(em_len - H_LEN - 1);
    let h = &rest[..H_LEN];
    let mut db = masked_db.to_vec();
    // MGF1 with SHA-256 over H.
    for (counter, chunk) in (0u32..).zip(db.chunks_mut(H_LEN)) {
        let mask = Sha256::new()
            .chain_update(h)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (b, m) in chunk.iter_mut().zip(mask.iter()) {
            *b ^= m;
        }
    }
    db[0] &= 0xff >> (8 * em_len - em_bits);
    let sep = db.iter().position(|&b| b != 0)?;
    (db[sep] == 0x01).then(|| db.len() - sep - 1)
}

/// Name trailing bytes and wrong outer tags before the ECDSA crate's strict
/// (but silent) DER parser runs, so the error says what is wrong.
fn check_der_envelope(scheme: Scheme, sig: &[u8]) -> Result<(), SignatureError> {
    let der = |detail: String| SignatureError::Der { scheme, detail };
    let mut reader = spki::der::SliceReader::new(sig).map_err(|e| der(e.to_string()))?;
    let header = spki::der::Header::decode(&mut reader).map_err(|e| der(e.to_string()))?;
    if header.tag != spki::der::Tag::Sequence {
        return Err(der(format!("starts with {}, not a SEQUENCE", header.tag)));
    }
    let declared = header
        .encoded_len()
        .and_then(|h| h + header.length)
        .map_err(|e| der(e.to_string()))?;
    let declared = usize::try_from(u32::from(declared)).map_err(|e| der(e.to_string()))?;
    if declared < sig.len() {
        return Err(der(format!(
            "{} trailing bytes after the {declared}-byte SEQUENCE",
            sig.len() - declared
        )));
    }
    if declared > sig.len() || reader.remaining_len() != header.length {
        return Err(der(format!(
            "SEQUENCE declares {declared} bytes, {} present",
            sig.len()
        )));
    }
    Ok(())
}

fn pem_spki(public: &str) -> Result<Vec<u8>, KeyError> {
    let (label, der) = pem_rfc7468::decode_vec(public.trim().as_bytes())
        .map_err(|e| KeyError::Pem(e.to_string()))?;
    if label != "PUBLIC KEY" {
        return Err(KeyError::PemLabel(label.to_string()));
    }
    Ok(der)
}

fn spki_ref(der: &[u8]) -> Result<spki::SubjectPublicKeyInfoRef<'_>, KeyError> {
    spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| KeyError::Spki(e.to_string()))
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid {
        OID_EC_PUBLIC_KEY => "an EC key".into(),
        OID_RSA => "an RSA key".into(),
        OID_ED25519 => "an Ed25519 key".into(),
        o => format!("algorithm {o}"),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid {
        OID_P256 => "P-256".into(),
        OID_P384 => "P-384".into(),
        OID_P521 => "P-521".into(),
        o => format!("curve {o}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Keys and signatures made by securesystemslib 1.4 (python-tuf 7's
    /// crypto layer): `tests/data/gen-sslib-vectors.py`.
    const VECTORS: &str = include_str!("../tests/data/sslib-vectors.json");

    fn vectors() -> (Vec<u8>, Vec<Value>) {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let msg = v["message"].as_str().unwrap().as_bytes().to_vec();
        (msg, v["cases"].as_array().unwrap().clone())
    }

    fn case(name: &str) -> (Key, String, String, Vec<u8>) {
        let (msg, cases) = vectors();
        let c = cases.iter().find(|c| c["name"] == name).unwrap();
        let key: Key = serde_json::from_value(c["key"].clone()).unwrap();
        (
            key,
            c["keyid"].as_str().unwrap().to_string(),
            c["sig"].as_str().unwrap().to_string(),
            msg,
        )
    }

    #[test]
    fn securesystemslib_keys_and_signatures_verify() {
        for name in [
            "ed25519",
            "ecdsa-p256",
            "ecdsa-p384",
            "rsa-pss-2048",
            "rsa-pkcs1v15-3072",
        ] {
            let (key, keyid, sig, msg) = case(name);
            // Key ids are computed the same way as securesystemslib's default.
            assert_eq!(crate::crypto::key_id(&key).unwrap(), keyid, "{name}");
            let vk = VerifyingKey::from_key(&key).unwrap_or_else(|e| panic!("{name}: {e}"));
            vk.verify(&msg, &sig)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                vk.verify(b"another message", &sig),
                Err(SignatureError::Mismatch(vk.scheme())),
                "{name}"
            );
            let json = serde_json::to_vec(&key).unwrap();
            assert_eq!(parse_key_json(&json).unwrap().identity(), vk.identity());
        }
    }

    #[test]
    fn legacy_ecdsa_keytype_is_accepted() {
        let (mut key, _, sig, msg) = case("ecdsa-p256");
        key.keytype = "ecdsa-sha2-nistp256".into();
        VerifyingKey::from_key(&key)
            .unwrap()
            .verify(&msg, &sig)
            .unwrap();
    }

    #[test]
    fn short_rsa_and_p521_are_refused() {
        let (key, ..) = case("rsa-pss-1024");
        assert_eq!(
            VerifyingKey::from_key(&key).unwrap_err(),
            KeyError::RsaTooShort { bits: 1024 }
        );
        let (key, ..) = case("ecdsa-p521");
        let e = VerifyingKey::from_key(&key).unwrap_err();
        assert!(e.is_unsupported(), "{e}");
    }

    #[test]
    fn wrong_curve_and_wrong_algorithm_are_named() {
        let (mut key, ..) = case("ecdsa-p384");
        key.scheme = "ecdsa-sha2-nistp256".into();
        let e = VerifyingKey::from_key(&key).unwrap_err();
        assert!(
            matches!(e, KeyError::WrongCurve { found: ref f, .. } if f == "P-384"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "ecdsa-sha2-nistp256 needs a P-256 key, this one is on P-384"
        );
        let (mut key, ..) = case("rsa-pss-2048");
        key.keytype = "ecdsa".into();
        key.scheme = "ecdsa-sha2-nistp256".into();
        let e = VerifyingKey::from_key(&key).unwrap_err();
        assert!(matches!(e, KeyError::WrongAlgorithm { .. }), "{e}");
    }

    #[test]
    fn malformed_pem_is_named() {
        let (mut key, ..) = case("ecdsa-p256");
        key.keyval.public = key.keyval.public.replace("-----END PUBLIC KEY-----", "");
        let e = VerifyingKey::from_key(&key).unwrap_err();
        assert!(matches!(e, KeyError::Pem(_)), "{e}");
        let (mut key, ..) = case("ecdsa-p256");
        key.keyval.public = key.keyval.public.replace("PUBLIC KEY", "PRIVATE KEY");
        assert_eq!(
            VerifyingKey::from_key(&key).unwrap_err(),
            KeyError::PemLabel("PRIVATE KEY".into())
        );
    }

    #[test]
    fn der_with_trailing_bytes_is_refused() {
        let (key, _, sig, msg) = case("ecdsa-p256");
        let vk = VerifyingKey::from_key(&key).unwrap();
        let e = vk.verify(&msg, &format!("{sig}00")).unwrap_err();
        assert!(
            matches!(&e, SignatureError::Der { detail, .. } if detail.contains("1 trailing bytes")),
            "{e}"
        );
        let e = vk.verify(&msg, &sig[..sig.len() - 2]).unwrap_err();
        assert!(matches!(e, SignatureError::Der { .. }), "{e}");
        assert_eq!(vk.verify(&msg, "zz"), Err(SignatureError::NotHex));
        assert_eq!(vk.verify(&msg, ""), Err(SignatureError::Empty));
    }

    #[test]
    fn high_s_ecdsa_is_accepted_like_securesystemslib() {
        let (key, _, sig, msg) = case("ecdsa-p256");
        let vk = VerifyingKey::from_key(&key).unwrap();
        let s = p256::ecdsa::Signature::from_der(&hex::decode(&sig).unwrap()).unwrap();
        let (r, s_) = s.split_scalars();
        let flipped = p256::ecdsa::Signature::from_scalars(r, -s_).unwrap();
        // One of the two is high-S; both verify (OpenSSL and so
        // securesystemslib accept both).
        assert!(s.normalize_s().is_some() || flipped.normalize_s().is_some());
        vk.verify(&msg, &sig).unwrap();
        vk.verify(&msg, &hex::encode(flipped.to_der().as_bytes()))
            .unwrap();
    }

    #[test]
    fn rsa_signature_of_wrong_length_is_named() {
        let (key, _, sig, msg) = case("rsa-pss-2048");
        let vk = VerifyingKey::from_key(&key).unwrap();
        assert_eq!(
            vk.verify(&msg, &sig[2..]),
            Err(SignatureError::Length {
                scheme: Scheme::RsaPssSha256,
                expected: 256,
                found: 255
            })
        );
    }

    #[test]
    fn rsa_pss_with_any_salt_length_verifies() {
        use rsa::pkcs8::DecodePrivateKey;
        let (msg, cases) = vectors();
        let c = cases.iter().find(|c| c["name"] == "rsa-pss-2048").unwrap();
        let private =
            rsa::RsaPrivateKey::from_pkcs8_pem(c["private_pkcs8_pem"].as_str().unwrap()).unwrap();
        let vk = VerifyingKey::from_public(
            Scheme::RsaPssSha256,
            c["key"]["keyval"]["public"].as_str().unwrap(),
        )
        .unwrap();
        let digest = Sha256::digest(&msg);
        for salt in [0usize, 20, 32, 256 - 32 - 2] {
            let sig = private
                .sign_with_rng(
                    &mut rand::rngs::OsRng,
                    rsa::Pss::new_with_salt::<Sha256>(salt),
                    &digest,
                )
                .unwrap();
            vk.verify_bytes(&msg, &sig)
                .unwrap_or_else(|e| panic!("salt {salt}: {e}"));
        }
    }

    #[test]
    fn same_key_in_two_pem_layouts_has_one_identity() {
        let (key, ..) = case("ecdsa-p256");
        let a = VerifyingKey::from_key(&key).unwrap();
        let mut crlf = key.clone();
        crlf.keyval.public = key.keyval.public.replace('\n', "\r\n");
        let b = VerifyingKey::from_key(&crlf).unwrap();
        assert_eq!(a.identity(), b.identity());
    }
}
