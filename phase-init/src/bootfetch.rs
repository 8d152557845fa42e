//! Stage 1's verified fetch: trusted state, TUF refresh, and the kernel,
//! initramfs and rootfs of (`phase.channel`, arch) into a CAS.
//!
//! * Trusted state: `<cache>/tuf/` (`verifier::DirStorage`) when the cache
//!   partition is writable; otherwise RAM (`verifier::MemoryStorage`),
//!   pre-loaded from the read-only cache's `tuf/` if there is one. The baked
//!   root is installed first (a newer stored root is kept).
//! * Metadata: the peers in order (`fetcher::PeerTransport`), then the
//!   cache's `tuf/metadata/`, then — when no peer answers — the trusted
//!   state's own copies ([`CacheFallback`]): an offline boot re-verifies the
//!   cached metadata against the boot time, so expired metadata is refused.
//! * Objects (`fetcher::Lookup`): the writable cache's CAS, or a CAS on
//!   tmpfs under [`RAM_CAS`]; then a read-only cache's objects, used in
//!   place; then the peers. Every object is hashed again before use, so a
//!   tampered stick is caught, except a rootfs with dm-verity parameters
//!   that the cache holds: it is checked block by block as stage 2 reads
//!   it (docs/verity.md), so a warm boot does not read it whole. Its tree
//!   target (`custom.verity.tree`) is fetched and hashed like any other
//!   object, and its top hash block must give the signed root hash.
//!
//! [`run`] reads as its phases: `trusted_state`, `object_store`,
//! `network_peers`, `metadata_transport`, `refresh`, `plan`,
//! `dht_providers`, `fetch_objects` (`fetch_one` each) and `provenance`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fetcher::cas::layout;
use fetcher::{
    Cas, FetchOptions, Fetcher, Lookup, ObjectSpec, Origin, Peer, PeerTransport, TargetObject,
};
use verifier::{DirStorage, MemoryStorage, Storage, Transport, TransportError, Updater};

use crate::cachepart::Mounted;
use crate::cmdline::{self, Config};
use crate::console::console;
use crate::handoff::Artifacts;
use crate::onlink;
use crate::payload::{
    Artifact, MetaFile, PayloadError, PeerBytes, RootVerity, TufVersions, VerityParams,
};
use crate::step::Status;
use crate::trust::BakedRoot;

/// The CAS on tmpfs when the cache may not be written.
pub const RAM_CAS: &str = "/run/phase/ram-cache";

/// At most this many jobs are carried to the target.
pub const MAX_JOBS: usize = 64;

/// The three artifacts a boot needs, in order.
pub const KINDS: [&str; 3] = ["kernel", "initramfs", "rootfs"];

