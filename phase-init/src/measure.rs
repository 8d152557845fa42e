//! The `measure` boot step: stage 1 extends one event per fact of the
//! verified boot into the TPM before it hands over, and keeps the same
//! events as the log `boot.json` carries (docs/attestation.md).
//!
//! The events and the TPM commands are the `measure` crate's; this module
//! decides what happens around them: no TPM (`/dev/tpmrm0` absent) is one
//! `tpm none` and the boot goes on, unless `phase.tpm=require`; a TPM
//! that refuses a command is one line naming the command and the response
//! code. The log holds exactly the events the TPM accepted, so it always
//! replays to what this boot extended.

use std::io::{Read, Write};
use std::path::Path;

use ::measure::{Event, Root, Tpm, PHASE_PCR};
use handover::Measurement;

use crate::cmdline::{Config, TpmPolicy};
use crate::console::{console, Outcome};
use crate::handoff::{self, Artifacts, Provenance};
use crate::step::{chain, Status};
use crate::trust::BakedRoot;

/// The events of this boot: those of the `boot.json` the payload step
/// writes (same artifacts, TUF versions and target command line), with
/// the baked root's fingerprint.
pub fn events(
    artifacts: &Artifacts,
    config: &Config,
    provenance: Option<&Provenance>,
    baked: Option<&BakedRoot>,
) -> Vec<Event> {
    let cmdline = handoff::target_cmdline(&artifacts.cmdline, config);
    let mut boot = handoff::boot_json(artifacts, config, &cmdline);
    if let Some((tuf, _)) = provenance {
        boot.tuf = tuf.clone();
    }
    let root = baked.map(|b| Root {
        fingerprint: &b.fingerprint,
        version: b.version,
    });
    ::measure::boot_events(root, &boot)
}

/// The `measure` boot step on the TPM at `device`: extends `events` after
/// the `before` this boot extended already (none, except for a fallback's
/// release after the refused one). `None`: stop (the rescue shell
/// follows); else the log of `events` for `boot.json` (empty without a
/// TPM).
pub fn step(
    device: &Path,
    policy: TpmPolicy,
    before: &[Event],
    events: &[Event],
) -> (Option<Vec<Measurement>>, Status) {
    if !device.exists() {
        return match policy {
            TpmPolicy::Auto => (Some(Vec::new()), Status::ok("tpm none")),
            TpmPolicy::Require => (
                None,
                stop(
                    "tpm none",
                    format!(
                        "phase.tpm=require and there is no TPM ({}): not handing over unmeasured",
                        device.display()
                    ),
                ),
            ),
        };
    }
    match Tpm::open(device) {
        Ok(mut tpm) => measure_into(&mut tpm, policy, before, events),
        Err(e) => failed(
            policy,
            Vec::new(),
            events.len(),
            format!("cannot open {}: {e}", device.display()),
        ),
    }
}

/// Extends `events` into `tpm`, then reads the PCR back: the status line
/// shows its value, and a value that `before` ++ `events` does not replay
/// to (something else extended the PCR) is a warning.
pub fn measure_into<T: Read + Write>(
    tpm: &mut Tpm<T>,
    policy: TpmPolicy,
    before: &[Event],
    events: &[Event],
) -> (Option<Vec<Measurement>>, Status) {
    let mut log = Vec::with_capacity(events.len());
    for e in events {
        if let Err(err) = tpm.pcr_extend(e.pcr, &e.digest()) {
            return failed(policy, log, events.len(), chain(&err));
        }
        log.push(e.record());
    }
    let value = match tpm.pcr_read(PHASE_PCR) {
        Ok(v) => v,
        Err(err) => return failed(policy, log, events.len(), chain(&err)),
    };
    let detail = format!(
        "{} events into PCR {PHASE_PCR}, now {}",
        log.len(),
        hex::encode(value)
    );
    let all: Vec<Event> = before.iter().chain(events).cloned().collect();
    let expected = ::measure::replay(&all, PHASE_PCR);
    let problems = if value == expected {
        Vec::new()
    } else {
        vec![format!(
            "PCR {PHASE_PCR} was not zero before stage 1 (the log replays to {}): a verifier will not match it",
            hex::encode(expected)
        )]
    };
    (Some(log), Status::with_problems(detail, problems))
}

