//! One chunk from one peer: a `Range` request, its answer checked, the
//! body hashed as it arrives under the throughput rule.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};
use verifier::error_chain;

use crate::cas::{CasError, PartialObject};
use crate::digest::Sha256Digest;

use super::budget::{ChunkBuf, Grant};
use super::sched::ChunkState;
use super::shared::Shared;

/// Where a chunk's bytes go as they arrive.
pub(super) enum Store {
    /// Straight into the partial file at their offset: the chunk's first
    /// request, its only writer while it is in flight. Nothing is kept in
    /// memory, and the bytes count only once the chunk matched its signed
    /// digest (see [`crate::cas::PartialObject::write_piece`]).
    Direct,
    /// Into a buffer under the chunk's share of the memory budget, written
    /// once verified: an endgame duplicate (a second request for a range
    /// another request writes), or every chunk when the whole-object hash
    /// takes them in order.
    Buffer(ChunkBuf),
}

/// Bytes of a chunk received so far, where they went, and their running
/// hash. What an abandoned (slow) request got is kept in one, so the retry
/// asks only for the rest.
pub(super) struct Prefix {
    store: Store,
    pub(super) len: usize,
    hasher: Sha256,
}

impl Prefix {
    /// Nothing yet; the bytes go into the partial file.
    pub(super) fn direct() -> Self {
        Self::new(Store::Direct)
    }

    /// Nothing yet; the bytes go into a buffer under `grant`.
    pub(super) fn buffered(grant: Grant) -> Self {
        Self::new(Store::Buffer(ChunkBuf::new(grant)))
    }

    fn new(store: Store) -> Self {
        Self {
            store,
            len: 0,
            hasher: Sha256::new(),
        }
    }

    /// Takes the next piece of chunk `i`: hashed at once, then written
    /// (or copied into the chunk's buffer) while it is in the CPU cache.
    /// `Ok(false)` when a verified copy of the chunk is being written
    /// from elsewhere (nothing written).
    fn push(&mut self, partial: &PartialObject, i: usize, bytes: Bytes) -> Result<bool, CasError> {
        self.hasher.update(&bytes);
        match &mut self.store {
            Store::Direct => {
                if !partial.write_piece(i, self.len as u64, &bytes)? {
                    return Ok(false);
                }
            }
            Store::Buffer(buf) => buf.push(&bytes),
        }
        self.len += bytes.len();
        Ok(true)
    }
}

pub(super) enum ChunkError {
    /// Peer does not have the object at all.
    NotFound(StatusCode),
    /// Peer does not have this range (yet).
    Unavailable,
    /// Below the throughput floor; what arrived so far.
    Slow(String, Box<Prefix>),
    /// Network or server trouble worth a retry.
    Transient(String),
    /// Protocol violation (not malicious bytes, but unusable).
    Protocol(String),
    /// The chunk was completed by another peer meanwhile.
    Cancelled,
    /// Writing into the partial file failed: the fetch cannot go on.
    Write(CasError),
}

fn chunk_done(sh: &Shared, i: usize) -> bool {
    sh.stop.load(Ordering::Relaxed) || sh.sched().chunks[i] == ChunkState::Done
}

/// Fetches chunk `i` from peer `p`, giving up below `floor` bytes/s after
/// the grace period, into `prefix` (with the bytes an earlier request
/// already got, if any).
pub(super) async fn fetch_chunk(
    sh: &Shared,
    p: usize,
    i: usize,
    floor: u64,
    prefix: Prefix,
) -> Result<(Store, Sha256Digest), ChunkError> {
    let (chunk_start, end) = sh.spec.chunk_range(i);
    let got = prefix;
    let kept = got.len;
    let start = chunk_start + kept as u64;
    let url = sh.sched().peers[p].source.object_url.clone();
    let body = Body {
        sh,
        chunk: i,
        want: (end - chunk_start) as usize,
        got,
        kept,
        floor,
        t0: Instant::now(),
        own_work: Duration::ZERO,
    };
    let mut resp = request_range(sh, url, start, end).await?;
    check_answer(&resp, start, end, sh.spec.length)?;
    body.receive(&mut resp).await
}

/// Asks `url` for bytes `start..end`, waiting at most `read_timeout` for
/// the answer's head.
async fn request_range(
    sh: &Shared,
    url: Url,
    start: u64,
    end: u64,
) -> Result<Response, ChunkError> {
    let read_timeout = sh.opts.read_timeout;
    let req = sh
        .client
        .get(url)
        .header(RANGE, format!("bytes={}-{}", start, end - 1));
    match tokio::time::timeout(read_timeout, req.send()).await {
        Err(_) => Err(ChunkError::Transient(format!(
            "no response within {read_timeout:?}"
        ))),
        Ok(Err(e)) => Err(ChunkError::Transient(error_chain(&e))),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Whether the answer to a request for bytes `start..end` of an object of
/// `length` bytes carries exactly those bytes; else what its status means.
fn check_answer(resp: &Response, start: u64, end: u64, length: u64) -> Result<(), ChunkError> {
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expect = format!("bytes {}-{}/{}", start, end - 1, length);
            if cr != expect {
                return Err(ChunkError::Protocol(format!(
                    "answered range {cr:?} to a request for {expect:?}"
                )));
            }
            Ok(())
        }
        StatusCode::OK if start == 0 && end == length => Ok(()),
        StatusCode::OK => Err(ChunkError::Protocol("ignores Range requests".into())),
        s @ (StatusCode::NOT_FOUND | StatusCode::GONE) => Err(ChunkError::NotFound(s)),
        StatusCode::RANGE_NOT_SATISFIABLE => Err(ChunkError::Unavailable),
        s if s.is_server_error()
            || s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT =>
        {
            Err(ChunkError::Transient(format!("HTTP {s}")))
        }
        s => Err(ChunkError::Protocol(format!("answered HTTP {s}"))),
    }
}

