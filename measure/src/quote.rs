//! The attestation key and the quote (TPM 2.0 Library Specification,
//! Parts 2 and 3), as raw bytes like the PCR commands in `tpm.rs`:
//!
//! * the **AK**: `TPM2_CreatePrimary` in the endorsement hierarchy of a
//!   restricted ECDSA P-256 / SHA-256 signing key with the attributes of
//!   `tpm2_createak` (fixedTPM, fixedParent, sensitiveDataOrigin,
//!   userWithAuth, restricted, sign). A primary key is derived from the
//!   hierarchy's seed and the template, so the same template gives the
//!   same key on every boot of the same TPM: nothing is stored, and the
//!   key is flushed after each quote;
//! * `TPM2_Quote` over a PCR selection in the SHA-256 bank with the
//!   verifier's nonce as qualifying data, and the parse of what it
//!   returns (`TPMS_ATTEST`, `TPMT_SIGNATURE`);
//! * [`verify_quote`]: the signature with the AK's public key (the `p256`
//!   crate), the nonce, and the PCR digest against PCR values given
//!   beside the quote. Pure: bytes in, the parsed attestation or a typed
//!   error out.

use std::io::{Read, Write};

use p256::ecdsa::signature::Verifier as _;
use sha2::{Digest, Sha256};

use crate::tpm::{Command, Reader, Tpm, TpmError, TPM_ALG_SHA256, TPM_RS_PW, TPM_ST_SESSIONS};

/// The endorsement hierarchy: its seed changes only when the TPM is
/// re-manufactured, not on an owner clear, so the AK survives one.
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000b;
const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ECC_NIST_P256: u16 = 0x0003;
/// `TPM_GENERATED_VALUE`: the first four bytes of everything the TPM signs
/// about itself, which a restricted key signs for nobody else.
const TPM_GENERATED: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

const FIXED_TPM: u32 = 1 << 1;
const FIXED_PARENT: u32 = 1 << 4;
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
const USER_WITH_AUTH: u32 = 1 << 6;
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;
const SIGN: u32 = 1 << 18;

/// The AK's object attributes, as `tpm2_createak` sets them.
pub const AK_ATTRIBUTES: u32 =
    FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | RESTRICTED | SIGN;

/// The PCRs a Phase quote covers (SHA-256 bank): the firmware's view of
/// the loader and kernel (4), the Secure Boot policy (7), the stage-1
/// initramfs (9), and the Phase events (23).
pub const QUOTE_PCRS: [u32; 4] = [4, 7, 9, 23];

/// Fewest nonce bytes a quote is made for.
pub const NONCE_MIN: usize = 8;
/// Most nonce bytes: `TPM2B_DATA` holds at most a `TPMT_HA`, 34 bytes on a
/// TPM whose largest hash is SHA-256; 32 fit every TPM.
pub const NONCE_MAX: usize = 32;

/// A quote or AK that does not verify; the message names the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("{what} is malformed: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    #[error("the AK is not a restricted ECDSA P-256 signing key: {0}")]
    NotAnAk(&'static str),
    #[error("the quote's signature does not verify with the AK")]
    Signature,
    #[error("the signed structure is not a TPM-generated quote ({0})")]
    NotAQuote(&'static str),
    #[error("the quote's nonce is not the one sent (a replayed quote): it holds {quoted}, the verifier sent {sent}")]
    Nonce { quoted: String, sent: String },
    #[error("the quote covers PCRs {quoted:?}, the PCR values given are for {given:?}")]
    Selection { quoted: Vec<u32>, given: Vec<u32> },
    #[error(
        "the quote's PCR digest {quoted} is not the digest of the PCR values given ({computed})"
    )]
    PcrDigest { quoted: String, computed: String },
}

/// The AK's public area (`TPMT_PUBLIC`) and its point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPublic {
    /// The `TPMT_PUBLIC` bytes, as the TPM returned them.
    pub area: Vec<u8>,
    pub x: [u8; 32],
    pub y: [u8; 32],
}

