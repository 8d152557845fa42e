//! `phase fetch`: TUF refresh against the peers (through the verifier), then
//! every target of (channel, arch), or the named ones, into the CAS from all
//! peers at once, verified chunk by chunk. One line per target: name,
//! sha256, bytes, seconds, bytes per peer. Exit status non-zero naming what
//! failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fetcher::{Cas, FetchOptions, Fetcher, Lookup, Origin, Peer, PeerTransport, TargetObject};
use verifier::{DirStorage, Updater};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trusted root metadata (used when the cache holds no trusted root yet).
    #[arg(long)]
    pub root: PathBuf,
    /// A peer: http://host:port (a Phase peer) or http://host/path/ (a
    /// static mirror of a TUF repository). Repeat for several. At least one
    /// of --peer, --mirror or --discover is required.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Find peers of this trust root and channel by discovery, in addition
    /// to any --peer.
    #[arg(long, value_enum)]
    pub discover: Option<super::discover::DiscoverMode>,
    /// DHT bootstrap peer for --discover dht|both; repeatable.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// How long discovery looks for peers, in seconds.
    #[arg(long, default_value_t = 3)]
    pub discover_timeout: u64,
    /// A static mirror whose repository sits at the root of its server.
    #[arg(long = "mirror")]
    pub mirrors: Vec<String>,
    /// Cache directory (CAS + trusted TUF state).
    #[arg(long)]
    pub cache: PathBuf,
    /// Channel (targets <channel>/<arch>/*).
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// Architecture.
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Only these targets (full names); repeatable.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Give up on one object after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub deadline: u64,
    /// Seconds one peer gets for the whole TUF metadata refresh (every
    /// file of it) before the next peer is tried.
    #[arg(long, default_value_t = 30)]
    pub metadata_timeout: u64,
    /// Parallel connections per peer.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// MiB of chunk data in memory at once, over all peers and
    /// connections (received, waiting to be written, held for
    /// --verify-whole); a chunk larger than this is fetched alone.
    #[arg(long, default_value_t = fetcher::fetch::DEFAULT_CHUNK_MEMORY >> 20, value_name = "MIB")]
    pub chunk_memory_mib: u64,
    /// Hash every object whole as well, even when all its chunks matched
    /// the signed chunk list (which already fixes every byte; see
    /// docs/fetcher.md, "One hash pass per byte").
    #[arg(long)]
    pub verify_whole: bool,
    /// Print a JSON report instead of lines.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// How to reach the peers: --tor or --socks5 (default: direct).
    #[command(flatten)]
    pub route: RouteArgs,
}

/// The route of every request (docs/tor.md). No fallback to direct.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Fetch everything (metadata and artifacts) through the embedded Tor
    /// client (arti). Peers may be `http://....onion` addresses.
    #[arg(long, conflicts_with = "socks5")]
    pub tor: bool,
    /// An arti configuration fragment (TOML) for --tor: a custom Tor network
    /// ([tor_network] authorities and fallback_caches), [bridges],
    /// [path_rules]... See docs/tor.md.
    #[arg(long, value_name = "FILE", requires = "tor")]
    pub tor_network: Option<PathBuf>,
    /// Keep arti's state and directory cache here (default: a fresh
    /// temporary directory, deleted at exit).
    #[arg(long, value_name = "DIR", requires = "tor")]
    pub tor_dir: Option<PathBuf>,
    /// Seconds allowed for the Tor bootstrap.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub tor_timeout: u64,
    /// Fetch everything through this SOCKS5 proxy (HOST:PORT, e.g. a tor
    /// daemon's SocksPort); host names are resolved by the proxy.
    #[arg(long, value_name = "HOST:PORT")]
    pub socks5: Option<String>,
}

impl RouteArgs {
    /// Whether requests leave by a proxy (then no discovery on the LAN).
    pub fn proxied(&self) -> bool {
        self.tor || self.socks5.is_some()
    }

