//! The sandbox: one wasmtime [`Engine`] for the daemon, one [`Store`] per
//! run, with
//!
//! * memory: a [`ResourceLimiter`] that refuses (and traps on) growth past
//!   the job's limit and records the peak;
//! * CPU: wasmtime fuel, with the store yielding to the runtime every
//!   [`FUEL_YIELD_INTERVAL`] units so the deadline can fire;
//! * wall clock: the whole run is a future under [`tokio::time::timeout`];
//!   dropping it stops the job even inside a WASI `poll_oneoff` sleep;
//! * files: only the preopened per-job `/scratch` (read-write) and, when the
//!   node has a `boot.json`, a read-only `/phase` holding a copy of it;
//! * network: none (WASI preview 1 has no socket creation, and the context
//!   allows no TCP, UDP or name lookup);
//! * output: stdout and stderr go to the console (line-prefixed with the run
//!   id) and to the run's log file, capped at [`PlasmConfig::log_cap`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::{Config, Engine, Linker, Module, ResourceLimiter, Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::job::{Job, JobLimits, Policy};
use crate::outcome::{JobOutcome, JobStatus, Usage};

/// Fuel between two yields to the async runtime.
pub const FUEL_YIELD_INTERVAL: u64 = 100_000;

/// Where the guest sees its scratch directory.
pub const GUEST_SCRATCH: &str = "/scratch";
/// Where the guest sees the read-only provenance directory.
pub const GUEST_PHASE: &str = "/phase";

/// Host-side failures: the run could not be set up. A job's own failure is
/// never an error but a [`JobStatus`].
#[derive(Debug, thiserror::Error)]
pub enum PlasmError {
    /// The wasmtime engine could not be configured.
    #[error("cannot set up the WASM engine")]
    Engine(#[source] wasmtime::Error),
    /// A job directory, log or outcome file could not be written.
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A preopened directory could not be opened.
    #[error("cannot preopen {path}")]
    Preopen {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PlasmError + '_ {
    move |source| PlasmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Node configuration for the sandbox.
#[derive(Debug, Clone)]
pub struct PlasmConfig {
    /// Per-run directories go under `<state_dir>/runs/<id>/`.
    pub state_dir: PathBuf,
    /// Limit defaults and caps.
    pub policy: Policy,
    /// Passed to every job as `PHASE_HOSTNAME` (WASI has no hostname call).
    pub hostname: String,
    /// The node's `boot.json`; when set, a copy is visible read-only as
    /// `/phase/boot.json`.
    pub provenance: Option<PathBuf>,
    /// Echo job output to plasmd's stdout.
    pub console: bool,
    /// Most bytes of output kept per run (log and console).
    pub log_cap: u64,
}

impl PlasmConfig {
    /// Defaults: the default [`Policy`], hostname from the kernel, no
    /// provenance, console on, 4 MiB of output per run.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        PlasmConfig {
            state_dir: state_dir.into(),
            policy: Policy::default(),
            hostname: host_name(),
            provenance: None,
            console: true,
            log_cap: 4 << 20,
        }
    }
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), `localhost` when
/// it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The job runner: one engine and linker shared by every run.
pub struct Plasm {
    engine: Engine,
    linker: Linker<RunState>,
    config: PlasmConfig,
    seq: AtomicU64,
}

impl std::fmt::Debug for Plasm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plasm")
            .field("config", &self.config)
            .finish()
    }
}

struct RunState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// The marker error the limiter raises; found again by downcasting.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded: asked for {requested}")]
struct MemoryLimitExceeded {
    limit: u64,
    requested: u64,
}

struct MemoryLimiter {
    limit: u64,
    peak: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.limit {
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                requested: desired,
            }
            .into());
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

impl Plasm {
    /// An engine with fuel metering and WASI preview 1 linked in.
    pub fn new(config: PlasmConfig) -> Result<Plasm, PlasmError> {
        let mut c = Config::new();
        c.consume_fuel(true);
        // Guest stack: deep recursion traps instead of growing without end.
        c.max_wasm_stack(1 << 20);
        let engine = Engine::new(&c).map_err(PlasmError::Engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut RunState| &mut s.wasi)
            .map_err(PlasmError::Engine)?;
        std::fs::create_dir_all(config.state_dir.join("runs"))
            .map_err(io_err(&config.state_dir))?;
        Ok(Plasm {
            engine,
            linker,
            config,
            seq: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PlasmConfig {
        &self.config
    }

    /// The limits `job` runs under on this node.
    pub fn limits_for(&self, job: &Job) -> JobLimits {
        self.config.policy.apply(&job.spec().limits)
    }

    /// Run a verified job to its end. `Err` only when the host could not set
    /// the run up; whatever the job does ends in a [`JobStatus`].
    pub async fn run(&self, job: &Job) -> Result<JobOutcome, PlasmError> {
        let id = self.reserve_run(job.name())?;
        self.run_reserved(job, &id).await
    }

    /// Reserve a run id `<name>-<n>` unique in this state directory (its
    /// directory `<state>/runs/<id>` is created), for
    /// [`Plasm::run_reserved`]. `name` must be a valid job name.
    pub fn reserve_run(&self, name: &str) -> Result<String, PlasmError> {
        if crate::job::job_name(&crate::job::target_name(name)).is_none() {
            return Err(PlasmError::Io {
                path: self.config.state_dir.join("runs").join(name),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a job name"),
            });
        }
        let runs = self.config.state_dir.join("runs");
        loop {
            let id = self.next_id(name);
            match std::fs::create_dir(runs.join(&id)) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(PlasmError::Io {
                        path: runs.join(&id),
                        source,
                    })
                }
            }
        }
    }

    /// The directory of run `id`.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("runs").join(id)
    }

