//! `phase discover`: list Phase Boot peers as they are found, by mDNS on the
//! local link and/or by provider records in the Kademlia DHT. One line per
//! peer (or one JSON object per line with `--json`): how it was found, its
//! id, its HTTP addresses, and the time from the start to its answer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use discovery::dht::{Dht, DhtConfig, Identity};
use discovery::mdns::{BrowseFilter, Mdns, MdnsConfig};
use discovery::session::{DhtLookup, Event, Session, SessionOptions};
use discovery::{Peer, RootTag};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Browse the local link by mDNS (`_phase._tcp.local.`). The default
    /// when neither --mdns nor --dht is given.
    #[arg(long)]
    pub mdns: bool,
    /// Look up providers of --digest in the Kademlia DHT.
    #[arg(long, requires = "digest")]
    pub dht: bool,
    /// DHT bootstrap peer (a multiaddr ending in /p2p/<peer id>); repeatable.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// SHA-256 (64 hex) of the artifact whose providers to find (DHT).
    #[arg(long, value_name = "HEX")]
    pub digest: Option<String>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    pub timeout: f64,
    /// Stop after this many peers.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Trusted root metadata (root.json): only peers of this trust root.
    #[arg(long, conflicts_with = "root_key")]
    pub root: Option<PathBuf>,
    /// Root key fingerprint (16 or 64 hex): only peers of this trust root.
    #[arg(long, value_name = "HEX")]
    pub root_key: Option<String>,
    /// Only peers of this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// mDNS on these interfaces only; repeatable (default: all).
    #[arg(long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Accept peers at loopback addresses (peers on this same host).
    #[arg(long)]
    pub allow_loopback: bool,
    /// One JSON object per peer and line.
    #[arg(long)]
    pub json: bool,
}

/// Most peers `phase discover` lists without --count.
const MAX_LISTED: usize = 4096;

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 3600.0) {
        bail!(
            "--timeout {}: must be between 0 and 3600 seconds",
            args.timeout
        );
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let root = root_tag(&args)?;
    if let Some(ch) = &args.channel {
        discovery::txt::validate_channel(ch).with_context(|| format!("--channel {ch:?}"))?;
    }
    let digest = match &args.digest {
        Some(hex) => Some(parse_digest(hex)?),
        None => None,
    };
    let mut bootstrap = Vec::new();
    for b in &args.bootstrap {
        bootstrap.push(
            b.parse::<discovery::dht::Multiaddr>()
                .with_context(|| format!("--bootstrap {b:?} is not a multiaddr"))?,
        );
    }
    let use_mdns = args.mdns || !args.dht;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let found = rt.block_on(async {
        // A survey: peers are listed as announced (every address), once
        // each by id and address, without connecting to them.
        let mut session = Session::new(SessionOptions {
            run_for: timeout + Duration::from_secs(1),
            max_peers: args.count.unwrap_or(MAX_LISTED),
            probe: None,
            link_local: true,
        });
        if use_mdns {
            let config = MdnsConfig {
                interfaces: args.interfaces.clone(),
                allow_loopback: args.allow_loopback,
                ..MdnsConfig::default()
            };
            let mdns = Mdns::new(&config).context("mDNS")?;
            let filter = BrowseFilter {
                root,
                channel: args.channel.clone(),
                self_id: None,
            };
            session.add_mdns(mdns, filter, timeout).context("mDNS")?;
        }
        if args.dht {
            let digest = digest.context("--dht needs --digest")?;
            let config = DhtConfig {
                identity: Identity::Ephemeral,
                listen: Vec::new(),
                bootstrap: bootstrap.clone(),
                server: false,
                query_timeout: timeout,
                allow_loopback: args.allow_loopback,
                ..DhtConfig::default()
            };
            let dht = Dht::start(config).await.context("DHT")?;
            session.add_dht(
                std::sync::Arc::new(dht),
                DhtLookup {
                    digests: vec![digest],
                    timeout,
                    bootstrap_first: true,
                    repeat_every: None,
                },
            );
        }
        let mut found = 0usize;
        while let Some(event) = session.next().await {
            match event {
                Event::Found(f) => print_peer(&f.peer, args.json),
                Event::Unreachable(p) => print_peer(&p, args.json),
                Event::Failed { error, .. } => bail!("DHT lookup: {error}"),
            }
            found += 1;
            if args.count.is_some_and(|n| found >= n) {
                break;
            }
        }
        Ok::<usize, anyhow::Error>(found)
    })?;
    if !args.json {
        eprintln!(
            "phase discover: {found} peer(s) in {:.1} s",
            timeout.as_secs_f64()
        );
    }
    Ok(())
}