impl AkPublic {
    /// Parses a `TPM2B_PUBLIC` (the TPM's `outPublic`, or the `tss` format
    /// of `tpm2_readpublic`) and checks it is an AK: ECC P-256, ECDSA with
    /// SHA-256, restricted, signing only, fixed to its TPM.
    pub fn parse(tpm2b: &[u8]) -> Result<AkPublic, QuoteError> {
        let bad = |why| QuoteError::Malformed {
            what: "the AK public area",
            why,
        };
        let mut r = Reader(tpm2b);
        let size = r.u16().map_err(bad)? as usize;
        let area = r.take(size).map_err(bad)?;
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let mut r = Reader(area);
        if r.u16().map_err(bad)? != TPM_ALG_ECC {
            return Err(QuoteError::NotAnAk("not an ECC key"));
        }
        if r.u16().map_err(bad)? != TPM_ALG_SHA256 {
            return Err(QuoteError::NotAnAk("its name algorithm is not SHA-256"));
        }
        let attrs = r.u32().map_err(bad)?;
        let needed = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN;
        if attrs & needed != needed || attrs & DECRYPT != 0 {
            return Err(QuoteError::NotAnAk(
                "its attributes are not fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign without decrypt",
            ));
        }
        let policy = r.u16().map_err(bad)? as usize;
        r.take(policy).map_err(bad)?;
        if r.u16().map_err(bad)? != TPM_ALG_NULL {
            return Err(QuoteError::NotAnAk("it has a symmetric algorithm"));
        }
        if r.u16().map_err(bad)? != TPM_ALG_ECDSA || r.u16().map_err(bad)? != TPM_ALG_SHA256 {
            return Err(QuoteError::NotAnAk("its scheme is not ECDSA with SHA-256"));
        }
        if r.u16().map_err(bad)? != TPM_ECC_NIST_P256 {
            return Err(QuoteError::NotAnAk("its curve is not NIST P-256"));
        }
        if r.u16().map_err(bad)? != TPM_ALG_NULL {
            return Err(QuoteError::NotAnAk("it has a key derivation scheme"));
        }
        let x = coordinate(&mut r).map_err(bad)?;
        let y = coordinate(&mut r).map_err(bad)?;
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(AkPublic {
            area: area.to_vec(),
            x,
            y,
        })
    }

    /// The `TPM2B_PUBLIC` encoding (what [`AkPublic::parse`] reads).
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 + self.area.len());
        v.extend_from_slice(&(self.area.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.area);
        v
    }

    /// The key's TPM name: `TPM_ALG_SHA256` then SHA-256 of the public area.
    pub fn name(&self) -> Vec<u8> {
        let mut v = TPM_ALG_SHA256.to_be_bytes().to_vec();
        v.extend_from_slice(&Sha256::digest(&self.area));
        v
    }

    /// SHA-256 of the public area, hex: what a verifier remembers of a
    /// node's AK.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.area))
    }

    fn verifying_key(&self) -> Result<p256::ecdsa::VerifyingKey, QuoteError> {
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(4);
        sec1.extend_from_slice(&self.x);
        sec1.extend_from_slice(&self.y);
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| QuoteError::NotAnAk("its point is not on the curve"))
    }
}

/// A `TPM2B_ECC_PARAMETER` of at most 32 bytes, left-padded to 32.
fn coordinate(r: &mut Reader<'_>) -> Result<[u8; 32], &'static str> {
    let n = r.u16()? as usize;
    if n > 32 {
        return Err("a coordinate longer than 32 bytes");
    }
    let b = r.take(n)?;
    let mut out = [0u8; 32];
    out[32 - n..].copy_from_slice(b);
    Ok(out)
}

/// An ECDSA `TPMT_SIGNATURE` (SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    pub r: [u8; 32],
    pub s: [u8; 32],
}

impl EcdsaSignature {
    /// Parses a `TPMT_SIGNATURE` (`tpm2_quote -s`'s `tss` format).
    pub fn parse(bytes: &[u8]) -> Result<EcdsaSignature, QuoteError> {
        let bad = |why| QuoteError::Malformed {
            what: "the signature",
            why,
        };
        let mut r = Reader(bytes);
        if r.u16().map_err(bad)? != TPM_ALG_ECDSA {
            return Err(bad("not an ECDSA signature"));
        }
        if r.u16().map_err(bad)? != TPM_ALG_SHA256 {
            return Err(bad("not over SHA-256"));
        }
        let rr = coordinate(&mut r).map_err(bad)?;
        let s = coordinate(&mut r).map_err(bad)?;
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(EcdsaSignature { r: rr, s })
    }
}

/// What a quote states (`TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// The signing key's qualified name.
    pub signer: Vec<u8>,
    /// The qualifying data: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// Milliseconds the TPM has been powered (`clockInfo.clock`).
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    /// The PCRs quoted, ascending (SHA-256 bank).
    pub pcrs: Vec<u32>,
    /// SHA-256 over the quoted PCR values in that order.
    pub pcr_digest: Vec<u8>,
}

