//! The `Range` header a client sends to `phase serve` (fetcher's wire.rs).
//! Input byte 0 picks the object length (small ones, 0, or u64 extremes);
//! the rest is the header. Oracle: no panic; a single range lies inside
//! the object.
use crate::wire::{parse_range, RangeReq};

/// One input.
pub fn run(data: &[u8]) {
    let Some((&l, header)) = data.split_first() else {
        return;
    };
    let len = match l {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - 1,
        3 => 1 << 40,
        n => u64::from(n) * 1000,
    };
    let header = String::from_utf8_lossy(header);
    if let RangeReq::Single(a, b) = parse_range(&header, len) {
        assert!(a <= b && b < len, "{header:?} len {len}: {a}-{b}");
    }
}
