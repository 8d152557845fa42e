//! Stage 1 peer discovery: who on the LAN (or the DHT) serves our fleet.
//!
//! * `local` mode: an mDNS browse for `_phase._tcp.local.` (the `discovery`
//!   crate, over IPv4 and IPv6 link-local on every wired interface) until
//!   `phase.discover_timeout` seconds have passed, or [`GRACE`] after the
//!   first answer. Peers whose TXT `root` tag is not the baked root's
//!   fingerprint are ignored (another fleet on the same LAN).
//! * `private` mode announces nothing and browses nothing.
//! * `internet` mode: the DHT is not in this build (see docs/boot-flow.md);
//!   `phase.peers` HTTP mirrors only.
//!
//! A peer announces several addresses; stage 1 keeps the first one that
//! accepts a TCP connection, trying IPv6 link-local first (it works on a LAN
//! without DHCP), then IPv4, then the rest. A URL cannot carry the zone of a
//! link-local address, so every peer gets a host name of its own
//! (`<id>.mdns.phase`) which the HTTP client resolves to the exact socket
//! address, interface index included ([`Discovered::resolve`]).
//!
//! Nothing found here is trusted: TUF judges every byte fetched from it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use discovery::mdns::{BrowseFilter, Mdns, MdnsConfig};
use discovery::RootTag;

use crate::cmdline::{Config, Mode};
use crate::step::Status;
use crate::trust::BakedRoot;

/// After the first peer answers, the browse goes on this long for more
/// (peers answer the same query within milliseconds of each other).
pub const GRACE: Duration = Duration::from_millis(1000);

/// Longest wait for one TCP connection while picking a peer's address.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

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
    /// How it was found (`mdns`).
    pub source: &'static str,
    /// Time from the start of the browse to its answer.
    pub after: Duration,
}

impl Found {
    /// `http://<host>:<port>` — a Phase peer URL for `fetcher::Peer::parse`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.addr.port())
    }
}

