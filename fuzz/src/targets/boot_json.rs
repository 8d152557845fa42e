//! `/phase/boot.json` (the `handover` crate), written by stage 1 and read
//! by the target from its initramfs. Oracle: no panic; what parses writes
//! back to the same record.
use handover::BootJson;

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
        let _ = id.to_string();
        for (name, _) in &id.macs {
            let _ = crate::private::mac_for(id, name);
        }
    }
    if let Some(p) = &b.platform {
        let _ = p.to_string();
    }
}