    /// The route, bootstrapping Tor if asked (progress on stderr unless
    /// `quiet`). The returned guard keeps a temporary Tor directory alive.
    pub fn start(
        &self,
        rt: &tokio::runtime::Runtime,
        who: &'static str,
        quiet: bool,
    ) -> anyhow::Result<(fetcher::tor::Route, Option<tempfile::TempDir>)> {
        if let Some(a) = &self.socks5 {
            let addr = fetcher::tor::parse_socks5(a).map_err(anyhow::Error::msg)?;
            return Ok((fetcher::tor::Route::Socks5(addr), None));
        }
        if !self.tor {
            return Ok((fetcher::tor::Route::Direct, None));
        }
        let (dir, guard) = match &self.tor_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("phase-tor-")
                    .tempdir()
                    .context("cannot create a temporary directory for Tor")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut cfg = fetcher::tor::TorConfig::in_dir(&dir);
        cfg.bootstrap_timeout = Duration::from_secs(self.tor_timeout.clamp(5, 3600));
        if let Some(f) = &self.tor_network {
            cfg = cfg.with_network_file(f)?;
        }
        let events: fetcher::tor::TorEventFn = Arc::new(move |e: &fetcher::tor::TorEvent| {
            use fetcher::tor::TorEvent as E;
            match e {
                E::Bootstrap { status, .. } if !quiet => {
                    eprintln!("{who}: tor: bootstrap {status}")
                }
                E::Ready { elapsed } if !quiet => {
                    eprintln!("{who}: tor: ready after {:.1} s", elapsed.as_secs_f64())
                }
                E::FirstByte { target, elapsed } if !quiet => eprintln!(
                    "{who}: tor: first byte from {target} after {:.1} s",
                    elapsed.as_secs_f64()
                ),
                E::StreamFailed { target, error } => {
                    eprintln!("{who}: tor: cannot reach {target} through Tor: {error}")
                }
                _ => {}
            }
        });
        let tor = rt.block_on(fetcher::tor::Tor::start(cfg, Some(events)))?;
        Ok((fetcher::tor::Route::Tor(tor), guard))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.peers.is_empty() || !args.mirrors.is_empty() || args.discover.is_some(),
        "no source given: pass at least one of --peer, --mirror or --discover"
    );
    anyhow::ensure!(
        !(args.route.proxied() && args.discover.is_some()),
        "--discover cannot be combined with --tor or --socks5 (discovery does not go through the proxy)"
    );
    let mut peers = Vec::new();
    for p in &args.peers {
        peers.push(Peer::parse(p)?);
    }
    for m in &args.mirrors {
        peers.push(Peer::mirror(m)?);
    }
    let cas = Cas::open(&args.cache)
        .with_context(|| format!("cannot open cache {}", args.cache.display()))?;
    let storage =
        DirStorage::new(cas.tuf_dir()).context("cannot open the trusted state in the cache")?;
    let now = chrono::Utc::now();
    if verifier::Storage::load(&storage, "root.json")?.is_none() {
        let bytes = std::fs::read(&args.root)
            .with_context(|| format!("cannot read {}", args.root.display()))?;
        verifier::install_root(&storage, &bytes, now)
            .with_context(|| format!("{} is not a valid trusted root", args.root.display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let opts = FetchOptions {
        deadline: Duration::from_secs(args.deadline),
        connections_per_peer: args.connections.max(1),
        verify_whole: args.verify_whole,
        chunk_memory: args.chunk_memory_mib.max(1).saturating_mul(1 << 20),
        ..FetchOptions::default()
    };
    // Discovery keeps running during the whole fetch: peers found later
    // (a fleet booting together announces as it goes) join the running
    // fetch of each target.
    let discovery = match args.discover {
        None => None,
        Some(mode) => {
            let timeout = Duration::from_secs(args.discover_timeout.clamp(1, 600));
            let d = rt
                .block_on(super::discover::start_discovery(
                    mode,
                    &[cas.tuf_dir().join("root.json"), args.root.clone()],
                    &args.channel,
                    &args.bootstrap,
                    &args.peers,
                    own_peer_id(&args.cache),
                    Duration::from_secs(args.deadline.max(1)).saturating_add(timeout),
                ))
                .context("peer discovery")?;
            if peers.is_empty() {
                // Nothing to run the TUF refresh against yet: wait for the
                // first peers (the first answer plus a short grace).
                for u in rt.block_on(d.first_peers(timeout)) {
                    peers.push(Peer::parse(&u)?);
                }
                anyhow::ensure!(
                    !peers.is_empty(),
                    "no peers: discovery found none within {} s",
                    timeout.as_secs()
                );
            }
            Some(d)
        }
    };
    let (route, _tor_dir) = args.route.start(&rt, "phase fetch", args.quiet)?;
    let fetcher = {
        let _guard = rt.enter();
        Fetcher::with_route(cas.clone(), opts, &route)?
    };
    let meta_dir = cas.metadata_dir();
    let transport = PeerTransport::new(
        fetcher.client().clone(),
        rt.handle().clone(),
        peers.clone(),
        Some(meta_dir.clone()),
    )
    .with_limits(fetcher::TransportLimits {
        peer_budget: Duration::from_secs(args.metadata_timeout.clamp(1, 3600)),
        ..fetcher::TransportLimits::default()
    });
    let mut updater = Updater::new(&storage, &transport, now);
    // Peer by peer: a bad or slow peer costs its budget, never the refresh.
    let refreshed = transport.refresh_with(|_| updater.refresh());
    let report = match &refreshed {
        Ok(r) => r.clone(),
        Err(e) => e.report.clone(),
    };
    if !args.quiet {
        for d in &report.dropped {
            eprintln!(
                "peer {} served invalid metadata ({}); dropped",
                d.label, d.reason
            );
        }
    }
    refreshed.with_context(|| match &route {
        fetcher::tor::Route::Direct => "TUF refresh failed".to_string(),
        r => format!("TUF refresh failed (through {})", r.describe()),
    })?;
    let consistent = updater.root()?.consistent_snapshot;
    let targets = if args.targets.is_empty() {
        let prefix = format!("{}/{}/", args.channel, args.arch);
        let all = updater
            .all_targets()
            .context("cannot list the trusted targets")?;
        let sel: Vec<_> = all
            .into_iter()
            .filter(|t| t.name.starts_with(&prefix))
            .collect();
        anyhow::ensure!(!sel.is_empty(), "no trusted targets under {prefix}");
        sel
    } else {
        let mut v = Vec::new();
        for n in &args.targets {
            v.push(updater.target(n).with_context(|| format!("target {n}"))?);
        }
        v
    };
    let mut plan = Vec::new();
    for t in &targets {
        t.phase().with_context(|| format!("target {}", t.name))?;
        plan.push(TargetObject::new(t, consistent)?);
    }
    export_metadata(&transport, &storage, &meta_dir)?;
    // This cache, then the peers (and those discovery finds meanwhile).
    let lookup = Lookup::new(fetcher.clone()).with_peers(peers.clone());

    let multi = indicatif::MultiProgress::new();
    if args.quiet || args.json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut failures = Vec::new();
    let mut json_out = Vec::new();
    for p in &plan {
        let bar = multi.add(indicatif::ProgressBar::new(p.spec.length));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {prefix}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(p.name.clone());
        let b2 = bar.clone();
        let cb: fetcher::ProgressFn = Arc::new(move |pr: &fetcher::Progress| {
            b2.set_position(pr.done);
            b2.set_prefix(format!("{} peers", pr.peers));
        });
        // Peers discovered so far and later, as sources of this target.
        let (feed, forward) = match &discovery {
            None => (None, None),
            Some(d) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut urls = d.subscribe();
                let (sha, path) = (p.spec.sha256, p.path.clone());
                let task = rt.spawn(async move {
                    let mut sent = std::collections::HashSet::new();
                    loop {
                        let now: Vec<String> = urls.borrow_and_update().clone();
                        for u in now {
                            if !sent.insert(u.clone()) {
                                continue;
                            }
                            let Ok(source) = Peer::parse(&u).and_then(|peer| {
                                peer.source(&sha, &path)
                                    .map_err(|e| fetcher::PeerError::Parse(u.clone(), e))
                            }) else {
                                continue;
                            };
                            if tx.send(source).is_err() {
                                return;
                            }
                        }
                        if urls.changed().await.is_err() {
                            return;
                        }
                    }
                });
                (Some(rx), Some(task))
            }
        };
        let res = rt.block_on(lookup.find(p, feed, Some(cb)));
        if let Some(t) = forward {
            t.abort();
        }
        bar.finish_and_clear();
        match res {
            Ok(mut found) => {
                if let Some(e) = found.ref_error.take() {
                    return Err(e.into());
                }
                let (peer_reports, resumed_chunks, elapsed) = match &found.origin {
                    Origin::Peers(r) => (&r.peers[..], r.resumed_chunks, r.elapsed),
                    Origin::Local | Origin::Cache(_) => (&[][..], 0, found.elapsed),
                };
                let already_present = found.was_held();
                let per_peer: Vec<String> = peer_reports
                    .iter()
                    .map(|x| match &x.dropped {
                        Some(why) => format!("{}={} (dropped: {why})", x.label, x.bytes),
                        None => format!("{}={}", x.label, x.bytes),
                    })
                    .collect();
                if args.json {
                    json_out.push(serde_json::json!({
                        "name": p.name, "sha256": p.spec.sha256, "bytes": p.spec.length,
                        "seconds": elapsed.as_secs_f64(), "already_present": already_present,
                        "resumed_chunks": resumed_chunks,
                        "peers": peer_reports.iter().map(|x| serde_json::json!({
                            "peer": x.label, "bytes": x.bytes, "chunks": x.chunks,
                            "dropped": x.dropped, "bad": x.bad,
                        })).collect::<Vec<_>>(),
                        "path": found.path,
                    }));
                } else {
                    let from = if already_present {
                        "already in cache".to_string()
                    } else {
                        per_peer.join(", ")
                    };
                    println!(
                        "{}  sha256:{}  {} bytes  {:.3} s  {}",
                        p.name,
                        p.spec.sha256,
                        p.spec.length,
                        elapsed.as_secs_f64(),
                        from
                    );
                }
            }
            Err(e) => {
                let msg = match &route {
                    fetcher::tor::Route::Direct => {
                        format!("{}: {:#}", p.name, anyhow::Error::new(e))
                    }
                    r => format!(
                        "{} (through {}): {:#}",
                        p.name,
                        r.describe(),
                        anyhow::Error::new(e)
                    ),
                };
                if !args.json {
                    eprintln!("phase fetch: FAILED {msg}");
                }
                json_out.push(serde_json::json!({"name": p.name, "error": msg}));
                failures.push(msg);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_out)?);
    }
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} targets failed: {}",
        failures.len(),
        plan.len(),
        failures.join("; ")
    );
    Ok(())
}

