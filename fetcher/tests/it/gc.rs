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

#[test]
fn chunk_records_go_with_their_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = Cas::open(tmp.path()).unwrap();
    let store = |seed| {
        let d = data(2 << 20, seed);
        let spec = ObjectSpec::of_bytes(&d, 1 << 20);
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        for i in 0..spec.chunk_count() {
            let (a, b) = spec.chunk_range(i);
            let c = &d[a as usize..b as usize];
            partial
                .write_chunk(i, c, &fetcher::Sha256Digest::of(c))
                .unwrap();
        }
        partial.finish_by_chunks().unwrap();
        spec.sha256
    };
    let (kept, dropped) = (store(60), store(61));
    assert_eq!(files_ending(tmp.path(), ".chunks").len(), 2);
    // A record left by a writer that died before its rename.
    let orphan = cas
        .object_path(&fetcher::Sha256Digest::of(b"never stored"))
        .with_extension("chunks");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, "00\n").unwrap();
    let keep = [kept].into_iter().collect();
    let report = cas.gc(&keep).unwrap();
    assert_eq!(report.removed, vec![dropped]);
    let left = files_ending(tmp.path(), ".chunks");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].to_string_lossy().contains(&kept.to_hex()));
}
