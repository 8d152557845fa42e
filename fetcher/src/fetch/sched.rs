//! Which chunk goes to which peer: the state of every chunk and every
//! peer of a running fetch.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::cas::CasError;
use crate::wire::ChunkMap;

use super::{PeerReport, Source};

/// Where a chunk stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChunkState {
    Missing,
    /// Asked for from these peers (two at most: the endgame duplicates).
    /// A peer stays listed until its request is over, and only a request
    /// that finds the chunk `Missing` is a first one (it writes the bytes
    /// into the partial file as they arrive), so a chunk never has two.
    InFlight(Vec<usize>),
    /// Verified (and claimed by the peer that sent it).
    Done,
}

/// What the scheduler knows about one peer.
#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) source: Source,
    /// Which chunks it holds; `None` means all (a mirror, or no map).
    pub(super) has: Option<Vec<bool>>,
    /// Holds every chunk (`has` is `None` or all true): a seed, used only
    /// for chunks no partial peer offers while partial peers are around.
    pub(super) seed: bool,
    /// Joined during the fetch (from the feed): a swarm member whose own
    /// download may not have started yet, so "no such object" on its chunk
    /// map means "nothing yet" and it keeps being polled.
    pub(super) patient: bool,
    pub(super) lacks: HashSet<usize>,
    pub(super) bytes: u64,
    pub(super) chunks: u64,
    pub(super) failures: u32,
    /// How many times the throughput floor is halved for this peer when it
    /// is the only source of a chunk.
    pub(super) slow_level: u32,
    pub(super) dropped: Option<String>,
    pub(super) bad: bool,
}

impl PeerState {
    pub(super) fn new(source: Source, patient: bool, n: usize) -> Self {
        Self {
            source,
            has: if patient { Some(vec![false; n]) } else { None },
            seed: !patient,
            patient,
            lacks: HashSet::new(),
            bytes: 0,
            chunks: 0,
            failures: 0,
            slow_level: 0,
            dropped: None,
            bad: false,
        }
    }

    /// Records a chunk map the peer answered.
    pub(super) fn set_map(&mut self, map: ChunkMap, n: usize) {
        let has = match map {
            ChunkMap::All => None,
            ChunkMap::Partial(v) => Some(v),
            // A swarm member that has not started this object yet.
            ChunkMap::Absent if self.patient => Some(vec![false; n]),
            // Unknown: keep what we knew; an initial peer without a map is
            // assumed to hold everything (its range answers will tell).
            ChunkMap::Absent | ChunkMap::Unknown => return,
        };
        if let Some(h) = &has {
            self.lacks.retain(|&i| !h.get(i).copied().unwrap_or(false));
        } else {
            self.lacks.clear();
        }
        self.seed = has.as_ref().is_none_or(|h| h.iter().all(|&x| x));
        self.has = has;
    }

    pub(super) fn can_serve(&self, i: usize) -> bool {
        self.dropped.is_none()
            && !self.lacks.contains(&i)
            && self
                .has
                .as_ref()
                .is_none_or(|h| h.get(i).copied().unwrap_or(false))
    }
}

/// The scheduler's state: every chunk and every peer of one fetch.
#[derive(Debug)]
pub(super) struct Sched {
    pub(super) chunks: Vec<ChunkState>,
    pub(super) peers: Vec<PeerState>,
    /// A chunk write failed: the fetch stops with this error.
    pub(super) fatal: Option<CasError>,
    /// Chunks in state `Done`.
    pub(super) done: usize,
    /// When the last chunk was verified (or the fetch started).
    pub(super) progressed: Instant,
    /// Per-fetch random tie-break among equally rare chunks, so the clients
    /// of a fleet ask a seed for different chunks.
    order: Vec<u64>,
    /// Peers join through a feed (discovery): schedule as a swarm from the
    /// start, before any partial peer is known.
    expect_swarm: bool,
}

/// What a connection is to do next.
pub(super) enum Pick {
    /// Fetch chunk `i`: its first request (`first`: the only one that
    /// writes into the chunk's range as the bytes arrive), or an endgame
    /// duplicate of a request still in flight.
    Chunk { i: usize, first: bool },
    /// Nothing for it now; look again after a change.
    Wait,
    /// The fetch is over for it.
    Stop,
}

impl Sched {
    /// A fetch of `chunks` (those already verified `Done`) from `peers`.
    pub(super) fn new(chunks: Vec<ChunkState>, peers: Vec<PeerState>, expect_swarm: bool) -> Self {
        let random = std::hash::RandomState::new();
        let order = (0..chunks.len())
            .map(|i| std::hash::BuildHasher::hash_one(&random, i))
            .collect();
        Self {
            done: chunks.iter().filter(|c| **c == ChunkState::Done).count(),
            chunks,
            peers,
            fatal: None,
            progressed: Instant::now(),
            order,
            expect_swarm,
        }
    }

    /// Whether `p` is the only live peer that can supply chunk `i`.
    pub(super) fn only_source(&self, p: usize, i: usize) -> bool {
        !self
            .peers
            .iter()
            .enumerate()
            .any(|(q, peer)| q != p && peer.can_serve(i))
    }

