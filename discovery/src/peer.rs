//! What discovery yields: a [`Peer`] to fetch from, and how it was found.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::txt::RootTag;

/// Most HTTP addresses kept per peer; the rest are dropped.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Multicast DNS on the local link.
    Mdns,
    /// A provider record in the Kademlia DHT.
    Dht,
    /// Given on the command line, the config or the cache.
    Static,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mdns => "mdns",
            Self::Dht => "dht",
            Self::Static => "static",
        })
    }
}

/// A peer that serves Phase Boot content over HTTP.
///
/// Everything here is a claim made by the peer (or by the network): it is
/// only good for opening a connection. Every byte fetched is verified
/// against TUF metadata by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's id (TXT `id`, or the libp2p peer id for DHT peers).
    pub id: String,
    /// How it was found.
    pub source: Source,
    /// HTTP endpoints, IPv4 first. IPv6 link-local addresses carry their
    /// interface index as `scope_id`.
    pub addrs: Vec<SocketAddr>,
    /// Trust root tag the peer announced (mDNS only).
    pub root: Option<RootTag>,
    /// Timestamp metadata version the peer announced (mDNS only).
    pub timestamp_version: Option<u64>,
    /// Channel the peer announced (mDNS only).
    pub channel: Option<String>,
    /// Time from the start of the search to this answer.
    pub found_after: Duration,
}

impl Peer {
    /// `http://ADDR:PORT` base URLs for the addresses a URL can name.
    ///
    /// An IPv6 link-local address needs its interface (zone), which URLs
    /// cannot carry (RFC 6874 zones are not accepted by the WHATWG URL
    /// parser); those are left out here. Use [`Peer::addrs`] and connect to
    /// the `SocketAddr` directly (e.g. reqwest's `resolve` override) for them.
    pub fn http_urls(&self) -> Vec<String> {
        self.addrs
            .iter()
            .filter(|a| !needs_zone(a))
            .map(|a| format!("http://{a}"))
            .collect()
    }
}

/// A peer named by the operator (the kernel command line, a CLI flag, the
/// config) at one HTTP address. Its id is the address itself, so the same
/// server found again by mDNS or the DHT is recognised by its address
/// ([`crate::Session`] de-duplicates by id and by address).
pub fn static_peer(addr: SocketAddr) -> Peer {
    Peer {
        id: addr.to_string(),
        source: Source::Static,
        addrs: vec![addr],
        root: None,
        timestamp_version: None,
        channel: None,
        found_after: Duration::ZERO,
    }
}

/// The socket address of an `http://IP:PORT[/]` URL whose host is an IP
/// literal (port 80 when absent), or `None` for a host name or another
/// scheme. A URL cannot carry an IPv6 zone, so no link-local address.
pub fn url_socket_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let hostport = rest.split('/').next()?;
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return Some(a);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 80))
}

/// True for an IPv6 link-local socket address (it is useless without a zone).
pub fn needs_zone(addr: &SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if is_link_local_v6(v6.ip()))
}

pub(crate) fn is_link_local_v6(ip: &std::net::Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// Whether an address announced by a peer may be used to reach it. Rejects
/// the unspecified, multicast and broadcast addresses and, unless
/// `allow_loopback`, loopback (a remote peer claiming 127.0.0.1 would make
/// us connect to ourselves).
pub fn usable_ip(ip: &IpAddr, allow_loopback: bool) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if ip.is_loopback() && !allow_loopback {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_broadcast(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
    }
}

/// Sorts (IPv4 first, then IPv6), de-duplicates and bounds a peer's addresses.
pub(crate) fn tidy_addrs(addrs: &mut Vec<SocketAddr>) {
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    addrs.dedup();
    addrs.truncate(MAX_ADDRS_PER_PEER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_skip_zoned_addresses() {
        let peer = Peer {
            id: "p".into(),
            source: Source::Mdns,
            addrs: vec![
                "198.18.0.2:8080".parse().unwrap(),
                "[fe80::1%2]:8080".parse().unwrap(),
                "[2001:db8::1]:8080".parse().unwrap(),
            ],
            root: None,
            timestamp_version: None,
            channel: None,
            found_after: Duration::ZERO,
        };
        assert_eq!(
            peer.http_urls(),
            vec!["http://198.18.0.2:8080", "http://[2001:db8::1]:8080"]
        );
    }

    #[test]
    fn static_peers_are_named_by_their_address() {
        let a: SocketAddr = "198.18.0.2:7070".parse().unwrap();
        let p = static_peer(a);
        assert_eq!(
            (p.id.as_str(), p.source, p.addrs.as_slice()),
            ("198.18.0.2:7070", Source::Static, &[a][..])
        );
        assert_eq!(url_socket_addr("http://198.18.0.2:7070/"), Some(a));
        assert_eq!(
            url_socket_addr("http://[2001:db8::1]:7070"),
            Some("[2001:db8::1]:7070".parse().unwrap())
        );
        assert_eq!(
            url_socket_addr("http://198.18.0.2/repo/"),
            Some("198.18.0.2:80".parse().unwrap())
        );
        assert_eq!(url_socket_addr("http://peer.example:7070"), None);
        assert_eq!(url_socket_addr("https://198.18.0.2:7070"), None);
    }

    #[test]
    fn unusable_addresses() {
        for bad in [
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::",
            "ff02::fb",
            "::ffff:1.2.3.4",
            "127.0.0.1",
            "::1",
        ] {
            assert!(!usable_ip(&bad.parse().unwrap(), false), "{bad}");
        }
        assert!(usable_ip(&"127.0.0.1".parse().unwrap(), true));
        assert!(usable_ip(&"198.18.0.1".parse().unwrap(), false));
        assert!(usable_ip(&"fe80::1".parse().unwrap(), false));
    }

    #[test]
    fn tidy_sorts_dedups_bounds() {
        let mut addrs: Vec<SocketAddr> = (0..20)
            .map(|i| format!("[fe80::{}]:1", i % 10).parse().unwrap())
            .chain(std::iter::once("198.18.0.9:1".parse().unwrap()))
            .collect();
        tidy_addrs(&mut addrs);
        assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        assert!(addrs[0].is_ipv4());
    }
}
