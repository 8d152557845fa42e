//! The small parsers of the peer protocol that read bytes a peer or a client
//! sent: the `/chunks` answer (client side) and the `Range` header (server
//! side). Pure functions, no I/O.
//!
//! This file is also compiled on its own by the fuzz targets (`fuzz/`,
//! docs/fuzzing.md), so it uses only `std` and `serde`/`serde_json`, and no
//! `crate::` item.

/// What a peer's chunk map says.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkMap {
    /// The whole object.
    All,
    /// A download in progress: these chunks.
    Partial(Vec<bool>),
    /// Neither (HTTP 404).
    Absent,
    /// No usable answer (no map URL, network error, bad body).
    Unknown,
}

/// The body of `GET /cas/sha256/<hex>/chunks`.
#[derive(serde::Deserialize)]
struct ChunksAnswer {
    #[serde(default)]
    complete: bool,
    #[serde(default)]
    chunk_size: u64,
    #[serde(default)]
    verified: Vec<u64>,
}

/// Reads a `/chunks` answer for an object of `chunk_count` chunks of
/// `chunk_size` bytes (both from signed metadata). A body that does not
/// parse is [`ChunkMap::Unknown`]; chunk indexes out of range, and every
/// index of a map made with another chunk size, are ignored: the map only
/// ever names chunks of this object.
pub fn parse_chunk_map(body: &[u8], chunk_count: usize, chunk_size: u64) -> ChunkMap {
    let Ok(ans) = serde_json::from_slice::<ChunksAnswer>(body) else {
        return ChunkMap::Unknown;
    };
    if ans.complete {
        return ChunkMap::All;
    }
    let mut has = vec![false; chunk_count];
    if ans.chunk_size == chunk_size {
        for i in ans.verified {
            if let Some(h) = usize::try_from(i).ok().and_then(|i| has.get_mut(i)) {
                *h = true;
            }
        }
    }
    ChunkMap::Partial(has)
}

/// A `Range` request against an object of known length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// One range, both ends inclusive, `start <= end < len`.
    Single(u64, u64),
    /// A valid range that starts past the end (416).
    Unsatisfiable,
    /// More than one range (not served: the whole object is sent).
    Multiple,
    /// Not a `bytes=` range we understand (ignored: the whole object).
    Invalid,
}

/// Parses one `bytes=` range (RFC 9110 section 14.1.2) against a length.
pub fn parse_range(header: &str, len: u64) -> RangeReq {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeReq::Invalid;
    };
    if spec.contains(',') {
        return RangeReq::Multiple;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Invalid;
    };
    let num = |x: &str| -> Option<u64> {
        (!x.is_empty() && x.len() <= 19 && x.bytes().all(|c| c.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeReq::Invalid,
        (true, false) => match num(b) {
            None => RangeReq::Invalid,
            Some(0) => RangeReq::Unsatisfiable,
            Some(_) if len == 0 => RangeReq::Unsatisfiable,
            Some(n) => RangeReq::Single(len.saturating_sub(n), len - 1),
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeReq::Invalid;
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(e) => e,
                    None => return RangeReq::Invalid,
                }
            };
            if end < start {
                return RangeReq::Invalid;
            }
            if start >= len {
                return RangeReq::Unsatisfiable;
            }
            RangeReq::Single(start, end.min(len - 1))
        }
    }
}
