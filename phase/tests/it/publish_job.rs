//! `phase publish --job` with the job options: args, env and limits land in
//! the signed custom metadata of `jobs/<name>.wasm` (the format plasmd
//! reads), and bad job options are refused with one line naming them.
use super::trust_support;

use trust_support::*;

#[test]
fn job_options_are_signed_custom_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let job = tmp.path().join("count.wasm");
    std::fs::write(&job, b"\0asm\x01\0\0\0").unwrap();
    let base = ["publish", "--repo", s(&repo), "--keys", s(&keys)];
    let with = |more: &[&str]| -> Vec<String> {
        base.iter()
            .chain(more)
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
    };
    let args = with(&[
        "--job",
        s(&job),
        "--job-arg",
        "--verbose",
        "--job-arg",
        "3",
        "--job-env",
        "GREETING=hi there",
        "--job-env",
        "MODE=a=b",
        "--job-memory-mib",
        "16",
        "--job-fuel",
        "100000000",
        "--job-deadline-s",
        "30",
    ]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let e = targets_entry(&repo, "jobs/count.wasm");
    let c = &e["custom"];
    assert_eq!(c["kind"], "job", "{e}");
    assert_eq!(c["args"], serde_json::json!(["--verbose", "3"]));
    assert_eq!(
        c["env"],
        serde_json::json!({"GREETING": "hi there", "MODE": "a=b"})
    );
    assert_eq!(
        c["limits"],
        serde_json::json!({"memory_bytes": 16u64 << 20, "fuel": 100000000u64, "deadline_ms": 30000u64})
    );
    assert!(c["chunks"].is_object(), "{e}");

    // Without options: no args/env/limits keys at all (node defaults).
    let plain = tmp.path().join("plain.wasm");
    std::fs::write(&plain, b"\0asm\x01\0\0\0plain").unwrap();
    ok(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--job",
        s(&plain),
    ]);
    let c = targets_entry(&repo, "jobs/plain.wasm")["custom"].clone();
    assert!(
        c.get("args").is_none() && c.get("env").is_none() && c.get("limits").is_none(),
        "{c}"
    );
    // The earlier job kept its metadata.
    assert_eq!(
        targets_entry(&repo, "jobs/count.wasm")["custom"]["args"],
        serde_json::json!(["--verbose", "3"])
    );
}

#[test]
fn bad_job_options_are_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let repo = tmp.path().join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    let a = tmp.path().join("a.wasm");
    let b = tmp.path().join("b.wasm");
    let bad_name = tmp.path().join("job.bin");
    for f in [&a, &b, &bad_name] {
        std::fs::write(f, b"\0asm\x01\0\0\0").unwrap();
    }
    let base = ["publish", "--repo", s(&repo), "--keys", s(&keys)];
    for (more, want) in [
        (
            vec!["--job", s(&a), "--job", s(&b), "--job-arg", "x"],
            "give exactly one --job",
        ),
        (
            vec!["--job", s(&a), "--job-env", "NOEQUALS"],
            "must be KEY=VALUE",
        ),
        (
            vec!["--job", s(&a), "--job-env", "PHASE_HOSTNAME=x"],
            "PHASE_",
        ),
        (vec!["--job", s(&a), "--job-env", "1X=y"], "letters, digits"),
        (
            vec!["--job", s(&a), "--job-env", "K=1", "--job-env", "K=2"],
            "given twice",
        ),
        (vec!["--job", s(&a), "--job-fuel", "0"], "--job-fuel"),
        (
            vec!["--job", s(&a), "--job-memory-mib", "0"],
            "--job-memory-mib",
        ),
        (vec!["--job", s(&bad_name)], "must be NAME.wasm"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(more.iter().copied()).collect();
        let err = fails(&args);
        assert!(err.contains(want), "{more:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{more:?}: {err}");
    }
    // Nothing was published by the refused runs.
    assert!(!repo.join("metadata/timestamp.json").exists());
}
