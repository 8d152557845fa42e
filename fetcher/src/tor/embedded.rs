//! The embedded Tor client (arti): its configuration, its bootstrap with
//! progress events, the gateway its HTTP clients connect through, and the
//! onion service of `phase serve --onion`.

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
        parse_fragment(&text).map_err(|e| TorError::Config(format!("{}: {e}", path.display())))?;
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
            Ok(Err(e)) => return Err(TorError::Bootstrap(format!("{e} (last status: {last})"))),
            Ok(Ok(())) => {}
        }
        if let Some(f) = &events {
            f(&TorEvent::Ready {
                elapsed: started.elapsed(),
            });
        }
        let mut prefs = StreamPrefs::new();
        prefs.connect_to_onion_services(arti_client::config::BoolOrAuto::Explicit(true));
        let dialer = Dialer::tor(Arc::clone(&client), prefs, events.map(|f| (f, started)));
        let gateway = Gateway::start(dialer).map_err(TorError::Gateway)?;
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
