//! `phase`: the Phase Boot host tool. Each subcommand lives in its own module
//! under `cmd/` with an `Args` struct and a `run()`; this file only dispatches
//! and prints the error chain once.
#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "phase",
    version,
    about = "Phase Boot: verified network boot from peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate Ed25519 keys for every TUF role and a signed 1.root.json.
    Keygen(cmd::keygen::Args),
    /// Sign artifacts into a TUF repository (consistent snapshots).
    Publish(cmd::publish::Args),
    /// Rotate a role's keys and re-sign root.
    Rotate(cmd::rotate::Args),
    /// Add signatures (local key or external signer) to a staged root.
    Sign(cmd::sign::Args),
    /// Run the full TUF client workflow against a repository and list its targets.
    Verify(cmd::verify::Args),
    /// The TUF conformance client protocol (init / refresh / download).
    TufClient(cmd::tuf_client::Args),
    /// Build a bootable GPT disk image (ESP + PHASE-CACHE).
    Image(cmd::image::Args),
    /// Serve a cache (and a repository) to peers: /tuf/..., /cas/sha256/...
    Serve(cmd::serve::Args),
    /// TUF refresh against peers, then fetch the channel's targets into the cache.
    Fetch(cmd::fetch::Args),
    /// Cache maintenance: gc, verify.
    Cache(cmd::cache::Args),
    /// List peers as they are found (mDNS on the LAN, Kademlia DHT).
    Discover(cmd::discover::Args),
    /// Remote attestation: check what a node booted from its TPM quote.
    Attest(cmd::attest::Args),
}

fn main() -> ExitCode {
    // The TLS provider for arti's relay connections (ring, the workspace's
    // one), installed explicitly as tor-rtcompat asks applications to.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Library diagnostics (arti's bootstrap and onion-service warnings,
    // ...) only when asked for: RUST_LOG=warn, RUST_LOG=tor_hsservice=debug.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Rotate(args) => cmd::rotate::run(args),
        Command::Sign(args) => cmd::sign::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::TufClient(args) => cmd::tuf_client::run(args),
        Command::Image(args) => cmd::image::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Discover(args) => cmd::discover::run(args),
        Command::Attest(args) => cmd::attest::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole chain: "what failed: why: root cause".
            eprintln!("phase: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
