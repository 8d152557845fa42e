//! `gc` keeps what the current trusted targets reference plus the newest N
//! recorded versions of each target, and removes the rest and stale partials.
use super::common;

use common::*;
use fetcher::{Cas, ObjectSpec};

#[test]
fn keeps_current_and_newest_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path()).unwrap();
    let mut kernels = Vec::new();
    for v in 0..4u64 {
        let d = cas.insert_bytes(&data(1000 + v as usize, 40 + v)).unwrap();
        cas.record_ref("stable/x86_64/kernel", &format!("1.{v}"), &d)
            .unwrap();
        kernels.push(d);
    }
    let rootfs = cas.insert_bytes(&data(5000, 50)).unwrap();
    cas.record_ref("stable/x86_64/rootfs", "1.0", &rootfs)
        .unwrap();
    let stray = cas.insert_bytes(&data(700, 51)).unwrap();
    // A stale partial (no writer holds it).
    let pdata = data(3 << 20, 52);
    let pspec = ObjectSpec::of_bytes(&pdata, 1 << 20);
    let lock = cas.try_lock(&pspec.sha256).unwrap().unwrap();
    let partial = cas.open_partial(&pspec, lock).unwrap();
    drop(partial);
    assert_eq!(files_ending(tmp.path(), ".partial").len(), 1);

    // Current trusted: kernel 1.1 (an older one, e.g. after a rollback of
    // the channel), keep the newest 2 versions per target.
    let keep = cas.keep_set([kernels[1]], 2).unwrap();
    let report = cas.gc(&keep).unwrap();
    let mut left = cas.list().unwrap();
    left.sort();
    let mut want = vec![kernels[1], kernels[2], kernels[3], rootfs];
    want.sort();
    assert_eq!(left, want);
    let mut removed = vec![kernels[0], stray];
    removed.sort();
    assert_eq!(report.removed, removed);
    assert_eq!(report.removed_partials, 2, "partial + sidecar");
    assert!(files_ending(tmp.path(), ".partial").is_empty());
    assert!(report.freed_bytes >= 1000 + 700);
    // Idempotent.
    assert!(cas.gc(&keep).unwrap().removed.is_empty());
}
