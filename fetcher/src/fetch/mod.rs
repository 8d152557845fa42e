//! The fetch engine: one object from several peers at once, chunk by chunk
//! over HTTP `Range`, each chunk checked against its signed digest as it
//! arrives; the object gets its final name once every chunk matched. The
//! signed chunk list fixes every byte, so the object is not hashed a second
//! time as a whole, unless the options ask for it (`verify_whole`, for a
//! chunk list no signature binds to the object's SHA-256).
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

mod budget;
mod chunk;
mod chunk_maps;
mod client;
mod run;
mod sched;
mod shared;
mod whole_hash;
mod worker;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;

use crate::cas::{Cas, CasError, ObjectLock, PartialObject, Stored};
use crate::digest::Sha256Digest;
use crate::object::{ObjectSpec, SpecError};

use budget::Budget;
pub use budget::ChunkMemory;
pub use client::{redirect_policy, MAX_REDIRECTS};
use run::Run;
use shared::Shared;
use whole_hash::WholeHash;

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
    /// Hash every object whole before it gets its final name, even when
    /// every chunk matched the chunk list. Off by default: a chunk list
    /// signed together with the object's SHA-256 (a TUF target's) already
    /// fixes every byte, and the object is stored with a record of that
    /// list ([`crate::cas::Stored::Chunks`]). Turn it on for a chunk list
    /// that no signature binds to the digest.
    pub verify_whole: bool,
    /// Bytes of chunks the fetcher keeps in memory at once, over all its
    /// connections and fetches. A chunk's first request writes it into
    /// the partial file as it arrives; only endgame duplicates (started
    /// only when there is room) and, with `verify_whole`, every chunk
    /// (a connection waits for room before it asks for one) are received
    /// into memory, written once verified and held for the whole-object
    /// hash. A chunk larger than this is let in alone.
    pub chunk_memory: u64,
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
            verify_whole: false,
            chunk_memory: DEFAULT_CHUNK_MEMORY,
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
    /// Chunk bytes in memory, shared by every fetch of this fetcher (and
    /// its clones).
    budget: Arc<Budget>,
    /// The proxied route's gateway, kept alive with the client.
    _route: Option<std::sync::Arc<crate::tor::Gateway>>,
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
            budget: Budget::new(opts.chunk_memory),
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
            budget: Budget::new(opts.chunk_memory),
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

    /// Chunk bytes in memory now and at most so far, against the budget
    /// (`FetchOptions::chunk_memory`).
    pub fn chunk_memory(&self) -> ChunkMemory {
        self.budget.memory()
    }

    /// Whether the stored object `spec.sha256` stands for `spec` without a
    /// look at its bytes: it was hashed whole, or stored for this very
    /// chunk list (and the options do not ask for a whole hash).
    pub fn stored_fits(&self, spec: &ObjectSpec) -> bool {
        self.fits(spec, self.cas.stored(&spec.sha256))
    }

    /// Whether an object stored on the strength `stored` (in this CAS or
    /// another cache) stands for `spec` without a look at its bytes.
    pub fn fits(&self, spec: &ObjectSpec, stored: Stored) -> bool {
        match stored {
            Stored::Whole => true,
            Stored::Chunks(list) => !self.opts.verify_whole && list == spec.chunks.digest(),
            Stored::Unknown => false,
        }
    }

    /// The stored object was verified against another chunk list than
    /// `spec`'s (or its record is unreadable): hashes it whole. `true` when
    /// it is the object; else it is moved to the quarantine (never
    /// deleted) and `false` (fetch it anew). The caller holds the lock.
    async fn confirm_stored(&self, spec: &ObjectSpec) -> Result<bool, FetchError> {
        let (cas, digest, length) = (self.cas.clone(), spec.sha256, spec.length);
        tokio::task::spawn_blocking(move || {
            if cas.confirm_whole(&digest, length)? {
                return Ok(true);
            }
            let to = cas.quarantine(&digest)?;
            tracing::warn!(
                object = %digest,
                quarantine = %to.display(),
                "stored object does not match its name; moved aside, fetching it anew"
            );
            Ok(false)
        })
        .await
        .map_err(|e| FetchError::Task(digest, e))?
        .map_err(|e| FetchError::Cas(digest, e))
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
        feed: Option<SourceFeed>,
        progress: Option<ProgressFn>,
    ) -> Result<FetchReport, FetchError> {
        let start = Instant::now();
        let digest = spec.sha256;
        spec.validate().map_err(|e| FetchError::Spec(digest, e))?;
        let deadline = start + self.opts.deadline;
        let Some(lock) = self.claim(spec, deadline).await? else {
            return Ok(FetchReport {
                sha256: digest,
                length: spec.length,
                path: self.cas.object_path(&digest),
                elapsed: start.elapsed(),
                already_present: true,
                resumed_chunks: 0,
                peers: Vec::new(),
            });
        };
        let partial = Arc::new(self.resume(spec, lock).await?);
        let resumed = partial.resumed_chunks();
        let shared = self.plan(spec, Arc::clone(&partial), sources, feed.is_some())?;
        let whole = shared.whole.clone();
        let mut run = Run::start(shared, feed, progress.clone()).await;
        let timed_out = run.drive(deadline).await?;
        let peers = run.finish(timed_out).await?;
        let path = store(partial, whole).await?;
        let mem = self.budget.memory();
        tracing::debug!(
            object = %digest,
            peak = mem.peak,
            budget = mem.budget,
            "chunk bytes in memory at most"
        );
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
            peers,
        })
    }

    /// Takes the object's lock, waiting for another writer (bounded by
    /// `deadline`). `None`: the object is stored already and stands for
    /// `spec`, before the wait or after it (another writer may have
    /// finished meanwhile; an object stored for another chunk list is
    /// hashed whole first).
    async fn claim(
        &self,
        spec: &ObjectSpec,
        deadline: Instant,
    ) -> Result<Option<ObjectLock>, FetchError> {
        let digest = spec.sha256;
        if self.cas.contains(&digest) && self.stored_fits(spec) {
            return Ok(None);
        }
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
        if self.cas.contains(&digest)
            && (self.stored_fits(spec) || self.confirm_stored(spec).await?)
        {
            return Ok(None);
        }
        Ok(Some(lock))
    }

    /// Opens the object's partial file (on the blocking pool); the chunks
    /// an interrupted fetch left in it count as done.
    async fn resume(
        &self,
        spec: &ObjectSpec,
        lock: ObjectLock,
    ) -> Result<PartialObject, FetchError> {
        let digest = spec.sha256;
        let cas = self.cas.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || cas.open_partial(&spec, lock))
            .await
            .map_err(|e| FetchError::Task(digest, e))?
            .map_err(|e| FetchError::Cas(digest, e))
    }

    /// The state the fetch's tasks share: the sources to ask (repeated
    /// object URLs once, at most [`MAX_PEERS`]) and the chunks still
    /// missing. No source, no feed and something missing: [`FetchError::NoPeers`].
    fn plan(
        &self,
        spec: &ObjectSpec,
        partial: Arc<PartialObject>,
        sources: Vec<Source>,
        has_feed: bool,
    ) -> Result<Arc<Shared>, FetchError> {
        let missing = partial.missing();
        let mut sources = dedup_sources(sources);
        sources.truncate(MAX_PEERS);
        if !missing.is_empty() && sources.is_empty() && !has_feed {
            return Err(FetchError::NoPeers(spec.sha256));
        }
        Ok(Arc::new(Shared::new(
            self, spec, partial, &missing, sources, has_feed,
        )))
    }
}

