//! Routes for the fetcher's HTTP client: direct, an external SOCKS5 proxy
//! (a Tor daemon's `SocksPort`), or an embedded Tor client (arti, cargo
//! feature `tor`). See docs/tor.md.
//!
//! Every request of a [`crate::Fetcher`] built with [`crate::Fetcher::with_route`]
//! (artifact ranges, chunk maps, and the TUF metadata through
//! [`crate::PeerTransport`], which shares its client) goes by the route. There
//! is no fallback: when the proxy or Tor fails, the request fails.
//!
//! How the proxied routes are hooked in: reqwest 0.13 has no public
//! connector hook that sees the destination (its connector layers get a
//! sealed request type), and its own SOCKS support needs a TLS feature (the
//! plain connector refuses a `socks5h://` proxy URI). What it has is
//! `ClientBuilder::unix_socket`: every connection goes to one Unix socket,
//! with no DNS lookup. So a [`Gateway`] listens on a Unix socket in a fresh
//! 0700 directory, reads the head of the first request on each connection
//! (reqwest pools connections per scheme and authority, so one connection
//! carries one origin), takes the origin from its `Host` header, dials it
//! through arti ([`arti_client::TorClient::connect_with_prefs`]) or through
//! the external SOCKS5 proxy (host names resolved by the proxy), replays the
//! head and then copies bytes both ways. No TCP port is opened.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

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
            Route::Socks5(a) => Gateway::start(Dialer::Socks5(a.clone()), None).map(Some),
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

/// How the gateway reaches an origin.
pub(crate) enum Dialer {
    /// Through an external SOCKS5 proxy.
    Socks5(String),
    /// Through arti.
    #[cfg(feature = "tor")]
    Tor(
        Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>,
        arti_client::StreamPrefs,
    ),
}

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

struct Shared {
    dialer: Dialer,
    events: Option<TorEventFn>,
    started: Instant,
    first_byte: AtomicBool,
}

impl Shared {
    fn emit(&self, e: TorEvent) {
        if let Some(f) = &self.events {
            f(&e);
        }
    }
}

/// Largest request head read before dialing.
const MAX_HEAD: usize = 64 * 1024;
/// Time allowed for the head to arrive, and for a proxy handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

impl Gateway {
    pub(crate) fn start(
        dialer: Dialer,
        events: Option<(TorEventFn, Instant)>,
    ) -> std::io::Result<Arc<Self>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("phase-route-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let path = dir.path().join("gw.sock");
        let listener = UnixListener::bind(&path)?;
        let (events, started) = match events {
            Some((f, t)) => (Some(f), t),
            None => (None, Instant::now()),
        };
        let shared = Arc::new(Shared {
            dialer,
            events,
            started,
            first_byte: AtomicBool::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, shared));
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

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "route gateway: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let sh = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, sh).await {
                tracing::debug!(error = %e, "route gateway: connection ended");
            }
        });
    }
}

/// One client connection: its first request head names the origin.
async fn handle(mut s: UnixStream, sh: Arc<Shared>) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut s))
        .await
        .map_err(|_| std::io::Error::other("no request head in time"))??;
    let Some(head) = head else {
        return Ok(());
    };
    let (host, port) = match origin(&head) {
        Some(o) => o,
        None => {
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
            return Ok(());
        }
    };
    let label = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let remote: Result<Box<dyn Stream>, String> = match &sh.dialer {
        Dialer::Socks5(proxy) => {
            tokio::time::timeout(HEAD_TIMEOUT, socks5_connect(proxy, &host, port))
                .await
                .map_err(|_| format!("SOCKS5 proxy {proxy} did not answer in time"))
                .and_then(|r| r.map_err(|e| format!("SOCKS5 proxy {proxy}: {e}")))
                .map(|t| Box::new(t) as Box<dyn Stream>)
        }
        #[cfg(feature = "tor")]
        Dialer::Tor(client, prefs) => client
            .connect_with_prefs((host.as_str(), port), prefs)
            .await
            .map_err(|e| e.to_string())
            .map(|t| Box::new(t) as Box<dyn Stream>),
    };
    let mut remote = match remote {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(target = %label, %error, "route gateway: connection failed");
            sh.emit(TorEvent::StreamFailed {
                target: label,
                error,
            });
            // The request fails as a connection error, never as an answer.
            return Ok(());
        }
    };
    // arti's streams buffer writes into cells: flush, or the request
    // waits for more bytes that never come.
    if let Err(e) = async {
        remote.write_all(&head).await?;
        remote.flush().await
    }
    .await
    {
        sh.emit(TorEvent::StreamFailed {
            target: label,
            error: e.to_string(),
        });
        return Ok(());
    }
    let (mut cr, mut cw) = s.into_split();
    let (mut tr, mut tw) = tokio::io::split(remote);
    let up = async {
        let r = tokio::io::copy(&mut cr, &mut tw).await;
        let _ = tw.shutdown().await;
        r
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            let n = tr.read(&mut buf).await?;
            if n == 0 {
                let _ = cw.shutdown().await;
                return Ok::<u64, std::io::Error>(total);
            }
            if total == 0 && !sh.first_byte.swap(true, Ordering::AcqRel) {
                sh.emit(TorEvent::FirstByte {
                    target: label.clone(),
                    elapsed: sh.started.elapsed(),
                });
            }
            total += n as u64;
            cw.write_all(&buf[..n]).await?;
        }
    };
    let (u, d) = tokio::join!(up, down);
    u?;
    d?;
    Ok(())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Reads until the end of the first request head (`\r\n\r\n`); `None` if
