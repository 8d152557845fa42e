//! The peer server: a read-only HTTP/1.1 view of a cache (and optionally a
//! TUF repository directory).
//!
//! | path | answer |
//! |---|---|
//! | `GET /tuf/metadata/<file>` | `<repo>/metadata/<file>`, else `<cache>/tuf/metadata/<file>` |
//! | `GET /tuf/targets/<path>` | `<repo>/targets/<path>`, else the CAS object named by the `<sha256>.` prefix of the last element |
//! | `GET\|HEAD /cas/sha256/<hex>` | the object, single-range `Range`, strong `ETag` = digest |
//! | `GET /cas/sha256/<hex>/chunks` | `{"complete":true,...}` or the verified chunks of a download in progress |
//! | `GET /attest?nonce=<hex>` | a TPM quote over the nonce, from the configured [`Attestor`] (`crate::attest`) |
//!
//! Everything else is 404 (no listing) or 405 (any method but GET/HEAD).
//!
//! Objects named in [`ServerConfig::unhashed`] (a booted node's rootfs that
//! its boot read through dm-verity instead of hashing it) are hashed whole
//! in the background, one at a time, and are "not found" on every path
//! until their bytes match their name; one that does not match is never
//! served.
//! Path segments are percent-decoded once and must be plain names
//! (`[A-Za-z0-9._+~@=,-]`, no leading dot, no encoded `/`); the resolved
//! file must stay inside its base after following symlinks. CAS objects
//! and partial files are opened without following any symbolic link inside
//! the cache, and only a regular file is served (anything else is 404).
//! Connections are bounded by a semaphore and per IP address
//! (`max_per_address`; more from one address are closed at once), headers
//! must arrive within `header_timeout` and fit `max_header_bytes`, and a
//! connection that moves fewer than `min_progress` bytes in an
//! `idle_timeout` window (a minimum rate, 32 KiB per 5 s by default) is
//! closed and its slot taken back; when every slot is in use, a new
//! connection takes the slot of the slowest one (lowest average rate, at
//! least a second old), so slow or idle clients cannot pin the server.
//! File bodies go from the page cache to the socket with `sendfile`
//! (`http1`: our HTTP/1.1 connection, since hyper's server writes every
//! body from its own buffers), so no file byte passes through this process.

mod http1;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use http1::{Reply, RequestHead};

use crate::attest::{parse_nonce, AttestError, Attestor, Bucket};
use crate::cas::Cas;
use crate::digest::Sha256Digest;
use crate::wire::RangeReq;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The cache (CAS + `tuf/metadata`).
    pub cache: PathBuf,
    /// A TUF repository directory (`metadata/`, `targets/`) served first.
    pub repo: Option<PathBuf>,
    /// Concurrent connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent connections from one IP address; more are closed at once
    /// (one host cannot take the server's slots).
    pub max_per_address: usize,
    /// Time allowed to send a request's headers.
    pub header_timeout: Duration,
    /// Window of the progress rule.
    pub idle_timeout: Duration,
    /// Bytes a connection must move per window.
    pub min_progress: u64,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Most bytes one `sendfile` call sends: bounds how long one call can
    /// hold a runtime thread when the file's pages must come from a disk.
    pub block_size: usize,
    /// Who answers `GET /attest` (none: 404 `no TPM`).
    pub attestor: Option<Arc<dyn Attestor>>,
    /// `/attest` requests served at once before the rate limit (429).
    pub attest_burst: u32,
    /// One more `/attest` request per this much time.
    pub attest_refill: Duration,
    /// CAS objects whose bytes nobody has hashed since they were stored
    /// (the boot read them through dm-verity): each is hashed whole, in
    /// this order, before it is first served, and never served if it does
    /// not match.
    pub unhashed: Vec<Sha256Digest>,
}

