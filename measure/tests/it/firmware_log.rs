//! The firmware event log parser on bytes it did not write: any bytes,
//! and logs of random records with random bytes changed, cut or inserted.
//! It never panics, and a log of random records replays to the values
//! their digests extend to.

use measure::{extend, FirmwareLog, FirmwareLogWriter, EV_NO_ACTION};
use proptest::prelude::*;

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
