//! The `phase` CLI end to end in network namespaces: a release published by
//! `phase publish` is served by `phase serve --mdns --dht` in one namespace;
//! `phase discover` lists it by mDNS and by DHT lookup of an artifact's
//! digest; `phase fetch --discover mdns` and `--discover dht` fetch and
//! verify the release from it without any --peer.
use super::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::*;

fn phase_bin() -> PathBuf {
    let bin = std::env::var_os("PHASE_BIN")
        .map(PathBuf::from)
        .expect("PHASE_BIN is not set: build the phase CLI (make host) and point PHASE_BIN at it");
    assert!(bin.is_file(), "PHASE_BIN={} does not exist", bin.display());
    bin
}

fn phase_in(ns: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "timeout", "60"])
                .arg(phase_bin());
            c
        }
        None => Command::new(phase_bin()),
    };
    let out = cmd.args(args).output().expect("run phase");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(ns: Option<&str>, args: &[&str]) -> String {
    let (good, out, err) = phase_in(ns, args);
    assert!(good, "phase {args:?} failed: {err}");
    out
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

fn data(path: &Path, len: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32 ^ seed;
    let d: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, &d).unwrap();
    d
}

#[test]
fn serve_mdns_dht_then_discover_and_fetch_without_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    ok(None, &["keygen", "--out", &s(t.join("keys"))]);
    data(&t.join("kernel"), 2 << 20, 1);
    data(&t.join("initramfs"), 1 << 20, 2);
    let rootfs = data(&t.join("rootfs"), 5 << 20, 3);
    ok(
        None,
        &[
            "publish",
            "--repo",
            &s(t.join("repo")),
            "--keys",
            &s(t.join("keys")),
            "--kernel",
            &s(t.join("kernel")),
            "--initramfs",
            &s(t.join("initramfs")),
            "--rootfs",
            &s(t.join("rootfs")),
            "--cmdline",
            "console=ttyS0",
        ],
    );
    // The rootfs's dm-verity hash tree is published as a fourth target,
    // stable/x86_64/rootfs.verity: a copy beside the other files, for the
    // comparisons below.
    let tree = std::fs::read_dir(t.join("repo/targets/stable/x86_64"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rootfs.verity"))
        .expect("published rootfs.verity");
    std::fs::copy(tree, t.join("rootfs.verity")).unwrap();
    let root = s(t.join("keys/1.root.json"));
    let lan = lan(4, true);

    // The seed: serve the repository, announce by mDNS and in the DHT.
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lan.nodes[0], "timeout", "120"])
        .arg(phase_bin())
        .args([
            "serve",
            "--listen",
            "0.0.0.0:7070",
            "--cache",
            &s(t.join("seed-cache")),
            "--repo",
            &s(t.join("repo")),
        ])
        .args([
            "--mdns",
            "--dht",
            "--dht-listen",
            &format!("/ip4/{}/tcp/4001", lan.ipv4(0)),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn phase serve");
    let stdout = child.stdout.take().unwrap();
    let _server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    let mut bootstrap = None;
    for line in lines.by_ref().take(10) {
        let line = line.expect("serve output");
        if let Some(rest) = line.strip_prefix("phase serve: DHT /") {
            bootstrap = Some(format!("/{rest}"));
        }
        let done = line.starts_with("phase serve: listening on");
        banner.push(line);
        if done {
            break;
        }
    }
    assert!(
        banner
            .iter()
            .any(|l| l.starts_with("phase serve: listening on http://0.0.0.0:7070")),
        "{banner:?}"
    );
    assert!(
        banner
            .iter()
            .any(|l| l.starts_with("phase serve: mDNS phase-12D3KooW")),
        "{banner:?}"
    );
    let bootstrap = bootstrap.unwrap_or_else(|| panic!("no DHT address in {banner:?}"));
    let seed_id = bootstrap.rsplit('/').next().unwrap().to_string();
    let seed_url = format!("http://{}:7070", lan.ipv4(0));

    // phase discover by mDNS, filtered by the root metadata.
    let start = Instant::now();
    let out = ok(
        Some(&lan.nodes[1]),
        &[
            "discover",
            "--mdns",
            "--json",
            "--root",
            &root,
            "--timeout",
            "5",
            "--count",
            "1",
        ],
    );
    eprintln!("phase discover --mdns: {:?} wall; {out}", start.elapsed());
    let v: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a peer line")).unwrap();
    assert_eq!(v["how"], "mdns");
    assert_eq!(v["id"], seed_id.as_str());
    assert_eq!(v["urls"][0], seed_url.as_str());
    assert_eq!(v["channel"], "stable");
    assert!(
        v["ts"].as_u64().unwrap() >= 1,
        "ts from the repository's timestamp: {v}"
    );
    // Another root: nothing.
    let out = ok(
        Some(&lan.nodes[1]),
        &[
            "discover",
            "--mdns",
            "--json",
            "--root-key",
            "ffffffffffffffff",
            "--timeout",
            "2",
        ],
    );
    assert!(out.trim().is_empty(), "other root listed: {out}");

    // phase discover by DHT: providers of the rootfs digest.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&rootfs))
    };
    let out = ok(
        Some(&lan.nodes[2]),
        &[
            "discover",
            "--dht",
            "--bootstrap",
            &bootstrap,
            "--digest",
            &digest,
            "--json",
            "--timeout",
            "5",
        ],
    );
    eprintln!("phase discover --dht: {out}");
    let v: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a provider line")).unwrap();
    assert_eq!(v["how"], "dht");
    assert_eq!(v["id"], seed_id.as_str());
    assert_eq!(v["urls"][0], seed_url.as_str());

    // phase fetch with peers from discovery only.
    for (i, mode) in [(1, "mdns"), (2, "dht"), (3, "both")] {
        let cache = s(t.join(format!("cache-{mode}")));
        let mut args = vec![
            "fetch",
            "--root",
            &root,
            "--cache",
            &cache,
            "--discover",
            mode,
            "--json",
            "--quiet",
        ];
        if mode != "mdns" {
            args.extend(["--bootstrap", &bootstrap]);
        }
        let start = Instant::now();
        let (good, out, err) = phase_in(Some(&lan.nodes[i]), &args);
        assert!(good, "phase fetch --discover {mode} failed: {err}");
        eprintln!(
            "phase fetch --discover {mode}: {:?}; {}",
            start.elapsed(),
            err.trim()
        );
        assert!(
            err.contains(&format!("discovered {mode}")) || mode == "both",
            "{err}"
        );
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let items = report.as_array().unwrap();
        assert_eq!(items.len(), 4, "{out}");
        for it in items {
            let name = it["name"].as_str().unwrap();
            let kind = name.rsplit('/').next().unwrap();
            let got = std::fs::read(it["path"].as_str().unwrap()).unwrap();
            assert!(
                got == std::fs::read(t.join(kind)).unwrap(),
                "{mode}: {name} differs"
            );
            assert_eq!(
                it["peers"][0]["peer"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches('/'),
                seed_url,
                "{mode}"
            );
        }
    }

    // phase serve --dht on an empty cache provides what a fetch into that
    // cache adds later (re-announced within REANNOUNCE_INTERVAL).
    let late_cache = s(t.join("late-cache"));
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lan.nodes[3], "timeout", "120"])
        .arg(phase_bin())
        .args(["serve", "--listen", "0.0.0.0:7071", "--cache", &late_cache])
        .args(["--dht", "--bootstrap", &bootstrap, "--dht-listen"])
        .arg(format!("/ip4/{}/tcp/4001", lan.ipv4(3)))
        .args(["--root-key", &"0".repeat(16)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn late phase serve");
    let stdout = child.stdout.take().unwrap();
    let _late = Server(child);
    let mut late_id = None;
    for line in BufReader::new(stdout).lines().take(10) {
        let line = line.expect("serve output");
        if let Some(rest) = line.strip_prefix("phase serve: DHT /") {
            late_id = rest.rsplit('/').next().map(str::to_string);
        }
        if line.starts_with("phase serve: listening on") {
            break;
        }
    }
    let late_id = late_id.expect("late server's DHT id");
    ok(
        Some(&lan.nodes[3]),
        &[
            "fetch",
            "--root",
            &root,
            "--cache",
            &late_cache,
            "--peer",
            &seed_url,
            "--quiet",
        ],
    );
    // Bounded: at most 8 lookups of at most 3 s, 1 s apart.
    let start = Instant::now();
    let mut seen = false;
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let out = ok(
            Some(&lan.nodes[2]),
            &[
                "discover",
                "--dht",
                "--bootstrap",
                &bootstrap,
                "--digest",
                &digest,
                "--json",
                "--timeout",
                "3",
            ],
        );
        if out.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["id"] == late_id.as_str())
        }) {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "the late server never provided the object it fetched ({:?})",
        start.elapsed()
    );
    eprintln!("re-announced object found after {:?}", start.elapsed());
}
