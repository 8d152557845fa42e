//! Stage 1 peer discovery: who on the LAN (or the DHT) serves our fleet.
//!
//! * `local` mode: an mDNS browse for `_phase._tcp.local.` (the `discovery`
//!   crate, over IPv4 and IPv6 link-local on every wired interface) until
//!   `phase.discover_timeout` seconds have passed, or [`GRACE`] after the
//!   first answer. Peers whose TXT `root` tag is not the baked root's
//!   fingerprint are ignored (another fleet on the same LAN).
//! * `private` mode announces nothing and browses nothing (and runs no DHT:
//!   libp2p would not go through Tor; see docs/discovery.md).
//! * `internet` mode: the `phase.peers` multiaddrs (`/ip4|ip6/.../tcp/N/p2p/ID`)
//!   are the bootstrap peers of a Kademlia DHT client ([`DhtSession`], a new
//!   libp2p identity every boot; stage 1 never serves). The providers of the
//!   fleet key (`discovery::dht::fleet_digest` of the baked root, which
//!   `phase serve --dht` provides) are the metadata peers; after the TUF
//!   refresh [`Discovered::artifact_providers`] looks up the providers of each
//!   boot-set digest. Both lookups end after `phase.discover_timeout`
//!   seconds at most, or [`GRACE`] after the first answer.
//!
//! Both run as a [`discovery::Session`]: it gives each peer out once (by id
//! and by address) and chooses its address by the rule every Phase tool
//! uses (`discovery::session::choose_addr`). The `phase.peers` URLs of Phase
//! peers at an IP address are the session's static peers ([`static_peers`]),
//! so a peer discovered at the same address, the same server, is not used a
//! second time (the fetch has it already, by its URL). The rule: the first
//! address that accepts a TCP connection within [`PROBE_TIMEOUT`], trying
//! IPv6 link-local first (it works on a LAN without DHCP), then IPv4, then
//! the rest. A URL cannot carry the zone of a link-local address, so every
//! peer gets a host name of its own (`<id>.mdns.phase`) which the HTTP
//! client resolves to the exact socket address, interface index included
//! ([`Discovered::resolve`]).
//!
//! Nothing found here is trusted: TUF judges every byte fetched from it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use discovery::dht::{Dht, DhtConfig, Identity, Multiaddr, Protocol};
use discovery::mdns::{BrowseFilter, Mdns, MdnsConfig};
use discovery::session::{DhtLookup, Event, Session, SessionOptions};
use discovery::{RootTag, Source};

use crate::cmdline::{Config, Mode};
use crate::step::Status;
use crate::trust::BakedRoot;

/// After the first peer answers, the browse goes on this long for more
/// (peers answer the same query within milliseconds of each other).
pub const GRACE: Duration = Duration::from_millis(1000);

/// Longest wait for one TCP connection while choosing a peer's address.
pub use discovery::session::PROBE_TIMEOUT;

/// Most peers kept from one browse.
pub const MAX_PEERS: usize = 16;

/// One peer found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The id it announced.
    pub id: String,
    /// The host name its URL uses (resolved through [`Discovered::resolve`]).
    pub host: String,
    /// The address that accepted a connection.
    pub addr: SocketAddr,
    /// How it was found (`mdns`, `dht`).
    pub source: &'static str,
    /// Time from the start of the browse to its answer.
    pub after: Duration,
    /// The timestamp metadata version it announced (mDNS `ts`; the DHT
    /// announces none). A claim, not evidence: it only orders the peers
    /// the TUF refresh asks ([`Discovered::refresh_order`]).
    pub timestamp_version: Option<u64>,
}

impl Found {
    /// `http://<host>:<port>` — a Phase peer URL for `fetcher::Peer::parse`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.addr.port())
    }
}

fn as_fetcher_peers<'a>(found: impl Iterator<Item = &'a Found>) -> Vec<fetcher::Peer> {
    found
        .filter_map(|p| fetcher::Peer::parse(&p.url()).ok())
        .collect()
}