#[derive(Debug, thiserror::Error)]
pub enum BootFetchError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot open the trusted state in {0}")]
    State(PathBuf, #[source] verifier::StorageError),
    #[error("the baked trusted root cannot be installed into the trusted state")]
    InstallRoot(#[source] verifier::Error),
    #[error("cannot open the object store {0}")]
    Cas(PathBuf, #[source] fetcher::CasError),
    #[error("cannot start the HTTP client")]
    Client(#[source] Box<fetcher::FetchError>),
    #[error("phase.peers: {0}")]
    Peer(String, #[source] fetcher::PeerError),
    #[error("TUF refresh failed with no peer and only the cache's metadata (offline); add a peer (phase.peers=http://HOST:PORT) or reseed the stick")]
    RefreshOffline(#[source] verifier::Error),
    #[error("TUF refresh failed against {0} peer(s) and the cache")]
    Refresh(usize, #[source] verifier::Error),
    #[error("the trusted metadata does not sign {0}; publish it for this channel and arch")]
    Target(String, #[source] verifier::Error),
    #[error("{0}: invalid signed Phase metadata")]
    Custom(String, #[source] verifier::Error),
    #[error("the signed metadata has no usable sha256 or chunk list")]
    Spec(#[source] fetcher::TargetSpecError),
    #[error("the boot set is incomplete")]
    BootSet,
    #[error("{name}: not in the cache and no peer to fetch it from; add a peer (phase.peers=http://HOST:PORT)")]
    NoSource { name: String },
    #[error("{name}: fetch failed")]
    Fetch {
        name: String,
        #[source]
        source: Box<fetcher::FetchError>,
    },
    #[error("{name}: cannot read the stored object")]
    Read {
        name: String,
        #[source]
        source: PayloadError,
    },
    #[error("{0}: invalid dm-verity metadata")]
    Verity(String, #[source] verifier::Error),
    #[error("{name}: the dm-verity tree {tree} does not give the signed root hash: {why}")]
    TreeRoot {
        name: String,
        tree: String,
        why: String,
    },
    #[error(
        "{name}: the stored object {path} is {len} bytes, not the signed {expected}; refusing it"
    )]
    Length {
        name: String,
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    #[error("{name}: the stored object {path} does not match its signed digest (sha256 {got}, {len} bytes); refusing it")]
    Mismatch {
        name: String,
        path: PathBuf,
        got: String,
        len: u64,
    },
}

/// Where the fetch writes, and what it reads.
#[derive(Debug, Clone)]
pub struct Places {
    /// The mounted cache partition, if any.
    pub cache: Option<Mounted>,
    /// The CAS used when the cache is absent or read-only.
    pub ram_cas: PathBuf,
    /// Peers found by discovery (mDNS, or the DHT's fleet key), tried after
    /// the cache and before `phase.peers` ([`crate::discover`]); in
    /// `internet` mode also the DHT client for the per-artifact lookups.
    pub discovered: crate::discover::Discovered,
    /// How requests to network peers travel: direct, or in private mode
    /// through Tor (a `phase.socks5` proxy or the embedded client).
    pub route: fetcher::tor::Route,
}

impl Places {
    /// The cache and the discovered peers, the CAS in RAM at [`RAM_CAS`],
    /// and a direct route until the boot's transport is chosen.
    pub fn new(cache: Option<Mounted>, discovered: crate::discover::Discovered) -> Self {
        Places {
            cache,
            ram_cas: RAM_CAS.into(),
            discovered,
            route: fetcher::tor::Route::Direct,
        }
    }
}

/// A verified boot set with its provenance.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub artifacts: Artifacts,
    pub tuf: TufVersions,
    /// Bytes per peer over all three artifacts (`cache` = read from the
    /// cache partition).
    pub peers: Vec<PeerBytes>,
    /// Number of network peers used.
    pub network_peers: usize,
}

/// Peers that served invalid metadata during this boot (by label), with
/// why: dropped for the rest of the boot (every fetch attempt).
static DROPPED: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

fn remember_dropped(label: &str, why: &str) {
    if let Ok(mut d) = DROPPED.lock() {
        d.insert(label.to_owned(), why.to_owned());
    }
}

/// Why `label` was dropped during this boot, if it was.
pub fn dropped_reason(label: &str) -> Option<String> {
    DROPPED.lock().ok().and_then(|d| d.get(label).cloned())
}

/// Every peer dropped during this boot, with why.
pub fn dropped_peers() -> Vec<(String, String)> {
    DROPPED
        .lock()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The HTTP peers named by `phase.peers`, and the multiaddrs among them
/// (DHT bootstrap peers: [`crate::discover`] uses them in `internet` mode;
/// the other modes report and skip them, see [`multiaddr_skipped`]).
pub fn http_peers(config: &Config) -> Result<(Vec<Peer>, Vec<String>), BootFetchError> {
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    for p in &config.peers {
        match p {
            cmdline::Peer::Url(u) => {
                peers.push(Peer::parse(u).map_err(|e| BootFetchError::Peer(u.clone(), e))?)
            }
            cmdline::Peer::Multiaddr(m) => skipped.push(m.clone()),
        }
    }
    Ok((peers, skipped))
}

/// `local` mode never leaves the LAN: of the `phase.peers` URLs, keeps
/// those whose address is on this LAN ([`onlink`]: reached without a
/// router). Returns the kept peers, the address checked for each kept host
/// name (the fetch connects exactly there, so a later DNS answer cannot
/// move it off the LAN), and one console line per URL left out.
pub fn lan_peers(
    peers: Vec<Peer>,
    routes: &onlink::Routes,
    resolve: impl Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>,
) -> (Vec<Peer>, Vec<(String, SocketAddr)>, Vec<String>) {
    let (mut kept, mut pins, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    for peer in peers {
        let (Peer::Phase(u) | Peer::Mirror(u)) = &peer;
        let host = u.host_str().unwrap_or_default().to_owned();
        let port = u.port_or_known_default().unwrap_or(80);
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let addrs = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => match resolve(&host, port) {
                Ok(a) => a,
                Err(e) => {
                    lines.push(format!(
                        "phase.peers: {}: cannot resolve {host} ({e}); skipped",
                        peer.label()
                    ));
                    continue;
                }
            },
        };
        match addrs.iter().find(|a| routes.on_link(a.ip())) {
            Some(a) => {
                if literal.is_none() {
                    pins.push((host, *a));
                }
                kept.push(peer);
            }
            None => {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                lines.push(format!(
                    "phase.peers: {}: {} is not on this LAN (reached through a router or not at all); local mode never leaves the LAN; skipped",
                    peer.label(),
                    if shown.is_empty() { "no address".to_owned() } else { shown.join(", ") }
                ));
            }
        }
    }
    (kept, pins, lines)
}

/// Why `mode` does not use a `phase.peers` multiaddr (`None`: it does).
pub fn multiaddr_skipped(mode: cmdline::Mode) -> Option<&'static str> {
    match mode {
        cmdline::Mode::Internet => None,
        cmdline::Mode::Local => Some("local mode never leaves the LAN, so it runs no DHT"),
        cmdline::Mode::Private => {
            Some("private mode runs no DHT (libp2p would not go through Tor)")
        }
    }
}

/// Serves metadata from the inner transport; when that has nothing (no
/// peer, or none answering), from the trusted state's own verified copies,
/// so that an offline boot can refresh against the cache alone. Root
/// rotations (`N.root.json`) are never answered from the state: offline, no
/// newer root can be learned, which the verifier treats as "none".
pub struct CacheFallback<T> {
    pub inner: T,
    /// `timestamp.json`, `snapshot.json`, `targets.json`, ... as stored.
    pub stored: BTreeMap<String, Vec<u8>>,
    /// Names served from `stored`, for the console.
    pub used: Mutex<Vec<String>>,
    /// Whether the stored copies may answer now: not while one peer is
    /// being asked (its missing file fails that peer's attempt), only in
    /// the refresh's last, cache-only attempt. `true` unless set.
    pub offline: std::sync::atomic::AtomicBool,
    /// Every `N.root.json` answered (by a peer or the cache): after a
    /// successful refresh each one was verified, and the target re-shares
    /// them so the next node can walk the same rotation chain.
    pub roots: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl<T> CacheFallback<T> {
    pub fn new(inner: T, storage: &dyn Storage) -> Self {
        let mut stored = BTreeMap::new();
        for n in ["timestamp.json", "snapshot.json", "targets.json"] {
            if let Ok(Some(b)) = storage.load(n) {
                stored.insert(n.to_owned(), b);
            }
        }
        CacheFallback {
            inner,
            stored,
            used: Mutex::new(Vec::new()),
            offline: std::sync::atomic::AtomicBool::new(true),
            roots: Mutex::new(BTreeMap::new()),
        }
    }

    /// The stored file a repository name maps to: `7.snapshot.json` and
    /// `snapshot.json` -> `snapshot.json`; roots never.
    pub fn stored_name(name: &str) -> Option<&str> {
        let plain = match name.split_once('.') {
            Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => rest,
            _ => name,
        };
        (plain != "root.json").then_some(plain)
    }
}

impl<T: Transport> Transport for CacheFallback<T> {
    fn fetch_metadata(&self, name: &str, max_len: u64) -> Result<Vec<u8>, TransportError> {
        let err = match self.inner.fetch_metadata(name, max_len) {
            Ok(b) => {
                if is_versioned_root(name) {
                    if let Ok(mut r) = self.roots.lock() {
                        r.insert(name.to_owned(), b.clone());
                    }
                }
                return Ok(b);
            }
            // Only a file the source does not have is answered from the
            // stored copies: a peer that failed (unreachable, too slow) is
            // that attempt's failure, so the next peer is tried instead of
            // settling for older metadata.
            Err(TransportError::NotFound) => TransportError::NotFound,
            Err(e) => return Err(e),
        };
        if !self.offline.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(err);
        }
        let Some(stored) = Self::stored_name(name) else {
            // No peer answered for a newer root: nothing newer is known.
            return Err(TransportError::NotFound);
        };
        match self.stored.get(stored) {
            Some(b) if b.len() as u64 <= max_len => {
                if let Ok(mut u) = self.used.lock() {
                    u.push(stored.to_owned());
                }
                Ok(b.clone())
            }
            Some(_) => Err(TransportError::TooLarge { max: max_len }),
            None => Err(err),
        }
    }

    fn fetch_target(
        &self,
        path: &str,
        max_len: u64,
    ) -> Result<Box<dyn std::io::Read + '_>, TransportError> {
        self.inner.fetch_target(path, max_len)
    }
}

impl<T> std::fmt::Debug for CacheFallback<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFallback")
            .field("stored", &self.stored.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `N.root.json`.
fn is_versioned_root(name: &str) -> bool {
    name.strip_suffix(".root.json")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The verified metadata the target re-shares (see [`crate::payload`]):
/// the trusted state under its storage names, and under the repository's
/// names in `metadata/` (every root of the chain, `timestamp.json`,
/// `N.snapshot.json` and `N.targets.json` with the plain names beside them).
pub fn reshare_metadata(
    storage: &dyn Storage,
    versions: &TufVersions,
    roots: &BTreeMap<String, Vec<u8>>,
) -> Vec<MetaFile> {
    let mut out = Vec::new();
    let mut add = |name: String, bytes: &Vec<u8>| {
        if let Some(m) = out.iter_mut().find(|m: &&mut MetaFile| m.name == name) {
            m.bytes = bytes.clone();
        } else {
            out.push(MetaFile {
                name,
                bytes: bytes.clone(),
            });
        }
    };
    for (name, bytes) in roots {
        add(format!("metadata/{name}"), bytes);
    }
    for (role, version) in [
        ("root", versions.root),
        ("timestamp", None),
        ("snapshot", versions.snapshot),
        ("targets", versions.targets),
    ] {
        let file = format!("{role}.json");
        let Ok(Some(bytes)) = storage.load(&file) else {
            continue;
        };
        add(file.clone(), &bytes);
        if role != "root" {
            add(format!("metadata/{file}"), &bytes);
        }
        if let Some(v) = version {
            add(format!("metadata/{v}.{file}"), &bytes);
        }
    }
    out
}

/// One object of the boot: a boot artifact (`kernel`, `initramfs`,
/// `rootfs`) or a `job`.
struct Planned {
    kind: &'static str,
    object: TargetObject,
}

/// The network peers of this boot.
struct NetPeers {
    /// `phase.peers` (HTTP; in local mode only those on the LAN).
    configured: Vec<Peer>,
    /// Host names the fetch client connects to exactly there: the
    /// discovered peers' and the local-mode `phase.peers` pinned to their
    /// checked addresses.
    resolve: Vec<(String, SocketAddr)>,
    /// Objects are fetched from the discovered peers, then `phase.peers`.
    objects: Vec<Peer>,
}

/// The metadata transport of the TUF refresh.
type MetaTransport = CacheFallback<PeerTransport>;

/// Runs the whole fetch once: trusted state, object store, peers, TUF
/// refresh, the plan (boot set and jobs), the DHT's providers, the objects.
pub fn run(
    config: &Config,
    baked: &BakedRoot,
    places: &Places,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Fetched, BootFetchError> {
    let writable = places.cache.as_ref().filter(|c| c.writable);
    let readonly = places.cache.as_ref().filter(|c| !c.writable);

    let storage = trusted_state(writable, readonly, baked, now)?;
    let cas = object_store(writable, places)?;
    let mut net = network_peers(config, places)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BootFetchError::Runtime)?;
    let mut fetcher = make_fetcher(&rt, &cas, places, &net.resolve)?;
    let (transport, refresh_peers) = metadata_transport(
        config,
        places,
        &*storage,
        &cas,
        &fetcher,
        &rt,
        &net.configured,
    );
    let mut up = refresh(&*storage, &transport, refresh_peers, now)?;
    let tuf = tuf_versions(&up);
    let (plan, cmdline, verity) = plan(config, &mut up)?;
    let tuf_files = reshare_metadata(
        &*storage,
        &tuf,
        &transport
            .roots
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default(),
    );

    // Objects: the cache first (the local CAS, a read-only cache partition
    // in place), then discovered peers, then `phase.peers`.
    let caches: Vec<PathBuf> = readonly.map(|c| c.dir.clone()).into_iter().collect();
    let mut found_by: BTreeMap<String, &'static str> = BTreeMap::new();
    for p in &places.discovered.peers {
        found_by.insert(format!("{}/", p.url()), p.source);
    }
    let held = Lookup::new(fetcher.clone()).with_caches(caches.clone());
    let new_providers = dht_providers(&plan, &held, places, &mut net, &mut found_by);
    drop(held);
    if new_providers {
        fetcher = make_fetcher(&rt, &cas, places, &net.resolve)?;
    }
    // A peer that served invalid metadata in this boot is not asked again.
    let usable = net
        .objects
        .iter()
        .filter(|p| dropped_reason(&p.label()).is_none())
        .cloned()
        .collect();
    let lookup = Lookup::new(fetcher)
        .with_caches(caches)
        .with_peers(usable)
        .record_refs(writable.is_some());
    let Objects {
        boot: [kernel, initramfs, rootfs],
        names,
        tree,
        rootfs_hashed,
        jobs,
        per_peer,
    } = fetch_objects(&rt, &lookup, &plan)?;
    let verity = match (verity, tree) {
        (Some(params), Some(tree)) => {
            check_tree_root(&params.verity, &tree.path).map_err(|why| {
                BootFetchError::TreeRoot {
                    name: params.target.clone(),
                    tree: params.verity.tree.clone(),
                    why,
                }
            })?;
            Some(RootVerity { tree, params })
        }
        _ => None,
    };

    // The runtime's worker threads (and the DHT client) end here, before
    // kexec.
    drop(lookup);
    rt.shutdown_timeout(Duration::from_secs(1));
    places.discovered.close();
    Ok(Fetched {
        artifacts: Artifacts {
            kernel,
            initramfs,
            rootfs,
            cmdline,
            names,
            extra: jobs,
            tuf: tuf_files,
            verity,
            rootfs_hashed,
        },
        tuf,
        peers: provenance(per_peer, &found_by, &net.objects),
        network_peers: net.objects.len(),
    })
}

/// The trusted TUF state: `<cache>/tuf/` when the cache is writable, else
/// RAM pre-loaded from a read-only cache's `tuf/`; the stored root must be
/// the baked one or chain from it.
fn trusted_state(
    writable: Option<&Mounted>,
    readonly: Option<&Mounted>,
    baked: &BakedRoot,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Box<dyn Storage>, BootFetchError> {
    let storage: Box<dyn Storage> = match writable {
        Some(c) => {
            let dir = c.dir.join(layout::TUF);
            Box::new(DirStorage::new(&dir).map_err(|e| BootFetchError::State(dir, e))?)
        }
        None => {
            let mem = MemoryStorage::new();
            if let Some(c) = readonly {
                let dir = c.dir.join(layout::TUF);
                if let Ok(ro) = DirStorage::new(&dir) {
                    for n in [
                        "root.json",
                        "timestamp.json",
                        "snapshot.json",
                        "targets.json",
                    ] {
                        if let Ok(Some(b)) = ro.load(n) {
                            mem.store(n, &b)
                                .map_err(|e| BootFetchError::State(dir.clone(), e))?;
                        }
                    }
                }
            }
            Box::new(mem)
        }
    };
    // Every root stored also as N.root.json; the stored root must be the
    // baked one or chain from it (an unsigned cache cannot swap the keys).
    let storage: Box<dyn Storage> = Box::new(crate::trust::ChainStorage(storage));
    match crate::trust::reconcile_root(&storage, baked, now).map_err(BootFetchError::InstallRoot)? {
        crate::trust::RootCheck::Replaced(why) => console().warn(&format!(
            "trust: the cache's trusted root is not ours ({why}); using the baked root {}",
            baked.fingerprint
        )),
        crate::trust::RootCheck::Rotated(v) => console().line(&format!(
            "trust: root v{v} from the cache, rotated from the baked root v{}",
            baked.version
        )),
        crate::trust::RootCheck::Installed | crate::trust::RootCheck::Same => {}
    }
    Ok(storage)
}

/// The CAS objects are fetched into: the writable cache's, else one on
/// tmpfs.
fn object_store(writable: Option<&Mounted>, places: &Places) -> Result<Cas, BootFetchError> {
    let dir = writable
        .map(|c| c.dir.clone())
        .unwrap_or_else(|| places.ram_cas.clone());
    Cas::open(&dir).map_err(|e| BootFetchError::Cas(dir, e))
}

/// `phase.peers` (in local mode only those on the LAN, with a console line
/// for each left out) and the discovered peers.
fn network_peers(config: &Config, places: &Places) -> Result<NetPeers, BootFetchError> {
    let (configured, skipped) = http_peers(config)?;
    let (configured, pins) = if config.mode == cmdline::Mode::Local {
        let system = |host: &str, port: u16| {
            use std::net::ToSocketAddrs;
            (host, port).to_socket_addrs().map(Iterator::collect)
        };
        let (kept, pins, lines) = lan_peers(configured, &onlink::Routes::read(), system);
        for line in lines {
            console().warn(&line);
        }
        (kept, pins)
    } else {
        (configured, Vec::new())
    };
    if let Some(why) = multiaddr_skipped(config.mode) {
        for m in skipped {
            console().warn(&format!("phase.peers: {m}: {why}; skipped"));
        }
    }
    let mut objects = places.discovered.fetcher_peers();
    objects.extend(configured.iter().cloned());
    let mut resolve = places.discovered.resolve();
    resolve.extend(pins);
    Ok(NetPeers {
        configured,
        resolve,
        objects,
    })
}

/// The fetch engine over `cas`: direct (host names in `resolve` connect
/// exactly there) or, in private mode, through Tor
/// ([`crate::private_boot::transport`] refuses a private fetch from peers
/// without a Tor route).
fn make_fetcher(
    rt: &tokio::runtime::Runtime,
    cas: &Cas,
    places: &Places,
    resolve: &[(String, SocketAddr)],
) -> Result<Fetcher, BootFetchError> {
    let _guard = rt.enter();
    let opts = FetchOptions {
        deadline: Duration::from_secs(600),
        ..FetchOptions::default()
    };
    match &places.route {
        fetcher::tor::Route::Direct => Fetcher::with_resolve(cas.clone(), opts, resolve),
        route => Fetcher::with_route(cas.clone(), opts, route),
    }
    .map_err(|e| BootFetchError::Client(Box::new(e)))
}

/// The refresh's transport. It asks the peers by evidence: `phase.peers`
/// (named by the operator) before discovered ones (anyone on the LAN can
/// announce one), and those newest announced timestamp first
/// ([`crate::discover::Discovered::refresh_peers`]); a peer that served
/// invalid metadata earlier in this boot is not asked again. Then the
/// cache's `tuf/metadata/`, then the trusted state's own copies.
fn metadata_transport(
    config: &Config,
    places: &Places,
    storage: &dyn Storage,
    cas: &Cas,
    client: &Fetcher,
    rt: &tokio::runtime::Runtime,
    configured: &[Peer],
) -> (MetaTransport, usize) {
    let meta_dir = places
        .cache
        .as_ref()
        .map(|c| c.dir.join(layout::METADATA))
        .unwrap_or_else(|| cas.metadata_dir());
    let refresh_peers: Vec<Peer> = configured
        .iter()
        .cloned()
        .chain(places.discovered.refresh_peers())
        .filter(|p| dropped_reason(&p.label()).is_none())
        .collect();
    let n = refresh_peers.len();
    let transport = CacheFallback::new(
        PeerTransport::new(
            client.client().clone(),
            rt.handle().clone(),
            refresh_peers,
            Some(meta_dir),
        )
        .with_limits(fetcher::TransportLimits {
            peer_budget: Duration::from_secs(u64::from(config.fetch_timeout)),
            ..fetcher::TransportLimits::default()
        }),
        storage,
    );
    (transport, n)
}

/// The TUF refresh, peer by peer (each within `phase.fetch_timeout`), then
/// the cache alone. Peers that served invalid metadata are remembered for
/// the rest of the boot.
fn refresh<'a>(
    storage: &'a dyn Storage,
    transport: &'a MetaTransport,
    peers: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Updater<&'a dyn Storage, &'a MetaTransport>, BootFetchError> {
    let mut up = Updater::new(storage, transport, now);
    let refreshed = transport.inner.refresh_with(|attempt| {
        transport.offline.store(
            attempt == fetcher::Attempt::Cache,
            std::sync::atomic::Ordering::Relaxed,
        );
        up.refresh()
    });
    transport
        .offline
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let report = match &refreshed {
        Ok(r) => r.clone(),
        Err(e) => e.report.clone(),
    };
    // The console already has the fetcher's own line for each (logging.rs).
    for d in &report.dropped {
        remember_dropped(&d.label, &d.reason);
    }
    refreshed.map_err(|e| {
        let e = *e;
        if peers == 0 {
            BootFetchError::RefreshOffline(e.error)
        } else {
            BootFetchError::Refresh(peers, e.error)
        }
    })?;
    if let Ok(used) = transport.used.lock() {
        if !used.is_empty() {
            console().line(&format!(
                "tuf: no peer answered for {}; using the cached trusted copies",
                used.join(", ")
            ));
        }
    }
    Ok(up)
}

/// What to fetch: the three boot artifacts of (`phase.channel`, arch),
/// the rootfs's dm-verity tree when its signed metadata names one, then
/// the jobs the trusted targets list (`jobs/<name>.wasm`), so that the
/// target runs and re-shares them from its own CAS. A job whose metadata
/// is unusable is reported and skipped. Returns the kernel's cmdline and
/// the rootfs's dm-verity parameters too.
fn plan<S: Storage, T: Transport>(
    config: &Config,
    up: &mut Updater<S, T>,
) -> Result<(Vec<Planned>, String, Option<VerityParams>), BootFetchError> {
    let consistent = up.root().map(|r| r.consistent_snapshot).unwrap_or(true);
    let arch = std::env::consts::ARCH;
    let mut plan = Vec::new();
    let mut cmdline = String::new();
    let mut verity = None;
    for kind in KINDS {
        let name = format!("{}/{arch}/{kind}", config.channel);
        let t = up
            .target(&name)
            .map_err(|e| BootFetchError::Target(name.clone(), e))?;
        let custom = t
            .phase()
            .map_err(|e| BootFetchError::Custom(name.clone(), e))?;
        if kind == "kernel" {
            cmdline = custom.cmdline.clone().unwrap_or_default();
        }
        if kind == "rootfs" {
            verity = rootfs_verity(&t)?;
        }
        let object = TargetObject::new(&t, consistent).map_err(BootFetchError::Spec)?;
        plan.push(Planned { kind, object });
    }
    if let Some(v) = &verity {
        let name = &v.verity.tree;
        let t = up
            .target(name)
            .map_err(|e| BootFetchError::Target(name.clone(), e))?;
        let custom = t
            .phase()
            .map_err(|e| BootFetchError::Custom(name.clone(), e))?;
        if custom.kind != verifier::Kind::Verity {
            return Err(BootFetchError::TreeRoot {
                name: v.target.clone(),
                tree: name.clone(),
                why: format!(
                    "the tree target is of kind {}, not verity",
                    custom.kind.as_str()
                ),
            });
        }
        let object = TargetObject::new(&t, consistent).map_err(BootFetchError::Spec)?;
        plan.push(Planned {
            kind: "verity",
            object,
        });
    }
    let job_names: Vec<String> = up
        .trusted()
        .ok()
        .and_then(|set| set.targets("targets"))
        .map(|t| {
            t.targets
                .keys()
                .filter(|n| n.starts_with("jobs/"))
                .take(MAX_JOBS)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for name in job_names {
        // The error of a malformed target names it.
        let object = match up.target(&name) {
            Ok(t) => TargetObject::new(&t, consistent).map_err(|e| e.to_string()),
            Err(e) => Err(format!("{name}: {}", crate::step::chain(&e))),
        };
        match object {
            Ok(object) => plan.push(Planned {
                kind: "job",
                object,
            }),
            Err(why) => console().warn(&format!("{why}; job skipped")),
        }
    }
    Ok((plan, cmdline, verity))
}

/// The rootfs's signed dm-verity parameters: `None` (and one console line)
/// for a release without them, which boots with the rootfs hashed whole
/// and read without dm-verity; malformed ones refuse the rootfs.
fn rootfs_verity(t: &verifier::Target) -> Result<Option<VerityParams>, BootFetchError> {
    match t.verity() {
        Ok(verity) => Ok(Some(VerityParams {
            target: t.name.clone(),
            verity,
            in_cache: None,
        })),
        Err(e) if matches!(e.target_rule(), Some(verifier::TargetRule::NoVerity)) => {
            console().line(&format!(
                "fetch: {} has no dm-verity metadata (custom.verity): the rootfs is hashed whole and read without dm-verity",
                t.name
            ));
            Ok(None)
        }
        Err(e) => Err(BootFetchError::Verity(t.name.clone(), e)),
    }
}

/// Whether the tree at `tree` gives the signed root hash: the top level of
/// a dm-verity tree is one hash block at the hash start, and the root hash
/// is SHA-256(salt || that block). A rootfs of one data block has no hash
/// blocks (its root hash is the block's own); dm-verity checks it when it
/// is read. Deeper levels and the data are checked by the kernel as they
/// are read.
pub fn check_tree_root(v: &verifier::Verity, tree: &Path) -> Result<(), String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    if v.data_blocks <= 1 {
        return Ok(());
    }
    let size = u64::from(v.hash_block_size);
    let at = v.hash_start_block() * size;
    let mut f = std::fs::File::open(tree).map_err(|e| format!("cannot open it: {e}"))?;
    let mut block = vec![0u8; v.hash_block_size as usize];
    f.seek(SeekFrom::Start(at))
        .and_then(|_| f.read_exact(&mut block))
        .map_err(|e| format!("cannot read its top hash block at byte {at}: {e}"))?;
    let mut h = Sha256::new();
    h.update(&v.salt);
    h.update(&block);
    let got: [u8; 32] = h.finalize().into();
    if got == v.root_hash {
        Ok(())
    } else {
        Err(format!(
            "its top hash block gives {}, the signed root hash is {}",
            hex::encode(got),
            v.root_hex()
        ))
    }
}

/// Internet mode: who in the DHT provides the boot set's objects this node
/// does not hold yet (`held`: local CAS and read-only cache). New providers
/// join the object peers after the discovered ones, before `phase.peers`.
/// Returns whether there are new ones (the fetch client must learn their
/// addresses).
fn dht_providers(
    plan: &[Planned],
    held: &Lookup,
    places: &Places,
    net: &mut NetPeers,
    found_by: &mut BTreeMap<String, &'static str>,
) -> bool {
    let missing: Vec<[u8; 32]> = plan
        .iter()
        .filter(|p| p.kind != "job" && held.held(&p.object.spec).is_none())
        .map(|p| p.object.spec.sha256.0)
        .collect();
    if missing.is_empty() {
        return false;
    }
    let Some(lookup) = places.discovered.artifact_providers(&missing) else {
        return false;
    };
    console().line(&format!(
        "dht: providers of {} boot object(s): {} peer(s), {} new, in {:.1} s{}",
        missing.len(),
        lookup.providers,
        lookup.new.len(),
        lookup.took.as_secs_f64(),
        if lookup.new.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::discover::describe(&lookup.new))
        }
    ));
    for problem in &lookup.problems {
        console().warn(&format!("dht: {problem}"));
    }
    if lookup.new.is_empty() {
        return false;
    }
    for f in &lookup.new {
        net.resolve.push((f.host.clone(), f.addr));
        found_by.insert(format!("{}/", f.url()), f.source);
    }
    let n = places.discovered.peers.len().min(net.objects.len());
    let new: Vec<Peer> = lookup
        .new
        .iter()
        .filter_map(|f| Peer::parse(&f.url()).ok())
        .collect();
    net.objects.splice(n..n, new);
    true
}

/// The fetched objects: the boot set in [`KINDS`] order, the jobs, and the
/// bytes per source.
struct Objects {
    boot: [Artifact; 3],
    names: [String; 3],
    /// The rootfs's dm-verity tree, when planned.
    tree: Option<Artifact>,
    /// Whether the rootfs was hashed whole (see [`fetch_one`]).
    rootfs_hashed: bool,
    jobs: Vec<(String, Artifact)>,
    per_peer: BTreeMap<String, u64>,
}

/// Every object of the plan, each hashed again before use, with one console
/// line each. A boot artifact that fails fails the fetch; a job that fails
/// is reported and left out.
fn fetch_objects(
    rt: &tokio::runtime::Runtime,
    lookup: &Lookup,
    plan: &[Planned],
) -> Result<Objects, BootFetchError> {
    let mut per_peer: BTreeMap<String, u64> = BTreeMap::new();
    let mut boot = Vec::new();
    let mut names = Vec::new();
    let mut jobs = Vec::new();
    let mut tree = None;
    let mut rootfs_hashed = true;
    let has_tree = plan.iter().any(|p| p.kind == "verity");
    for p in plan {
        // With a tree, dm-verity checks the rootfs as it is read.
        let whole = !(has_tree && p.kind == "rootfs");
        match fetch_one(rt, lookup, p, &mut per_peer, whole) {
            Ok((art, _)) if p.kind == "job" => jobs.push((p.object.name.clone(), art)),
            Ok((art, _)) if p.kind == "verity" => tree = Some(art),
            Ok((art, hashed)) => {
                if p.kind == "rootfs" {
                    rootfs_hashed = hashed;
                }
                boot.push(art);
                names.push(p.object.name.clone());
            }
            Err(e) if p.kind == "job" => console().warn(&format!(
                "{}: job not fetched, the target will not have it: {}",
                p.object.name,
                crate::step::chain(&e)
            )),
            Err(e) => return Err(e),
        }
    }
    let incomplete = || BootFetchError::BootSet;
    Ok(Objects {
        boot: boot.try_into().map_err(|_| incomplete())?,
        names: names.try_into().map_err(|_| incomplete())?,
        tree,
        rootfs_hashed,
        jobs,
        per_peer,
    })
}

/// One object: found (local CAS, read-only cache, peers), hashed again, and
/// its console line `fetch: <kind> <name> <size> sha256:<12>.. verified,
/// from <where> (<s> s)`. Without `whole`, an object the cache already
/// held is not read again (only its length is checked; the line says
/// `dm-verity checks it as it is read`); bytes from a peer were hashed as
/// they arrived and are hashed again as always. Returns whether the object
/// was hashed whole.
fn fetch_one(
    rt: &tokio::runtime::Runtime,
    lookup: &Lookup,
    p: &Planned,
    per_peer: &mut BTreeMap<String, u64>,
    whole: bool,
) -> Result<(Artifact, bool), BootFetchError> {
    let o = &p.object;
    let start = Instant::now();
    let found = rt
        .block_on(lookup.find(o, None, Some(progress_printer(p.kind))))
        .map_err(|e| match e {
            fetcher::FetchError::NoPeers(_) => BootFetchError::NoSource {
                name: o.name.clone(),
            },
            e => BootFetchError::Fetch {
                name: o.name.clone(),
                source: Box::new(e),
            },
        })?;
    if let Some(e) = &found.ref_error {
        console().warn(&format!(
            "{}: cannot record the version in the cache: {}",
            o.name,
            crate::step::chain(e)
        ));
    }
    let from = match &found.origin {
        Origin::Local => {
            *per_peer.entry("cache".into()).or_default() += o.spec.length;
            "the cache".to_owned()
        }
        Origin::Cache(_) => {
            *per_peer.entry("cache".into()).or_default() += o.spec.length;
            "the cache (read-only)".to_owned()
        }
        Origin::Peers(report) => {
            let mut parts = Vec::new();
            for r in &report.peers {
                *per_peer.entry(r.label.clone()).or_default() += r.bytes;
                parts.push(format!("{}={}", r.label, r.bytes));
            }
            parts.join(", ")
        }
    };
    let hashed = whole || !found.was_held();
    let (art, how) = if hashed {
        (verify_object(&o.name, &found.path, &o.spec)?, "verified")
    } else {
        (
            held_object(&o.name, &found.path, &o.spec)?,
            "held; dm-verity checks it as it is read",
        )
    };
    console().line(&format!(
        "fetch: {:9} {} {} sha256:{}.. {how}, from {} ({:.1} s)",
        p.kind,
        o.name,
        human(o.spec.length),
        &o.spec.sha256.to_hex()[..12],
        from,
        start.elapsed().as_secs_f64()
    ));
    Ok((art, hashed))
}

/// A held object not read again: its signed digest and length, after a
/// check that the stored file has that length.
fn held_object(name: &str, path: &Path, spec: &ObjectSpec) -> Result<Artifact, BootFetchError> {
    let len = std::fs::metadata(path)
        .map_err(|e| BootFetchError::Read {
            name: name.to_owned(),
            source: PayloadError::Read {
                what: "object",
                path: path.to_path_buf(),
                source: e,
            },
        })?
        .len();
    if len != spec.length {
        return Err(BootFetchError::Length {
            name: name.to_owned(),
            path: path.to_path_buf(),
            len,
            expected: spec.length,
        });
    }
    Ok(Artifact {
        path: path.to_path_buf(),
        sha256: spec.sha256.to_string(),
        length: spec.length,
    })
}

/// `boot.json`'s peers: bytes per source and how each was found, then the
/// peers of this boot dropped for invalid metadata.
fn provenance(
    per_peer: BTreeMap<String, u64>,
    found_by: &BTreeMap<String, &'static str>,
    peers: &[Peer],
) -> Vec<PeerBytes> {
    per_peer
        .into_iter()
        .map(|(peer, bytes)| {
            let found = match found_by.get(&peer) {
                Some(how) => how,
                None if peer == "cache" => "cache",
                None => "phase.peers",
            };
            PeerBytes {
                peer,
                bytes,
                found: Some(found.to_owned()),
                dropped: None,
            }
        })
        .chain(
            dropped_peers()
                .into_iter()
                .filter(|(label, _)| peers.iter().any(|p| p.label() == *label))
                .map(|(peer, why)| PeerBytes {
                    found: found_by.get(&peer).map(|s| (*s).to_owned()),
                    peer,
                    bytes: 0,
                    dropped: Some(why),
                }),
        )
        .collect()
}

fn tuf_versions<S: Storage, T: Transport>(up: &Updater<S, T>) -> TufVersions {
    let Ok(set) = up.trusted() else {
        return TufVersions::default();
    };
    TufVersions {
        root: Some(set.root().version),
        timestamp: set.timestamp().map(|t| t.version),
        snapshot: set.snapshot().map(|s| s.version),
        targets: set.targets("targets").map(|t| t.version),
    }
}

/// Hashes a stored object once more and compares it with the signed digest
/// and length.
pub fn verify_object(
    name: &str,
    path: &Path,
    spec: &ObjectSpec,
) -> Result<Artifact, BootFetchError> {
    let art = Artifact::hash_file("object", path).map_err(|source| BootFetchError::Read {
        name: name.to_owned(),
        source,
    })?;
    if art.sha256 != spec.sha256.to_string() || art.length != spec.length {
        return Err(BootFetchError::Mismatch {
            name: name.to_owned(),
            path: path.to_path_buf(),
            got: art.sha256,
            len: art.length,
        });
    }
    Ok(art)
}

/// A console line at most every 2 s while an object downloads.
fn progress_printer(kind: &'static str) -> fetcher::ProgressFn {
    let last = Mutex::new(Instant::now());
    Arc::new(move |p: &fetcher::Progress| {
        let Ok(mut l) = last.lock() else { return };
        if l.elapsed() < Duration::from_secs(2) || p.done >= p.total {
            return;
        }
        *l = Instant::now();
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        console().line(&format!(
            "fetch: {kind:9} {pct:3}% {}/{} {}/s from {} peer(s)",
            human(p.done),
            human(p.total),
            human(p.rate as u64),
            p.peers
        ));
    })
}

/// `12.3 MiB`.
pub fn human(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f >= K * K * K {
        format!("{:.1} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{n} B")
    }
}

/// The `fetch` boot step: [`run`] once; the error is the caller's to judge
/// (another attempt, or the grace policy).
pub fn step(
    config: &Config,
    baked: &BakedRoot,
    places: &Places,
    now: chrono::DateTime<chrono::Utc>,
) -> (Result<Fetched, BootFetchError>, Status) {
    match run(config, baked, places, now) {
        Ok(f) => {
            let detail = format!(
                "tuf root v{} timestamp v{} targets v{}; {} from {}",
                f.tuf.root.unwrap_or(0),
                f.tuf.timestamp.unwrap_or(0),
                f.tuf.targets.unwrap_or(0),
                f.artifacts.names.join(" "),
                f.peers
                    .iter()
                    .map(|p| format!("{}={}", p.peer, p.bytes))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            (Ok(f), Status::ok(detail))
        }
        Err(e) => {
            let status = Status::fail(crate::step::chain(&e));
            (Err(e), status)
        }
    }
}

/// The `grace` boot step: [`run`] once more with expiry judged at `at`
/// (`phase.grace` = `words` before now), loudly.
pub fn grace_step(
    config: &Config,
    baked: &BakedRoot,
    places: &Places,
    at: chrono::DateTime<chrono::Utc>,
    words: &str,
) -> (Option<Fetched>, Status) {
    match run(config, baked, places, at) {
        Ok(f) => {
            let detail = format!(
                "UNFRESH boot allowed by phase.grace={words}: tuf timestamp v{} targets v{}; {}",
                f.tuf.timestamp.unwrap_or(0),
                f.tuf.targets.unwrap_or(0),
                f.artifacts.names.join(" ")
            );
            let problem = format!(
                "booting metadata that expired less than {words} ago without a fresh verification; connect a peer to refresh it"
            );
            (Some(f), Status::with_problems(detail, vec![problem]))
        }
        Err(e) => (
            None,
            Status::fail(format!(
                "even with phase.grace={words}: {}",
                crate::step::chain(&e)
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_map_versions_away_but_never_roots() {
        type F = CacheFallback<verifier::DirTransport>;
        assert_eq!(F::stored_name("timestamp.json"), Some("timestamp.json"));
        assert_eq!(F::stored_name("7.snapshot.json"), Some("snapshot.json"));
        assert_eq!(F::stored_name("12.targets.json"), Some("targets.json"));
        assert_eq!(F::stored_name("3.root.json"), None);
        assert_eq!(F::stored_name("root.json"), None);
    }

    /// A rootfs of `blocks` 4 KiB blocks, its tree written as publish
    /// writes it (superblock first), and the signed parameters.
    fn tree(dir: &Path, blocks: usize) -> (PathBuf, verifier::Verity) {
        let salt = vec![0x11; 32];
        let params = verity::Params::new(4096, 4096, salt.clone()).expect("params");
        let mut b = verity::Builder::new(params);
        for i in 0..blocks {
            b.update(&[i as u8; 4096]);
        }
        let t = b.finish().expect("tree");
        let path = dir.join("rootfs.verity");
        let mut out = Vec::new();
        t.write(&mut out, verity::Layout::Superblock { uuid: [7; 16] })
            .expect("write");
        std::fs::write(&path, out).expect("write tree");
        let v = verifier::Verity {
            version: 1,
            hash_algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: blocks as u64,
            salt,
            root_hash: *t.root_hash(),
            tree: "stable/x86_64/rootfs.verity".into(),
        };
        (path, v)
    }

    #[test]
    fn a_tree_must_give_the_signed_root_hash() {
        let d = tempfile::tempdir().expect("tempdir");
        // 300 blocks: two levels; 3: one.
        for blocks in [3, 300] {
            let (path, v) = tree(d.path(), blocks);
            check_tree_root(&v, &path).expect("the published tree");
            let mut wrong = v.clone();
            wrong.root_hash[0] ^= 1;
            let e = check_tree_root(&wrong, &path).expect_err("another root hash");
            assert!(e.contains("the signed root hash is"), "{e}");
            // One flipped byte of the top hash block (after the 4 KiB
            // superblock block).
            let mut bytes = std::fs::read(&path).expect("read");
            bytes[4096 + 5] ^= 0x80;
            std::fs::write(&path, &bytes).expect("write");
            check_tree_root(&v, &path).expect_err("a forged tree");
            // A tree cut short before its top block.
            std::fs::write(&path, &bytes[..4096]).expect("write");
            let e = check_tree_root(&v, &path).expect_err("short");
            assert!(e.contains("cannot read its top hash block"), "{e}");
        }
        // One data block: no hash blocks to check.
        let (path, v) = tree(d.path(), 1);
        check_tree_root(&v, &path).expect("one block");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
