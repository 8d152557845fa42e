//! The TUF client's transport over HTTP peers (and the cache as a fallback):
//! implements [`verifier::Transport`], honouring the byte caps the verifier
//! sets while the body is read ([`crate::body`]).
//!
//! A refresh runs peer by peer ([`PeerTransport::refresh_with`]): the
//! transport is pinned to one peer for a whole TUF refresh, so every file
//! of one attempt comes from one peer, within one overall budget
//! ([`TransportLimits::peer_budget`]) and above a minimum rate. Any failure
//! of that peer moves to the next one; a peer whose metadata fails to parse
//! or verify is dropped for the life of the transport and named in the
//! [`RefreshReport`]. The verifier persists a file only after every check,
//! so a peer's bad answer never changes the trusted state. When every peer
//! failed, one last attempt uses only the cache's metadata.
//!
//! The verifier's workflow is synchronous; this transport runs its requests
//! on a tokio runtime through a [`tokio::runtime::Handle`], so call the
//! updater from a thread that is not itself running async code (the main
//! thread or `spawn_blocking`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use verifier::{Rule, TransportError};

use crate::body::{read_body, BodyError, BodyLimits};
use crate::peer::Peer;

/// Time and rate limits of metadata requests.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    /// Everything one peer gets for one whole refresh attempt (every
    /// metadata file of it), and each request outside a refresh.
    pub peer_budget: Duration,
    /// Average bytes/s a body must keep up after a 2 s grace.
    pub min_rate: u64,
    /// Longest wait for the response head or the next body bytes.
    pub silence: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            peer_budget: Duration::from_secs(30),
            min_rate: 4 * 1024,
            silence: Duration::from_secs(10),
        }
    }
}

/// A peer dropped from the refresh: it served metadata that failed to
/// parse or verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPeer {
    /// The peer (its URL).
    pub label: String,
    /// What was wrong (the verifier's error chain).
    pub reason: String,
}

/// How a refresh went, peer by peer.
#[derive(Debug, Clone, Default)]
pub struct RefreshReport {
    /// The peer whose metadata was accepted; `None` when only the cache's
    /// metadata was used.
    pub used: Option<String>,
    /// Peers that served invalid metadata (dropped for the rest of this
    /// transport's life).
    pub dropped: Vec<DroppedPeer>,
    /// Peers that failed otherwise (unreachable, too slow, no such file,
    /// stale metadata), with why; they stay usable.
    pub failed: Vec<(String, String)>,
}

/// Which source one refresh attempt reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// One peer (its label) alone.
    Peer(&'a str),
    /// No peer: the cache's metadata only (the last attempt).
    Cache,
}

/// Every attempt of a refresh failed.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct RefreshError {
    /// One line over the attempts.
    pub summary: String,
    /// The verifier error that stands for the failure (see
    /// [`PeerTransport::refresh_with`] for which one).
    #[source]
    pub error: verifier::Error,
    /// The attempts.
    pub report: RefreshReport,
}

/// How one peer's failed attempt counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The local trusted state failed: no other peer helps.
    Local,
    /// The peer served metadata that does not parse or verify.
    Invalid,
    /// Correctly signed metadata that is older than the trusted state or
    /// expired (a stale peer, a replay, or a frozen repository).
    Stale,
    /// No usable answer (network, status, too slow, missing file).
    Unavailable,
}

fn verdict(e: &verifier::Error) -> Verdict {
    use verifier::Error as E;
    match e {
        E::Storage { .. } | E::NoTrustedRoot => Verdict::Local,
        E::Fetch {
            source: TransportError::TooLarge { .. },
            ..
        } => Verdict::Invalid,
        E::Fetch { .. } => Verdict::Unavailable,
        E::Rejected { rule, .. } => match rule {
            Rule::Rollback { .. } | Rule::MetaRollback { .. } | Rule::Expired { .. } => {
                Verdict::Stale
            }
            _ => Verdict::Invalid,
        },
        _ => Verdict::Unavailable,
    }
}

pub(crate) use verifier::error_chain as chain;

#[derive(Debug, Clone, Copy)]
enum Pin {
    /// Outside a refresh: the preferred peer first, then the others.
    None,
    /// One peer until the instant.
    Peer(usize, Instant),
    /// The cache only.
    Cache,
}

#[derive(Debug)]
struct PinState {
    pin: Pin,
    /// The peer of the last successful refresh.
    preferred: Option<usize>,
    /// Per peer: why it was dropped.
    dropped: Vec<Option<String>>,
}

/// Metadata and targets from any of several peers, then the cache.
#[derive(Debug)]
pub struct PeerTransport {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    peers: Vec<Peer>,
    cache_metadata: Option<PathBuf>,
    limits: TransportLimits,
    state: Mutex<PinState>,
    fetched: Mutex<BTreeMap<String, Vec<u8>>>,
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: request failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}")]
    Body {
        url: String,
        #[source]
        source: BodyError,
    },
    #[error("{0}: the peer's time budget for this refresh is used up")]
    Budget(String),
}

