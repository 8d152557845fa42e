//! One connection to one peer: it takes chunks from the scheduler, fetches
//! them, and decides what each outcome means for the chunk and the peer.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::cas::CasError;
use crate::digest::Sha256Digest;

use super::chunk::{fetch_chunk, ChunkError, Prefix, Store};
use super::sched::{ChunkState, Pick};
use super::shared::Shared;
use super::FetchOptions;

fn backoff_delay(opts: &FetchOptions, failures: u32) -> Duration {
    opts.backoff
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(Duration::from_secs(2))
}

/// A chunk's commit (the write, plus the whole-object hash when there is
/// one) on the blocking pool.
type Commit = tokio::task::JoinHandle<Result<(), CasError>>;

/// Connection `k` of peer `p`. Its chunk commits overlap its next
/// request (at most one pending): the connection receives and hashes the
/// next chunk while a blocking thread writes the last one. Each chunk
/// takes its share of the fetcher's memory budget before it is asked for
/// and gives it back once written (see [`super::budget`]).
pub(super) async fn worker(sh: Arc<Shared>, p: usize, k: usize) {
    let mut conn = Conn {
        sh,
        p,
        k,
        resume: None,
        slow_strikes: 0,
        commit: None,
    };
    conn.run().await;
    finish_commit(&conn.sh, conn.commit.take()).await;
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
    fail(sh, e);
    false
}

/// Ends the fetch with `e` (the first such error is the fetch's error).
fn fail(sh: &Shared, e: CasError) {
    let mut s = sh.sched();
    if s.fatal.is_none() {
        s.fatal = Some(e);
    }
    drop(s);
    sh.stop.store(true, Ordering::Relaxed);
    sh.changed.notify_waiters();
}

/// One connection and what it carries from one request to the next.
struct Conn {
    sh: Arc<Shared>,
    /// The peer.
    p: usize,
    /// Which of the peer's connections this is.
    k: usize,
    /// A chunk whose slow request was abandoned while this peer was its
    /// only source: resumed from here with what already arrived.
    resume: Option<(usize, Prefix)>,
    /// Slow requests in a row on this connection (as the only source)
    /// without a finished chunk.
    slow_strikes: u32,
    /// The last verified chunk's commit, while it runs.
    commit: Option<Commit>,
}

/// What a connection does next.
enum Next {
    /// Ask for this chunk (the rest of it, after the bytes kept).
    Fetch(usize, Prefix),
    /// Look again.
    Again,
    /// End the connection.
    Stop,
}

/// What a slow request means for the peer.
enum Verdict {
    Drop(String),
    /// Ask again for the rest of the chunk (kept bytes).
    Resume(u32),
    /// Give the chunk back to the pool, keep the peer.
    Abandon(u32),
}

impl Conn {
    /// Fetches chunks until the fetch is over or the peer is dropped.
    async fn run(&mut self) {
        loop {
            let (i, prefix) = match self.next().await {
                Next::Fetch(i, prefix) => (i, prefix),
                Next::Again => continue,
                Next::Stop => return,
            };
            let (floor, level_used) = self.floor(i);
            let outcome = fetch_chunk(&self.sh, self.p, i, floor, prefix).await;
            if self.settle(i, level_used, outcome).await.is_break() {
                return;
            }
        }
    }

    /// The chunk being resumed while it is still wanted, else the
    /// scheduler's pick.
    async fn next(&mut self) -> Next {
        let (sh, p) = (&self.sh, self.p);
        if let Some((i, _)) = &self.resume {
            let i = *i;
            let mut s = sh.sched();
            if s.fatal.is_some() || s.peers[p].dropped.is_some() || sh.stop.load(Ordering::Relaxed)
            {
                s.release(p, i);
                drop(s);
                sh.changed.notify_waiters();
                return Next::Stop;
            }
            if s.chunks[i] == ChunkState::Done {
                // Another peer finished it meanwhile.
                self.resume = None;
                return Next::Again;
            }
        }
        if let Some((i, prefix)) = self.resume.take() {
            return Next::Fetch(i, prefix);
        }
        let size = sh.spec.chunks.size;
        if sh.whole.is_some() {
            // Every chunk is buffered for the whole-object hash. The budget
            // first, then the chunk: a chunk is assigned only to a
            // connection that can receive it now.
            let grant = sh.budget.reserve(size).await;
            return match sh.pick(p, self.k) {
                Pick::Chunk { i, .. } => Next::Fetch(i, Prefix::buffered(grant)),
                other => {
                    drop(grant);
                    self.idle(other).await
                }
            };
        }
        match sh.pick(p, self.k) {
            Pick::Chunk { i, first: true } => Next::Fetch(i, Prefix::direct()),
            // An endgame duplicate writes only once verified, so it needs
            // memory for the chunk: it starts only when that is free now.
            Pick::Chunk { i, first: false } => match sh.budget.try_reserve(size) {
                Some(grant) => Next::Fetch(i, Prefix::buffered(grant)),
                None => {
                    sh.sched().release(p, i);
                    self.idle(Pick::Wait).await
                }
            },
            other => self.idle(other).await,
        }
    }