fn root_tag(args: &Args) -> anyhow::Result<Option<RootTag>> {
    if let Some(hex) = &args.root_key {
        return hex
            .parse()
            .map(Some)
            .with_context(|| format!("--root-key {hex:?}"));
    }
    match &args.root {
        Some(path) => root_tag_of_file(path).map(Some),
        None => Ok(None),
    }
}

fn parse_digest(hex_str: &str) -> anyhow::Result<[u8; 32]> {
    let mut d = [0u8; 32];
    if hex_str.len() != 64 {
        bail!("--digest {hex_str:?}: must be 64 hex digits (SHA-256)");
    }
    hex::decode_to_slice(hex_str, &mut d)
        .with_context(|| format!("--digest {hex_str:?} is not hex"))?;
    Ok(d)
}

fn print_peer(p: &Peer, json: bool) {
    let ms = p.found_after.as_secs_f64() * 1000.0;
    if json {
        let v = serde_json::json!({
            "how": p.source.to_string(),
            "id": p.id,
            "addrs": p.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "urls": p.http_urls(),
            "first_answer_ms": (ms * 10.0).round() / 10.0,
            "root": p.root.map(|r| r.to_string()),
            "channel": p.channel,
            "ts": p.timestamp_version,
        });
        println!("{v}");
    } else {
        let addrs: Vec<String> = p.addrs.iter().map(ToString::to_string).collect();
        let mut line = format!(
            "{:<6} {:<24} {:<40} {:>8.1} ms",
            p.source,
            p.id,
            addrs.join(","),
            ms
        );
        if let (Some(root), Some(ch), Some(ts)) = (p.root, &p.channel, p.timestamp_version) {
            line.push_str(&format!("  root={root} ch={ch} ts={ts}"));
        }
        println!("{line}");
    }
}

/// `phase serve --mdns / --dht`: announce this server to peers.
#[derive(Debug, Clone, clap::Args)]
pub struct AnnounceArgs {
    /// Advertise this server on the local link by mDNS (`_phase._tcp`).
    #[arg(long)]
    pub mdns: bool,
    /// Join the Kademlia DHT and provide every object of the cache (and the
    /// fleet's metadata).
    #[arg(long)]
    pub dht: bool,
    /// DHT bootstrap peer (multiaddr ending in /p2p/<peer id>); repeatable.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// libp2p listen address of the DHT node.
    #[arg(
        long,
        default_value = "/ip4/0.0.0.0/tcp/4001",
        value_name = "MULTIADDR"
    )]
    pub dht_listen: String,
    /// Private mode: a new peer identity for this run, and no mDNS announce.
    #[arg(long)]
    pub private: bool,
    /// Root key fingerprint (16 or 64 hex) to announce; default: the trusted
    /// root in the cache, or the repository's root.
    #[arg(long, value_name = "HEX")]
    pub root_key: Option<String>,
    /// Channel to announce.
    #[arg(long, default_value = "stable")]
    pub channel: String,
}

impl AnnounceArgs {
    /// Whether anything is to be announced.
    pub fn any(&self) -> bool {
        self.mdns || self.dht
    }
}

