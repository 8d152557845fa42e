//! Beyond the LAN: provider records in a libp2p Kademlia DHT.
//!
//! A node that holds an artifact publishes a provider record keyed by the
//! artifact's SHA-256 multihash ([`provider_key`]); Kademlia re-publishes it
//! every [`DhtConfig::republish_interval`]. A booting node asks for the
//! providers of the digests its verified targets name and gets back HTTP
//! addresses to fetch from.
//!
//! How a provider's HTTP address travels: each node adds
//! `/ip4/A/tcp/P/http` external addresses for its HTTP server. Kademlia puts
//! a node's external addresses into the provider records it answers with,
//! and identify sends them to every peer that connects; the seeker dials a
//! provider it does not know yet and reads the `/http` addresses from the
//! provider's identify answer. The libp2p transport ignores (fails fast on)
//! `/http` addresses, so they never disturb dialing.
//!
//! The Kademlia protocol name is `/phase/kad/1.0.0`, so a Phase Boot DHT
//! does not join or pollute the public IPFS DHT.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, GetProvidersOk, QueryId, QueryResult};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::peer::{tidy_addrs, usable_ip, Peer, Source};

pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};

/// Kademlia protocol name of the Phase Boot DHT.
pub const KAD_PROTOCOL: &str = "/phase/kad/1.0.0";
/// Identify protocol version string of Phase Boot nodes.
pub const IDENTIFY_VERSION: &str = "/phase/1.0.0";
/// Most providers one lookup reports.
pub const MAX_PROVIDERS: usize = 64;
/// Most peers whose HTTP addresses are remembered from identify.
const MAX_IDENTIFIED: usize = 4096;

/// The DHT key of an artifact: the multihash of its SHA-256 digest
/// (code 0x12, length 0x20, then the 32 digest bytes).
pub fn provider_key(sha256: &[u8; 32]) -> kad::RecordKey {
    let mut mh = Vec::with_capacity(34);
    mh.extend_from_slice(&[0x12, 0x20]);
    mh.extend_from_slice(sha256);
    kad::RecordKey::new(&mh)
}

/// The pseudo-digest under which every node that serves a fleet's TUF
/// metadata provides itself: SHA-256 of `phase/fleet/v1/<root tag>`. A booting
/// node that knows only its trust root looks this up to find peers to run
/// the TUF refresh against, then looks up each target's digest.
pub fn fleet_digest(root: &crate::RootTag) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(format!("phase/fleet/v1/{root}").as_bytes()).into()
}

/// Errors of the DHT layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// The identity key file could not be read.
    #[error("cannot read the peer identity key {}", path.display())]
    KeyRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The identity key file holds something else.
    #[error("peer identity key {} is not a libp2p Ed25519 key", path.display())]
    KeyDecode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: libp2p::identity::DecodingError,
    },
    /// The identity key file could not be written.
    #[error("cannot write the peer identity key {}", path.display())]
    KeyWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The libp2p transport could not be built.
    #[error("cannot set up the libp2p transport")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A listen address was refused.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    /// A bootstrap address does not name its peer.
    #[error("bootstrap address {0} does not end in /p2p/<peer id>")]
    BootstrapNoPeerId(Multiaddr),
    /// Bootstrap is impossible: no peer is known.
    #[error("no known DHT peers to bootstrap from (give --bootstrap)")]
    NoKnownPeers,
    /// Bootstrap found no peer.
    #[error("DHT bootstrap failed")]
    Bootstrap(#[source] kad::BootstrapError),
    /// The provider record could not be stored locally.
    #[error("cannot store the provider record")]
    Store(#[source] kad::store::Error),
    /// Publishing the provider record failed.
    #[error("publishing the provider record failed")]
    Provide(#[source] kad::AddProviderError),
    /// The node's task is gone.
    #[error("the DHT node has stopped")]
    Stopped,
}

/// Where the node's identity comes from.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A key file (created with mode 0600 on first use), so the peer id is
    /// stable across boots.
    Persistent(PathBuf),
    /// A new key for this process only (private mode).
    Ephemeral,
}

/// How a DHT node runs.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Identity key source.
    pub identity: Identity,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Port of this node's HTTP content server; announced as `/http` on each
    /// address the node listens on.
    pub http_port: Option<u16>,
    /// Extra HTTP endpoints to announce verbatim.
    pub http_addrs: Vec<SocketAddr>,
    /// How often provider records are re-published.
    pub republish_interval: Duration,
    /// How long a provider record lives on other nodes.
    pub record_ttl: Duration,
    /// Upper bound of one Kademlia query.
    pub query_timeout: Duration,
    /// Serve DHT requests (Kademlia server mode). Private-mode nodes may
    /// only ask.
    pub server: bool,
    /// Accept loopback HTTP addresses from providers (single-host tests).
    pub allow_loopback: bool,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            identity: Identity::Ephemeral,
            listen: ["/ip4/0.0.0.0/tcp/0", "/ip6/::/tcp/0"]
                .iter()
                .map(|a| a.parse().expect("static multiaddr"))
                .collect(),
            bootstrap: Vec::new(),
            http_port: None,
            http_addrs: Vec::new(),
            republish_interval: Duration::from_secs(60 * 60),
            record_ttl: Duration::from_secs(24 * 60 * 60),
            query_timeout: Duration::from_secs(30),
            server: true,
            allow_loopback: false,
        }
    }
}

