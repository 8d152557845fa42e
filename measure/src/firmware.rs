//! The firmware's event log: the TCG PC Client crypto-agile format the
//! kernel exposes as `binary_bios_measurements`, and its replay to the
//! PCRs the firmware and the loaders extended (docs/attestation.md, "The
//! firmware log").
//!
//! The format (TCG PC Client Platform Firmware Profile, "Event Logging"):
//! one `TCG_PCR_EVENT` record in the SHA-1 layout whose event is the
//! `Spec ID Event03` header (the digest banks the log carries and their
//! sizes), then `TCG_PCR_EVENT2` records, each with a list of digests (one
//! per bank) and its event data. All integers are little-endian.
//!
//! Every length is checked against the bytes left before it is used, so a
//! log of N bytes is parsed in O(N) time with at most O(N) memory, and a
//! malformed log is an error naming the record and the byte offset, never
//! a panic.
//!
//! Self-contained (std, sha2, hex, thiserror; no `crate::` item): the fuzz
//! crate compiles this file from source (fuzz/src/lib.rs).

use sha2::{Digest, Sha256};

/// The PCRs a verifier replays from the firmware log: the boot loaders and
/// the kernel image (4), the Secure Boot policy (7), and the initrd and
/// load options the kernel's EFI stub measured (9).
pub const FIRMWARE_PCRS: [u32; 3] = [4, 7, 9];

/// The event type of records that extend nothing (the header, the startup
/// locality, vendor notes).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_EVENT_TAG`: the data is a `TCG_PCClientTaggedEvent` (an id, a
/// size, that many bytes).
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// `EV_IPL`: what a boot loader passes on; systemd-boot's record of the
/// kernel command line in PCR 12, whose data is the command line itself.
pub const EV_IPL: u32 = 0x0000_000d;
/// The PCR the kernel's EFI stub measures the initrd and the load options
/// into.
pub const STUB_PCR: u32 = 9;
/// The PCR systemd-boot measures the command line of the entry it starts
/// into (not quoted: its records are trusted only through a digest that
/// replays into a quoted PCR).
pub const LOADER_CMDLINE_PCR: u32 = 12;
/// The tagged event id of the EFI stub's initrd record (Linux's
/// `INITRD_EVENT_TAG_ID`, "Linux initrd"): its digest is SHA-256 of the
/// initrd's bytes.
pub const INITRD_TAG: u32 = 0x8F3B_22EC;
/// The tagged event id of the EFI stub's load options record (Linux's
/// `LOAD_OPTIONS_EVENT_TAG_ID`, "LOADED_IMAGE::LoadOptions"): its digest
/// is [`load_options_digest`] of the command line the loader passed.
pub const LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;
/// `TPM_ALG_SHA1`.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;

/// The signature of the crypto-agile log's header event (`TCG_EfiSpecIDEvent`).
const SPEC_ID_EVENT03: &[u8; 16] = b"Spec ID Event03\0";
/// The signature of the `EV_NO_ACTION` event that gives PCR 0's start value.
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";
/// Most digest banks a header may list (a TPM has a handful).
const MAX_BANKS: u32 = 16;
/// The largest digest (SHA-512).
const MAX_DIGEST: u16 = 64;
/// The PCRs of a PC Client TPM.
const PCR_COUNT: u32 = 24;

/// One record of the log that extends a PCR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareEvent {
    /// The record's number in the log; the header is record 0.
    pub record: usize,
    /// The byte offset of the record.
    pub offset: usize,
    pub pcr: u32,
    /// `EV_*` of the PC Client profile.
    pub event_type: u32,
    /// The SHA-256 bank's digest, the value extended.
    pub sha256: [u8; 32],
    /// The event data (all of the records' data together is at most the
    /// log's length).
    pub data: Vec<u8>,
}

