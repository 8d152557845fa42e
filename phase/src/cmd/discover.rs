//! `phase discover`: list Phase Boot peers as they are found, by mDNS on the
//! local link and/or by provider records in the Kademlia DHT. One line per
//! peer (or one JSON object per line with `--json`): how it was found, its
//! id, its HTTP addresses, and the time from the start to its answer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use discovery::dht::{Dht, DhtConfig, Identity};
use discovery::mdns::{BrowseFilter, Mdns, MdnsConfig};
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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Peer>(64);
        let mut tasks = Vec::new();
        let mut _mdns_guard = None;
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
            let mut browser = mdns.browse(filter, timeout).context("mDNS")?;
            _mdns_guard = Some(mdns);
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(p) = browser.next().await {
                    if tx.send(p).await.is_err() {
                        break;
                    }
                }
                Ok::<(), anyhow::Error>(())
            }));
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
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                // Bootstrap is best effort: the lookup itself also walks the
                // DHT from the bootstrap peers.
                if let Err(err) = tokio::time::timeout(timeout, dht.bootstrap())
                    .await
                    .unwrap_or(Ok(()))
                {
                    tracing::warn!(%err, "DHT bootstrap");
                }
                let mut providers = dht
                    .find_providers(digest, timeout)
                    .await
                    .context("DHT lookup")?;
                while let Some(p) = providers.next().await {
                    if tx.send(p).await.is_err() {
                        break;
                    }
                }
                dht.shutdown().await;
                Ok(())
            }));
        }
        drop(tx);
        let mut found = 0usize;
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(1);
        while let Ok(Some(peer)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            print_peer(&peer, args.json);
            found += 1;
            if args.count.is_some_and(|n| found >= n) {
                break;
            }
        }
        for t in tasks {
            t.abort();
            if let Ok(Err(err)) = t.await {
                return Err(err);
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
    let Some(path) = &args.root else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct Envelope {
        signed: verifier::metadata::Root,
    }
    // Only to compute the fleet tag for filtering; trust is established by
    // the verifier when content is fetched, not here.
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let env: Envelope = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not TUF root metadata", path.display()))?;
    let fp = verifier::root_fingerprint(&env.signed);
    Ok(Some(fp.parse().with_context(|| {
        format!("root fingerprint of {}", path.display())
    })?))
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
