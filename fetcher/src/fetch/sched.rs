//! Which chunk goes to which peer: the state of every chunk and every
//! peer of a running fetch.

use std::collections::HashSet;
use std::time::Instant;

use crate::cas::CasError;
use crate::wire::ChunkMap;

use super::Source;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChunkState {
    Missing,
    InFlight(Vec<usize>),
    Done,
}

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

#[derive(Debug)]
pub(super) struct Sched {
    pub(super) chunks: Vec<ChunkState>,
    pub(super) peers: Vec<PeerState>,
    pub(super) fatal: Option<CasError>,
    pub(super) done: usize,
    /// When the last chunk was verified (or the fetch started).
    pub(super) progressed: Instant,
    /// Per-fetch random tie-break among equally rare chunks, so the clients
    /// of a fleet ask a seed for different chunks.
    pub(super) order: Vec<u64>,
}

impl Sched {
    /// Whether `p` is the only live peer that can supply chunk `i`.
    pub(super) fn only_source(&self, p: usize, i: usize) -> bool {
        !self
            .peers
            .iter()
            .enumerate()
            .any(|(q, peer)| q != p && peer.can_serve(i))
    }
}

pub(super) enum Pick {
    Chunk(usize),
    Wait,
    Stop,
}