/// Loads the identity key at `path`, creating it (mode 0600, written to a
/// temporary file then renamed) when absent.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, DhtError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|source| DhtError::KeyDecode {
                path: path.to_owned(),
                source,
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let write_err = |source| DhtError::KeyWrite {
                path: path.to_owned(),
                source,
            };
            // An Ed25519 keypair always encodes; the error case is for key
            // types compiled out.
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = dir {
                std::fs::create_dir_all(dir).map_err(write_err)?;
            }
            let tmp = path.with_extension("tmp");
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(write_err)?;
                f.write_all(&bytes).map_err(write_err)?;
                f.sync_all().map_err(write_err)?;
            }
            std::fs::rename(&tmp, path).map_err(write_err)?;
            tracing::info!(path = %path.display(), peer = %key.public().to_peer_id(), "created DHT identity");
            Ok(key)
        }
        Err(source) => Err(DhtError::KeyRead {
            path: path.to_owned(),
            source,
        }),
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Bootstrap(oneshot::Sender<Result<(), DhtError>>),
    Provide([u8; 32], oneshot::Sender<Result<(), DhtError>>),
    StopProviding([u8; 32]),
    Find([u8; 32], Duration, mpsc::Sender<Peer>),
    RoutingTableSize(oneshot::Sender<usize>),
}

