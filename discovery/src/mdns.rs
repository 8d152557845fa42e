//! mDNS / DNS-SD on the local link: advertise `_phase._tcp.local.` and browse
//! for it, over IPv4 and IPv6 link-local (so a LAN without DHCP still works).
//!
//! Built on `mdns-sd` (a plain RFC 6762/6763 responder and querier) rather
//! than libp2p's mDNS, which announces libp2p's own service name and could
//! not interoperate with avahi or python-zeroconf; see `docs/discovery.md`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use futures_util::Stream;
use mdns_sd::{IfKind, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::peer::{tidy_addrs, usable_ip, Peer, Source};
use crate::txt::{PeerTxt, RootTag, TxtError};

/// The DNS-SD service type of a Phase Boot peer.
pub const SERVICE_TYPE: &str = "_phase._tcp.local.";

/// Most distinct service instances one browse looks at; later ones are
/// counted and dropped (a flood of fake instances must not grow memory).
pub const MAX_INSTANCES: usize = 1024;

/// How long an accepted peer waits for addresses of its other family
/// (A vs AAAA records) before it is given out with what it has.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Most rejected instances remembered (with their reason) for diagnostics.
pub const MAX_REJECTIONS_KEPT: usize = 32;

/// Errors of the mDNS layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// The responder could not be started (sockets, thread).
    #[error("cannot start the mDNS responder")]
    Daemon(#[source] mdns_sd::Error),
    /// An interface could not be selected.
    #[error("cannot select mDNS interface `{name}`")]
    Interface {
        /// The interface.
        name: String,
        /// Why.
        #[source]
        source: mdns_sd::Error,
    },
    /// Our own advertisement failed validation.
    #[error("invalid mDNS advertisement")]
    Txt(#[source] TxtError),
    /// The service could not be registered.
    #[error("cannot register the mDNS service")]
    Register(#[source] mdns_sd::Error),
    /// The browse could not be started.
    #[error("cannot browse for {SERVICE_TYPE}")]
    Browse(#[source] mdns_sd::Error),
}

/// Which interfaces and address families the responder uses.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    /// Interface names to use; empty means every interface.
    pub interfaces: Vec<String>,
    /// Use IPv4.
    pub ipv4: bool,
    /// Use IPv6 (link-local included).
    pub ipv6: bool,
    /// Accept peers at loopback addresses (only useful when the peer is on
    /// this same host, e.g. two processes in one network namespace).
    pub allow_loopback: bool,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ipv4: true,
            ipv6: true,
            allow_loopback: false,
        }
    }
}

/// `ServiceDaemon` is a handle to the responder thread; it has no `Debug`.
#[derive(Clone)]
struct Daemon(ServiceDaemon);

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceDaemon")
    }
}

impl std::ops::Deref for Daemon {
    type Target = ServiceDaemon;
    fn deref(&self) -> &ServiceDaemon {
        &self.0
    }
}

/// One mDNS responder/querier (a socket per interface and a thread, owned by
/// `mdns-sd`). Shut down on drop.
#[derive(Debug)]
pub struct Mdns {
    daemon: Daemon,
    allow_loopback: bool,
    ipv4: bool,
    ipv6: bool,
}

impl Mdns {
    /// Starts the responder on the configured interfaces.
    pub fn new(config: &MdnsConfig) -> Result<Self, MdnsError> {
        let daemon = Daemon(ServiceDaemon::new().map_err(MdnsError::Daemon)?);
        let mdns = Self {
            daemon,
            allow_loopback: config.allow_loopback,
            ipv4: config.ipv4,
            ipv6: config.ipv6,
        };
        let d = &mdns.daemon;
        let iface_err = |name: &str| {
            let name = name.to_owned();
            move |source| MdnsError::Interface { name, source }
        };
        if !config.interfaces.is_empty() {
            d.disable_interface(IfKind::All).map_err(iface_err("*"))?;
            for name in &config.interfaces {
                d.enable_interface(IfKind::Name(name.clone()))
                    .map_err(iface_err(name))?;
            }
        }
        if !config.ipv4 {
            d.disable_interface(IfKind::IPv4)
                .map_err(iface_err("ipv4"))?;
        }
        if !config.ipv6 {
            d.disable_interface(IfKind::IPv6)
                .map_err(iface_err("ipv6"))?;
        }
        if !config.allow_loopback {
            d.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                .map_err(iface_err("lo"))?;
        }
        Ok(mdns)
    }

    /// Announces this node as `_phase._tcp` with `txt`, serving HTTP on
    /// `http_port`. The addresses follow the host's interfaces. The service
    /// is withdrawn (a goodbye packet) when the returned guard is dropped.
    pub fn advertise(&self, txt: &PeerTxt, http_port: u16) -> Result<Advertisement, MdnsError> {
        txt.validate().map_err(MdnsError::Txt)?;
        let instance = format!("phase-{}", txt.id);
        let host = format!("{}.local.", instance.replace('.', "-"));
        let props = txt.to_properties();
        let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", http_port, &props[..])
            .map_err(MdnsError::Register)?
            .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        self.daemon.register(info).map_err(MdnsError::Register)?;
        tracing::info!(service = %fullname, port = http_port, root = %txt.root, "mDNS advertising");
        Ok(Advertisement {
            daemon: self.daemon.clone(),
            fullname,
        })
    }