impl ServerConfig {
    /// Defaults for serving `cache`.
    pub fn new(cache: impl Into<PathBuf>) -> Self {
        Self {
            cache: cache.into(),
            repo: None,
            max_connections: 256,
            max_per_address: 16,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            min_progress: 32 * 1024,
            max_header_bytes: 16 * 1024,
            block_size: 1024 * 1024,
            attestor: None,
            attest_burst: 4,
            attest_refill: Duration::from_secs(1),
            unhashed: Vec::new(),
        }
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The cache could not be opened.
    #[error("cannot open the cache")]
    Cache(#[source] crate::cas::CasError),
    /// Accepting connections failed.
    #[error("accepting connections failed")]
    Accept(#[source] io::Error),
}

struct State {
    cas: Cas,
    repo: Option<PathBuf>,
    /// Repository target files by the digest prefix of their consistent
    /// names, so `/cas/sha256/<hex>` also serves what the repo holds.
    repo_index: std::sync::Mutex<RepoIndex>,
    attestor: Option<Arc<dyn Attestor>>,
    attest_bucket: Bucket,
    /// Objects withheld until hashed ([`ServerConfig::unhashed`]); an
    /// entry leaves when its hash matched.
    withheld: Mutex<HashMap<Sha256Digest, Withheld>>,
}

/// Why an object is not served yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Withheld {
    /// Waiting for its hash.
    Unhashed,
    /// Its bytes do not match its name: never served.
    Mismatch,
}

#[derive(Default)]
struct RepoIndex {
    by_digest: std::collections::HashMap<Sha256Digest, PathBuf>,
    scanned: Option<std::time::Instant>,
}

impl State {
    fn is_withheld(&self, d: &Sha256Digest) -> bool {
        self.withheld
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(d)
    }

    /// Hashes each object of `todo` whole, in that order, and releases
    /// those that match. Runs on the blocking pool.
    fn hash_withheld(&self, todo: &[Sha256Digest]) {
        for &d in todo {
            let started = std::time::Instant::now();
            let verdict = match self.cas.hash_object(&d, |_| {}) {
                Ok((got, len)) if got == d => {
                    tracing::info!(
                        object = %d,
                        bytes = len,
                        ms = started.elapsed().as_millis() as u64,
                        "hashed whole, it matches: re-sharing it"
                    );
                    None
                }
                Ok((got, _)) => {
                    tracing::warn!(object = %d, got = %got, "not re-sharing: the cached bytes hash to another digest");
                    Some(Withheld::Mismatch)
                }
                Err(e) if !self.cas.contains(&d) => {
                    // Not in the cache: nothing to serve. If a fetch
                    // stores it later, that fetch has verified it.
                    tracing::debug!(object = %d, error = %e, "not in the cache");
                    None
                }
                Err(e) => {
                    tracing::warn!(object = %d, error = %e, "not re-sharing: the cached object cannot be read");
                    Some(Withheld::Mismatch)
                }
            };
            let mut w = self.withheld.lock().unwrap_or_else(|p| p.into_inner());
            match verdict {
                None => w.remove(&d),
                Some(v) => w.insert(d, v),
            };
        }
    }

    /// A repository target file named `<hex>.<name>`; rescans the
    /// repository on a miss at most every two seconds.
    fn repo_object(&self, d: &Sha256Digest) -> Option<PathBuf> {
        let repo = self.repo.as_ref()?;
        let mut idx = self.repo_index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = idx.by_digest.get(d) {
            return Some(p.clone());
        }
        if idx
            .scanned
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return None;
        }
        idx.scanned = Some(std::time::Instant::now());
        idx.by_digest.clear();
        let base = repo.join("targets");
        let mut stack = vec![base];
        let mut budget = 100_000usize; // bounded walk
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    break;
                }
                let Ok(ft) = e.file_type() else { continue };
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(h) = name
                        .split_once('.')
                        .and_then(|(h, _)| Sha256Digest::from_hex(h).ok())
                    {
                        idx.by_digest.insert(h, p);
                    }
                }
            }
        }
        idx.by_digest.get(d).cloned()
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let cas = Cas::open(&config.cache).map_err(ServerError::Cache)?;
    let state = Arc::new(State {
        cas,
        repo: config.repo.clone(),
        repo_index: std::sync::Mutex::new(RepoIndex::default()),
        attestor: config.attestor.clone(),
        attest_bucket: Bucket::new(config.attest_burst, config.attest_refill),
        withheld: Mutex::new(
            config
                .unhashed
                .iter()
                .map(|d| (*d, Withheld::Unhashed))
                .collect(),
        ),
    });
    if !config.unhashed.is_empty() {
        let state = Arc::clone(&state);
        let todo = config.unhashed.clone();
        tokio::task::spawn_blocking(move || state.hash_withheld(&todo));
    }
    let sem = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let per_address: PerAddress = Arc::new(Mutex::new(HashMap::new()));
    let live = Arc::new(LiveTable::default());
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let permit = match Arc::clone(&sem).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Every slot is taken: take one back from the slowest
                // connection (lowest bytes/s, at least a second old), so
                // clients trickling below everyone else cannot hold the
                // server while others wait.
                // Bounded by the slots: each round closes one connection
                // (once one is old enough) and waits for a freed slot.
                loop {
                    live.evict_slowest();
                    tokio::select! {
                        p = Arc::clone(&sem).acquire_owned() => match p {
                            Ok(p) => break p,
                            Err(_) => return Ok(()),
                        },
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = &mut shutdown => return Ok(()),
                    }
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if is_transient_accept(&e) => {
                    tracing::warn!(error = %e, "accept failed, backing off");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(ServerError::Accept(e)),
            },
            _ = &mut shutdown => return Ok(()),
        };
        let Some(slot) = AddressSlot::take(&per_address, peer.ip(), config.max_per_address) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let config = Arc::clone(&config);
        let (moved, kill, entry) = live.register();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let _entry = entry;
            handle_connection(stream, peer, state, config, moved, kill).await;
        });
    }
}

