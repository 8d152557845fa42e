//! The TUF client's transport over HTTP peers (and the cache as a fallback):
//! implements [`verifier::Transport`], honouring the byte caps the verifier
//! sets by cutting the body at `max_len + 1` bytes.
//!
//! The verifier's workflow is synchronous; this transport runs its requests
//! on a tokio runtime through a [`tokio::runtime::Handle`], so call the
//! updater from a thread that is not itself running async code (the main
//! thread or `spawn_blocking`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use verifier::TransportError;

use crate::peer::Peer;

/// Metadata and targets from any of several peers, then the cache.
#[derive(Debug)]
pub struct PeerTransport {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    peers: Vec<Peer>,
    cache_metadata: Option<PathBuf>,
    timeout: Duration,
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
}

enum Outcome {
    Found(Vec<u8>),
    NotFound,
    TooLarge(u64),
    Failed(HttpError),
}

impl PeerTransport {
    /// A transport over `peers` (tried in order), falling back to the files
    /// under `cache_metadata` (`<cache>/tuf/metadata`).
    pub fn new(
        client: reqwest::Client,
        handle: tokio::runtime::Handle,
        peers: Vec<Peer>,
        cache_metadata: Option<PathBuf>,
    ) -> Self {
        Self {
            client,
            handle,
            peers,
            cache_metadata,
            timeout: Duration::from_secs(30),
            fetched: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every metadata file fetched so far, by name (to re-share the ones
    /// that the verifier accepted).
    pub fn fetched(&self) -> BTreeMap<String, Vec<u8>> {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn get(&self, url: url::Url, max_len: u64) -> Outcome {
        let u = url.to_string();
        let send = tokio::time::timeout(self.timeout, self.client.get(url).send()).await;
        let mut resp = match send {
            Err(_) => {
                return Outcome::Failed(HttpError::Timeout {
                    url: u,
                    timeout: self.timeout,
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
        if resp.content_length().is_some_and(|l| l > max_len) {
            return Outcome::TooLarge(max_len);
        }
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(self.timeout, resp.chunk()).await {
                Err(_) => {
                    return Outcome::Failed(HttpError::Timeout {
                        url: u,
                        timeout: self.timeout,
                    })
                }
                Ok(Err(source)) => return Outcome::Failed(HttpError::Request { url: u, source }),
                Ok(Ok(None)) => return Outcome::Found(body),
                Ok(Ok(Some(b))) => {
                    body.extend_from_slice(&b);
                    if body.len() as u64 > max_len {
                        return Outcome::TooLarge(max_len);
                    }
                }
            }
        }
    }

    fn fetch(
        &self,
        rel: &str,
        max_len: u64,
        cache_name: Option<&str>,
    ) -> Result<Vec<u8>, TransportError> {
        let mut last_err: Option<HttpError> = None;
        let mut too_large = None;
        for peer in &self.peers {
            let Ok(url) = peer.repo_base().join(rel) else {
                continue;
            };
            match self.handle.block_on(self.get(url, max_len)) {
                Outcome::Found(b) => return Ok(b),
                Outcome::NotFound => {}
                Outcome::TooLarge(m) => too_large = Some(m),
                Outcome::Failed(e) => {
                    tracing::warn!(peer = %peer.label(), error = %e, "metadata request failed");
                    last_err = Some(e);
                }
            }
        }
        if let (Some(dir), Some(name)) = (&self.cache_metadata, cache_name) {
            if let Some(b) = read_capped(&dir.join(name), max_len)? {
                return Ok(b);
            }
        }
        if let Some(max) = too_large {
            return Err(TransportError::TooLarge { max });
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