/// A running DHT node. Dropping it (or [`Dht::shutdown`]) stops the node.
#[derive(Debug)]
pub struct Dht {
    peer_id: PeerId,
    cmd: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Dht {
    /// Starts a node: identity, transport (TCP + Noise + Yamux), Kademlia
    /// and identify, listeners, and dials the bootstrap peers. Must be called
    /// inside a tokio runtime.
    pub async fn start(config: DhtConfig) -> Result<Self, DhtError> {
        let key = match &config.identity {
            Identity::Persistent(path) => load_or_create_identity(path)?,
            Identity::Ephemeral => Keypair::generate_ed25519(),
        };
        let peer_id = key.public().to_peer_id();
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config
            .set_query_timeout(config.query_timeout)
            .set_provider_publication_interval(Some(config.republish_interval))
            .set_provider_record_ttl(Some(config.record_ttl))
            .set_periodic_bootstrap_interval(Some(Duration::from_secs(5 * 60)));
        let query_timeout = config.query_timeout;
        let make_behaviour = |key: &Keypair| {
            let mut kad = kad::Behaviour::with_config(
                key.public().to_peer_id(),
                MemoryStore::new(key.public().to_peer_id()),
                kad_config,
            );
            kad.set_mode(Some(if config.server {
                kad::Mode::Server
            } else {
                kad::Mode::Client
            }));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public())
                    .with_agent_version(format!("phase/{}", env!("CARGO_PKG_VERSION"))),
            );
            Behaviour { kad, identify }
        };
        let swarm_config = |c: libp2p::swarm::Config| {
            c.with_idle_connection_timeout(query_timeout.max(Duration::from_secs(60)))
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| DhtError::Transport(Box::new(e)))?
            .with_behaviour(make_behaviour)
            .map_err(|e| DhtError::Transport(Box::new(e)))?
            .with_swarm_config(swarm_config)
            .build();

        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|source| DhtError::Listen {
                    addr: addr.clone(),
                    source,
                })?;
        }
        for addr in &config.http_addrs {
            swarm.add_external_address(http_multiaddr(*addr));
        }
        for addr in &config.bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                return Err(DhtError::BootstrapNoPeerId(addr.clone()));
            };
            let mut transport_addr = addr.clone();
            transport_addr.pop();
            swarm.behaviour_mut().kad.add_address(&peer, transport_addr);
            if let Err(err) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, %err, "cannot dial DHT bootstrap peer");
            }
        }

        let (cmd, rx) = mpsc::channel(64);
        let node = Node {
            swarm,
            rx,
            http_port: config.http_port,
            allow_loopback: config.allow_loopback,
            identified: HashMap::new(),
            provides: HashMap::new(),
            bootstraps: HashMap::new(),
            finds: HashMap::new(),
            listen_waiters: Vec::new(),
        };
        let task = tokio::spawn(node.run());
        tracing::info!(peer = %peer_id, "DHT node started");
        Ok(Self { peer_id, cmd, task })
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on, once at least one is up (or after
    /// two seconds, whatever it has then).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::ListenAddrs(tx)).await?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Number of peers in the routing table.
    pub async fn routing_table_size(&self) -> Result<usize, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::RoutingTableSize(tx)).await?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Runs a Kademlia bootstrap (a lookup of our own id, then of random
    /// ids per bucket) and waits for it to finish.
    pub async fn bootstrap(&self) -> Result<(), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Bootstrap(tx)).await?;
        rx.await.map_err(|_| DhtError::Stopped)?
    }

    /// Announces this node as a provider of the artifact with this SHA-256,
    /// waiting until the first publication has finished. Kademlia then
    /// re-publishes it on schedule while the node runs.
    pub async fn provide(&self, sha256: [u8; 32]) -> Result<(), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Provide(sha256, tx)).await?;
        rx.await.map_err(|_| DhtError::Stopped)?
    }

    /// Stops announcing (other nodes forget us when the record expires).
    pub async fn stop_providing(&self, sha256: [u8; 32]) -> Result<(), DhtError> {
        self.send(Command::StopProviding(sha256)).await
    }

    /// Looks up the providers of the artifact with this SHA-256. Providers
    /// come out as soon as their HTTP addresses are known; the stream ends
    /// when the lookup is complete or `timeout` has passed.
    pub async fn find_providers(
        &self,
        sha256: [u8; 32],
        timeout: Duration,
    ) -> Result<ProviderStream, DhtError> {
        let (tx, rx) = mpsc::channel(MAX_PROVIDERS);
        self.send(Command::Find(sha256, timeout, tx)).await?;
        Ok(ProviderStream { rx })
    }

    /// Stops the node and waits for its task to end.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    async fn send(&self, cmd: Command) -> Result<(), DhtError> {
        self.cmd.send(cmd).await.map_err(|_| DhtError::Stopped)
    }
}

impl Drop for Dht {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Providers of one artifact, as they are found.
#[derive(Debug)]
pub struct ProviderStream {
    rx: mpsc::Receiver<Peer>,
}

impl ProviderStream {
    /// The next provider, or `None` when the lookup is over.
    pub async fn next(&mut self) -> Option<Peer> {
        self.rx.recv().await
    }

    /// As a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Peer> + Send {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|p| (p, s)) })
    }
}

struct Find {
    tx: mpsc::Sender<Peer>,
    start: Instant,
    deadline: Instant,
    query_done: bool,
    /// Providers found, and whether we still wait for their addresses.
    waiting: HashSet<PeerId>,
    reported: HashSet<PeerId>,
}

