//! qcow2 through qemu-img: compat 1.1, lazy refcounts, the options we pass,
//! and the same guest-visible bytes as the raw image.
use super::common;

use std::process::Command;

use common::run_ok;
use image::disk::{convert_qcow2, Qcow2Options};

fn raw_image(dir: &std::path::Path) -> std::path::PathBuf {
    let esp = image::esp::EspFiles {
        files: [("hello.txt".to_owned(), b"hello".to_vec())]
            .into_iter()
            .collect(),
    };
    let spec = image::DiskSpec {
        size: 128 << 20,
        esp_size: 64 << 20,
        seed: [3; 32],
        mtime: 1_577_836_800,
    };
    let raw = dir.join("disk.img");
    image::disk::write_image(&raw, &spec, &esp, None).unwrap();
    raw
}

fn info(q: &std::path::Path) -> serde_json::Value {
    let out = run_ok(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(q),
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn qcow2_has_compat_1_1_lazy_refcounts_and_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(dir.path());
    let q = dir.path().join("disk.qcow2");
    convert_qcow2(&raw, &q, &Qcow2Options::default()).unwrap();
    let i = info(&q);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["format-specific"]["data"]["compat"], "1.1");
    assert_eq!(i["format-specific"]["data"]["lazy-refcounts"], true);
    run_ok(Command::new("qemu-img").arg("check").arg(&q));
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&q),
    );
}

#[test]
fn qcow2_options_reach_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_image(dir.path());
    let q = dir.path().join("c.qcow2");
    convert_qcow2(
        &raw,
        &q,
        &Qcow2Options {
            compress: true,
            prealloc: None,
            cluster_size: Some(65536 * 2),
        },
    )
    .unwrap();
    assert_eq!(info(&q)["cluster-size"], 131072);
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&q),
    );

    let m = dir.path().join("m.qcow2");
    convert_qcow2(
        &raw,
        &m,
        &Qcow2Options {
            compress: false,
            prealloc: Some("metadata".into()),
            cluster_size: None,
        },
    )
    .unwrap();
    run_ok(Command::new("qemu-img").arg("check").arg(&m));

    let bad = convert_qcow2(
        &raw,
        &dir.path().join("x.qcow2"),
        &Qcow2Options {
            compress: false,
            prealloc: Some("sparse".into()),
            cluster_size: None,
        },
    )
    .unwrap_err();
    assert!(bad.to_string().contains("sparse"), "{bad}");
    let bad = convert_qcow2(
        &raw,
        &dir.path().join("y.qcow2"),
        &Qcow2Options {
            compress: false,
            prealloc: None,
            cluster_size: Some(1000),
        },
    )
    .unwrap_err();
    assert!(bad.to_string().contains("1000"), "{bad}");
}

#[test]
fn make_built_qcow2_is_the_raw_image() {
    let q = common::built("phase-boot-x86_64.qcow2", "qcow2");
    let raw = common::built("phase-boot-x86_64.img", "image");
    let i = info(&q);
    assert_eq!(i["format-specific"]["data"]["compat"], "1.1");
    assert_eq!(i["format-specific"]["data"]["lazy-refcounts"], true);
    assert_eq!(
        i["virtual-size"].as_u64(),
        Some(std::fs::metadata(&raw).unwrap().len())
    );
    run_ok(Command::new("qemu-img").arg("check").arg(&q));
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&q),
    );
}