impl Attest {
    /// Parses the `TPMS_ATTEST` bytes a quote signs (`tpm2_quote -m`).
    pub fn parse(bytes: &[u8]) -> Result<Attest, QuoteError> {
        let bad = |why| QuoteError::Malformed {
            what: "the attestation structure",
            why,
        };
        let mut r = Reader(bytes);
        if r.u32().map_err(bad)? != TPM_GENERATED {
            return Err(QuoteError::NotAQuote("no TPM_GENERATED_VALUE"));
        }
        if r.u16().map_err(bad)? != TPM_ST_ATTEST_QUOTE {
            return Err(QuoteError::NotAQuote("not of type TPM_ST_ATTEST_QUOTE"));
        }
        let n = r.u16().map_err(bad)? as usize;
        let signer = r.take(n).map_err(bad)?.to_vec();
        let n = r.u16().map_err(bad)? as usize;
        let extra_data = r.take(n).map_err(bad)?.to_vec();
        let clock = r.u64().map_err(bad)?;
        let reset_count = r.u32().map_err(bad)?;
        let restart_count = r.u32().map_err(bad)?;
        let safe = r.take(1).map_err(bad)?[0] != 0;
        let firmware_version = r.u64().map_err(bad)?;
        let pcrs = parse_selection(&mut r).map_err(bad)?;
        let n = r.u16().map_err(bad)? as usize;
        let pcr_digest = r.take(n).map_err(bad)?.to_vec();
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Attest {
            signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            pcrs,
            pcr_digest,
        })
    }
}

/// A `TPML_PCR_SELECTION` that selects in the SHA-256 bank only, as the
/// ascending list of PCRs selected.
fn parse_selection(r: &mut Reader<'_>) -> Result<Vec<u32>, &'static str> {
    let count = r.u32()?;
    if count != 1 {
        return Err("a PCR selection of other than one bank");
    }
    if r.u16()? != TPM_ALG_SHA256 {
        return Err("a PCR selection of another bank than SHA-256");
    }
    let size = r.take(1)?[0] as usize;
    let bitmap = r.take(size)?;
    let mut pcrs = Vec::new();
    for (i, b) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                pcrs.push((i * 8 + bit) as u32);
            }
        }
    }
    Ok(pcrs)
}

/// The 3-byte selection bitmap of `pcrs` (each below 24).
fn selection_bitmap(pcrs: &[u32]) -> [u8; 3] {
    let mut select = [0u8; 3];
    for p in pcrs {
        if let Some(b) = select.get_mut((p / 8) as usize) {
            *b |= 1 << (p % 8);
        }
    }
    select
}

/// SHA-256 over the PCR values in order: a quote's `pcrDigest`.
pub fn pcr_digest(values: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}

/// Checks a quote: the signature over `attest` with the AK, the nonce in
/// it, and that it covers exactly the PCRs of `pcrs` (ascending) with the
/// digest of their values. Returns what the quote states.
pub fn verify_quote(
    ak: &AkPublic,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    pcrs: &[(u32, [u8; 32])],
) -> Result<Attest, QuoteError> {
    let sig = EcdsaSignature::parse(signature)?;
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(&sig.r);
    rs[32..].copy_from_slice(&sig.s);
    let sig = p256::ecdsa::Signature::from_slice(&rs).map_err(|_| QuoteError::Signature)?;
    ak.verifying_key()?
        .verify(attest, &sig)
        .map_err(|_| QuoteError::Signature)?;
    let a = Attest::parse(attest)?;
    if a.extra_data != nonce {
        return Err(QuoteError::Nonce {
            quoted: hex::encode(&a.extra_data),
            sent: hex::encode(nonce),
        });
    }
    let given: Vec<u32> = pcrs.iter().map(|(p, _)| *p).collect();
    if a.pcrs != given {
        return Err(QuoteError::Selection {
            quoted: a.pcrs.clone(),
            given,
        });
    }
    let values: Vec<[u8; 32]> = pcrs.iter().map(|(_, v)| *v).collect();
    let computed = pcr_digest(&values);
    if a.pcr_digest != computed {
        return Err(QuoteError::PcrDigest {
            quoted: hex::encode(&a.pcr_digest),
            computed: hex::encode(computed),
        });
    }
    Ok(a)
}

