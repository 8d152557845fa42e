//! The TUF conformance client protocol (`phase tuf-client`) against a
//! repository served over HTTP on 127.0.0.1.
use super::trust_support;

use trust_support::*;

#[test]
fn init_refresh_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let server = Server::start(&repo);
    let md = tmp.path().join("md");
    let td = tmp.path().join("td");
    let murl = server.url("metadata");
    let turl = server.url("targets/");
    ok(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "init",
        s(&keys.join("1.root.json")),
    ]);
    assert_eq!(
        std::fs::read(md.join("root.json")).unwrap(),
        std::fs::read(keys.join("1.root.json")).unwrap()
    );
    assert!(
        server.requests().is_empty(),
        "init must not use the network"
    );
    ok(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "--metadata-url",
        &murl,
        "refresh",
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&md)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );

    let dl = |targets: &[&str]| {
        let mut a = vec![
            "tuf-client",
            "--metadata-dir",
            s(&md),
            "--metadata-url",
            &murl,
        ];
        for t in targets {
            a.extend(["--target-name", t]);
        }
        a.extend([
            "--target-base-url",
            &turl,
            "--target-dir",
            s(&td),
            "download",
        ]);
        a.iter().map(|x| x.to_string()).collect::<Vec<String>>()
    };
    let args = dl(&["stable/x86_64/initramfs", "jobs/hello.wasm"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&argv);
    assert_eq!(
        std::fs::read(td.join("stable%2Fx86_64%2Finitramfs")).unwrap(),
        b"initramfs bytes"
    );
    assert_eq!(
        std::fs::read(td.join("jobs%2Fhello.wasm")).unwrap(),
        b"\0asm wasm job"
    );
    // Already present with matching hashes: not downloaded again.
    let before = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("/targets/"))
        .count();
    ok(&argv);
    let after = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("/targets/"))
        .count();
    assert_eq!(before, after, "{:?}", server.requests());
    // Stop at the first failure, exit 1.
    let args = dl(&["no/such/target", "stable/x86_64/kernel"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&argv);
    assert!(err.contains("no/such/target"), "{err}");
    assert!(!td.join("stable%2Fx86_64%2Fkernel").exists());
}

#[test]
fn refresh_failures_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (keys, repo) = demo_repo(tmp.path());
    let server = Server::start(&repo);
    let md = tmp.path().join("md");
    ok(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "init",
        s(&keys.join("1.root.json")),
    ]);
    // Tampered timestamp.
    let ts = repo.join("metadata/timestamp.json");
    let good = std::fs::read(&ts).unwrap();
    let bad =
        String::from_utf8(good.clone())
            .unwrap()
            .replacen("\"version\": 1", "\"version\": 9", 1);
    std::fs::write(&ts, bad).unwrap();
    let err = fails(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "--metadata-url",
        &server.url("metadata"),
        "refresh",
    ]);
    assert!(
        err.contains("timestamp metadata v9 rejected: signature threshold not met"),
        "{err}"
    );
    assert!(!md.join("timestamp.json").exists());
    std::fs::write(&ts, good).unwrap();
    ok(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "--metadata-url",
        &server.url("metadata"),
        "refresh",
    ]);
    // Unreachable repository.
    let err = fails(&[
        "tuf-client",
        "--metadata-dir",
        s(&md),
        "--metadata-url",
        "http://127.0.0.1:9/metadata",
        "refresh",
    ]);
    assert!(err.contains("fetching"), "{err}");
    // Init with garbage.
    std::fs::write(tmp.path().join("bad.json"), b"[]").unwrap();
    fails(&[
        "tuf-client",
        "--metadata-dir",
        s(&tmp.path().join("md2")),
        "init",
        s(&tmp.path().join("bad.json")),
    ]);
}
