//! `phase serve`: the read-only peer server over a cache (and optionally a
//! TUF repository directory). See `fetcher::server` for the protocol.

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
        // One line a script can wait for.
        println!("phase serve: listening on http://{addr}");
        fetcher::serve(listener, cfg, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("peer server failed")
    })
}