/// What keeps an announcement alive; drop it to withdraw.
#[derive(Debug)]
pub struct Announcing {
    _mdns: Option<(Mdns, discovery::mdns::Advertisement)>,
    /// The DHT node lives in the task that re-announces new objects.
    dht: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Announcing {
    fn drop(&mut self) {
        if let Some(t) = &self.dht {
            t.abort();
        }
    }
}

/// Most objects `phase serve --dht` provides.
const MAX_PROVIDED: usize = 65536;

/// How often `phase serve --dht` looks for objects that arrived in the
/// cache since the last look (a fetch into the same cache) and provides them.
pub const REANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// Starts announcing the server at `http` (its bound address) serving
/// `cache` (and `repo`). Prints one line per announcement.
pub async fn announce(
    args: &AnnounceArgs,
    cache: &std::path::Path,
    repo: Option<&std::path::Path>,
    http: std::net::SocketAddr,
) -> anyhow::Result<Announcing> {
    if args.mdns && args.private {
        bail!("--mdns with --private: private mode never announces on the LAN");
    }
    if http.ip().is_loopback() {
        bail!("--mdns/--dht: the server listens on {http}, which peers cannot reach; give --listen 0.0.0.0:PORT");
    }
    let root = announce_root(args, cache, repo)?;
    discovery::txt::validate_channel(&args.channel)
        .with_context(|| format!("--channel {:?}", args.channel))?;
    let identity = if args.private {
        Identity::Ephemeral
    } else {
        Identity::Persistent(cache.join("peer.key"))
    };
    // The mDNS id is the (persistent) libp2p peer id; private mode has no
    // mDNS, so never creates a key file.
    let id = match &identity {
        Identity::Persistent(path) => discovery::dht::load_or_create_identity(path)?
            .public()
            .to_peer_id()
            .to_string(),
        Identity::Ephemeral => String::new(),
    };
    let mut out = Announcing {
        _mdns: None,
        dht: None,
    };
    if args.mdns {
        let mdns = Mdns::new(&MdnsConfig::default()).context("mDNS")?;
        let txt = discovery::PeerTxt {
            version: discovery::txt::PROTOCOL_VERSION,
            id: id.clone(),
            root,
            timestamp_version: timestamp_version(cache, repo),
            channel: args.channel.clone(),
            port: Some(http.port()),
        };
        let ad = mdns.advertise(&txt, http.port()).context("mDNS")?;
        println!(
            "phase serve: mDNS {} root={root} ch={} id={id}",
            ad.fullname(),
            args.channel
        );
        out._mdns = Some((mdns, ad));
    }
    if args.dht {
        let mut bootstrap = Vec::new();
        for b in &args.bootstrap {
            bootstrap.push(
                b.parse()
                    .with_context(|| format!("--bootstrap {b:?} is not a multiaddr"))?,
            );
        }
        let listen = args
            .dht_listen
            .parse()
            .with_context(|| format!("--dht-listen {:?} is not a multiaddr", args.dht_listen))?;
        let mut config = DhtConfig {
            identity,
            listen: vec![listen],
            bootstrap,
            ..DhtConfig::default()
        };
        if http.ip().is_unspecified() {
            config.http_port = Some(http.port());
        } else {
            config.http_addrs = vec![http];
        }
        let has_bootstrap = !config.bootstrap.is_empty();
        let dht = Dht::start(config).await.context("DHT")?;
        for a in dht.listen_addrs().await? {
            println!("phase serve: DHT {a}/p2p/{}", dht.peer_id());
        }
        if has_bootstrap {
            if let Err(err) = dht.bootstrap().await {
                eprintln!("phase serve: warning: DHT bootstrap: {err:#}");
            }
        }
        let cas = fetcher::Cas::open(cache)
            .with_context(|| format!("cannot open cache {}", cache.display()))?;
        let mut digests = vec![discovery::dht::fleet_digest(&root)];
        digests.extend(
            cas.list()
                .context("cannot list the cache")?
                .into_iter()
                .map(|d| d.0),
        );
        if let Some(repo) = repo {
            digests.extend(repo_target_digests(&repo.join("targets")));
        }
        digests.sort();
        digests.dedup();
        let n = digests.len();
        let mut provided = std::collections::HashSet::new();
        for d in digests {
            // Without peers yet, publication reaches nobody now; Kademlia
            // re-publishes on schedule once peers are known.
            if let Err(err) = dht.provide(d).await {
                tracing::warn!(digest = %hex::encode(d), %err, "DHT provide");
            }
            provided.insert(d);
        }
        println!(
            "phase serve: DHT providing {} object(s) and the fleet key",
            n.saturating_sub(1)
        );
        // Objects that arrive later (a `phase fetch` into this cache) are
        // provided as they become complete.
        out.dht = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(REANNOUNCE_INTERVAL).await;
                let cas2 = cas.clone();
                let Ok(Ok(now)) = tokio::task::spawn_blocking(move || cas2.list()).await else {
                    continue;
                };
                for d in now {
                    if provided.len() >= MAX_PROVIDED {
                        break;
                    }
                    if provided.insert(d.0) {
                        match dht.provide(d.0).await {
                            Ok(()) => eprintln!("phase serve: DHT providing new object {d}"),
                            Err(err) => {
                                tracing::warn!(digest = %d, %err, "DHT provide");
                            }
                        }
                    }
                }
            }
        }));
    }
    Ok(out)
}