    /// The next chunk for connection `k` of peer `p`.
    pub(super) fn pick(&mut self, p: usize, k: usize) -> Pick {
        if self.fatal.is_some() || self.peers[p].dropped.is_some() {
            return Pick::Stop;
        }
        if self.done == self.chunks.len() {
            return Pick::Stop;
        }
        // A swarm (peers join through a feed, or some live peer holds only
        // part of the object: it is downloading too). Then chunks are taken rarest first (random
        // among equals), and a seed only supplies chunks no partial peer
        // offers, so the seeds' uplinks carry each chunk into the swarm
        // about once and the clients spread it from there. Without partial
        // peers: lowest chunk first (in order, for the whole-object hash).
        let swarm = self.swarm();
        // In a swarm one connection per peer: every peer's uplink is shared
        // by many clients, and a chunk can be re-shared only once it is
        // complete, so fewer requests at a time finish chunks sooner. The
        // other connections help in the endgame.
        if swarm && k > 0 && self.chunks.contains(&ChunkState::Missing) {
            return Pick::Wait;
        }
        if let Some(i) = self.unassigned(p, swarm) {
            self.chunks[i] = ChunkState::InFlight(vec![p]);
            return Pick::Chunk { i, first: true };
        }
        // Endgame: help with a chunk another peer is still on (in a swarm
        // only once nothing is left unassigned, so idle seeds do not
        // duplicate what partial peers are sending).
        if swarm && self.chunks.contains(&ChunkState::Missing) {
            return Pick::Wait;
        }
        if let Some(i) = self.duplicate(p) {
            if let ChunkState::InFlight(v) = &mut self.chunks[i] {
                v.push(p);
            }
            return Pick::Chunk { i, first: false };
        }
        Pick::Wait
    }

    /// The missing chunk peer `p` should take: the lowest one, or in a
    /// swarm the rarest one (a seed: one no partial peer offers).
    fn unassigned(&self, p: usize, swarm: bool) -> Option<usize> {
        let me = &self.peers[p];
        let candidates = (0..self.chunks.len())
            .filter(|&i| self.chunks[i] == ChunkState::Missing && me.can_serve(i));
        if !swarm {
            candidates.min()
        } else if me.seed {
            candidates
                .filter(|&i| !self.peers.iter().any(|q| !q.seed && q.can_serve(i)))
                .min_by_key(|&i| self.order[i])
        } else {
            candidates.min_by_key(|&i| {
                let holders = self.peers.iter().filter(|q| q.can_serve(i)).count();
                (holders, self.order[i])
            })
        }
    }

    /// A chunk one other peer is still on that peer `p` can also supply.
    fn duplicate(&self, p: usize) -> Option<usize> {
        (0..self.chunks.len()).find(|&i| match &self.chunks[i] {
            ChunkState::InFlight(v) => v.len() < 2 && !v.contains(&p) && self.peers[p].can_serve(i),
            _ => false,
        })
    }

    /// Whether this fetch runs in a swarm: peers join through a feed, or
    /// some live peer holds only part of the object.
    pub(super) fn swarm(&self) -> bool {
        self.expect_swarm || self.peers.iter().any(|q| q.dropped.is_none() && !q.seed)
    }

    /// Whether some missing chunk has no live peer that can supply it.
    pub(super) fn stuck(&self) -> bool {
        self.chunks.iter().enumerate().any(|(i, c)| match c {
            ChunkState::Missing => !self.peers.iter().any(|p| p.can_serve(i)),
            _ => false,
        })
    }

    /// Whether the missing chunks may still come: some chunk is in flight,
    /// or a live peer's chunk map may still grow (only while the fetch made
    /// progress within `stall`).
    pub(super) fn may_progress(&self, stall: Duration) -> bool {
        // Peers still downloading may gain the missing chunks, but only
        // while the fetch makes progress.
        let waiting_ok = self.progressed.elapsed() < stall;
        self.chunks
            .iter()
            .any(|c| matches!(c, ChunkState::InFlight(_)))
            || (waiting_ok
                && self
                    .peers
                    .iter()
                    .any(|q| q.dropped.is_none() && q.source.chunks_url.is_some()))
    }

    /// Peer `p` no longer works on chunk `i`.
    pub(super) fn release(&mut self, p: usize, i: usize) {
        if let ChunkState::InFlight(v) = &mut self.chunks[i] {
            v.retain(|&q| q != p);
            if v.is_empty() {
                self.chunks[i] = ChunkState::Missing;
            }
        }
    }

    /// Peer `p` sent a verified chunk `i` of `len` bytes: it is `Done` and
    /// credited to `p`, unless another copy was first (`false`).
    pub(super) fn claim(&mut self, p: usize, i: usize, len: u64) -> bool {
        self.peers[p].failures = 0;
        if self.chunks[i] == ChunkState::Done {
            return false;
        }
        self.chunks[i] = ChunkState::Done;
        self.done += 1;
        self.progressed = Instant::now();
        self.peers[p].bytes += len;
        self.peers[p].chunks += 1;
        true
    }

    /// Drops peer `p` (for `reason`; `bad`: it sent bytes that do not match
    /// the signed digests), giving back chunk `i`.
    pub(super) fn drop_peer(&mut self, p: usize, i: usize, reason: String, bad: bool) {
        self.release(p, i);
        tracing::warn!(peer = %self.peers[p].source.label, chunk = i, %reason, "dropping peer");
        if self.peers[p].dropped.is_none() {
            self.peers[p].dropped = Some(reason);
        }
        self.peers[p].bad |= bad;
    }

    /// What each peer contributed.
    pub(super) fn peer_reports(&self) -> Vec<PeerReport> {
        self.peers
            .iter()
            .map(|p| PeerReport {
                label: p.source.label.clone(),
                bytes: p.bytes,
                chunks: p.chunks,
                dropped: p.dropped.clone(),
                bad: p.bad,
            })
            .collect()
    }

    /// One line: each peer's chunks or why it was dropped.
    pub(super) fn peer_summary(&self) -> String {
        self.peers
            .iter()
            .map(|p| match &p.dropped {
                Some(r) => format!("{}: {}", p.source.label, r),
                None => format!("{}: {} chunks", p.source.label, p.chunks),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