/// Gives the complete partial its final name (on the blocking pool): on the
/// strength of its chunks when no whole-object hash ran (`whole` is
/// `None`), else after the whole-object SHA-256 matched (the streaming one,
/// or the file hashed again when it could not follow).
async fn store(
    partial: Arc<PartialObject>,
    whole: Option<Arc<WholeHash>>,
) -> Result<std::path::PathBuf, FetchError> {
    let digest = partial.spec().sha256;
    let partial = Arc::try_unwrap(partial).map_err(|_| {
        FetchError::Cas(
            digest,
            CasError::Io {
                path: "partial".into(),
                source: std::io::Error::other("partial object still shared"),
            },
        )
    })?;
    tokio::task::spawn_blocking(move || match whole {
        None => partial.finish_by_chunks(),
        Some(w) => {
            let sum = match w.finish(&partial)? {
                Some(sum) => sum,
                None => partial.hash_all()?,
            };
            // A mismatch here means every chunk matched its signed digest
            // yet the whole does not: the description is inconsistent.
            partial.finish(&sum)
        }
    })
    .await
    .map_err(|e| FetchError::Task(digest, e))?
    .map_err(|e| FetchError::Cas(digest, e))
}

/// Sources that join a running fetch (see [`Fetcher::fetch_with_feed`]).
pub type SourceFeed = tokio::sync::mpsc::UnboundedReceiver<Source>;

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

/// Largest chunk map accepted (`/cas/sha256/<hex>/chunks`).
pub const MAX_CHUNK_MAP: u64 = 1 << 20;

/// How often the chunk maps of partial peers are re-read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Most peers one fetch uses (initial ones plus those from the feed).
pub const MAX_PEERS: usize = 64;

/// The default of `FetchOptions::chunk_memory`: 24 MiB, six chunks of
/// 4 MiB (the largest default chunk size: three peers with two
/// connections each), 48 of 512 KiB.
pub const DEFAULT_CHUNK_MEMORY: u64 = 24 << 20;
