//! `GET /attest?nonce=HEX` on the peer server: the request rules (the
//! nonce's form, a token bucket) and the answer's status codes. The quote
//! itself comes from an [`Attestor`] the binary gives the server (`phase
//! serve` has the TPM code; this crate has none).
//!
//! | case | status |
//! |---|---|
//! | a quote | 200, `application/json`, `Cache-Control: no-store` |
//! | no `nonce`, not hex, not 8 to 32 bytes | 400, one line naming the problem |
//! | the bucket is empty | 429 |
//! | no attestor, or no TPM device | 404, `no TPM: ...` |
//! | the TPM failed | 503, the error in one line |

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fewest nonce bytes accepted.
pub const NONCE_MIN: usize = 8;
/// Most nonce bytes accepted: a quote's qualifying data holds at most a
/// `TPMT_HA`, 34 bytes on a TPM whose largest hash is SHA-256.
pub const NONCE_MAX: usize = 32;

/// Makes the JSON answer for a nonce (blocking: it talks to the TPM).
pub trait Attestor: Send + Sync + fmt::Debug {
    fn attest(&self, nonce: &[u8]) -> Result<Vec<u8>, AttestError>;
}

/// Why there is no quote.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// This machine has no TPM (404).
    #[error("no TPM: {0}")]
    NoTpm(String),
    /// The TPM or the boot record failed (503).
    #[error("{0}")]
    Failed(String),
}

/// The nonce of an `/attest` query string, or why it is refused.
pub fn parse_nonce(query: Option<&str>) -> Result<Vec<u8>, String> {
    let usage = format!(
        "GET /attest?nonce=HEX with {} to {} hex digits",
        2 * NONCE_MIN,
        2 * NONCE_MAX
    );
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("nonce="))
        .ok_or_else(|| format!("no nonce: {usage}"))?;
    if value.len() > 2 * NONCE_MAX || value.len() < 2 * NONCE_MIN {
        return Err(format!("the nonce has {} hex digits: {usage}", value.len()));
    }
    hex::decode(value).map_err(|_| format!("the nonce is not hex: {usage}"))
}

/// A token bucket: `burst` requests at once, then one per `refill`.
#[derive(Debug)]
pub struct Bucket {
    inner: Mutex<BucketState>,
    burst: f64,
    refill: Duration,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(burst: u32, refill: Duration) -> Bucket {
        Bucket {
            inner: Mutex::new(BucketState {
                tokens: f64::from(burst.max(1)),
                last: Instant::now(),
            }),
            burst: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
        }
    }

    /// Takes a token at `now`, if there is one.
    pub fn take(&self, now: Instant) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let earned =
            now.saturating_duration_since(s.last).as_secs_f64() / self.refill.as_secs_f64();
        s.tokens = (s.tokens + earned).min(self.burst);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_hex_of_8_to_32_bytes() {
        assert_eq!(
            parse_nonce(Some("nonce=0011223344556677")),
            Ok(vec![0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77])
        );
        assert_eq!(
            parse_nonce(Some("x=1&nonce=00112233445566778899")).map(|n| n.len()),
            Ok(10)
        );
        let e = parse_nonce(None).expect_err("none");
        assert!(e.starts_with("no nonce: GET /attest?nonce=HEX"), "{e}");
        let e = parse_nonce(Some("nonce=0011")).expect_err("short");
        assert!(e.starts_with("the nonce has 4 hex digits"), "{e}");
        let e = parse_nonce(Some(&format!("nonce={}", "00".repeat(33)))).expect_err("long");
        assert!(e.starts_with("the nonce has 66 hex digits"), "{e}");
        let e = parse_nonce(Some("nonce=zz11223344556677")).expect_err("not hex");
        assert!(e.starts_with("the nonce is not hex"), "{e}");
        let e = parse_nonce(Some("nonce=00112233445566778")).expect_err("odd");
        assert!(e.starts_with("the nonce is not hex"), "{e}");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_refill() {
        let b = Bucket::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_secs(5)));
        assert!(b.take(t0 + Duration::from_secs(10)));
        assert!(!b.take(t0 + Duration::from_secs(10)));
        // Never more than the burst, however long it was idle.
        let later = t0 + Duration::from_secs(1000);
        assert!(b.take(later));
        assert!(b.take(later));
        assert!(!b.take(later));
    }
}