    /// No chunk for this connection now (`Wait`) or ever (`Stop`).
    async fn idle(&self, pick: Pick) -> Next {
        match pick {
            Pick::Wait if self.wait_for_work().await => Next::Again,
            _ => Next::Stop,
        }
    }

    /// Nothing to fetch now: waits for a change (at most 200 ms); `false`
    /// when none can come.
    async fn wait_for_work(&self) -> bool {
        let sh = &self.sh;
        if sh.sched().stuck() {
            // Peers still downloading may gain the missing
            // chunks: the poller re-reads their chunk maps.
            let any_active = sh.sched().may_progress(sh.opts.read_timeout * 3);
            if !any_active {
                return false;
            }
        }
        let notified = sh.changed.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        true
    }

    /// The throughput floor for chunk `i`, and the peer's slow level it
    /// used: the configured floor, halved per slow level while the peer is
    /// the chunk's only source.
    fn floor(&self, i: usize) -> (u64, u32) {
        let s = self.sh.sched();
        let min = self.sh.opts.min_throughput.max(1);
        if s.only_source(self.p, i) {
            let level = s.peers[self.p].slow_level;
            ((min >> level.min(32)).max(1), level)
        } else {
            (min, 0)
        }
    }

    /// Acts on the outcome of a request for chunk `i`; `Break` ends the
    /// connection.
    async fn settle(
        &mut self,
        i: usize,
        level_used: u32,
        outcome: Result<(Store, Sha256Digest), ChunkError>,
    ) -> ControlFlow<()> {
        let (sh, p) = (&self.sh, self.p);
        match outcome {
            Ok((store, digest)) => self.arrived(i, store, digest).await,
            Err(ChunkError::Cancelled) => {
                sh.sched().release(p, i);
                ControlFlow::Continue(())
            }
            Err(ChunkError::NotFound(status)) => {
                let why = format!("does not have the object (HTTP {status})");
                sh.drop_peer(p, i, why, false);
                ControlFlow::Break(())
            }
            Err(ChunkError::Unavailable) => {
                let mut s = sh.sched();
                s.release(p, i);
                s.peers[p].lacks.insert(i);
                drop(s);
                sh.changed.notify_waiters();
                ControlFlow::Continue(())
            }
            Err(ChunkError::Slow(why, prefix)) => self.slow(i, level_used, why, *prefix).await,
            Err(ChunkError::Protocol(why)) => {
                sh.drop_peer(p, i, why, false);
                ControlFlow::Break(())
            }
            Err(ChunkError::Transient(why)) => self.transient(i, why).await,
            Err(ChunkError::Write(e)) => {
                sh.sched().release(p, i);
                fail(sh, e);
                ControlFlow::Break(())
            }
        }
    }

