//! Shared by the trust CLI tests: run the real `phase` binary, and a tiny
//! std-only static HTTP server on 127.0.0.1 (a plain web server is a valid
//! TUF repository) that records every request path.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub fn phase() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phase"))
}

/// Run `phase args...`; returns the output (status not checked).
pub fn run(args: &[&str]) -> Output {
    phase()
        .args(args)
        .output()
        .expect("running the phase binary")
}

/// Run and require success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "phase {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Run and require failure with exit code 1; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "phase {args:?} should fail with 1: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The newest signed targets entry `name` of the repository `repo`
/// (timestamp -> snapshot -> targets, consistent snapshots).
pub fn targets_entry(repo: &Path, name: &str) -> serde_json::Value {
    let ts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata/timestamp.json")).unwrap())
            .unwrap();
    let sv = ts["signed"]["meta"]["snapshot.json"]["version"]
        .as_u64()
        .unwrap();
    let snap: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join(format!("metadata/{sv}.snapshot.json"))).unwrap(),
    )
    .unwrap();
    let tv = snap["signed"]["meta"]["targets.json"]["version"]
        .as_u64()
        .unwrap();
    let t: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join(format!("metadata/{tv}.targets.json"))).unwrap(),
    )
    .unwrap();
    t["signed"]["targets"][name].clone()
}

/// keygen + publish of small artifacts into `dir/keys`, `dir/repo`.
pub fn demo_repo(dir: &Path) -> (PathBuf, PathBuf) {
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    ok(&["keygen", "--out", s(&keys)]);
    std::fs::write(dir.join("vmlinuz"), vec![7u8; 5 * 1024 * 1024 + 3]).unwrap();
    std::fs::write(dir.join("initrd"), b"initramfs bytes").unwrap();
    std::fs::write(dir.join("hello.wasm"), b"\0asm wasm job").unwrap();
    ok(&[
        "publish",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
        "--channel",
        "stable",
        "--arch",
        "x86_64",
        "--kernel",
        s(&dir.join("vmlinuz")),
        "--initramfs",
        s(&dir.join("initrd")),
        "--job",
        s(&dir.join("hello.wasm")),
        "--cmdline",
        "console=ttyS0 quiet",
        "--release-version",
        "2030.1",
    ]);
    (keys, repo)
}

pub struct Server {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `root` on 127.0.0.1 (ephemeral port).
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (root, st, rq) = (root.to_path_buf(), stop.clone(), requests.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = handle(c, &root, &rq);
                }
            }
        });
        Server {
            port,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(mut c: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let rel = percent_decode(path.trim_start_matches('/'));
    let safe = !rel.split('/').any(|p| p == ".." || p.is_empty());
    let file = root.join(&rel);
    match std::fs::File::open(&file) {
        Ok(mut f) if safe && file.is_file() => {
            let mut body = Vec::new();
            f.read_to_end(&mut body)?;
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            c.write_all(&body)?;
        }
        _ => {
            write!(
                c,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
    }
    c.flush()
}
