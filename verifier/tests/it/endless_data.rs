//! Endless data: oversized metadata and targets are cut at their cap and
//! refused.
use super::support;
use support::*;
use verifier::{Error, Limits, Rule, TargetRule};

#[test]
fn oversized_timestamp() {
    let mut repo = Repo::new();
    let store = client(&repo);
    let before = store.snapshot();
    let mut big = repo.write_timestamp();
    big.extend(std::iter::repeat_n(b' ', 20_000));
    repo.serve("timestamp.json", big);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::TooLarge { max: 16384 }, .. } if role == "timestamp"),
        "{}",
        chain(&e)
    );
    assert_eq!(store.snapshot(), before);
}

#[test]
fn oversized_root() {
    let repo = Repo::new();
    let store = client(&repo);
    let mut big = repo.root_bytes();
    big.extend(std::iter::repeat_n(b' ', 600_000));
    repo.serve("2.root.json", big);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Rejected {
                rule: Rule::TooLarge { .. },
                ..
            }
        ),
        "{}",
        chain(&e)
    );
}

#[test]
fn snapshot_longer_than_listed() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.snapshot.version += 1;
    let mut s = repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    s.extend(b"          ");
    repo.serve("2.snapshot.json", s);
    let e = repo.updater(&store).refresh().unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, .. } if role == "snapshot"),
        "{}",
        chain(&e)
    );
}

#[test]
fn targets_metadata_beyond_default_cap_without_listed_length() {
    let mut repo = Repo::new();
    let store = client(&repo);
    repo.targets.version += 1;
    let t = repo.write_targets();
    repo.snapshot.meta.insert(
        "targets.json".into(),
        verifier::metadata::MetaFile {
            version: 2,
            length: None,
            hashes: None,
        },
    );
    repo.snapshot.version += 1;
    repo.write_snapshot();
    repo.timestamp.version += 1;
    repo.write_timestamp();
    let limits = Limits {
        targets_max_bytes: (t.len() - 1) as u64,
        ..Limits::default()
    };
    let e = repo
        .updater(&store)
        .with_limits(limits)
        .refresh()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Rejected { role, rule: Rule::TooLarge { .. }, .. } if role == "targets"),
        "{}",
        chain(&e)
    );
}

#[test]
fn target_longer_than_listed_is_cut() {
    let mut repo = Repo::new();
    repo.add_target("a/file", b"hello");
    repo.commit();
    let store = client(&repo);
    // Serve endless bytes under the right name.
    let path = format!("a/{}.file", verifier::digest::sha256_hex(b"hello"));
    repo.blobs
        .lock()
        .unwrap()
        .insert(path, vec![b'x'; 1_000_000]);
    let mut up = repo.updater(&store);
    up.refresh().unwrap();
    let t = up.target("a/file").unwrap();
    let mut out = Vec::new();
    let e = up.download(&t, &mut out).unwrap_err();
    assert!(
        matches!(e.target_rule(), Some(TargetRule::TooLong { max: 5 })),
        "{}",
        chain(&e)
    );
    assert!(out.len() <= 5, "wrote {} bytes past the cap", out.len());
}
