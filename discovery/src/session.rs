//! One discovery session: every way of finding peers (mDNS browsing, DHT
//! provider lookups, peers the operator named) merged into one stream of
//! [`Event`]s, each peer given out once, with one address chosen by one
//! rule.
//!
//! * **Merge**: sources run as tasks on the caller's tokio runtime and feed
//!   one channel; [`Session::next`] takes from it.
//! * **De-duplicate**: a peer whose id was already given out (or
//!   [`Session::known`]) is dropped, and so is a peer whose chosen address
//!   is one already given out (the same server under another id, e.g. a
//!   `--peer` URL found again by mDNS). A peer that was unreachable is not
//!   probed again unless it announces different addresses.
//! * **Choose an address** ([`choose_addr`]): the candidates are ordered
//!   IPv6 link-local with a zone, then IPv4, then other IPv6 (a link-local
//!   address without a zone is no candidate); the first that accepts a TCP
//!   connection within the probe bound wins. A session without probing
//!   ([`SessionOptions::probe`] `None`, a survey such as `phase discover`)
//!   takes the first candidate without connecting.
//!
//! Every loop is bounded: the session ends at its deadline
//! ([`SessionOptions::run_for`]) or after [`SessionOptions::max_peers`]
//! peers; at most [`MAX_IN_FLIGHT`] probes run at once, each at most
//! [`MAX_ADDRS_PER_PEER`] connections of `probe` each.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::mdns::{BrowseFilter, Mdns, MdnsError};
use crate::peer::{needs_zone, Peer, Source, MAX_ADDRS_PER_PEER};

/// Longest wait for one TCP connection while choosing a peer's address.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// Most address probes running at once; further peers wait in the channel.
pub const MAX_IN_FLIGHT: usize = 16;

/// Most ids (and unreachable announcements) a session remembers.
const MAX_REMEMBERED: usize = 4096;

/// Most digests one DHT source looks up.
pub const MAX_DIGESTS: usize = 64;

/// How a session runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The session ends this long after it was created.
    pub run_for: Duration,
    /// The session ends after giving out this many peers.
    pub max_peers: usize,
    /// Choose each peer's address by a TCP connection bounded by this
    /// (normally [`PROBE_TIMEOUT`]); `None` takes the first candidate
    /// without connecting.
    pub probe: Option<Duration>,
    /// Whether IPv6 link-local addresses are candidates: only for a caller
    /// that connects to the `SocketAddr` itself (its HTTP client resolves
    /// a host name to it), since a URL cannot carry the zone.
    pub link_local: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            run_for: Duration::from_secs(3),
            max_peers: 64,
            probe: Some(PROBE_TIMEOUT),
            link_local: true,
        }
    }
}

/// A peer given out by a session, at the address chosen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The peer as its source announced it (all its addresses).
    pub peer: Peer,
    /// The chosen address.
    pub addr: SocketAddr,
    /// Time from the start of the session to the answer.
    pub after: Duration,
}

impl Found {
    /// `http://ADDR:PORT` for the chosen address, or `None` when it is
    /// IPv6 link-local (a URL cannot name its zone).
    pub fn url(&self) -> Option<String> {
        (!needs_zone(&self.addr)).then(|| format!("http://{}", self.addr))
    }
}

/// What [`Session::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new peer and its chosen address.
    Found(Found),
    /// A peer answered but none of its candidate addresses accepted a
    /// connection (or it had none); it carries every address it announced.
    Unreachable(Peer),
    /// A source stopped with an error (e.g. a DHT lookup that could not
    /// start); the other sources go on.
    Failed {
        /// Which source.
        source: Source,
        /// The error and its causes, one line.
        error: String,
    },
}

/// Counters over one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Announcements taken from the sources.
    pub offered: usize,
    /// Distinct ids among them (known ones included; counted up to 4096).
    pub distinct_ids: usize,
    /// Announcements dropped as duplicates (by id or by address).
    pub duplicates: usize,
    /// Peers none of whose addresses accepted a connection.
    pub unreachable: usize,
}

