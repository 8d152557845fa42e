//! `plasmd daemon` as a process: it runs the start-up job from its config,
//! answers `plasmd submit`, `status` and `logs` over its Unix socket (0600
//! in a 0700 directory), resolves every job through TUF (a signed job runs;
//! altered bytes and a job not in the signed targets are refused), fetches
//! a job that is not in its cache from a peer, and keeps running after jobs
//! that fail in every way and after bad requests.

use super::common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plasmd::{RunInfo, RunState};

const PLASMD: &str = env!("CARGO_BIN_EXE_plasmd");

/// A daemon process, killed and reaped when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    console: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(fx: &Fixture, config: &str, extra: &[&str]) -> Daemon {
        let socket = fx.dir.path().join("run/plasmd/plasmd.sock");
        let conf = fx.dir.path().join("plasmd.toml");
        std::fs::write(&conf, config).expect("config");
        // Provenance for the demo job; a test may have written its own.
        let boot = fx.dir.path().join("boot.json");
        if !boot.exists() {
            std::fs::write(&boot, boot_json(&[])).expect("boot.json");
        }
        let console = fx.dir.path().join("console.log");
        let out = std::fs::File::create(&console).expect("console file");
        let child = Command::new(PLASMD)
            .arg("daemon")
            .arg("--config")
            .arg(&conf)
            .arg("--state")
            .arg(&fx.state)
            .arg("--socket")
            .arg(&socket)
            .arg("--hostname")
            .arg("node-7")
            .arg("--boot-json")
            .arg(&boot)
            .args(extra)
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start plasmd daemon");
        let mut d = Daemon {
            child,
            socket,
            console,
        };
        let t0 = Instant::now();
        while !d.socket.exists() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("plasmd daemon exited ({st}): {}", d.console());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no socket after 30 s: {}",
                d.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `plasmd ARGS --socket S`, bounded to 60 s: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut child = Command::new(PLASMD)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start plasmd client");
        let t0 = Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("plasmd {args:?} did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn status(&self) -> Vec<RunInfo> {
        let (code, out, err) = self.cli(&["status", "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).expect("status --json is a list of runs")
    }

    /// Wait (bounded) until run `id` has left the resolving/queued/running
    /// states.
    fn wait_done(&self, id: &str) -> RunInfo {
        let t0 = Instant::now();
        loop {
            if let Some(r) = self.status().into_iter().find(|r| r.id == id) {
                if !matches!(
                    r.state,
                    RunState::Resolving | RunState::Queued | RunState::Running
                ) {
                    return r;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "run {id} not done after 60 s: {}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send raw bytes on the socket, return the answer line.
    fn raw(&self, bytes: &[u8]) -> serde_json::Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(bytes).expect("send");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("answer");
        serde_json::from_str(&line).expect("answer is one JSON line")
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn daemon_runs_startup_job_and_answers_submit_status_logs() {
    let fx = Fixture::new();
    let hello = hello_wasm();
    fx.publish("hello", &hello, serde_json::json!({}));
    let cache = fx.node_cache(&[&hello]);
    let boot = fx.dir.path().join("boot.json");
    let provenance = r#"{"version":1,"mode":"local","peers":[]}"#;
    std::fs::write(&boot, provenance).expect("boot.json");
    let config = format!(
        "cache = {:?}\njobs = [\"hello\"]\n",
        cache.display().to_string()
    );
    let d = Daemon::start(&fx, &config, &[]);
    assert_eq!(mode(&d.socket), 0o600, "socket mode");
    assert_eq!(
        mode(d.socket.parent().expect("dir")),
        0o700,
        "socket dir mode"
    );

    // The start-up job ran from the cache, verified against the signed target.
    let first = d.wait_done("hello-1");
    assert_eq!(first.state, RunState::Done, "{first:?}");
    let o = first.outcome.as_ref().expect("outcome");
    assert!(o.status.success(), "{o:?}");
    assert!(o.usage.fuel > 0 && o.usage.peak_memory_bytes > 0, "{o:?}");
    assert_eq!(
        first.sha256.as_deref(),
        Some(verifier::digest::sha256_hex(&hello).as_str())
    );
    assert!(
        first.source.as_deref().unwrap_or("").starts_with("cache"),
        "{first:?}"
    );
    let expected = format!(
        "Hello from Phase WASM on node-7\nBoot provenance (/phase/boot.json):\n{provenance}\n"
    );
    // Logs by run id and by job name.
    let (code, log, err) = d.cli(&["logs", "hello-1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(log, expected);
    // Console: the job's lines, prefixed by its run id.
    assert!(
        d.console()
            .contains("[hello-1] Hello from Phase WASM on node-7"),
        "{}",
        d.console()
    );

    // Submit again and wait: a second run with its own id and log.
    let (code, out, err) = d.cli(&["submit", "--wait", "hello"]);
    assert_eq!(code, 0, "submit --wait: {out} {err}");
    assert!(
        out.contains("hello-2") && out.contains("exited with code 0"),
        "{out}"
    );
    let (code, log, _) = d.cli(&["logs", "hello"]);
    assert_eq!(code, 0);
    assert_eq!(log, expected, "latest run of job hello");

    // Submit without waiting: answered at once, then done.
    let (code, out, err) = d.cli(&["submit", "hello"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("submitted hello-3"), "{out}");
    assert_eq!(d.wait_done("hello-3").state, RunState::Done);

    // Human status: one line per run with status and resource use.
    let (code, out, _) = d.cli(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .all(|l| l.contains("exited with code 0") && l.contains("fuel")),
        "{out}"
    );

    // Unknown run: a clear one-line error, exit 1.
    let (code, _, err) = d.cli(&["logs", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "plasmd: no run or job named \"nope\"");

    // SIGTERM: the daemon stops cleanly and removes its socket.
    let mut d = d;
    let pid = d.child.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = d.child.try_wait().expect("wait") {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0), "{}", d.console());
    assert!(!d.socket.exists(), "socket left behind");
    assert!(d.console().contains("plasmd: stopped"), "{}", d.console());
}

#[test]
fn failing_jobs_and_bad_requests_leave_the_daemon_running() {
    let fx = Fixture::new();
    let hello = hello_wasm();
    let spin = wat(r#"(module (func (export "_start") (loop $l (br $l))))"#);
    let trap = wat(r#"(module (func (export "_start") unreachable))"#);
    let grow =
        wat(r#"(module (memory 1) (func (export "_start") (drop (memory.grow (i32.const 100)))))"#);
    let bad = b"\0asm\x01\x00\x00\x00\xff garbage".to_vec();
    fx.publish("hello", &hello, serde_json::json!({}));
    fx.publish(
        "spin",
        &spin,
        serde_json::json!({"limits": {"fuel": 20_000_000}}),
    );
    fx.publish("trap", &trap, serde_json::json!({}));
    fx.publish(
        "grow",
        &grow,
        serde_json::json!({"limits": {"memory_bytes": 1 << 20}}),
    );
    fx.publish("bad", &bad, serde_json::json!({}));
    let cache = fx.node_cache(&[&hello, &spin, &trap, &grow, &bad]);
    let mut d = Daemon::start(
        &fx,
        &format!("cache = {:?}\n", cache.display().to_string()),
        &[],
    );

    for (job, want) in [
        ("spin", "CPU limit"),
        ("trap", "trapped"),
        ("grow", "memory limit"),
        ("bad", "did not start"),
    ] {
        let (code, out, err) = d.cli(&["submit", "--wait", job]);
        assert_eq!(code, 1, "{job}: a failed job exits 1: {out} {err}");
        assert!(out.contains(want), "{job}: {out}");
        assert!(d.alive(), "daemon died after {job}: {}", d.console());
    }

    // Bad requests: one JSON line with ok=false and the reason.
    for (req, want) in [
        (&b"not json\n"[..], "bad request"),
        (b"{\"op\":\"reboot\"}\n", "reboot"),
        (
            b"{\"op\":\"submit\",\"job\":\"../etc/x\"}\n",
            "not a job name",
        ),
    ] {
        let v = d.raw(req);
        assert_eq!(v["ok"], false, "{v}");
        let e = v["error"].as_str().expect("error text");
        assert!(e.contains(want) && !e.contains('\n'), "{e}");
    }
    // A client that connects and says nothing does not block others.
    let _idle = std::os::unix::net::UnixStream::connect(&d.socket).expect("idle client");

    let (code, out, err) = d.cli(&["submit", "--wait", "hello"]);
    assert_eq!(code, 0, "hello after failures: {out} {err}");
    assert!(d.alive());
    let runs = d.status();
    assert_eq!(runs.len(), 5, "{runs:?}");
    let status_of = |job: &str| {
        let r = runs.iter().find(|r| r.job == job).expect("run listed");
        serde_json::to_value(&r.outcome.as_ref().expect("outcome").status).expect("json")["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(status_of("spin"), "cpu_limit");
    assert_eq!(status_of("trap"), "trapped");
    assert_eq!(status_of("grow"), "memory_limit");
    assert_eq!(status_of("bad"), "failed");
    assert_eq!(status_of("hello"), "exited");

    // A second daemon on the same socket is refused with one line.
    let out = Command::new(PLASMD)
        .args(["daemon", "--state"])
        .arg(fx.dir.path().join("state2"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--cache")
        .arg(&cache)
        .output()
        .expect("second daemon");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    assert!(d.alive());
}

#[test]
fn jobs_resolve_only_through_signed_metadata() {
    let fx = Fixture::new();
    let hello = hello_wasm();
    let other = wat(r#"(module (func (export "_start")))"#);
    fx.publish("hello", &hello, serde_json::json!({}));
    fx.publish("other", &other, serde_json::json!({}));
    let cache = fx.node_cache(&[&hello, &other]);
    // Alter the cached bytes of `other` (same length, one bit).
    let hex = verifier::digest::sha256_hex(&other);
    let obj = cache.join("cas/sha256").join(&hex[..2]).join(&hex);
    let mut b = std::fs::read(&obj).expect("object");
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&obj, &b).expect("tamper");
    // An unsigned module placed in the cache under its own digest.
    let unsigned = wat(r#"(module (func (export "_start") (nop)))"#);
    let uhex = verifier::digest::sha256_hex(&unsigned);
    let ud = cache.join("cas/sha256").join(&uhex[..2]);
    std::fs::create_dir_all(&ud).expect("dir");
    std::fs::write(ud.join(&uhex), &unsigned).expect("unsigned object");

    let mut d = Daemon::start(
        &fx,
        &format!("cache = {:?}\n", cache.display().to_string()),
        &[],
    );
    let (code, _, err) = d.cli(&["submit", "--wait", "other"]);
    assert_eq!(code, 1);
    assert!(err.contains("do not match the signed target"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = d.cli(&["submit", "unsigned"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not resolved through trusted metadata"),
        "{err}"
    );
    let (code, out, err) = d.cli(&["submit", "--wait", "hello"]);
    assert_eq!(code, 0, "the signed job still runs: {out} {err}");
    assert!(d.alive());

    let runs = d.status();
    let refused: Vec<_> = runs
        .iter()
        .filter(|r| r.state == RunState::Refused)
        .collect();
    assert_eq!(refused.len(), 2, "{runs:?}");
    assert!(refused
        .iter()
        .all(|r| r.outcome.is_none() && r.error.is_some()));
    // Nothing of the refused jobs ran: no log was written for them.
    for r in refused {
        assert!(!fx.state.join("runs").join(&r.id).join("log").exists());
    }
}

#[test]
fn job_missing_from_the_cache_is_fetched_from_a_peer_and_verified() {
    let fx = Fixture::new();
    let hello = hello_wasm();
    fx.publish("hello", &hello, serde_json::json!({}));
    // The node cache has the metadata but not the job's bytes.
    let cache = fx.node_cache(&[]);
    let rt = rt();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind peer");
    let addr = listener.local_addr().expect("addr");
    let mut cfg = fetcher::ServerConfig::new(fx.dir.path().join("peer-cache"));
    cfg.repo = Some(fx.repo.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(fetcher::serve(listener, cfg, async {
        let _ = stopped.await;
    }));

    let peer = format!("http://{addr}");
    let d = Daemon::start(
        &fx,
        &format!("cache = {:?}\n", cache.display().to_string()),
        &["--peer", &peer],
    );
    let (code, out, err) = d.cli(&["submit", "--wait", "--json", "hello"]);
    assert_eq!(code, 0, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json answer");
    assert_eq!(v["ok"], true, "{v}");
    let source = v["run"]["source"].as_str().unwrap_or("");
    assert!(source.contains(&peer), "fetched from the peer: {v}");
    assert_eq!(v["run"]["outcome"]["status"]["status"], "exited", "{v}");
    let (_, log, _) = d.cli(&["logs", "hello"]);
    assert!(
        log.starts_with("Hello from Phase WASM on node-7\n"),
        "{log}"
    );
    // The fetched bytes are in plasmd's store under their digest.
    let hex = verifier::digest::sha256_hex(&hello);
    let stored = fx.state.join("cas/sha256").join(&hex[..2]).join(&hex);
    assert_eq!(std::fs::read(&stored).expect("stored job"), hello);

    // A second submit needs no download.
    let (code, out, _) = d.cli(&["submit", "--json", "hello"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"source\": \"store\""), "{out}");

    let _ = stop.send(());
    let _ = rt.block_on(server);
}

#[test]
fn unreachable_peers_fall_back_to_the_metadata_verified_at_boot() {
    let fx = Fixture::new();
    let hello = hello_wasm();
    fx.publish("hello", &hello, serde_json::json!({}));
    let cache = fx.node_cache(&[&hello]);
    // boot.json names the peers stage 1 used; in the target an mDNS peer
    // name does not resolve and a link-local address may be gone.
    let boot = fx.dir.path().join("boot.json");
    std::fs::write(
        &boot,
        boot_json(&[
            "http://0123456789abcdef.mdns.phase:7070",
            "http://127.0.0.1:9",
        ]),
    )
    .expect("boot.json");
    let d = Daemon::start(
        &fx,
        &format!("cache = {:?}\n", cache.display().to_string()),
        &[],
    );
    let (code, out, err) = d.cli(&["submit", "--wait", "--json", "hello"]);
    assert_eq!(code, 0, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json answer");
    assert_eq!(v["run"]["outcome"]["status"]["status"], "exited", "{v}");
    assert!(
        d.console()
            .contains("no peer answered the TUF refresh; using the metadata verified at boot"),
        "the fallback is logged: {}",
        d.console()
    );
}
