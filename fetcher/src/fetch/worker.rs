//! One connection to one peer: it takes chunks from the scheduler, fetches
//! them, and decides what a failure means for the peer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cas::CasError;

use super::chunk::{fetch_chunk, ChunkError, Prefix};
use super::sched::{ChunkState, Pick};
use super::shared::Shared;
use super::FetchOptions;

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
pub(super) async fn worker(sh: Arc<Shared>, p: usize, k: usize) {
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
                s.release(p, i);
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
                    if sh.sched().stuck() {
                        // Peers still downloading may gain the missing
                        // chunks: the poller re-reads their chunk maps.
                        let any_active = sh.sched().may_progress(sh.opts.read_timeout * 3);
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
                let claimed = sh.claim(p, i);
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
                s.release(p, i);
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
                s.release(p, i);
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
                        if s.swarm() {
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
                            s.release(p, i);
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
                        resume = Some((i, *prefix));
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
                    s.release(p, i);
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