/// What discovery produced for the fetch.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub peers: Vec<Found>,
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
        self.peers
            .iter()
            .filter_map(|p| fetcher::Peer::parse(&p.url()).ok())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the baked root fingerprint {0:?} is not a fingerprint")]
    Root(String),
    #[error("mDNS")]
    Mdns(#[source] discovery::mdns::MdnsError),
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

/// The order in which a peer's addresses are tried: IPv6 link-local (with a
/// zone), then IPv4, then any other IPv6.
pub fn address_order(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let rank = |a: &SocketAddr| match a {
        SocketAddr::V6(v6) if (v6.ip().segments()[0] & 0xffc0) == 0xfe80 => {
            if v6.scope_id() == 0 {
                3 // useless without its interface
            } else {
                0
            }
        }
        SocketAddr::V4(_) => 1,
        SocketAddr::V6(_) => 2,
    };
    let mut v: Vec<SocketAddr> = addrs.iter().copied().filter(|a| rank(a) < 3).collect();
    v.sort_by_key(rank);
    v
}

/// The `discover` boot step for `config.mode`.
pub fn step(config: &Config, baked: &BakedRoot) -> (Discovered, Status) {
    match config.mode {
        Mode::Private => (
            Discovered::default(),
            Status::ok("none: private mode browses and announces nothing"),
        ),
        Mode::Internet => (
            Discovered::default(),
            Status::ok("no DHT in this build of stage 1; the cache and phase.peers only"),
        ),
        Mode::Local => {
            if crate::net::wired_interfaces(std::path::Path::new("/sys/class/net")).is_empty() {
                return (
                    Discovered::default(),
                    Status::ok("no wired interfaces; the cache and phase.peers only"),
                );
            }
            let timeout = Duration::from_secs(u64::from(config.discover_timeout));
            match mdns(&baked.fingerprint, timeout) {
                Ok(d) if d.peers.is_empty() => {
                    let problem = format!(
                        "no mDNS peer of this fleet (root {}) answered within {} s; the cache and phase.peers only (phase.discover_timeout=SECONDS waits longer)",
                        &baked.fingerprint[..16.min(baked.fingerprint.len())],
                        timeout.as_secs()
                    );
                    (d, Status::with_problems("0 peers (mdns)", vec![problem]))
                }
                Ok(d) => {
                    let list = d
                        .peers
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
                        .join(", ");
                    let detail = format!("{} peers (mdns): {list}", d.peers.len());
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

/// Browses mDNS for peers of the fleet whose root key fingerprint (64 hex)
/// is `fingerprint`, for at most `timeout`.
pub fn mdns(fingerprint: &str, timeout: Duration) -> Result<Discovered, DiscoverError> {
    let root: RootTag = fingerprint
        .parse()
        .map_err(|_| DiscoverError::Root(fingerprint.to_owned()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DiscoverError::Runtime)?;
    rt.block_on(browse(root, timeout))
}

async fn browse(root: RootTag, timeout: Duration) -> Result<Discovered, DiscoverError> {
    let mdns = Mdns::new(&MdnsConfig::default()).map_err(DiscoverError::Mdns)?;
    let filter = BrowseFilter {
        root: Some(root),
        channel: None,
        self_id: None,
    };
    let start = Instant::now();
    let mut browser = mdns.browse(filter, timeout).map_err(DiscoverError::Mdns)?;
    let mut out = Discovered::default();
    let mut stop_at: Option<tokio::time::Instant> = None;
    while out.peers.len() < MAX_PEERS {
        let next = match stop_at {
            Some(t) => match tokio::time::timeout_at(t, browser.next()).await {
                Ok(p) => p,
                Err(_) => break,
            },
            None => browser.next().await,
        };
        let Some(peer) = next else { break };
        if out.peers.iter().any(|p| p.id == peer.id) {
            continue;
        }
        let Some(addr) = reachable(&peer.addrs).await else {
            crate::console::console().warn(&format!(
                "discover: mDNS peer {} answered but none of its addresses {:?} accepts a connection; skipped",
                peer.id, peer.addrs
            ));
            continue;
        };
        let host = host_name(&peer.id, out.peers.len());
        out.peers.push(Found {
            id: peer.id.clone(),
            host,
            addr,
            source: "mdns",
            after: start.elapsed(),
        });
        if stop_at.is_none() {
            stop_at = Some(tokio::time::Instant::now() + GRACE);
        }
    }
    Ok(out)
}

/// The first of `addrs` (in [`address_order`]) that accepts a TCP
/// connection within [`PROBE_TIMEOUT`].
async fn reachable(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    for a in address_order(addrs) {
        if let Ok(Ok(_)) =
            tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(a)).await
        {
            return Some(a);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    #[test]
    fn host_names_are_dns_labels_and_unique() {
        assert_eq!(host_name("node0", 0), "node0.mdns.phase");
        assert_eq!(host_name("Node_A.b", 2), "node-a-b-2.mdns.phase");
        assert_eq!(host_name("__", 0), "peer.mdns.phase");
        assert!(fetcher::Peer::parse(&format!("http://{}:7070", host_name("x.y", 1))).is_ok());
    }

    #[test]
    fn link_local_first_and_only_with_a_zone() {
        let ll = |scope| {
            SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse::<Ipv6Addr>().expect("addr"),
                7070,
                0,
                scope,
            ))
        };
        let v4: SocketAddr = "198.18.0.10:7070".parse().expect("addr");
        let g: SocketAddr = "[2001:db8::1]:7070".parse().expect("addr");
        assert_eq!(address_order(&[g, v4, ll(2)]), vec![ll(2), v4, g]);
        assert_eq!(address_order(&[ll(0), v4]), vec![v4]);
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
            }],
        };
        assert_eq!(d.resolve(), vec![("n0.mdns.phase".to_owned(), addr)]);
        let peers = d.fetcher_peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].label(), "http://n0.mdns.phase:7070/");
    }
}
