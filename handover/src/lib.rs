//! `boot.json`: the record stage 1 hands over to the booted target.
//!
//! Stage 1 (phase-init, `phase.stage=boot`) writes it into the payload cpio
//! at [`BOOT_JSON`]; after kexec the target's PID 1 (phase-init,
//! `phase.stage=target`) reads private mode's [`Identity`] from it, and
//! plasmd reads the [`peers`](BootJson::peers) stage 1 fetched from and
//! shows jobs a read-only copy as provenance.
//!
//! What this crate owns: the schema, as plain data with serde, and its JSON
//! encoding ([`BootJson::to_json`], [`BootJson::from_json`]). The field
//! names are the file format; `tests/boot_json_format.rs` holds samples
//! written by stage 1 that must read back and write out unchanged.
//!
//! What it does not own: filling the record in (phase-init's `handoff`
//! and its verified fetch), reading the platform state or making an
//! identity (phase-init's `platform` and `private`), or what a reader does
//! with the record.
//!
//! Compatibility: stage 1 and the target may come from different releases
//! (the target is fetched, stage 1 is on the boot medium), so a reader
//! ignores fields it does not know and every field added later is optional
//! (`#[serde(default)]`); a change an older reader would misread bumps
//! [`BOOT_JSON_VERSION`].
#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where the target finds the record (in the payload cpio, and on the
/// booted system's read-only `/phase`).
pub const BOOT_JSON: &str = "/phase/boot.json";

/// The `boot.json` format version.
pub const BOOT_JSON_VERSION: u32 = 1;

/// The file, at the root of a writable cache partition, that keeps the last
/// release that booted on the machine (phase-init's `fallback`): stage 1
/// writes it when it commits to a hand-over, and falls back to it when the
/// running kernel refuses a new release's kernel; `phase cache gc` keeps
/// its objects.
pub const LAST_BOOT: &str = "last-boot.json";

/// The [`LAST_BOOT`] format version.
pub const LAST_BOOT_FORMAT: u32 = 1;

/// The most a [`LAST_BOOT`] record may weigh (the signed targets metadata
/// with its chunk lists is the bulk of it).
pub const MAX_LAST_BOOT: u64 = 16 << 20;

/// What [`LAST_BOOT`] holds. Nothing in it is trusted as written (the cache
/// partition is not signed): a reader checks it against the signed
/// metadata it carries, verified again against the root it trusts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastBoot {
    pub format: u32,
    pub channel: String,
    /// The TUF versions the release was verified at.
    pub tuf: TufVersions,
    /// Kernel, initramfs, rootfs, in that order.
    pub artifacts: Vec<ArtifactRecord>,
    /// The kernel target's signed `cmdline`.
    pub cmdline: String,
    /// The signed `snapshot.json` and `targets.json`, byte for byte.
    pub snapshot: String,
    pub targets: String,
}

/// `/phase/boot.json`: what was booted, from where, verified against what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootJson {
    pub version: u32,
    /// `phase.mode`: `internet`, `local` or `private`.
    pub mode: String,
    pub channel: String,
    /// The kernel command line given to the target.
    pub cmdline: String,
    pub artifacts: Vec<ArtifactRecord>,
    pub tuf: TufVersions,
    /// Bytes received from each peer (all artifacts together).
    pub peers: Vec<PeerBytes>,
    /// Stage-1 steps in order, with their durations.
    pub steps: Vec<StepTiming>,
    /// Private mode: this boot's ephemeral identity (peer id, random MACs);
    /// absent in the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Stage 1's Secure Boot state and lockdown level (absent in a
    /// `boot.json` written before stage 1 recorded them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// How stage 1 handed over to the target: through a second kernel
    /// (kexec) or by going on as stage 2 itself (absent in a `boot.json`
    /// written before stage 1 recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverPath>,
    /// The events stage 1 extended into the TPM before it handed over, in
    /// order (docs/attestation.md); empty, and left out of the file, when
    /// there was no TPM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
}

/// How stage 1 became the target, and why (`phase.kexec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverPath {
    /// `kexec`: the target kernel was started with `kexec_file_load`;
    /// `direct`: the running kernel and initramfs were the verified
    /// target's, and stage 1 went on as stage 2 without a second kernel.
    pub path: String,
    /// Why, in words (e.g. "phase.kexec=always", "the target kernel is not
    /// the one the boot loader started").
    pub reason: String,
    /// Set when the running kernel refused the verified release's kernel
    /// and stage 1 started the last release that booted on this machine
    /// instead (docs/boot-flow.md, "Fallback"): what was refused, and why.
    /// The rest of `boot.json` (artifacts, `tuf`, measurements) describes
    /// the release that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// The release stage 1 verified but could not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// The kernel's refusal, in words (one line).
    pub refused: String,
    /// Hex SHA-256 of the refused kernel.
    pub kernel: String,
    /// The TUF versions the refused release was verified at.
    pub tuf: TufVersions,
}