struct Node {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<Command>,
    http_port: Option<u16>,
    allow_loopback: bool,
    identified: HashMap<PeerId, Vec<SocketAddr>>,
    provides: HashMap<QueryId, oneshot::Sender<Result<(), DhtError>>>,
    bootstraps: HashMap<QueryId, oneshot::Sender<Result<(), DhtError>>>,
    finds: HashMap<QueryId, Find>,
    listen_waiters: Vec<(Instant, oneshot::Sender<Vec<Multiaddr>>)>,
}

impl Node {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ListenAddrs(tx) => {
                if self.swarm.listeners().next().is_some() {
                    let _ = tx.send(self.swarm.listeners().cloned().collect());
                } else {
                    self.listen_waiters
                        .push((Instant::now() + Duration::from_secs(2), tx));
                }
            }
            Command::RoutingTableSize(tx) => {
                let n = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                let _ = tx.send(n);
            }
            Command::Bootstrap(tx) => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(id) => {
                    self.bootstraps.insert(id, tx);
                }
                Err(_) => {
                    let _ = tx.send(Err(DhtError::NoKnownPeers));
                }
            },
            Command::Provide(digest, tx) => {
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(provider_key(&digest))
                {
                    Ok(id) => {
                        self.provides.insert(id, tx);
                    }
                    Err(err) => {
                        let _ = tx.send(Err(DhtError::Store(err)));
                    }
                }
            }
            Command::StopProviding(digest) => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&provider_key(&digest));
            }
            Command::Find(digest, timeout, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(provider_key(&digest));
                let now = Instant::now();
                self.finds.insert(
                    id,
                    Find {
                        tx,
                        start: now,
                        deadline: now + timeout,
                        query_done: false,
                        waiting: HashSet::new(),
                        reported: HashSet::new(),
                    },
                );
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<QueryId> = self
            .finds
            .iter()
            .filter(|(_, f)| {
                now >= f.deadline || (f.query_done && f.waiting.is_empty()) || f.tx.is_closed()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
            // Dropping the sender ends the caller's stream.
            self.finds.remove(&id);
        }
        let listeners: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        let waiters = std::mem::take(&mut self.listen_waiters);
        for (deadline, tx) in waiters {
            if !listeners.is_empty() || now >= deadline {
                let _ = tx.send(listeners.clone());
            } else {
                self.listen_waiters.push((deadline, tx));
            }
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "DHT listening");
                if let (Some(port), Some(ip)) = (self.http_port, multiaddr_ip(&address)) {
                    if usable_ip(&ip, true) {
                        self.swarm
                            .add_external_address(http_multiaddr(SocketAddr::new(ip, port)));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.on_identify(peer_id, info);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "DHT dial failed");
                for find in self.finds.values_mut() {
                    find.waiting.remove(&peer);
                }
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        let kad_proto = StreamProtocol::new(KAD_PROTOCOL);
        let speaks_kad = info.protocols.contains(&kad_proto);
        let mut http = Vec::new();
        for addr in info.listen_addrs.iter().take(32) {
            if let Some(sock) = http_socket_addr(addr) {
                if usable_ip(&sock.ip(), self.allow_loopback) {
                    http.push(sock);
                }
            } else if speaks_kad {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
        tidy_addrs(&mut http);
        if self.identified.len() >= MAX_IDENTIFIED && !self.identified.contains_key(&peer) {
            if let Some(old) = self.identified.keys().next().copied() {
                self.identified.remove(&old);
            }
        }
        self.identified.insert(peer, http);
        let ids: Vec<QueryId> = self
            .finds
            .iter()
            .filter(|(_, f)| f.waiting.contains(&peer))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.report(id, peer);
        }
    }

    /// Sends `peer` to the find `id` if its HTTP addresses are known.
    fn report(&mut self, id: QueryId, peer: PeerId) {
        let Some(find) = self.finds.get_mut(&id) else {
            return;
        };
        find.waiting.remove(&peer);
        let Some(addrs) = self.identified.get(&peer) else {
            return;
        };
        if addrs.is_empty() || !find.reported.insert(peer) {
            return;
        }
        let p = Peer {
            id: peer.to_string(),
            source: Source::Dht,
            addrs: addrs.clone(),
            root: None,
            timestamp_version: None,
            channel: None,
            found_after: find.start.elapsed(),
        };
        tracing::info!(peer = %p.id, addrs = ?p.addrs, after = ?p.found_after, "DHT provider found");
        let _ = find.tx.try_send(p);
    }

    fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            QueryResult::Bootstrap(res) if step.last || res.is_err() => {
                if let Some(tx) = self.bootstraps.remove(&id) {
                    let _ = tx.send(res.map(|_| ()).map_err(DhtError::Bootstrap));
                }
            }
            QueryResult::StartProviding(res) => {
                if let Some(tx) = self.provides.remove(&id) {
                    let _ = tx.send(res.map(|_| ()).map_err(DhtError::Provide));
                }
            }
            QueryResult::RepublishProvider(res) => {
                tracing::debug!(ok = res.is_ok(), "DHT provider record re-published");
            }
            QueryResult::GetProviders(res) => {
                let local = *self.swarm.local_peer_id();
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = res {
                    for peer in providers.into_iter().filter(|p| *p != local) {
                        let Some(find) = self.finds.get_mut(&id) else {
                            break;
                        };
                        if find.reported.contains(&peer)
                            || find.reported.len() + find.waiting.len() >= MAX_PROVIDERS
                        {
                            continue;
                        }
                        find.waiting.insert(peer);
                        if self.identified.contains_key(&peer) {
                            self.report(id, peer);
                        } else if !self.swarm.is_connected(&peer) {
                            // Kademlia supplies the addresses from the
                            // provider record while the query runs.
                            let opts = DialOpts::peer_id(peer)
                                .condition(PeerCondition::DisconnectedAndNotDialing)
                                .build();
                            if let Err(err) = self.swarm.dial(opts) {
                                tracing::debug!(%peer, %err, "cannot dial provider");
                                if let Some(find) = self.finds.get_mut(&id) {
                                    find.waiting.remove(&peer);
                                }
                            }
                        }
                        // Connected but not identified yet: identify answers soon.
                    }
                }
                if step.last {
                    if let Some(find) = self.finds.get_mut(&id) {
                        find.query_done = true;
                    }
                }
            }
            _ => {}
        }
    }
}