/// the client closed first. Bytes after the head stay in the result (a
/// body or a pipelined request) and are replayed with it.
async fn read_head(s: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
    }
}

/// The origin (host without brackets, port) from a request head's `Host`
/// header (port 80 when absent: the proxied routes carry `http://` only).
fn origin(head: &[u8]) -> Option<(String, u16)> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let value = text.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("host").then(|| v.trim())
    })?;
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (value.to_string(), 80),
        }
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    (valid && port != 0).then_some((host, port))
}

/// A SOCKS5 client handshake (RFC 1928, no authentication, CONNECT by
/// name so the proxy resolves it).
async fn socks5_connect(proxy: &str, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 0]).await?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r).await?;
    if r != [5, 0] {
        return Err(std::io::Error::other(
            "proxy refused the no-authentication method",
        ));
    }
    let name = host.as_bytes();
    let len = u8::try_from(name.len()).map_err(|_| std::io::Error::other("host name too long"))?;
    let mut req = vec![5, 1, 0, 3, len];
    req.extend_from_slice(name);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut rep = [0u8; 4];
    s.read_exact(&mut rep).await?;
    if rep[0] != 5 {
        return Err(std::io::Error::other("not a SOCKS5 answer"));
    }
    if rep[1] != 0 {
        return Err(std::io::Error::other(format!(
            "CONNECT to {host}:{port} refused (SOCKS reply {})",
            rep[1]
        )));
    }
    let skip = match rep[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l).await?;
            usize::from(l[0])
        }
        _ => return Err(std::io::Error::other("bad SOCKS5 address type")),
    };
    let mut rest = vec![0u8; skip + 2];
    s.read_exact(&mut rest).await?;
    Ok(s)
}

#[cfg(feature = "tor")]
pub use embedded::{OnionService, Tor, TorConfig};

#[cfg(feature = "tor")]
mod embedded {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use arti_client::config::{CfgPath, TorClientConfigBuilder};
    use arti_client::{StreamPrefs, TorClient};
    use futures_util::StreamExt;
    #[cfg(feature = "tor-onion-service")]
    use tokio::net::TcpStream;
    use tor_rtcompat::PreferredRuntime;

    use super::{Dialer, Gateway, TorError, TorEvent, TorEventFn};

    /// Where the embedded Tor client keeps its files, and which network it
    /// joins.
    #[derive(Debug, Clone)]
    pub struct TorConfig {
        /// arti's state (guards, ...). In private mode: a directory in RAM.
        pub state_dir: PathBuf,
        /// arti's directory cache (consensus, microdescriptors). In private
        /// mode: a directory in RAM.
        pub cache_dir: PathBuf,
        /// An arti configuration fragment (TOML): `[tor_network]`
        /// (authorities, fallback caches), `[bridges]`, `[path_rules]`,
        /// `[address_filter]`... `None`: the public Tor network with arti's
        /// defaults. Its `[storage]` directories are overridden by the two
        /// fields above.
        pub network: Option<String>,
        /// Bound on the bootstrap.
        pub bootstrap_timeout: Duration,
    }

    impl TorConfig {
        /// State in `dir/state`, cache in `dir/cache`, the public network.
        pub fn in_dir(dir: &Path) -> Self {
            Self {
                state_dir: dir.join("state"),
                cache_dir: dir.join("cache"),
                network: None,
                bootstrap_timeout: Duration::from_secs(120),
            }
        }

