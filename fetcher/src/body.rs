//! Bounded reads of the HTTP bodies peers send: every body this crate reads
//! into memory (chunk maps, TUF metadata and targets) goes through
//! [`read_body`], which enforces, while reading:
//!
//! * a byte cap: the body is refused as soon as it would pass `max_len`
//!   (and at once when `Content-Length` already says so), so an endless
//!   body costs at most `max_len` bytes of memory;
//! * a silence limit: no byte for `silence` ends the read;
//! * a minimum rate: after `grace`, the body must keep up with `min_rate`
//!   bytes/s on average (a peer trickling a byte every few seconds fails
//!   within `grace + got / min_rate`);
//! * an overall deadline: a fixed instant the whole read must finish by.
//!
//! Object chunks are not read here: the fetch engine streams them into the
//! cache with its own rate rule (`fetch::fetch_chunk`), bounded by the
//! chunk length it asked for. Error bodies (any status the caller does not
//! use) are never read: the response is dropped with its connection.
//! Response headers are bounded by hyper's client limits (100 headers, a
//! read buffer of about 400 KiB) and by the caller's deadline on `send()`.

use std::time::{Duration, Instant};

/// Limits of one body read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes accepted.
    pub max_len: u64,
    /// The whole read must end by this instant.
    pub deadline: Instant,
    /// Longest wait for the next bytes.
    pub silence: Duration,
    /// Average bytes/s the body must keep up after `grace`.
    pub min_rate: u64,
    /// Time before the rate rule applies.
    pub grace: Duration,
}

impl BodyLimits {
    /// `max_len` bytes within `budget` from now, at least `min_rate` bytes/s
    /// after a 2 s grace, never silent for more than 10 s.
    pub fn new(max_len: u64, budget: Duration, min_rate: u64) -> Self {
        Self {
            max_len,
            deadline: Instant::now() + budget,
            silence: Duration::from_secs(10),
            min_rate,
            grace: Duration::from_secs(2),
        }
    }
}

/// Why a body read stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the cap.
    #[error("body larger than the {max}-byte limit")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// No byte arrived for the silence limit.
    #[error("no data for {0:?} ({1} bytes read)")]
    Silent(Duration, u64),
    /// The average rate fell below the floor after the grace period.
    #[error("too slow: {got} bytes in {elapsed:?}, below {min_rate} B/s")]
    TooSlow {
        /// Bytes read.
        got: u64,
        /// Time taken so far.
        elapsed: Duration,
        /// The floor.
        min_rate: u64,
    },
    /// The overall deadline passed.
    #[error("deadline passed after {0} bytes")]
    Deadline(u64),
    /// The connection failed.
    #[error("reading the body failed")]
    Read(#[source] reqwest::Error),
}

/// Reads `resp`'s body under `lim` (see the module documentation).
pub async fn read_body(
    resp: &mut reqwest::Response,
    lim: &BodyLimits,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|l| l > lim.max_len) {
        return Err(BodyError::TooLarge { max: lim.max_len });
    }
    let t0 = Instant::now();
    let min_rate = lim.min_rate.max(1) as f64;
    let mut body = Vec::new();
    loop {
        let got = body.len() as u64;
        let now = Instant::now();
        if now >= lim.deadline {
            return Err(BodyError::Deadline(got));
        }
        // When the rate rule fails at the current byte count.
        let rate_by = t0 + lim.grace + Duration::from_secs_f64(got as f64 / min_rate);
        let until = lim.deadline.min(rate_by).min(now + lim.silence);
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(10));
        match tokio::time::timeout(wait, resp.chunk()).await {
            Err(_) => {
                let now = Instant::now();
                if now >= lim.deadline {
                    return Err(BodyError::Deadline(got));
                }
                if now >= rate_by {
                    return Err(BodyError::TooSlow {
                        got,
                        elapsed: t0.elapsed(),
                        min_rate: lim.min_rate,
                    });
                }
                return Err(BodyError::Silent(lim.silence, got));
            }
            Ok(Err(e)) => return Err(BodyError::Read(e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(b))) => {
                if got.saturating_add(b.len() as u64) > lim.max_len {
                    return Err(BodyError::TooLarge { max: lim.max_len });
                }
                body.extend_from_slice(&b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection server that writes `head` then `body_part` up to
    /// `times` times, `gap` apart (bounded).
    async fn server(
        head: &'static str,
        body_part: &'static [u8],
        times: usize,
        gap: Duration,
    ) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(head.as_bytes()).await;
            for _ in 0..times {
                if s.write_all(body_part).await.is_err() {
                    return;
                }
                tokio::time::sleep(gap).await;
            }
        });
        format!("http://{addr}/x")
    }

    async fn get(url: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
    }

    /// One chunked-encoding frame of 1024 bytes.
    const CHUNK: &[u8] = &{
        let mut f = [b'.'; 5 + 1024 + 2];
        let head = b"400\r\n";
        let mut i = 0;
        while i < head.len() {
            f[i] = head[i];
            i += 1;
        }
        f[5 + 1024] = b'\r';
        f[5 + 1024 + 1] = b'\n';
        f
    };

    fn limits(max_len: u64) -> BodyLimits {
        BodyLimits {
            max_len,
            deadline: Instant::now() + Duration::from_secs(5),
            silence: Duration::from_millis(800),
            min_rate: 1000,
            grace: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn declared_length_over_the_cap_is_refused_unread() {
        let url = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
            b"x",
            1,
            Duration::ZERO,
        )
        .await;
        let mut r = get(&url).await;
        let e = read_body(&mut r, &limits(100)).await.unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { max: 100 }), "{e}");
    }

    #[tokio::test]
    async fn endless_body_stops_at_the_cap() {
        let url = server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            CHUNK,
            10_000,
            Duration::ZERO,
        )
        .await;
        let mut r = get(&url).await;
        let e = read_body(&mut r, &limits(64 * 1024)).await.unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_trickle_fails_the_rate_rule() {
        let url = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"x",
            100,
            Duration::from_millis(100),
        )
        .await;
        let mut r = get(&url).await;
        let t0 = Instant::now();
        let e = read_body(&mut r, &limits(1000)).await.unwrap_err();
        assert!(matches!(e, BodyError::TooSlow { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn silence_and_deadline_end_the_read() {
        let url = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"",
            1,
            Duration::from_secs(10),
        )
        .await;
        let mut r = get(&url).await;
        let lim = BodyLimits {
            min_rate: 1,
            grace: Duration::from_secs(60),
            ..limits(1000)
        };
        let e = read_body(&mut r, &lim).await.unwrap_err();
        assert!(matches!(e, BodyError::Silent(..)), "{e}");

        let url = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"x",
            100,
            Duration::from_millis(200),
        )
        .await;
        let mut r = get(&url).await;
        let lim = BodyLimits {
            min_rate: 1,
            grace: Duration::from_secs(60),
            deadline: Instant::now() + Duration::from_millis(700),
            ..limits(1000)
        };
        let e = read_body(&mut r, &lim).await.unwrap_err();
        assert!(matches!(e, BodyError::Deadline(_)), "{e}");
    }

    #[tokio::test]
    async fn an_honest_body_is_read_whole() {
        let url = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"hello",
            1,
            Duration::ZERO,
        )
        .await;
        let mut r = get(&url).await;
        assert_eq!(read_body(&mut r, &limits(5)).await.unwrap(), b"hello");
    }
}
