//! `phase serve`: the read-only peer server over a cache (and optionally a
//! TUF repository directory). See `fetcher::server` for the protocol; its
//! `GET /attest` quotes with this machine's TPM (`super::attest::node`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cache directory (CAS under cas/, TUF metadata under tuf/metadata/).
    #[arg(long)]
    pub cache: PathBuf,
    /// A TUF repository directory (metadata/, targets/) served under /tuf/.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Most concurrent connections (more wait in the backlog).
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Announce this server: --mdns, --dht (see `phase discover`).
    #[command(flatten)]
    pub announce: super::discover::AnnounceArgs,
    /// Also serve as a Tor onion service (embedded arti): port 80 of the
    /// printed `http://....onion` address is forwarded to --listen.
    #[arg(long)]
    pub onion: bool,
    /// An arti configuration fragment (TOML) for --onion: a custom Tor
    /// network, bridges... See docs/tor.md.
    #[arg(long, value_name = "FILE", requires = "onion")]
    pub tor_network: Option<PathBuf>,
    /// arti's state (with the onion service's keys: the address stays the
    /// same across restarts) and cache. Default: <cache>/tor.
    #[arg(long, value_name = "DIR", requires = "onion")]
    pub tor_dir: Option<PathBuf>,
    /// Seconds allowed for the Tor bootstrap.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub tor_timeout: u64,
    /// The TPM that answers GET /attest: the kernel's device, or a UNIX
    /// socket speaking the TPM command stream (swtpm). Absent: /attest
    /// answers 404 "no TPM".
    #[arg(long, default_value = measure::TPM_DEVICE, value_name = "PATH")]
    pub tpm: PathBuf,
    /// The boot record whose event log /attest sends; the objects it says
    /// the boot did not hash whole are hashed before they are served.
    #[arg(long, default_value = handover::BOOT_JSON, value_name = "FILE")]
    pub boot_json: PathBuf,
    /// The firmware event log /attest sends when it exists.
    #[arg(long, default_value = super::attest::node::FIRMWARE_LOG, value_name = "FILE")]
    pub firmware_log: PathBuf,
    /// The node's name in /attest answers (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(repo) = &args.repo {
        anyhow::ensure!(
            repo.join("metadata").is_dir(),
            "--repo {}: no metadata/ directory (not a TUF repository)",
            repo.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("listening socket")?;
        let mut cfg = fetcher::ServerConfig::new(&args.cache);
        cfg.repo = args.repo.clone();
        cfg.max_connections = args.max_connections;
        cfg.unhashed = unhashed(&args.boot_json)?;
        cfg.attestor = Some(std::sync::Arc::new(super::attest::node::TpmAttestor::new(
            args.tpm.clone(),
            args.boot_json.clone(),
            args.firmware_log.clone(),
            args.node_name
                .clone()
                .unwrap_or_else(super::attest::node::host_name),
        )));
        // Announce before the "listening" line, so a script that waits for
        // it also finds the server by mDNS/DHT.
        let _announcing = if args.announce.any() {
            Some(
                super::discover::announce(&args.announce, &args.cache, args.repo.as_deref(), addr)
                    .await?,
            )
        } else {
            None
        };
        let _onion = if args.onion {
            Some(start_onion(&args, addr).await?)
        } else {
            None
        };
        // One line a script can wait for.
        println!("phase serve: listening on http://{addr}");
        fetcher::serve(listener, cfg, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("peer server failed")
    })
}

/// The objects the boot record at `path` says this boot did not hash whole
/// (none when there is no record, as on a machine that did not boot with
/// Phase Boot).
fn unhashed(path: &std::path::Path) -> anyhow::Result<Vec<fetcher::Sha256Digest>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let boot = handover::BootJson::from_json(&bytes)
        .with_context(|| format!("{} is not a boot record", path.display()))?;
    boot.unhashed()
        .map(|hex| {
            fetcher::Sha256Digest::from_hex(hex).with_context(|| {
                format!(
                    "{}: artifact digest {hex:?} is not a SHA-256",
                    path.display()
                )
            })
        })
        .collect()
}

/// Bootstraps the embedded Tor client and launches the onion service in
/// front of `addr`; prints its address.
async fn start_onion(
    args: &Args,
    addr: SocketAddr,
) -> anyhow::Result<(fetcher::tor::Tor, fetcher::tor::OnionService)> {
    let dir = args
        .tor_dir
        .clone()
        .unwrap_or_else(|| args.cache.join("tor"));
    let mut cfg = fetcher::tor::TorConfig::in_dir(&dir);
    cfg.bootstrap_timeout = std::time::Duration::from_secs(args.tor_timeout.clamp(5, 3600));
    if let Some(f) = &args.tor_network {
        cfg = cfg.with_network_file(f)?;
    }
    let events: fetcher::tor::TorEventFn = std::sync::Arc::new(|e: &fetcher::tor::TorEvent| {
        use fetcher::tor::TorEvent as E;
        match e {
            E::Bootstrap { status, .. } => eprintln!("phase serve: tor: bootstrap {status}"),
            E::Ready { elapsed } => eprintln!(
                "phase serve: tor: ready after {:.1} s",
                elapsed.as_secs_f64()
            ),
            _ => {}
        }
    });
    let tor = fetcher::tor::Tor::start(cfg, Some(events)).await?;
    // The local side of the forward: a wildcard listen address is reached
    // on loopback.
    let target = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    let svc = tor.launch_onion_service("phase-serve", target)?;
    println!("phase serve: onion service http://{}", svc.address);
    Ok((tor, svc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_a_boot_did_not_hash_come_from_its_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("boot.json");
        assert!(unhashed(&path).expect("no record").is_empty());

        let art = |kind: &str, c: &str, hashed: bool| handover::ArtifactRecord {
            kind: kind.into(),
            target: format!("stable/x86_64/{kind}"),
            sha256: c.repeat(64),
            length: 1,
            hashed,
        };
        let boot = handover::BootJson {
            version: handover::BOOT_JSON_VERSION,
            mode: "local".into(),
            channel: "stable".into(),
            cmdline: String::new(),
            artifacts: vec![
                art("kernel", "a", true),
                art("rootfs", "b", false),
                art("verity", "c", true),
            ],
            tuf: Default::default(),
            peers: Vec::new(),
            steps: Vec::new(),
            identity: None,
            platform: None,
            handover: None,
            measurements: Vec::new(),
        };
        std::fs::write(&path, boot.to_json()).expect("write");
        let got = unhashed(&path).expect("record");
        assert_eq!(
            got.iter().map(|d| d.to_hex()).collect::<Vec<_>>(),
            ["b".repeat(64)]
        );

        std::fs::write(&path, b"{\"version\": 1").expect("write");
        let e = format!("{:#}", unhashed(&path).expect_err("truncated"));
        assert!(e.contains("boot.json is not a boot record"), "{e}");
        std::fs::write(
            &path,
            String::from_utf8(boot.to_json())
                .unwrap()
                .replace(&"b".repeat(64), "zz"),
        )
        .expect("write");
        let e = format!("{:#}", unhashed(&path).expect_err("bad digest"));
        assert!(e.contains("artifact digest \"zz\" is not a SHA-256"), "{e}");
    }
}