    /// Browses for peers until `timeout` from now, yielding each acceptable
    /// peer once, as soon as it resolves.
    pub fn browse(&self, filter: BrowseFilter, timeout: Duration) -> Result<Browser, MdnsError> {
        let rx = self
            .daemon
            .browse(SERVICE_TYPE)
            .map_err(MdnsError::Browse)?;
        let start = Instant::now();
        Ok(Browser {
            daemon: self.daemon.clone(),
            rx,
            filter,
            start,
            deadline: tokio::time::Instant::from_std(start + timeout),
            allow_loopback: self.allow_loopback,
            seen: HashSet::new(),
            yielded: HashSet::new(),
            stats: BrowseStats::default(),
            stopped: false,
            want_v4: self.ipv4,
            want_v6: self.ipv6,
            pending: Vec::new(),
            ready: std::collections::VecDeque::new(),
        })
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // The daemon thread exits and closes its sockets; an error only means
        // it is already gone.
        let _ = self.daemon.shutdown();
    }
}

/// A registered advertisement; withdrawn on drop.
#[derive(Debug)]
pub struct Advertisement {
    daemon: Daemon,
    fullname: String,
}

impl Advertisement {
    /// The DNS-SD instance name, e.g. `phase-node1._phase._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if let Err(err) = self.daemon.unregister(&self.fullname) {
            tracing::debug!(service = %self.fullname, %err, "mDNS unregister failed");
        }
    }
}

/// Which peers a browse accepts.
#[derive(Debug, Clone)]
pub struct BrowseFilter {
    /// Only peers announcing this trust root tag (`None`: any root, for a
    /// survey of the LAN; a booting node always sets it).
    pub root: Option<RootTag>,
    /// Only peers on this channel (any channel when `None`).
    pub channel: Option<String>,
    /// Our own id, so we do not find ourselves.
    pub self_id: Option<String>,
}

/// Why a resolved instance was not yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The TXT record is malformed.
    Txt(TxtError),
    /// Another fleet (different trust root).
    WrongRoot(RootTag),
    /// Another channel.
    WrongChannel(String),
    /// No usable address or port.
    NoAddress,
    /// It is us.
    OurOwn,
}

/// Counters over one browse.
#[derive(Debug, Clone, Default)]
pub struct BrowseStats {
    /// `ServiceResolved` events seen.
    pub resolved: u32,
    /// Peers yielded.
    pub accepted: u32,
    /// Instances beyond [`MAX_INSTANCES`].
    pub over_limit: u32,
    /// The first [`MAX_REJECTIONS_KEPT`] distinct (instance, reason) pairs.
    pub rejections: Vec<(String, Rejection)>,
    /// Count of all rejections.
    pub rejected: u32,
}

/// A running browse: an async source of [`Peer`]s ending at the deadline.
#[derive(Debug)]
pub struct Browser {
    daemon: Daemon,
    rx: mdns_sd::Receiver<ServiceEvent>,
    filter: BrowseFilter,
    start: Instant,
    deadline: tokio::time::Instant,
    allow_loopback: bool,
    seen: HashSet<String>,
    yielded: HashSet<String>,
    stats: BrowseStats,
    stopped: bool,
    want_v4: bool,
    want_v6: bool,
    /// Accepted peers still collecting addresses, with their settle deadline.
    pending: Vec<(Peer, tokio::time::Instant)>,
    ready: std::collections::VecDeque<Peer>,
}