/// The AK template (`TPMT_PUBLIC`): ECC P-256, name algorithm SHA-256,
/// [`AK_ATTRIBUTES`], no policy, no symmetric algorithm, ECDSA with
/// SHA-256, no KDF, an empty unique field.
pub fn ak_template() -> Vec<u8> {
    let mut t = Vec::with_capacity(24);
    t.extend_from_slice(&TPM_ALG_ECC.to_be_bytes());
    t.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&AK_ATTRIBUTES.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes()); // authPolicy
    t.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // symmetric
    t.extend_from_slice(&TPM_ALG_ECDSA.to_be_bytes()); // scheme
    t.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    t.extend_from_slice(&TPM_ECC_NIST_P256.to_be_bytes());
    t.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // kdf
    t.extend_from_slice(&0u16.to_be_bytes()); // unique.x
    t.extend_from_slice(&0u16.to_be_bytes()); // unique.y
    t
}

/// A command with handles and the empty password session, size patched.
fn session_command(command: Command, handles: &[u32], params: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(32 + params.len());
    c.extend_from_slice(&TPM_ST_SESSIONS.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    c.extend_from_slice(&command.code().to_be_bytes());
    for h in handles {
        c.extend_from_slice(&h.to_be_bytes());
    }
    c.extend_from_slice(&9u32.to_be_bytes());
    c.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&0u16.to_be_bytes());
    c.extend_from_slice(params);
    let len = c.len() as u32;
    c[2..6].copy_from_slice(&len.to_be_bytes());
    c
}

/// `TPM2_CreatePrimary` of the AK in the endorsement hierarchy.
pub fn create_primary_command() -> Vec<u8> {
    let template = ak_template();
    let mut p = Vec::with_capacity(64);
    // inSensitive: TPM2B_SENSITIVE_CREATE with an empty userAuth and data.
    p.extend_from_slice(&4u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    // inPublic: TPM2B_PUBLIC.
    p.extend_from_slice(&(template.len() as u16).to_be_bytes());
    p.extend_from_slice(&template);
    // outsideInfo: empty; creationPCR: no selection.
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    session_command(Command::CreatePrimary, &[TPM_RH_ENDORSEMENT], &p)
}

/// `TPM2_Quote` with the key at `handle` over `pcrs` (SHA-256 bank), the
/// nonce as qualifying data, the key's own scheme.
pub fn quote_command(handle: u32, nonce: &[u8], pcrs: &[u32]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + nonce.len());
    p.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
    p.extend_from_slice(nonce);
    p.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // inScheme
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    p.push(3);
    p.extend_from_slice(&selection_bitmap(pcrs));
    session_command(Command::Quote, &[handle], &p)
}

/// `TPM2_FlushContext` of a transient handle.
pub fn flush_command(handle: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(14);
    c.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    c.extend_from_slice(&14u32.to_be_bytes());
    c.extend_from_slice(&Command::FlushContext.code().to_be_bytes());
    c.extend_from_slice(&handle.to_be_bytes());
    c
}

/// The handles and the parameter area of a response to a command with
/// sessions (`handles` handles, then `parameterSize`, the parameters, the
/// session area).
fn session_response(body: &[u8], handles: usize) -> Result<(Vec<u32>, &[u8]), &'static str> {
    let mut r = Reader(body);
    let mut hs = Vec::with_capacity(handles);
    for _ in 0..handles {
        hs.push(r.u32()?);
    }
    let size = r.u32()? as usize;
    let params = r.take(size)?;
    Ok((hs, params))
}

/// A quote as the node sends it: the AK, the signed bytes, the signature,
/// and the quoted PCRs' values read right after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub ak: AkPublic,
    /// `TPMS_ATTEST` bytes.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE` bytes.
    pub signature: Vec<u8>,
    /// The quoted PCRs and their SHA-256 values, ascending.
    pub pcrs: Vec<(u32, [u8; 32])>,
}

impl<T: Read + Write> Tpm<T> {
    /// Creates the AK (the same key every time on this TPM) and returns
    /// its transient handle and public area; flush it when done.
    pub fn create_ak(&mut self) -> Result<(u32, AkPublic), TpmError> {
        let command = Command::CreatePrimary;
        let body = self.transact(command, &create_primary_command())?;
        let malformed = |what| TpmError::Malformed { command, what };
        let (handles, params) = session_response(&body, 1).map_err(malformed)?;
        let handle = handles.first().copied().ok_or(malformed("no handle"))?;
        let mut r = Reader(params);
        let size = r.u16().map_err(malformed)? as usize;
        let area = r.take(size).map_err(malformed)?;
        let mut tpm2b = (size as u16).to_be_bytes().to_vec();
        tpm2b.extend_from_slice(area);
        match AkPublic::parse(&tpm2b) {
            Ok(ak) => Ok((handle, ak)),
            Err(_) => {
                let _ = self.flush(handle);
                Err(malformed("the public area is not the AK's"))
            }
        }
    }