/// What discovery produced for the fetch.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub peers: Vec<Found>,
    /// The DHT client of `internet` mode, kept for the per-artifact
    /// lookups after the TUF refresh ([`Discovered::artifact_providers`])
    /// and closed with [`Discovered::close`].
    pub dht: Option<Arc<Mutex<Option<DhtSession>>>>,
}

impl Discovered {
    /// (host, socket address) pairs for the HTTP client's resolver.
    pub fn resolve(&self) -> Vec<(String, SocketAddr)> {
        self.peers
            .iter()
            .map(|p| (p.host.clone(), p.addr))
            .collect()
    }

    /// The peers as fetcher peers, in discovery order.
    pub fn fetcher_peers(&self) -> Vec<fetcher::Peer> {
        as_fetcher_peers(self.peers.iter())
    }

    /// The peers in the order the TUF refresh asks them: the newest
    /// announced timestamp version first (a peer announcing none last),
    /// discovery order among equals. The refresh stops at the first peer
    /// whose metadata verifies, so an honest peer with newer metadata is
    /// not passed over for an older one; a peer that lies about its version
    /// is asked first once, fails verification and is dropped for the rest
    /// of the boot (docs/threat-model.md).
    pub fn refresh_peers(&self) -> Vec<fetcher::Peer> {
        let mut found: Vec<&Found> = self.peers.iter().collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.timestamp_version));
        as_fetcher_peers(found.into_iter())
    }

    /// Internet mode: the DHT providers of `digests` (the boot set's
    /// SHA-256s) that are not among [`Discovered::peers`] yet, each probed
    /// for a reachable HTTP address. `None` when there is no DHT session
    /// (another mode, no bootstrap peer, or already closed). Bounded by
    /// the session's deadline (`phase.discover_timeout`).
    pub fn artifact_providers(&self, digests: &[[u8; 32]]) -> Option<Lookup> {
        let cell = self.dht.as_ref()?;
        let guard = cell.lock().ok()?;
        let session = guard.as_ref()?;
        let known: Vec<(String, Option<SocketAddr>)> = self
            .peers
            .iter()
            .map(|p| (p.id.clone(), Some(p.addr)))
            .collect();
        Some(session.lookup(digests, &known, self.peers.len()))
    }

    /// Stops the DHT client (its sockets close), e.g. before kexec.
    pub fn close(&self) {
        if let Some(cell) = &self.dht {
            if let Ok(mut g) = cell.lock() {
                if let Some(s) = g.take() {
                    s.close();
                }
            }
        }
    }
}

/// What one round of DHT lookups found.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Providers not known before, reachable over HTTP.
    pub new: Vec<Found>,
    /// Providers announced in all (known ones included).
    pub providers: usize,
    /// Time the lookups took.
    pub took: Duration,
    /// Why some provider was not used, one line each.
    pub problems: Vec<String>,
}

/// A Kademlia DHT client for the length of stage 1: a current-thread tokio
/// runtime that only runs while a lookup runs (no thread of its own) and
/// the node on it.
#[derive(Debug)]
pub struct DhtSession {
    rt: tokio::runtime::Runtime,
    dht: Arc<Dht>,
    timeout: Duration,
    statics: Vec<discovery::Peer>,
}

