//! `plasmd`: the daemon (`plasmd daemon`), its control commands (`submit`,
//! `status`, `logs`), one-shot runs from a repository directory, and the
//! WAT assembler for the demo job.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plasmd::config::{self, DaemonConfig};
use plasmd::daemon;
use plasmd::protocol::{self, Request};
use plasmd::{Job, Plasm, PlasmConfig};
use verifier::error_chain as chain;

#[derive(Parser)]
#[command(name = "plasmd", version, about = "Phase Boot's WASM job daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: the start-up jobs, then the control socket.
    Daemon(DaemonArgs),
    /// Ask the daemon to resolve, verify and run a job.
    Submit {
        #[command(flatten)]
        socket: SocketArg,
        /// Wait until the job has ended; exit 0 only if it exited 0.
        #[arg(long)]
        wait: bool,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
        /// Job name (`hello` for the target `jobs/hello.wasm`).
        job: String,
    },
    /// Show every run the daemon knows: state, exit status, fuel, peak
    /// memory, wall time.
    Status {
        #[command(flatten)]
        socket: SocketArg,
        /// JSON (the list of runs).
        #[arg(long)]
        json: bool,
    },
    /// Print the log (stdout and stderr) of a run, or of a job's latest run.
    Logs {
        #[command(flatten)]
        socket: SocketArg,
        /// Run id (`hello-1`) or job name (`hello`).
        run: String,
    },
    /// One-shot: resolve jobs through TUF metadata in a repository
    /// directory, verify and run them one after another.
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
struct SocketArg {
    /// The daemon's control socket.
    #[arg(long, env = "PLASMD_SOCKET", default_value = config::DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Flags override the config file; `--peer` and `--run` add to it.
#[derive(clap::Args)]
struct DaemonArgs {
    /// TOML config (docs/plasmd.md); every key is optional.
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory: runs/, trusted TUF state tuf/, fetched jobs cas/
    /// [default: /var/lib/plasmd].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Control socket [default: /run/plasmd/plasmd.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Read-only cache (`<cache>/cas/sha256`, `<cache>/tuf`; on a node:
    /// /phase).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Trusted root used when the state has none [default:
    /// <cache>/tuf/root.json].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Peer to refresh TUF from and fetch jobs from (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Do not use the peers named in boot.json.
    #[arg(long)]
    no_boot_peers: bool,
    /// Provenance shown to jobs as /phase/boot.json [default: /phase/boot.json].
    #[arg(long)]
    boot_json: Option<PathBuf>,
    /// Host name passed to jobs [default: the kernel's].
    #[arg(long)]
    hostname: Option<String>,
    /// Job to run at start-up (repeatable, in order, after the config's).
    #[arg(long = "run", value_name = "JOB")]
    jobs: Vec<String>,
    /// Runs at once [default: 2].
    #[arg(long)]
    max_parallel: Option<usize>,
}

fn daemon_config(a: DaemonArgs) -> anyhow::Result<DaemonConfig> {
    let mut c = match &a.config {
        Some(p) => DaemonConfig::load(p).map_err(anyhow::Error::msg)?,
        None => DaemonConfig::default(),
    };
    c.state = a.state.or(c.state);
    c.socket = a.socket.or(c.socket);
    c.cache = a.cache.or(c.cache);
    c.root = a.root.or(c.root);
    c.peers.extend(a.peers);
    if a.no_boot_peers {
        c.peers_from_boot = Some(false);
    }
    c.boot_json = a.boot_json.or(c.boot_json);
    c.hostname = a.hostname.or(c.hostname);
    c.jobs.extend(a.jobs);
    c.max_parallel = a.max_parallel.or(c.max_parallel);
    c.check().map_err(anyhow::Error::msg)?;
    Ok(c)
}

fn run_daemon(args: DaemonArgs) -> anyhow::Result<bool> {
    let mut config = daemon_config(args)?;
    // phase-init tells every service the boot's mode and write policy.
    let mode = std::env::var("PHASE_MODE").ok();
    let nowrite = std::env::var("PHASE_NOWRITE").is_ok_and(|v| v == "1");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for note in config
        .apply_boot_policy(mode.as_deref(), nowrite, &mounts)
        .map_err(anyhow::Error::msg)?
    {
        println!("plasmd: {note}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let d = daemon::Daemon::new(&config).map_err(anyhow::Error::msg)?;
        let socket = config.socket_path();
        let listener = daemon::bind_socket(&socket).map_err(anyhow::Error::msg)?;
        println!(
            "plasmd: listening on {} (state {}, cache {}, peers [{}])",
            socket.display(),
            config.state_dir().display(),
            config
                .cache
                .as_ref()
                .map(|c| c.display().to_string())
                .unwrap_or_else(|| "none".into()),
            d.peers().join(", ")
        );
        let startup = {
            let d = d.clone();
            let jobs = config.jobs.clone();
            tokio::spawn(async move {
                for j in jobs {
                    // Errors are printed by the daemon and kept in status.
                    let _ = d.submit(&j, true).await;
                }
            })
        };
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("plasmd: cannot watch SIGTERM: {e}");
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        daemon::serve(d, listener, shutdown).await;
        startup.abort();
        let _ = std::fs::remove_file(&socket);
        println!("plasmd: stopped");
        Ok(true)
    })
}

fn client(socket: &std::path::Path, req: &Request) -> anyhow::Result<protocol::Response> {
    protocol::call(socket, req).map_err(anyhow::Error::msg)
}

/// Client commands: `Ok(false)` when the daemon answered with an error (or
/// the waited-for job failed), which it printed.
fn run_client(cmd: Cmd) -> anyhow::Result<bool> {
    match cmd {
        Cmd::Submit {
            socket,
            wait,
            json,
            job,
        } => {
            let r = client(&socket.socket, &Request::Submit { job, wait })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            let Some(run) = r.run.filter(|_| r.ok) else {
                if !json {
                    eprintln!("plasmd: {}", r.error.unwrap_or_default());
                }
                return Ok(false);
            };
            if !json {
                if wait {
                    println!("{}", run.summary());
                } else {
                    println!(
                        "submitted {} (jobs/{}.wasm sha256:{} from {})",
                        run.id,
                        run.job,
                        run.sha256.as_deref().unwrap_or("?"),
                        run.source.as_deref().unwrap_or("?")
                    );
                }
            }
            Ok(!wait || run.outcome.is_some_and(|o| o.status.success()))
        }
        Cmd::Status { socket, json } => {
            let r = client(&socket.socket, &Request::Status)?;
            if !r.ok {
                eprintln!("plasmd: {}", r.error.unwrap_or_default());
                return Ok(false);
            }
            let runs = r.runs.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs");
            } else {
                for run in &runs {
                    println!("{}", run.summary());
                }
            }
            Ok(true)
        }
        Cmd::Logs { socket, run } => {
            let r = client(&socket.socket, &Request::Logs { run })?;
            match (r.ok, r.log) {
                (true, Some(log)) => {
                    print!("{log}");
                    Ok(true)
                }
                _ => {
                    eprintln!("plasmd: {}", r.error.unwrap_or_default());
                    Ok(false)
                }
            }
        }
        _ => Ok(false),
    }
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
        Cmd::Daemon(args) => run_daemon(args),
        c @ (Cmd::Submit { .. } | Cmd::Status { .. } | Cmd::Logs { .. }) => run_client(c),
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
