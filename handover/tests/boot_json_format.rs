//! The `boot.json` file format does not change by accident: samples as
//! stage 1 writes them (made with phase-init's writer before the schema
//! moved into this crate) must read back and write out unchanged, as JSON
//! values and byte for byte. A stage 1 of one release hands this file to a
//! target of another.

use handover::BootJson;
use serde_json::Value;

/// Private mode with everything stage 1 records: four artifacts, TUF
/// versions, the cache, a peer and a dropped peer, steps, the ephemeral
/// identity with two MACs, the platform, the measured-boot log.
const PRIVATE: &str = include_str!("data/boot-private.json");
/// A `phase.test=kexec` boot: no TUF, no peers, no identity.
const TEST_BOOT: &str = include_str!("data/boot-test.json");

#[test]
fn samples_written_by_stage_1_read_back_and_write_out_unchanged() {
    for (name, text) in [("private", PRIVATE), ("test boot", TEST_BOOT)] {
        let b = BootJson::from_json(text.as_bytes())
            .unwrap_or_else(|e| panic!("the {name} sample does not parse: {e}"));
        let written = b.to_json();
        let before: Value = serde_json::from_str(text).expect("sample is JSON");
        let after: Value = serde_json::from_slice(&written).expect("output is JSON");
        assert_eq!(after, before, "{name}: another JSON value");
        assert_eq!(
            String::from_utf8(written).expect("utf-8"),
            text,
            "{name}: other bytes"
        );
    }
}

#[test]
fn the_private_sample_holds_every_optional_field() {
    let b = BootJson::from_json(PRIVATE.as_bytes()).expect("parse");
    assert_eq!(b.version, handover::BOOT_JSON_VERSION);
    let id = b.identity.as_ref().expect("identity");
    assert_eq!(id.macs.len(), 2);
    assert!(b.platform.is_some());
    assert!(!b.measurements.is_empty());
    assert!(b.tuf.root.is_some() && b.tuf.targets.is_some());
    assert!(b.peers.iter().any(|p| p.found.is_some()));
    assert!(b.peers.iter().any(|p| p.dropped.is_some()));
    for kind in ["kernel", "initramfs", "rootfs", "job"] {
        assert!(b.artifact(kind).is_some(), "{kind}");
    }
    let t = BootJson::from_json(TEST_BOOT.as_bytes()).expect("parse");
    assert!(t.identity.is_none() && t.peers.is_empty() && t.tuf.root.is_none());
    assert!(
        t.measurements.is_empty(),
        "a boot.json without a log still reads"
    );
}
