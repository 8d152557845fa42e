//! `plasmd`: run verified WASM jobs, assemble WAT jobs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plasmd::{Job, Plasm, PlasmConfig};

#[derive(Parser)]
#[command(name = "plasmd", version, about = "Phase Boot's WASM job daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Resolve jobs through TUF metadata in a repository directory, verify
    /// and run them one after another.
    Run(RunArgs),
    /// Assemble a WAT job into a .wasm module (no WASM toolchain needed).
    Assemble {
        /// WebAssembly text source.
        input: PathBuf,
        /// Binary module to write.
        output: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Repository directory (`metadata/`, `targets/`).
    #[arg(long)]
    repo: PathBuf,
    /// Trusted root metadata (used when the state holds no newer root).
    #[arg(long)]
    root: PathBuf,
    /// State directory: trusted TUF metadata in `tuf/`, runs in `runs/`.
    #[arg(long, default_value = "/var/lib/plasmd")]
    state: PathBuf,
    /// Provenance visible to jobs as /phase/boot.json.
    #[arg(long)]
    boot_json: Option<PathBuf>,
    /// Host name passed to jobs (default: the kernel's).
    #[arg(long)]
    hostname: Option<String>,
    /// Job names (`hello` for the target `jobs/hello.wasm`).
    #[arg(required = true)]
    jobs: Vec<String>,
}

fn run(args: RunArgs) -> anyhow::Result<bool> {
    let now = chrono::Utc::now();
    let tuf = args.state.join("tuf");
    let storage = verifier::DirStorage::new(&tuf)
        .with_context(|| format!("trusted state in {}", tuf.display()))?;
    let root = std::fs::read(&args.root)
        .with_context(|| format!("cannot read trusted root {}", args.root.display()))?;
    verifier::install_root(&storage, &root, now).context("trusted root refused")?;
    let mut updater = verifier::Updater::new(storage, verifier::DirTransport::new(&args.repo), now);
    updater
        .refresh()
        .with_context(|| format!("TUF refresh from {}", args.repo.display()))?;

    let mut config = PlasmConfig::new(&args.state);
    config.provenance = args.boot_json;
    if let Some(h) = args.hostname {
        config.hostname = h;
    }
    let plasm = Plasm::new(config)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let mut all_ok = true;
    for name in &args.jobs {
        let job = match Job::fetch(&mut updater, name) {
            Ok(job) => job,
            Err(e) => {
                eprintln!("plasmd: {}", chain(&e));
                all_ok = false;
                continue;
            }
        };
        let outcome = rt.block_on(plasm.run(&job))?;
        println!(
            "plasmd: {} {} (fuel {}, peak memory {} B, {} ms; log {})",
            outcome.id,
            outcome.status,
            outcome.usage.fuel,
            outcome.usage.peak_memory_bytes,
            outcome.usage.wall_ms,
            outcome.log.display()
        );
        all_ok &= outcome.status.success();
    }
    Ok(all_ok)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLASMD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().cmd {
        Cmd::Run(args) => run(args),
        Cmd::Assemble { input, output } => (|| {
            let src = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let wasm = plasmd::assemble(&src)
                .with_context(|| format!("{} is not valid WAT", input.display()))?;
            std::fs::write(&output, wasm)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(true)
        })(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("plasmd: {e:#}");
            ExitCode::from(2)
        }
    }
}
