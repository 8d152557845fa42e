//! A running fetch: its connections and helper tasks, the sources that
//! join from the feed, the stall limit and the deadline, and the outcome.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::task::JoinSet;

use super::chunk_maps::{poll_maps, query_chunks};
use super::sched::PeerState;
use super::shared::Shared;
use super::worker::worker;
use super::{FetchError, PeerReport, Progress, ProgressFn, Source, SourceFeed, MAX_PEERS};

pub(super) struct Run {
    shared: Arc<Shared>,
    /// The connections, `connections_per_peer` per source.
    workers: JoinSet<()>,
    /// Helpers that hold the shared state (chunk-map queries and polls,
    /// progress): aborted before the end.
    aux: JoinSet<()>,
    feed: Option<SourceFeed>,
    /// Object URLs of the sources so far (a repeated one joins once).
    seen: HashSet<Url>,
}

impl Run {
    /// Starts the fetch described by `shared`: reads which chunks each
    /// source holds (a peer still downloading holds some), then starts its
    /// connections and the poll of partial peers' maps; and the progress
    /// reports. When nothing is missing, none of this and no feed.
    pub(super) async fn start(
        shared: Arc<Shared>,
        feed: Option<SourceFeed>,
        progress: Option<ProgressFn>,
    ) -> Self {
        let seen = shared
            .sched()
            .peers
            .iter()
            .map(|p| p.source.object_url.clone())
            .collect();
        let n = shared.spec.chunk_count();
        let mut run = Run {
            shared,
            workers: JoinSet::new(),
            aux: JoinSet::new(),
            feed: None,
            seen,
        };
        if run.shared.sched().done < n {
            let npeers = run.shared.sched().peers.len();
            let mut queries = JoinSet::new();
            for p in 0..npeers {
                let sh = Arc::clone(&run.shared);
                let t = sh.opts.read_timeout;
                queries.spawn(async move { (p, query_chunks(&sh, p, t).await) });
            }
            while let Some(r) = queries.join_next().await {
                if let Ok((p, map)) = r {
                    run.shared.sched().peers[p].set_map(map, n);
                }
            }
            for p in 0..npeers {
                run.connect(p);
            }
            run.aux.spawn(poll_maps(Arc::clone(&run.shared)));
            run.feed = feed;
        }
        if let Some(cb) = progress {
            let sh = Arc::clone(&run.shared);
            run.aux.spawn(async move {
                let mut last = (Instant::now(), 0u64);
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    report_progress(&sh, &cb, &mut last);
                }
            });
        }
        run
    }

    /// Starts the connections to source `p`.
    fn connect(&mut self, p: usize) {
        for k in 0..self.shared.opts.connections_per_peer.max(1) {
            self.workers.spawn(worker(Arc::clone(&self.shared), p, k));
        }
    }

    /// Runs until every chunk is in, or no connection is left and no
    /// source can come (the feed closed, the stall limit of 3 x
    /// `read_timeout` without progress passed, or the deadline). `true`:
    /// the deadline ended it. A connection that panicked ends it with
    /// [`FetchError::Task`].
    pub(super) async fn drive(&mut self, deadline: Instant) -> Result<bool, FetchError> {
        let n = self.shared.spec.chunk_count();
        let mut timed_out = false;
        loop {
            let finished = self.shared.sched().done == n;
            if self.workers.is_empty() && (self.feed.is_none() || finished || timed_out) {
                return Ok(timed_out);
            }
            // With no worker left, wait for a new peer only while the
            // fetch is within its stall limit.
            let stall_end = self.shared.sched().progressed + self.shared.opts.read_timeout * 3;
            tokio::select! {
                r = self.workers.join_next(), if !self.workers.is_empty() => match r {
                    Some(Err(e)) if e.is_panic() => {
                        self.shared.stop.store(true, Ordering::Relaxed);
                        self.workers.abort_all();
                        self.aux.abort_all();
                        while self.aux.join_next().await.is_some() {}
                        return Err(FetchError::Task(self.shared.spec.sha256, e));
                    }
                    None | Some(_) => {}
                },
                src = recv_feed(&mut self.feed), if self.feed.is_some() => match src {
                    None => self.feed = None,
                    Some(source) if !finished => self.join(source),
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(stall_end.into()), if self.workers.is_empty() => {
                    return Ok(timed_out);
                }
                _ = tokio::time::sleep_until(deadline.into()), if !timed_out => {
                    timed_out = true;
                    self.shared.stop.store(true, Ordering::Relaxed);
                    self.workers.abort_all();
                }
            }
        }
    }

    /// A source from the feed joins the running fetch (unless its object
    /// URL is known or [`MAX_PEERS`] are in): its chunk map is read in the
    /// background while its connections start.
    fn join(&mut self, source: Source) {
        if !self.seen.insert(source.object_url.clone()) {
            return;
        }
        let n = self.shared.spec.chunk_count();
        let p = {
            let mut s = self.shared.sched();
            if s.peers.len() >= MAX_PEERS {
                return;
            }
            tracing::debug!(peer = %source.label, "peer joined the fetch");
            s.peers.push(PeerState::new(source, true, n));
            s.peers.len() - 1
        };
        let sh = Arc::clone(&self.shared);
        self.aux.spawn(async move {
            let t = sh.opts.read_timeout;
            let map = query_chunks(&sh, p, t).await;
            sh.sched().peers[p].set_map(map, n);
            sh.changed.notify_waiters();
        });
        self.connect(p);
    }

    /// Ends the run (its helpers stopped, so the partial is no longer
    /// shared): what each peer did when every chunk is in, else why not.
    /// `timed_out`: what [`Run::drive`] returned.
    pub(super) async fn finish(mut self, timed_out: bool) -> Result<Vec<PeerReport>, FetchError> {
        // Wait for the aborts to land: these tasks hold the partial.
        self.aux.abort_all();
        while self.aux.join_next().await.is_some() {}
        let digest = self.shared.spec.sha256;
        let n = self.shared.spec.chunk_count();
        let mut s = self.shared.sched();
        // A write that failed is fatal even when its chunk was the last.
        if let Some(e) = s.fatal.take() {
            return Err(FetchError::Cas(digest, e));
        }
        if s.done == n {
            return Ok(s.peer_reports());
        }
        let missing = n - s.done;
        let peers = s.peer_summary();
        if timed_out {
            return Err(FetchError::Deadline {
                digest,
                deadline: self.shared.opts.deadline,
                missing,
                peers,
            });
        }
        Err(FetchError::Exhausted {
            digest,
            missing,
            total: n,
            peers,
        })
    }
}

async fn recv_feed(feed: &mut Option<SourceFeed>) -> Option<Source> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
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
