//! `phase image --seed-repo`: the cache partition gets the verified TUF
//! metadata and, in its CAS, the (channel, arch) targets plus the fleet's
//! `jobs/`, and nothing of another channel or that does not match the
//! signed hashes.
use std::path::{Path, PathBuf};
use std::process::Command;

use verifier::publish::{generate_keys, KeygenOptions, Publisher, TargetSpec};
use verifier::Kind;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_dir() -> PathBuf {
    std::env::var_os("PHASE_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build"))
}

fn kernel_release() -> String {
    let current = build_dir().join("kernel/current");
    std::fs::read_to_string(&current)
        .unwrap_or_else(|e| {
            panic!(
                "test prerequisite missing: {} ({e}); run `make kernel`",
                current.display()
            )
        })
        .trim()
        .to_owned()
}

/// Stands in for a job's bytes: the seeder copies them, nothing runs them.
const JOB: &[u8] = b"\0asm\x01\0\0\0 a job the seeder must copy";

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    kernel_bytes: Vec<u8>,
    initramfs_bytes: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let report = generate_keys(
        &keys,
        &KeygenOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires: chrono::Utc::now() + chrono::Duration::days(30),
            consistent_snapshot: true,
        },
    )
    .unwrap();
    let repo = dir.path().join("repo");
    let mut publisher = Publisher::open(&repo, &keys).unwrap();
    let kernel_bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let initramfs_bytes = b"a stage-2 initramfs".repeat(1000);
    for (name, kind, bytes) in [
        ("stable/x86_64/kernel", Kind::Kernel, &kernel_bytes),
        ("stable/x86_64/initramfs", Kind::Initramfs, &initramfs_bytes),
        (
            "testing/x86_64/kernel",
            Kind::Kernel,
            &b"another channel".to_vec(),
        ),
        ("jobs/hello.wasm", Kind::Job, &JOB.to_vec()),
    ] {
        let src = dir.path().join(name.replace('/', "_"));
        std::fs::write(&src, bytes).unwrap();
        publisher
            .add_target(&TargetSpec {
                name: name.into(),
                kind,
                version: "1".into(),
                cmdline: None,
                source: src,
            })
            .unwrap();
    }
    publisher.commit(chrono::Duration::days(7)).unwrap();
    Fixture {
        root: report.root_file,
        repo,
        kernel_bytes,
        initramfs_bytes,
        dir,
    }
}

fn phase_image(f: &Fixture, out: &Path) -> std::process::Output {
    let initramfs = f.dir.path().join("stage1.img");
    std::fs::write(&initramfs, b"stage-1 stand-in carried on the ESP").unwrap();
    Command::new(env!("CARGO_BIN_EXE_phase"))
        .current_dir(repo_root())
        .args([
            "image",
            "--json",
            "--size",
            "160M",
            "--esp-size",
            "64M",
            "--channel",
            "stable",
        ])
        .args(["--arch", "x86_64", "--kernel-version", &kernel_release()])
        .arg("--build-dir")
        .arg(build_dir())
        .arg("--out")
        .arg(out)
        .arg("--root")
        .arg(&f.root)
        .arg("--initramfs")
        .arg(&initramfs)
        .arg("--seed-repo")
        .arg(&f.repo)
        .output()
        .unwrap()
}

fn debugfs(fs: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(fs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex_lower(&sha2::Sha256::digest(b))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn seeded_cache_holds_verified_metadata_and_channel_targets() {
    let f = fixture();
    let out = f.dir.path().join("disk.img");
    let res = phase_image(&f, &out);
    assert!(
        res.status.success(),
        "phase image failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    let seeded: Vec<String> = serde_json::from_value(summary["seeded"].clone()).unwrap();
    assert_eq!(
        seeded,
        [
            "jobs/hello.wasm",
            "stable/x86_64/initramfs",
            "stable/x86_64/kernel"
        ]
    );

    // Pull the cache partition out at its offset and read it with debugfs.
    let first = summary["layout"]["cache"]["first_lba"].as_u64().unwrap();
    let last = summary["layout"]["cache"]["last_lba"].as_u64().unwrap();
    let cache = f.dir.path().join("cache.ext4");
    let status = Command::new("dd")
        .arg(format!("if={}", out.display()))
        .arg(format!("of={}", cache.display()))
        .args(["bs=512", "status=none"])
        .arg(format!("skip={first}"))
        .arg(format!("count={}", last + 1 - first))
        .status()
        .unwrap();
    assert!(status.success());
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    let job = JOB.to_vec();
    for (bytes, what) in [
        (&f.kernel_bytes, "kernel"),
        (&f.initramfs_bytes, "initramfs"),
        (&job, "job"),
    ] {
        let sha = sha256_hex(bytes);
        let dumped = f.dir.path().join(format!("dumped-{what}"));
        debugfs(
            &cache,
            &format!("dump /cas/sha256/{}/{sha} {}", &sha[..2], dumped.display()),
        );
        assert!(
            std::fs::read(&dumped).unwrap() == *bytes,
            "{what} bytes differ in the CAS"
        );
    }
    let other = sha256_hex(b"another channel");
    let ls = debugfs(&cache, &format!("ls /cas/sha256/{}", &other[..2]));
    assert!(
        !ls.contains(&other),
        "a testing-channel target was seeded: {ls}"
    );
    let tuf = debugfs(&cache, "ls /tuf");
    for file in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(tuf.contains(file), "tuf/{file} missing: {tuf}");
    }
}

#[test]
fn tampered_target_is_refused_and_no_image_is_written() {
    let f = fixture();
    // Flip one byte of the kernel target file in the repository.
    let targets = f.repo.join("targets/stable/x86_64");
    let file = std::fs::read_dir(&targets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".kernel"))
        .expect("published kernel target");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let out = f.dir.path().join("disk.img");
    let res = phase_image(&f, &out);
    assert!(!res.status.success(), "a tampered seed must fail the build");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("stable/x86_64/kernel"),
        "error does not name the target: {err}"
    );
    assert!(!out.exists(), "an image was written despite the failure");
}

#[test]
fn seed_with_an_unrelated_root_fails_verification() {
    let f = fixture();
    let other = tempfile::tempdir().unwrap();
    let report = generate_keys(
        &other.path().join("k"),
        &KeygenOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires: chrono::Utc::now() + chrono::Duration::days(30),
            consistent_snapshot: true,
        },
    )
    .unwrap();
    let f = Fixture {
        root: report.root_file,
        ..f
    };
    let res = phase_image(&f, &f.dir.path().join("disk.img"));
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("cannot seed the cache"), "{err}");
}
