//! `phase publish --rootfs` publishes the rootfs's dm-verity hash tree as
//! the sibling target `<channel>/<arch>/rootfs.verity` and signs its
//! parameters in the rootfs's `custom.verity`; cryptsetup's `veritysetup
//! verify` accepts the published rootfs and tree with the published root
//! hash; `phase verify` recomputes the tree and names the target that does
//! not match; a rootfs the tree cannot cover and a bad salt are refused
//! with one line.
use std::path::{Path, PathBuf};
use std::process::Command;

use verifier::publish::{Publisher, TargetSpec};
use verifier::Kind;

use super::trust_support::*;

const ROOTFS: &str = "stable/x86_64/rootfs";
const TREE: &str = "stable/x86_64/rootfs.verity";
const SALT: &str = "5a17a5a17a5a17a5a17a5a17a5a17a5a17a5a17a5a17a5a17a5a17a5a17a5a17";

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// The file under `targets/` of a target entry (consistent snapshots).
fn target_file(repo: &Path, name: &str) -> PathBuf {
    let e = targets_entry(repo, name);
    let sha = e["hashes"]["sha256"].as_str().unwrap();
    let (dir, base) = name.rsplit_once('/').unwrap();
    repo.join("targets").join(dir).join(format!("{sha}.{base}"))
}

fn veritysetup(args: &[&str]) -> std::process::Output {
    Command::new("veritysetup")
        .args(args)
        .output()
        .expect("run veritysetup (apt-get install cryptsetup-bin; scripts/deps-check.sh --install)")
}

/// keygen + publish of a kernel and a rootfs of `blocks` 4 KiB blocks.
fn publish_rootfs(dir: &Path, blocks: usize, salt: Option<&str>) -> (PathBuf, PathBuf) {
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    if !keys.exists() {
        ok(&["keygen", "--out", s(&keys)]);
    }
    let (kernel, rootfs) = (dir.join("vmlinuz"), dir.join("rootfs"));
    std::fs::write(&kernel, b"kernel bytes").unwrap();
    std::fs::write(&rootfs, random_bytes(blocks * 4096, 1)).unwrap();
    let mut args = vec![
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--kernel",
        s(&kernel),
        "--rootfs",
        s(&rootfs),
    ];
    if let Some(salt) = salt {
        args.extend(["--verity-salt", salt]);
    }
    ok(&args);
    (keys, repo)
}

