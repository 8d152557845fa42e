//! Module closure on Debian's real modules: `.modinfo` depends= resolved,
//! dependencies first, built-ins skipped, compressed modules decompressed.
use super::common;

use std::process::Command;

use image::modules::ModuleIndex;

fn names(ms: &[image::modules::Module]) -> Vec<&str> {
    ms.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn ext4_pulls_its_dependencies_first() {
    let k = common::kernel();
    let index = ModuleIndex::scan(&k.modules_dir).unwrap();
    assert!(index.len() > 1000, "only {} modules indexed", index.len());
    let closure = index.closure(&["ext4".into()]).unwrap();
    let n = names(&closure);
    assert_eq!(n.last(), Some(&"ext4"));
    for dep in ["jbd2", "mbcache", "crc16"] {
        let i = n
            .iter()
            .position(|x| *x == dep)
            .unwrap_or_else(|| panic!("{dep} missing: {n:?}"));
        assert!(i < n.len() - 1);
    }
}

#[test]
fn uas_needs_usb_storage_and_scsi_in_order() {
    let k = common::kernel();
    let index = ModuleIndex::scan(&k.modules_dir).unwrap();
    let n: Vec<String> = names(&index.closure(&["uas".into()]).unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect();
    let pos = |x: &str| {
        n.iter()
            .position(|y| y == x)
            .unwrap_or_else(|| panic!("{x} missing: {n:?}"))
    };
    assert!(pos("usbcore") < pos("usb_storage"));
    assert!(pos("scsi_mod") < pos("usb_storage"));
    assert!(pos("usb_storage") < pos("uas"));
    // Listing a dependency again does not duplicate it.
    let again = index
        .closure(&["uas".into(), "usb-storage".into()])
        .unwrap();
    assert_eq!(again.len(), n.len());
}

#[test]
fn builtin_modules_are_accepted_and_not_loaded() {
    let k = common::kernel();
    let index = ModuleIndex::scan(&k.modules_dir).unwrap();
    assert!(index.is_builtin("af_packet"), "Debian builds af_packet in");
    assert!(index.closure(&["af_packet".into()]).unwrap().is_empty());
}

#[test]
fn unknown_module_names_the_module() {
    let k = common::kernel();
    let index = ModuleIndex::scan(&k.modules_dir).unwrap();
    let err = index
        .closure(&["virtio_net".into(), "no_such_driver".into()])
        .unwrap_err();
    assert!(err.to_string().contains("no_such_driver"), "{err}");
}

#[test]
fn xz_and_zstd_compressed_modules_are_stored_decompressed() {
    let k = common::kernel();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("6.0-test");
    // ext4 (xz), jbd2 (zst), mbcache and crc16 plain: a mixed tree.
    let rel = |name: &str| -> String {
        let index_dir = &k.modules_dir;
        walk(index_dir, name)
    };
    let mut originals = Vec::new();
    for (name, how) in [
        ("ext4", "xz"),
        ("jbd2", "zst"),
        ("mbcache", ""),
        ("crc16", ""),
    ] {
        let r = rel(name);
        let dest = root.join(&r);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(k.modules_dir.join(&r), &dest).unwrap();
        originals.push((name, r.clone(), std::fs::read(&dest).unwrap()));
        match how {
            "xz" => common::run_ok(Command::new("xz").arg("--check=crc32").arg(&dest)),
            "zst" => common::run_ok(Command::new("zstd").args(["-q", "--rm"]).arg(&dest)),
            _ => String::new(),
        };
    }
    let index = ModuleIndex::scan(&root).unwrap();
    let closure = index.closure(&["ext4".into()]).unwrap();
    assert_eq!(closure.len(), 4, "{:?}", names(&closure));
    for (name, r, bytes) in originals {
        let m = closure.iter().find(|m| m.name == name).unwrap();
        assert_eq!(m.rel_path, r, "stored as .ko");
        assert!(
            m.bytes == bytes,
            "{name} not decompressed to the original bytes"
        );
    }
}

/// Path of module `name` relative to the modules dir.
fn walk(dir: &std::path::Path, name: &str) -> String {
    let order = std::fs::read_to_string(dir.join("modules.order")).unwrap();
    order
        .lines()
        .find(|l| l.ends_with(&format!("/{name}.ko")))
        .unwrap_or_else(|| panic!("{name} not in modules.order"))
        .to_owned()
}
