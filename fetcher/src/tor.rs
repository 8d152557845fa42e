//! Routes for the fetcher's HTTP client: direct, an external SOCKS5 proxy
//! (a Tor daemon's `SocksPort`), or an embedded Tor client (arti, cargo
//! feature `tor`). See docs/tor.md.
//!
//! Every request of a [`crate::Fetcher`] built with [`crate::Fetcher::with_route`]
//! (artifact ranges, chunk maps, and the TUF metadata through
//! [`crate::PeerTransport`], which shares its client) goes by the route. There
//! is no fallback: when the proxy or Tor fails, the request fails.
//!
//! How the proxied routes are hooked in: the fetcher's HTTP client is
//! reqwest 0.13, whose connector takes no dialer of ours (its connector
//! layers get a sealed request type) and whose `socks5h://` proxy fails in
//! a build without TLS (its plain connector refuses the proxy's scheme).
//! What it has is `ClientBuilder::unix_socket`: every connection goes to
//! one Unix socket, with no DNS lookup. So a [`Gateway`] listens on a Unix
//! socket in a fresh 0700 directory and serves each connection with
//! hyper's HTTP/1 server; each request goes on to the origin its `Host`
//! names through a hyper-util client whose connector, a `Dialer`, sees
//! the destination of every connection it opens and dials it through arti
//! ([`arti_client::TorClient::connect_with_prefs`]) or through the
//! external proxy (hyper-util's SOCKS5 connector, host names resolved by
//! the proxy). No TCP port is opened. See docs/tor.md.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::proxy::SocksV5;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;

/// How a fetcher's HTTP client reaches peers and mirrors.
#[derive(Clone, Debug, Default)]
pub enum Route {
    /// Straight TCP connections (DNS through the system's resolver config).
    #[default]
    Direct,
    /// An external SOCKS5 proxy, `host:port` (e.g. a Tor daemon's
    /// `SocksPort`). Host names are resolved by the proxy.
    Socks5(String),
    /// The embedded Tor client, bootstrapped.
    #[cfg(feature = "tor")]
    Tor(Tor),
}

impl Route {
    /// A short description for messages ("direct", "SOCKS5 proxy ADDR", "Tor").
    pub fn describe(&self) -> String {
        match self {
            Route::Direct => "direct".into(),
            Route::Socks5(a) => format!("SOCKS5 proxy {a}"),
            #[cfg(feature = "tor")]
            Route::Tor(_) => "Tor (embedded arti)".into(),
        }
    }

    /// The gateway the client connects to (`None` for direct); started
    /// here for [`Route::Socks5`] (needs a tokio runtime context).
    pub(crate) fn gateway(&self) -> std::io::Result<Option<Arc<Gateway>>> {
        match self {
            Route::Direct => Ok(None),
            Route::Socks5(a) => Gateway::start(Dialer::socks5(a)?).map(Some),
            #[cfg(feature = "tor")]
            Route::Tor(t) => Ok(Some(t.gateway())),
        }
    }
}

/// Checks a `--socks5` address: `host:port` with a port.
pub fn parse_socks5(addr: &str) -> Result<String, String> {
    let a = addr
        .strip_prefix("socks5h://")
        .or_else(|| addr.strip_prefix("socks5://"))
        .unwrap_or(addr);
    let ok = a
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if ok && !a.contains(['/', '@', ' ']) {
        Ok(a.to_string())
    } else {
        Err(format!(
            "{addr}: not a SOCKS5 proxy address (want HOST:PORT)"
        ))
    }
}

/// Something the proxied route reports (to draw on the console).
#[derive(Debug, Clone, PartialEq)]
pub enum TorEvent {
    /// Bootstrap progress changed.
    Bootstrap {
        /// 0..=100.
        percent: u8,
        /// arti's description of where it is.
        status: String,
    },
    /// Bootstrapped: ready to carry traffic.
    Ready {
        /// Since [`Tor::start`] was called.
        elapsed: Duration,
    },
    /// The first byte of the first answer that came back (once).
    FirstByte {
        /// `host:port` it came from.
        target: String,
        /// Since [`Tor::start`] was called.
        elapsed: Duration,
    },
    /// A connection through Tor or the proxy failed (the HTTP request
    /// fails with it).
    StreamFailed {
        /// `host:port`.
        target: String,
        /// Why.
        error: String,
    },
}

/// The callback that receives [`TorEvent`]s.
pub type TorEventFn = Arc<dyn Fn(&TorEvent) + Send + Sync>;

