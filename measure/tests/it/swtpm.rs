//! Against a real TPM: swtpm (a libtpms TPM 2.0) on 127.0.0.1, with
//! tpm2-tools as the reference implementation of reading and extending.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use handover::{ArtifactRecord, BootJson, TufVersions, BOOT_JSON_VERSION};
use measure::{boot_events, extend, replay, Event, Kind, Root, Tpm, TpmError, PHASE_PCR};

/// A swtpm with a fresh state directory, killed on drop.
pub struct Swtpm {
    child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let state = tempfile::tempdir().expect("tempdir");
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .args(["--flags", "startup-clear,not-need-init"])
            .args(["--tpmstate", &format!("dir={}", state.path().display())])
            .stdout(Stdio::null())
            .spawn()
            .expect("swtpm runs (Debian package swtpm, scripts/deps-apt.list)");
        let s = Swtpm {
            child,
            port,
            _state: state,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swtpm did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // That probe was swtpm's one client; wait until it is free again.
        std::thread::sleep(Duration::from_millis(50));
        s
    }

    pub fn tpm(&self) -> Tpm<TcpStream> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Tpm::new(stream)
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// `tpm2_pcrread` of `pcr` in the SHA-256 bank, as raw bytes.
    fn tools_read(&self, pcr: u32, dir: &Path) -> Vec<u8> {
        let out = dir.join(format!("pcr{pcr}.bin"));
        let status = Command::new("tpm2_pcrread")
            .args(["-T", &self.tcti(), &format!("sha256:{pcr}"), "-o"])
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("tpm2_pcrread runs (Debian package tpm2-tools)");
        assert!(status.success(), "tpm2_pcrread: {status}");
        std::fs::read(out).expect("pcrread output")
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port P with P+1 free too (swtpm's command and control ports; the
/// tpm2-tools swtpm TCTI expects the control port right after).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().expect("addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two free consecutive ports on 127.0.0.1");
}

fn boot() -> BootJson {
    let art = |kind: &str, c: char| ArtifactRecord {
        kind: kind.into(),
        target: format!("stable/x86_64/{kind}"),
        sha256: c.to_string().repeat(64),
        length: 1,
        hashed: true,
    };
    BootJson {
        version: BOOT_JSON_VERSION,
        mode: "local".into(),
        channel: "stable".into(),
        cmdline: "console=ttyS0 phase.mode=local phase.stage=target".into(),
        artifacts: vec![
            art("kernel", 'a'),
            art("initramfs", 'b'),
            art("rootfs", 'c'),
        ],
        tuf: TufVersions {
            root: Some(1),
            timestamp: Some(3),
            snapshot: Some(3),
            targets: Some(2),
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
fn extended_events_read_back_as_their_replay_and_tpm2_tools_agrees() {
    let swtpm = Swtpm::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Root {
        fingerprint: &"f0".repeat(32),
        version: 1,
    };
    let events = boot_events(Some(root), &boot());
    assert_eq!(events.len(), 11);
    {
        let mut tpm = swtpm.tpm();
        assert_eq!(tpm.pcr_read(PHASE_PCR).expect("read"), [0; 32]);
        for e in &events {
            tpm.pcr_extend(e.pcr, &e.digest()).expect("extend");
        }
        let value = tpm.pcr_read(PHASE_PCR).expect("read");
        assert_eq!(value, replay(&events, PHASE_PCR));
        assert_ne!(value, [0; 32]);
    }
    // swtpm serves one client at a time: ours is closed now.
    assert_eq!(
        swtpm.tools_read(PHASE_PCR, dir.path()),
        replay(&events, PHASE_PCR).to_vec(),
        "tpm2_pcrread reads what replay() computes"
    );
}

#[test]
fn a_pcr_extended_by_tpm2_tools_reads_back_as_extend_computes() {
    let swtpm = Swtpm::start();
    let e = Event::new(Kind::Channel, "stable");
    let status = Command::new("tpm2_pcrextend")
        .args([
            "-T",
            &swtpm.tcti(),
            &format!("16:sha256={}", hex::encode(e.digest())),
        ])
        .status()
        .expect("tpm2_pcrextend runs");
    assert!(status.success(), "tpm2_pcrextend: {status}");
    let value = swtpm.tpm().pcr_read(16).expect("read");
    assert_eq!(value, extend(&[0; 32], &e.digest()));
}

#[test]
fn a_command_the_tpm_refuses_is_named_with_its_response_code() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.tpm();
    // There is no PCR 99.
    let e = tpm.pcr_extend(99, &[1; 32]).expect_err("no PCR 99");
    let text = e.to_string();
    assert!(matches!(e, TpmError::Rc { .. }), "{text}");
    assert!(
        text.starts_with("TPM2_PCR_Extend: the TPM answered 0x"),
        "{text}"
    );
    assert!(text.contains("TPM_RC_"), "a named code: {text}");
    // The connection still works after a refusal.
    assert_eq!(tpm.pcr_read(PHASE_PCR).expect("read"), [0; 32]);
    let e = tpm.pcr_read(24).expect_err("no PCR 24");
    assert_eq!(
        e.to_string(),
        "TPM2_PCR_Read: malformed response: the PCR is not in the SHA-256 bank"
    );
}