/// Candidate addresses of a peer for a caller: the one that sees every
/// announcement and may drop some (e.g. addresses off the LAN), returning
/// those that may be used.
pub type AddrFilter = Box<dyn FnMut(&Peer) -> Vec<SocketAddr> + Send>;

/// Which digests a DHT source looks up, and how often.
#[cfg(feature = "dht")]
#[derive(Debug, Clone)]
pub struct DhtLookup {
    /// SHA-256 digests whose providers to find (at most [`MAX_DIGESTS`]).
    pub digests: Vec<[u8; 32]>,
    /// Bound of one lookup (and of the bootstrap).
    pub timeout: Duration,
    /// Run a Kademlia bootstrap (best effort) before the first lookup.
    pub bootstrap_first: bool,
    /// Look up again this long after each lookup ends, until the session's
    /// deadline; `None`: once.
    pub repeat_every: Option<Duration>,
}

enum Msg {
    Peer(Peer),
    Failed(Source, String),
}

type Probe = Pin<Box<dyn Future<Output = (Peer, Vec<SocketAddr>, Option<SocketAddr>)> + Send>>;

/// A running discovery session (see the module docs). Dropping it stops
/// every source.
pub struct Session {
    opts: SessionOptions,
    start: Instant,
    deadline: Instant,
    /// Taken away by the first [`Session::next`]: sources are added before.
    tx: Option<mpsc::Sender<Msg>>,
    rx: mpsc::Receiver<Msg>,
    rx_open: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    statics: VecDeque<Peer>,
    probing: FuturesUnordered<Probe>,
    in_flight: HashSet<String>,
    ids: HashSet<String>,
    addrs: HashSet<SocketAddr>,
    unreachable: HashSet<(String, Vec<SocketAddr>)>,
    offered_ids: HashSet<String>,
    filter: Option<AddrFilter>,
    yielded: usize,
    stats: SessionStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("opts", &self.opts)
            .field("sources", &self.tasks.len())
            .field("yielded", &self.yielded)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Session {
    /// A session with no source yet; its deadline runs from now.
    pub fn new(opts: SessionOptions) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let start = Instant::now();
        // A `run_for` too large to add (a CLI value) means "a year".
        let deadline = start
            .checked_add(opts.run_for)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        Self {
            deadline,
            start,
            opts,
            tx: Some(tx),
            rx,
            rx_open: true,
            tasks: Vec::new(),
            statics: VecDeque::new(),
            probing: FuturesUnordered::new(),
            in_flight: HashSet::new(),
            ids: HashSet::new(),
            addrs: HashSet::new(),
            unreachable: HashSet::new(),
            offered_ids: HashSet::new(),
            filter: None,
            yielded: 0,
            stats: SessionStats::default(),
        }
    }

    /// Sets the caller's address filter (see [`AddrFilter`]).
    pub fn with_filter(mut self, filter: AddrFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// A peer the caller already has: announcements with its id or at
    /// `addr` are duplicates (its id counts as distinct only once offered).
    pub fn known(&mut self, id: &str, addr: Option<SocketAddr>) {
        self.ids.insert(id.to_owned());
        if let Some(a) = addr {
            self.addrs.insert(a);
        }
    }

    /// Peers named by the operator ([`crate::peer::static_peer`]). They go
    /// first, each at its first address without a probe (the operator
    /// chose it), so a discovered peer at the same address is a duplicate.
    pub fn add_static(&mut self, peers: impl IntoIterator<Item = Peer>) {
        self.statics.extend(peers);
    }

    /// Browses mDNS with `filter` for `browse_for` (at most until the
    /// session's deadline); `mdns` lives as long as the browse.
    pub fn add_mdns(
        &mut self,
        mdns: Mdns,
        filter: BrowseFilter,
        browse_for: Duration,
    ) -> Result<(), MdnsError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let browser = mdns.browse(filter, browse_for.min(remaining))?;
        self.add_stream(async_stream(mdns, browser.into_stream()));
        Ok(())
    }

