//! The server's HTTP/1.1 connection: request heads parsed with `httparse`
//! (hyper's own parser), answers written here, so that a file body goes
//! from the page cache to the socket with `sendfile(2)` and never passes
//! through this process. hyper's server has no hook for that: it writes
//! every body from its own buffers (docs/fetcher.md, "Peer protocol").
//!
//! What a connection does, in order, until either side closes it:
//! read one request head (within `header_timeout`, at most
//! `max_header_bytes`), answer it, and go on with the next one if the
//! request allows keep-alive. Requests may be pipelined: bytes after a
//! head stay in the buffer for the next one. A request that declares a body
//! (none of our routes takes one) is answered and the connection is closed
//! after it, so its body is never read as a request.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::ServerConfig;

/// The body of an answer.
pub(super) enum Reply {
    /// No body (`Content-Length` is whatever the handler set, or 0).
    Empty,
    /// Bytes in memory.
    Bytes(Bytes),
    /// `len` bytes of an open regular file from `off`, sent with `sendfile`.
    File { file: File, off: u64, len: u64 },
}

impl Reply {
    fn len(&self) -> u64 {
        match self {
            Reply::Empty => 0,
            Reply::Bytes(b) => b.len() as u64,
            Reply::File { len, .. } => *len,
        }
    }
}

/// One parsed request head.
pub(super) struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The client asked to keep the connection open after the answer.
    keep_alive: bool,
    /// `Content-Length` other than 0, or a `Transfer-Encoding`.
    has_body: bool,
}

/// Most header lines in a request (hyper's limit is 100; ours asks 4).
const MAX_HEADERS: usize = 64;

/// Why a head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// Larger than `max_header_bytes` or more than [`MAX_HEADERS`] lines.
    TooLarge,
    /// Not an HTTP/1.x request head.
    Malformed,
}

/// Parses a complete head at the start of `buf`: the head and its length
/// in bytes, or `None` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed)?;
    let uri: Uri = req
        .path
        .unwrap_or("")
        .parse()
        .map_err(|_| HeadError::Malformed)?;
    let http11 = req.version == Some(1);
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| HeadError::Malformed)?;
        headers.append(name, value);
    }
    let has_token = |t: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|x| x.trim().eq_ignore_ascii_case(t)))
        })
    };
    let keep_alive = if http11 {
        !has_token("close")
    } else {
        has_token("keep-alive")
    };
    let mut has_body = headers.contains_key(header::TRANSFER_ENCODING);
    for v in headers.get_all(header::CONTENT_LENGTH) {
        match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(0) => {}
            Some(_) => has_body = true,
            None => return Err(HeadError::Malformed),
        }
    }
    Ok(Some((
        RequestHead {
            method,
            uri,
            headers,
            keep_alive,
            has_body,
        },
        n,
    )))
}

/// Serves requests on `stream` until the client closes it, a limit is
/// broken, or an answer cannot be written. Every byte read or written is
/// added to `moved` (the server's progress rule).
pub(super) async fn serve<F, Fut>(
    mut stream: TcpStream,
    config: &ServerConfig,
    moved: &AtomicU64,
    mut handle: F,
) -> io::Result<()>
where
    F: FnMut(RequestHead) -> Fut,
    Fut: std::future::Future<Output = Response<Reply>>,
{
    let max = config.max_header_bytes.max(1024);
    // Most bytes one `sendfile` call sends: bounds how long one call can
    // hold a runtime thread waiting for a disk.
    let per_call = config.block_size.max(64 * 1024);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let head = match tokio::time::timeout(
            config.header_timeout,
            read_head(&mut stream, &mut buf, max, moved),
        )
        .await
        {
            Err(_) => return Ok(()), // headers too slow: close
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => return Ok(()), // closed between requests
            Ok(Err(ReadError::Io(e))) => return Err(e),
            Ok(Err(ReadError::Head(e))) => {
                let (code, msg) = match e {
                    HeadError::TooLarge => (
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request header fields too large\n",
                    ),
                    HeadError::Malformed => (StatusCode::BAD_REQUEST, "bad request\n"),
                };
                let mut r = Response::new(Reply::Bytes(Bytes::from_static(msg.as_bytes())));
                *r.status_mut() = code;
                write_answer(&mut stream, r, false, false, per_call, moved).await?;
                close(stream, moved).await;
                return Ok(());
            }
        };
        let is_head = head.method == Method::HEAD;
        let keep_alive = head.keep_alive && !head.has_body;
        let answer = handle(head).await;
        write_answer(&mut stream, answer, is_head, keep_alive, per_call, moved).await?;
        if !keep_alive {
            close(stream, moved).await;
            return Ok(());
        }
    }
}

/// Most bytes read and dropped after the answer on a closing connection.
const LINGER_BYTES: usize = 256 * 1024;
/// Longest wait for the client to close after the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Ends a connection after its last answer: FIN first, then whatever the
/// client still sends (a body, pipelined requests) is read and dropped,
/// within [`LINGER_BYTES`] and [`LINGER_TIME`]. Closing a socket with
/// unread bytes makes the kernel send a reset, which can destroy the
/// answer before the client has read it.
async fn close(mut stream: TcpStream, moved: &AtomicU64) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    total += n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