/// One event of the measured-boot log: what was extended into which PCR.
/// The `measure` crate owns the encoding and the digest; this is the
/// record as `boot.json` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    /// The PCR index (SHA-256 bank).
    pub pcr: u32,
    /// What the event states, e.g. `kernel` or `targets-version`.
    pub kind: String,
    /// The fact itself, UTF-8 text.
    pub payload: String,
    /// Hex SHA-256 of the event's canonical encoding: the value extended.
    pub digest: String,
}

/// One verified artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// `kernel`, `initramfs`, `rootfs` or `job`.
    pub kind: String,
    /// The TUF target name, e.g. `stable/x86_64/kernel`.
    pub target: String,
    /// Hex SHA-256 of the verified bytes.
    pub sha256: String,
    pub length: u64,
    /// Whether this boot hashed the object whole. `false` for a rootfs
    /// that stage 1 took from the cache partition unhashed because
    /// dm-verity checks each block as the target reads it: its bytes on
    /// the disk are not known to match, so the peer service hashes the
    /// object whole before it re-shares it ([`BootJson::unhashed`]).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub hashed: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// The TUF metadata versions the boot was verified against (`None` when
/// the artifacts did not come through TUF, e.g. a test boot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TufVersions {
    pub root: Option<u64>,
    pub timestamp: Option<u64>,
    pub snapshot: Option<u64>,
    pub targets: Option<u64>,
}

/// What stage 1 received from one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerBytes {
    /// The peer's URL (`http://host:port`), or `cache` for the boot
    /// medium's cache.
    pub peer: String,
    pub bytes: u64,
    /// How stage 1 found the peer: `cache`, `mdns`, `dht` or `phase.peers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// Why the peer was dropped (it served invalid metadata), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// One stage-1 step and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    pub step: String,
    pub ms: u64,
}

/// This boot's identity in private mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `ephemeral`: made up at boot, never stored.
    pub kind: String,
    /// 128 random bits, hex: the peer id this boot would present.
    pub peer_id: String,
    /// The random MAC given to each wired NIC (interface name, MAC as
    /// `aa:bb:cc:dd:ee:ff`); a NIC whose driver refused keeps its own and
    /// is not listed.
    #[serde(default)]
    pub macs: Vec<(String, String)>,
}

/// The UEFI Secure Boot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureBoot {
    /// Enforcing: the firmware checked what it started.
    On,
    /// Keys enrolled, not enforcing; or no keys and not in setup mode.
    Off,
    /// Setup mode: no platform key, anything may enrol keys.
    Setup,
    /// Not a UEFI boot (or efivarfs is not mounted): nothing to say.
    Unknown,
}

/// The kernel's lockdown level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
    /// No securityfs lockdown file (a kernel without the LSM).
    Unknown,
}

/// Where stage 1 ran: the Secure Boot state and the lockdown level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub secureboot: SecureBoot,
    pub lockdown: Lockdown,
}

impl BootJson {
    /// The file's bytes: pretty JSON, fields in declaration order, a final
    /// newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers, options and sequences of them: serializing
        // cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads a record; fields this version does not know are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<BootJson, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The record of `kind`, if any.
    pub fn artifact(&self, kind: &str) -> Option<&ArtifactRecord> {
        self.artifacts.iter().find(|a| a.kind == kind)
    }

    /// The SHA-256 (hex) of every artifact this boot did not hash whole.
    pub fn unhashed(&self) -> impl Iterator<Item = &str> {
        self.artifacts
            .iter()
            .filter(|a| !a.hashed)
            .map(|a| a.sha256.as_str())
    }
}

impl fmt::Display for Identity {
    /// `ephemeral <peer id>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.peer_id)
    }
}

