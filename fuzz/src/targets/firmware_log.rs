//! The firmware's TCG event log (measure's firmware.rs), from a node's
//! `/attest` answer: the verifier parses it before anything else looks at
//! it. Oracle: no panic; an accepted log has at most one record per 50
//! bytes (the smallest `TCG_PCR_EVENT2` with one SHA-256 digest), its
//! records in increasing order inside the input, each for a PCR below 24,
//! and a PCR's replay is the fold of its records' SHA-256 digests.
use sha2::{Digest, Sha256};

use crate::firmware::FirmwareLog;

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
