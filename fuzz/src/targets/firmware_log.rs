//! The firmware's TCG event log (measure's firmware.rs), from a node's
//! `/attest` answer: the verifier parses it before anything else looks at
//! it. Oracle: no panic; an accepted log has at most one record per 50
//! bytes (the smallest `TCG_PCR_EVENT2` with one SHA-256 digest), its
//! records in increasing order inside the input, each for a PCR below 24,
//! their event data together no longer than the input, and a PCR's replay
//! is the fold of its records' SHA-256 digests; the EFI stub's tagged
//! records and the PCR 12 text of a load options digest are found without
//! a panic, the text only of a record whose data hashes to the digest.
use sha2::{Digest, Sha256};

use crate::firmware::{
    load_options_text, FirmwareLog, INITRD_TAG, LOADER_CMDLINE_PCR, LOAD_OPTIONS_TAG, STUB_PCR,
};

/// One input.
pub fn run(data: &[u8]) {
    let Ok(log) = FirmwareLog::parse(data) else {
        return;
    };
    assert!(
        log.events.len() <= data.len() / 50,
        "more records than bytes allow"
    );
    let mut last = 0;
    for e in &log.events {
        assert!(
            e.offset > last && e.offset < data.len(),
            "record out of order"
        );
        assert!(e.pcr < 24);
        last = e.offset;
    }
    let kept: usize = log.events.iter().map(|e| e.data.len()).sum();
    assert!(kept <= data.len(), "more event data than input");
    for tag in [INITRD_TAG, LOAD_OPTIONS_TAG] {
        for digest in log.tagged(STUB_PCR, tag) {
            if let Some(text) = log.ipl_with_digest(LOADER_CMDLINE_PCR, &digest) {
                assert_eq!(Sha256::digest(text)[..], digest[..]);
                let _ = load_options_text(text);
            }
        }
    }
    for pcr in [4, 7, 9] {
        let folded = log
            .events
            .iter()
            .filter(|e| e.pcr == pcr)
            .fold([0u8; 32], |acc, e| {
                let mut h = Sha256::new();
                h.update(acc);
                h.update(e.sha256);
                h.finalize().into()
            });
        assert_eq!(log.replay(pcr), folded);
        assert_eq!(
            log.count(pcr),
            log.events.iter().filter(|e| e.pcr == pcr).count()
        );
    }
}
