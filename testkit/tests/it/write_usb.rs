//! `scripts/write-usb.sh` refuses what it must refuse. Every run here either
//! stops at a refusal or uses `--dry-run`, so no test can write a disk.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/write-usb.sh")
}

/// Runs the script (always with `--dry-run` appended as a safety net, unless
/// the test checks the real path's refusals before any write).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .arg("--dry-run")
        .output()
        .expect("run scripts/write-usb.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn small_image(dir: &Path) -> String {
    let p = dir.join("phase.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).expect("write a test image");
    p.to_string_lossy().into_owned()
}

fn root_disk() -> String {
    let out = Command::new("findmnt")
        .args(["-nvo", "SOURCE", "/"])
        .output()
        .expect("run findmnt (util-linux)");
    let src = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        src.starts_with("/dev/"),
        "this test needs / on a block device; findmnt says {src:?}"
    );
    src
}

#[test]
fn refuses_a_path_that_is_not_a_block_device() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    let (code, text) = run(&["--image", &img, "--device", &img, "--yes"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is not a block device"), "{text}");
}

#[test]
fn refuses_the_disk_holding_root() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    let root = root_disk();
    // Even with --force and --yes.
    let (code, text) = run(&["--image", &img, "--device", &root, "--yes", "--force"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("holds /") || text.contains("is a partition"),
        "{text}"
    );
}

/// A whole disk that is not removable, not mounted and not holding /
/// (on the test machines: an unattached loop device or zram).
fn idle_fixed_disk() -> String {
    let root = std::fs::canonicalize(root_disk()).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .expect("read /sys/block")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|n| {
            let dev = format!("/dev/{n}");
            let removable = std::fs::read_to_string(format!("/sys/block/{n}/removable"))
                .map(|s| s.trim() == "0")
                .unwrap_or(false);
            removable
                && Path::new(&dev).exists()
                && Path::new(&dev) != root
                && !mounts.lines().any(|l| l.starts_with(&format!("{dev} ")))
                && !mounts.contains(&format!("{dev}p"))
        })
        .map(|n| format!("/dev/{n}"))
        .expect(
            "no idle non-removable block device (e.g. /dev/loop0) on this machine to test against",
        )
}

#[test]
fn refuses_a_fixed_disk_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    let dev = idle_fixed_disk();
    let (code, text) = run(&["--image", &img, "--device", &dev, "--yes"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("is not a removable disk") && text.contains("--force"),
        "{text}"
    );
    // With --force the removability check passes; the dry run then either
    // passes every check or stops at the next one (size), never at this one.
    let (code, text) = run(&["--image", &img, "--device", &dev, "--yes", "--force"]);
    assert!(!text.contains("not a removable disk"), "{text}");
    assert!(
        (code == 0 && text.contains("dry run: checks passed"))
            || (code == 1 && text.contains("too small")),
        "{text}"
    );
}

#[test]
fn refuses_a_qcow2_image_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("phase.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.resize(4096, 0);
    std::fs::write(&q, bytes).unwrap();
    let dev = idle_fixed_disk();
    let (code, text) = run(&["--image", q.to_str().unwrap(), "--device", &dev]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("is a qcow2 image; write the raw .img"),
        "{text}"
    );
    let (code, text) = run(&["--image", "/nonexistent.img", "--device", &dev]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("image /nonexistent.img does not exist"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (code, text) = run(&["--image", "x.img"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--device are required"), "{text}");
}