    /// Run a verified job under an id from [`Plasm::reserve_run`].
    pub async fn run_reserved(&self, job: &Job, id: &str) -> Result<JobOutcome, PlasmError> {
        let limits = self.limits_for(job);
        let id = id.to_string();
        let dir = self.config.state_dir.join("runs").join(&id);
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
        let log_path = dir.join("log");
        let log_file = std::fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let sink = Arc::new(Mutex::new(Sink {
            id: id.clone(),
            file: log_file,
            console: self.config.console,
            cap: self.config.log_cap,
            kept: 0,
            truncated: false,
            counts: [0, 0],
            partial: [Vec::new(), Vec::new()],
        }));

        let mut wasi = WasiCtxBuilder::new();
        wasi.arg(job.name())
            .args(&job.spec().args)
            .envs(
                &job.spec()
                    .env
                    .iter()
                    .filter(|(k, _)| !k.starts_with("PHASE_"))
                    .collect::<Vec<_>>(),
            )
            .env("PHASE_JOB", job.name())
            .env("PHASE_RUN", &id)
            .env("PHASE_HOSTNAME", &self.config.hostname)
            .stdout(Output {
                sink: sink.clone(),
                stream: 0,
            })
            .stderr(Output {
                sink: sink.clone(),
                stream: 1,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        wasi.preopened_dir(&scratch, GUEST_SCRATCH, FsPerms::ReadWrite)
            .map_err(|source| PlasmError::Preopen {
                path: scratch.clone(),
                source,
            })?;
        if let Some(boot) = &self.config.provenance {
            let phase = dir.join("phase");
            std::fs::create_dir_all(&phase).map_err(io_err(&phase))?;
            let copy = phase.join("boot.json");
            match std::fs::copy(boot, &copy) {
                Ok(_) => {
                    wasi.preopened_dir(&phase, GUEST_PHASE, FsPerms::ReadOnly)
                        .map_err(|source| PlasmError::Preopen {
                            path: phase.clone(),
                            source,
                        })?;
                }
                Err(e) => tracing::warn!(
                    run = %id, path = %boot.display(), error = %e,
                    "provenance not readable; the job runs without /phase"
                ),
            }
        }

        let mut store = Store::new(
            &self.engine,
            RunState {
                wasi: wasi.build_p1(),
                limiter: MemoryLimiter {
                    limit: limits.memory_bytes,
                    peak: 0,
                },
            },
        );
        store.limiter(|s| &mut s.limiter);
        tracing::info!(run = %id, job = job.name(), sha256 = job.sha256(), ?limits, "job starting");

        let compile_start = Instant::now();
        let module = Module::new(&self.engine, job.bytes());
        let compile_ms = compile_start.elapsed().as_millis() as u64;
        let start = Instant::now();
        let status = match module {
            Err(e) => JobStatus::Failed {
                error: format!("module does not compile: {e:#}"),
            },
            Ok(module) => self.execute(&mut store, &module, &limits).await,
        };
        let wall_ms = start.elapsed().as_millis() as u64;
        let left = store.get_fuel().unwrap_or(0);
        let peak = store.data().limiter.peak;
        drop(store);

        let (stdout_bytes, stderr_bytes) = {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            s.finish();
            (s.counts[0], s.counts[1])
        };
        let outcome = JobOutcome {
            id: id.clone(),
            job: job.name().to_string(),
            sha256: job.sha256().to_string(),
            limits,
            status,
            usage: Usage {
                fuel: limits.fuel.saturating_sub(left),
                peak_memory_bytes: peak,
                wall_ms,
                compile_ms,
                stdout_bytes,
                stderr_bytes,
            },
            log: log_path,
            scratch,
        };
        let record = dir.join("outcome.json");
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_vec_pretty(&outcome).unwrap_or_default();
        std::fs::write(&record, json).map_err(io_err(&record))?;
        tracing::info!(run = %id, status = %outcome.status, fuel = outcome.usage.fuel,
            peak_memory = peak, wall_ms, "job ended");
        Ok(outcome)
    }

    async fn execute(
        &self,
        store: &mut Store<RunState>,
        module: &Module,
        limits: &JobLimits,
    ) -> JobStatus {
        if let Err(e) = store.set_fuel(limits.fuel) {
            return JobStatus::Failed {
                error: format!("cannot set fuel: {e:#}"),
            };
        }
        if let Err(e) = store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)) {
            return JobStatus::Failed {
                error: format!("cannot set fuel yield interval: {e:#}"),
            };
        }
        let linker = &self.linker;
        let run = async {
            let instance = linker
                .instantiate_async(&mut *store, module)
                .await
                .map_err(|e| (true, e))?;
            let start = instance
                .get_typed_func::<(), ()>(&mut *store, "_start")
                .map_err(|e| (true, e))?;
            start
                .call_async(&mut *store, ())
                .await
                .map_err(|e| (false, e))
        };
        match tokio::time::timeout(limits.deadline(), run).await {
            Err(_elapsed) => JobStatus::Deadline {
                deadline_ms: limits.deadline_ms,
            },
            Ok(Ok(())) => JobStatus::Exited { code: 0 },
            Ok(Err((setup, e))) => classify(setup, &e, limits),
        }
    }