#[test]
fn rootfs_tree_is_a_signed_target_that_veritysetup_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // 300 blocks: a two-level tree.
    let (keys, repo) = publish_rootfs(t, 300, Some(SALT));

    let rootfs = targets_entry(&repo, ROOTFS);
    let v = &rootfs["custom"]["verity"];
    assert_eq!(v["version"], 1, "{rootfs}");
    assert_eq!(v["hash_algorithm"], "sha256");
    assert_eq!(v["data_block_size"], 4096);
    assert_eq!(v["hash_block_size"], 4096);
    assert_eq!(v["data_blocks"], 300);
    assert_eq!(v["salt"], SALT);
    assert_eq!(v["tree"], TREE);
    let root = v["root_hash"].as_str().unwrap().to_string();
    assert_eq!(root.len(), 64);
    assert!(rootfs["custom"]["chunks"].is_object());

    // The tree target: kind verity, content-addressed and chunk-listed like
    // every target; superblock + one top block + 3 level-0 blocks.
    let tree = targets_entry(&repo, TREE);
    assert_eq!(tree["custom"]["kind"], "verity", "{tree}");
    assert_eq!(tree["length"], 5 * 4096);
    assert_eq!(
        tree["custom"]["chunks"]["sha256"].as_array().unwrap().len(),
        1
    );
    let tree_file = target_file(&repo, TREE);
    let rootfs_file = target_file(&repo, ROOTFS);
    assert_eq!(std::fs::metadata(&tree_file).unwrap().len(), 5 * 4096);

    // The reference reads the same parameters from the superblock and
    // accepts the published pair with the signed root hash...
    let dump = veritysetup(&["dump", s(&tree_file)]);
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("Data blocks:     \t300"), "{dump}");
    assert!(
        dump.contains(&format!("Salt:            \t{SALT}")),
        "{dump}"
    );
    let out = veritysetup(&["verify", s(&rootfs_file), s(&tree_file), &root]);
    assert!(
        out.status.success(),
        "veritysetup verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and refuses another root hash.
    let other = format!(
        "{}{}",
        if &root[..1] == "0" { "1" } else { "0" },
        &root[1..]
    );
    let out = veritysetup(&["verify", s(&rootfs_file), s(&tree_file), &other]);
    assert!(
        !out.status.success(),
        "veritysetup accepted a wrong root hash"
    );

    // phase verify recomputes the tree and reports the root hash.
    let root_json = keys.join("1.root.json");
    let out = ok(&[
        "verify",
        "--repo",
        s(&repo),
        "--root",
        s(&root_json),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = report["targets"].as_array().unwrap();
    let r = listed.iter().find(|x| x["name"] == ROOTFS).unwrap();
    assert_eq!(r["verity_root_hash"], root.as_str(), "{out}");
    assert!(listed
        .iter()
        .any(|x| x["name"] == TREE && x["kind"] == "verity"));

    // The same rootfs and salt give the same tree target.
    let sha = tree["hashes"]["sha256"].clone();
    publish_rootfs(t, 300, Some(SALT));
    assert_eq!(targets_entry(&repo, TREE)["hashes"]["sha256"], sha);
}

#[test]
fn default_salt_is_random_and_one_block_rootfs_has_no_levels() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, repo) = publish_rootfs(tmp.path(), 1, None);
    let v = targets_entry(&repo, ROOTFS)["custom"]["verity"].clone();
    let salt = v["salt"].as_str().unwrap().to_string();
    assert_eq!(salt.len(), 64, "{v}");
    assert_eq!(v["data_blocks"], 1);
    // Only the superblock.
    assert_eq!(targets_entry(&repo, TREE)["length"], 4096);
    let out = veritysetup(&[
        "verify",
        s(&target_file(&repo, ROOTFS)),
        s(&target_file(&repo, TREE)),
        v["root_hash"].as_str().unwrap(),
    ]);
    assert!(out.status.success());
    let again = tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let (_, repo2) = publish_rootfs(&again, 1, None);
    let v2 = targets_entry(&repo2, ROOTFS)["custom"]["verity"].clone();
    assert_ne!(v2["salt"], v["salt"], "two publishes drew the same salt");
}

/// Re-signs the repository with the rootfs listed with `verity` as its
/// `custom.verity` (`None`: without it), and the tree target `tree_bytes`
/// (`None`: left as published).
fn resign(dir: &Path, verity: Option<serde_json::Value>, tree_bytes: Option<Vec<u8>>) {
    let (keys, repo) = (dir.join("keys"), dir.join("repo"));
    let mut p = Publisher::open(&repo, &keys).unwrap();
    let mut extra = serde_json::Map::new();
    if let Some(v) = verity {
        extra.insert("verity".into(), v);
    }
    let spec = |name: &str, kind, source: PathBuf| TargetSpec {
        name: name.into(),
        kind,
        version: "2".into(),
        cmdline: None,
        source,
    };
    p.add_target_with(&spec(ROOTFS, Kind::Rootfs, dir.join("rootfs")), extra)
        .unwrap();
    if let Some(bytes) = tree_bytes {
        let f = dir.join("forged-tree");
        std::fs::write(&f, bytes).unwrap();
        p.add_target(&spec(TREE, Kind::Verity, f)).unwrap();
    }
    p.commit(chrono::Duration::days(1)).unwrap();
}

fn verify_fails(dir: &Path) -> String {
    fails(&[
        "verify",
        "--repo",
        s(&dir.join("repo")),
        "--root",
        s(&dir.join("keys/1.root.json")),
    ])
}

