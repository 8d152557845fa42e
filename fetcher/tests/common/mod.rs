//! Shared helpers of the fetcher scenario tests: deterministic test data and
//! real peer servers (`fetcher::serve` on its own runtime and thread, so a
//! test can kill one mid-transfer).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fetcher::{Cas, FetchOptions, ObjectSpec, ServerConfig, Source};

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An object of `len` bytes in chunks of `chunk`.
pub fn object(len: usize, chunk: u64, seed: u64) -> (Vec<u8>, ObjectSpec) {
    let d = data(len, seed);
    let spec = ObjectSpec::of_bytes(&d, chunk);
    (d, spec)
}

/// A cache directory holding `data` as a complete object.
pub fn seeded_cache(root: &Path, name: &str, data: &[u8]) -> PathBuf {
    let dir = root.join(name);
    let cas = Cas::open(&dir).expect("open cache");
    cas.insert_bytes(data).expect("seed object");
    dir
}

/// A `phase serve`-equivalent peer on 127.0.0.1 with its own runtime.
pub struct Peer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    pub fn start(config: ServerConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), config)
    }

    pub fn start_on(bind: SocketAddr, config: ServerConfig) -> Self {
        Self::start_in(None, bind, config)
    }

    /// A peer inside network namespace `ns` (its thread `setns`es first).
    pub fn start_in(ns: Option<String>, bind: SocketAddr, config: ServerConfig) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Some(ns) = ns {
                use std::os::fd::AsFd;
                let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
                rustix::thread::move_into_link_name_space(
                    f.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind(bind).await.expect("bind");
                addr_tx
                    .send(l.local_addr().expect("addr"))
                    .expect("send addr");
                fetcher::serve(l, config, async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
            });
            // Dropping the runtime cancels every connection: a killed peer.
            rt.shutdown_background();
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("peer did not start");
        Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn serve_cache(cache: &Path) -> Self {
        Self::start(ServerConfig::new(cache))
    }

    pub fn url(&self) -> url::Url {
        format!("http://{}", self.addr).parse().expect("url")
    }

    pub fn source(&self, spec: &ObjectSpec) -> Source {
        Source::phase_peer(&self.url(), &spec.sha256).expect("source")
    }

    /// Stops the peer at once, cutting open transfers.
    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options for tests: short timeouts so faults resolve quickly.
pub fn quick_options() -> FetchOptions {
    FetchOptions {
        deadline: Duration::from_secs(60),
        min_throughput: 256 * 1024,
        throughput_grace: Duration::from_secs(1),
        read_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(2),
        max_failures: 4,
        backoff: Duration::from_millis(50),
        connections_per_peer: 2,
        verify_whole: false,
        chunk_memory: fetcher::fetch::DEFAULT_CHUNK_MEMORY,
    }
}

/// Files in a directory tree whose name ends with `suffix`.
pub fn files_ending(root: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// A TCP front for a real peer that dies (closes every connection and stops
/// listening) after relaying `budget` response bytes: a peer killed
/// mid-transfer, at a deterministic point.
pub struct DyingProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DyingProxy {
    pub async fn start(upstream: SocketAddr, budget: u64) -> Self {
        use std::sync::atomic::{AtomicI64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let left = Arc::new(AtomicI64::new(budget as i64));
        let dead = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = l.accept() => {
                        let Ok((mut down, _)) = r else { break };
                        let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else { break };
                        let (left, dead) = (Arc::clone(&left), Arc::clone(&dead));
                        conns.spawn(async move {
                            let (mut dr, mut dw) = down.split();
                            let (mut ur, mut uw) = up.split();
                            let c2s = tokio::io::copy(&mut dr, &mut uw);
                            let s2c = async {
                                let mut buf = vec![0u8; 16 * 1024];
                                loop {
                                    let n = ur.read(&mut buf).await.unwrap_or(0);
                                    if n == 0 { return; }
                                    let before = left.fetch_sub(n as i64, Ordering::SeqCst);
                                    let allowed = before.clamp(0, n as i64) as usize;
                                    if allowed > 0 && dw.write_all(&buf[..allowed]).await.is_err() { return; }
                                    if before - (n as i64) <= 0 { dead.notify_waiters(); return; }
                                }
                            };
                            tokio::select! { _ = c2s => {}, _ = s2c => {} }
                        });
                    }
                    _ = dead.notified() => break,
                }
            }
            // Dropping the listener and every connection: the peer is gone.
            conns.abort_all();
        });
        Self { addr, task }
    }

    pub fn url(&self) -> url::Url {
        format!("http://{}", self.addr).parse().expect("url")
    }
}

