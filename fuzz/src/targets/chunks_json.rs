//! A peer's `/chunks` answer (fetcher's wire.rs). Input byte 0: the
//! object's chunk count (from signed metadata); the rest: the body.
//! Oracle: no panic; a partial map has exactly one flag per chunk.
use crate::wire::{parse_chunk_map, ChunkMap};

const CHUNK_SIZE: u64 = 1 << 20;

/// One input.
pub fn run(data: &[u8]) {
    let Some((&n, body)) = data.split_first() else {
        return;
    };
    let n = usize::from(n);
    match parse_chunk_map(body, n, CHUNK_SIZE) {
        ChunkMap::Partial(has) => assert_eq!(has.len(), n),
        ChunkMap::All | ChunkMap::Unknown => {}
        ChunkMap::Absent => panic!("a body never says absent (that is HTTP 404)"),
    }
}
