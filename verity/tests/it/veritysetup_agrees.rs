//! The reference is cryptsetup's `veritysetup`, run on regular files (it
//! needs neither root nor loop devices for `format` and `verify`). For each
//! case it formats the same data with the same salt, UUID and block sizes:
//! the root hash and the whole hash device must be byte-identical to ours,
//! and `veritysetup verify` must accept our hash device (and refuse it once
//! a data byte is flipped).

use std::path::Path;
use std::process::{Command, Output};

use verity::{Layout, Params, Tree};

const UUID: [u8; 16] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];
const UUID_STR: &str = "12345678-9abc-4def-8123-456789abcdef";

fn veritysetup(args: &[&str]) -> Output {
    Command::new("veritysetup")
        .args(args)
        .output()
        .expect("run veritysetup (apt-get install cryptsetup-bin; scripts/deps-check.sh --install)")
}

fn ok(args: &[&str]) -> String {
    let out = veritysetup(args);
    assert!(
        out.status.success(),
        "veritysetup {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let d: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(path, &d).unwrap();
    d
}

fn root_hash_line(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in {stdout}"))
        .trim()
        .to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Formats `len` bytes with both tools and compares; returns our tree.
fn agree(dir: &Path, len: usize, dbs: u32, hbs: u32, salt: &str, seed: u64) -> Tree {
    let data = dir.join(format!("data-{len}-{dbs}-{hbs}"));
    let bytes = random_file(&data, len, seed);
    let tree = verity::build(&bytes[..], Params::with_hex_salt(dbs, hbs, salt).unwrap()).unwrap();

    // With the superblock (veritysetup's default).
    let theirs = dir.join(format!("theirs-{len}-{dbs}-{hbs}"));
    let salt_arg = if salt.is_empty() { "-" } else { salt };
    let out = ok(&[
        "format",
        &format!("--data-block-size={dbs}"),
        &format!("--hash-block-size={hbs}"),
        &format!("--salt={salt_arg}"),
        &format!("--uuid={UUID_STR}"),
        s(&data),
        s(&theirs),
    ]);
    assert_eq!(
        root_hash_line(&out),
        tree.root_hex(),
        "{len} bytes, {dbs}/{hbs}"
    );
    let mut ours = Vec::new();
    tree.write(&mut ours, Layout::Superblock { uuid: UUID })
        .unwrap();
    let reference = std::fs::read(&theirs).unwrap();
    assert_eq!(ours.len(), reference.len(), "{len} bytes, {dbs}/{hbs}");
    assert!(
        ours == reference,
        "{len} bytes, {dbs}/{hbs}: hash devices differ"
    );

    // Our device, checked by veritysetup.
    let ours_path = dir.join("ours");
    std::fs::write(&ours_path, &ours).unwrap();
    ok(&["verify", s(&data), s(&ours_path), &tree.root_hex()]);

    // Without a superblock (a new file: veritysetup writes into an
    // existing one without truncating it).
    let theirs = dir.join(format!("theirs-bare-{len}-{dbs}-{hbs}"));
    let out = ok(&[
        "format",
        "--no-superblock",
        &format!("--data-block-size={dbs}"),
        &format!("--hash-block-size={hbs}"),
        &format!("--salt={salt_arg}"),
        s(&data),
        s(&theirs),
    ]);
    assert_eq!(root_hash_line(&out), tree.root_hex());
    let mut bare = Vec::new();
    tree.write(&mut bare, Layout::NoSuperblock).unwrap();
    assert!(
        bare == std::fs::read(&theirs).unwrap(),
        "{len} bytes, {dbs}/{hbs}: hash devices without superblock differ"
    );
    tree
}

#[test]
fn one_block() {
    let dir = tempfile::tempdir().unwrap();
    let t = agree(dir.path(), 4096, 4096, 4096, &"5a".repeat(32), 1);
    assert_eq!(t.levels(), 0);
}

#[test]
fn two_levels_default_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let t = agree(dir.path(), 300 * 4096, 4096, 4096, &"c3".repeat(32), 2);
    assert_eq!(t.levels(), 2);
}

#[test]
fn three_and_four_levels_with_small_hash_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // 512-byte hash blocks hold 16 digests: 257 blocks need 3 levels,
    // 4097 need 4.
    let t = agree(dir.path(), 257 * 512, 512, 512, "0011", 3);
    assert_eq!(t.levels(), 3);
    let t = agree(dir.path(), 4097 * 512, 512, 512, "", 4);
    assert_eq!(t.levels(), 4);
    // Data and hash block sizes differ.
    let t = agree(dir.path(), 100 * 4096, 4096, 512, &"ee".repeat(256), 5);
    assert_eq!(t.levels(), 2);
}

#[test]
fn three_levels_default_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // 128 digests a hash block: more than 128^2 data blocks (64 MiB).
    let t = agree(
        dir.path(),
        (128 * 128 + 1) * 4096,
        4096,
        4096,
        &"01".repeat(32),
        6,
    );
    assert_eq!(t.levels(), 3);
}

#[test]
fn veritysetup_refuses_our_tree_for_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut bytes = random_file(&data, 40 * 4096, 7);
    let tree = verity::build(&bytes[..], Params::with_hex_salt(4096, 4096, "ab").unwrap()).unwrap();
    let hash = dir.path().join("hash");
    let mut dev = Vec::new();
    tree.write(&mut dev, Layout::Superblock { uuid: UUID })
        .unwrap();
    std::fs::write(&hash, &dev).unwrap();
    ok(&["verify", s(&data), s(&hash), &tree.root_hex()]);
    bytes[17 * 4096 + 100] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let out = veritysetup(&["verify", s(&data), s(&hash), &tree.root_hex()]);
    assert!(!out.status.success(), "a flipped data byte verified");
}

/// `veritysetup format` hashes only the whole blocks of data whose length
/// is not a multiple of the block size, and leaves the tail unprotected;
/// this crate refuses such data instead (`phase publish` asks for a padded
/// image).
#[test]
fn veritysetup_drops_a_partial_tail_which_we_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bytes = random_file(&data, 3 * 4096 + 1000, 8);
    let params = Params::with_hex_salt(4096, 4096, "77").unwrap();
    let err = verity::build(&bytes[..], params.clone()).unwrap_err();
    assert!(matches!(
        err,
        verity::Error::PartialBlock {
            len: 13288,
            block: 4096
        }
    ));
    let out = ok(&["format", "--salt=77", s(&data), s(&dir.path().join("hash"))]);
    assert!(out.contains("Data blocks:     \t3"), "{out}");
    let whole = verity::build(&bytes[..3 * 4096], params).unwrap();
    assert_eq!(root_hash_line(&out), whole.root_hex());
}
