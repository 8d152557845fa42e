//! The fetch engine: one object from several peers at once, chunk by chunk
//! over HTTP `Range`, each chunk checked against its signed digest as it
//! arrives, the whole object checked before it gets its final name.
//!
//! Scheduling is work-stealing: every peer runs a few connections, and each
//! connection takes the lowest chunk nobody is fetching yet, so a fast peer
//! simply comes back for more work more often. When no unassigned chunk is
//! left, an idle connection duplicates a chunk still in flight elsewhere
//! (at most two attempts per chunk); the first verified copy wins and the
//! other attempt is cancelled, so a slow peer cannot hold up the end.
//!
//! A peer is dropped at its first bad chunk (evicted), after a bounded
//! number of failed requests (with exponential backoff), when it sends
//! nothing for `read_timeout`, or when a request falls below
//! `min_throughput` after `throughput_grace` (the rule that catches a peer
//! trickling a byte every few seconds) while another live peer can supply
//! that chunk. A slow peer that is the only live source of the chunk is not
//! dropped for it: the request is abandoned, the bytes received so far are
//! kept, and after a backoff the rest of the chunk is asked for again from
//! the same peer, each time with the floor halved (at most
//! `max_failures - 1` halvings, kept for that peer). Only `max_failures`
//! such slow requests in a row on one connection without completing a chunk
//! drop it (a peer trickling a few bytes a second still fails in bounded
//! time). The whole fetch has a `deadline`.
//!
//! Sources are de-duplicated by object URL: the same peer listed twice
//! would otherwise get twice the connections.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::body::{read_body, BodyLimits};
use crate::cas::{Cas, CasError, PartialObject};
use crate::digest::Sha256Digest;
use crate::object::{ObjectSpec, SpecError};
use crate::wire::ChunkMap;
use verifier::error_chain;

/// Where one peer serves the object.
#[derive(Debug, Clone)]
pub struct Source {
    /// How reports name the peer (usually its base URL).
    pub label: String,
    /// URL of the whole object (ranges are requested from it).
    pub object_url: Url,
    /// URL answering which chunks the peer holds (`/cas/sha256/<hex>/chunks`);
    /// `None` (or a 404 there) means "assume it holds everything".
    pub chunks_url: Option<Url>,
}

fn with_slash(base: &Url) -> Url {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b
}

impl Source {
    /// A Phase peer (`phase serve` or a booted node) at `base`
    /// (`http://host:port`): `/cas/sha256/<hex>` and its `/chunks`.
    pub fn phase_peer(base: &Url, d: &Sha256Digest) -> Result<Self, url::ParseError> {
        let b = with_slash(base);
        Ok(Self {
            label: base.to_string(),
            object_url: b.join(&format!("cas/sha256/{}", d.to_hex()))?,
            chunks_url: Some(b.join(&format!("cas/sha256/{}/chunks", d.to_hex()))?),
        })
    }

    /// A static mirror of a TUF repository whose base (the directory holding
    /// `metadata/` and `targets/`) is `repo`; `target_path` is the
    /// consistent-snapshot path below `targets/` (`stable/x86_64/<hex>.kernel`).
    pub fn mirror(repo: &Url, target_path: &str) -> Result<Self, url::ParseError> {
        let b = with_slash(repo);
        Ok(Self {
            label: repo.to_string(),
            object_url: b.join("targets/")?.join(target_path)?,
            chunks_url: None,
        })
    }
}

/// Limits and tuning of a fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The whole fetch must finish within this.
    pub deadline: Duration,
    /// A request slower than this (bytes/s) after the grace period is dropped.
    pub min_throughput: u64,
    /// Time a request gets before the throughput rule applies.
    pub throughput_grace: Duration,
    /// Longest silence (no byte at all) on a connection.
    pub read_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Failed requests (in a row) after which a peer is dropped.
    pub max_failures: u32,
    /// First retry delay; doubles per failure, capped at 2 s.
    pub backoff: Duration,
    /// Parallel connections per peer.
    pub connections_per_peer: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30 * 60),
            min_throughput: 64 * 1024,
            throughput_grace: Duration::from_secs(3),
            read_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_failures: 4,
            backoff: Duration::from_millis(100),
            connections_per_peer: 2,
        }
    }
}

/// A progress snapshot for a bar.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The object.
    pub object: Sha256Digest,
    /// Bytes verified and stored so far (including resumed chunks).
    pub done: u64,
    /// Object length.
    pub total: u64,
    /// Receive rate over the last interval, bytes/s.
    pub rate: f64,
    /// Peers still in use.
    pub peers: usize,
}

/// Progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What one peer contributed.
#[derive(Debug, Clone)]
pub struct PeerReport {
    /// The peer's label.
    pub label: String,
    /// Verified bytes it supplied.
    pub bytes: u64,
    /// Verified chunks it supplied.
    pub chunks: u64,
    /// Why it was dropped, if it was.
    pub dropped: Option<String>,
    /// Whether it sent bytes that did not match the signed digests.
    pub bad: bool,
}

