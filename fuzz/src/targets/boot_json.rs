//! `/phase/boot.json` (phase-init's payload.rs), read by the target from
//! its initramfs. Oracle: no panic; what parses writes back to the same
//! record.
use crate::payload::BootJson;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(b) = BootJson::from_json(data) else {
        return;
    };
    let again = BootJson::from_json(&b.to_json()).expect("its own JSON parses");
    assert_eq!(again, b);
    for kind in ["kernel", "initramfs", "rootfs", "job"] {
        let _ = b.artifact(kind);
    }
    if let Some(id) = &b.identity {
        for (name, _) in &id.macs {
            let _ = id.mac_for(name);
        }
    }
}