/// A failure of the embedded Tor client.
#[derive(Debug, thiserror::Error)]
pub enum TorError {
    /// The network file could not be read.
    #[error("cannot read the Tor network file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid arti configuration.
    #[error("invalid Tor configuration: {0}")]
    Config(String),
    /// arti could not be started.
    #[error("Tor failed to start: {0}")]
    Start(String),
    /// Bootstrap did not finish.
    #[error("Tor failed to bootstrap: {0}")]
    Bootstrap(String),
    /// The in-process gateway could not be opened.
    #[error("Tor failed: cannot open the in-process gateway socket")]
    Gateway(#[source] std::io::Error),
    /// The onion service could not be launched.
    #[error("Tor onion service failed: {0}")]
    Onion(String),
}

/// Time allowed for an external SOCKS5 proxy to connect a stream.
const SOCKS_TIMEOUT: Duration = Duration::from_secs(30);

/// What a dialed stream reports to, shared by a gateway's connections.
struct Watch {
    events: Option<TorEventFn>,
    started: Instant,
    first_byte: AtomicBool,
}

impl Watch {
    fn new(events: Option<(TorEventFn, Instant)>) -> Arc<Self> {
        let (events, started) = match events {
            Some((f, t)) => (Some(f), t),
            None => (None, Instant::now()),
        };
        Arc::new(Self {
            events,
            started,
            first_byte: AtomicBool::new(false),
        })
    }

    fn emit(&self, e: TorEvent) {
        if let Some(f) = &self.events {
            f(&e);
        }
    }
}

#[derive(Clone)]
enum How {
    /// hyper-util's SOCKS5 connector (`socks5h`: the proxy resolves names).
    Socks5(String, SocksV5<HttpConnector>),
    /// arti.
    #[cfg(feature = "tor")]
    Tor(
        Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>,
        arti_client::StreamPrefs,
    ),
}

/// The connector of the gateway's HTTP client (a tower `Service<Uri>`, as
/// hyper-util wants it): dials each origin by the route. A dial that fails
/// is reported as [`TorEvent::StreamFailed`].
#[derive(Clone)]
pub(crate) struct Dialer {
    how: How,
    watch: Arc<Watch>,
}

impl Dialer {
    /// Through the external SOCKS5 proxy `proxy` (`host:port`).
    fn socks5(proxy: &str) -> std::io::Result<Self> {
        let uri: Uri = format!("socks5h://{proxy}")
            .parse()
            .map_err(std::io::Error::other)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Ok(Self {
            how: How::Socks5(proxy.to_string(), SocksV5::new(uri, http).local_dns(false)),
            watch: Watch::new(None),
        })
    }

    /// Through arti.
    #[cfg(feature = "tor")]
    pub(crate) fn tor(
        client: Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>,
        prefs: arti_client::StreamPrefs,
        events: Option<(TorEventFn, Instant)>,
    ) -> Self {
        Self {
            how: How::Tor(client, prefs),
            watch: Watch::new(events),
        }
    }

    async fn dial(self, dst: Uri) -> std::io::Result<Box<dyn Stream>> {
        let host = dst
            .host()
            .ok_or_else(|| std::io::Error::other("no host in the URL"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = dst.port_u16().unwrap_or(80);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let stream: Result<Box<dyn Stream>, String> = match self.how {
            How::Socks5(proxy, mut socks) => {
                // The port spelled out: the connector's default is 443.
                let dst: Uri = format!("http://{target}")
                    .parse()
                    .map_err(std::io::Error::other)?;
                tokio::time::timeout(SOCKS_TIMEOUT, tower_service::Service::call(&mut socks, dst))
                    .await
                    .map_err(|_| format!("SOCKS5 proxy {proxy} did not answer in time"))
                    .and_then(|r| r.map_err(|e| format!("SOCKS5 proxy {proxy}: {e}")))
                    .map(|io| Box::new(io.into_inner()) as Box<dyn Stream>)
            }
            #[cfg(feature = "tor")]
            How::Tor(client, prefs) => client
                .connect_with_prefs((host.as_str(), port), &prefs)
                .await
                .map_err(|e| e.to_string())
                .map(|s| Box::new(s) as Box<dyn Stream>),
        };
        match stream {
            Ok(s) => Ok(s),
            Err(error) => {
                tracing::warn!(%target, %error, "route: connection failed");
                self.watch.emit(TorEvent::StreamFailed {
                    target,
                    error: error.clone(),
                });
                Err(std::io::Error::other(error))
            }
        }
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<Box<dyn Stream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.dial(dst).await.map(TokioIo::new) })
    }
}

/// A dialed stream. arti's streams buffer writes into cells; hyper flushes
/// after each request head, which sends them.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Connection for Box<dyn Stream> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Unix-socket gateway a proxied client connects to; stops (and its
/// directory goes) when dropped.
pub struct Gateway {
    path: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("path", &self.path).finish()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    /// Opens the socket and serves it on the current tokio runtime.
    pub(crate) fn start(dialer: Dialer) -> std::io::Result<Arc<Self>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("phase-route-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let path = dir.path().join("gw.sock");
        let listener = UnixListener::bind(&path)?;
        let watch = Arc::clone(&dialer.watch);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(dialer);
        let task = tokio::spawn(accept_loop(listener, client, watch));
        Ok(Arc::new(Self {
            path,
            _dir: dir,
            task,
        }))
    }