    /// Flushes a transient object.
    pub fn flush(&mut self, handle: u32) -> Result<(), TpmError> {
        self.transact(Command::FlushContext, &flush_command(handle))
            .map(drop)
    }

    /// `TPM2_Quote` with the key at `handle`: the `TPMS_ATTEST` bytes and
    /// the `TPMT_SIGNATURE` bytes.
    pub fn quote(
        &mut self,
        handle: u32,
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let command = Command::Quote;
        let body = self.transact(command, &quote_command(handle, nonce, pcrs))?;
        let malformed = |what| TpmError::Malformed { command, what };
        let (_, params) = session_response(&body, 0).map_err(malformed)?;
        let mut r = Reader(params);
        let n = r.u16().map_err(malformed)? as usize;
        let attest = r.take(n).map_err(malformed)?.to_vec();
        let signature = r.0.to_vec();
        EcdsaSignature::parse(&signature)
            .map_err(|_| malformed("the signature is not an ECDSA SHA-256 TPMT_SIGNATURE"))?;
        Ok((attest, signature))
    }

    /// The SHA-256 values of `pcrs`, one `TPM2_PCR_Read` each.
    pub fn pcr_read_all(&mut self, pcrs: &[u32]) -> Result<Vec<(u32, [u8; 32])>, TpmError> {
        pcrs.iter()
            .map(|&p| self.pcr_read(p).map(|v| (p, v)))
            .collect()
    }

    /// A quote of [`QUOTE_PCRS`] over `nonce` with the AK, and the PCR
    /// values read after it. The AK is flushed whatever happens. A PCR
    /// extended between the quote and the read makes the values disagree
    /// with the quote's digest; then the quote is made again (three times
    /// at most, after which the verifier sees the disagreement).
    pub fn attest(&mut self, nonce: &[u8]) -> Result<Quote, TpmError> {
        let (handle, ak) = self.create_ak()?;
        let result = self.quote_and_read(handle, nonce);
        let flushed = self.flush(handle);
        let (attest, signature, pcrs) = result?;
        flushed?;
        Ok(Quote {
            ak,
            attest,
            signature,
            pcrs,
        })
    }