/// A TPM that failed: with `auto` the boot goes on with the events the
/// TPM accepted; with `require` it stops.
fn failed(
    policy: TpmPolicy,
    log: Vec<Measurement>,
    total: usize,
    problem: String,
) -> (Option<Vec<Measurement>>, Status) {
    let detail = format!("{} of {total} events into PCR {PHASE_PCR}", log.len());
    match policy {
        TpmPolicy::Auto => (
            Some(log),
            Status {
                outcome: Outcome::Warn,
                detail,
                problems: vec![problem],
            },
        ),
        TpmPolicy::Require => (None, stop(&detail, problem)),
    }
}

fn stop(detail: &str, problem: String) -> Status {
    Status {
        outcome: Outcome::Fail,
        detail: detail.to_owned(),
        problems: vec![problem],
    }
}

/// The machine-readable console line stage 2 prints with `boot.json`'s
/// event log: this prefix, then the log as compact JSON.
pub const LOG_LINE: &str = "phase-init: measurements ";

/// Prints [`target_lines`] for the `boot.json` stage 1 left: the log line
/// raw (a verifier reads it whole), the others as status lines.
pub fn show_stage1(device: &Path) {
    for line in target_lines(device, Path::new(handover::BOOT_JSON)) {
        if line.starts_with(LOG_LINE) {
            console().raw(&line);
        } else {
            console().line(&line);
        }
    }
}

/// Stage 2's view of what stage 1 measured, as console lines: PCR 23 as
/// the TPM at `device` holds it now and whether the log in the
/// `boot.json` at `boot_json` replays to it; then the log itself on one
/// [`LOG_LINE`], so a verifier watching the console can replay it.
pub fn target_lines(device: &Path, boot_json: &Path) -> Vec<String> {
    let log = std::fs::read(boot_json)
        .ok()
        .and_then(|b| handover::BootJson::from_json(&b).ok())
        .map(|b| b.measurements)
        .unwrap_or_default();
    let mut lines = Vec::new();
    if !device.exists() {
        lines.push("measure: tpm none".to_owned());
    } else {
        let read = Tpm::open(device)
            .map_err(|e| format!("cannot open {}: {e}", device.display()))
            .and_then(|mut t| t.pcr_read(PHASE_PCR).map_err(|e| chain(&e)));
        lines.push(match read {
            Err(e) => format!("measure: {e}"),
            Ok(value) => target_verdict(&value, &log),
        });
    }
    if !log.is_empty() {
        let json = serde_json::to_string(&log).unwrap_or_default();
        lines.push(format!("{LOG_LINE}{json}"));
    }
    lines
}