impl Browser {
    /// The next acceptable peer, or `None` once the deadline has passed.
    pub async fn next(&mut self) -> Option<Peer> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                tracing::info!(peer = %p.id, addrs = ?p.addrs, after = ?p.found_after, "mDNS peer found");
                return Some(p);
            }
            if self.stopped {
                return None;
            }
            let wake = self
                .pending
                .iter()
                .map(|(_, t)| *t)
                .min()
                .map_or(self.deadline, |t| t.min(self.deadline));
            match tokio::time::timeout_at(wake, self.rx.recv_async()).await {
                Ok(Ok(ServiceEvent::ServiceResolved(service))) => self.consider(&service),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => self.finish(),
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if now >= self.deadline {
                        self.finish();
                    } else {
                        self.release(|_, t| now >= t);
                    }
                }
            }
        }
    }

    /// Deadline or daemon gone: whatever is still settling is given out.
    fn finish(&mut self) {
        self.release(|_, _| true);
        self.stop();
    }

    fn release(&mut self, due: impl Fn(&Peer, tokio::time::Instant) -> bool) {
        let mut i = 0;
        while i < self.pending.len() {
            if due(&self.pending[i].0, self.pending[i].1) {
                let (p, _) = self.pending.swap_remove(i);
                self.ready.push_back(p);
            } else {
                i += 1;
            }
        }
    }

    /// A peer is complete once it has an address of every family we use;
    /// until then (at most [`SETTLE`]) it waits for the other family's
    /// records, which often arrive in a separate packet.
    fn complete(&self, p: &Peer) -> bool {
        (!self.want_v4 || p.addrs.iter().any(SocketAddr::is_ipv4))
            && (!self.want_v6 || p.addrs.iter().any(SocketAddr::is_ipv6))
    }

    /// The browse as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Peer> + Send {
        futures_util::stream::unfold(self, |mut b| async move { b.next().await.map(|p| (p, b)) })
    }

    /// Counters so far.
    pub fn stats(&self) -> &BrowseStats {
        &self.stats
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = self.daemon.stop_browse(SERVICE_TYPE);
        }
    }

    fn reject(&mut self, name: &str, why: Rejection) {
        tracing::debug!(service = %name, reason = ?why, "mDNS peer ignored");
        self.stats.rejected += 1;
        if self.stats.rejections.len() < MAX_REJECTIONS_KEPT
            && !self
                .stats
                .rejections
                .iter()
                .any(|(n, w)| n == name && *w == why)
        {
            self.stats.rejections.push((name.to_owned(), why));
        }
    }

    fn consider(&mut self, service: &ResolvedService) {
        self.stats.resolved += 1;
        let name = service.get_fullname();
        if !self.seen.contains(name) {
            if self.seen.len() >= MAX_INSTANCES {
                self.stats.over_limit += 1;
                return;
            }
            self.seen.insert(name.to_owned());
        }
        let props = service.get_properties().iter().map(|p| (p.key(), p.val()));
        let txt = match PeerTxt::parse(props) {
            Ok(txt) => txt,
            Err(err) => return self.reject(name, Rejection::Txt(err)),
        };
        let port = txt.port.unwrap_or(service.get_port());
        if self.yielded.contains(&txt.id) {
            // An address update of a peer still settling: merge it. Updates
            // of peers already given out are not repeated.
            if let Some(i) = self.pending.iter().position(|(p, _)| p.id == txt.id) {
                let more = socket_addrs(service.get_addresses(), port, self.allow_loopback);
                self.pending[i].0.addrs.extend(more);
                tidy_addrs(&mut self.pending[i].0.addrs);
                if self.complete(&self.pending[i].0) {
                    let (p, _) = self.pending.swap_remove(i);
                    self.ready.push_back(p);
                }
            }
            return;
        }
        if self.filter.self_id.as_deref() == Some(txt.id.as_str()) {
            return self.reject(name, Rejection::OurOwn);
        }
        if self.filter.root.is_some_and(|r| r != txt.root) {
            return self.reject(name, Rejection::WrongRoot(txt.root));
        }
        if let Some(ch) = &self.filter.channel {
            if *ch != txt.channel {
                return self.reject(name, Rejection::WrongChannel(txt.channel));
            }
        }
        let addrs = socket_addrs(service.get_addresses(), port, self.allow_loopback);
        if port == 0 || addrs.is_empty() {
            return self.reject(name, Rejection::NoAddress);
        }
        self.yielded.insert(txt.id.clone());
        self.stats.accepted += 1;
        let peer = Peer {
            id: txt.id,
            source: Source::Mdns,
            addrs,
            root: Some(txt.root),
            timestamp_version: Some(txt.timestamp_version),
            channel: Some(txt.channel),
            found_after: self.start.elapsed(),
        };
        if self.complete(&peer) {
            self.ready.push_back(peer);
        } else {
            let settle = tokio::time::Instant::now() + SETTLE;
            self.pending.push((peer, settle));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

fn socket_addrs(ips: &HashSet<ScopedIp>, port: u16, allow_loopback: bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for ip in ips {
        let addr = ip.to_ip_addr();
        if !usable_ip(&addr, allow_loopback) {
            continue;
        }
        out.push(match (ip, addr) {
            (ScopedIp::V6(v6), IpAddr::V6(a)) => {
                let scope = if crate::peer::is_link_local_v6(&a) {
                    v6.scope_id().index
                } else {
                    0
                };
                if scope == 0 && crate::peer::is_link_local_v6(&a) {
                    continue; // link-local without a known interface is unreachable
                }
                SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope))
            }
            (_, IpAddr::V4(a)) => SocketAddr::V4(SocketAddrV4::new(a, port)),
            (_, IpAddr::V6(a)) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0)),
        });
    }
    tidy_addrs(&mut out);
    out
}

/// Groups `(instance, reason)` rejections by reason name, for a summary line.
pub fn summarize(rejections: &[(String, Rejection)]) -> HashMap<&'static str, usize> {
    let mut out = HashMap::new();
    for (_, why) in rejections {
        let key = match why {
            Rejection::Txt(_) => "malformed",
            Rejection::WrongRoot(_) => "other-root",
            Rejection::WrongChannel(_) => "other-channel",
            Rejection::NoAddress => "no-address",
            Rejection::OurOwn => "self",
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}