    /// Providers of `lookup.digests` from `dht` (see [`DhtLookup`]).
    #[cfg(feature = "dht")]
    pub fn add_dht(&mut self, dht: std::sync::Arc<crate::dht::Dht>, lookup: DhtLookup) {
        let Some(tx) = self.sender() else { return };
        let end = self.deadline;
        self.tasks.push(tokio::spawn(async move {
            if lookup.bootstrap_first {
                // Best effort: the lookup itself also walks the DHT from the
                // bootstrap peers.
                if let Ok(Err(err)) = tokio::time::timeout(lookup.timeout, dht.bootstrap()).await {
                    tracing::warn!(%err, "DHT bootstrap");
                }
            }
            // Bounded: one round per `repeat_every` until the deadline.
            loop {
                let mut streams = Vec::new();
                for d in lookup.digests.iter().take(MAX_DIGESTS) {
                    match dht.find_providers(*d, lookup.timeout).await {
                        Ok(s) => streams.push(Box::pin(s.into_stream())),
                        Err(e) => {
                            let _ = tx
                                .send(Msg::Failed(Source::Dht, verifier::error_chain(&e)))
                                .await;
                            return;
                        }
                    }
                }
                let mut all = futures_util::stream::select_all(streams);
                while let Some(p) = all.next().await {
                    if tx.send(Msg::Peer(p)).await.is_err() {
                        return;
                    }
                }
                match lookup.repeat_every {
                    Some(every) if Instant::now() + every < end => tokio::time::sleep(every).await,
                    _ => return,
                }
            }
        }));
    }

