//! The JSON a node answers to `GET /attest?nonce=HEX` (docs/attestation.md).

use serde::{Deserialize, Serialize};

/// The format version of [`AttestResponse`].
pub const ATTEST_VERSION: u32 = 1;

/// A node's attestation: the quote, what it quotes, and the logs that
/// explain the quoted PCRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    pub version: u32,
    /// The node's name (its host name unless `phase serve --node-name`).
    pub node: String,
    /// The nonce asked for, hex (the quote's qualifying data).
    pub nonce: String,
    /// The AK's `TPM2B_PUBLIC`, base64.
    pub ak_public: String,
    /// The `TPMS_ATTEST` the TPM signed, base64.
    pub attest: String,
    /// Its `TPMT_SIGNATURE` (ECDSA P-256, SHA-256), base64.
    pub signature: String,
    /// The quoted PCRs' SHA-256 values, ascending.
    pub pcrs: Vec<PcrValue>,
    /// The Phase event log from `boot.json` (PCR 23).
    pub measurements: Vec<handover::Measurement>,
    /// The firmware's event log (`binary_bios_measurements`), base64, when
    /// the kernel exposes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_log: Option<String>,
}

/// One PCR of the SHA-256 bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrValue {
    pub pcr: u32,
    /// Hex.
    pub sha256: String,
}
