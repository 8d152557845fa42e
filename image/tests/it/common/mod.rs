//! Shared fixtures: the kernel, phase-init and images `make` prepared under
//! `$PHASE_BUILD`. A missing prerequisite fails the test with what to run.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

use image::kernel::{self, Kernel};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn build_dir() -> PathBuf {
    std::env::var_os("PHASE_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build"))
}

/// The kernel `make kernel` unpacked.
pub fn kernel() -> Kernel {
    kernel::current(&build_dir()).unwrap_or_else(|e| {
        panic!(
            "test prerequisite missing: {e} (PHASE_BUILD={})",
            build_dir().display()
        )
    })
}

/// The firmware set `phase image` fetched (`make initramfs`).
pub fn firmware() -> image::firmware::FirmwareSet {
    image::firmware::current(&build_dir()).unwrap_or_else(|e| {
        panic!(
            "test prerequisite missing: {e} (run `make initramfs`; PHASE_BUILD={})",
            build_dir().display()
        )
    })
}

/// A prerequisite file under `$PHASE_BUILD`, made by `make <target>`.
pub fn built(rel: &str, target: &str) -> PathBuf {
    let p = build_dir().join(rel);
    assert!(
        p.is_file(),
        "test prerequisite missing: {} (run `make {target}`)",
        p.display()
    );
    p
}

/// The static phase-init `make init` built.
pub fn init_bin() -> PathBuf {
    built("x86_64/phase-init", "init")
}

/// A small JSON trusted root for tests that only carry it.
pub fn root_json(dir: &Path) -> PathBuf {
    let p = dir.join("root.json");
    std::fs::write(
        &p,
        br#"{"signed":{"_type":"root","version":1},"signatures":[]}"#,
    )
    .unwrap();
    p
}

pub fn stage1_spec(dir: &Path) -> image::stage1::Stage1Spec {
    image::stage1::Stage1Spec {
        init: init_bin(),
        root_json: root_json(dir),
        busybox: PathBuf::from("/bin/busybox"),
        kernel: kernel(),
        module_list: repo().join("kernel/modules-x86_64.list"),
        firmware: firmware(),
        firmware_allow: repo().join("kernel/firmware-missing-x86_64.list"),
        mtime: 1_577_836_800,
        tor_network: None,
    }
}

/// Run a command; panic with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `zstd -dc FILE | cpio -t` style listing: (`cpio -tv` lines, names).
pub fn cpio_list(initramfs: &Path) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("initramfs.cpio");
    run_ok(
        Command::new("zstd")
            .args(["-q", "-d", "-f", "-o"])
            .arg(&raw)
            .arg(initramfs),
    );
    let verbose = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cpio -t -v --quiet < '{}'", raw.display())),
    );
    let names = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cpio -t --quiet < '{}'", raw.display())),
    );
    (verbose, names.lines().map(str::to_owned).collect())
}

/// Copy `len` bytes at `offset` of `image` into a new file.
pub fn extract(image: &Path, offset: u64, len: u64, out: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = std::fs::File::open(image).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut dst = std::fs::File::create(out).unwrap();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        dst.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}
