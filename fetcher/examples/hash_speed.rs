//! Prints the SHA-256 throughput of the `sha2` crate on this CPU and
//! whether the CPU has the SHA extensions it uses (x86 SHA-NI): one line,
//! read by `make bench`. Two figures per CPU second of this thread (so a
//! loaded machine does not halve them): hashing a 1 MiB buffer over and over
//! (in the CPU cache, as the fetch engine hashes each piece right after it
//! arrives) and a 64 MiB one (from memory).
use std::time::Instant;

use sha2::{Digest, Sha256};

/// CPU time of this thread so far (Linux: /proc/thread-self/schedstat).
fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// MiB per CPU second (wall seconds without schedstat) hashing `total`
/// bytes as `total / size` updates of a `size`-byte buffer.
fn rate(size: usize, total: usize) -> (f64, [u8; 2]) {
    let buf: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let (c0, t0) = (cpu_secs(), Instant::now());
    let mut h = Sha256::new();
    for _ in 0..total / size {
        h.update(&buf);
    }
    let d = h.finalize();
    let secs = match (c0, cpu_secs()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => t0.elapsed().as_secs_f64(),
    };
    ((total >> 20) as f64 / secs, [d[0], d[1]])
}

fn main() {
    let total = 512 << 20;
    let (hot, d) = rate(1 << 20, total);
    let (cold, _) = rate(64 << 20, total);
    #[cfg(target_arch = "x86_64")]
    let sha_ni = std::arch::is_x86_feature_detected!("sha");
    #[cfg(not(target_arch = "x86_64"))]
    let sha_ni = false;
    println!(
        "sha256 {hot:.0} MiB per CPU second from the cache, {cold:.0} from memory (sha_ni={sha_ni}, 512 MiB each, digest {:02x}{:02x}..)",
        d[0], d[1]
    );
}