    /// Any other source of peers, until it ends or the session does.
    pub fn add_stream<S>(&mut self, stream: S)
    where
        S: Stream<Item = Peer> + Send + 'static,
    {
        let Some(tx) = self.sender() else { return };
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(p) = stream.next().await {
                if tx.send(Msg::Peer(p)).await.is_err() {
                    break;
                }
            }
        }));
    }

    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        if self.tx.is_none() {
            tracing::warn!("discovery source added after the session started; ignored");
        }
        self.tx.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            distinct_ids: self.offered_ids.len(),
            ..self.stats.clone()
        }
    }

    /// Time since the session started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The next event, or `None` once the deadline has passed, every
    /// source has ended, or [`SessionOptions::max_peers`] were given out.
    /// Cancel safe (no announcement is lost if the future is dropped).
    pub async fn next(&mut self) -> Option<Event> {
        self.tx = None;
        loop {
            if self.yielded >= self.opts.max_peers || Instant::now() >= self.deadline {
                return None;
            }
            if let Some(p) = self.statics.pop_front() {
                self.stats.offered += 1;
                self.remember_id(&p.id);
                let addr = p.addrs.first().copied();
                if let Some(e) = self.settle(p, Vec::new(), addr) {
                    return Some(e);
                }
                continue;
            }
            if !self.rx_open && self.probing.is_empty() {
                return None;
            }
            let take = self.rx_open && self.probing.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                Some((peer, cands, addr)) = self.probing.next(), if !self.probing.is_empty() => {
                    if let Some(e) = self.settle(peer, cands, addr) {
                        return Some(e);
                    }
                }
                msg = self.rx.recv(), if take => match msg {
                    None => self.rx_open = false,
                    Some(Msg::Peer(p)) => self.offer(p),
                    Some(Msg::Failed(source, error)) => return Some(Event::Failed { source, error }),
                },
                () = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }

    /// Events until the session ends or `grace` after the first peer found
    /// by a source (peers answer the same query within milliseconds of each
    /// other; the static peers, given out first, answered no query).
    pub async fn gather(&mut self, grace: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        let mut stop: Option<Instant> = None;
        // Bounded by the deadline in `next`, and by count here.
        let most = self.opts.max_peers.saturating_mul(4).saturating_add(64);
        while out.len() < most {
            let ev = match stop {
                Some(t) => match tokio::time::timeout_at(t, self.next()).await {
                    Ok(ev) => ev,
                    Err(_) => break,
                },
                None => self.next().await,
            };
            let Some(ev) = ev else { break };
            let answer = matches!(&ev, Event::Found(f) if f.peer.source != Source::Static);
            if stop.is_none() && answer {
                stop = Some(Instant::now() + grace);
            }
            out.push(ev);
        }
        out
    }

    fn remember_id(&mut self, id: &str) {
        if self.offered_ids.len() < MAX_REMEMBERED {
            self.offered_ids.insert(id.to_owned());
        }
    }

    /// An announcement from a source: dropped if a duplicate, else its
    /// address probe starts.
    fn offer(&mut self, peer: Peer) {
        self.stats.offered += 1;
        self.remember_id(&peer.id);
        if self.ids.contains(&peer.id) || self.in_flight.contains(&peer.id) {
            self.stats.duplicates += 1;
            return;
        }
        let allowed = match &mut self.filter {
            Some(f) => f(&peer),
            None => peer.addrs.clone(),
        };
        let mut cands = candidates(&allowed);
        if !self.opts.link_local {
            cands.retain(|a| !needs_zone(a));
        }
        if self.unreachable.contains(&(peer.id.clone(), cands.clone())) {
            self.stats.duplicates += 1;
            return;
        }
        self.in_flight.insert(peer.id.clone());
        let probe = self.opts.probe;
        self.probing.push(Box::pin(async move {
            let addr = match probe {
                Some(bound) => choose_addr(&cands, bound).await,
                None => cands.first().copied(),
            };
            (peer, cands, addr)
        }));
    }

    /// A finished probe: the peer is given out, or dropped as a duplicate
    /// by address, or reported unreachable.
    fn settle(
        &mut self,
        peer: Peer,
        cands: Vec<SocketAddr>,
        addr: Option<SocketAddr>,
    ) -> Option<Event> {
        self.in_flight.remove(&peer.id);
        let Some(addr) = addr else {
            self.stats.unreachable += 1;
            if self.unreachable.len() < MAX_REMEMBERED {
                self.unreachable.insert((peer.id.clone(), cands));
            }
            return Some(Event::Unreachable(peer));
        };
        if self.ids.contains(&peer.id) || self.addrs.contains(&addr) {
            self.stats.duplicates += 1;
            return None;
        }
        self.ids.insert(peer.id.clone());
        self.addrs.insert(addr);
        self.yielded += 1;
        Some(Event::Found(Found {
            after: self.start.elapsed(),
            peer,
            addr,
        }))
    }
}

/// A stream that keeps `guard` alive as long as it runs.
fn async_stream<G: Send + 'static>(
    guard: G,
    stream: impl Stream<Item = Peer> + Send + 'static,
) -> impl Stream<Item = Peer> + Send + 'static {
    stream.map(move |p| {
        let _keep = &guard;
        p
    })
}

/// The order in which a peer's addresses are tried: IPv6 link-local with a
/// zone, then IPv4, then any other IPv6, announced order within each; a
/// link-local address without a zone is left out (useless without its
/// interface), duplicates too, and at most [`MAX_ADDRS_PER_PEER`] are kept.
pub fn candidates(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let rank = |a: &SocketAddr| match a {
        SocketAddr::V6(v6) if needs_zone(a) => {
            if v6.scope_id() == 0 {
                3
            } else {
                0
            }
        }
        SocketAddr::V4(_) => 1,
        SocketAddr::V6(_) => 2,
    };
    let mut v: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if rank(a) < 3 && !v.contains(a) {
            v.push(*a);
        }
    }
    v.sort_by_key(rank);
    v.truncate(MAX_ADDRS_PER_PEER);
    v
}