/// Digests of a consistent-snapshot repository's target files
/// (`targets/**/<sha256 hex>.<name>`), at most 4096.
fn repo_target_digests(dir: &std::path::Path) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < 8 {
                stack.push((e.path(), depth + 1));
            } else if ft.is_file() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let mut d = [0u8; 32];
                if name.len() > 65
                    && name.as_bytes()[64] == b'.'
                    && hex::decode_to_slice(&name[..64], &mut d).is_ok()
                {
                    out.push(d);
                }
            }
            if out.len() >= 4096 {
                return out;
            }
        }
    }
    out
}

/// The root tag to announce: --root-key, else the cache's trusted root, else
/// the repository's newest root.
fn announce_root(
    args: &AnnounceArgs,
    cache: &std::path::Path,
    repo: Option<&std::path::Path>,
) -> anyhow::Result<RootTag> {
    if let Some(hex) = &args.root_key {
        return hex.parse().with_context(|| format!("--root-key {hex:?}"));
    }
    let mut candidates = vec![cache.join("tuf/root.json")];
    if let Some(repo) = repo {
        let meta = repo.join("metadata");
        let newest = std::fs::read_dir(&meta)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n: u64 = name.strip_suffix(".root.json")?.parse().ok()?;
                Some((n, e.path()))
            })
            .max();
        candidates.extend(newest.map(|(_, p)| p));
        candidates.push(meta.join("root.json"));
    }
    for path in candidates {
        if path.is_file() {
            return root_tag_of_file(&path);
        }
    }
    bail!("--mdns/--dht need the trust root: give --root-key, or serve a cache or --repo that holds root metadata")
}

fn root_tag_of_file(path: &std::path::Path) -> anyhow::Result<RootTag> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        signed: verifier::metadata::Root,
    }
    // Only to compute the fleet tag; trust is established by the verifier
    // when content is fetched, not here.
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let env: Envelope = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not TUF root metadata", path.display()))?;
    let fp = verifier::root_fingerprint(&env.signed);
    fp.parse()
        .with_context(|| format!("root fingerprint of {}", path.display()))
}

/// Version of the timestamp metadata in the cache or the repository (0 when
/// none).
fn timestamp_version(cache: &std::path::Path, repo: Option<&std::path::Path>) -> u64 {
    let mut files = vec![
        cache.join("tuf/timestamp.json"),
        cache.join("tuf/metadata/timestamp.json"),
    ];
    files.extend(repo.map(|r| r.join("metadata/timestamp.json")));
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| {
            v.pointer("/signed/version")
                .and_then(serde_json::Value::as_u64)
        })
        .max()
        .unwrap_or(0)
}

/// How long `phase fetch --discover` keeps looking after the first peer.
const FIRST_PEER_GRACE: Duration = Duration::from_millis(500);

/// `phase fetch --discover`: which discovery to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoverMode {
    /// mDNS on the local link.
    Mdns,
    /// Kademlia DHT (needs --bootstrap).
    Dht,
    /// Both at once.
    Both,
}

/// Most peers `phase fetch --discover` collects.
const MAX_DISCOVERED: usize = 64;

/// Pause between two DHT provider lookups while a fetch runs.
const DHT_REQUERY: Duration = Duration::from_secs(2);

/// Peers found by discovery running in the background of a fetch: the
/// HTTP base URLs found so far (each server once, at most [`MAX_DISCOVERED`]),
/// growing while discovery keeps looking. Dropping it stops discovery.
pub struct Discovery {
    urls: tokio::sync::watch::Receiver<Vec<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Discovery {
    /// The URLs found so far and every later addition.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.urls.clone()
    }

    /// Waits (at most `timeout`) for a first peer, then [`FIRST_PEER_GRACE`]
    /// for others to join in; returns the URLs found by then.
    pub async fn first_peers(&self, timeout: Duration) -> Vec<String> {
        let mut rx = self.urls.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let found = matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(|v| !v.is_empty())).await,
            Ok(Ok(_))
        );
        if found {
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + FIRST_PEER_GRACE))
                .await;
        }
        let v = rx.borrow().clone();
        v
    }
}