    #[allow(clippy::type_complexity)]
    fn quote_and_read(
        &mut self,
        handle: u32,
        nonce: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>, Vec<(u32, [u8; 32])>), TpmError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (attest, signature) = self.quote(handle, nonce, &QUOTE_PCRS)?;
            let pcrs = self.pcr_read_all(&QUOTE_PCRS)?;
            let values: Vec<[u8; 32]> = pcrs.iter().map(|(_, v)| *v).collect();
            let agrees = Attest::parse(&attest)
                .map(|a| a.pcr_digest == pcr_digest(&values))
                .map_err(|_| TpmError::Malformed {
                    command: Command::Quote,
                    what: "the attestation structure does not parse",
                })?;
            if agrees || tries == 3 {
                return Ok((attest, signature, pcrs));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    #[test]
    fn the_ak_template_is_the_createak_one() {
        assert_eq!(
            hex::encode(ak_template()),
            "0023000b00050072000000100018000b00030010 0000 0000".replace(' ', "")
        );
        let c = create_primary_command();
        assert_eq!(c.len(), 65);
        assert_eq!(
            hex::encode(&c[..27]),
            "800200000041000001314000000b00000009400000090000000000"
        );
    }

    #[test]
    fn the_quote_command_selects_4_7_9_23() {
        let c = quote_command(0x8000_0000, &[0xaa; 8], &QUOTE_PCRS);
        assert_eq!(
            hex::encode(&c[..10]),
            format!("8002{:08x}00000158", c.len())
        );
        assert_eq!(hex::encode(&c[c.len() - 10..]), "00000001000b03900280");
        assert_eq!(
            hex::encode(flush_command(0x8000_0001)),
            "80010000000e0000016580000001"
        );
    }

    /// A software AK, its public area, and a quote it signs.
    fn signed(nonce: &[u8], pcrs: &[(u32, [u8; 32])]) -> (AkPublic, Vec<u8>, Vec<u8>) {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
        let point = key.verifying_key().to_encoded_point(false);
        let mut area = ak_template();
        area.truncate(area.len() - 4);
        for c in [point.x().expect("x"), point.y().expect("y")] {
            area.extend_from_slice(&32u16.to_be_bytes());
            area.extend_from_slice(c);
        }
        let mut tpm2b = (area.len() as u16).to_be_bytes().to_vec();
        tpm2b.extend_from_slice(&area);
        let ak = AkPublic::parse(&tpm2b).expect("ak");
        let mut a = TPM_GENERATED.to_be_bytes().to_vec();
        a.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        let name = ak.name();
        a.extend_from_slice(&(name.len() as u16).to_be_bytes());
        a.extend_from_slice(&name);
        a.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
        a.extend_from_slice(nonce);
        a.extend_from_slice(&[0; 17 + 8]);
        let list: Vec<u32> = pcrs.iter().map(|(p, _)| *p).collect();
        a.extend_from_slice(&1u32.to_be_bytes());
        a.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        a.push(3);
        a.extend_from_slice(&selection_bitmap(&list));
        let values: Vec<[u8; 32]> = pcrs.iter().map(|(_, v)| *v).collect();
        a.extend_from_slice(&32u16.to_be_bytes());
        a.extend_from_slice(&pcr_digest(&values));
        let sig: p256::ecdsa::Signature = key.sign(&a);
        let bytes = sig.to_bytes();
        let mut s = TPM_ALG_ECDSA.to_be_bytes().to_vec();
        s.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        for half in [&bytes[..32], &bytes[32..]] {
            s.extend_from_slice(&32u16.to_be_bytes());
            s.extend_from_slice(half);
        }
        (ak, a, s)
    }

    fn pcrs() -> Vec<(u32, [u8; 32])> {
        QUOTE_PCRS.iter().map(|&p| (p, [p as u8; 32])).collect()
    }

    #[test]
    fn a_signed_quote_verifies_and_states_its_nonce_and_pcrs() {
        let (ak, attest, sig) = signed(b"nonce-123", &pcrs());
        let a = verify_quote(&ak, &attest, &sig, b"nonce-123", &pcrs()).expect("verifies");
        assert_eq!(a.extra_data, b"nonce-123");
        assert_eq!(a.pcrs, QUOTE_PCRS.to_vec());
        assert_eq!(a.signer, ak.name());
        assert_eq!(AkPublic::parse(&ak.to_tpm2b()).expect("again"), ak);
    }

    #[test]
    fn each_bad_quote_is_named() {
        let (ak, attest, sig) = signed(b"nonce-123", &pcrs());
        let e = verify_quote(&ak, &attest, &sig, b"nonce-456", &pcrs()).expect_err("nonce");
        assert!(matches!(e, QuoteError::Nonce { .. }), "{e}");
        assert!(e.to_string().contains("nonce"), "{e}");

        let mut forged = attest.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let e = verify_quote(&ak, &forged, &sig, b"nonce-123", &pcrs()).expect_err("sig");
        assert_eq!(e, QuoteError::Signature);

        let mut other = pcrs();
        other[3].1[0] ^= 1;
        let e = verify_quote(&ak, &attest, &sig, b"nonce-123", &other).expect_err("digest");
        assert!(matches!(e, QuoteError::PcrDigest { .. }), "{e}");

        let e = verify_quote(&ak, &attest, &sig, b"nonce-123", &pcrs()[1..]).expect_err("sel");
        assert!(matches!(e, QuoteError::Selection { .. }), "{e}");

        let e = verify_quote(&ak, &attest, &sig[..sig.len() - 3], b"nonce-123", &pcrs())
            .expect_err("short signature");
        assert_eq!(e.to_string(), "the signature is malformed: truncated");
    }

    #[test]
    fn a_key_that_is_not_an_ak_is_refused() {
        let (ak, _, _) = signed(b"12345678", &pcrs());
        let mut area = ak.area.clone();
        // Clear `restricted`.
        area[5] &= !0x01;
        let mut tpm2b = (area.len() as u16).to_be_bytes().to_vec();
        tpm2b.extend_from_slice(&area);
        let e = AkPublic::parse(&tpm2b).expect_err("not restricted");
        assert!(matches!(e, QuoteError::NotAnAk(_)), "{e}");
        let e = AkPublic::parse(&ak.to_tpm2b()[..20]).expect_err("truncated");
        assert_eq!(e.to_string(), "the AK public area is malformed: truncated");
    }
}