fn target_verdict(value: &[u8; 32], log: &[Measurement]) -> String {
    let now = hex::encode(value);
    match ::measure::replay_log(log, PHASE_PCR) {
        Ok(r) if r == *value => format!(
            "measure: PCR {PHASE_PCR} {now}, the replay of boot.json's {} events",
            log.len()
        ),
        Ok(r) => format!(
            "measure: PCR {PHASE_PCR} {now}, but boot.json's {} events replay to {}",
            log.len(),
            hex::encode(r)
        ),
        Err(e) => format!("measure: PCR {PHASE_PCR} {now}; boot.json's log: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::measure::Kind;
    use std::io;

    /// A TPM in memory that does what the two commands do to PCRs 0-23,
    /// or refuses every extend with `refuse`.
    struct FakeTpm {
        pcrs: [[u8; 32]; 24],
        refuse: Option<u32>,
        response: io::Cursor<Vec<u8>>,
    }

    impl FakeTpm {
        fn new(refuse: Option<u32>) -> FakeTpm {
            FakeTpm {
                pcrs: [[0; 32]; 24],
                refuse,
                response: io::Cursor::new(Vec::new()),
            }
        }
        fn answer(&mut self, tag: u16, rc: u32, body: &[u8]) {
            let mut r = tag.to_be_bytes().to_vec();
            r.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
            r.extend_from_slice(&rc.to_be_bytes());
            r.extend_from_slice(body);
            self.response = io::Cursor::new(r);
        }
    }

    impl Write for FakeTpm {
        fn write(&mut self, c: &[u8]) -> io::Result<usize> {
            let cc = u32::from_be_bytes([c[6], c[7], c[8], c[9]]);
            if cc == ::measure::Command::PcrExtend.code() {
                if let Some(rc) = self.refuse {
                    self.answer(0x8001, rc, &[]);
                } else {
                    let pcr = u32::from_be_bytes([c[10], c[11], c[12], c[13]]) as usize;
                    let digest: [u8; 32] = c[33..65].try_into().expect("32 bytes");
                    self.pcrs[pcr] = ::measure::extend(&self.pcrs[pcr], &digest);
                    self.answer(0x8002, 0, &[0, 0, 0, 0, 0, 0, 1, 0, 0]);
                }
            } else {
                let bitmap = [c[17], c[18], c[19]];
                let pcr = (0..24)
                    .find(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
                    .expect("one PCR");
                let mut body = vec![0, 0, 0, 9, 0, 0, 0, 1, 0, 0x0b, 3];
                body.extend_from_slice(&bitmap);
                body.extend_from_slice(&[0, 0, 0, 1, 0, 32]);
                body.extend_from_slice(&self.pcrs[pcr]);
                self.answer(0x8001, 0, &body);
            }
            Ok(c.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for FakeTpm {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.response.read(buf)
        }
    }

    fn sample_events() -> Vec<Event> {
        vec![
            Event::new(Kind::Mode, "local"),
            Event::new(Kind::Channel, "stable"),
        ]
    }

    #[test]
    fn the_events_are_extended_and_logged_and_the_pcr_is_shown() {
        let events = sample_events();
        let mut tpm = Tpm::new(FakeTpm::new(None));
        let (log, status) = measure_into(&mut tpm, TpmPolicy::Auto, &[], &events);
        let log = log.expect("a log");
        assert_eq!(log, events.iter().map(Event::record).collect::<Vec<_>>());
        assert_eq!(status.outcome, Outcome::Ok, "{status:?}");
        let value = ::measure::replay(&events, PHASE_PCR);
        assert_eq!(
            status.detail,
            format!("2 events into PCR 23, now {}", hex::encode(value))
        );
        assert_eq!(::measure::replay_log(&log, PHASE_PCR), Ok(value));
    }

    #[test]
    fn a_second_release_extended_after_the_first_replays_with_it() {
        let first = sample_events();
        let second = vec![Event::new(Kind::Channel, "testing")];
        let mut tpm = Tpm::new(FakeTpm::new(None));
        let (log1, _) = measure_into(&mut tpm, TpmPolicy::Auto, &[], &first);
        let (log2, status) = measure_into(&mut tpm, TpmPolicy::Auto, &first, &second);
        assert_eq!(status.outcome, Outcome::Ok, "{status:?}");
        let mut log = log1.expect("a log");
        log.extend(log2.expect("a log"));
        let all: Vec<Event> = first.iter().chain(&second).cloned().collect();
        assert_eq!(
            ::measure::replay_log(&log, PHASE_PCR),
            Ok(::measure::replay(&all, PHASE_PCR))
        );
    }

    #[test]
    fn a_pcr_extended_before_is_a_warning() {
        let mut fake = FakeTpm::new(None);
        fake.pcrs[23] = [1; 32];
        let (log, status) =
            measure_into(&mut Tpm::new(fake), TpmPolicy::Auto, &[], &sample_events());
        assert_eq!(log.map(|l| l.len()), Some(2));
        assert_eq!(status.outcome, Outcome::Warn);
        assert!(status.problems[0].contains("was not zero"), "{status:?}");
    }

    #[test]
    fn a_refused_extend_is_one_line_naming_the_command_and_the_code() {
        let events = sample_events();
        let (log, status) = measure_into(
            &mut Tpm::new(FakeTpm::new(Some(0x98e))),
            TpmPolicy::Auto,
            &[],
            &events,
        );
        assert_eq!(log, Some(Vec::new()), "auto: the boot goes on");
        assert_eq!(status.outcome, Outcome::Warn);
        assert_eq!(status.detail, "0 of 2 events into PCR 23");
        assert_eq!(
            status.problems,
            ["TPM2_PCR_Extend: the TPM answered 0x0000098e TPM_RC_AUTH_FAIL (session 1)"]
        );
        let (log, status) = measure_into(
            &mut Tpm::new(FakeTpm::new(Some(0x101))),
            TpmPolicy::Require,
            &[],
            &events,
        );
        assert_eq!(log, None, "require: stop");
        assert_eq!(status.outcome, Outcome::Fail);
        assert!(status.problems[0].ends_with("TPM_RC_FAILURE"), "{status:?}");
    }

    #[test]
    fn no_tpm_is_tpm_none_and_stops_only_when_required() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("tpmrm0");
        let (log, status) = step(&absent, TpmPolicy::Auto, &[], &sample_events());
        assert_eq!(log, Some(Vec::new()));
        assert_eq!(status.outcome, Outcome::Ok);
        assert_eq!(status.detail, "tpm none");
        assert!(status.problems.is_empty());
        let (log, status) = step(&absent, TpmPolicy::Require, &[], &sample_events());
        assert_eq!(log, None);
        assert_eq!(status.outcome, Outcome::Fail);
        assert_eq!(status.detail, "tpm none");
        assert!(
            status.problems[0].starts_with("phase.tpm=require"),
            "{status:?}"
        );
    }

    #[test]
    fn stage_2_says_whether_the_log_replays_to_the_pcr_and_prints_it() {
        let events = sample_events();
        let log: Vec<Measurement> = events.iter().map(Event::record).collect();
        let value = ::measure::replay(&events, PHASE_PCR);
        assert_eq!(
            target_verdict(&value, &log),
            format!(
                "measure: PCR 23 {}, the replay of boot.json's 2 events",
                hex::encode(value)
            )
        );
        let other = target_verdict(&[0; 32], &log);
        assert!(
            other.contains("but boot.json's 2 events replay to"),
            "{other}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut boot = handover::BootJson::from_json(include_bytes!(
            "../../handover/tests/data/boot-test.json"
        ))
        .expect("sample");
        boot.measurements = log.clone();
        let path = dir.path().join("boot.json");
        std::fs::write(&path, boot.to_json()).expect("write");
        let lines = target_lines(&dir.path().join("tpmrm0"), &path);
        assert_eq!(lines[0], "measure: tpm none");
        let json = lines[1].strip_prefix(LOG_LINE).expect("the log line");
        let back: Vec<Measurement> = serde_json::from_str(json).expect("JSON");
        assert_eq!(back, log);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn the_events_are_those_of_the_boot_json_the_payload_step_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        handoff::write_test_artifacts(dir.path());
        let a = handoff::test_artifacts(dir.path(), "stable").expect("artifacts");
        let config = Config::default();
        let tuf = handover::TufVersions {
            root: Some(2),
            timestamp: Some(5),
            snapshot: Some(5),
            targets: Some(4),
        };
        let baked = BakedRoot {
            bytes: Vec::new(),
            version: 1,
            fingerprint: "ab".repeat(32),
        };
        let provenance = (tuf, Vec::new());
        let events = events(&a, &config, Some(&provenance), Some(&baked));
        let payload = |k: Kind| {
            events
                .iter()
                .find(|e| e.kind == k)
                .map(|e| e.payload.clone())
                .expect("event")
        };
        assert_eq!(payload(Kind::RootFingerprint), "ab".repeat(32));
        assert_eq!(payload(Kind::RootVersion), "2");
        assert_eq!(payload(Kind::TargetsVersion), "4");
        assert_eq!(
            payload(Kind::Kernel),
            format!(
                "{} stable/{}/kernel",
                a.kernel.sha256,
                std::env::consts::ARCH
            )
        );
        assert_eq!(
            payload(Kind::Cmdline),
            handoff::target_cmdline(&a.cmdline, &config)
        );
        assert_eq!(payload(Kind::Mode), "internet");
        assert_eq!(payload(Kind::Channel), "stable");
    }
}
