//! `phase verify --repo http://…` and `phase tuf-client` against a metadata
//! server that accepts connections and then sends nothing (silent), or
//! sends its headers and then one byte a second (trickling). Each request
//! has an overall deadline (`request_deadline`: 30 s plus the size cap at
//! 64 KiB/s), so both commands give up with an error naming the file
//! instead of hanging until killed.
use super::trust_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use trust_support::*;

/// How a hostile server behaves once a request arrived.
#[derive(Clone, Copy)]
enum Hostile {
    Silent,
    Trickle,
}

/// A hostile HTTP server on 127.0.0.1; stops when dropped. Bounded: at most
/// 32 connections, each held at most 5 minutes.
struct HostileServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl HostileServer {
    fn start(how: Hostile) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::spawn(move || {
            let start = Instant::now();
            let mut served = 0;
            while !flag.load(Ordering::Relaxed)
                && served < 32
                && start.elapsed() < Duration::from_secs(300)
            {
                match listener.accept() {
                    Ok((conn, _)) => {
                        served += 1;
                        let flag = flag.clone();
                        thread::spawn(move || hold(conn, how, &flag));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HostileServer { port, stop }
    }

    /// The repository (`phase verify --repo`).
    fn repo(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its metadata (`phase tuf-client --metadata-url`).
    fn metadata(&self) -> String {
        format!("{}/metadata", self.repo())
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn hold(mut conn: TcpStream, how: Hostile, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4096];
    let _ = conn.read(&mut buf);
    if let Hostile::Trickle = how {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{");
    }
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(300) {
        thread::sleep(Duration::from_secs(1));
        if let Hostile::Trickle = how {
            if conn.write_all(b" ").is_err() {
                return;
            }
        }
    }
}

/// Runs `phase args`, returning its exit code, stderr and wall time.
fn timed(args: Vec<String>) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let out = phase().args(&args).output().expect("running phase");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

/// Far below "until killed", far above the deadline of one metadata file.
const BOUND: Duration = Duration::from_secs(150);

#[test]
fn verify_and_tuf_client_give_up_on_silent_and_trickling_servers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = tmp.path().join("keys");
    ok(&["keygen", "--out", s(&keys)]);
    let root = keys.join("1.root.json");
    let mut runs = Vec::new();
    let mut servers = Vec::new();
    for how in [Hostile::Silent, Hostile::Trickle] {
        let server = HostileServer::start(how);
        let md = tmp.path().join(format!("md-{}", server.port));
        ok(&["tuf-client", "--metadata-dir", s(&md), "init", s(&root)]);
        let verify = vec![
            "verify".to_owned(),
            "--repo".to_owned(),
            server.repo(),
            "--root".to_owned(),
            s(&root).to_owned(),
            "--no-download".to_owned(),
        ];
        let client = vec![
            "tuf-client".to_owned(),
            "--metadata-dir".to_owned(),
            s(&md).to_owned(),
            "--metadata-url".to_owned(),
            server.metadata(),
            "refresh".to_owned(),
        ];
        for args in [verify, client] {
            let what = format!("{} against a {} server", args[0], name(how));
            runs.push((what, thread::spawn(move || timed(args))));
        }
        servers.push(server);
    }
    for (what, run) in runs {
        let (code, stderr, took) = run.join().expect("run thread");
        eprintln!(
            "{what}: exit {code:?} after {:.1} s: {}",
            took.as_secs_f64(),
            stderr.trim_end()
        );
        assert_eq!(code, Some(1), "{what}: {stderr}");
        assert!(took < BOUND, "{what} took {took:?}: {stderr}");
        assert!(
            stderr.contains("root.json") || stderr.contains("timestamp.json"),
            "{what}: the error names no metadata file: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{what}: not one line: {stderr}"
        );
    }
    drop(servers);
}

fn name(how: Hostile) -> &'static str {
    match how {
        Hostile::Silent => "silent",
        Hostile::Trickle => "trickling",
    }
}