impl FirmwareEvent {
    /// The id of an `EV_EVENT_TAG` record, when its data is one
    /// `TCG_PCClientTaggedEvent` (id, size, then exactly that many bytes).
    pub fn tag(&self) -> Option<u32> {
        if self.event_type != EV_EVENT_TAG || self.data.len() < 8 {
            return None;
        }
        let word = |i: usize| {
            u32::from_le_bytes([
                self.data[i],
                self.data[i + 1],
                self.data[i + 2],
                self.data[i + 3],
            ])
        };
        (word(4) as usize == self.data.len() - 8).then(|| word(0))
    }
}

/// The SHA-256 the kernel's EFI stub measures (tagged
/// [`LOAD_OPTIONS_TAG`]) for the command line `cmdline`: of its UTF-16LE
/// code units and the terminating NUL, the load options as systemd-boot
/// passes them (and measures them into PCR 12).
pub fn load_options_digest(cmdline: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for unit in cmdline.encode_utf16().chain([0]) {
        h.update(unit.to_le_bytes());
    }
    h.finalize().into()
}

/// The command line in load options (UTF-16LE, one terminating NUL left
/// out); an odd length or invalid UTF-16 shows as U+FFFD.
pub fn load_options_text(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect();
    let units = units.strip_suffix(&[0]).unwrap_or(&units);
    let mut text = String::from_utf16_lossy(units);
    if data.len() % 2 == 1 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// A parsed crypto-agile log: its banks and the records that extend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareLog {
    /// `(TPM_ALG_*, digest size)` of the header, in its order.
    pub banks: Vec<(u16, u16)>,
    /// The records that extend a PCR, in order (`EV_NO_ACTION` records
    /// are left out).
    pub events: Vec<FirmwareEvent>,
    /// The locality the TPM was started from (the `StartupLocality`
    /// event), which is PCR 0's start value; 0 without the event.
    pub startup_locality: u8,
}

/// A firmware log that does not parse or does not replay; the message
/// names the record, the byte offset or the PCR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareLogError {
    #[error("the firmware log is empty")]
    Empty,
    #[error("the firmware log ends inside record {record} ({what}) at byte {offset}")]
    Truncated {
        record: usize,
        what: &'static str,
        offset: usize,
    },
    #[error("the firmware log is not a crypto-agile TCG log: {0}")]
    NotCryptoAgile(&'static str),
    #[error("the firmware log's header is malformed: {0}")]
    Header(String),
    #[error("the firmware log has no SHA-256 bank (its banks: {0})")]
    NoSha256(String),
    #[error("record {record} of the firmware log (byte {offset}) is malformed: {why}")]
    Record {
        record: usize,
        offset: usize,
        why: String,
    },
    #[error("the firmware event log does not replay to the quoted PCR {pcr}: its {events} events give {replayed}, the TPM holds {quoted}")]
    Mismatch {
        pcr: u32,
        events: usize,
        replayed: String,
        quoted: String,
    },
    #[error("the quote does not cover PCR {0}, which the firmware log must explain")]
    NotQuoted(u32),
}

/// A bounded little-endian reader over the log's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    record: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FirmwareLogError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(FirmwareLogError::Truncated {
                record: self.record,
                what,
                offset: self.pos,
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FirmwareLogError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FirmwareLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FirmwareLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

fn alg_name(alg: u16) -> String {
    match alg {
        TPM_ALG_SHA1 => "SHA-1".into(),
        TPM_ALG_SHA256 => "SHA-256".into(),
        0x000c => "SHA-384".into(),
        0x000d => "SHA-512".into(),
        0x0012 => "SM3-256".into(),
        a => format!("0x{a:04x}"),
    }
}

/// The digest size of the hash algorithms whose size is fixed by their
/// definition; a header that gives them another size is refused.
fn known_size(alg: u16) -> Option<u16> {
    match alg {
        TPM_ALG_SHA1 => Some(20),
        TPM_ALG_SHA256 | 0x0012 => Some(32),
        0x000c => Some(48),
        0x000d => Some(64),
        _ => None,
    }
}