/// The body of one `Range` answer as it arrives, under the throughput
/// rule: after `throughput_grace` this request must keep up `floor`
/// bytes/s on average.
struct Body<'a> {
    sh: &'a Shared,
    /// The chunk.
    chunk: usize,
    /// Its length.
    want: usize,
    /// Its bytes so far, those of an earlier request included.
    got: Prefix,
    /// Bytes an earlier request got (not counted for this one's rate).
    kept: usize,
    floor: u64,
    /// When the request was sent.
    t0: Instant,
    /// Time this side spent on the pieces (hashing them, writing them
    /// into the partial file): a slow disk is not the peer's fault, so it
    /// does not count against the peer's rate.
    own_work: Duration,
}

impl Body<'_> {
    /// Reads the body to its end: the chunk's pieces and their digest.
    async fn receive(mut self, resp: &mut Response) -> Result<(Store, Sha256Digest), ChunkError> {
        loop {
            let wait = self.wait();
            let next = tokio::select! {
                r = tokio::time::timeout(wait, resp.chunk()) => r,
                _ = self.sh.changed.notified() => {
                    if chunk_done(self.sh, self.chunk) {
                        return Err(ChunkError::Cancelled);
                    }
                    continue;
                }
            };
            let step = match next {
                Err(_) => {
                    if self.got.len == self.want {
                        // Every byte is here; only the end of the body is late.
                        break;
                    }
                    self.silent(wait)
                }
                Ok(Err(e)) => return Err(ChunkError::Transient(error_chain(&e))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => self.take(bytes),
            };
            match step {
                Ok(()) => {}
                Err(Halt::Slow(rate)) => return Err(self.too_slow(rate)),
                Err(Halt::Fail(e)) => return Err(e),
            }
        }
        let (got, want) = (self.got.len, self.want);
        if got != want {
            return Err(ChunkError::Transient(format!(
                "body ended after {got} of {want} bytes"
            )));
        }
        Ok((self.got.store, self.got.hasher.finalize().into()))
    }

    /// How long the next piece may take: until the throughput rule fails at
    /// the current byte count (at least 50 ms, at most `read_timeout`).
    fn wait(&self) -> Duration {
        let opts = &self.sh.opts;
        let got_now = (self.got.len - self.kept) as f64;
        let need_by = opts.throughput_grace + Duration::from_secs_f64(got_now / self.min_rate());
        need_by
            .saturating_sub(self.peer_time())
            .max(Duration::from_millis(50))
            .min(opts.read_timeout)
    }

    /// No piece arrived within `wait`: below the floor after the grace
    /// period, or silent for `read_timeout`, ends the request.
    fn silent(&mut self, wait: Duration) -> Result<(), Halt> {
        let opts = &self.sh.opts;
        let el = self.peer_time();
        if el >= opts.throughput_grace {
            let rate = self.rate(el);
            if rate < self.min_rate() {
                return Err(Halt::Slow(rate));
            }
        }
        if wait >= opts.read_timeout {
            // A stall may be the network: retry on a new connection
            // (bounded by max_failures).
            return Err(Halt::Fail(ChunkError::Transient(format!(
                "silent for {:?}",
                opts.read_timeout
            ))));
        }
        Ok(())
    }

    /// The next piece of the body: kept and hashed, then the throughput
    /// rule, then whether another peer finished the chunk meanwhile.
    fn take(&mut self, bytes: Bytes) -> Result<(), Halt> {
        let want = self.want;
        if self.got.len + bytes.len() > want {
            return Err(Halt::Fail(ChunkError::Protocol(format!(
                "sent more than the {want} bytes asked for"
            ))));
        }
        let n = bytes.len() as u64;
        let t = Instant::now();
        let pushed = self.got.push(&self.sh.partial, self.chunk, bytes);
        self.own_work += t.elapsed();
        match pushed {
            Ok(true) => {}
            Ok(false) => return Err(Halt::Fail(ChunkError::Cancelled)),
            Err(e) => return Err(Halt::Fail(ChunkError::Write(e))),
        }
        self.sh.flow_bytes.fetch_add(n, Ordering::Relaxed);
        let el = self.peer_time();
        let rate = self.rate(el);
        if el >= self.sh.opts.throughput_grace && rate < self.min_rate() && self.got.len < want {
            return Err(Halt::Slow(rate));
        }
        if chunk_done(self.sh, self.chunk) {
            return Err(Halt::Fail(ChunkError::Cancelled));
        }
        Ok(())
    }

    /// How long this request has been waiting on the peer: since it was
    /// sent, less this side's own work on the pieces.
    fn peer_time(&self) -> Duration {
        self.t0.elapsed().saturating_sub(self.own_work)
    }

    /// The floor in bytes/s (never 0).
    fn min_rate(&self) -> f64 {
        self.floor.max(1) as f64
    }

    /// This request's average bytes/s after `el`.
    fn rate(&self, el: Duration) -> f64 {
        (self.got.len - self.kept) as f64 / el.as_secs_f64()
    }

    /// The request is below the floor: what arrived goes with the error.
    fn too_slow(self, rate: f64) -> ChunkError {
        ChunkError::Slow(
            format!(
                "too slow: {rate:.0} B/s < {} B/s on chunk {}",
                self.floor, self.chunk
            ),
            Box::new(self.got),
        )
    }
}

/// Why reading a body stops early.
enum Halt {
    /// Below the floor at this rate (bytes/s): the bytes so far go with
    /// [`ChunkError::Slow`].
    Slow(f64),
    Fail(ChunkError),
}
