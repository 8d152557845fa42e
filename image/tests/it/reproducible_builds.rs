//! Same inputs, same bytes: the initramfs and the (unseeded) disk image.
use super::common;

use image::stage1::Stage1;

#[test]
fn two_initramfs_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::stage1_spec(dir.path());
    let a = Stage1::build(&spec).unwrap().to_bytes().unwrap();
    // A second, independent build (fresh scan, fresh reads).
    let b = Stage1::build(&spec).unwrap().to_bytes().unwrap();
    assert!(
        a == b,
        "two initramfs builds differ ({} vs {} bytes)",
        a.len(),
        b.len()
    );
    // The timestamp is an input: a different one gives different bytes.
    let mut other = spec.clone();
    other.mtime += 1;
    let c = Stage1::build(&other).unwrap().to_bytes().unwrap();
    assert!(a != c, "mtime is not recorded");
}

#[test]
fn two_disk_images_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::kernel();
    let esp = image::esp::assemble(&image::esp::EspSpec {
        templates: common::repo().join("esp"),
        loaders: image::esp::Loaders::Plain {
            systemd_boot: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
        },
        kernel: kernel.vmlinuz.clone(),
        kernel_release: kernel.release.clone(),
        initramfs: b"not a real initramfs, the ESP only carries it".to_vec(),
        default_mode: "local".into(),
        cmdline_extra: String::new(),
    })
    .unwrap();
    let spec = image::DiskSpec {
        size: 256 << 20,
        esp_size: 64 << 20,
        seed: [7; 32],
        mtime: 1_577_836_800,
    };
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    image::disk::write_image(&a, &spec, &esp, None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    image::disk::write_image(&b, &spec, &esp, None).unwrap();
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(a == b, "two disk images from the same inputs differ");
}