type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The open connections: bytes moved, age, and a way to close each.
#[derive(Default)]
struct LiveTable {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    next: u64,
    conns: HashMap<u64, LiveConn>,
}

struct LiveConn {
    moved: Arc<AtomicU64>,
    since: std::time::Instant,
    kill: Arc<Notify>,
}

/// Removes its connection from the table on drop.
struct LiveEntry {
    table: Arc<LiveTable>,
    id: u64,
}

impl Drop for LiveEntry {
    fn drop(&mut self) {
        self.table
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .remove(&self.id);
    }
}

impl LiveTable {
    fn register(self: &Arc<Self>) -> (Arc<AtomicU64>, Arc<Notify>, LiveEntry) {
        let moved = Arc::new(AtomicU64::new(0));
        let kill = Arc::new(Notify::new());
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = t.next;
        t.next += 1;
        t.conns.insert(
            id,
            LiveConn {
                moved: Arc::clone(&moved),
                since: std::time::Instant::now(),
                kill: Arc::clone(&kill),
            },
        );
        (
            moved,
            kill,
            LiveEntry {
                table: Arc::clone(self),
                id,
            },
        )
    }

    /// Closes the connection with the lowest average rate among those at
    /// least a second old (none younger: a new request gets its chance).
    fn evict_slowest(&self) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let victim = t
            .conns
            .iter()
            .filter(|(_, c)| c.since.elapsed() >= Duration::from_secs(1))
            .min_by(|(_, a), (_, b)| {
                let rate = |c: &LiveConn| {
                    c.moved.load(Ordering::Relaxed) as f64 / c.since.elapsed().as_secs_f64()
                };
                rate(a).total_cmp(&rate(b))
            })
            .map(|(id, c)| (*id, Arc::clone(&c.kill)));
        if let Some((id, kill)) = victim {
            // Once: a closed connection leaves the table when its task ends.
            t.conns.remove(&id);
            kill.notify_one();
        }
    }
}

