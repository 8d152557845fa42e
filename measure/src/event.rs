//! The Phase event: one fact about the boot, its canonical encoding and
//! digest, the PCR it goes to, and the replay of a log to a PCR value.

use std::fmt;

use handover::{BootJson, Measurement};
use sha2::{Digest, Sha256};

/// The PCR every Phase event is extended into (SHA-256 bank): 23, the
/// PC Client profile's "application support" PCR, which no firmware,
/// loader, shim or systemd component of the Linux TPM PCR Registry uses
/// (docs/attestation.md says why not another).
pub const PHASE_PCR: u32 = 23;

/// The first bytes of every event's encoding: the format and its version.
/// A later format changes this prefix, so its digests can never equal
/// those of this one.
pub const DOMAIN: &[u8] = b"phase-boot/v1\0";

/// What an event states. [`Kind::as_str`] is the word in the encoding and
/// in `boot.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The key fingerprint of the trusted root baked into stage 1 (hex).
    RootFingerprint,
    /// The version of the root the metadata was verified with (decimal).
    RootVersion,
    TimestampVersion,
    SnapshotVersion,
    TargetsVersion,
    /// `<sha256 hex> <TUF target name>` of the verified kernel.
    Kernel,
    Initramfs,
    Rootfs,
    /// One per job the target gets, in `boot.json`'s order.
    Job,
    /// The whole command line the target kernel is given.
    Cmdline,
    /// `phase.mode`: `internet`, `local` or `private`.
    Mode,
    Channel,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::RootFingerprint,
        Kind::RootVersion,
        Kind::TimestampVersion,
        Kind::SnapshotVersion,
        Kind::TargetsVersion,
        Kind::Kernel,
        Kind::Initramfs,
        Kind::Rootfs,
        Kind::Job,
        Kind::Cmdline,
        Kind::Mode,
        Kind::Channel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RootFingerprint => "root-fingerprint",
            Kind::RootVersion => "root-version",
            Kind::TimestampVersion => "timestamp-version",
            Kind::SnapshotVersion => "snapshot-version",
            Kind::TargetsVersion => "targets-version",
            Kind::Kernel => "kernel",
            Kind::Initramfs => "initramfs",
            Kind::Rootfs => "rootfs",
            Kind::Job => "job",
            Kind::Cmdline => "cmdline",
            Kind::Mode => "mode",
            Kind::Channel => "channel",
        }
    }

    pub fn from_word(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fact, as extended into [`Event::pcr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub kind: Kind,
    pub payload: String,
}

/// A `boot.json` event-log record that is not a Phase event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("event {index}: unknown kind {kind:?}")]
    UnknownKind { index: usize, kind: String },
    #[error("event {index} ({kind}): the digest is {found}, its encoding hashes to {expected}")]
    Digest {
        index: usize,
        kind: Kind,
        found: String,
        expected: String,
    },
}

impl Event {
    /// An event for [`PHASE_PCR`].
    pub fn new(kind: Kind, payload: impl Into<String>) -> Event {
        Event {
            pcr: PHASE_PCR,
            kind,
            payload: payload.into(),
        }
    }

    /// The canonical encoding: `phase-boot/v1 NUL <kind> NUL <payload>`.
    /// Kinds are fixed ASCII words without NUL and the payload is last, so
    /// two different events never share an encoding.
    pub fn encoding(&self) -> Vec<u8> {
        let kind = self.kind.as_str().as_bytes();
        let mut v = Vec::with_capacity(DOMAIN.len() + kind.len() + 1 + self.payload.len());
        v.extend_from_slice(DOMAIN);
        v.extend_from_slice(kind);
        v.push(0);
        v.extend_from_slice(self.payload.as_bytes());
        v
    }

    /// SHA-256 of [`Event::encoding`]: the value extended into the PCR.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.encoding()).into()
    }

    /// The event as `boot.json` records it.
    pub fn record(&self) -> Measurement {
        Measurement {
            pcr: self.pcr,
            kind: self.kind.as_str().to_owned(),
            payload: self.payload.clone(),
            digest: hex::encode(self.digest()),
        }
    }

    /// The event a `boot.json` record states, when its kind is known and
    /// its digest is the digest of its encoding (`index` names it in the
    /// error).
    pub fn from_record(index: usize, m: &Measurement) -> Result<Event, LogError> {
        let kind = Kind::from_word(&m.kind).ok_or_else(|| LogError::UnknownKind {
            index,
            kind: m.kind.clone(),
        })?;
        let event = Event {
            pcr: m.pcr,
            kind,
            payload: m.payload.clone(),
        };
        let expected = hex::encode(event.digest());
        if !m.digest.eq_ignore_ascii_case(&expected) {
            return Err(LogError::Digest {
                index,
                kind,
                found: m.digest.clone(),
                expected,
            });
        }
        Ok(event)
    }
}

/// `PCR_new = SHA-256(PCR_old || digest)`: what TPM2_PCR_Extend does to
/// the SHA-256 bank.
pub fn extend(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().into()
}

/// The value `pcr` holds after `events` were extended into it in order,
/// starting from its reset value (32 zero bytes); events for other PCRs
/// are skipped.
pub fn replay(events: &[Event], pcr: u32) -> [u8; 32] {
    events
        .iter()
        .filter(|e| e.pcr == pcr)
        .fold([0u8; 32], |acc, e| extend(&acc, &e.digest()))
}

/// [`replay`] of a `boot.json` event log, after checking every record's
/// digest against its kind and payload.
pub fn replay_log(log: &[Measurement], pcr: u32) -> Result<[u8; 32], LogError> {
    let events = log
        .iter()
        .enumerate()
        .map(|(i, m)| Event::from_record(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(replay(&events, pcr))
}

/// The trusted root stage 1 holds: its key fingerprint (hex) and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root<'a> {
    pub fingerprint: &'a str,
    pub version: u64,
}

/// Stage 1's events for the boot `boot` describes, in this order: the
/// root's fingerprint and version (the refreshed root's version when the
/// metadata came through TUF, else the baked one's), the timestamp,
/// snapshot and targets versions, each artifact's digest and target name
/// (kernel, initramfs, rootfs, then the jobs), the target command line,
/// the mode, the channel. A fact the boot does not have (a test boot has
/// no TUF versions, a boot without a trusted root no fingerprint) has no
/// event.
pub fn boot_events(root: Option<Root<'_>>, boot: &BootJson) -> Vec<Event> {
    let mut events = Vec::new();
    if let Some(r) = root {
        events.push(Event::new(Kind::RootFingerprint, r.fingerprint));
    }
    let versions = [
        (Kind::RootVersion, boot.tuf.root.or(root.map(|r| r.version))),
        (Kind::TimestampVersion, boot.tuf.timestamp),
        (Kind::SnapshotVersion, boot.tuf.snapshot),
        (Kind::TargetsVersion, boot.tuf.targets),
    ];
    for (kind, v) in versions {
        if let Some(v) = v {
            events.push(Event::new(kind, v.to_string()));
        }
    }
    for (word, kind) in [
        ("kernel", Kind::Kernel),
        ("initramfs", Kind::Initramfs),
        ("rootfs", Kind::Rootfs),
        ("job", Kind::Job),
    ] {
        for a in boot.artifacts.iter().filter(|a| a.kind == word) {
            events.push(Event::new(kind, format!("{} {}", a.sha256, a.target)));
        }
    }
    events.push(Event::new(Kind::Cmdline, boot.cmdline.as_str()));
    events.push(Event::new(Kind::Mode, boot.mode.as_str()));
    events.push(Event::new(Kind::Channel, boot.channel.as_str()));
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use handover::{ArtifactRecord, TufVersions, BOOT_JSON_VERSION};

    fn boot() -> BootJson {
        let art = |kind: &str, target: &str, c: char| ArtifactRecord {
            kind: kind.into(),
            target: target.into(),
            sha256: c.to_string().repeat(64),
            length: 1,
            hashed: true,
        };
        BootJson {
            version: BOOT_JSON_VERSION,
            mode: "local".into(),
            channel: "stable".into(),
            cmdline: "console=ttyS0 phase.stage=target".into(),
            artifacts: vec![
                art("kernel", "stable/x86_64/kernel", '1'),
                art("initramfs", "stable/x86_64/initramfs", '2'),
                art("rootfs", "stable/x86_64/rootfs", '3'),
                art("job", "jobs/a.wasm", '4'),
                art("job", "jobs/b.wasm", '5'),
            ],
            tuf: TufVersions {
                root: Some(2),
                timestamp: Some(41),
                snapshot: Some(40),
                targets: Some(17),
            },
            peers: vec![],
            steps: vec![],
            identity: None,
            platform: None,
            handover: None,
            measurements: vec![],
        }
    }

    #[test]
    fn the_encoding_is_domain_kind_nul_payload() {
        let e = Event::new(Kind::Channel, "stable");
        assert_eq!(e.encoding(), b"phase-boot/v1\0channel\0stable".to_vec());
        // Independent of this crate: sha256 of those 29 bytes.
        let expected: [u8; 32] = Sha256::digest(b"phase-boot/v1\0channel\0stable").into();
        assert_eq!(e.digest(), expected);
        assert_eq!(e.pcr, 23);
    }

    #[test]
    fn kinds_have_distinct_words_that_read_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_word(k.as_str()), Some(k));
            assert!(!k.as_str().contains('\0'));
        }
        assert_eq!(Kind::from_word("kernel "), None);
    }

    #[test]
    fn a_boot_gives_one_event_per_fact_in_order() {
        let root = Root {
            fingerprint: "ab12",
            version: 1,
        };
        let events = boot_events(Some(root), &boot());
        let words: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            words,
            [
                "root-fingerprint",
                "root-version",
                "timestamp-version",
                "snapshot-version",
                "targets-version",
                "kernel",
                "initramfs",
                "rootfs",
                "job",
                "job",
                "cmdline",
                "mode",
                "channel"
            ]
        );
        assert_eq!(events[1].payload, "2", "the refreshed root's version");
        assert_eq!(
            events[5].payload,
            format!("{} stable/x86_64/kernel", "1".repeat(64))
        );
        assert_eq!(events[9].payload, format!("{} jobs/b.wasm", "5".repeat(64)));
        assert_eq!(events[10].payload, "console=ttyS0 phase.stage=target");
    }

    #[test]
    fn a_test_boot_measures_what_it_has() {
        let mut b = boot();
        b.tuf = TufVersions::default();
        let events = boot_events(None, &b);
        assert_eq!(events[0].kind, Kind::Kernel);
        let root = Root {
            fingerprint: "ab",
            version: 3,
        };
        let events = boot_events(Some(root), &b);
        assert_eq!(events[1], Event::new(Kind::RootVersion, "3"));
        assert_eq!(events[2].kind, Kind::Kernel);
    }

    #[test]
    fn replay_folds_extend_from_zero_and_skips_other_pcrs() {
        let a = Event::new(Kind::Mode, "local");
        let b = Event::new(Kind::Channel, "stable");
        let mut other = Event::new(Kind::Channel, "testing");
        other.pcr = 16;
        let by_hand = extend(&extend(&[0; 32], &a.digest()), &b.digest());
        let events = vec![a.clone(), other.clone(), b.clone()];
        assert_eq!(replay(&events, PHASE_PCR), by_hand);
        assert_eq!(replay(&events, 16), extend(&[0; 32], &other.digest()));
        assert_eq!(replay(&[], PHASE_PCR), [0; 32]);
        // Order matters.
        assert_ne!(replay(&[b, a], PHASE_PCR), by_hand);
    }

    #[test]
    fn a_log_replays_and_a_forged_record_is_named() {
        let events = boot_events(None, &boot());
        let log: Vec<Measurement> = events.iter().map(Event::record).collect();
        assert_eq!(
            replay_log(&log, PHASE_PCR).expect("replay"),
            replay(&events, PHASE_PCR)
        );
        let k = log.iter().position(|m| m.kind == "kernel").expect("kernel");
        assert_eq!(k, 4);
        let mut forged = log.clone();
        forged[k].payload = format!("{} stable/x86_64/kernel", "9".repeat(64));
        let e = replay_log(&forged, PHASE_PCR).expect_err("forged");
        assert!(
            matches!(
                e,
                LogError::Digest {
                    index: 4,
                    kind: Kind::Kernel,
                    ..
                }
            ),
            "{e}"
        );
        let mut unknown = log;
        unknown[2].kind = "firmware".into();
        let e = replay_log(&unknown, PHASE_PCR).expect_err("unknown");
        assert_eq!(e.to_string(), "event 2: unknown kind \"firmware\"");
    }
}
