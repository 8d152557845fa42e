//! `phase cache verify`: every object hashed against its name; a damaged
//! one is named, moved to `cas/quarantine/` (not deleted) and the command
//! fails; `--json` gives the same as a report.
use std::path::Path;
use std::process::Command;

use fetcher::{Cas, Sha256Digest};

const PHASE: &str = env!("CARGO_BIN_EXE_phase");

fn verify(cache: &Path, json: bool) -> (bool, String, String) {
    let mut cmd = Command::new(PHASE);
    cmd.args(["cache", "verify", "--cache"]).arg(cache);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run phase");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A cache with three objects (one of 3 MiB, more than one hash block).
fn cache(dir: &Path) -> (Cas, Vec<Sha256Digest>) {
    let cas = Cas::open(dir).unwrap();
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let ds = vec![
        cas.insert_bytes(b"kernel").unwrap(),
        cas.insert_bytes(&big).unwrap(),
        cas.insert_bytes(b"").unwrap(),
    ];
    (cas, ds)
}

/// Flips one byte of a stored object behind the cache's back.
fn damage(cas: &Cas, d: &Sha256Digest) -> Vec<u8> {
    let path = cas.object_path(d);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    bytes
}

#[test]
fn good_cache_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_cas, _) = cache(tmp.path());
    let (ok, out, err) = verify(tmp.path(), false);
    assert!(ok, "{out}{err}");
    assert!(out.contains("3 objects"), "{out}");
    assert!(out.contains("3 good, 0 bad"), "{out}");
    assert!(!tmp.path().join("cas/quarantine").exists());
}

#[test]
fn damaged_object_is_named_moved_aside_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (cas, ds) = cache(tmp.path());
    let bad = damage(&cas, &ds[1]);
    let (ok, out, err) = verify(tmp.path(), false);
    assert!(!ok, "fails: {out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("bad ")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains(&ds[1].to_hex()), "{out}");
    assert!(lines[0].contains("moved to"), "{out}");
    assert!(err.contains("1 of 3 objects"), "{err}");
    // Moved, not deleted; the good objects stay where they were.
    let moved = cas.quarantine_dir().join(ds[1].to_hex());
    assert_eq!(std::fs::read(moved).unwrap(), bad);
    assert!(!cas.contains(&ds[1]));
    assert!(cas.contains(&ds[0]) && cas.contains(&ds[2]));
    // What is left is good.
    let (ok, out, _) = verify(tmp.path(), false);
    assert!(ok, "{out}");
    assert!(out.contains("2 good, 0 bad"), "{out}");
}

#[test]
fn json_report_lists_the_bad_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (cas, ds) = cache(tmp.path());
    damage(&cas, &ds[0]);
    let (ok, out, _) = verify(tmp.path(), true);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["checked"], 3, "{v}");
    assert_eq!(v["good"], 2, "{v}");
    let bad = v["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["sha256"], ds[0].to_hex());
    assert_ne!(bad[0]["actual"], ds[0].to_hex());
    let moved = bad[0]["moved_to"].as_str().unwrap();
    assert!(Path::new(moved).is_file(), "{v}");

    let (ok, out, _) = verify(tmp.path(), true);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
}