/// The outcome of a successful fetch.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The object.
    pub sha256: Sha256Digest,
    /// Its length.
    pub length: u64,
    /// Its final path in the CAS.
    pub path: std::path::PathBuf,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether it was already in the CAS (nothing fetched).
    pub already_present: bool,
    /// Chunks taken over from an earlier partial download.
    pub resumed_chunks: usize,
    /// Per-peer contributions.
    pub peers: Vec<PeerReport>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The signed description is inconsistent.
    #[error("invalid object description for {0}")]
    Spec(Sha256Digest, #[source] SpecError),
    /// The cache failed (disk full, I/O error, final check failed).
    #[error("cannot store {0}")]
    Cas(Sha256Digest, #[source] CasError),
    /// Another writer held the object past the deadline.
    #[error("timed out waiting for another download of {0} to finish")]
    LockTimeout(Sha256Digest),
    /// No sources at all.
    #[error("no peers to fetch {0} from")]
    NoPeers(Sha256Digest),
    /// Every peer was dropped or none holds the missing chunks.
    #[error("no peer could supply {missing} of {total} chunks of {digest} ({peers})")]
    Exhausted {
        /// The object.
        digest: Sha256Digest,
        /// Chunks still missing.
        missing: usize,
        /// All chunks.
        total: usize,
        /// What happened to each peer.
        peers: String,
    },
    /// The overall deadline passed.
    #[error(
        "fetch of {digest} did not finish within {deadline:?} ({missing} chunks missing; {peers})"
    )]
    Deadline {
        /// The object.
        digest: Sha256Digest,
        /// The deadline.
        deadline: Duration,
        /// Chunks still missing.
        missing: usize,
        /// What happened to each peer.
        peers: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The proxied route's gateway socket could not be opened.
    #[error("cannot open the proxy gateway")]
    Route(#[source] std::io::Error),
    /// A worker task died.
    #[error("a download task of {0} failed")]
    Task(Sha256Digest, #[source] tokio::task::JoinError),
}

/// Downloads objects into a [`Cas`].
#[derive(Debug, Clone)]
pub struct Fetcher {
    cas: Cas,
    client: reqwest::Client,
    opts: FetchOptions,
    /// The proxied route's gateway, kept alive with the client.
    _route: Option<std::sync::Arc<crate::tor::Gateway>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChunkState {
    Missing,
    InFlight(Vec<usize>),
    Done,
}

#[derive(Debug)]
struct PeerState {
    source: Source,
    /// Which chunks it holds; `None` means all (a mirror, or no map).
    has: Option<Vec<bool>>,
    /// Holds every chunk (`has` is `None` or all true): a seed, used only
    /// for chunks no partial peer offers while partial peers are around.
    seed: bool,
    /// Joined during the fetch (from the feed): a swarm member whose own
    /// download may not have started yet, so "no such object" on its chunk
    /// map means "nothing yet" and it keeps being polled.
    patient: bool,
    lacks: HashSet<usize>,
    bytes: u64,
    chunks: u64,
    failures: u32,
    /// How many times the throughput floor is halved for this peer when it
    /// is the only source of a chunk.
    slow_level: u32,
    dropped: Option<String>,
    bad: bool,
}

impl PeerState {
    fn new(source: Source, patient: bool, n: usize) -> Self {
        Self {
            source,
            has: if patient { Some(vec![false; n]) } else { None },
            seed: !patient,
            patient,
            lacks: HashSet::new(),
            bytes: 0,
            chunks: 0,
            failures: 0,
            slow_level: 0,
            dropped: None,
            bad: false,
        }
    }

    /// Records a chunk map the peer answered.
    fn set_map(&mut self, map: ChunkMap, n: usize) {
        let has = match map {
            ChunkMap::All => None,
            ChunkMap::Partial(v) => Some(v),
            // A swarm member that has not started this object yet.
            ChunkMap::Absent if self.patient => Some(vec![false; n]),
            // Unknown: keep what we knew; an initial peer without a map is
            // assumed to hold everything (its range answers will tell).
            ChunkMap::Absent | ChunkMap::Unknown => return,
        };
        if let Some(h) = &has {
            self.lacks.retain(|&i| !h.get(i).copied().unwrap_or(false));
        } else {
            self.lacks.clear();
        }
        self.seed = has.as_ref().is_none_or(|h| h.iter().all(|&x| x));
        self.has = has;
    }

    fn can_serve(&self, i: usize) -> bool {
        self.dropped.is_none()
            && !self.lacks.contains(&i)
            && self
                .has
                .as_ref()
                .is_none_or(|h| h.get(i).copied().unwrap_or(false))
    }
}

#[derive(Debug)]
struct Sched {
    chunks: Vec<ChunkState>,
    peers: Vec<PeerState>,
    fatal: Option<CasError>,
    done: usize,
    /// When the last chunk was verified (or the fetch started).
    progressed: Instant,
    /// Per-fetch random tie-break among equally rare chunks, so the clients
    /// of a fleet ask a seed for different chunks.
    order: Vec<u64>,
}

impl Sched {
    /// Whether `p` is the only live peer that can supply chunk `i`.
    fn only_source(&self, p: usize, i: usize) -> bool {
        !self
            .peers
            .iter()
            .enumerate()
            .any(|(q, peer)| q != p && peer.can_serve(i))
    }
}

/// Bytes of a chunk received by an abandoned (slow) request, kept so the
/// retry asks only for the rest.
struct Prefix {
    parts: Vec<Bytes>,
    len: usize,
    hasher: Sha256,
}

enum Pick {
    Chunk(usize),
    Wait,
    Stop,
}

struct Shared {
    spec: ObjectSpec,
    partial: Arc<PartialObject>,
    sched: Mutex<Sched>,
    changed: Notify,
    done_bytes: AtomicU64,
    flow_bytes: AtomicU64,
    whole: Arc<WholeHash>,
    stop: AtomicBool,
    /// Peers join through a feed (discovery): schedule as a swarm from the
    /// start, before any partial peer is known.
    expect_swarm: bool,
    client: reqwest::Client,
    opts: FetchOptions,
}

enum ChunkError {
    /// Peer does not have the object at all.
    NotFound(StatusCode),
    /// Peer does not have this range (yet).
    Unavailable,
    /// Below the throughput floor; what arrived so far.
    Slow(String, Prefix),
    /// Network or server trouble worth a retry.
    Transient(String),
    /// Protocol violation (not malicious bytes, but unusable).
    Protocol(String),
    /// The chunk was completed by another peer meanwhile.
    Cancelled,
}

impl Shared {
    fn sched(&self) -> MutexGuard<'_, Sched> {
        // Poisoning would only follow a panic in a worker while holding the
        // lock; the state is plain data and stays usable.
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick(&self, p: usize, k: usize) -> Pick {
        let mut s = self.sched();
        if s.fatal.is_some() || s.peers[p].dropped.is_some() || self.stop.load(Ordering::Relaxed) {
            return Pick::Stop;
        }
        if s.done == s.chunks.len() {
            return Pick::Stop;
        }
        let n = s.chunks.len();
        // A swarm (peers join through a feed, or some live peer holds only
        // part of the object: it is downloading too). Then chunks are taken rarest first (random
        // among equals), and a seed only supplies chunks no partial peer
        // offers, so the seeds' uplinks carry each chunk into the swarm
        // about once and the clients spread it from there. Without partial
        // peers: lowest chunk first (in order, for the whole-object hash).
        let swarm = self.swarm(&s);
        // In a swarm one connection per peer: every peer's uplink is shared
        // by many clients, and a chunk can be re-shared only once it is
        // complete, so fewer requests at a time finish chunks sooner. The
        // other connections help in the endgame.
        if swarm && k > 0 && s.chunks.contains(&ChunkState::Missing) {
            return Pick::Wait;
        }
        let me = &s.peers[p];
        let candidates = (0..n).filter(|&i| s.chunks[i] == ChunkState::Missing && me.can_serve(i));
        let chosen = if !swarm {
            candidates.min()
        } else if me.seed {
            candidates
                .filter(|&i| !s.peers.iter().any(|q| !q.seed && q.can_serve(i)))
                .min_by_key(|&i| s.order[i])
        } else {
            candidates.min_by_key(|&i| {
                let holders = s.peers.iter().filter(|q| q.can_serve(i)).count();
                (holders, s.order[i])
            })
        };
        if let Some(i) = chosen {
            s.chunks[i] = ChunkState::InFlight(vec![p]);
            return Pick::Chunk(i);
        }
        // Endgame: help with a chunk another peer is still on (in a swarm
        // only once nothing is left unassigned, so idle seeds do not
        // duplicate what partial peers are sending).
        if swarm && s.chunks.contains(&ChunkState::Missing) {
            return Pick::Wait;
        }
        let steal = (0..n).find(|&i| match &s.chunks[i] {
            ChunkState::InFlight(v) => v.len() < 2 && !v.contains(&p) && s.peers[p].can_serve(i),
            _ => false,
        });
        if let Some(i) = steal {
            if let ChunkState::InFlight(v) = &mut s.chunks[i] {
                v.push(p);
            }
            return Pick::Chunk(i);
        }
        Pick::Wait
    }

    /// Whether this fetch runs in a swarm: peers join through a feed, or
    /// some live peer holds only part of the object.
    fn swarm(&self, s: &Sched) -> bool {
        self.expect_swarm || s.peers.iter().any(|q| q.dropped.is_none() && !q.seed)
    }

    /// Whether any live peer could still supply every missing chunk.
    fn stuck(&self) -> bool {
        let s = self.sched();
        s.chunks.iter().enumerate().any(|(i, c)| match c {
            ChunkState::Missing => !s.peers.iter().any(|p| p.can_serve(i)),
            _ => false,
        })
    }

    fn release(&self, s: &mut Sched, p: usize, i: usize) {
        if let ChunkState::InFlight(v) = &mut s.chunks[i] {
            v.retain(|&q| q != p);
            if v.is_empty() {
                s.chunks[i] = ChunkState::Missing;
            }
        }
    }

    fn drop_peer(&self, p: usize, i: usize, reason: String, bad: bool) {
        let mut s = self.sched();
        self.release(&mut s, p, i);
        tracing::warn!(peer = %s.peers[p].source.label, chunk = i, %reason, "dropping peer");
        if s.peers[p].dropped.is_none() {
            s.peers[p].dropped = Some(reason);
        }
        s.peers[p].bad |= bad;
        drop(s);
        self.changed.notify_waiters();
    }

    fn peer_summary(&self) -> String {
        let s = self.sched();
        s.peers
            .iter()
            .map(|p| match &p.dropped {
                Some(r) => format!("{}: {}", p.source.label, r),
                None => format!("{}: {} chunks", p.source.label, p.chunks),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Most redirects a web mirror may answer in a row.
pub const MAX_REDIRECTS: usize = 3;

/// Whether `url` is a request to a Phase peer (`phase serve`, a booted
/// node): its object and metadata paths. Such peers never redirect.
fn is_peer_request(url: &Url) -> bool {
    let p = url.path();
    p.contains("/cas/sha256/") || p.contains("/tuf/metadata/") || p.contains("/tuf/targets/")
}

/// The redirect rule of every client here. A Phase peer never redirects,
/// so none is followed for its requests. A web mirror (`--mirror`, a plain
/// TUF repository) may move a path on its own host: at most
/// [`MAX_REDIRECTS`] hops, each to the same scheme, host and port as the
/// first URL. A redirect to any other host is not followed (the caller
/// sees the 3xx answer as a failure of that source), so a source on the
/// LAN cannot send the client off it.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let next = attempt.url();
        let same_origin = first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default();
        if attempt.previous().len() > MAX_REDIRECTS || !same_origin || is_peer_request(first) {
            tracing::warn!(from = %first, to = %next, "redirect not followed");
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

impl Fetcher {
    /// A fetcher storing into `cas`.
    pub fn new(cas: Cas, opts: FetchOptions) -> Result<Self, FetchError> {
        Self::with_resolve(cas, opts, &[])
    }

    /// A fetcher whose HTTP client connects each `(host, addr)` host name
    /// to exactly `addr` (the URL's port wins) instead of asking DNS. This
    /// is how a peer at an IPv6 link-local address is reached: a URL cannot
    /// carry the zone, a `SocketAddrV6` carries it as `scope_id` (used by
    /// phase-init for mDNS peers).
    pub fn with_resolve(
        cas: Cas,
        opts: FetchOptions,
        resolve: &[(String, std::net::SocketAddr)],
    ) -> Result<Self, FetchError> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect_policy())
            .hickory_dns(true)
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30));
        for (host, addr) in resolve {
            b = b.resolve(host, *addr);
        }
        let client = b.build().map_err(FetchError::Client)?;
        Ok(Self {
            cas,
            client,
            opts,
            _route: None,
        })
    }

    /// A fetcher whose every request goes by `route` (see
    /// [`crate::tor::Route`]): through a SOCKS5 proxy or the embedded Tor
    /// client, with no fallback to a direct connection (the client's only
    /// transport is the route's gateway socket; it does no DNS). Call
    /// inside a tokio runtime context (a SOCKS5 route starts its gateway).
    pub fn with_route(
        cas: Cas,
        opts: FetchOptions,
        route: &crate::tor::Route,
    ) -> Result<Self, FetchError> {
        let Some(gateway) = route.gateway().map_err(FetchError::Route)? else {
            return Self::new(cas, opts);
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .unix_socket(gateway.path())
            .redirect(redirect_policy())
            // Over Tor a circuit takes seconds; the floor stays the caller's.
            .connect_timeout(opts.connect_timeout.max(Duration::from_secs(60)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Self {
            cas,
            client,
            opts,
            _route: Some(gateway),
        })
    }

    /// The store.
    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    /// The HTTP client (shared with the metadata transport).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The options.
    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// Fetches `spec` from `sources` into the CAS.
    pub async fn fetch(
        &self,
        spec: &ObjectSpec,
        sources: Vec<Source>,
        progress: Option<ProgressFn>,
    ) -> Result<FetchReport, FetchError> {
        self.fetch_with_feed(spec, sources, None, progress).await
    }

    /// Fetches `spec` from `sources` and from every source that arrives on
    /// `feed` while the fetch runs (peers found by discovery meanwhile).
    /// A source from the feed is a swarm member: if it does not have the
    /// object yet (its chunk map answers 404) it is kept and its map
    /// re-read, like every partial peer's, every [`POLL_INTERVAL`]. At most
    /// [`MAX_PEERS`] sources are used; repeated object URLs count once.
    /// With a feed, the fetch may start with no source at all and waits for
    /// one (bounded by the stall limit, 3 x `read_timeout`).
    pub async fn fetch_with_feed(
        &self,
        spec: &ObjectSpec,
        sources: Vec<Source>,
        mut feed: Option<SourceFeed>,
        progress: Option<ProgressFn>,
    ) -> Result<FetchReport, FetchError> {
        let start = Instant::now();
        let digest = spec.sha256;
        spec.validate().map_err(|e| FetchError::Spec(digest, e))?;
        let present = |resumed| FetchReport {
            sha256: digest,
            length: spec.length,
            path: self.cas.object_path(&digest),
            elapsed: start.elapsed(),
            already_present: true,
            resumed_chunks: resumed,
            peers: Vec::new(),
        };
        if self.cas.contains(&digest) {
            return Ok(present(0));
        }
        let deadline = start + self.opts.deadline;
        let lock = loop {
            if let Some(l) = self
                .cas
                .try_lock(&digest)
                .map_err(|e| FetchError::Cas(digest, e))?
            {
                break l;
            }
            if Instant::now() >= deadline {
                return Err(FetchError::LockTimeout(digest));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        if self.cas.contains(&digest) {
            // Another writer finished while we waited.
            drop(lock);
            return Ok(present(0));
        }
        let cas = self.cas.clone();
        let spec2 = spec.clone();
        let partial = tokio::task::spawn_blocking(move || cas.open_partial(&spec2, lock))
            .await
            .map_err(|e| FetchError::Task(digest, e))?
            .map_err(|e| FetchError::Cas(digest, e))?;
        let resumed = partial.resumed_chunks();
        let partial = Arc::new(partial);
        let missing = partial.missing();
        let mut sources = dedup_sources(sources);
        sources.truncate(MAX_PEERS);
        if !missing.is_empty() && sources.is_empty() && feed.is_none() {
            return Err(FetchError::NoPeers(digest));
        }
        let mut seen: HashSet<Url> = sources.iter().map(|s| s.object_url.clone()).collect();

        // The whole-object hash advances in chunk order as chunks are
        // written (see `commit_chunk`); resumed chunks are read back.
        let whole = Arc::new(WholeHash::new());
        let n = spec.chunk_count();
        let missing_set: HashSet<usize> = missing.iter().copied().collect();
        let mut chunks = vec![ChunkState::Missing; n];
        let mut done = 0;
        let mut done_bytes = 0;
        for (i, c) in chunks.iter_mut().enumerate() {
            if !missing_set.contains(&i) {
                *c = ChunkState::Done;
                done += 1;
                let (a, b) = spec.chunk_range(i);
                done_bytes += b - a;
                whole.hold_resumed(i);
            }
        }
        let peers = sources
            .into_iter()
            .map(|source| PeerState::new(source, false, n))
            .collect::<Vec<_>>();
        let random = std::hash::RandomState::new();
        let order = (0..n)
            .map(|i| std::hash::BuildHasher::hash_one(&random, i))
            .collect();
        let npeers = peers.len();
        let shared = Arc::new(Shared {
            spec: spec.clone(),
            partial: Arc::clone(&partial),
            sched: Mutex::new(Sched {
                chunks,
                peers,
                fatal: None,
                done,
                progressed: Instant::now(),
                order,
            }),
            changed: Notify::new(),
            done_bytes: AtomicU64::new(done_bytes),
            flow_bytes: AtomicU64::new(0),
            whole: Arc::clone(&whole),
            stop: AtomicBool::new(false),
            expect_swarm: feed.is_some(),
            client: self.client.clone(),
            opts: self.opts.clone(),
        });

        let mut workers = JoinSet::new();
        // Helpers that hold the shared state: aborted before the end.
        let mut aux = JoinSet::new();
        let conns = self.opts.connections_per_peer.max(1);
        if done < n {
            // Which chunks each peer holds (a peer still downloading holds some).
            let mut queries = JoinSet::new();
            for p in 0..npeers {
                let sh = Arc::clone(&shared);
                let t = self.opts.read_timeout;
                queries.spawn(async move { (p, query_chunks(&sh, p, t).await) });
            }
            while let Some(r) = queries.join_next().await {
                if let Ok((p, map)) = r {
                    shared.sched().peers[p].set_map(map, n);
                }
            }
            for p in 0..npeers {
                for k in 0..conns {
                    workers.spawn(worker(Arc::clone(&shared), p, k));
                }
            }
            aux.spawn(poll_maps(Arc::clone(&shared)));
        } else {
            feed = None;
        }
        if let Some(cb) = progress.clone() {
            let sh = Arc::clone(&shared);
            aux.spawn(async move {
                let mut last = (Instant::now(), 0u64);
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    report_progress(&sh, &cb, &mut last);
                }
            });
        }

        let mut timed_out = false;
        loop {
            let finished = shared.sched().done == n;
            if workers.is_empty() && (feed.is_none() || finished || timed_out) {
                break;
            }
            // With no worker left, wait for a new peer only while the
            // fetch is within its stall limit.
            let stall_end = shared.sched().progressed + self.opts.read_timeout * 3;
            tokio::select! {
                r = workers.join_next(), if !workers.is_empty() => match r {
                    None => {}
                    Some(Err(e)) if e.is_panic() => {
                        shared.stop.store(true, Ordering::Relaxed);
                        workers.abort_all();
                        aux.abort_all();
                        while aux.join_next().await.is_some() {}
                        return Err(FetchError::Task(digest, e));
                    }
                    Some(_) => {}
                },
                src = recv_feed(&mut feed), if feed.is_some() => match src {
                    None => feed = None,
                    Some(source) => {
                        if finished || !seen.insert(source.object_url.clone()) {
                            continue;
                        }
                        let p = {
                            let mut s = shared.sched();
                            if s.peers.len() >= MAX_PEERS {
                                continue;
                            }
                            tracing::debug!(peer = %source.label, "peer joined the fetch");
                            s.peers.push(PeerState::new(source, true, n));
                            s.peers.len() - 1
                        };
                        let sh = Arc::clone(&shared);
                        let t = self.opts.read_timeout;
                        aux.spawn(async move {
                            let map = query_chunks(&sh, p, t).await;
                            sh.sched().peers[p].set_map(map, n);
                            sh.changed.notify_waiters();
                        });
                        for k in 0..conns {
                            workers.spawn(worker(Arc::clone(&shared), p, k));
                        }
                    }
                },
                _ = tokio::time::sleep_until(stall_end.into()), if workers.is_empty() => {
                    break;
                }
                _ = tokio::time::sleep_until(deadline.into()), if !timed_out => {
                    timed_out = true;
                    shared.stop.store(true, Ordering::Relaxed);
                    workers.abort_all();
                }
            }
        }
        // Wait for the aborts to land: these tasks hold the partial.
        aux.abort_all();
        while aux.join_next().await.is_some() {}
        let (all_done, fatal) = {
            let mut s = shared.sched();
            (s.done == n, s.fatal.take())
        };
        // A write that failed is fatal even when its chunk was the last.
        if let Some(e) = fatal {
            return Err(FetchError::Cas(digest, e));
        }
        if !all_done {
            let missing = n - shared.sched().done;
            let peers = shared.peer_summary();
            if timed_out {
                return Err(FetchError::Deadline {
                    digest,
                    deadline: self.opts.deadline,
                    missing,
                    peers,
                });
            }
            return Err(FetchError::Exhausted {
                digest,
                missing,
                total: n,
                peers,
            });
        }
        let (wpartial, wwhole) = (Arc::clone(&partial), Arc::clone(&whole));
        let whole = tokio::task::spawn_blocking(move || wwhole.finish(&wpartial))
            .await
            .map_err(|e| FetchError::Task(digest, e))?
            .map_err(|e| FetchError::Cas(digest, e))?;
        let peers_report: Vec<PeerReport> = shared
            .sched()
            .peers
            .iter()
            .map(|p| PeerReport {
                label: p.source.label.clone(),
                bytes: p.bytes,
                chunks: p.chunks,
                dropped: p.dropped.clone(),
                bad: p.bad,
            })
            .collect();
        drop(shared);
        let partial = Arc::try_unwrap(partial).map_err(|_| {
            FetchError::Cas(
                digest,
                CasError::Io {
                    path: "partial".into(),
                    source: std::io::Error::other("partial object still shared"),
                },
            )
        })?;
        let whole = match whole {
            Some(w) => w,
            None => partial.hash_all().map_err(|e| FetchError::Cas(digest, e))?,
        };
        let path = tokio::task::spawn_blocking(move || match partial.finish(&whole) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Every chunk matched its signed digest yet the whole does
                // not: the signed description itself is inconsistent.
                Err(e)
            }
        })
        .await
        .map_err(|e| FetchError::Task(digest, e))?
        .map_err(|e| FetchError::Cas(digest, e))?;
        if let Some(cb) = &progress {
            cb(&Progress {
                object: digest,
                done: spec.length,
                total: spec.length,
                rate: 0.0,
                peers: 0,
            });
        }
        Ok(FetchReport {
            sha256: digest,
            length: spec.length,
            path,
            elapsed: start.elapsed(),
            already_present: false,
            resumed_chunks: resumed,
            peers: peers_report,
        })
    }
}

/// Sources that join a running fetch (see [`Fetcher::fetch_with_feed`]).
pub type SourceFeed = tokio::sync::mpsc::UnboundedReceiver<Source>;

async fn recv_feed(feed: &mut Option<SourceFeed>) -> Option<Source> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// The sources with repeated object URLs removed (first one kept).
fn dedup_sources(sources: Vec<Source>) -> Vec<Source> {
    let mut seen = HashSet::new();
    sources
        .into_iter()
        .filter(|s| {
            let new = seen.insert(s.object_url.clone());
            if !new {
                tracing::debug!(peer = %s.label, "source listed twice; using it once");
            }
            new
        })
        .collect()
}

fn report_progress(sh: &Shared, cb: &ProgressFn, last: &mut (Instant, u64)) {
    let flow = sh.flow_bytes.load(Ordering::Relaxed);
    let now = Instant::now();
    let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
    let rate = (flow.saturating_sub(last.1)) as f64 / dt;
    *last = (now, flow);
    let peers = sh
        .sched()
        .peers
        .iter()
        .filter(|p| p.dropped.is_none())
        .count();
    cb(&Progress {
        object: sh.spec.sha256,
        done: sh.done_bytes.load(Ordering::Relaxed),
        total: sh.spec.length,
        rate,
        peers,
    });
}

/// Chunks whose parts the whole-object hash keeps while it waits for an
/// earlier chunk; beyond that it reads chunks back from the partial file.
const HASH_HELD: usize = 4;

/// The whole-object SHA-256, advanced in chunk order as chunks are
/// committed: the chunk that is next in order is hashed part by part right
/// after each part is written (the bytes are still in the CPU cache, no
/// second copy, no read back), chunks that arrive early are held (their
/// parts, at most [`HASH_HELD`] chunks; else read back later) until the
/// chunks before them are in.
struct WholeHash {
    state: Mutex<WholeState>,
}

struct WholeState {
    hasher: Sha256,
    /// The next chunk the hash needs.
    next: usize,
    /// Written chunks after `next`, with their parts when kept.
    held: BTreeMap<usize, Option<Vec<Bytes>>>,
    held_parts: usize,
    /// A write failed half-way through the chunk being hashed.
    broken: bool,
    buf: Vec<u8>,
}

impl WholeHash {
    fn new() -> Self {
        Self {
            state: Mutex::new(WholeState {
                hasher: Sha256::new(),
                next: 0,
                held: BTreeMap::new(),
                held_parts: 0,
                broken: false,
                buf: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WholeState> {
        // Poisoned only by a panic while hashing; `broken` then stays
        // false only if the state is whole, and `finish` re-hashes anyway
        // when the hash did not reach the end.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunk `i` was verified on disk when the download was resumed.
    fn hold_resumed(&self, i: usize) {
        self.lock().held.insert(i, None);
    }

    /// Writes the verified chunk `i` (its `parts`, in order) into the
    /// partial object and advances the whole-object hash (blocking).
    fn commit(
        &self,
        partial: &PartialObject,
        i: usize,
        parts: Vec<Bytes>,
        digest: &Sha256Digest,
    ) -> Result<(), CasError> {
        let mut w = self.lock();
        w.drain(partial)?;
        if w.next == i && !w.broken {
            let r = {
                let hasher = &mut w.hasher;
                partial.write_chunk_parts(i, &parts, digest, |b| hasher.update(b))
            };
            if r.is_err() {
                w.broken = true;
                return r;
            }
            w.next += 1;
            return w.drain(partial);
        }
        drop(w);
        partial.write_chunk_parts(i, &parts, digest, |_| {})?;
        let mut w = self.lock();
        if w.broken {
            return Ok(());
        }
        if w.next == i {
            for p in &parts {
                w.hasher.update(p);
            }
            w.next += 1;
            w.drain(partial)
        } else {
            let keep = w.held_parts < HASH_HELD;
            w.held_parts += usize::from(keep);
            w.held.insert(i, keep.then_some(parts));
            Ok(())
        }
    }

    /// The SHA-256 of the whole object once every chunk is committed;
    /// `None` when the hash could not follow (the caller re-hashes the
    /// file).
    fn finish(&self, partial: &PartialObject) -> Result<Option<Sha256Digest>, CasError> {
        let mut w = self.lock();
        w.drain(partial)?;
        if w.broken || w.next != partial.spec().chunk_count() {
            return Ok(None);
        }
        Ok(Some(w.hasher.clone().finalize().into()))
    }
}

impl WholeState {
    /// Hashes the held chunks that are now next in order.
    fn drain(&mut self, partial: &PartialObject) -> Result<(), CasError> {
        while let Some(parts) = self.held.remove(&self.next) {
            match parts {
                Some(parts) => {
                    for p in &parts {
                        self.hasher.update(p);
                    }
                    self.held_parts -= 1;
                }
                None => {
                    partial.read_chunk(self.next, &mut self.buf)?;
                    self.hasher.update(&self.buf);
                }
            }
            self.next += 1;
        }
        Ok(())
    }
}

/// Largest chunk map accepted (`/cas/sha256/<hex>/chunks`).
pub const MAX_CHUNK_MAP: u64 = 1 << 20;

/// Asks peer `p` which chunks it holds, waiting at most `timeout`.
async fn query_chunks(sh: &Shared, p: usize, timeout: Duration) -> ChunkMap {
    let Some(url) = sh.sched().peers[p].source.chunks_url.clone() else {
        return ChunkMap::Unknown;
    };
    let n = sh.spec.chunk_count();
    let deadline = Instant::now() + timeout;
    let mut resp = match tokio::time::timeout(timeout, sh.client.get(url).send()).await {
        Ok(Ok(r)) => r,
        _ => return ChunkMap::Unknown,
    };
    if resp.status() == StatusCode::NOT_FOUND {
        return ChunkMap::Absent;
    }
    if !resp.status().is_success() {
        return ChunkMap::Unknown;
    }
    // Capped while it is read: an endless body costs at most the cap.
    let lim = BodyLimits {
        max_len: MAX_CHUNK_MAP,
        deadline,
        silence: timeout,
        min_rate: 16 * 1024,
        grace: Duration::from_secs(1),
    };
    let body = match read_body(&mut resp, &lim).await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(peer = p, error = %e, "chunk map refused");
            return ChunkMap::Unknown;
        }
    };
    crate::wire::parse_chunk_map(&body, n, sh.spec.chunks.size)
}

/// Re-reads the chunk maps of the live peers that hold part of the object
/// (downloading themselves), every [`POLL_INTERVAL`], so chunks they verify
/// meanwhile become fetchable. Runs until aborted with the fetch.
async fn poll_maps(sh: Arc<Shared>) {
    let timeout = sh.opts.read_timeout.min(Duration::from_secs(2));
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let due: Vec<usize> = {
            let s = sh.sched();
            if s.done == s.chunks.len() {
                return;
            }
            (0..s.peers.len())
                .filter(|&p| {
                    let q = &s.peers[p];
                    q.dropped.is_none() && !q.seed && q.source.chunks_url.is_some()
                })
                .collect()
        };
        if due.is_empty() {
            continue;
        }
        let mut queries = JoinSet::new();
        for p in due {
            let sh = Arc::clone(&sh);
            queries.spawn(async move { (p, query_chunks(&sh, p, timeout).await) });
        }
        let n = sh.spec.chunk_count();
        let mut changed = false;
        while let Some(r) = queries.join_next().await {
            if let Ok((p, map)) = r {
                let mut s = sh.sched();
                let before = (s.peers[p].has.clone(), s.peers[p].seed);
                s.peers[p].set_map(map, n);
                changed |= before != (s.peers[p].has.clone(), s.peers[p].seed);
            }
        }
        if changed {
            sh.changed.notify_waiters();
        }
    }
}

/// How often the chunk maps of partial peers are re-read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Most peers one fetch uses (initial ones plus those from the feed).
pub const MAX_PEERS: usize = 64;

fn backoff_delay(opts: &FetchOptions, failures: u32) -> Duration {
    opts.backoff
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(Duration::from_secs(2))
}

/// A chunk's commit (write + whole-object hash) on the blocking pool.
type Commit = tokio::task::JoinHandle<Result<(), CasError>>;

/// Connection `k` of peer `p`. Its chunk commits overlap its next
/// request (at most one pending): the connection receives and hashes the
/// next chunk while a blocking thread writes the last one.
async fn worker(sh: Arc<Shared>, p: usize, k: usize) {
    let mut commit = None;
    worker_loop(Arc::clone(&sh), p, k, &mut commit).await;
    finish_commit(&sh, commit.take()).await;
}

/// Waits for a pending commit; `false` when it failed (the error is then
/// the fetch's fatal error and the fetch stops).
async fn finish_commit(sh: &Shared, commit: Option<Commit>) -> bool {
    let Some(c) = commit else { return true };
    let r = match c.await {
        Ok(r) => r,
        Err(e) => Err(CasError::Io {
            path: "writer".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    };
    let Err(e) = r else { return true };
    let mut s = sh.sched();
    if s.fatal.is_none() {
        s.fatal = Some(e);
    }
    drop(s);
    sh.stop.store(true, Ordering::Relaxed);
    sh.changed.notify_waiters();
    false
}

async fn worker_loop(sh: Arc<Shared>, p: usize, k: usize, commit: &mut Option<Commit>) {
    // A chunk whose slow request was abandoned while this peer was its only
    // source: resumed from here with what already arrived.
    let mut resume: Option<(usize, Prefix)> = None;
    // Slow requests in a row on this connection (as the only source)
    // without a finished chunk.
    let mut slow_strikes = 0u32;
    loop {
        if let Some((i, _)) = &resume {
            let i = *i;
            let mut s = sh.sched();
            if s.fatal.is_some() || s.peers[p].dropped.is_some() || sh.stop.load(Ordering::Relaxed)
            {
                sh.release(&mut s, p, i);
                drop(s);
                sh.changed.notify_waiters();
                return;
            }
            if s.chunks[i] == ChunkState::Done {
                // Another peer finished it meanwhile.
                resume = None;
                continue;
            }
        }
        let (i, prefix) = if let Some((i, prefix)) = resume.take() {
            (i, Some(prefix))
        } else {
            let i = match sh.pick(p, k) {
                Pick::Stop => return,
                Pick::Wait => {
                    if sh.stuck() {
                        // Peers still downloading may gain the missing
                        // chunks: the poller re-reads their chunk maps.
                        let any_active = {
                            let s = sh.sched();
                            // Peers still downloading may gain the missing
                            // chunks, but only while the fetch makes progress.
                            let waiting_ok = s.progressed.elapsed() < sh.opts.read_timeout * 3;
                            s.chunks
                                .iter()
                                .any(|c| matches!(c, ChunkState::InFlight(_)))
                                || (waiting_ok
                                    && s.peers.iter().any(|q| {
                                        q.dropped.is_none() && q.source.chunks_url.is_some()
                                    }))
                        };
                        if !any_active {
                            return;
                        }
                    }
                    let notified = sh.changed.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                    continue;
                }
                Pick::Chunk(i) => i,
            };
            (i, None)
        };
        let (floor, level_used) = {
            let s = sh.sched();
            let min = sh.opts.min_throughput.max(1);
            if s.only_source(p, i) {
                let level = s.peers[p].slow_level;
                ((min >> level.min(32)).max(1), level)
            } else {
                (min, 0)
            }
        };
        match fetch_chunk(&sh, p, i, floor, prefix).await {
            Ok((parts, digest)) => {
                if digest != sh.spec.chunks.sha256[i] {
                    sh.drop_peer(
                        p,
                        i,
                        format!("sent a bad chunk {i} (SHA-256 {digest})"),
                        true,
                    );
                    return;
                }
                // The first verified copy of a chunk is claimed here (so a
                // duplicate request in the endgame is cancelled at once)
                // and then written while this connection goes on; the
                // write failing is fatal.
                let claimed = {
                    let mut s = sh.sched();
                    s.peers[p].failures = 0;
                    if s.chunks[i] == ChunkState::Done {
                        false
                    } else {
                        s.chunks[i] = ChunkState::Done;
                        s.done += 1;
                        s.progressed = Instant::now();
                        let (a, b) = sh.spec.chunk_range(i);
                        s.peers[p].bytes += b - a;
                        s.peers[p].chunks += 1;
                        sh.done_bytes.fetch_add(b - a, Ordering::Relaxed);
                        true
                    }
                };
                if claimed {
                    if !finish_commit(&sh, commit.take()).await {
                        return;
                    }
                    let partial = Arc::clone(&sh.partial);
                    let whole = Arc::clone(&sh.whole);
                    *commit = Some(tokio::task::spawn_blocking(move || {
                        whole.commit(&partial, i, parts, &digest)
                    }));
                }
                slow_strikes = 0;
                sh.changed.notify_waiters();
            }
            Err(ChunkError::Cancelled) => {
                let mut s = sh.sched();
                sh.release(&mut s, p, i);
            }
            Err(ChunkError::NotFound(status)) => {
                sh.drop_peer(
                    p,
                    i,
                    format!("does not have the object (HTTP {status})"),
                    false,
                );
                return;
            }
            Err(ChunkError::Unavailable) => {
                let mut s = sh.sched();
                sh.release(&mut s, p, i);
                s.peers[p].lacks.insert(i);
                drop(s);
                sh.changed.notify_waiters();
            }
            Err(ChunkError::Slow(why, prefix)) => {
                enum Verdict {
                    Drop(String),
                    /// Ask again for the rest of the chunk (kept bytes).
                    Resume(u32),
                    /// Give the chunk back to the pool, keep the peer.
                    Abandon(u32),
                }
                let max = sh.opts.max_failures.max(1);
                let verdict = {
                    let mut s = sh.sched();
                    if !s.only_source(p, i) {
                        if sh.swarm(&s) {
                            // In a swarm every uplink is shared and a peer
                            // (the seed above all) is slow because it is
                            // popular, not because it is bad: hand the
                            // chunk to the others and keep the peer, unless
                            // it is slow `max` times in a row.
                            slow_strikes += 1;
                            if slow_strikes >= max {
                                Verdict::Drop(format!(
                                    "{slow_strikes} slow requests in a row, last: {why}"
                                ))
                            } else {
                                Verdict::Abandon(slow_strikes)
                            }
                        } else {
                            // Someone else can supply it: a slow peer only
                            // holds the fetch up.
                            Verdict::Drop(why.clone())
                        }
                    } else {
                        // The only source: slow but honest so far, so keep
                        // what arrived and ask again (bounded, with backoff,
                        // and with a lower floor each time).
                        let peer = &mut s.peers[p];
                        // Lower the floor one step per slow request at the
                        // current floor (the peer's other connections may
                        // have lowered it already).
                        if level_used >= peer.slow_level {
                            peer.slow_level = (level_used + 1).min(max - 1);
                        }
                        slow_strikes += 1;
                        if slow_strikes >= max {
                            Verdict::Drop(format!(
                                "{slow_strikes} slow requests in a row as the only source, last: {why}"
                            ))
                        } else {
                            Verdict::Resume(slow_strikes)
                        }
                    }
                };
                match verdict {
                    Verdict::Drop(reason) => {
                        sh.drop_peer(p, i, reason, false);
                        return;
                    }
                    Verdict::Abandon(strikes) => {
                        tracing::debug!(peer = p, chunk = i, %why, strikes, "slow in a swarm; chunk handed back");
                        {
                            let mut s = sh.sched();
                            sh.release(&mut s, p, i);
                        }
                        sh.changed.notify_waiters();
                        tokio::time::sleep(backoff_delay(&sh.opts, strikes)).await;
                    }
                    Verdict::Resume(strikes) => {
                        tracing::info!(
                            peer = p,
                            chunk = i,
                            %why,
                            strikes,
                            kept = prefix.len,
                            "only source is slow; resuming the chunk with a lower floor"
                        );
                        resume = Some((i, prefix));
                        tokio::time::sleep(backoff_delay(&sh.opts, strikes)).await;
                    }
                }
            }
            Err(ChunkError::Protocol(why)) => {
                sh.drop_peer(p, i, why, false);
                return;
            }
            Err(ChunkError::Transient(why)) => {
                let failures = {
                    let mut s = sh.sched();
                    sh.release(&mut s, p, i);
                    s.peers[p].failures += 1;
                    s.peers[p].failures
                };
                sh.changed.notify_waiters();
                if failures >= sh.opts.max_failures {
                    sh.drop_peer(
                        p,
                        i,
                        format!("{failures} failed requests, last: {why}"),
                        false,
                    );
                    return;
                }
                tracing::debug!(peer = p, chunk = i, %why, failures, "retrying");
                tokio::time::sleep(backoff_delay(&sh.opts, failures)).await;
            }
        }
    }
}

fn chunk_done(sh: &Shared, i: usize) -> bool {
    sh.stop.load(Ordering::Relaxed) || sh.sched().chunks[i] == ChunkState::Done
}

/// Fetches chunk `i` from peer `p`, giving up below `floor` bytes/s after
/// the grace period; `prefix` holds bytes an earlier request already got.
async fn fetch_chunk(
    sh: &Shared,
    p: usize,
    i: usize,
    floor: u64,
    prefix: Option<Prefix>,
) -> Result<(Vec<Bytes>, Sha256Digest), ChunkError> {
    let (chunk_start, end) = sh.spec.chunk_range(i);
    let want = (end - chunk_start) as usize;
    // The body's pieces are kept as they arrive (no copy into one buffer);
    // each is hashed at once, while it is in the CPU cache.
    let Prefix {
        mut parts,
        len: mut got,
        mut hasher,
    } = prefix.unwrap_or_else(|| Prefix {
        parts: Vec::new(),
        len: 0,
        hasher: Sha256::new(),
    });
    let kept = got;
    let start = chunk_start + kept as u64;
    let url = sh.sched().peers[p].source.object_url.clone();
    let t0 = Instant::now();
    let opts = &sh.opts;
    let req = sh
        .client
        .get(url)
        .header(RANGE, format!("bytes={}-{}", start, end - 1));
    let mut resp = match tokio::time::timeout(opts.read_timeout, req.send()).await {
        Err(_) => {
            return Err(ChunkError::Transient(format!(
                "no response within {:?}",
                opts.read_timeout
            )))
        }
        Ok(Err(e)) => return Err(ChunkError::Transient(error_chain(&e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expect = format!("bytes {}-{}/{}", start, end - 1, sh.spec.length);
            if cr != expect {
                return Err(ChunkError::Protocol(format!(
                    "answered range {cr:?} to a request for {expect:?}"
                )));
            }
        }
        StatusCode::OK => {
            if !(start == 0 && end == sh.spec.length) {
                return Err(ChunkError::Protocol("ignores Range requests".into()));
            }
        }
        StatusCode::NOT_FOUND | StatusCode::GONE => return Err(ChunkError::NotFound(status)),
        StatusCode::RANGE_NOT_SATISFIABLE => return Err(ChunkError::Unavailable),
        s if s.is_server_error()
            || s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT =>
        {
            return Err(ChunkError::Transient(format!("HTTP {s}")));
        }
        s => return Err(ChunkError::Protocol(format!("answered HTTP {s}"))),
    }
    let min_tp = floor.max(1) as f64;
    loop {
        // Time until the throughput rule fails at the current byte count
        // (of this request).
        let got_now = (got - kept) as f64;
        let need_by = opts.throughput_grace + Duration::from_secs_f64(got_now / min_tp);
        let wait = need_by
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(50))
            .min(opts.read_timeout);
        let next = tokio::select! {
            r = tokio::time::timeout(wait, resp.chunk()) => r,
            _ = sh.changed.notified() => {
                if chunk_done(sh, i) {
                    return Err(ChunkError::Cancelled);
                }
                continue;
            }
        };
        match next {
            Err(_) => {
                if got == want {
                    // Every byte is here; only the end of the body is late.
                    break;
                }
                let el = t0.elapsed();
                if el >= opts.throughput_grace {
                    let rate = (got - kept) as f64 / el.as_secs_f64();
                    if rate < min_tp {
                        return Err(ChunkError::Slow(
                            format!("too slow: {rate:.0} B/s < {floor} B/s on chunk {i}"),
                            Prefix {
                                parts,
                                len: got,
                                hasher,
                            },
                        ));
                    }
                }
                if wait >= opts.read_timeout {
                    // A stall may be the network: retry on a new connection
                    // (bounded by max_failures).
                    return Err(ChunkError::Transient(format!(
                        "silent for {:?}",
                        opts.read_timeout
                    )));
                }
            }
            Ok(Err(e)) => return Err(ChunkError::Transient(error_chain(&e))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(bytes))) => {
                if got + bytes.len() > want {
                    return Err(ChunkError::Protocol(format!(
                        "sent more than the {want} bytes asked for"
                    )));
                }
                hasher.update(&bytes);
                got += bytes.len();
                sh.flow_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if !bytes.is_empty() {
                    parts.push(bytes);
                }
                let el = t0.elapsed();
                let rate = (got - kept) as f64 / el.as_secs_f64();
                if el >= opts.throughput_grace && rate < min_tp && got < want {
                    return Err(ChunkError::Slow(
                        format!("too slow: {rate:.0} B/s < {floor} B/s on chunk {i}"),
                        Prefix {
                            parts,
                            len: got,
                            hasher,
                        },
                    ));
                }
                if chunk_done(sh, i) {
                    return Err(ChunkError::Cancelled);
                }
            }
        }
    }
    if got != want {
        return Err(ChunkError::Transient(format!(
            "body ended after {got} of {want} bytes"
        )));
    }
    Ok((parts, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks committed out of order, more of them early than
    /// [`HASH_HELD`] (so some are read back), in several pieces, plus a
    /// chunk found on disk at the start: the whole-object hash still comes
    /// out as the SHA-256 of the object, and the object finishes.
    #[test]
    fn whole_hash_follows_out_of_order_commits() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(10 * 4096 + 123))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let spec = ObjectSpec::of_bytes(&data, 4096);
        let n = spec.chunk_count();
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        let whole = WholeHash::new();
        let parts = |i: usize| {
            let (a, b) = spec.chunk_range(i);
            let c = &data[a as usize..b as usize];
            let mid = c.len() / 3;
            vec![
                Bytes::copy_from_slice(&c[..mid]),
                Bytes::copy_from_slice(&c[mid..]),
            ]
        };
        // Chunk 3 as if resumed: written before, known only as verified.
        let (a, b) = spec.chunk_range(3);
        let c3 = &data[a as usize..b as usize];
        partial.write_chunk(3, c3, &Sha256Digest::of(c3)).unwrap();
        whole.hold_resumed(3);
        for i in [9, 1, 7, 10, 5, 2, 8, 0, 6, 4] {
            whole
                .commit(&partial, i, parts(i), &spec.chunks.sha256[i])
                .unwrap();
        }
        assert_eq!(whole.lock().next, n);
        let digest = whole.finish(&partial).unwrap().expect("hash followed");
        assert_eq!(digest, spec.sha256);
        let path = partial.finish(&digest).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
    }

    /// A chunk whose parts do not hash to its signed digest is refused and
    /// leaves the whole-object hash where it was.
    #[test]
    fn commit_refuses_a_wrong_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let data = vec![7u8; 3 * 1000];
        let spec = ObjectSpec::of_bytes(&data, 1000);
        let lock = cas.try_lock(&spec.sha256).unwrap().unwrap();
        let partial = cas.open_partial(&spec, lock).unwrap();
        let whole = WholeHash::new();
        let junk = vec![Bytes::from(vec![8u8; 1000])];
        let bad = Sha256Digest::of(&[8u8; 1000]);
        assert!(whole.commit(&partial, 0, junk, &bad).is_err());
        assert!(!partial.is_verified(0));
        // The state is marked broken: the final hash is re-done from disk.
        assert!(whole.finish(&partial).unwrap().is_none());
    }
}