enum ReadError {
    Io(io::Error),
    Head(HeadError),
}

/// Reads until `buf` starts with a complete head; `None` if the client
/// closed the connection before sending a byte of one.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    moved: &AtomicU64,
) -> Result<Option<RequestHead>, ReadError> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((head, n))) => {
                    buf.drain(..n);
                    return Ok(Some(head));
                }
                Ok(None) if buf.len() >= max => return Err(ReadError::Head(HeadError::TooLarge)),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Head(e)),
            }
        }
        buf.reserve(8192.min(max));
        let n = stream.read_buf(buf).await.map_err(ReadError::Io)?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection inside a request head",
            )));
        }
    }
}

/// Writes the status line and headers, then the body (none for `HEAD`,
/// 204 and 304). `Content-Length` comes from the body unless the handler
/// set one; `Connection: close` when the connection ends after this answer.
async fn write_answer(
    stream: &mut TcpStream,
    answer: Response<Reply>,
    is_head: bool,
    keep_alive: bool,
    per_call: usize,
    moved: &AtomicU64,
) -> io::Result<()> {
    let (parts, body) = answer.into_parts();
    let bodiless = parts.status == StatusCode::NOT_MODIFIED
        || parts.status == StatusCode::NO_CONTENT
        || parts.status.is_informational();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    head.extend_from_slice(b"\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        line(b"content-length", body.len().to_string().as_bytes());
    }
    line(
        b"date",
        httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
    );
    line(
        b"connection",
        if keep_alive { b"keep-alive" } else { b"close" },
    );
    head.extend_from_slice(b"\r\n");
    let send_body = !is_head && !bodiless;
    match body {
        Reply::Bytes(b) if send_body => {
            head.extend_from_slice(&b);
            write_all(stream, &head, moved).await
        }
        Reply::File { file, off, len } if send_body => {
            write_all(stream, &head, moved).await?;
            send_file(stream, &file, off, len, per_call, moved).await
        }
        _ => write_all(stream, &head, moved).await,
    }
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8], moved: &AtomicU64) -> io::Result<()> {
    stream.write_all(bytes).await?;
    moved.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Sends `[off, off + len)` of `file` with `sendfile`, waiting for the
/// socket between calls. A file that ends early is an error (the answer's
/// `Content-Length` promised more), and the caller closes the connection.
async fn send_file(
    stream: &mut TcpStream,
    file: &File,
    off: u64,
    len: u64,
    per_call: usize,
    moved: &AtomicU64,
) -> io::Result<()> {
    let end = off + len;
    let mut pos = off;
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(per_call.max(1));
        stream.writable().await?;
        let sock = &*stream;
        let sent = sock.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(sock, file, Some(&mut pos), want).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the bytes its answer promised",
                ))
            }
            Ok(n) => {
                moved.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if sendfile_unsupported(&e) => {
                return copy_file(stream, file, pos, end, per_call, moved).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `sendfile` cannot read this file (its file system has no splice read).
fn sendfile_unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error().is_some_and(|c| {
        [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP]
            .iter()
            .any(|x| x.raw_os_error() == c)
    })
}

/// Sends `[pos, end)` of `file` through a buffer: for files `sendfile`
/// cannot read. Each block is read on the calling thread, as `sendfile`
/// would read it.
async fn copy_file(
    stream: &mut TcpStream,
    file: &File,
    mut pos: u64,
    end: u64,
    block: usize,
    moved: &AtomicU64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; block.clamp(4096, 256 * 1024)];
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the bytes its answer promised",
            ));
        }
        write_all(stream, &buf[..n], moved).await?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> RequestHead {
        parse_head(s.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads_parse_with_their_length_and_connection_rules() {
        let raw = "GET /cas/sha256/ab?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\nGET /next";
        let (h, n) = parse_head(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(&raw[n..], "GET /next");
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/cas/sha256/ab");
        assert_eq!(h.uri.query(), Some("x=1"));
        assert_eq!(h.headers[header::RANGE], "bytes=0-9");
        assert!(h.keep_alive && !h.has_body);
        assert!(!parsed("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!parsed("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(parsed("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").has_body);
        assert!(parsed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
        assert!(!parsed("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
    }

    /// The copy path for files `sendfile` cannot read sends exactly the
    /// range, block after block.
    #[tokio::test]
    async fn the_copy_fallback_sends_the_range() {
        use std::io::Write as _;
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let moved = AtomicU64::new(0);
        copy_file(&mut server, &f, 1000, 500_001, 64 * 1024, &moved)
            .await
            .unwrap();
        drop(server);
        assert!(
            reader.await.unwrap() == data[1000..500_001],
            "copied bytes differ"
        );
        assert_eq!(moved.load(Ordering::Relaxed), 499_001);
        let inval = io::Error::from(rustix::io::Errno::INVAL);
        assert!(sendfile_unsupported(&inval));
        assert!(!sendfile_unsupported(&io::Error::from(
            rustix::io::Errno::PIPE
        )));
    }

    #[test]
    fn partial_malformed_and_oversized_heads() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: ten\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        assert_eq!(
            parse_head(b"\x00\x01 junk\r\n\r\n").err(),
            Some(HeadError::Malformed)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).err(),
            Some(HeadError::TooLarge)
        );
    }
}