impl DhtSession {
    /// Starts the client with `bootstrap` peers and a new identity.
    pub fn start(bootstrap: Vec<Multiaddr>, timeout: Duration) -> Result<Self, DiscoverError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DiscoverError::Runtime)?;
        let config = DhtConfig {
            identity: Identity::Ephemeral,
            listen: Vec::new(),
            bootstrap,
            server: false,
            query_timeout: timeout,
            allow_loopback: false,
            ..DhtConfig::default()
        };
        let dht = rt
            .block_on(Dht::start(config))
            .map_err(DiscoverError::Dht)?;
        Ok(DhtSession {
            rt,
            dht: Arc::new(dht),
            timeout,
            statics: Vec::new(),
        })
    }

    /// Every lookup's session gets `statics` ([`static_peers`]): a provider
    /// at one of their addresses is not given out.
    pub fn with_static(mut self, statics: Vec<discovery::Peer>) -> Self {
        self.statics = statics;
        self
    }

    /// The providers of every digest, minus the peers whose ids are in
    /// `known`; new ones get host names numbered from `first`.
    pub fn providers(&self, digests: &[[u8; 32]], known: &[String], first: usize) -> Lookup {
        let known: Vec<(String, Option<SocketAddr>)> =
            known.iter().map(|id| (id.clone(), None)).collect();
        self.lookup(digests, &known, first)
    }

    /// As [`DhtSession::providers`], `known` also naming the address each
    /// known peer is used at (a provider there is the same server).
    pub fn lookup(
        &self,
        digests: &[[u8; 32]],
        known: &[(String, Option<SocketAddr>)],
        first: usize,
    ) -> Lookup {
        let start = Instant::now();
        let (events, stats) = self.rt.block_on(async {
            let mut session = Session::new(SessionOptions {
                run_for: self.timeout,
                max_peers: MAX_PEERS.saturating_add(self.statics.len()),
                probe: Some(PROBE_TIMEOUT),
                link_local: true,
            });
            session.add_static(self.statics.iter().cloned());
            for (id, addr) in known {
                session.known(id, *addr);
            }
            session.add_dht(
                self.dht.clone(),
                DhtLookup {
                    digests: digests.to_vec(),
                    timeout: self.timeout,
                    bootstrap_first: false,
                    repeat_every: None,
                },
            );
            let events = session.gather(GRACE).await;
            (events, session.stats())
        });
        let mut out = Lookup::default();
        for event in events {
            match event {
                Event::Found(f) if f.peer.source == Source::Static => {}
                Event::Found(f) => out.new.push(Found {
                    host: dht_host_name(&f.peer.id, first + out.new.len()),
                    id: f.peer.id,
                    addr: f.addr,
                    source: "dht",
                    after: f.after,
                    timestamp_version: f.peer.timestamp_version,
                }),
                Event::Unreachable(peer) => out
                    .problems
                    .push(unreachable_problem("DHT provider", &peer)),
                Event::Failed { error, .. } => out.problems.push(format!("DHT lookup: {error}")),
            }
        }
        let statics: std::collections::HashSet<&str> =
            self.statics.iter().map(|p| p.id.as_str()).collect();
        out.providers = stats.distinct_ids.saturating_sub(statics.len());
        out.took = start.elapsed();
        out
    }

    /// Stops the node and its runtime.
    pub fn close(self) {
        let DhtSession { rt, dht, .. } = self;
        // The lookups' tasks ended with their sessions, so this is the
        // last handle; otherwise dropping it stops the node as well.
        if let Ok(dht) = Arc::try_unwrap(dht) {
            rt.block_on(dht.shutdown());
        }
        rt.shutdown_timeout(Duration::from_millis(200));
    }
}

fn unreachable_problem(what: &str, peer: &discovery::Peer) -> String {
    format!(
        "{what} {} answered but none of its HTTP addresses {:?} accepts a connection; skipped",
        peer.id, peer.addrs
    )
}

/// The static peers of stage 1's discovery sessions: the `phase.peers`
/// URLs of Phase peers (no path) whose host is an IP address
/// (`discovery::peer::static_peer`; a host name is resolved by the fetch,
/// a mirror is not a Phase peer). The session gives them out first and
/// drops a discovered peer at the same address; stage 1 uses them by their
/// URLs ([`crate::bootfetch`]), so this module does not list them again.
pub fn static_peers(config: &Config) -> Vec<discovery::Peer> {
    config
        .peers
        .iter()
        .filter_map(|p| match p {
            crate::cmdline::Peer::Url(u) => Some(u),
            crate::cmdline::Peer::Multiaddr(_) => None,
        })
        .filter(|u| matches!(fetcher::Peer::parse(u), Ok(fetcher::Peer::Phase(_))))
        .filter_map(|u| discovery::peer::url_socket_addr(u))
        .map(discovery::peer::static_peer)
        .collect()
}