impl Drop for DyingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A signed TUF repository (the verifier's publisher) in `dir/repo` with one
/// target `stable/x86_64/kernel` of `len` bytes; returns the repository
/// directory and its initial root (what a client trusts).
pub fn signed_repo(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    use verifier::publish::{generate_keys, KeygenOptions, Publisher, TargetSpec};
    let keys = dir.join("keys");
    let repo = dir.join("repo");
    let now = chrono::Utc::now();
    generate_keys(
        &keys,
        &KeygenOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires: now + chrono::Duration::days(365),
            consistent_snapshot: true,
        },
    )
    .expect("keygen");
    let mut p = Publisher::open(&repo, &keys).expect("publisher");
    let src = dir.join("kernel.bin");
    std::fs::write(&src, data(len, 11)).expect("write target");
    p.add_target(&TargetSpec {
        name: "stable/x86_64/kernel".into(),
        kind: verifier::Kind::Kernel,
        version: "1".into(),
        cmdline: Some("console=ttyS0".into()),
        source: src,
    })
    .expect("add target");
    p.commit(chrono::Duration::days(7)).expect("commit");
    let root = std::fs::read(repo.join("metadata/1.root.json")).expect("root");
    (repo, root)
}

/// A peer serving the repository `repo` (and an empty cache) like `phase
/// serve --repo`.
pub fn repo_peer(root: &Path, repo: &Path) -> Peer {
    let mut cfg = ServerConfig::new(root.join("repo-peer-cache"));
    cfg.repo = Some(repo.to_path_buf());
    Peer::start(cfg)
}

/// A hand-written hostile HTTP peer on 127.0.0.1: each connection reads one
/// request head and hands the socket and the request line to `answer`. At
/// most `max_conns` connections (bounded), each on its own task.
pub async fn hostile_peer<F, Fut>(max_conns: usize, answer: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve_heads(max_conns, move |s, head| {
        let line = head.lines().next().unwrap_or("").to_string();
        answer(s, line)
    })
    .await
}

/// A hand-written peer on 127.0.0.1 that answers every `Range: bytes=a-b`
/// request for an object of `length` bytes with a well-formed 206 head
/// and hands the socket and the range to `body`, which writes what it
/// likes; any other request gets a 404. At most 16 connections, one
/// answer each.
pub async fn range_peer<F, Fut>(length: u64, body: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream, u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let body = std::sync::Arc::new(body);
    serve_heads(16, move |mut s, head| {
        use tokio::io::AsyncWriteExt;
        let body = std::sync::Arc::clone(&body);
        async move {
            let range = head
                .to_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes=").map(str::to_string));
            let Some((a, b)) = range.as_deref().and_then(|r| {
                let (a, b) = r.trim().split_once('-')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            }) else {
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            };
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{length}\r\n\r\n",
                b - a + 1
            );
            if s.write_all(head.as_bytes()).await.is_ok() {
                body(s, a, b).await;
            }
        }
    })
    .await
}

/// Accepts at most `max_conns` connections on 127.0.0.1, each on its own
/// task: reads one request head (at most 64 KiB, 5 s) and hands the socket
/// and the head's text to `answer`.
async fn serve_heads<F, Fut>(max_conns: usize, answer: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        for _ in 0..max_conns {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let answer = std::sync::Arc::clone(&answer);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                })
                .await;
                if read != Ok(true) {
                    return;
                }
                answer(s, String::from_utf8_lossy(&head).into_owned()).await;
            });
        }
    });
    addr
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}
