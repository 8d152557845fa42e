//! The state of a running fetch that its tasks (connections, chunk-map
//! queries, progress) share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::cas::PartialObject;
use crate::object::ObjectSpec;

use super::sched::{ChunkState, Pick, Sched};
use super::whole_hash::WholeHash;
use super::FetchOptions;

pub(super) struct Shared {
    pub(super) spec: ObjectSpec,
    pub(super) partial: Arc<PartialObject>,
    pub(super) sched: Mutex<Sched>,
    pub(super) changed: Notify,
    pub(super) done_bytes: AtomicU64,
    pub(super) flow_bytes: AtomicU64,
    pub(super) whole: Arc<WholeHash>,
    pub(super) stop: AtomicBool,
    /// Peers join through a feed (discovery): schedule as a swarm from the
    /// start, before any partial peer is known.
    pub(super) expect_swarm: bool,
    pub(super) client: reqwest::Client,
    pub(super) opts: FetchOptions,
}

impl Shared {
    pub(super) fn sched(&self) -> MutexGuard<'_, Sched> {
        // Poisoning would only follow a panic in a worker while holding the
        // lock; the state is plain data and stays usable.
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn pick(&self, p: usize, k: usize) -> Pick {
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
    pub(super) fn swarm(&self, s: &Sched) -> bool {
        self.expect_swarm || s.peers.iter().any(|q| q.dropped.is_none() && !q.seed)
    }

    /// Whether any live peer could still supply every missing chunk.
    pub(super) fn stuck(&self) -> bool {
        let s = self.sched();
        s.chunks.iter().enumerate().any(|(i, c)| match c {
            ChunkState::Missing => !s.peers.iter().any(|p| p.can_serve(i)),
            _ => false,
        })
    }

    pub(super) fn release(&self, s: &mut Sched, p: usize, i: usize) {
        if let ChunkState::InFlight(v) = &mut s.chunks[i] {
            v.retain(|&q| q != p);
            if v.is_empty() {
                s.chunks[i] = ChunkState::Missing;
            }
        }
    }

    pub(super) fn drop_peer(&self, p: usize, i: usize, reason: String, bad: bool) {
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

    pub(super) fn peer_summary(&self) -> String {
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