enum Outcome {
    Found(Vec<u8>),
    NotFound,
    TooLarge(u64),
    Failed(HttpError),
}

impl PeerTransport {
    /// A transport over `peers` (tried in order), falling back to the files
    /// under `cache_metadata` (`<cache>/tuf/metadata`), with the default
    /// [`TransportLimits`].
    pub fn new(
        client: reqwest::Client,
        handle: tokio::runtime::Handle,
        peers: Vec<Peer>,
        cache_metadata: Option<PathBuf>,
    ) -> Self {
        let n = peers.len();
        Self {
            client,
            handle,
            peers,
            cache_metadata,
            limits: TransportLimits::default(),
            state: Mutex::new(PinState {
                pin: Pin::None,
                preferred: None,
                dropped: vec![None; n],
            }),
            fetched: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces the time and rate limits.
    pub fn with_limits(mut self, limits: TransportLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Peers dropped so far for serving invalid metadata.
    pub fn dropped(&self) -> Vec<DroppedPeer> {
        let st = self.state();
        self.peers
            .iter()
            .zip(&st.dropped)
            .filter_map(|(p, d)| {
                d.as_ref().map(|r| DroppedPeer {
                    label: p.label(),
                    reason: r.clone(),
                })
            })
            .collect()
    }

    /// Every metadata file fetched so far, by name (to re-share the ones
    /// that the verifier accepted).
    pub fn fetched(&self) -> BTreeMap<String, Vec<u8>> {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the files of a failed attempt (they are not re-shared).
    fn clear_fetched(&self) {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn state(&self) -> MutexGuard<'_, PinState> {
        // Plain data: usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `refresh` (one whole TUF refresh, `Updater::refresh`) once per
    /// peer, in order, with the transport pinned to that peer, until one
    /// succeeds; then once more against the cache's metadata alone.
    ///
    /// * A peer whose metadata does not parse or verify (bad signature,
    ///   wrong length or hash, endless body, wrong type, ...) is dropped
    ///   for the rest of this transport's life, with a warning naming it.
    /// * A peer that is unreachable, too slow, lacks a file, or serves
    ///   correctly signed but stale metadata (rollback, expired) is passed
    ///   over, not dropped.
    /// * A failure of the local trusted state ends the refresh at once.
    ///
    /// When every attempt failed the error stands for the repository: the
    /// rollback or expiry if every peer that answered showed one (the
    /// repository is bad for everyone), else the cache attempt's own
    /// rejection, else the last peer's error.
    pub fn refresh_with(
        &self,
        mut refresh: impl FnMut(Attempt<'_>) -> Result<(), verifier::Error>,
    ) -> Result<RefreshReport, Box<RefreshError>> {
        let mut report = RefreshReport::default();
        let mut stale: Option<verifier::Error> = None;
        let mut invalid = 0usize;
        let mut last: Option<verifier::Error> = None;
        for (i, peer) in self.peers.iter().enumerate() {
            if self.state().dropped[i].is_some() {
                continue;
            }
            let label = peer.label();
            self.clear_fetched();
            self.state().pin = Pin::Peer(i, Instant::now() + self.limits.peer_budget);
            let r = refresh(Attempt::Peer(&label));
            self.state().pin = Pin::None;
            let e = match r {
                Ok(()) => {
                    self.state().preferred = Some(i);
                    report.used = Some(label);
                    return Ok(report);
                }
                Err(e) => e,
            };
            let why = chain(&e);
            match verdict(&e) {
                Verdict::Local => return Err(self.failed(report, e)),
                Verdict::Invalid => {
                    tracing::warn!(peer = %label, error = %why, "peer served invalid metadata; dropped");
                    self.state().dropped[i] = Some(why.clone());
                    report.dropped.push(DroppedPeer { label, reason: why });
                    invalid += 1;
                    last = Some(e);
                }
                Verdict::Stale => {
                    tracing::warn!(peer = %label, error = %why, "peer served stale metadata; next peer");
                    report.failed.push((label, why));
                    stale = Some(e);
                }
                Verdict::Unavailable => {
                    tracing::warn!(peer = %label, error = %why, "metadata refresh from peer failed; next peer");
                    report.failed.push((label, why));
                    last = Some(e);
                }
            }
        }
        self.clear_fetched();
        self.state().pin = Pin::Cache;
        let r = refresh(Attempt::Cache);
        self.state().pin = Pin::None;
        let cache_err = match r {
            Ok(()) => return Ok(report),
            Err(e) => e,
        };
        let chosen = match (stale, invalid) {
            (Some(s), 0) => s,
            (s, _) => {
                if matches!(cache_err, verifier::Error::Rejected { .. }) || last.is_none() {
                    cache_err
                } else {
                    last.or(s).unwrap_or(cache_err)
                }
            }
        };
        Err(self.failed(report, chosen))
    }

    fn failed(&self, report: RefreshReport, error: verifier::Error) -> Box<RefreshError> {
        let mut parts = Vec::new();
        if !report.dropped.is_empty() {
            parts.push(format!(
                "dropped for invalid metadata: {}",
                report
                    .dropped
                    .iter()
                    .map(|d| d.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !report.failed.is_empty() {
            parts.push(format!(
                "failed: {}",
                report
                    .failed
                    .iter()
                    .map(|(l, _)| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let summary = if parts.is_empty() {
            "TUF refresh failed".to_string()
        } else {
            format!("TUF refresh failed from every peer ({})", parts.join("; "))
        };
        Box::new(RefreshError {
            summary,
            error,
            report,
        })
    }

    async fn get(&self, url: url::Url, max_len: u64, deadline: Instant) -> Outcome {
        let u = url.to_string();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Failed(HttpError::Budget(u));
        }
        let head_wait = left.min(self.limits.silence);
        let send = tokio::time::timeout(head_wait, self.client.get(url).send()).await;
        let mut resp = match send {
            Err(_) => {
                return Outcome::Failed(HttpError::Timeout {
                    url: u,
                    timeout: head_wait,
                })
            }
            Ok(Err(source)) => return Outcome::Failed(HttpError::Request { url: u, source }),
            Ok(Ok(r)) => r,
        };
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::GONE => {
                return Outcome::NotFound
            }
            status => return Outcome::Failed(HttpError::Status { url: u, status }),
        }
        let lim = BodyLimits {
            max_len,
            deadline,
            silence: self.limits.silence,
            min_rate: self.limits.min_rate,
            grace: Duration::from_secs(2),
        };
        match read_body(&mut resp, &lim).await {
            Ok(b) => Outcome::Found(b),
            Err(BodyError::TooLarge { max }) => Outcome::TooLarge(max),
            Err(source) => Outcome::Failed(HttpError::Body { url: u, source }),
        }
    }

    fn fetch(
        &self,
        rel: &str,
        max_len: u64,
        cache_name: Option<&str>,
    ) -> Result<Vec<u8>, TransportError> {
        // Which peers, each with its deadline.
        let order: Vec<(usize, Option<Instant>)> = {
            let st = self.state();
            match st.pin {
                Pin::Peer(i, until) => vec![(i, Some(until))],
                Pin::Cache => Vec::new(),
                Pin::None => {
                    let live = |i: &usize| st.dropped[*i].is_none();
                    st.preferred
                        .into_iter()
                        .chain((0..self.peers.len()).filter(|&i| Some(i) != st.preferred))
                        .filter(live)
                        .map(|i| (i, None))
                        .collect()
                }
            }
        };
        let pinned = order.len() == 1 && order[0].1.is_some();
        let mut last_err: Option<HttpError> = None;
        let mut too_large = None;
        for (i, until) in order {
            let peer = &self.peers[i];
            let Ok(url) = peer.repo_base().join(rel) else {
                continue;
            };
            let deadline = until.unwrap_or_else(|| Instant::now() + self.limits.peer_budget);
            match self.handle.block_on(self.get(url, max_len, deadline)) {
                Outcome::Found(b) => return Ok(b),
                Outcome::NotFound => {}
                Outcome::TooLarge(m) => too_large = Some(m),
                Outcome::Failed(e) => {
                    tracing::warn!(peer = %peer.label(), error = %chain(&e), "metadata request failed");
                    last_err = Some(e);
                }
            }
        }
        if let Some(max) = too_large {
            return Err(TransportError::TooLarge { max });
        }
        // A pinned peer's answer is the attempt's answer: a failure or a
        // missing file is not made up for from the cache (that would hide
        // a peer withholding metadata behind older copies, while an honest
        // peer after it has newer ones); the cache has its own attempt.
        if pinned {
            return Err(match last_err {
                Some(e) => TransportError::other(e),
                None => TransportError::NotFound,
            });
        }
        if let (Some(dir), Some(name)) = (&self.cache_metadata, cache_name) {
            if let Some(b) = read_capped(&dir.join(name), max_len)? {
                return Ok(b);
            }
        }
        match last_err {
            Some(e) => Err(TransportError::other(e)),
            None => Err(TransportError::NotFound),
        }
    }
}

fn read_capped(path: &Path, max_len: u64) -> Result<Option<Vec<u8>>, TransportError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TransportError::other(e)),
    };
    verifier::read_capped(f, max_len).map(Some)
}

fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

impl verifier::Transport for PeerTransport {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        if !plain_name(name) {
            return Err(TransportError::NotFound);
        }
        let b = self.fetch(&format!("metadata/{name}"), max_len, Some(name))?;
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), b.clone());
        Ok(b)
    }

    fn fetch_target(&self, path: &str, max_len: u64) -> Result<Box<dyn Read + '_>, TransportError> {
        if path.split('/').any(|s| !plain_name(s)) {
            return Err(TransportError::NotFound);
        }
        let b = self.fetch(&format!("targets/{path}"), max_len, None)?;
        Ok(Box::new(std::io::Cursor::new(b)))
    }
}