/// One connection counted against its address; given back on drop.
struct AddressSlot {
    table: PerAddress,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(table: &PerAddress, ip: IpAddr, max: usize) -> Option<Self> {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

fn is_transient_accept(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error().is_some_and(|c| {
        c == rustix::io::Errno::MFILE.raw_os_error() || c == rustix::io::Errno::NFILE.raw_os_error()
    })
}

async fn handle_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    config: Arc<ServerConfig>,
    moved: Arc<AtomicU64>,
    kill: Arc<Notify>,
) {
    let conn = http1::serve(stream, &config, &moved, |req| route(&state, req));
    let watchdog = async {
        let mut last = 0u64;
        loop {
            tokio::time::sleep(config.idle_timeout).await;
            let now = moved.load(Ordering::Relaxed);
            if now - last < config.min_progress {
                return;
            }
            last = now;
        }
    };
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = watchdog => tracing::debug!(%peer, "closing a slow or idle connection"),
        _ = kill.notified() => tracing::debug!(%peer, "every slot taken: closing the slowest connection"),
    }
}

fn full(b: impl Into<Bytes>) -> Reply {
    Reply::Bytes(b.into())
}

fn status(code: StatusCode, msg: &str) -> Response<Reply> {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_found() -> Response<Reply> {
    status(StatusCode::NOT_FOUND, "not found")
}

/// One percent-decoded, plain path segment, or `None`.
fn safe_segment(raw: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let ok = !decoded.is_empty()
        && !decoded.starts_with('.')
        && decoded.len() <= 255
        && decoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~@=,-".contains(&b));
    ok.then(|| decoded.into_owned())
}

fn safe_segments(raw: &str) -> Option<Vec<String>> {
    if raw.is_empty() {
        return None;
    }
    raw.split('/').map(safe_segment).collect()
}

/// Resolves `segs` under `base`, refusing anything that leaves it.
fn resolve(base: &Path, segs: &[String]) -> Option<PathBuf> {
    let base = base.canonicalize().ok()?;
    let mut p = base.clone();
    for s in segs {
        p.push(s);
    }
    let real = p.canonicalize().ok()?;
    (real.starts_with(&base) && real.is_file()).then_some(real)
}

async fn route(state: &State, req: RequestHead) -> Response<Reply> {
    let RequestHead {
        method,
        uri,
        headers,
        ..
    } = req;
    if method != Method::GET && method != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = uri.path();
    let head = method == Method::HEAD;
    if path == "/attest" {
        if head {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        return attest(state, uri.query()).await;
    }
    if let Some(rest) = path.strip_prefix("/cas/sha256/") {
        let (hex, tail) = match rest.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        let Ok(d) = Sha256Digest::from_hex(hex) else {
            return not_found();
        };
        if hex.bytes().any(|b| b.is_ascii_uppercase()) || state.is_withheld(&d) {
            return not_found();
        }
        return match tail {
            None => serve_object(state, &d, &headers).await,
            Some("chunks") => chunks(state, &d),
            Some(_) => not_found(),
        };
    }
    if let Some(rest) = path.strip_prefix("/tuf/metadata/") {
        let Some(segs) = safe_segments(rest).filter(|s| s.len() == 1) else {
            return not_found();
        };
        let mut bases = Vec::new();
        if let Some(repo) = &state.repo {
            bases.push(repo.join("metadata"));
        }
        bases.push(state.cas.metadata_dir());
        for b in bases {
            if let Some(p) = resolve(&b, &segs) {
                return serve_path(&p, None, &headers, "no-cache");
            }
        }
        return not_found();
    }
    if let Some(rest) = path.strip_prefix("/tuf/targets/") {
        let Some(segs) = safe_segments(rest) else {
            return not_found();
        };
        if let Some(repo) = &state.repo {
            if let Some(p) = resolve(&repo.join("targets"), &segs) {
                return serve_path(&p, None, &headers, "public, max-age=31536000, immutable");
            }
        }
        // Consistent-snapshot names carry the digest: `<sha256>.<name>`.
        let last = segs.last().map(String::as_str).unwrap_or("");
        if let Some(d) = last
            .split_once('.')
            .and_then(|(h, _)| Sha256Digest::from_hex(h).ok())
        {
            if state.is_withheld(&d) {
                return not_found();
            }
            return serve_object(state, &d, &headers).await;
        }
        return not_found();
    }
    not_found()
}

/// `GET /attest?nonce=<hex>`: the nonce's form, then the rate limit, then
/// the attestor on the blocking pool (it talks to the TPM).
async fn attest(state: &State, query: Option<&str>) -> Response<Reply> {
    let Some(attestor) = state.attestor.clone() else {
        return status(StatusCode::NOT_FOUND, "no TPM: this server does not attest");
    };
    let nonce = match parse_nonce(query) {
        Ok(n) => n,
        Err(why) => return status(StatusCode::BAD_REQUEST, &why),
    };
    if !state.attest_bucket.take(std::time::Instant::now()) {
        return status(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attestation requests: try again in a second",
        );
    }
    match tokio::task::spawn_blocking(move || attestor.attest(&nonce)).await {
        Ok(Ok(json)) => {
            let mut r = Response::new(full(json));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(Err(e @ AttestError::NoTpm(_))) => status(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e)) => status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the attestation task failed",
        ),
    }
}

fn chunks(state: &State, d: &Sha256Digest) -> Response<Reply> {
    let complete = state
        .cas
        .open_object(d)
        .and_then(|f| f.metadata().ok())
        .or_else(|| state.repo_object(d).and_then(|p| std::fs::metadata(p).ok()));
    let body = if let Some(m) = complete {
        serde_json::json!({"sha256": d, "length": m.len(), "complete": true})
    } else if let Some(s) = state.cas.partial_status(d) {
        serde_json::json!({
            "sha256": d, "length": s.length, "complete": false,
            "chunk_size": s.chunk_size, "verified": s.verified,
        })
    } else {
        return not_found();
    };
    let mut r = Response::new(full(body.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn serve_object(state: &State, d: &Sha256Digest, headers: &HeaderMap) -> Response<Reply> {
    // Only a regular file inside the cache, reached without following a
    // symbolic link; anything else there is "not found".
    if let Some(file) = state.cas.open_object(d) {
        return serve_file(
            file,
            Some(d),
            headers,
            "public, max-age=31536000, immutable",
        );
    }
    if let Some(p) = state.repo_object(d) {
        return serve_path(&p, Some(d), headers, "public, max-age=31536000, immutable");
    }
    // A download in progress: only ranges inside verified chunks.
    let Some(st) = state.cas.partial_status(d) else {
        return not_found();
    };
    let Some(range) = headers.get(header::RANGE) else {
        return not_found();
    };
    let (a, b) = match parse_range(range, st.length) {
        RangeReq::Single(a, b) => (a, b),
        RangeReq::Unsatisfiable | RangeReq::Multiple | RangeReq::Invalid => {
            return range_not_satisfiable(st.length);
        }
    };
    let cs = st.chunk_size.max(1);
    let all_verified = (a / cs..=b / cs).all(|i| st.verified.binary_search(&i).is_ok());
    if !all_verified {
        return range_not_satisfiable(st.length);
    }
    let file = match state.cas.open_partial_data(d) {
        Some(f) => f,
        // Finished (renamed) between the status read and the open.
        None => match state.cas.open_object(d) {
            Some(f) => f,
            None => return not_found(),
        },
    };
    ranged(file, st.length, a, b, Some(d), "no-cache")
}

fn range_not_satisfiable(len: u64) -> Response<Reply> {
    let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// Parses one `bytes=` range against a length (inclusive end); see
/// [`crate::wire::parse_range`].
fn parse_range(v: &HeaderValue, len: u64) -> RangeReq {
    match v.to_str() {
        Ok(s) => crate::wire::parse_range(s, len),
        Err(_) => RangeReq::Invalid,
    }
}

fn serve_path(
    path: &Path,
    digest: Option<&Sha256Digest>,
    headers: &HeaderMap,
    cache_control: &'static str,
) -> Response<Reply> {
    let Ok(file) = File::open(path) else {
        return not_found();
    };
    serve_file(file, digest, headers, cache_control)
}

/// Answers a GET or HEAD from an open regular file (the connection leaves
/// the body out for HEAD).
fn serve_file(
    file: File,
    digest: Option<&Sha256Digest>,
    headers: &HeaderMap,
    cache_control: &'static str,
) -> Response<Reply> {
    let Ok(meta) = file.metadata() else {
        return not_found();
    };
    let len = meta.len();
    let etag = digest.map(|d| format!("\"{}\"", d.to_hex()));
    if let (Some(tag), Some(inm)) = (&etag, headers.get(header::IF_NONE_MATCH)) {
        if inm
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
        {
            let mut r = Response::new(Reply::Empty);
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            common_headers(r.headers_mut(), digest, cache_control);
            return r;
        }
    }
    // `If-Range` with another validator: send the whole object.
    let if_range_ok = match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => etag
            .as_deref()
            .is_some_and(|t| v.as_bytes() == t.as_bytes()),
    };
    match headers.get(header::RANGE).filter(|_| if_range_ok) {
        Some(r) => match parse_range(r, len) {
            RangeReq::Single(a, b) => ranged(file, len, a, b, digest, cache_control),
            RangeReq::Unsatisfiable => range_not_satisfiable(len),
            // Syntactically invalid or multiple ranges: ignore the header
            // and send the whole representation (RFC 9110 section 14.2).
            RangeReq::Multiple | RangeReq::Invalid => whole(file, len, digest, cache_control),
        },
        None => whole(file, len, digest, cache_control),
    }
}

fn common_headers(h: &mut HeaderMap, digest: Option<&Sha256Digest>, cache_control: &'static str) {
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Some(d) = digest {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", d.to_hex())) {
            h.insert(header::ETAG, v);
        }
    }
}

fn whole(file: File, len: u64, digest: Option<&Sha256Digest>, cc: &'static str) -> Response<Reply> {
    let mut r = Response::new(Reply::File { file, off: 0, len });
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type(digest));
    common_headers(h, digest, cc);
    r
}

fn ranged(
    file: File,
    len: u64,
    a: u64,
    b: u64,
    digest: Option<&Sha256Digest>,
    cc: &'static str,
) -> Response<Reply> {
    let mut r = Response::new(Reply::File {
        file,
        off: a,
        len: b - a + 1,
    });
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::CONTENT_TYPE, content_type(digest));
    common_headers(h, digest, cc);
    r
}

fn content_type(digest: Option<&Sha256Digest>) -> HeaderValue {
    if digest.is_some() {
        HeaderValue::from_static("application/octet-stream")
    } else {
        HeaderValue::from_static("application/json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(s: &str, len: u64) -> RangeReq {
        parse_range(&HeaderValue::from_str(s).unwrap(), len)
    }

    #[test]
    fn ranges() {
        assert_eq!(pr("bytes=0-9", 100), RangeReq::Single(0, 9));
        assert_eq!(pr("bytes=90-", 100), RangeReq::Single(90, 99));
        assert_eq!(pr("bytes=-10", 100), RangeReq::Single(90, 99));
        assert_eq!(pr("bytes=-1000", 100), RangeReq::Single(0, 99));
        assert_eq!(pr("bytes=50-1000", 100), RangeReq::Single(50, 99));
        assert_eq!(pr("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(pr("bytes=-0", 100), RangeReq::Unsatisfiable);
        assert_eq!(pr("bytes=0-1,5-6", 100), RangeReq::Multiple);
        assert_eq!(pr("bytes=9-1", 100), RangeReq::Invalid);
        assert_eq!(pr("items=0-1", 100), RangeReq::Invalid);
        assert_eq!(pr("bytes=a-b", 100), RangeReq::Invalid);
        assert_eq!(pr("bytes=99999999999999999999-", 100), RangeReq::Invalid);
    }

    #[test]
    fn segments() {
        assert!(safe_segments("a/b.json").is_some());
        assert!(safe_segments("../x").is_none());
        assert!(safe_segments("a/%2e%2e/x").is_none());
        assert!(safe_segments("a%2fb").is_none());
        assert!(safe_segments("a//b").is_none());
        assert!(safe_segments(".hidden").is_none());
        assert!(safe_segments("a%00").is_none());
    }
}