/// Starts looking for peers of the fleet whose trust root is in the first
/// existing file of `root_files` (mDNS: TXT root and channel; DHT:
/// providers of the fleet key, looked up again every [`DHT_REQUERY`]), for
/// up to `run_for` or until the returned [`Discovery`] is dropped. One
/// [`discovery::Session`] merges them: each peer once, by id and by
/// address, at the address the session's rule chose (a URL cannot name an
/// IPv6 link-local zone, so those are no candidates here). `static_urls`
/// (the `--peer` URLs the fetch already uses) are never reported again
/// when discovery finds the same server. Prints one line per peer on
/// stderr. `self_id` (this node's own peer id) is never reported.
pub async fn start_discovery(
    mode: DiscoverMode,
    root_files: &[PathBuf],
    channel: &str,
    bootstrap: &[String],
    static_urls: &[String],
    self_id: Option<String>,
    run_for: Duration,
) -> anyhow::Result<Discovery> {
    let root_file = root_files
        .iter()
        .find(|p| p.is_file())
        .context("no trusted root metadata to tell this fleet's peers by")?;
    let root = root_tag_of_file(root_file)?;
    let mut boots = Vec::new();
    for b in bootstrap {
        boots.push(
            b.parse::<discovery::dht::Multiaddr>()
                .with_context(|| format!("--bootstrap {b:?} is not a multiaddr"))?,
        );
    }
    if mode != DiscoverMode::Mdns && boots.is_empty() {
        bail!("--discover dht needs at least one --bootstrap peer");
    }
    let statics: Vec<Peer> = static_urls
        .iter()
        .filter_map(|u| discovery::peer::url_socket_addr(u))
        .map(discovery::peer::static_peer)
        .collect();
    let mut session = Session::new(SessionOptions {
        run_for,
        max_peers: MAX_DISCOVERED.saturating_add(statics.len()),
        probe: Some(discovery::session::PROBE_TIMEOUT),
        link_local: false,
    });
    session.add_static(statics);
    if mode != DiscoverMode::Dht {
        let mdns = Mdns::new(&MdnsConfig::default()).context("mDNS")?;
        let filter = BrowseFilter {
            root: Some(root),
            channel: Some(channel.to_owned()),
            self_id: self_id.clone(),
        };
        session.add_mdns(mdns, filter, run_for).context("mDNS")?;
    }
    if mode != DiscoverMode::Mdns {
        let lookup = Duration::from_secs(3).min(run_for);
        let dht = Dht::start(DhtConfig {
            listen: Vec::new(),
            bootstrap: boots,
            server: false,
            query_timeout: lookup,
            ..DhtConfig::default()
        })
        .await
        .context("DHT")?;
        session.add_dht(
            std::sync::Arc::new(dht),
            DhtLookup {
                digests: vec![discovery::dht::fleet_digest(&root)],
                timeout: lookup,
                bootstrap_first: true,
                repeat_every: Some(DHT_REQUERY),
            },
        );
    }
    let (wtx, wrx) = tokio::sync::watch::channel(Vec::<String>::new());
    let task = tokio::spawn(async move {
        // Bounded by the session: `run_for`, or MAX_DISCOVERED peers.
        while let Some(event) = session.next().await {
            match event {
                Event::Found(f) if f.peer.source == discovery::Source::Static => {}
                Event::Found(f) => {
                    let Some(url) = f.url() else { continue };
                    eprintln!(
                        "phase fetch: discovered {} {} {url} after {:.0} ms",
                        f.peer.source,
                        f.peer.id,
                        f.peer.found_after.as_secs_f64() * 1000.0
                    );
                    wtx.send_modify(|v| v.push(url));
                }
                Event::Unreachable(p) => eprintln!(
                    "phase fetch: discovered {} {} but none of its addresses {:?} accepts a connection; skipped",
                    p.source, p.id, p.addrs
                ),
                Event::Failed { source, error } => {
                    eprintln!("phase fetch: warning: {source} discovery: {error}")
                }
            }
        }
    });
    Ok(Discovery {
        urls: wrx,
        tasks: vec![task],
    })
}
