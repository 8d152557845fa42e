//! Bad input: an external signer that hangs (a token waiting for a touch
//! nobody gives). After --signer-timeout the signer's whole process group
//! is killed, the publish fails with one line naming the role and key id,
//! the repository is unchanged, and the next honest publish is accepted.
use super::signer_support;
use super::trust_support;

use std::time::{Duration, Instant};

use signer_support::*;
use trust_support::*;

/// Whether `pid` is gone or a zombie waiting for its reaper.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn external_signer_hanging_past_its_timeout_is_killed_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let ts = OpensslKey::generate(tmp.path(), "ts", KeyType::Ed25519);
    let (keys, repo) = repo_with_external_timestamp(tmp.path(), &ts);
    let id = key_id(&ts.public);
    let before = snapshot_dir(&repo.join("metadata"));
    let kernel = tmp.path().join("vmlinuz2");
    std::fs::write(&kernel, b"kernel v2").unwrap();

    // The shell starts a child that would outlive it and waits on it.
    let pidfile = tmp.path().join("sleep.pid");
    let hang = format!("sleep 300 & echo $! > '{}'; wait", s(&pidfile));
    let bad = ts.signer_with("timestamp", &hang);
    let mut args = publish_args(&keys, &repo, &kernel, &bad);
    args.extend(["--signer-timeout", "1s"]);
    let start = Instant::now();
    let err = fails(&args);
    let took = start.elapsed();
    let line = one_line_naming(&err, "timestamp", &id);
    assert!(line.contains("did not finish within 1s"), "{line}");
    assert!(took < Duration::from_secs(20), "took {took:?}");

    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if ended(pid) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "the signer's child {pid} outlived the timeout");

    assert_eq!(
        snapshot_dir(&repo.join("metadata")),
        before,
        "metadata changed"
    );
    publish(&keys, &repo, &kernel, &[&ts.signer("timestamp")]);
    assert_eq!(verify(&keys, &repo)["timestamp_version"], 2);
}