impl fmt::Display for Platform {
    /// `secureboot on, lockdown integrity`, as on the console.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sb = match self.secureboot {
            SecureBoot::On => "on",
            SecureBoot::Off => "off",
            SecureBoot::Setup => "setup",
            SecureBoot::Unknown => "unknown (not a UEFI boot)",
        };
        let ld = match self.lockdown {
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
            Lockdown::Unknown => "unknown (no securityfs lockdown file)",
        };
        write!(f, "secureboot {sb}, lockdown {ld}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootJson {
        BootJson {
            version: BOOT_JSON_VERSION,
            mode: "local".into(),
            channel: "stable".into(),
            cmdline: "console=ttyS0 phase.stage=target".into(),
            artifacts: vec![ArtifactRecord {
                kind: "kernel".into(),
                target: "stable/x86_64/kernel".into(),
                sha256: "ab".repeat(32),
                length: 42,
                hashed: true,
            }],
            tuf: TufVersions {
                root: Some(1),
                timestamp: Some(7),
                snapshot: Some(7),
                targets: Some(3),
            },
            peers: vec![PeerBytes {
                peer: "http://198.18.0.1:8080".into(),
                bytes: 42,
                found: Some("dht".into()),
                dropped: None,
            }],
            steps: vec![StepTiming {
                step: "fetch".into(),
                ms: 1234,
            }],
            identity: None,
            platform: Some(Platform {
                secureboot: SecureBoot::On,
                lockdown: Lockdown::Integrity,
            }),
            handover: Some(HandoverPath {
                path: "direct".into(),
                reason: "the target kernel and initramfs are the ones the boot loader started"
                    .into(),
                fallback: None,
            }),
            measurements: Vec::new(),
        }
    }

    #[test]
    fn a_record_round_trips_and_absent_options_are_left_out() {
        let b = sample();
        let bytes = b.to_json();
        assert_eq!(BootJson::from_json(&bytes).expect("parse"), b);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.ends_with("}\n"), "{text}");
        assert!(text.contains("\"timestamp\": 7"), "{text}");
        assert!(text.contains("\"found\": \"dht\""), "{text}");
        assert!(!text.contains("dropped"), "{text}");
        assert!(!text.contains("identity"), "{text}");
        assert!(!text.contains("measurements"), "{text}");
        assert_eq!(b.artifact("kernel").map(|a| a.length), Some(42));
        assert!(b.artifact("rootfs").is_none());
        assert!(!text.contains("hashed"), "{text}");
        assert_eq!(b.unhashed().count(), 0);
    }

    #[test]
    fn an_unhashed_rootfs_is_written_as_such_and_listed() {
        let mut b = sample();
        b.artifacts.push(ArtifactRecord {
            kind: "rootfs".into(),
            target: "stable/x86_64/rootfs".into(),
            sha256: "cd".repeat(32),
            length: 4096,
            hashed: false,
        });
        let bytes = b.to_json();
        assert_eq!(BootJson::from_json(&bytes).expect("parse"), b);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert_eq!(text.matches("\"hashed\": false").count(), 1, "{text}");
        assert_eq!(b.unhashed().collect::<Vec<_>>(), ["cd".repeat(32)]);
    }

    #[test]
    fn a_measurement_log_round_trips() {
        let mut b = sample();
        b.measurements = vec![Measurement {
            pcr: 23,
            kind: "channel".into(),
            payload: "stable".into(),
            digest: "cd".repeat(32),
        }];
        let bytes = b.to_json();
        assert_eq!(BootJson::from_json(&bytes).expect("parse"), b);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.contains("\"pcr\": 23"), "{text}");
    }

    #[test]
    fn a_fallback_round_trips_and_is_left_out_when_there_was_none() {
        let mut b = sample();
        let text = String::from_utf8(b.to_json()).expect("utf-8");
        assert!(!text.contains("fallback"), "{text}");
        b.handover = Some(HandoverPath {
            path: "kexec".into(),
            reason: "fallback to the last release that booted".into(),
            fallback: Some(Fallback {
                refused: "target kernel 6.1.0-28-amd64 is not signed (ENODATA)".into(),
                kernel: "ab".repeat(32),
                tuf: TufVersions {
                    root: Some(1),
                    timestamp: Some(2),
                    snapshot: Some(2),
                    targets: Some(2),
                },
            }),
        });
        let bytes = b.to_json();
        assert_eq!(BootJson::from_json(&bytes).expect("parse"), b);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.contains("\"fallback\": {"), "{text}");
    }

    #[test]
    fn fields_a_newer_stage_1_adds_are_ignored_and_missing_ones_are_named() {
        let b = sample();
        let text = String::from_utf8(b.to_json()).expect("utf-8");
        let newer = text
            .replacen("\"mode\"", "\"later\": {\"x\": [1]},\n  \"mode\"", 1)
            .replacen("\"bytes\"", "\"rtt_ms\": 3, \"bytes\"", 1);
        assert_eq!(BootJson::from_json(newer.as_bytes()).expect("parse"), b);
        let e = BootJson::from_json(br#"{"version":1,"peers":[]}"#).expect_err("incomplete");
        assert!(e.to_string().contains("missing field `mode`"), "{e}");
    }

    #[test]
    fn identity_and_platform_have_their_console_form() {
        let id = Identity {
            kind: "ephemeral".into(),
            peer_id: "00112233445566778899aabbccddeeff".into(),
            macs: vec![],
        };
        assert_eq!(id.to_string(), "ephemeral 00112233445566778899aabbccddeeff");
        let p = Platform {
            secureboot: SecureBoot::On,
            lockdown: Lockdown::Integrity,
        };
        assert_eq!(p.to_string(), "secureboot on, lockdown integrity");
        let j = serde_json::to_string(&p).expect("json");
        assert_eq!(j, r#"{"secureboot":"on","lockdown":"integrity"}"#);
        assert_eq!(serde_json::from_str::<Platform>(&j).expect("parse"), p);
        let unknown = Platform {
            secureboot: SecureBoot::Unknown,
            lockdown: Lockdown::Unknown,
        };
        assert_eq!(
            unknown.to_string(),
            "secureboot unknown (not a UEFI boot), lockdown unknown (no securityfs lockdown file)"
        );
    }
}