        /// The same with the arti configuration fragment read from `path`
        /// (checked here, so a bad file is named before anything starts).
        pub fn with_network_file(mut self, path: &Path) -> Result<Self, TorError> {
            let text = std::fs::read_to_string(path).map_err(|source| TorError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_fragment(&text)
                .map_err(|e| TorError::Config(format!("{}: {e}", path.display())))?;
            self.network = Some(text);
            Ok(self)
        }

        fn arti_config(&self) -> Result<arti_client::TorClientConfig, TorError> {
            let mut b = match &self.network {
                Some(t) => parse_fragment(t).map_err(TorError::Config)?,
                None => TorClientConfigBuilder::default(),
            };
            b.storage()
                .state_dir(CfgPath::new_literal(&self.state_dir))
                .cache_dir(CfgPath::new_literal(&self.cache_dir));
            b.build().map_err(|e| TorError::Config(e.to_string()))
        }
    }

    /// The fragment as arti's configuration builder; a bad one gives one
    /// line ("line L, column C: what").
    fn parse_fragment(text: &str) -> Result<TorClientConfigBuilder, String> {
        toml::from_str::<TorClientConfigBuilder>(text).map_err(|e| {
            let what = e.message().trim().replace('\n', "; ");
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {what}")
                }
                None => what,
            }
        })
    }

    struct Inner {
        client: Arc<TorClient<PreferredRuntime>>,
        gateway: Arc<Gateway>,
    }

    /// The embedded, bootstrapped Tor client and the gateway its HTTP
    /// clients connect through. Clones share it; it stops when the last
    /// clone is dropped.
    #[derive(Clone)]
    pub struct Tor {
        inner: Arc<Inner>,
    }

    impl std::fmt::Debug for Tor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Tor").finish_non_exhaustive()
        }
    }

    impl Tor {
        /// Starts arti, bootstraps it (bounded by
        /// [`TorConfig::bootstrap_timeout`]), and opens the loopback SOCKS5
        /// endpoint. Progress goes to `events`. Call inside a tokio runtime.
        pub async fn start(cfg: TorConfig, events: Option<TorEventFn>) -> Result<Self, TorError> {
            let started = Instant::now();
            for d in [&cfg.state_dir, &cfg.cache_dir] {
                create_private_dir(d)
                    .map_err(|e| TorError::Start(format!("cannot create {}: {e}", d.display())))?;
            }
            let config = cfg.arti_config()?;
            let runtime = PreferredRuntime::current()
                .map_err(|e| TorError::Start(format!("no async runtime: {e}")))?;
            let client = TorClient::with_runtime(runtime)
                .config(config)
                .create_unbootstrapped()
                .map_err(|e| TorError::Start(e.to_string()))?;
            let last = Arc::new(std::sync::Mutex::new(String::new()));
            let progress = {
                let mut ev = client.bootstrap_events();
                let events = events.clone();
                let last = Arc::clone(&last);
                tokio::spawn(async move {
                    let mut shown = None;
                    while let Some(s) = ev.next().await {
                        let percent = (s.as_frac().clamp(0.0, 1.0) * 100.0).round() as u8;
                        let status = s.to_string();
                        if let Ok(mut l) = last.lock() {
                            l.clone_from(&status);
                        }
                        if shown != Some(percent) {
                            shown = Some(percent);
                            if let Some(f) = &events {
                                f(&TorEvent::Bootstrap { percent, status });
                            }
                        }
                    }
                })
            };
            let boot = tokio::time::timeout(cfg.bootstrap_timeout, client.bootstrap()).await;
            progress.abort();
            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
            match boot {
                Err(_) => {
                    return Err(TorError::Bootstrap(format!(
                        "not done within {} s (last status: {last})",
                        cfg.bootstrap_timeout.as_secs()
                    )))
                }
                Ok(Err(e)) => {
                    return Err(TorError::Bootstrap(format!("{e} (last status: {last})")))
                }
                Ok(Ok(())) => {}
            }
            if let Some(f) = &events {
                f(&TorEvent::Ready {
                    elapsed: started.elapsed(),
                });
            }
            let mut prefs = StreamPrefs::new();
            prefs.connect_to_onion_services(arti_client::config::BoolOrAuto::Explicit(true));
            let gateway = Gateway::start(
                Dialer::Tor(Arc::clone(&client), prefs),
                events.map(|f| (f, started)),
            )
            .map_err(TorError::Gateway)?;
            Ok(Self {
                inner: Arc::new(Inner { client, gateway }),
            })
        }

        pub(crate) fn gateway(&self) -> Arc<Gateway> {
            Arc::clone(&self.inner.gateway)
        }

        /// The arti client (for callers that open their own streams).
        pub fn client(&self) -> &Arc<TorClient<PreferredRuntime>> {
            &self.inner.client
        }
    }

    fn create_private_dir(d: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
    }

    /// An onion service in front of a local TCP server (`phase serve
    /// --onion`): every stream to its port 80 is forwarded to `forward_to`.
    #[cfg(feature = "tor-onion-service")]
    pub struct OnionService {
        /// `xxxx.onion`.
        pub address: String,
        _service: Arc<tor_hsservice::RunningOnionService>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Without the `tor-onion-service` feature there is no onion service.
    #[cfg(not(feature = "tor-onion-service"))]
    #[derive(Debug)]
    pub struct OnionService {
        /// `xxxx.onion`.
        pub address: String,
    }

    #[cfg(feature = "tor-onion-service")]
    impl std::fmt::Debug for OnionService {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OnionService")
                .field("address", &self.address)
                .finish_non_exhaustive()
        }
    }

    #[cfg(feature = "tor-onion-service")]
    impl Drop for OnionService {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[cfg(feature = "tor-onion-service")]
    impl Tor {
        /// Launches the onion service `nickname` (its keys live in the
        /// state directory, so the address is stable across restarts) and
        /// forwards its port 80 to `forward_to`. Returns once the address
        /// is known; publication of the descriptor continues in the
        /// background (bounded by arti).
        pub fn launch_onion_service(
            &self,
            nickname: &str,
            forward_to: std::net::SocketAddr,
        ) -> Result<OnionService, TorError> {
            use tor_cell::relaycell::msg::Connected;
            use tor_hsservice::{handle_rend_requests, HsNickname, StreamRequest};
            let nick = HsNickname::new(nickname.to_string())
                .map_err(|e| TorError::Onion(format!("nickname {nickname}: {e}")))?;
            let config = arti_client::config::onion_service::OnionServiceConfigBuilder::default()
                .nickname(nick)
                .build()
                .map_err(|e| TorError::Onion(e.to_string()))?;
            let (service, requests) = self
                .inner
                .client
                .launch_onion_service(config)
                .map_err(|e| TorError::Onion(e.to_string()))?
                .ok_or_else(|| TorError::Onion("service is disabled".into()))?;
            let address = service
                .onion_address()
                .map(|a| safelog_display(&a))
                .ok_or_else(|| TorError::Onion("no onion address (no key)".into()))?;
            let mut streams = Box::pin(handle_rend_requests(requests));
            let task = tokio::spawn(async move {
                while let Some(req) = streams.next().await {
                    tokio::spawn(async move {
                        let port = match req.request() {
                            tor_proto::stream::IncomingStreamRequest::Begin(b) => b.port(),
                            _ => 0,
                        };
                        if port != 80 {
                            let _ = req.shutdown_circuit();
                            return;
                        }
                        let local = match TcpStream::connect(forward_to).await {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::warn!(error = %e, "onion service: local server unreachable");
                                let _ = req.shutdown_circuit();
                                return;
                            }
                        };
                        forward(req, local).await;
                    });
                }
            });
            async fn forward(req: StreamRequest, mut local: TcpStream) {
                let Ok(mut remote) = req.accept(Connected::new_empty()).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut remote, &mut local).await;
            }
            Ok(OnionService {
                address,
                _service: service,
                task,
            })
        }
    }

    #[cfg(feature = "tor-onion-service")]
    fn safelog_display(a: &tor_hsservice::HsId) -> String {
        // HsId displays redacted by default; its DisplayRedacted form with
        // redaction off is the full address.
        use safelog::DisplayRedacted as _;
        a.display_unredacted().to_string()
    }
}

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

    #[test]
    fn the_origin_comes_from_the_host_header() {
        let o = |h: &str| origin(h.as_bytes());
        assert_eq!(
            o("GET /x HTTP/1.1\r\nhost: 198.18.0.5:7070\r\n\r\n"),
            Some(("198.18.0.5".into(), 7070))
        );
        assert_eq!(
            o("GET / HTTP/1.1\r\nAccept: */*\r\nHost: abc.onion\r\n\r\nrest"),
            Some(("abc.onion".into(), 80))
        );
        assert_eq!(
            o("GET / HTTP/1.1\r\nhost: [fe80::1]:8080\r\n\r\n"),
            Some(("fe80::1".into(), 8080))
        );
        assert_eq!(o("GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(o("GET / HTTP/1.1\r\nhost: a b:1\r\n\r\n"), None);
        assert_eq!(o("GET / HTTP/1.1\r\nhost: a:0\r\n\r\n"), None);
        assert_eq!(o("GET / HTTP/1.1\r\nhost: a:1"), None);
    }
}