impl FirmwareLog {
    /// Parses a crypto-agile log (the whole of `binary_bios_measurements`).
    pub fn parse(bytes: &[u8]) -> Result<FirmwareLog, FirmwareLogError> {
        if bytes.is_empty() {
            return Err(FirmwareLogError::Empty);
        }
        let mut r = Reader {
            bytes,
            pos: 0,
            record: 0,
        };
        let banks = parse_header(&mut r)?;
        let sha256_size = banks
            .iter()
            .find(|(a, _)| *a == TPM_ALG_SHA256)
            .map(|(_, s)| *s);
        if sha256_size != Some(32) {
            let names: Vec<String> = banks.iter().map(|(a, _)| alg_name(*a)).collect();
            return Err(FirmwareLogError::NoSha256(names.join(", ")));
        }
        let mut log = FirmwareLog {
            banks,
            events: Vec::new(),
            startup_locality: 0,
        };
        while r.left() > 0 {
            r.record += 1;
            log.parse_event(&mut r)?;
        }
        Ok(log)
    }

    /// One `TCG_PCR_EVENT2` record.
    fn parse_event(&mut self, r: &mut Reader<'_>) -> Result<(), FirmwareLogError> {
        let offset = r.pos;
        let record = r.record;
        let bad = |why: String| FirmwareLogError::Record {
            record,
            offset,
            why,
        };
        let pcr = r.u32("pcrIndex")?;
        let event_type = r.u32("eventType")?;
        let count = r.u32("digests.count")?;
        if count == 0 || count as usize > self.banks.len() {
            return Err(bad(format!(
                "{count} digests, the header lists {} banks",
                self.banks.len()
            )));
        }
        let mut sha256 = None;
        let mut seen: Vec<u16> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let alg = r.u16("digests.hashAlg")?;
            let size = self
                .banks
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    bad(format!(
                        "a digest of {}, a bank the header does not list",
                        alg_name(alg)
                    ))
                })?;
            if seen.contains(&alg) {
                return Err(bad(format!("two {} digests", alg_name(alg))));
            }
            seen.push(alg);
            let digest = r.take(usize::from(size), "digests.digest")?;
            if alg == TPM_ALG_SHA256 {
                let mut d = [0u8; 32];
                d.copy_from_slice(digest);
                sha256 = Some(d);
            }
        }
        let size = r.u32("eventSize")?;
        let data = r.take(size as usize, "event")?;
        if event_type == EV_NO_ACTION {
            if data.len() == 17 && data[..16] == STARTUP_LOCALITY[..] && pcr == 0 {
                self.startup_locality = data[16];
            }
            return Ok(());
        }
        if pcr >= PCR_COUNT {
            return Err(bad(format!("PCR {pcr}: a PC Client TPM has PCRs 0 to 23")));
        }
        let sha256 = sha256.ok_or_else(|| bad("no SHA-256 digest".into()))?;
        self.events.push(FirmwareEvent {
            record,
            offset,
            pcr,
            event_type,
            sha256,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// The value `pcr`'s SHA-256 bank holds after the log's records for it
    /// were extended in order, from its reset value (zero; PCR 0 starts
    /// at the startup locality).
    pub fn replay(&self, pcr: u32) -> [u8; 32] {
        let mut start = [0u8; 32];
        if pcr == 0 {
            start[31] = self.startup_locality;
        }
        self.events
            .iter()
            .filter(|e| e.pcr == pcr)
            .fold(start, |acc, e| extend(&acc, &e.sha256))
    }

    /// How many records extend `pcr`.
    pub fn count(&self, pcr: u32) -> usize {
        self.events.iter().filter(|e| e.pcr == pcr).count()
    }

    /// The SHA-256 digests of `pcr`'s `EV_EVENT_TAG` records tagged `tag`,
    /// in order.
    pub fn tagged(&self, pcr: u32, tag: u32) -> Vec<[u8; 32]> {
        self.events
            .iter()
            .filter(|e| e.pcr == pcr && e.tag() == Some(tag))
            .map(|e| e.sha256)
            .collect()
    }

    /// The data of the first `EV_IPL` record of `pcr` whose data hashes
    /// to `digest` (what authenticates it when `pcr` is not quoted).
    pub fn ipl_with_digest(&self, pcr: u32, digest: &[u8; 32]) -> Option<&[u8]> {
        self.events
            .iter()
            .filter(|e| e.pcr == pcr && e.event_type == EV_IPL)
            .find(|e| Sha256::digest(&e.data)[..] == digest[..])
            .map(|e| e.data.as_slice())
    }

    /// Checks that the log replays to the quoted value of each of
    /// [`FIRMWARE_PCRS`]; the first PCR that does not is the error.
    pub fn check(&self, quoted: &[(u32, [u8; 32])]) -> Result<(), FirmwareLogError> {
        for pcr in FIRMWARE_PCRS {
            let value = quoted
                .iter()
                .find(|(p, _)| *p == pcr)
                .map(|(_, v)| v)
                .ok_or(FirmwareLogError::NotQuoted(pcr))?;
            let replayed = self.replay(pcr);
            if replayed != *value {
                return Err(FirmwareLogError::Mismatch {
                    pcr,
                    events: self.count(pcr),
                    replayed: hex::encode(replayed),
                    quoted: hex::encode(value),
                });
            }
        }
        Ok(())
    }
}

/// `TPM2_PCR_Extend` of the SHA-256 bank: SHA-256(`pcr` || `digest`).
fn extend(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().into()
}

/// The `TCG_PCR_EVENT` header record and its `TCG_EfiSpecIDEvent`: the
/// banks.
fn parse_header(r: &mut Reader<'_>) -> Result<Vec<(u16, u16)>, FirmwareLogError> {
    let header = FirmwareLogError::Header;
    let pcr = r.u32("pcrIndex")?;
    let event_type = r.u32("eventType")?;
    if pcr != 0 || event_type != EV_NO_ACTION {
        return Err(FirmwareLogError::NotCryptoAgile(
            "the first record is not the EV_NO_ACTION Spec ID event",
        ));
    }
    r.take(20, "digest")?;
    let size = r.u32("eventSize")?;
    let start = r.pos;
    r.take(size as usize, "event")?;
    // The event's fields, with the log's offsets.
    let mut e = Reader {
        bytes: &r.bytes[..r.pos],
        pos: start,
        record: 0,
    };
    if e.take(16, "signature")? != SPEC_ID_EVENT03 {
        return Err(FirmwareLogError::NotCryptoAgile(
            "the header's signature is not \"Spec ID Event03\"",
        ));
    }
    e.u32("platformClass")?;
    let minor = e.u8("specVersionMinor")?;
    let major = e.u8("specVersionMajor")?;
    e.u8("specErrata")?;
    e.u8("uintnSize")?;
    if major != 2 {
        return Err(header(format!("spec version {major}.{minor}, not 2.x")));
    }
    let n = e.u32("numberOfAlgorithms")?;
    if n == 0 || n > MAX_BANKS {
        return Err(header(format!(
            "{n} digest banks (1 to {MAX_BANKS} are read)"
        )));
    }
    let mut banks: Vec<(u16, u16)> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let alg = e.u16("algorithmId")?;
        let size = e.u16("digestSize")?;
        if size == 0 || size > MAX_DIGEST {
            return Err(header(format!(
                "{} has digest size {size} (1 to {MAX_DIGEST})",
                alg_name(alg)
            )));
        }
        if known_size(alg).is_some_and(|k| k != size) {
            return Err(header(format!(
                "{} has digest size {size}, not {}",
                alg_name(alg),
                known_size(alg).unwrap_or(0)
            )));
        }
        if banks.iter().any(|(a, _)| *a == alg) {
            return Err(header(format!("{} is listed twice", alg_name(alg))));
        }
        banks.push((alg, size));
    }
    let vendor = e.u8("vendorInfoSize")?;
    e.take(usize::from(vendor), "vendorInfo")?;
    Ok(banks)
}

