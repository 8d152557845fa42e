//! The hardware a stick meets: the initramfs built from Debian's real
//! kernel carries the drivers of common real machines' NICs (Realtek,
//! Intel, Broadcom, Aquantia), USB NICs, USB host controllers and USB
//! keyboards, each with every module it depends on and every firmware file
//! it names, and the alias table and dependency table phase-init's
//! coldplug reads have entries for each.
use super::common;

use std::collections::BTreeSet;
use std::process::Command;

use image::modules::{canonical_name, ModuleIndex};
use image::stage1::Stage1;

/// Drivers a stick must bring for the machines it meets.
const HARDWARE: [&str; 24] = [
    // PCI NICs
    "r8169",
    "igc",
    "igb",
    "e1000e",
    "e1000",
    "ixgbe",
    "i40e",
    "tg3",
    "bnxt_en",
    "atlantic",
    "8139too",
    "8139cp",
    // USB NICs
    "r8152",
    "ax88179_178a",
    "cdc_ether",
    "cdc_ncm",
    // USB host controllers
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    // USB keyboards
    "usbhid",
    "hid_generic",
    // virtual machines
    "virtio_net",
    "virtio_pci",
];

#[test]
fn nics_usb_and_keyboards_come_with_dependencies_firmware_and_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::stage1_spec(dir.path());
    let s1 = Stage1::build(&spec).expect("stage-1 builds");
    let img = dir.path().join("initramfs.img");
    std::fs::write(&img, s1.to_bytes().unwrap()).unwrap();
    let (_, names) = common::cpio_list(&img);
    let archived: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let raw = dir.path().join("i.cpio");
    common::run_ok(
        Command::new("zstd")
            .args(["-q", "-d", "-o"])
            .arg(&raw)
            .arg(&img),
    );
    common::run_ok(Command::new("sh").current_dir(dir.path()).arg("-c").arg(
        "cpio -i -d --quiet etc/phase/modules.alias etc/phase/modules.dep \
             etc/phase/modules.always < i.cpio",
    ));
    let read = |f: &str| std::fs::read_to_string(dir.path().join("etc/phase").join(f)).unwrap();
    let alias = read("modules.alias");
    let dep = read("modules.dep");
    let always = read("modules.always");

    let kver = &spec.kernel.release;
    let index = ModuleIndex::scan(&spec.kernel.modules_dir).unwrap();
    let mut firmware_files = 0;
    for name in HARDWARE {
        let closure = index
            .closure(&[name.to_owned()])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let module = closure
            .last()
            .filter(|m| m.name == canonical_name(name))
            .unwrap_or_else(|| panic!("{name} is built in or missing"));
        // The module and its whole dependency closure are archived.
        for m in &closure {
            let path = format!("lib/modules/{kver}/{}", m.rel_path);
            assert!(
                archived.contains(path.as_str()),
                "{} (needed by {name}) is not in the initramfs",
                m.rel_path
            );
            // Every firmware file it names, byte for byte from the set.
            for fw in &m.firmware {
                let path = format!("lib/firmware/{fw}");
                assert!(
                    archived.contains(path.as_str()),
                    "{fw} (named by {}) is not in the initramfs",
                    m.name
                );
                firmware_files += 1;
            }
        }
        // modules.dep lists all of them for it.
        let line = dep
            .lines()
            .find(|l| l.starts_with(&format!("{}:", module.rel_path)))
            .unwrap_or_else(|| panic!("{name} has no modules.dep line"));
        for m in &closure[..closure.len() - 1] {
            assert!(
                line.split_whitespace().any(|w| w == m.rel_path),
                "modules.dep for {name} lacks {}: {line}",
                m.rel_path
            );
        }
        // The alias table has its device patterns.
        let entries: Vec<&str> = alias
            .lines()
            .filter(|l| l.ends_with(&format!(" {}", module.name)))
            .collect();
        assert!(!entries.is_empty(), "no modules.alias entry for {name}");
        assert_eq!(
            entries.len(),
            module.aliases.len(),
            "{name}: every alias= line is in the table"
        );
        // Drivers are loaded by device, not at every boot.
        assert!(
            !always.lines().any(|l| l == module.rel_path),
            "{name} is loaded at every boot"
        );
    }
    // Realtek and Broadcom NICs name firmware; it came from the packages.
    assert!(firmware_files > 20, "only {firmware_files} firmware files");
    for fw in [
        "rtl_nic/rtl8168h-2.fw",
        "rtl_nic/rtl8153b-2.fw",
        "tigon/tg3.bin",
    ] {
        let from_set = spec
            .firmware
            .read(fw)
            .unwrap()
            .expect("in the firmware set");
        assert!(!from_set.is_empty(), "{fw} is empty");
        assert!(s1.firmware.iter().any(|f| f == fw), "{fw} not carried");
    }
    // Specific device patterns coldplug must match.
    for (pattern, module) in [
        ("pci:v000010ECd00008168sv*sd*bc*sc*i*", "r8169"),
        ("pci:v00008086d000010D3sv*sd*bc*sc*i*", "e1000e"),
        ("pci:v00008086d000010C9sv*sd*bc*sc*i*", "igb"),
        ("pci:v*d*sv*sd*bc0Csc03i30*", "xhci_pci"),
        ("usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in*", "r8152"),
    ] {
        let line = format!("alias {pattern} {module}");
        assert!(
            alias.lines().any(|l| l == line),
            "no `{line}` in modules.alias"
        );
    }
    // The file systems and the stick's drivers load at every boot.
    // dm-mod and dm-verity open the rootfs through dm-verity in stage 2.
    for name in [
        "ext4",
        "vfat",
        "squashfs",
        "overlay",
        "loop",
        "usb-storage",
        "dm-mod",
        "dm-verity",
    ] {
        assert!(
            always.lines().any(|l| l.ends_with(&format!("/{name}.ko"))),
            "{name} is not in modules.always: {always}"
        );
    }
    // dm-verity's dependencies come with it.
    let verity = dep
        .lines()
        .find(|l| l.contains("/dm-verity.ko:"))
        .unwrap_or_else(|| panic!("no modules.dep line for dm-verity: {dep}"));
    for needed in ["/dm-bufio.ko", "/dm-mod.ko", "/reed_solomon.ko"] {
        assert!(
            verity.split_whitespace().any(|w| w.ends_with(needed)),
            "modules.dep for dm-verity lacks {needed}: {verity}"
        );
    }
}