    /// Chunk `i` arrived whole: checked against its signed digest (a bad
    /// chunk drops the peer), then claimed and committed.
    async fn arrived(&mut self, i: usize, store: Store, digest: Sha256Digest) -> ControlFlow<()> {
        let p = self.p;
        if digest != self.sh.spec.chunks.sha256[i] {
            let why = format!("sent a bad chunk {i} (SHA-256 {digest})");
            self.sh.drop_peer(p, i, why, true);
            return ControlFlow::Break(());
        }
        // The first verified copy of a chunk is claimed here (so a
        // duplicate request in the endgame is cancelled at once)
        // and then committed while this connection goes on; the
        // commit failing is fatal.
        if self.sh.claim(p, i) {
            if !finish_commit(&self.sh, self.commit.take()).await {
                return ControlFlow::Break(());
            }
            let partial = Arc::clone(&self.sh.partial);
            let whole = self.sh.whole.clone();
            // A buffered chunk's bytes (and its share of the budget) go
            // with the commit and are dropped when it is written (or held
            // for the whole-object hash); a chunk written as it arrived is
            // only marked verified.
            self.commit = Some(tokio::task::spawn_blocking(move || match (store, whole) {
                (Store::Direct, _) => partial.commit_written(i, &digest),
                (Store::Buffer(buf), Some(w)) => w.commit(&partial, i, buf, &digest),
                (Store::Buffer(buf), None) => {
                    partial.write_chunk_parts(i, buf.parts(), &digest, |_| {})
                }
            }));
        }
        self.slow_strikes = 0;
        self.sh.changed.notify_waiters();
        ControlFlow::Continue(())
    }

    /// The request for chunk `i` fell below its floor (`why`); `prefix` is
    /// what arrived.
    async fn slow(
        &mut self,
        i: usize,
        level_used: u32,
        why: String,
        prefix: Prefix,
    ) -> ControlFlow<()> {
        let p = self.p;
        match self.slow_verdict(i, level_used, &why) {
            Verdict::Drop(reason) => {
                self.sh.drop_peer(p, i, reason, false);
                return ControlFlow::Break(());
            }
            Verdict::Abandon(strikes) => {
                tracing::debug!(peer = p, chunk = i, %why, strikes, "slow in a swarm; chunk handed back");
                self.sh.sched().release(p, i);
                self.sh.changed.notify_waiters();
                tokio::time::sleep(backoff_delay(&self.sh.opts, strikes)).await;
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
                self.resume = Some((i, prefix));
                tokio::time::sleep(backoff_delay(&self.sh.opts, strikes)).await;
            }
        }
        ControlFlow::Continue(())
    }

    /// What a slow request for chunk `i` at slow level `level_used` means,
    /// counting it against this connection (and lowering the peer's floor
    /// when it is the only source).
    fn slow_verdict(&mut self, i: usize, level_used: u32, why: &str) -> Verdict {
        let p = self.p;
        let max = self.sh.opts.max_failures.max(1);
        let mut s = self.sh.sched();
        let only = s.only_source(p, i);
        if !only && !s.swarm() {
            // Someone else can supply it: a slow peer only holds the
            // fetch up.
            return Verdict::Drop(why.to_string());
        }
        if only {
            // The only source: slow but honest so far, so keep what
            // arrived and ask again (bounded, with backoff, and with a
            // lower floor each time). Lower the floor one step per slow
            // request at the current floor (the peer's other connections
            // may have lowered it already).
            let peer = &mut s.peers[p];
            if level_used >= peer.slow_level {
                peer.slow_level = (level_used + 1).min(max - 1);
            }
        }
        // In a swarm every uplink is shared and a peer (the seed above
        // all) is slow because it is popular, not because it is bad: the
        // chunk goes to the others and the peer stays. Either way `max`
        // slow requests in a row drop it.
        self.slow_strikes += 1;
        let strikes = self.slow_strikes;
        if strikes >= max {
            let as_only = if only { " as the only source" } else { "" };
            Verdict::Drop(format!(
                "{strikes} slow requests in a row{as_only}, last: {why}"
            ))
        } else if only {
            Verdict::Resume(strikes)
        } else {
            Verdict::Abandon(strikes)
        }
    }

    /// A failure of the request for chunk `i` worth a retry (`why`): the
    /// chunk goes back; `max_failures` in a row drop the peer.
    async fn transient(&mut self, i: usize, why: String) -> ControlFlow<()> {
        let (sh, p) = (&self.sh, self.p);
        let failures = {
            let mut s = sh.sched();
            s.release(p, i);
            s.peers[p].failures += 1;
            s.peers[p].failures
        };
        sh.changed.notify_waiters();
        if failures >= sh.opts.max_failures {
            let why = format!("{failures} failed requests, last: {why}");
            sh.drop_peer(p, i, why, false);
            return ControlFlow::Break(());
        }
        tracing::debug!(peer = p, chunk = i, %why, failures, "retrying");
        tokio::time::sleep(backoff_delay(&sh.opts, failures)).await;
        ControlFlow::Continue(())
    }
}