    fn next_id(&self, name: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let runs = self.config.state_dir.join("runs");
        // Ids stay unique across daemon restarts: skip ones already used.
        let mut k = n;
        loop {
            let id = format!("{name}-{k}");
            if !runs.join(&id).exists() {
                if k != n {
                    self.seq.fetch_max(k, Ordering::Relaxed);
                }
                return id;
            }
            k += 1;
        }
    }
}

fn classify(setup: bool, e: &wasmtime::Error, limits: &JobLimits) -> JobStatus {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return JobStatus::Exited { code: exit.0 };
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return JobStatus::MemoryLimit {
            limit_bytes: m.limit,
            requested_bytes: m.requested,
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        if *trap == Trap::OutOfFuel {
            return JobStatus::CpuLimit { fuel: limits.fuel };
        }
        return JobStatus::Trapped {
            trap: format!("{e:#}"),
        };
    }
    if setup {
        JobStatus::Failed {
            error: format!("{e:#}"),
        }
    } else {
        JobStatus::Trapped {
            trap: format!("{e:#}"),
        }
    }
}

/// The shared output of one run.
struct Sink {
    id: String,
    file: std::fs::File,
    console: bool,
    cap: u64,
    kept: u64,
    truncated: bool,
    /// Bytes the job wrote, per stream (stdout, stderr).
    counts: [u64; 2],
    /// Console line buffers per stream.
    partial: [Vec<u8>; 2],
}

impl Sink {
    fn write(&mut self, stream: usize, bytes: &[u8]) {
        self.counts[stream] += bytes.len() as u64;
        let room = self.cap.saturating_sub(self.kept);
        let keep = &bytes[..bytes.len().min(room as usize)];
        self.kept += keep.len() as u64;
        if !keep.is_empty() {
            // A full disk must not kill the job; the loss is logged once.
            if let Err(e) = self.file.write_all(keep) {
                tracing::warn!(run = %self.id, error = %e, "job log write failed");
            }
            if self.console {
                self.partial[stream].extend_from_slice(keep);
                self.flush_lines(stream, false);
            }
        }
        if keep.len() < bytes.len() && !self.truncated {
            self.truncated = true;
            let note = format!("\n[plasmd: output truncated at {} bytes]\n", self.cap);
            let _ = self.file.write_all(note.as_bytes());
            if self.console {
                self.console_line(1, note.trim().as_bytes());
            }
        }
    }

    fn flush_lines(&mut self, stream: usize, all: bool) {
        let buf = std::mem::take(&mut self.partial[stream]);
        let mut rest: &[u8] = &buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.console_line(stream, &rest[..i]);
            rest = &rest[i + 1..];
        }
        if all && !rest.is_empty() {
            self.console_line(stream, rest);
            rest = &[];
        }
        self.partial[stream] = rest.to_vec();
    }

    fn console_line(&self, stream: usize, line: &[u8]) {
        let mark = if stream == 0 { "" } else { " (stderr)" };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("[{}{mark}] ", self.id).as_bytes());
        let _ = out.write_all(line);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn finish(&mut self) {
        if self.console {
            self.flush_lines(0, true);
            self.flush_lines(1, true);
        }
        let _ = self.file.flush();
    }
}

/// One of the job's output streams, as WASI sees it.
#[derive(Clone)]
struct Output {
    sink: Arc<Mutex<Sink>>,
    stream: usize,
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Output {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.sink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
