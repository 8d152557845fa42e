//! Prints the SHA-256 throughput of the `sha2` crate on this CPU and
//! whether the CPU has the SHA extensions it uses (x86 SHA-NI): one line,
//! read by `make bench`.
use std::time::Instant;

use sha2::{Digest, Sha256};

fn main() {
    let buf = vec![0x5au8; 64 << 20];
    let rounds = 8;
    let start = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..rounds {
        h.update(&buf);
    }
    let d = h.finalize();
    let secs = start.elapsed().as_secs_f64();
    #[cfg(target_arch = "x86_64")]
    let sha_ni = std::arch::is_x86_feature_detected!("sha");
    #[cfg(not(target_arch = "x86_64"))]
    let sha_ni = false;
    let mib = (rounds * buf.len()) as f64 / (1 << 20) as f64;
    println!(
        "sha256 {:.0} MiB/s (sha_ni={sha_ni}, {mib:.0} MiB in {secs:.3} s, digest {:02x}{:02x}..)",
        mib / secs,
        d[0],
        d[1]
    );
}