/// A `phase.peers` multiaddr as a DHT bootstrap peer: `/ip4` or `/ip6`
/// (stage 1 resolves no DNS names for libp2p), then `/tcp/PORT` (stage 1
/// has no QUIC), ending in `/p2p/<peer id>`. The error is the one
/// line to print.
pub fn bootstrap_addr(entry: &str) -> Result<Multiaddr, String> {
    let addr: Multiaddr = entry
        .parse()
        .map_err(|e| format!("phase.peers: {entry}: not a multiaddr ({e}); skipped"))?;
    let mut it = addr.iter();
    let ip: std::net::IpAddr = match it.next() {
        Some(Protocol::Ip4(v4)) => v4.into(),
        Some(Protocol::Ip6(v6)) => v6.into(),
        _ => {
            return Err(format!(
                "phase.peers: {entry}: a DHT bootstrap peer must start with /ip4 or /ip6 (stage 1 resolves no names for the DHT); skipped"
            ))
        }
    };
    if !discovery::peer::usable_ip(&ip, false) {
        return Err(format!(
            "phase.peers: {entry}: {ip} cannot be a remote peer's address; skipped"
        ));
    }
    if let std::net::IpAddr::V6(v6) = ip {
        if (v6.segments()[0] & 0xffc0) == 0xfe80 {
            return Err(format!(
                "phase.peers: {entry}: an IPv6 link-local multiaddr names no interface; use /ip4 or a global /ip6; skipped"
            ));
        }
    }
    let transport_ok = match (it.next(), it.next()) {
        (Some(Protocol::Tcp(port)), Some(Protocol::P2p(_))) => port != 0,
        (Some(Protocol::Udp(_)), Some(Protocol::QuicV1)) => {
            return Err(format!(
                "phase.peers: {entry}: stage 1 dials the DHT over TCP only (no QUIC in the initramfs); give the peer's /tcp/PORT/p2p/PEER_ID address; skipped"
            ))
        }
        _ => false,
    };
    if !transport_ok || it.next().is_some() {
        return Err(format!(
            "phase.peers: {entry}: a DHT bootstrap peer is /ip4|ip6/ADDR/tcp/PORT/p2p/PEER_ID; skipped"
        ));
    }
    Ok(addr)
}

