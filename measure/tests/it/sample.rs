//! The `boot.json` sample of the handover crate carries a measured-boot
//! log made outside this crate (the same encoding, hashed by another
//! SHA-256 implementation): this crate's events for that boot are those
//! records, and they replay to the value computed there.

use handover::BootJson;
use measure::{boot_events, replay_log, Event, Root, PHASE_PCR};

const SAMPLE: &[u8] = include_bytes!("../../../handover/tests/data/boot-private.json");

/// PCR 23 after the sample's log, computed with Python's hashlib.
const REPLAYED: &str = "75d4e41e99b1153b0b41a5f5cbf1ed97d89767b1df8064693c9be79020ebcf58";

#[test]
fn the_handover_sample_log_is_this_crates_events_and_replays() {
    let b = BootJson::from_json(SAMPLE).expect("sample parses");
    let fingerprint = &b.measurements[0].payload;
    let root = Root {
        fingerprint,
        version: 1,
    };
    let records: Vec<_> = boot_events(Some(root), &b)
        .iter()
        .map(Event::record)
        .collect();
    assert_eq!(records, b.measurements);
    let value = replay_log(&b.measurements, PHASE_PCR).expect("replay");
    assert_eq!(hex::encode(value), REPLAYED);
}
