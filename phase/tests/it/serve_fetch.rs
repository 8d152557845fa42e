//! `phase serve` + `phase fetch` + `phase cache gc` with the real binary:
//! publish a release, serve the repository, fetch it into a cache, re-share
//! that cache from a second server, fetch from both, and fail clearly.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const PHASE: &str = env!("CARGO_BIN_EXE_phase");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(PHASE).args(args).output().expect("run phase");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = run(args);
    assert!(good, "phase {args:?} failed: {err}");
    out
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(cache: &Path, repo: Option<&Path>) -> Server {
    let mut cmd = Command::new(PHASE);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--cache"])
        .arg(cache);
    if let Some(r) = repo {
        cmd.arg("--repo").arg(r);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn phase serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("serve banner");
    let url = line.trim().rsplit(' ').next().unwrap_or("").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "banner: {line:?}");
    Server { child, url }
}

fn random_file(path: &Path, len: usize, seed: u8) {
    let mut x = 0x1234_5678_u32 ^ u32::from(seed);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, data).unwrap();
}

#[test]
fn publish_serve_fetch_reshare_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&["keygen", "--out", &s(&t.join("keys"))]);
    random_file(&t.join("kernel"), 9 << 20, 1);
    random_file(&t.join("initramfs"), 3 << 20, 2);
    random_file(&t.join("rootfs"), 17 << 20, 3);
    ok(&[
        "publish",
        "--repo",
        &s(&t.join("repo")),
        "--keys",
        &s(&t.join("keys")),
        "--kernel",
        &s(&t.join("kernel")),
        "--initramfs",
        &s(&t.join("initramfs")),
        "--rootfs",
        &s(&t.join("rootfs")),
        "--cmdline",
        "console=ttyS0",
    ]);
    // The rootfs's dm-verity hash tree is published as a fourth target,
    // stable/x86_64/rootfs.verity: a copy beside the other files, for the
    // comparisons below.
    let tree = std::fs::read_dir(t.join("repo/targets/stable/x86_64"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rootfs.verity"))
        .expect("published rootfs.verity");
    std::fs::copy(tree, t.join("rootfs.verity")).unwrap();
    let root = s(&t.join("keys/1.root.json"));
    let origin = serve(&t.join("srv-cache"), Some(&t.join("repo")));

    let out = ok(&[
        "fetch",
        "--root",
        &root,
        "--peer",
        &origin.url,
        "--cache",
        &s(&t.join("c1")),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = report.as_array().unwrap();
    assert_eq!(items.len(), 4, "{out}");
    for it in items {
        let name = it["name"].as_str().unwrap();
        let kind = name.rsplit('/').next().unwrap();
        let path = it["path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(t.join(kind)).unwrap(),
            "{name}"
        );
        assert_eq!(it["peers"][0]["bytes"], it["bytes"]);
    }

    // The fetched cache is itself a peer (metadata + objects), used with the origin.
    let node = serve(&t.join("c1"), None);
    let out = ok(&[
        "fetch",
        "--root",
        &root,
        "--peer",
        &node.url,
        "--peer",
        &origin.url,
        "--cache",
        &s(&t.join("c2")),
    ]);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("stable/x86_64/rootfs  sha256:"), "{out}");
    // A node-only fetch (origin not asked) works as well.
    let out = ok(&[
        "fetch",
        "--root",
        &root,
        "--peer",
        &node.url,
        "--cache",
        &s(&t.join("c3")),
        "--target",
        "stable/x86_64/kernel",
    ]);
    assert!(out.contains(&node.url), "{out}");

    // Failures name what failed.
    let (good, _, err) = run(&[
        "fetch",
        "--root",
        &root,
        "--peer",
        &node.url,
        "--cache",
        &s(&t.join("c4")),
        "--target",
        "stable/x86_64/nope",
    ]);
    assert!(!good && err.contains("stable/x86_64/nope"), "{err}");
    let empty = serve(&t.join("empty"), None);
    let (good, _, err) = run(&[
        "fetch",
        "--root",
        &root,
        "--peer",
        &empty.url,
        "--cache",
        &s(&t.join("c5")),
    ]);
    assert!(!good && err.contains("TUF refresh failed"), "{err}");
    let (good, _, err) = run(&[
        "fetch",
        "--root",
        &root,
        "--peer",
        "ftp://x",
        "--cache",
        &s(&t.join("c6")),
    ]);
    assert!(!good && err.contains("not http://"), "{err}");

    // A static mirror alone (no --peer) is a valid source ...
    let mirror = format!("{}/tuf/", origin.url.trim_end_matches('/'));
    let out = ok(&[
        "fetch",
        "--root",
        &root,
        "--mirror",
        &mirror,
        "--cache",
        &s(&t.join("c7")),
        "--target",
        "stable/x86_64/initramfs",
    ]);
    assert!(out.contains(&mirror), "{out}");
    // ... and no source at all is one line naming the three options.
    let (good, _, err) = run(&["fetch", "--root", &root, "--cache", &s(&t.join("c8"))]);
    assert!(
        !good && err.contains("--peer, --mirror or --discover"),
        "{err}"
    );

    let out = ok(&[
        "cache",
        "gc",
        "--cache",
        &s(&t.join("c1")),
        "--keep-versions",
        "1",
    ]);
    assert!(out.contains("kept 4 objects"), "{out}");
}

/// `phase cache gc` keeps the objects of the last release that booted from
/// the cache (`last-boot.json`, the boot's fallback), and a record it
/// cannot read stops it before anything is removed.
#[test]
fn gc_keeps_the_last_release_that_booted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let cas = fetcher::Cas::open(&cache).expect("cache");
    let [kernel, initramfs, rootfs, other] =
        [b"kernel", b"initrd", b"rootfs", b"stale!"].map(|b| cas.insert_bytes(b).expect("insert"));
    let art = |kind: &str, d: &fetcher::Sha256Digest| handover::ArtifactRecord {
        kind: kind.into(),
        target: format!("stable/x86_64/{kind}"),
        sha256: d.to_hex(),
        length: 6,
        hashed: true,
    };
    let record = handover::LastBoot {
        format: handover::LAST_BOOT_FORMAT,
        channel: "stable".into(),
        tuf: Default::default(),
        artifacts: vec![
            art("kernel", &kernel),
            art("initramfs", &initramfs),
            art("rootfs", &rootfs),
        ],
        cmdline: "console=ttyS0".into(),
        snapshot: "{}".into(),
        targets: "{}".into(),
    };
    let path = cache.join(handover::LAST_BOOT);
    let c = cache.to_str().expect("utf-8 path").to_owned();
    let gc = || run(&["cache", "gc", "--cache", &c]);

    std::fs::write(&path, "{\"format\": 1").expect("write");
    let (good, _, err) = gc();
    assert!(!good, "a truncated record was ignored");
    assert!(
        err.contains("last-boot.json is not a record of a release; nothing collected"),
        "{err}"
    );
    assert!(
        cas.contains(&other),
        "an object was removed after the error"
    );

    std::fs::write(&path, serde_json::to_vec(&record).expect("json")).expect("write");
    let (good, out, err) = gc();
    assert!(good, "phase cache gc failed: {err}");
    assert!(out.contains("3 by last-boot.json"), "{out}");
    for d in [kernel, initramfs, rootfs] {
        assert!(
            cas.contains(&d),
            "gc removed {d}, an object of the last boot"
        );
    }
    assert!(!cas.contains(&other), "gc kept an object nobody references");
}