/// The DHT bootstrap peers among `phase.peers`, and one line per multiaddr
/// that cannot be one.
pub fn bootstrap_peers(config: &Config) -> (Vec<Multiaddr>, Vec<String>) {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for p in &config.peers {
        if let crate::cmdline::Peer::Multiaddr(m) = p {
            match bootstrap_addr(m) {
                Ok(a) if !ok.contains(&a) => ok.push(a),
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
    }
    (ok, problems)
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the baked root fingerprint {0:?} is not a fingerprint")]
    Root(String),
    #[error("mDNS")]
    Mdns(#[source] discovery::mdns::MdnsError),
    #[error("DHT")]
    Dht(#[source] discovery::dht::DhtError),
}

/// The host name a peer's URLs use: `<id>.mdns.phase`, the id reduced to
/// a DNS label (lower case letters, digits, `-`), `n` keeping names unique.
pub fn host_name(id: &str, n: usize) -> String {
    let mut label: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    label = label.trim_matches('-').to_owned();
    if label.is_empty() {
        label = "peer".to_owned();
    }
    if n > 0 {
        label.push_str(&format!("-{n}"));
    }
    format!("{label}.mdns.phase")
}

/// The host name of a peer found in the DHT: `<peer id>.dht.phase`, as
/// [`host_name`] otherwise.
pub fn dht_host_name(id: &str, n: usize) -> String {
    let h = host_name(id, n);
    format!("{}.dht.phase", h.trim_end_matches(".mdns.phase"))
}

/// The `discover` boot step for `config.mode`.
pub fn step(config: &Config, baked: &BakedRoot) -> (Discovered, Status) {
    match config.mode {
        Mode::Private => (
            Discovered::default(),
            Status::ok("none: private mode browses and announces nothing"),
        ),
        Mode::Internet => internet(config, baked),
        Mode::Local => {
            if crate::net::wired_interfaces(std::path::Path::new("/sys/class/net")).is_empty() {
                return (
                    Discovered::default(),
                    Status::ok("no wired interfaces; the cache and phase.peers only"),
                );
            }
            let timeout = Duration::from_secs(u64::from(config.discover_timeout));
            match mdns(&baked.fingerprint, timeout, static_peers(config)) {
                Ok(d) if d.peers.is_empty() => {
                    let problem = format!(
                        "no mDNS peer of this fleet (root {}) answered within {} s; the cache and phase.peers only (phase.discover_timeout=SECONDS waits longer)",
                        &baked.fingerprint[..16.min(baked.fingerprint.len())],
                        timeout.as_secs()
                    );
                    (d, Status::with_problems("0 peers (mdns)", vec![problem]))
                }
                Ok(d) => {
                    let detail = format!("{} peers (mdns): {}", d.peers.len(), describe(&d.peers));
                    (d, Status::ok(detail))
                }
                Err(e) => (
                    Discovered::default(),
                    Status::with_problems(
                        "0 peers (mdns)",
                        vec![format!(
                            "{}; the cache and phase.peers only",
                            crate::step::chain(&e)
                        )],
                    ),
                ),
            }
        }
    }
}

/// Internet mode: the fleet key's providers in the DHT, from the
/// `phase.peers` multiaddrs.
fn internet(config: &Config, baked: &BakedRoot) -> (Discovered, Status) {
    let (bootstrap, mut problems) = bootstrap_peers(config);
    if bootstrap.is_empty() {
        let detail = if problems.is_empty() {
            "0 peers (dht): no DHT bootstrap peer in phase.peers (/ip4/ADDR/tcp/PORT/p2p/ID); the cache and phase.peers URLs only"
        } else {
            "0 peers (dht): no usable DHT bootstrap peer; the cache and phase.peers URLs only"
        };
        return (
            Discovered::default(),
            Status::with_problems(detail, problems),
        );
    }
    if crate::net::wired_interfaces(std::path::Path::new("/sys/class/net")).is_empty() {
        return (
            Discovered::default(),
            Status::ok("no wired interfaces; the cache and phase.peers only"),
        );
    }
    let root: RootTag = match baked.fingerprint.parse() {
        Ok(r) => r,
        Err(_) => {
            return (
                Discovered::default(),
                Status::fail(DiscoverError::Root(baked.fingerprint.clone()).to_string()),
            )
        }
    };
    let timeout = Duration::from_secs(u64::from(config.discover_timeout));
    let n_boot = bootstrap.len();
    let session = match DhtSession::start(bootstrap, timeout) {
        Ok(s) => s.with_static(static_peers(config)),
        Err(e) => {
            problems.push(format!(
                "{}; the cache and phase.peers URLs only",
                crate::step::chain(&e)
            ));
            return (
                Discovered::default(),
                Status::with_problems("0 peers (dht)", problems),
            );
        }
    };
    let lookup = session.providers(&[discovery::dht::fleet_digest(&root)], &[], 0);
    let took = lookup.took;
    problems.extend(lookup.problems);
    let d = Discovered {
        peers: lookup.new,
        dht: Some(Arc::new(Mutex::new(Some(session)))),
    };
    if d.peers.is_empty() {
        let why = if took + Duration::from_millis(500) < timeout {
            "the lookup ended early: are the bootstrap peers up, and is each /p2p/ id theirs?"
        } else {
            "phase.discover_timeout=SECONDS waits longer"
        };
        problems.push(format!(
            "no DHT provider of this fleet (root {}) found through {n_boot} bootstrap peer(s) in {:.1} s (limit {} s; {why}); the cache and phase.peers URLs only",
            &baked.fingerprint[..16.min(baked.fingerprint.len())],
            took.as_secs_f64(),
            timeout.as_secs()
        ));
        return (d, Status::with_problems("0 peers (dht)", problems));
    }
    let detail = format!("{} peers (dht): {}", d.peers.len(), describe(&d.peers));
    (d, Status::with_problems(detail, problems))
}

/// `id url at addr after N ms, ...`.
pub fn describe(peers: &[Found]) -> String {
    peers
        .iter()
        .map(|p| {
            format!(
                "{} {} at {} after {} ms",
                p.id,
                p.url(),
                p.addr,
                p.after.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Browses mDNS for peers of the fleet whose root key fingerprint (64 hex)
/// is `fingerprint`, for at most `timeout`; a peer at the address of one of
/// `statics` ([`static_peers`]) is not given out.
pub fn mdns(
    fingerprint: &str,
    timeout: Duration,
    statics: Vec<discovery::Peer>,
) -> Result<Discovered, DiscoverError> {
    let root: RootTag = fingerprint
        .parse()
        .map_err(|_| DiscoverError::Root(fingerprint.to_owned()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DiscoverError::Runtime)?;
    rt.block_on(browse(root, timeout, statics))
}

async fn browse(
    root: RootTag,
    timeout: Duration,
    statics: Vec<discovery::Peer>,
) -> Result<Discovered, DiscoverError> {
    let mdns = Mdns::new(&MdnsConfig::default()).map_err(DiscoverError::Mdns)?;
    let filter = BrowseFilter {
        root: Some(root),
        channel: None,
        self_id: None,
    };
    let routes = crate::onlink::Routes::read();
    let mut session = Session::new(SessionOptions {
        run_for: timeout,
        max_peers: MAX_PEERS.saturating_add(statics.len()),
        probe: Some(PROBE_TIMEOUT),
        link_local: true,
    })
    // mDNS is local mode: like `phase.peers`, only addresses on this LAN
    // (reached without a router) are used; anyone can announce any address.
    .with_filter(Box::new(move |peer: &discovery::Peer| {
        let (lan, off) = lan_addrs(&peer.addrs, &routes);
        if !off.is_empty() {
            crate::console::console().warn(&format!(
                "discover: mDNS peer {} announced {:?}, not on this LAN; local mode never leaves the LAN; those addresses skipped",
                peer.id, off
            ));
        }
        lan
    }));
    session.add_static(statics);
    session
        .add_mdns(mdns, filter, timeout)
        .map_err(DiscoverError::Mdns)?;
    let mut out = Discovered::default();
    for event in session.gather(GRACE).await {
        match event {
            Event::Found(f) if f.peer.source == Source::Static => {}
            Event::Found(f) => {
                let host = host_name(&f.peer.id, out.peers.len());
                out.peers.push(Found {
                    id: f.peer.id,
                    host,
                    addr: f.addr,
                    source: "mdns",
                    after: f.after,
                    timestamp_version: f.peer.timestamp_version,
                });
            }
            Event::Unreachable(peer) => crate::console::console().warn(&format!(
                "discover: mDNS peer {} answered but none of its addresses {:?} accepts a connection; skipped",
                peer.id, peer.addrs
            )),
            Event::Failed { source, error } => {
                crate::console::console().warn(&format!("discover: {source}: {error}"))
            }
        }
    }
    Ok(out)
}

/// Splits announced addresses into those on this LAN ([`crate::onlink`])
/// and the others.
pub fn lan_addrs(
    addrs: &[SocketAddr],
    routes: &crate::onlink::Routes,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    addrs.iter().partition(|a| routes.on_link(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    #[test]
    fn mdns_addresses_off_the_lan_are_skipped() {
        // 198.18.0.0/24 on eth0 (no gateway), default route via a router.
        let (_lan, routes) =
            crate::onlink::test_lan(&[&["ip", "route", "add", "default", "via", "198.18.0.1"]]);
        let on: SocketAddr = "198.18.0.20:7070".parse().expect("addr");
        let off: SocketAddr = "198.19.5.5:7070".parse().expect("addr");
        let ll: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
            "fe80::2".parse::<Ipv6Addr>().expect("addr"),
            7070,
            0,
            2,
        ));
        let (lan, skipped) = lan_addrs(&[off, on, ll], &routes);
        assert_eq!(lan, vec![on, ll]);
        assert_eq!(skipped, vec![off]);
    }

    #[test]
    fn host_names_are_dns_labels_and_unique() {
        assert_eq!(host_name("node0", 0), "node0.mdns.phase");
        assert_eq!(host_name("Node_A.b", 2), "node-a-b-2.mdns.phase");
        assert_eq!(host_name("__", 0), "peer.mdns.phase");
        assert!(fetcher::Peer::parse(&format!("http://{}:7070", host_name("x.y", 1))).is_ok());
    }

    const ID: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn bootstrap_multiaddrs_from_phase_peers() {
        for good in [
            format!("/ip4/198.18.0.10/tcp/4001/p2p/{ID}"),
            format!("/ip6/2001:db8::1/tcp/4001/p2p/{ID}"),
        ] {
            let a = bootstrap_addr(&good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(a.to_string(), good);
        }
        for (bad, why) in [
            ("/ip4/198.18.0.10/tcp/4001".to_owned(), "/p2p/PEER_ID"),
            (
                format!("/dns/peer.example/tcp/4001/p2p/{ID}"),
                "/ip4 or /ip6",
            ),
            (
                format!("/ip4/198.18.0.10/tcp/4001/p2p/{ID}/http"),
                "/p2p/PEER_ID",
            ),
            (format!("/ip4/198.18.0.10/tcp/0/p2p/{ID}"), "/p2p/PEER_ID"),
            (
                format!("/ip4/198.18.0.10/udp/4001/p2p/{ID}"),
                "/tcp/PORT/p2p",
            ),
            (
                format!("/ip4/198.18.0.10/udp/4001/quic-v1/p2p/{ID}"),
                "TCP only",
            ),
            (
                format!("/ip4/0.0.0.0/tcp/4001/p2p/{ID}"),
                "cannot be a remote",
            ),
            (
                format!("/ip4/127.0.0.1/tcp/4001/p2p/{ID}"),
                "cannot be a remote",
            ),
            (format!("/ip6/fe80::1/tcp/4001/p2p/{ID}"), "link-local"),
            (
                "/ip4/198.18.0.10/tcp/4001/p2p/notapeerid".to_owned(),
                "not a multiaddr",
            ),
            ("/ip4/300.1.1.1/tcp/1".to_owned(), "not a multiaddr"),
        ] {
            let e = bootstrap_addr(&bad).expect_err(&bad);
            assert!(e.starts_with(&format!("phase.peers: {bad}: ")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.ends_with("; skipped") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn bootstrap_peers_come_from_the_cmdline_deduplicated() {
        let p = crate::cmdline::parse(&format!(
            "phase.peers=http://198.18.0.2:7070,/ip4/198.18.0.10/tcp/4001/p2p/{ID},/ip4/198.18.0.10/tcp/4001 \
             phase.peers=/ip4/198.18.0.10/tcp/4001/p2p/{ID}"
        ));
        let (ok, problems) = bootstrap_peers(&p.config);
        assert_eq!(ok.len(), 1, "{ok:?}");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("/ip4/198.18.0.10/tcp/4001:"),
            "{problems:?}"
        );
    }

    /// A bootstrap peer that is not there: the lookup ends by its deadline
    /// with no peer, and the session closes (real libp2p over loopback TCP).
    #[test]
    fn a_dead_bootstrap_peer_yields_no_provider_within_the_deadline() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{ID}")
            .parse()
            .expect("multiaddr");
        let timeout = Duration::from_secs(2);
        let session = DhtSession::start(vec![dead], timeout).expect("start");
        let start = Instant::now();
        let lookup = session.providers(&[[7u8; 32]], &[], 0);
        assert!(lookup.new.is_empty() && lookup.providers == 0, "{lookup:?}");
        assert!(
            start.elapsed() < timeout + Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        session.close();
    }

    #[test]
    fn static_peers_are_the_phase_peer_urls_at_an_ip_address() {
        let p = crate::cmdline::parse(&format!(
            "phase.peers=http://198.18.0.2:7070,http://[2001:db8::1]:7070/,http://seed.example:7070,http://198.18.0.3/mirror/,/ip4/198.18.0.10/tcp/4001/p2p/{ID}"
        ));
        let statics = static_peers(&p.config);
        let addrs: Vec<SocketAddr> = statics.iter().flat_map(|p| p.addrs.clone()).collect();
        assert_eq!(
            addrs,
            vec![
                "198.18.0.2:7070".parse::<SocketAddr>().expect("addr"),
                "[2001:db8::1]:7070".parse().expect("addr"),
            ]
        );
        assert!(statics.iter().all(|p| p.source == Source::Static));
    }

    /// An mDNS-like source announcing the server a `phase.peers` URL names:
    /// the session gives it out as the static peer only, and a stage-1
    /// browse lists only the other peer.
    #[test]
    fn a_discovered_peer_at_a_phase_peers_address_is_not_used_twice() {
        // Both listen until the end of the test (the session probes them).
        let la = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let lb = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (a, b) = (la.local_addr().expect("a"), lb.local_addr().expect("b"));
        let p = crate::cmdline::parse(&format!("phase.peers=http://{a}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let announced = |id: &str, addr: SocketAddr| discovery::Peer {
            id: id.into(),
            source: Source::Mdns,
            addrs: vec![addr],
            root: None,
            timestamp_version: None,
            channel: None,
            found_after: Duration::ZERO,
        };
        let events = rt.block_on(async {
            let mut s = Session::new(SessionOptions {
                run_for: Duration::from_secs(5),
                ..SessionOptions::default()
            });
            s.add_static(static_peers(&p.config));
            s.add_stream(futures_util::stream::iter(vec![
                announced("same-server", a),
                announced("other", b),
            ]));
            s.gather(GRACE).await
        });
        let found: Vec<(String, Source)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Found(f) => Some((f.peer.id.clone(), f.peer.source)),
                _ => None,
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (a.to_string(), Source::Static),
                ("other".into(), Source::Mdns)
            ],
            "{events:?}"
        );
    }

    #[test]
    fn dht_host_names() {
        assert_eq!(dht_host_name("12D3KooWabc", 1), "12d3koowabc-1.dht.phase");
        assert!(fetcher::Peer::parse(&format!("http://{}:7070", dht_host_name(ID, 0))).is_ok());
    }

    #[test]
    fn found_peers_become_fetcher_peers_with_resolver_entries() {
        let addr: SocketAddr = "[fe80::1%2]:7070".parse().expect("addr");
        let d = Discovered {
            peers: vec![Found {
                id: "n0".into(),
                host: host_name("n0", 0),
                addr,
                source: "mdns",
                after: Duration::from_millis(5),
                timestamp_version: Some(3),
            }],
            dht: None,
        };
        assert_eq!(d.resolve(), vec![("n0.mdns.phase".to_owned(), addr)]);
        let peers = d.fetcher_peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].label(), "http://n0.mdns.phase:7070/");
    }

    #[test]
    fn the_refresh_asks_the_newest_announced_timestamp_first() {
        let found = |i: usize, ts: Option<u64>| Found {
            id: format!("n{i}"),
            host: host_name(&format!("n{i}"), i),
            addr: SocketAddr::from(([198, 18, 0, 10 + i as u8], 7070)),
            source: if ts.is_some() { "mdns" } else { "dht" },
            after: Duration::from_millis(i as u64),
            timestamp_version: ts,
        };
        let d = Discovered {
            peers: vec![
                found(0, Some(4)),
                found(1, None),
                found(2, Some(9)),
                found(3, Some(4)),
            ],
            dht: None,
        };
        let labels: Vec<String> = d.refresh_peers().iter().map(|p| p.label()).collect();
        let hosts: Vec<String> = [2, 0, 3, 1]
            .iter()
            .map(|&i| format!("http://{}:7070/", host_name(&format!("n{i}"), i)))
            .collect();
        assert_eq!(
            labels, hosts,
            "newest ts first, discovery order among equals, none last"
        );
        // Objects keep discovery order.
        assert_eq!(d.fetcher_peers()[1].label(), hosts[3]);
    }
}