/// Keeps the verified metadata under `<cache>/tuf/metadata/` with the
/// repository's names, so this node re-shares it: every fetched
/// `N.root.json` (a refresh succeeds only if each verified) and the
/// timestamp, snapshot and targets files equal to the trusted state.
fn export_metadata(
    transport: &PeerTransport,
    storage: &DirStorage,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let trusted: Vec<Vec<u8>> = [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ]
    .iter()
    .filter_map(|n| verifier::Storage::load(storage, n).ok().flatten())
    .collect();
    for (name, bytes) in transport.fetched() {
        let is_root = name.ends_with(".root.json");
        if is_root || trusted.contains(&bytes) {
            let path = dir.join(&name);
            verifier::publish::write_atomic(&path, &bytes, 0o644)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    // The trusted root itself, under its versioned name.
    if let Some(root) = verifier::Storage::load(storage, "root.json")? {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&root) {
            if let Some(n) = v.pointer("/signed/version").and_then(|x| x.as_u64()) {
                verifier::publish::write_atomic(&dir.join(format!("{n}.root.json")), &root, 0o644)?;
            }
        }
    }
    Ok(())
}

/// This node's own peer id, if its server (`phase serve --mdns/--dht` on
/// the same cache) created one, so discovery does not report ourselves.
fn own_peer_id(cache: &std::path::Path) -> Option<String> {
    let key = cache.join("peer.key");
    if !key.is_file() {
        return None;
    }
    discovery::dht::load_or_create_identity(&key)
        .ok()
        .map(|k| k.public().to_peer_id().to_string())
}
