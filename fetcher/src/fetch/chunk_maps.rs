//! Which chunks each peer holds: its `/chunks` answer, asked at the start
//! and re-read while the peer is downloading too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::task::JoinSet;

use crate::body::{read_body, BodyLimits};
use crate::wire::ChunkMap;

use super::shared::Shared;
use super::{MAX_CHUNK_MAP, POLL_INTERVAL};

/// Asks peer `p` which chunks it holds, waiting at most `timeout`.
pub(super) async fn query_chunks(sh: &Shared, p: usize, timeout: Duration) -> ChunkMap {
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
pub(super) async fn poll_maps(sh: Arc<Shared>) {
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
