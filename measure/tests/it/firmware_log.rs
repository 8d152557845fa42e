//! The firmware event log parser on bytes it did not write: a real log of
//! OVMF (Secure Boot) with swtpm, which replays to the PCRs that TPM read;
//! any bytes, and logs of random records with random bytes changed, cut or
//! inserted. It never panics, and a log of random records replays to the
//! values their digests extend to.

use measure::{extend, FirmwareLog, FirmwareLogWriter, EV_NO_ACTION};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// `binary_bios_measurements` of the `boot_wasm` QEMU test's node (OVMF's
/// Secure Boot build, swtpm with four banks; shim, systemd-boot and the
/// Debian kernel, whose EFI stub measured the initrd and load options),
/// from its `/attest` answer.
const OVMF_LOG: &[u8] = include_bytes!("../data/ovmf-swtpm-secureboot.binary_bios_measurements");

/// PCRs 4, 7 and 9 as that TPM read them right after its quote (the quote's
/// `pcrDigest` covers them; `phase attest verify` checked it).
const OVMF_PCRS: [(u32, &str); 3] = [
    (
        4,
        "63b1794a2aa1db9b0b0a042b24f194b8838c3959a2e51961a53c01dcf60f49af",
    ),
    (
        7,
        "75677db6f14082d3bfec4d14bdd75c8d72612ef6914ca99cd5a5997b7a21309d",
    ),
    (
        9,
        "cbdaa13295bf8105ef0bbb1571cd5ddc308294edd49c584481bf07206292d8e3",
    ),
];

#[test]
fn a_real_ovmf_swtpm_log_replays_to_the_pcrs_its_tpm_read() {
    let log = FirmwareLog::parse(OVMF_LOG).expect("the OVMF log parses");
    assert_eq!(
        log.banks,
        vec![
            (measure::TPM_ALG_SHA1, 20),
            (measure::TPM_ALG_SHA256, 32),
            (0x000c, 48),
            (0x000d, 64)
        ]
    );
    // The action, the separator and three EFI applications (shim,
    // systemd-boot, the kernel); the Secure Boot variables, the separator
    // and the authorities; the initrd and the load options.
    assert_eq!((log.count(4), log.count(7), log.count(9)), (5, 9, 2));
    let quoted: Vec<(u32, [u8; 32])> = OVMF_PCRS
        .iter()
        .map(|(p, h)| {
            let v: [u8; 32] = hex::decode(h).expect("hex").try_into().expect("32 bytes");
            (*p, v)
        })
        .collect();
    for (pcr, value) in &quoted {
        assert_eq!(log.replay(*pcr), *value, "PCR {pcr}");
    }
    log.check(&quoted)
        .expect("the log replays to the quoted PCRs");
    // One flipped byte in a PCR 7 digest is named.
    let mut bad = OVMF_LOG.to_vec();
    let e7 = log
        .events
        .iter()
        .find(|e| e.pcr == 7)
        .expect("a PCR 7 record");
    // pcrIndex, eventType, count, SHA-1 (alg + 20 bytes), SHA-256's alg.
    bad[e7.offset + 12 + 22 + 2] ^= 1;
    let e = FirmwareLog::parse(&bad)
        .expect("parses")
        .check(&quoted)
        .expect_err("PCR 7");
    assert!(e.to_string().contains("quoted PCR 7: its 9 events"), "{e}");
}

/// The command line systemd-boot passed to the kernel in that boot: the
/// `phase-local.conf` entry's `initrd` and `options` lines, and the word
/// the test appended.
const OVMF_CMDLINE: &str = "initrd=\\phase\\initramfs.img console=tty0 console=ttyS0,115200 phase.mode=local phase.peers=http://198.18.0.10:7070";

#[test]
fn the_real_log_holds_the_stubs_initrd_and_load_options_and_their_text() {
    let log = FirmwareLog::parse(OVMF_LOG).expect("the OVMF log parses");
    let initrd = log.tagged(measure::STUB_PCR, measure::INITRD_TAG);
    assert_eq!(
        initrd.iter().map(hex::encode).collect::<Vec<_>>(),
        vec!["9ced15df23e86805872726533dea750276fcbe89f58e0c30ccc6f484767f62e0"]
    );
    let options = log.tagged(measure::STUB_PCR, measure::LOAD_OPTIONS_TAG);
    assert_eq!(
        options.iter().map(hex::encode).collect::<Vec<_>>(),
        vec!["5c73f40de73c6ff4545c0f734ba3ce54b73f3279d3ebfb5fdc7d71b2533e9f14"]
    );
    // The digest is of the UTF-16LE text with its terminating NUL.
    assert_eq!(measure::load_options_digest(OVMF_CMDLINE), options[0]);
    let without_nul: Vec<u8> = OVMF_CMDLINE
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    assert_ne!(<[u8; 32]>::from(Sha256::digest(&without_nul)), options[0]);
    // systemd-boot's PCR 12 record holds those 230 bytes.
    let data = log
        .ipl_with_digest(measure::LOADER_CMDLINE_PCR, &options[0])
        .expect("a PCR 12 record whose data hashes to the load options digest");
    assert_eq!(data.len(), 230);
    assert_eq!(data.len(), 2 * (OVMF_CMDLINE.len() + 1));
    assert_eq!(measure::load_options_text(data), OVMF_CMDLINE);
    let ipl = log
        .events
        .iter()
        .find(|e| e.pcr == measure::LOADER_CMDLINE_PCR && e.event_type == measure::EV_IPL)
        .expect("a PCR 12 EV_IPL record");
    assert_eq!(ipl.sha256, options[0], "the record extends the same digest");
}

/// A record: PCR, event type, data.
fn record() -> impl Strategy<Value = (u32, u32, Vec<u8>)> {
    (
        0u32..24,
        prop_oneof![
            Just(EV_NO_ACTION),
            Just(0x4u32),
            Just(0x8000_0003u32),
            any::<u32>()
        ],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
}

fn written(records: &[(u32, u32, Vec<u8>)]) -> (Vec<u8>, Vec<[u8; 32]>) {
    let mut w = FirmwareLogWriter::new();
    let mut pcrs = vec![[0u8; 32]; 24];
    for (pcr, ty, data) in records {
        let d = w.event(*pcr, *ty, data);
        if *ty != EV_NO_ACTION {
            pcrs[*pcr as usize] = extend(&pcrs[*pcr as usize], &d);
        }
    }
    (w.finish(), pcrs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = FirmwareLog::parse(&bytes);
    }

    #[test]
    fn random_logs_replay_to_their_extends(records in proptest::collection::vec(record(), 0..40)) {
        let (bytes, pcrs) = written(&records);
        let log = FirmwareLog::parse(&bytes).expect("a written log parses");
        for pcr in 1..24u32 {
            prop_assert_eq!(log.replay(pcr), pcrs[pcr as usize]);
        }
    }

    #[test]
    fn damaged_logs_fail_or_parse_without_panic(
        records in proptest::collection::vec(record(), 1..20),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let (mut bytes, _) = written(&records);
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        if let Ok(log) = FirmwareLog::parse(&bytes) {
            for pcr in [4, 7, 9] {
                let _ = log.replay(pcr);
            }
            prop_assert!(log.events.len() <= bytes.len() / 50);
        }
    }
}