#[test]
fn phase_verify_names_the_target_whose_tree_does_not_match() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_, repo) = publish_rootfs(d, 200, Some(SALT));
    let good = targets_entry(&repo, ROOTFS)["custom"]["verity"].clone();
    let tree = std::fs::read(target_file(&repo, TREE)).unwrap();

    // A signed root hash of other bytes.
    let mut v = good.clone();
    v["root_hash"] = "00".repeat(32).into();
    resign(d, Some(v), None);
    let err = verify_fails(d);
    assert!(
        err.contains("target stable/x86_64/rootfs: the signed dm-verity root hash 0000")
            && err.lines().count() == 1,
        "{err}"
    );

    // A signed tree target whose level 0 is not the rootfs's.
    let mut forged = tree.clone();
    let last = forged.len() - 4096;
    forged[last] ^= 1;
    resign(d, Some(good.clone()), Some(forged));
    let err = verify_fails(d);
    assert!(
        err.contains("target stable/x86_64/rootfs.verity: the dm-verity tree of stable/x86_64/rootfs differs")
            && err.contains(&format!("first at byte {last}")),
        "{err}"
    );

    // The tree target it names is not listed.
    let mut v = good.clone();
    v["tree"] = "stable/x86_64/nothing".into();
    resign(d, Some(v), Some(tree.clone()));
    let err = verify_fails(d);
    assert!(
        err.contains("its dm-verity tree target stable/x86_64/nothing is not listed"),
        "{err}"
    );

    // Malformed and missing metadata are told apart.
    let mut v = good.clone();
    v["hash_algorithm"] = "sha1".into();
    resign(d, Some(v), None);
    let err = verify_fails(d);
    assert!(
        err.contains("target stable/x86_64/rootfs has no valid dm-verity metadata")
            && err.contains("dm-verity metadata invalid: hash_algorithm \"sha1\""),
        "{err}"
    );
    resign(d, None, None);
    let err = verify_fails(d);
    assert!(
        err.contains("no dm-verity metadata (custom.verity)"),
        "{err}"
    );

    // Back to the published metadata: verifies again.
    resign(d, Some(good), Some(tree));
    ok(&[
        "verify",
        "--repo",
        s(&d.join("repo")),
        "--root",
        s(&d.join("keys/1.root.json")),
    ]);
}

#[test]
fn a_rootfs_the_tree_cannot_cover_and_a_bad_salt_are_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let keys = t.join("keys");
    ok(&["keygen", "--out", s(&keys)]);
    let odd = t.join("odd");
    std::fs::write(&odd, vec![1u8; 5000]).unwrap();
    let empty = t.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let good = t.join("good");
    std::fs::write(&good, vec![1u8; 8192]).unwrap();
    let repo = t.join("repo");
    let base = ["publish", "--repo", s(&repo), "--keys", s(&keys)];
    let long_salt = "00".repeat(257);
    for (more, want) in [
        (
            vec!["--rootfs", s(&odd)],
            "5000 bytes is not a whole, nonzero number of 4096-byte dm-verity data blocks",
        ),
        (vec!["--rootfs", s(&empty)], "0 bytes is not a whole"),
        (
            vec!["--rootfs", s(&good), "--verity-salt", "xyz"],
            "--verity-salt: salt \"xyz\" is not an even number of hex digits",
        ),
        (
            vec!["--rootfs", s(&good), "--verity-salt", &long_salt],
            "--verity-salt: salt is 257 bytes, at most 256 fit the superblock",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(more.iter().copied()).collect();
        let err = fails(&args);
        assert!(err.contains(want), "{more:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!repo.join("metadata/timestamp.json").exists());
    // An empty salt is allowed (veritysetup's --salt=-).
    ok(&[&base[..], &["--rootfs", s(&good), "--verity-salt", ""]].concat());
    assert_eq!(targets_entry(&repo, ROOTFS)["custom"]["verity"]["salt"], "");
}