/// Writes a crypto-agile log with a SHA-1 and a SHA-256 bank, the layout
/// OVMF writes (tests and tools that need a log whose records they
/// choose; the SHA-1 digests are SHA-256's first 20 bytes, which no
/// SHA-256 replay reads).
#[derive(Debug, Clone)]
pub struct FirmwareLogWriter {
    bytes: Vec<u8>,
}

impl Default for FirmwareLogWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FirmwareLogWriter {
    /// The header record.
    pub fn new() -> FirmwareLogWriter {
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_EVENT03);
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0 errata 0, UINTN 8 bytes
        spec.extend_from_slice(&2u32.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
        spec.extend_from_slice(&20u16.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0); // vendorInfoSize
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 20]);
        bytes.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&spec);
        FirmwareLogWriter { bytes }
    }

    /// A record of `event_type` for `pcr` whose digest is SHA-256 of
    /// `data`; returns that digest, the value to extend.
    pub fn event(&mut self, pcr: u32, event_type: u32, data: &[u8]) -> [u8; 32] {
        let digest: [u8; 32] = Sha256::digest(data).into();
        self.record(pcr, event_type, &digest, data);
        digest
    }

    /// A record with the given SHA-256 digest (an event whose digest is
    /// not that of its data, as for a PE image's Authenticode hash).
    pub fn record(&mut self, pcr: u32, event_type: u32, sha256: &[u8; 32], data: &[u8]) {
        let b = &mut self.bytes;
        b.extend_from_slice(&pcr.to_le_bytes());
        b.extend_from_slice(&event_type.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
        b.extend_from_slice(&sha256[..20]);
        b.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        b.extend_from_slice(sha256);
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
    }

    /// The log's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV_SEPARATOR: u32 = 0x4;
    const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;

    /// A log like OVMF's: a startup locality, Secure Boot variables into
    /// 7, separators, two images into 4, an initrd into 9.
    fn sample() -> (Vec<u8>, Vec<(u32, [u8; 32])>) {
        let mut w = FirmwareLogWriter::new();
        let mut loc = STARTUP_LOCALITY.to_vec();
        loc.push(3);
        w.record(0, EV_NO_ACTION, &[0; 32], &loc);
        let mut pcrs = vec![];
        fn ext(pcr: u32, d: [u8; 32], pcrs: &mut Vec<(u32, [u8; 32])>) {
            match pcrs.iter_mut().find(|(p, _)| *p == pcr) {
                Some((_, v)) => *v = super::extend(v, &d),
                None => pcrs.push((pcr, super::extend(&[0; 32], &d))),
            }
        }
        for var in ["SecureBoot", "PK", "KEK", "db", "dbx"] {
            let d = w.event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, var.as_bytes());
            ext(7, d, &mut pcrs);
        }
        for pcr in [4, 7] {
            let d = w.event(pcr, EV_SEPARATOR, &[0; 4]);
            ext(pcr, d, &mut pcrs);
        }
        for image in [[1u8; 32], [2u8; 32]] {
            w.record(4, EV_EFI_BOOT_SERVICES_APPLICATION, &image, &[0xaa; 40]);
            ext(4, image, &mut pcrs);
        }
        let d = w.event(9, 0x6, b"initrd");
        ext(9, d, &mut pcrs);
        pcrs.sort();
        (w.finish(), pcrs)
    }

    #[test]
    fn a_written_log_parses_and_replays_to_the_extended_values() {
        let (bytes, pcrs) = sample();
        let log = FirmwareLog::parse(&bytes).expect("parses");
        assert_eq!(log.banks, vec![(TPM_ALG_SHA1, 20), (TPM_ALG_SHA256, 32)]);
        assert_eq!(log.startup_locality, 3);
        assert_eq!(log.count(7), 6);
        assert_eq!(log.count(4), 3);
        assert_eq!(log.count(9), 1);
        for (pcr, v) in &pcrs {
            assert_eq!(log.replay(*pcr), *v, "PCR {pcr}");
        }
        log.check(&pcrs).expect("replays");
        let mut zero0 = [0u8; 32];
        zero0[31] = 3;
        assert_eq!(log.replay(0), zero0, "PCR 0 starts at the locality");
        assert_eq!(log.replay(23), [0; 32]);
    }

    #[test]
    fn a_log_that_does_not_replay_names_the_pcr() {
        let (bytes, mut pcrs) = sample();
        let log = FirmwareLog::parse(&bytes).expect("parses");
        pcrs.iter_mut().find(|(p, _)| *p == 7).expect("7").1[0] ^= 1;
        let e = log.check(&pcrs).expect_err("PCR 7 differs");
        assert!(matches!(
            e,
            FirmwareLogError::Mismatch {
                pcr: 7,
                events: 6,
                ..
            }
        ));
        assert!(e.to_string().contains("PCR 7: its 6 events give"), "{e}");
        pcrs.retain(|(p, _)| *p != 9);
        pcrs.iter_mut().find(|(p, _)| *p == 7).expect("7").1[0] ^= 1;
        assert_eq!(log.check(&pcrs), Err(FirmwareLogError::NotQuoted(9)));
    }

    #[test]
    fn every_cut_of_a_log_is_an_error_or_a_whole_record_prefix() {
        let (bytes, _) = sample();
        let whole = FirmwareLog::parse(&bytes).expect("parses");
        let mut ok = 0;
        for n in 0..bytes.len() {
            match FirmwareLog::parse(&bytes[..n]) {
                Ok(log) => {
                    ok += 1;
                    assert!(whole.events.starts_with(&log.events));
                }
                Err(FirmwareLogError::Truncated { offset, .. }) => assert!(offset <= n),
                Err(FirmwareLogError::Empty) => assert_eq!(n, 0),
                Err(e) => panic!("cut at {n}: {e}"),
            }
        }
        // The header alone, and with each of the first 10 of its 11 records.
        assert_eq!(ok, 11);
    }

    /// A `TCG_PCClientTaggedEvent` as Linux's EFI stub writes it.
    fn tagged_data(tag: u32, name: &str) -> Vec<u8> {
        let mut d = tag.to_le_bytes().to_vec();
        d.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        d.extend_from_slice(name.as_bytes());
        d.push(0);
        d
    }

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect()
    }

    #[test]
    fn the_stub_records_are_found_by_tag_and_the_command_line_by_its_digest() {
        let cmdline = "initrd=\\phase\\initramfs.img console=ttyS0 phase.mode=local";
        let options = load_options_digest(cmdline);
        assert_eq!(options, <[u8; 32]>::from(Sha256::digest(utf16z(cmdline))));
        let mut w = FirmwareLogWriter::new();
        w.event(LOADER_CMDLINE_PCR, EV_IPL, b"not the command line");
        w.event(LOADER_CMDLINE_PCR, EV_IPL, &utf16z(cmdline));
        w.record(
            STUB_PCR,
            EV_EVENT_TAG,
            &options,
            &tagged_data(LOAD_OPTIONS_TAG, "LOADED_IMAGE::LoadOptions"),
        );
        let initrd: [u8; 32] = Sha256::digest(b"the initrd").into();
        w.record(
            STUB_PCR,
            EV_EVENT_TAG,
            &initrd,
            &tagged_data(INITRD_TAG, "Linux initrd"),
        );
        // A size field that is not the data's is not a tagged event.
        let mut odd = tagged_data(INITRD_TAG, "Linux initrd");
        odd[4] += 1;
        w.record(STUB_PCR, EV_EVENT_TAG, &[7; 32], &odd);
        let log = FirmwareLog::parse(&w.finish()).expect("parses");
        assert_eq!(log.tagged(STUB_PCR, LOAD_OPTIONS_TAG), vec![options]);
        assert_eq!(log.tagged(STUB_PCR, INITRD_TAG), vec![initrd]);
        assert!(log.tagged(LOADER_CMDLINE_PCR, INITRD_TAG).is_empty());
        let data = log
            .ipl_with_digest(LOADER_CMDLINE_PCR, &options)
            .expect("the PCR 12 record of the command line");
        assert_eq!(load_options_text(data), cmdline);
        assert_eq!(log.ipl_with_digest(STUB_PCR, &options), None);
        assert_eq!(log.ipl_with_digest(LOADER_CMDLINE_PCR, &initrd), None);
    }

    #[test]
    fn load_options_text_drops_one_nul_and_marks_what_is_not_utf16() {
        assert_eq!(load_options_text(&utf16z("a b")), "a b");
        assert_eq!(load_options_text(&[b'a', 0, b'b', 0]), "ab");
        assert_eq!(load_options_text(&[b'a', 0, 0]), "a\u{fffd}");
        assert_eq!(load_options_text(&[0x00, 0xd8, b'a', 0]), "\u{fffd}a");
        assert_eq!(load_options_text(&[]), "");
    }

    fn header_with(banks: &[(u16, u16)], vendor: u8) -> Vec<u8> {
        let mut spec = SPEC_ID_EVENT03.to_vec();
        spec.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 2]);
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for (a, s) in banks {
            spec.extend_from_slice(&a.to_le_bytes());
            spec.extend_from_slice(&s.to_le_bytes());
        }
        spec.push(vendor);
        spec.extend(std::iter::repeat_n(0, usize::from(vendor)));
        let mut b = vec![0, 0, 0, 0, 3, 0, 0, 0];
        b.extend_from_slice(&[0; 20]);
        b.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        b.extend_from_slice(&spec);
        b
    }

    #[test]
    fn headers_that_are_not_crypto_agile_sha256_logs_are_named() {
        // A SHA-1 log (TPM 1.2 layout): its first record extends PCR 0.
        let mut sha1 = vec![0u8, 0, 0, 0, 8, 0, 0, 0];
        sha1.extend_from_slice(&[0; 24]);
        let e = FirmwareLog::parse(&sha1).expect_err("SHA-1 log");
        assert!(matches!(e, FirmwareLogError::NotCryptoAgile(_)), "{e}");

        let mut old = header_with(&[(TPM_ALG_SHA256, 32)], 0);
        old[32 + 14] = b'0'; // "Spec ID Event00"
        let e = FirmwareLog::parse(&old).expect_err("Event00");
        assert!(e.to_string().contains("Spec ID Event03"), "{e}");

        let e = FirmwareLog::parse(&header_with(&[(TPM_ALG_SHA1, 20)], 0)).expect_err("no 256");
        assert_eq!(e, FirmwareLogError::NoSha256("SHA-1".into()));
        let e = FirmwareLog::parse(&header_with(&[(TPM_ALG_SHA256, 20)], 0)).expect_err("size");
        assert!(
            e.to_string().contains("SHA-256 has digest size 20, not 32"),
            "{e}"
        );
        let e = FirmwareLog::parse(&header_with(&[(0x99, 65)], 0)).expect_err("huge digest");
        assert!(e.to_string().contains("digest size 65"), "{e}");
        let e = FirmwareLog::parse(&header_with(&[], 0)).expect_err("no banks");
        assert!(e.to_string().contains("0 digest banks"), "{e}");
        let dup = header_with(&[(TPM_ALG_SHA256, 32), (TPM_ALG_SHA256, 32)], 0);
        let e = FirmwareLog::parse(&dup).expect_err("dup");
        assert!(e.to_string().contains("listed twice"), "{e}");
        // Vendor info is skipped.
        let log = FirmwareLog::parse(&header_with(&[(TPM_ALG_SHA256, 32)], 7)).expect("vendor");
        assert!(log.events.is_empty());
    }

    #[test]
    fn huge_length_fields_are_truncation_not_allocation() {
        // numberOfAlgorithms = u32::MAX.
        let mut h = header_with(&[(TPM_ALG_SHA256, 32)], 0);
        h[32 + 24..32 + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = FirmwareLog::parse(&h).expect_err("banks");
        assert!(e.to_string().contains("4294967295 digest banks"), "{e}");
        // The header's eventSize = u32::MAX.
        let mut h = header_with(&[(TPM_ALG_SHA256, 32)], 0);
        h[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            FirmwareLog::parse(&h),
            Err(FirmwareLogError::Truncated {
                record: 0,
                what: "event",
                ..
            })
        ));
        // A record's eventSize = u32::MAX and digests.count = u32::MAX.
        let mut w = FirmwareLogWriter::new();
        w.event(4, 0xd, b"x");
        let good = w.finish();
        let size_at = good.len() - 1 - 4;
        let mut b = good.clone();
        b[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            FirmwareLog::parse(&b),
            Err(FirmwareLogError::Truncated {
                record: 1,
                what: "event",
                ..
            })
        ));
        let rec = size_at - (4 + 4 + 4 + 2 + 20 + 2 + 32);
        let mut b = good.clone();
        b[rec + 8..rec + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = FirmwareLog::parse(&b).expect_err("count");
        assert!(
            e.to_string().contains("record 1 of the firmware log"),
            "{e}"
        );
        assert!(e.to_string().contains("4294967295 digests"), "{e}");
    }

    #[test]
    fn bad_records_are_named_by_number_and_offset() {
        let mut w = FirmwareLogWriter::new();
        w.event(4, 0xd, b"a");
        let first = w.clone().finish().len();
        w.event(7, 0xd, b"b");
        let good = w.finish();
        // An algorithm the header does not list.
        let mut b = good.clone();
        b[first + 12..first + 14].copy_from_slice(&0x000cu16.to_le_bytes());
        let e = FirmwareLog::parse(&b).expect_err("alg");
        assert_eq!(
            e.to_string(),
            format!("record 2 of the firmware log (byte {first}) is malformed: a digest of SHA-384, a bank the header does not list")
        );
        // PCR 24.
        let mut b = good.clone();
        b[first..first + 4].copy_from_slice(&24u32.to_le_bytes());
        let e = FirmwareLog::parse(&b).expect_err("pcr");
        assert!(e.to_string().contains("PCR 24"), "{e}");
        // The SHA-256 digest is missing: one digest, SHA-1 twice... as a
        // count of 1 with only the SHA-1 one.
        let mut b = good[..first].to_vec();
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&0xdu32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
        b.extend_from_slice(&[0; 20]);
        b.extend_from_slice(&0u32.to_le_bytes());
        let e = FirmwareLog::parse(&b).expect_err("no sha256");
        assert!(e.to_string().contains("no SHA-256 digest"), "{e}");
        // The same bank twice.
        let mut b = good[..first].to_vec();
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&0xdu32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        for _ in 0..2 {
            b.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
            b.extend_from_slice(&[0; 20]);
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        let e = FirmwareLog::parse(&b).expect_err("twice");
        assert!(e.to_string().contains("two SHA-1 digests"), "{e}");
        // A no-action record extends nothing, whatever its digest.
        let mut w = FirmwareLogWriter::new();
        w.record(4, EV_NO_ACTION, &[9; 32], b"note");
        let log = FirmwareLog::parse(&w.finish()).expect("parses");
        assert!(log.events.is_empty());
        assert_eq!(log.replay(4), [0; 32]);
    }
}