fn http_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(match addr.ip() {
            IpAddr::V4(v4) => Protocol::Ip4(v4),
            IpAddr::V6(v6) => Protocol::Ip6(v6),
        })
        .with(Protocol::Tcp(addr.port()))
        .with(Protocol::Http)
}

/// `/ip4/A/tcp/P/http` (or ip6) to a socket address; anything else is `None`.
pub fn http_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(v4) => v4.into(),
        Protocol::Ip6(v6) => v6.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = it.next()? else {
        return None;
    };
    let Protocol::Http = it.next()? else {
        return None;
    };
    if it.next().is_some() || port == 0 {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

fn multiaddr_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(v4) => Some(v4.into()),
        Protocol::Ip6(v6) => Some(v6.into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_key_is_the_sha256_multihash() {
        let digest = [7u8; 32];
        let mh = libp2p::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
        assert_eq!(provider_key(&digest).to_vec(), mh.to_bytes());
    }

    #[test]
    fn http_multiaddrs_round_trip() {
        let sock: SocketAddr = "198.18.0.7:8080".parse().unwrap();
        assert_eq!(http_socket_addr(&http_multiaddr(sock)), Some(sock));
        for bad in [
            "/ip4/1.2.3.4/tcp/80",
            "/ip4/1.2.3.4/tcp/0/http",
            "/ip4/1.2.3.4/udp/80/http",
            "/ip4/1.2.3.4/tcp/80/http/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        ] {
            assert_eq!(http_socket_addr(&bad.parse().unwrap()), None, "{bad}");
        }
    }

    #[test]
    fn identity_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/peer.key");
        let a = load_or_create_identity(&path).unwrap();
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create_identity(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a libp2p Ed25519 key"),
            "{err}"
        );
    }
}