/// The address rule: the first of [`candidates`]`(addrs)` that accepts a
/// TCP connection within `per_try` (the connection is closed at once).
pub async fn choose_addr(addrs: &[SocketAddr], per_try: Duration) -> Option<SocketAddr> {
    for a in candidates(addrs) {
        if let Ok(Ok(_)) = tokio::time::timeout(per_try, tokio::net::TcpStream::connect(a)).await {
            return Some(a);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::static_peer;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn ll(scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse::<Ipv6Addr>().unwrap(),
            7070,
            0,
            scope,
        ))
    }

    fn peer(id: &str, source: Source, addrs: &[SocketAddr]) -> Peer {
        Peer {
            id: id.into(),
            source,
            addrs: addrs.to_vec(),
            root: None,
            timestamp_version: None,
            channel: None,
            found_after: Duration::ZERO,
        }
    }

    /// A loopback port with a listener (kept open while the guard lives)
    /// and one with none (bound, then closed: connections are refused).
    fn ports() -> (std::net::TcpListener, SocketAddr, SocketAddr) {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live_addr = live.local_addr().unwrap();
        let dead_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        (live, live_addr, dead_addr)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn candidates_are_link_local_with_zone_then_ipv4_then_ipv6() {
        let v4: SocketAddr = "198.18.0.10:7070".parse().unwrap();
        let v4b: SocketAddr = "198.18.0.11:7070".parse().unwrap();
        let g: SocketAddr = "[2001:db8::1]:7070".parse().unwrap();
        assert_eq!(
            candidates(&[g, v4b, ll(2), v4, v4b]),
            vec![ll(2), v4b, v4, g]
        );
        assert_eq!(candidates(&[ll(0), v4]), vec![v4], "no zone, no candidate");
        let many: Vec<SocketAddr> = (0..20)
            .map(|i| SocketAddr::from(([198, 18, 0, i], 1)))
            .collect();
        assert_eq!(candidates(&many).len(), MAX_ADDRS_PER_PEER);
    }

    #[test]
    fn the_first_candidate_that_accepts_a_connection_wins() {
        let (_live, live, dead) = ports();
        let rt = rt();
        assert_eq!(
            rt.block_on(choose_addr(&[dead, live], PROBE_TIMEOUT)),
            Some(live)
        );
        assert_eq!(
            rt.block_on(choose_addr(&[live, dead], PROBE_TIMEOUT)),
            Some(live)
        );
        let start = std::time::Instant::now();
        assert_eq!(rt.block_on(choose_addr(&[dead], PROBE_TIMEOUT)), None);
        assert!(start.elapsed() < PROBE_TIMEOUT * 2);
    }

    /// A static peer, the same server announced again under another id
    /// (duplicate by address), a DHT answer with an id already given out
    /// (duplicate by id), and a peer with no listener (unreachable, once).
    #[test]
    fn sources_merge_and_duplicates_by_id_and_address_are_dropped() {
        let (_live, live, dead) = ports();
        let (_live2, live2, _) = ports();
        let rt = rt();
        let events = rt.block_on(async {
            let mut s = Session::new(SessionOptions {
                run_for: Duration::from_secs(10),
                ..SessionOptions::default()
            });
            s.add_static([static_peer(live)]);
            s.add_stream(futures_util::stream::iter(vec![
                peer("m1", Source::Mdns, &[dead, live]),
                peer("m2", Source::Mdns, &[live2]),
                peer("m3", Source::Mdns, &[dead]),
                peer("m2", Source::Dht, &[live2]),
                peer("m3", Source::Dht, &[dead]),
            ]));
            let mut events = Vec::new();
            while let Some(e) = s.next().await {
                events.push(e);
            }
            (events, s.stats())
        });
        let (events, stats) = events;
        let found: Vec<(String, SocketAddr)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Found(f) => Some((f.peer.id.clone(), f.addr)),
                _ => None,
            })
            .collect();
        assert_eq!(
            found,
            vec![(live.to_string(), live), ("m2".to_owned(), live2)],
            "{events:?}"
        );
        let unreachable: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Unreachable(p) => Some(p.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(unreachable, vec!["m3"], "{events:?}");
        assert_eq!(stats.offered, 6);
        assert_eq!(stats.distinct_ids, 4);
        assert_eq!(stats.duplicates, 3, "m1 by address, m2 and m3 by id");
        assert_eq!(stats.unreachable, 1);
        if let Some(Event::Found(f)) = events.first() {
            assert_eq!(f.url(), Some(format!("http://{live}")));
        }
    }

    #[test]
    fn known_peers_filters_and_link_local_choice() {
        let (_live, live, _) = ports();
        let rt = rt();
        let (events, stats) = rt.block_on(async {
            let mut s = Session::new(SessionOptions {
                run_for: Duration::from_secs(10),
                probe: None,
                link_local: false,
                ..SessionOptions::default()
            })
            .with_filter(Box::new(|p: &Peer| {
                p.addrs.iter().copied().filter(|a| a.port() != 9).collect()
            }));
            s.known("k", None);
            s.add_stream(futures_util::stream::iter(vec![
                peer("k", Source::Dht, &[live]),
                peer("ll", Source::Mdns, &[ll(2), live]),
                peer("only-ll", Source::Mdns, &[ll(3)]),
                peer("filtered", Source::Mdns, &["198.18.0.9:9".parse().unwrap()]),
            ]));
            let mut events = Vec::new();
            while let Some(e) = s.next().await {
                events.push(e);
            }
            (events, s.stats())
        });
        // Without probing: the first candidate, link-local excluded here.
        assert!(
            matches!(&events[0], Event::Found(f) if f.peer.id == "ll" && f.addr == live),
            "{events:?}"
        );
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[1..]
            .iter()
            .all(|e| matches!(e, Event::Unreachable(_))));
        assert_eq!(stats.duplicates, 1, "the known id");
        assert_eq!(stats.distinct_ids, 4);
    }

    /// Static peers are given out first but start no grace period: the
    /// session still waits for the first answer of a source.
    #[test]
    fn static_peers_do_not_start_the_grace_period() {
        let (_live, live, _) = ports();
        let late: SocketAddr = "198.18.0.7:7070".parse().unwrap();
        let rt = rt();
        let events = rt.block_on(async {
            let mut s = Session::new(SessionOptions {
                run_for: Duration::from_secs(10),
                probe: None,
                ..SessionOptions::default()
            });
            s.add_static([static_peer(live)]);
            let answer = async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                peer("m1", Source::Mdns, &[late])
            };
            s.add_stream(futures_util::stream::once(answer).chain(futures_util::stream::pending()));
            s.gather(Duration::from_millis(100)).await
        });
        let found: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Found(f) => Some(f.peer.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(found, vec![live.to_string().as_str(), "m1"], "{events:?}");
    }

    #[test]
    fn a_session_ends_at_its_deadline_and_after_max_peers() {
        let rt = rt();
        rt.block_on(async {
            let mut s = Session::new(SessionOptions {
                run_for: Duration::from_millis(300),
                ..SessionOptions::default()
            });
            s.add_stream(futures_util::stream::pending());
            let start = std::time::Instant::now();
            assert_eq!(s.next().await, None);
            assert!(start.elapsed() < Duration::from_secs(2));

            let mut s = Session::new(SessionOptions {
                run_for: Duration::from_secs(10),
                max_peers: 2,
                probe: None,
                ..SessionOptions::default()
            });
            let peers: Vec<Peer> = (0..10)
                .map(|i| {
                    peer(
                        &format!("p{i}"),
                        Source::Mdns,
                        &[SocketAddr::from(([198, 18, 0, i], 7070))],
                    )
                })
                .collect();
            s.add_stream(futures_util::stream::iter(peers).chain(futures_util::stream::pending()));
            let events = s.gather(Duration::from_secs(5)).await;
            assert_eq!(events.len(), 2, "{events:?}");
        });
    }
}