    /// The socket the HTTP client connects to.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

async fn accept_loop(listener: UnixListener, client: Client<Dialer, Incoming>, watch: Arc<Watch>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "route gateway: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (client, watch) = (client.clone(), Arc::clone(&watch));
        tokio::spawn(async move {
            let serve = hyper::service::service_fn(move |req| {
                forward(client.clone(), Arc::clone(&watch), req)
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), serve)
                .await
            {
                tracing::debug!(error = %e, "route gateway: connection ended");
            }
        });
    }
}

/// One request, sent on to the origin its `Host` names; the first answer
/// of all is reported as [`TorEvent::FirstByte`]. When the origin cannot
/// be reached the client's connection closes without an answer: the
/// request fails as a connection error, never as an answer.
async fn forward(
    client: Client<Dialer, Incoming>,
    watch: Arc<Watch>,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, BoxError> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .ok_or("a request without Host")?
        .to_str()?;
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("http://{host}{path}").parse()?;
    let target = format!(
        "{}:{}",
        uri.host().unwrap_or_default(),
        uri.port_u16().unwrap_or(80)
    );
    *req.uri_mut() = uri;
    let answer = client.request(req).await?;
    if !watch.first_byte.swap(true, Ordering::AcqRel) {
        watch.emit(TorEvent::FirstByte {
            target,
            elapsed: watch.started.elapsed(),
        });
    }
    Ok(answer)
}

#[cfg(feature = "tor")]
pub use embedded::{OnionService, Tor, TorConfig};

#[cfg(feature = "tor")]
mod embedded;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks5_addresses_are_checked() {
        assert_eq!(parse_socks5("127.0.0.1:9050").unwrap(), "127.0.0.1:9050");
        assert_eq!(
            parse_socks5("socks5h://198.18.0.5:9050").unwrap(),
            "198.18.0.5:9050"
        );
        assert_eq!(parse_socks5("[::1]:9050").unwrap(), "[::1]:9050");
        assert!(parse_socks5("127.0.0.1").is_err());
        assert!(parse_socks5(":9050").is_err());
        assert!(parse_socks5("h:0").is_err());
        assert!(parse_socks5("u:p@h:1").is_err());
    }

    use std::net::SocketAddr;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An HTTP origin that answers `ok` to every request; counts them.
    async fn origin() -> (SocketAddr, Arc<Mutex<usize>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(0));
        let h = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                *h.lock().unwrap() += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        (addr, hits)
    }

    /// A SOCKS5 proxy (no authentication, CONNECT only) that records the
    /// `host:port` of each request and connects every one to `to`.
    async fn proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let a = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let a = Arc::clone(&a);
                tokio::spawn(async move {
                    let mut head = [0u8; 2];
                    s.read_exact(&mut head).await.unwrap();
                    let mut methods = vec![0u8; usize::from(head[1])];
                    s.read_exact(&mut methods).await.unwrap();
                    s.write_all(&[5, 0]).await.unwrap();
                    let mut req = [0u8; 4];
                    s.read_exact(&mut req).await.unwrap();
                    assert_eq!((req[1], req[3]), (1, 3), "CONNECT by name");
                    let mut len = [0u8; 1];
                    s.read_exact(&mut len).await.unwrap();
                    let mut name = vec![0u8; usize::from(len[0]) + 2];
                    s.read_exact(&mut name).await.unwrap();
                    let port = u16::from_be_bytes([name[name.len() - 2], name[name.len() - 1]]);
                    let host = String::from_utf8_lossy(&name[..name.len() - 2]).to_string();
                    a.lock().unwrap().push(format!("{host}:{port}"));
                    let mut up = tokio::net::TcpStream::connect(to).await.unwrap();
                    s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                });
            }
        });
        (addr, asked)
    }

    fn routed(route: &Route) -> (crate::Fetcher, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cas = crate::Cas::open(dir.path()).unwrap();
        let f = crate::Fetcher::with_route(cas, crate::FetchOptions::default(), route).unwrap();
        (f, dir)
    }

    #[tokio::test]
    async fn a_socks5_route_hands_the_proxy_the_name_unresolved() {
        let (origin, hits) = origin().await;
        let (proxy, asked) = proxy(origin).await;
        let (f, _dir) = routed(&Route::Socks5(proxy.to_string()));
        // `.invalid` never resolves (RFC 6761): only the proxy can use it.
        for path in ["a", "b"] {
            let r = f
                .client()
                .get(format!("http://peer.invalid:7070/{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "ok");
        }
        let asked = asked.lock().unwrap().clone();
        assert!(!asked.is_empty());
        assert!(asked.iter().all(|a| a == "peer.invalid:7070"), "{asked:?}");
        assert_eq!(*hits.lock().unwrap(), asked.len());
    }

    #[tokio::test]
    async fn a_socks5_route_whose_proxy_is_down_never_connects_directly() {
        let (origin, hits) = origin().await;
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let (f, _dir) = routed(&Route::Socks5(closed.to_string()));
        let r = f.client().get(format!("http://{origin}/x")).send().await;
        let e = r.expect_err("no proxy, no answer");
        assert!(
            e.status().is_none(),
            "a connection error, not an answer: {e}"
        );
        assert_eq!(*hits.lock().unwrap(), 0, "the origin was reached directly");
    }
}
