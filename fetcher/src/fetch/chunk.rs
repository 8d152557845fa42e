//! One chunk from one peer: a `Range` request, its answer checked, the
//! body hashed as it arrives under the throughput rule.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use verifier::error_chain;

use crate::digest::Sha256Digest;

use super::sched::ChunkState;
use super::shared::Shared;

/// Bytes of a chunk received by an abandoned (slow) request, kept so the
/// retry asks only for the rest.
pub(super) struct Prefix {
    parts: Vec<Bytes>,
    pub(super) len: usize,
    hasher: Sha256,
}

pub(super) enum ChunkError {
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

fn chunk_done(sh: &Shared, i: usize) -> bool {
    sh.stop.load(Ordering::Relaxed) || sh.sched().chunks[i] == ChunkState::Done
}

/// Fetches chunk `i` from peer `p`, giving up below `floor` bytes/s after
/// the grace period; `prefix` holds bytes an earlier request already got.
pub(super) async fn fetch_chunk(
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
