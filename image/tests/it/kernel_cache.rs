//! The kernel cache under $PHASE_BUILD/kernel: a cached release is used as
//! is (no apt, no network), a missing one is named, arm64 is refused.
use super::common;

use image::kernel;

#[test]
fn cached_release_is_used_without_downloading() {
    let build = common::build_dir();
    let current = common::kernel();
    let marker = build.join("kernel/current");
    let before = std::fs::metadata(&marker).unwrap().modified().unwrap();
    // A cached release is opened as is: no apt-get, no network.
    let k = kernel::acquire(&build, "x86_64", Some(&current.release)).unwrap();
    assert_eq!(k.vmlinuz, current.vmlinuz);
    assert_eq!(k.modules_dir, current.modules_dir);
    assert!(k.vmlinuz.ends_with(format!("boot/vmlinuz-{}", k.release)));
    assert_eq!(
        k.config_value("CONFIG_RD_ZSTD").unwrap().as_deref(),
        Some("y")
    );
    assert!(matches!(
        k.initramfs_compression().unwrap(),
        image::cpio::Compression::Zstd(_)
    ));
    // Same release: the marker is not rewritten (make keys rebuilds on it).
    let after = std::fs::metadata(&marker).unwrap().modified().unwrap();
    assert_eq!(before, after);
}

#[test]
fn missing_release_names_itself_and_the_fix() {
    let err = kernel::cached(&common::build_dir(), "0.0.0-0-nothere")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("0.0.0-0-nothere") && err.contains("make kernel"),
        "{err}"
    );
}

#[test]
fn incomplete_tree_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    let err = kernel::Kernel::open(dir.path(), "6.1.0-x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("boot/vmlinuz-6.1.0-x"), "{err}");
}

#[test]
fn arm64_is_not_supported_yet() {
    let dir = tempfile::tempdir().unwrap();
    let err = kernel::acquire(dir.path(), "arm64", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("arm64") && err.contains("not supported yet"),
        "{err}"
    );
}
