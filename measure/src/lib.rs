//! Measured boot: what stage 1 extends into the TPM before it hands over,
//! and how a verifier recomputes it (docs/attestation.md).
//!
//! What it owns:
//! * the Phase event ([`Event`]): one fact about the boot (the trusted
//!   root, the TUF versions, each verified artifact's digest, the target
//!   command line, the mode, the channel), its canonical encoding and
//!   SHA-256 digest, and the PCR it goes to ([`PHASE_PCR`]);
//! * [`boot_events`]: the events of the boot a `boot.json` describes;
//! * [`replay`] and [`replay_log`]: the PCR value a log leads to;
//! * [`Tpm`]: `TPM2_PCR_Extend` and `TPM2_PCR_Read` as raw command bytes
//!   over any `Read + Write` (`/dev/tpmrm0`, or swtpm in the tests), and
//!   response codes in words ([`ResponseCode`]);
//! * the attestation key and the quote ([`Tpm::attest`]: `TPM2_CreatePrimary`
//!   of the AK, `TPM2_Quote`, `TPM2_FlushContext`), and the pure check of a
//!   quote ([`verify_quote`]: signature, nonce, PCR digest);
//! * the firmware's event log ([`FirmwareLog`]: the TCG crypto-agile
//!   `binary_bios_measurements`, parsed with a bound on every length, and
//!   its replay to PCRs 4, 7 and 9 of the SHA-256 bank, and the records
//!   of the kernel's EFI stub in PCR 9: the initrd's digest and the load
//!   options', whose text systemd-boot's PCR 12 record holds).
//!
//! What it does not own: when stage 1 measures and what it prints
//! (phase-init's `measure` step), the `boot.json` schema (the `handover`
//! crate's [`handover::Measurement`] is the record), the `/attest`
//! endpoint and the verifier's rules beyond one quote (`phase serve` and
//! `phase attest verify`).
#![forbid(unsafe_code)]

mod event;
mod firmware;
mod quote;
mod tpm;

pub use event::{
    boot_events, extend, replay, replay_log, Event, Kind, LogError, Root, DOMAIN, PHASE_PCR,
};
pub use firmware::{
    load_options_digest, load_options_text, FirmwareEvent, FirmwareLog, FirmwareLogError,
    FirmwareLogWriter, EV_EVENT_TAG, EV_IPL, EV_NO_ACTION, FIRMWARE_PCRS, INITRD_TAG,
    LOADER_CMDLINE_PCR, LOAD_OPTIONS_TAG, STUB_PCR, TPM_ALG_SHA1, TPM_ALG_SHA256,
};
pub use quote::{
    ak_template, create_primary_command, flush_command, pcr_digest, quote_command, verify_quote,
    AkPublic, Attest, EcdsaSignature, Quote, QuoteError, AK_ATTRIBUTES, NONCE_MAX, NONCE_MIN,
    QUOTE_PCRS, TPM_RH_ENDORSEMENT,
};
pub use tpm::{extend_command, read_command, Command, ResponseCode, Tpm, TpmError, TPM_DEVICE};
